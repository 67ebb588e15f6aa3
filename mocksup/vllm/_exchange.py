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
from mocksup.vllm._faults import ClientGone, Cut

__all__ = ["Exchange", "Headers", "Journaled", "StartResponse", "WSGIApp"]

Headers = list[tuple[str, str]]
#: The WSGI ``start_response`` callable.
StartResponse = Callable[..., Any]
#: A WSGI application.
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

JSON: Headers = [("Content-Type", "application/json")]


class Exchange:
    """A request in flight: what came in, and the answer decided so far."""

    __slots__ = ("body", "disconnected", "environ", "headers", "method", "path", "route",
                 "started", "status", "wall")  # fmt: skip

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method: str = environ["REQUEST_METHOD"]
        self.path: str = environ.get("PATH_INFO") or "/"
        #: The path the routes see (``--root-path`` taken off).
        self.route = self.path
        self.started = time.monotonic()
        self.wall = time.time()
        #: ``None`` once the connection was cut or reset.
        self.status: int | None = 500
        self.headers: Headers = JSON
        self.body = b""
        #: The client left while the request ran (it was aborted).
        self.disconnected = False

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
            "client_disconnected": self.disconnected,
            "start": self.wall,
            "first_byte": (first_byte or end) - self.started,
            "duration": end - self.started,
        }


class Journaled:
    """Wraps a streamed body so the exchange is recorded when it ends; a body closed before
    its end (the client went away) marks the exchange ``disconnected``."""

    def __init__(
        self,
        inner: Iterable[bytes],
        exchange: Exchange,
        record: Callable[[Exchange, float | None, int], None],
    ) -> None:
        self._inner = iter(inner)
        self._exchange = exchange
        self._record = record
        self._first: float | None = None
        self._ended = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            data = next(self._inner)
        except StopIteration:
            self._ended = True
            raise
        except ClientGone:
            self._ended = True  # the engine saw the client leave and said so
            raise
        except Cut:
            self._ended = True
            self._exchange.status = None  # an injected cut: no complete answer was sent
            raise
        except BaseException:
            self._ended = True
            raise
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
            if not self._ended:
                self._exchange.disconnected = True
            self._record(self._exchange, self._first, 0)
