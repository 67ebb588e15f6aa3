"""The OTLP/HTTP receiver: a bare WSGI app (no request objects on the hot path).

Checks run in the OpenTelemetry Collector's order: path (404), method (405), content type
(415, a ``charset`` parameter is fine), body size (413, before reading when
``Content-Length`` already says so, and while inflating, so a gzip bomb is refused after at
most ``max_body`` bytes of output), decompression and decoding (400). Every error body is a
``google.rpc.Status`` in the request's encoding (JSON when that is unknown); the Collector
answers 404/405/415 in plain text, the specification asks for a ``Status``, and a mock should
follow the specification. Paths under the control prefix go to the control API.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError

from mocksup._control import PREFIX
from mocksup.otlp._ingest import Ingest
from mocksup.otlp._json import OTLPJSONError, parse_request
from mocksup.otlp._query import _PARSERS
from mocksup.otlp._status import GRPC_CODES, encode_response, grpc_code_for_http, status_body
from mocksup.otlp._values import no_gc
from mocksup.serving import DropConnection, request_headers, status_line

__all__ = ["OTLPHTTPApp"]

_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_READ_CHUNK = 1 << 20
_StartResponse = Callable[..., Any]


class _Reject(Exception):
    """An export answered with an error status; ``bad_field`` adds a ``BadRequest``."""

    def __init__(self, status: int, message: str, bad_field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.bad_field = bad_field


def _inflate(data: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        # HTTP's "deflate" is zlib-wrapped (what the Python exporter sends); some clients
        # send raw deflate, so fall back to that when the zlib header is missing.
        raw = len(data) < 2 or (data[0] * 256 + data[1]) % 31 != 0 or data[0] & 0x0F != 8
        inflater = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    else:
        raise _Reject(400, f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise _Reject(400, f"broken {encoding} body: {error}", "") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _Reject(413, f"the decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise _Reject(400, f"broken {encoding} body: truncated", "")
    return out


class OTLPHTTPApp:
    """Serves ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs``, and the control API.

    :param control: the WSGI app for paths under the control prefix.
    :param max_body: the body limit in bytes, after decompression.
    """

    def __init__(
        self, ingest: Ingest, control: Callable[..., Iterable[bytes]], max_body: int
    ) -> None:
        self.ingest = ingest
        self.control = control
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return self.control(environ, start_response)
        started = time.time()
        media = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        json_encoding = media != _PROTOBUF
        encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        record: dict[str, Any] = {
            "transport": "http",
            "time": started,
            "method": environ.get("REQUEST_METHOD", ""),
            "path": path,
            "signal": _PATHS.get(path),
            "content_type": environ.get("CONTENT_TYPE", ""),
            "content_encoding": encoding,
            "headers": request_headers(environ),
            "size": 0,
            "decoded_size": 0,
            "items": 0,
        }
        extra: list[tuple[str, str]] = []
        try:
            body, status, media_out = self._handle(environ, record, media, encoding, extra)
        except _Reject as reject:
            status, media_out = reject.status, (_PROTOBUF if not json_encoding else _JSON)
            record["error"] = reject.message
            if reject.status == 413 or (reject.status in (404, 405, 415) and _has_body(environ)):
                # An unread body would poison a kept-alive connection: close it (Werkzeug
                # closes every connection today; this stays right if that changes).
                extra.append(("Connection", "close"))
            body = status_body(
                _grpc_number(status),
                reject.message,
                json_encoding=json_encoding,
                bad_field=reject.bad_field,
            )
        except _Dropped:
            record["status"] = "dropped"
            record["duration"] = time.time() - started
            self.ingest.store.record(record)
            raise DropConnection("dropped (injected fault)") from None
        record["status"] = status
        record["duration"] = time.time() - started
        self.ingest.store.record(record)
        headers = [("Content-Type", media_out), ("Content-Length", str(len(body))), *extra]
        start_response(status_line(status), headers)
        return [body]

    def _handle(
        self,
        environ: dict[str, Any],
        record: dict[str, Any],
        media: str,
        encoding: str,
        extra: list[tuple[str, str]],
    ) -> tuple[bytes, int, str]:
        signal = record["signal"]
        if signal is None:
            raise _Reject(
                404,
                f"no OTLP endpoint at {record['path']}; use /v1/traces, /v1/metrics or /v1/logs",
            )
        if record["method"] != "POST":
            extra.append(("Allow", "POST"))
            raise _Reject(405, f"method {record['method']} not allowed; use POST")
        if media not in (_PROTOBUF, _JSON):
            raise _Reject(415, f"unsupported media type {media!r}; use {_PROTOBUF} or {_JSON}")
        data = self._read(environ, record)
        if encoding and encoding != "identity" and data:
            data = _inflate(data, encoding, self.max_body)
        record["decoded_size"] = len(data)
        json_encoding = media == _JSON
        raw: bytes | None
        try:
            if json_encoding:
                with no_gc():
                    document = json.loads(data) if data and not data.isspace() else {}
                    message = parse_request(signal, document)
                raw = None
            else:
                message = _PARSERS[signal](data)
                raw = data
        except OTLPJSONError as error:
            raise _Reject(400, str(error), error.field) from None
        except (DecodeError, ValueError, RecursionError) as error:
            raise _Reject(400, f"undecodable {media} body: {error}", "") from None
        answer = self.ingest.export(signal, message, raw, record)
        fault = answer.fault
        if answer.drop:
            raise _Dropped
        if fault is not None and answer.error:
            status = fault.http_status()
            if fault.retry_after is not None:
                # HTTP's delay-seconds is a whole number: round up, never ask for less.
                extra.append(("Retry-After", str(math.ceil(fault.retry_after))))
            message_text = fault.message or f"injected fault: {fault.describe()}"
            record["error"] = message_text
            body = status_body(
                _grpc_number(status, fault.grpc_status()),
                message_text,
                json_encoding=json_encoding,
                retry_after=fault.retry_after,
            )
            return body, status, media
        body = encode_response(
            signal, json_encoding=json_encoding, rejected=answer.rejected, message=answer.message
        )
        return body, 200, media

    def _read(self, environ: dict[str, Any], record: dict[str, Any]) -> bytes:
        stream = environ["wsgi.input"]
        length_text = environ.get("CONTENT_LENGTH", "")
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                raise _Reject(400, f"invalid Content-Length {length_text!r}") from None
            record["size"] = length
            if length > self.max_body:
                raise _Reject(
                    413, f"the body of {length} bytes exceeds the limit of {self.max_body} bytes"
                )
            data: bytes = stream.read(length)
            return data
        if not environ.get("wsgi.input_terminated"):
            return b""
        # Chunked: read up to one byte past the limit, never more.
        chunks: list[bytes] = []
        size = 0
        while size <= self.max_body:
            chunk = stream.read(min(_READ_CHUNK, self.max_body + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        record["size"] = size
        if size > self.max_body:
            raise _Reject(413, f"the body exceeds the limit of {self.max_body} bytes")
        return b"".join(chunks)


class _Dropped(Exception):
    """The fault says: close the connection without an answer."""


def _has_body(environ: dict[str, Any]) -> bool:
    return environ.get("CONTENT_LENGTH", "") not in ("", "0") or bool(
        environ.get("wsgi.input_terminated")
    )


def _grpc_number(status: int, code: str | None = None) -> int:
    return GRPC_CODES[code or grpc_code_for_http(status)]
