"""One HTTP request and its answer as the app handles it, journaled when it ends.

An :class:`Exchange` replaces what used to be a mutable dict shared by closures: a handler
sets the answer's status and headers with :meth:`Exchange.respond` and returns the body;
the app sends it (whole bodies with ``Content-Length``, as FastAPI's ``JSONResponse``) and
:meth:`Exchange.record` writes the journal entry and the HTTP metrics once the body ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mocksup.serving import request_headers

__all__ = ["Exchange", "Headers", "Journaled", "StartResponse", "WSGIApp"]

Headers = list[tuple[str, str]]
#: The WSGI ``start_response`` callable.
StartResponse = Callable[..., Any]
#: A WSGI application.
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

JSON: Headers = [("Content-Type", "application/json")]


class Exchange:
    """A request in flight: what came in, and the answer decided so far."""

    __slots__ = ("body", "environ", "headers", "method", "path", "started", "status", "wall")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ["REQUEST_METHOD"]
        self.path: str = environ.get("PATH_INFO") or "/"
        self.started = time.monotonic()
        self.wall = time.time()
        #: ``None`` once the connection was cut or reset.
        self.status: int | None = 500
        self.headers: Headers = JSON
        self.body = b""

    def respond(self, status: int, headers: Headers) -> None:
        """Set the answer's status and headers (sent once the body is known)."""
        self.status, self.headers = status, headers

    def request_headers(self) -> dict[str, str]:
        """The request's headers by lower-case name (parsed once)."""
        cached = self.environ.get("mocksup.headers")
        if cached is None:
            cached = self.environ["mocksup.headers"] = request_headers(self.environ)
        return cached

    def entry(self, first_byte: float | None, end: float) -> dict[str, Any]:
        """The journal entry of this exchange (the body is added by the journal)."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.environ.get("QUERY_STRING", ""),
            "headers": self.request_headers(),
            "status": self.status,
            "start": self.wall,
            "first_byte": (first_byte or end) - self.started,
            "duration": end - self.started,
        }


class Journaled:
    """Wraps a streamed body so the exchange is recorded when it ends."""

    def __init__(self, inner: Iterable[bytes], record: Callable[[float | None, int], None]) -> None:
        self._inner = iter(inner)
        self._record = record
        self._first: float | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = next(self._inner)
        if self._first is None:
            self._first = time.monotonic()
        return data

    def close(self) -> None:
        """Close the inner body (aborting its engine request if unfinished), then record."""
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._record(self._first, 0)
