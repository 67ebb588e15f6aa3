"""The OTLP/HTTP receiver: a bare WSGI app (no request objects on the hot path).

A request goes through the Collector's stages, in its order: CORS (when configured), the
``Content-Encoding`` check (confighttp's outer middleware, in ``"collector"`` mode), the path
(Go's ServeMux: 301 to the cleaned path, 404), the method (405), the content type (415, a
``charset`` parameter is fine), the body within ``max_body_size`` (as sent and inflated), its
decoding (400) and the export. Where the two modes answer differently (see ``_modes``), the
stages ask the mode. Paths under the control prefix go to the control API.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mocksup.control import PREFIX, ControlApp
from mocksup.otlp._codecs import ENCODINGS, CodecError, decode
from mocksup.otlp._cors import CORSPolicy
from mocksup.otlp._ingest import Answer, Ingest
from mocksup.otlp._json import OTLPJSONError, parse_request
from mocksup.otlp._limits import LimitError, bounded, bounded_headers, check_json_size
from mocksup.otlp._proto import Envelope, ProtoError
from mocksup.otlp._proto import decode as decode_protobuf
from mocksup.otlp._signals import Signal
from mocksup.otlp._status import GRPC_CODES, encode_response, grpc_code_for_http, status_body
from mocksup.otlp._values import no_gc
from mocksup.serving import BodyError, DropConnection, read_body, request_headers, status_line

__all__ = ("OTLPHTTPApp",)

_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_StartResponse = Callable[..., Any]
# Go's mime.ParseMediaType: a token/token type, then ;-separated token=value parameters.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA = re.compile(
    rf"\s*({_TOKEN}(?:/{_TOKEN})?)\s*((?:;\s*{_TOKEN}\s*=\s*(?:{_TOKEN}|\"(?:[^\"\\]|\\.)*\")\s*)*)(;\s*)?"
)
_PARAM = re.compile(rf";\s*({_TOKEN})\s*=")
#: What Go's net/http answers when even the error cannot be encoded.
_FALLBACK = b'{"code": 13, "message": "failed to marshal error message"}'


class _Refuse(Exception):
    """The request is answered with an error: a ``Status`` unless ``text`` is set."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        bad_field: str | None = None,
        text: bool = False,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.bad_field = bad_field
        self.text = text
        self.close = close


class _Dropped(Exception):
    """The fault says: close the connection without an answer."""


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)


class OTLPHTTPApp:
    """Serves ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs``, and the control API.

    :param control: the control API, for paths under the control prefix.
    :param cors: the CORS answers, ``None`` for none (the Collector's default).
    """

    def __init__(
        self,
        ingest: Ingest,
        control: ControlApp,
        cors: CORSPolicy | None = None,
    ) -> None:
        self.ingest = ingest
        self.limits = ingest.limits
        self.mode = ingest.limits.mode
        self.control = control
        self.cors = cors

    def __call__(self, environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return self.control(environ, start_response)
        cors: list[tuple[str, str]] = []
        if self.cors is not None:
            if self.cors.is_preflight(environ):
                start_response("204 No Content", self.cors.preflight(environ))
                return [b""]
            cors = self.cors.actual(environ)
        started = time.time()
        record = _record(environ, path, started)
        try:
            reply = self._serve(environ, record)
        except _Refuse as refuse:
            record["error"] = bounded(refuse.message)
            reply = self._error(environ, refuse)
        except _Dropped:
            self._finish(record, "dropped", started)
            raise DropConnection("dropped (injected fault)") from None
        self._finish(record, reply.status, started)
        headers = [("Content-Length", str(len(reply.body))), *reply.headers, *cors]
        if reply.content_type:
            headers.insert(0, ("Content-Type", reply.content_type))
        start_response(status_line(reply.status), headers)
        return [reply.body]

    def _finish(self, record: dict[str, Any], status: int | str, started: float) -> None:
        record["status"] = status
        record["duration"] = time.time() - started
        self.ingest.store.record(record)

    # -- the stages ---------------------------------------------------------------------

    def _serve(self, environ: dict[str, Any], record: dict[str, Any]) -> _Reply:
        encoding = self._encoding(environ)
        if self.mode.encoding_first and encoding not in ENCODINGS:
            # confighttp's decompressor runs before the router: any path gets this 400.
            return self._handler_error(environ, f"unsupported Content-Encoding: {encoding}")
        path = record["path"]
        clean = _clean_path(path)
        if clean != path:
            return _redirect(environ, clean)
        signal = record["signal"]
        if signal is None:
            raise _Refuse(404, "404 page not found", text=True)
        if record["method"] != "POST":
            raise _Refuse(405, "405 method not allowed, supported: [POST]", text=True)
        media = self._media_type(environ)
        if media not in (_PROTOBUF, _JSON):
            raise _Refuse(
                415,
                f"415 unsupported media type, supported: [{_JSON}, {_PROTOBUF}]",
                text=True,
            )
        if encoding not in ENCODINGS:
            raise _Refuse(400, f"unsupported Content-Encoding: {encoding}", bad_field="")
        data = self._read(environ, record, encoding)
        envelope = self._decode(signal, media, data)
        answer = self.ingest.export(signal, envelope, record)
        return self._answer(signal, media == _JSON, answer, record)

    def _encoding(self, environ: dict[str, Any]) -> str:
        encoding: str = environ.get("HTTP_CONTENT_ENCODING", "")
        if self.mode.encoding_first:
            return encoding.strip(" \t")  # as Go's header parsing leaves it
        # HTTP says content codings are case-insensitive and x-gzip is gzip (RFC 9110).
        encoding = encoding.strip().lower()
        return "gzip" if encoding == "x-gzip" else encoding

    def _media_type(self, environ: dict[str, Any]) -> str:
        text: str = environ.get("CONTENT_TYPE", "")
        if not self.mode.strict_media_type:
            return text.partition(";")[0].strip().lower()
        return _go_media_type(text)

    def _read(self, environ: dict[str, Any], record: dict[str, Any], encoding: str) -> bytes:
        limits = self.limits
        try:
            data = read_body(environ, limits.max_body_size)
        except BodyError as error:
            if error.status == 413:
                raise self._too_large(limits.too_large()) from None
            if error.status == 503:  # the server's max_held: retryable, the body unread
                raise _Refuse(503, error.message, close=True) from None
            raise _Refuse(400, error.message, bad_field="") from None
        record["size"] = len(data)
        try:
            data = decode(data, encoding, limits.max_body_size)
        except CodecError as error:
            if error.kind == "too_large":
                raise self._too_large(limits.too_large("the decompressed body")) from None
            raise _Refuse(400, error.message, bad_field="") from None
        record["decoded_size"] = len(data)
        return data

    def _too_large(self, error: LimitError) -> _Refuse:
        # Go closes the connection after a MaxBytesReader error: the rest is never read.
        return _Refuse(self.mode.oversize_status, error.message, close=True)

    def _decode(self, signal: Signal, media: str, data: bytes) -> Envelope:
        try:
            if media == _PROTOBUF:
                return decode_protobuf(signal, data, self.limits)
            check_json_size(data, self.limits)
            with no_gc():
                message = parse_request(
                    signal, self._json_document(data), strict=self.mode.pdata_json
                )
            return Envelope(message.SerializeToString(), self.limits)
        except LimitError as error:
            raise _Refuse(self.mode.oversize_status, error.message, bad_field="") from None
        except (OTLPJSONError, ProtoError) as error:
            raise _Refuse(400, str(error), bad_field=error.field) from None
        except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
            raise _Refuse(
                400, f"undecodable {media} body: {bounded(str(error), 200)}", bad_field=""
            ) from None
        except RecursionError:
            raise _Refuse(
                400, f"undecodable {media} body: nested too deeply", bad_field=""
            ) from None

    def _json_document(self, data: bytes) -> Any:
        if not self.mode.pdata_json:
            # The specification: one JSON value; an empty body is an empty request.
            text = data.decode("utf-8")
            return _DECODER.decode(text) if text.strip(" \t\r\n") else {}
        # pdata reads the first JSON value and ignores what follows; invalid UTF-8 passes.
        text = data.decode("utf-8", "replace")
        start = len(text) - len(text.lstrip(" \t\r\n"))
        if start == len(text):
            raise ValueError("ReadObject: expect { or n, but found end of input")
        document, _ = _DECODER.raw_decode(text, start)
        return document

    def _answer(
        self, signal: Signal, json_encoding: bool, answer: Answer, record: dict[str, Any]
    ) -> _Reply:
        media = _JSON if json_encoding else _PROTOBUF
        fault = answer.fault
        if answer.drop:
            raise _Dropped
        if fault is None or not answer.error:
            body = encode_response(
                signal,
                json_encoding=json_encoding,
                rejected=answer.rejected,
                message=answer.message,
                always_partial=self.mode.success_has_partial,
            )
            return _Reply(200, body, media)
        status = fault.http_status()
        text = fault.message or f"injected fault: {fault.describe()}"
        record["error"] = bounded(text)
        headers = []
        retry_after = fault.retry_after
        if retry_after is not None:
            if not self.mode.retry_after_floor:
                # HTTP's delay-seconds is a whole number: round up, never ask for less.
                headers.append(("Retry-After", str(math.ceil(retry_after))))
            elif status in (429, 503):
                headers.append(("Retry-After", str(int(retry_after))))
        body = status_body(
            GRPC_CODES[fault.grpc_status()],
            text,
            json_encoding=json_encoding,
            retry_after=retry_after,
        )
        return _Reply(status, body, media, headers)

    # -- errors -------------------------------------------------------------------------

    def _error(self, environ: dict[str, Any], refuse: _Refuse) -> _Reply:
        headers = [("Connection", "close")] if refuse.close else []
        if refuse.text and self.mode.plain_text_errors:
            body = refuse.message + ("\n" if refuse.status == 404 else "")
            if refuse.status == 404:
                headers.append(("X-Content-Type-Options", "nosniff"))
            return _Reply(
                refuse.status,
                body.encode(),
                _TEXT if refuse.status == 404 else "text/plain",
                headers,
            )
        json_encoding = self._media_type(environ) != _PROTOBUF
        message = refuse.message if not refuse.text else _spec_text(refuse.status, environ)
        if refuse.status == 405:
            headers.append(("Allow", "POST"))
        status = status_body(
            GRPC_CODES[grpc_code_for_http(refuse.status)],
            message,
            json_encoding=json_encoding,
            bad_field=refuse.bad_field if self.mode.bad_request_details else None,
        )
        return _Reply(refuse.status, status, _JSON if json_encoding else _PROTOBUF, headers)

    def _handler_error(self, environ: dict[str, Any], message: str) -> _Reply:
        """confighttp's error handler: a Status in the encoding the Content-Type names."""
        content_type = environ.get("CONTENT_TYPE", "") or _JSON
        media = _go_media_type(content_type)
        if media not in (_PROTOBUF, _JSON):
            return _Reply(500, _FALLBACK, _JSON)
        body = status_body(GRPC_CODES["INVALID_ARGUMENT"], message, json_encoding=media == _JSON)
        return _Reply(400, body, media)


def _record(environ: dict[str, Any], path: str, started: float) -> dict[str, Any]:
    return {
        "transport": "http",
        "time": started,
        "method": environ.get("REQUEST_METHOD", ""),
        "path": bounded(path),
        "signal": _PATHS.get(path),
        "content_type": bounded(environ.get("CONTENT_TYPE", ""), 256),
        "content_encoding": bounded(environ.get("HTTP_CONTENT_ENCODING", ""), 256),
        "headers": bounded_headers(request_headers(environ)),
        "size": 0,
        "decoded_size": 0,
        "items": 0,
    }


def _spec_text(status: int, environ: dict[str, Any]) -> str:
    if status == 404:
        path = bounded(environ.get("PATH_INFO", ""), 200)
        return f"no OTLP endpoint at {path}; use /v1/traces, /v1/metrics or /v1/logs"
    if status == 405:
        return f"method {bounded(environ.get('REQUEST_METHOD', ''), 20)} not allowed; use POST"
    media = bounded(environ.get("CONTENT_TYPE", ""), 100)
    return f"unsupported media type {media!r}; use {_PROTOBUF} or {_JSON}"


@functools.lru_cache(maxsize=64)
def _go_media_type(text: str) -> str:
    """The media type as Go's ``mime.ParseMediaType`` reads it; ``""`` when it fails."""
    match = _MEDIA.fullmatch(text)
    if match is None:
        return ""
    names = [name.lower() for name in _PARAM.findall(match.group(2))]
    if len(names) != len(set(names)):
        return ""  # Go refuses a parameter given twice (with different values)
    return match.group(1).lower()


def _clean_path(path: str) -> str:
    """Go's ServeMux cleaning: no ``//``, ``.`` or ``..`` segments; a trailing slash kept."""
    if path.startswith("/") and "//" not in path and "/." not in path:
        return path  # already clean: the usual case, without a split
    if not path.startswith("/"):
        path = "/" + path
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    clean = "/" + "/".join(parts)
    if path.endswith("/") and clean != "/":
        clean += "/"
    return clean


def _redirect(environ: dict[str, Any], clean: str) -> _Reply:
    location = quote(clean, safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING", "")
    if query:
        location += "?" + query
    headers = [("Location", location)]
    if environ.get("REQUEST_METHOD") == "GET":
        body = f'<a href="{location}">Moved Permanently</a>.\n\n'.encode()
        return _Reply(301, body, "text/html; charset=utf-8", headers)
    # Go sends no body (and no Content-Type) on a redirect of any other method.
    return _Reply(301, b"", "", headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
