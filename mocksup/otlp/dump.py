"""Dumps: what a collector received, as OTLP JSON lines, read back and sent anywhere.

A dump is the format of the OpenTelemetry Collector's file exporter and of the OTLP file
specification: UTF-8 text, one OTLP/JSON ``TracesData``, ``MetricsData`` or ``LogsData``
object per line (the collector writes one line per request it stored, signals mixed in
arrival order, as the Collector's file exporter does when one file serves several
pipelines). :meth:`~mocksup.MockOTLPCollector.export` writes one;
:func:`replay` sends one to any OTLP/HTTP endpoint, line by line, so that what arrived at
one collector can be sent again to another (or to a real Collector, Jaeger, a vendor), and
:meth:`~mocksup.MockOTLPCollector.load` replays one into a collector.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import IO, Any, Literal
from urllib.parse import urlsplit

from mocksup.errors import MockServerError
from mocksup.otlp._json import OTLPJSONError, parse_request
from mocksup.otlp._signals import Signal

__all__ = ("ReplayError", "read_dump", "replay", "signal_of")

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

_Source = str | os.PathLike[str] | IO[bytes] | IO[str]

#: The top-level key of each signal's document, as OTLP/JSON and proto3 JSON spell it.
_KEYS: dict[str, Signal] = {
    "resourceSpans": "traces",
    "resource_spans": "traces",
    "resourceMetrics": "metrics",
    "resource_metrics": "metrics",
    "resourceLogs": "logs",
    "resource_logs": "logs",
}
_PATHS: dict[Signal, str] = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}


class ReplayError(MockServerError):
    """A dump line could not be read, or the endpoint refused or missed its export.

    ``line`` is the line number in the dump (from 1), ``status`` the HTTP status answered
    (``None`` when no answer came or the line is unreadable), ``url`` the export's URL.
    """

    def __init__(
        self, message: str, *, line: int = 0, status: int | None = None, url: str = ""
    ) -> None:
        super().__init__(message)
        self.line = line
        self.status = status
        self.url = url

    def _fields(self) -> dict[str, object]:
        return {"server": self.server, "line": self.line, "status": self.status, "url": self.url}


def signal_of(document: Mapping[str, Any]) -> Signal | None:
    """``"traces"``, ``"metrics"`` or ``"logs"`` for a dump line's document, ``None`` for
    an object with none of their keys (an empty line's ``{}``)."""
    for key in document:
        signal = _KEYS.get(key)
        if signal is not None:
            return signal
    return None


def read_dump(source: _Source) -> Iterator[tuple[int, Signal, dict[str, Any]]]:
    """The documents of a dump: ``(line number, signal, document)``, blank lines skipped.

    :param source: a path, or a file opened in binary or text mode.
    :raises ReplayError: a line is not a JSON object of one of the three signals.
    """
    with ExitStack() as stack:
        stream: Any = source
        if isinstance(source, (str, os.PathLike)):
            stream = stack.enter_context(open(source, "rb"))
        for number, line in enumerate(stream, 1):
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            if not text.strip():
                continue
            try:
                document = json.loads(text)
            except ValueError as error:
                raise ReplayError(f"dump line {number} is not JSON: {error}", line=number) from None
            signal = signal_of(document) if isinstance(document, dict) else None
            if signal is None:
                raise ReplayError(
                    f"dump line {number} is not a TracesData, MetricsData or LogsData object",
                    line=number,
                )
            yield number, signal, document


def replay(
    source: _Source,
    url: str,
    *,
    encoding: Literal["protobuf", "json"] = "protobuf",
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Send every line of a dump to an OTLP/HTTP endpoint, in order; return how many.

    Each line becomes one export to ``url`` + ``/v1/traces``, ``/v1/metrics`` or ``/v1/logs``
    (``url`` is the endpoint's base, such as ``http://127.0.0.1:4318``), over one keep-alive
    connection.

    :param encoding: ``"protobuf"`` (``application/x-protobuf``, what every receiver takes)
        or ``"json"`` (the line's document, ``application/json``).
    :param timeout: seconds to wait for each answer.
    :param headers: more request headers (an API key, say).
    :raises ReplayError: a line is unreadable, or an export was not answered 2xx (nothing
        is retried: the lines before it were sent).
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an OTLP/HTTP endpoint URL, such as http://127.0.0.1:4318: {url!r}")
    base = parts.path.rstrip("/")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = connection_class(parts.hostname, parts.port, timeout=timeout)
    sent = 0
    try:
        for number, signal, document in read_dump(source):
            body, content_type = _body(number, signal, document, encoding)
            target = base + _PATHS[signal]
            _export(conn, target=target, body=body, number=number,
                    headers={"Content-Type": content_type, **(headers or {})},
                    url=f"{parts.scheme}://{parts.netloc}{target}")  # fmt: skip
            sent += 1
    finally:
        conn.close()
    return sent


def _body(number: int, signal: Signal, document: Any, encoding: str) -> tuple[bytes, str]:
    if encoding == "json":
        return json.dumps(document, separators=(",", ":")).encode(), "application/json"
    return _protobuf(number, signal, document), "application/x-protobuf"


def _protobuf(number: int, signal: Signal, document: Any) -> bytes:
    """Dump line ``number``'s document as protobuf (``ReplayError`` if it is not OTLP/JSON)."""
    try:
        message = parse_request(signal, document, strict=False)
    except OTLPJSONError as error:
        raise ReplayError(
            f"dump line {number} is not valid OTLP/JSON: {error}", line=number
        ) from None
    return message.SerializeToString()


def _export(
    conn: http.client.HTTPConnection,
    *,
    target: str,
    body: bytes,
    headers: dict[str, str],
    number: int,
    url: str,
) -> None:
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
    except (OSError, http.client.HTTPException) as error:
        raise ReplayError(
            f"dump line {number}: no answer from {url} ({error}); the lines before it were sent",
            line=number,
            url=url,
        ) from error
    if not 200 <= response.status < 300:
        raise ReplayError(
            f"dump line {number}: {url} answered {response.status}: {answer[:200]!r}; "
            "the lines before it were sent",
            line=number,
            status=response.status,
            url=url,
        )
