"""Building blocks for the child side of a mock: bind, serve WSGI, serve gRPC.

These helpers turn every bind failure into a :class:`~mocksup.PortInUseError` (never
werkzeug's ``SystemExit``, never grpcio's silent port sharing) and stop quickly, so a mock's
``serve()`` stays a few lines::

    def serve(self, ctx):
        sock = bind_tcp(self.host, self.port)
        with serve_wsgi(self.make_app(), sock):
            ctx.ready(port=sock.getsockname()[1])
            ctx.wait()

This module is protocol plumbing only: it knows nothing of processes.
"""

from __future__ import annotations

import errno
import functools
import http
import logging
import math
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mocksup._http import (
    BodyError,
    DropConnection,
    ErrorPage,
    HTTPLimits,
    HTTPServer,
    WSGIApp,
    go_error,
    read_body,
)
from mocksup.errors import PortInUseError

if TYPE_CHECKING:
    # grpc is imported by grpc_server() itself, when a mock serves gRPC: a mock that does
    # not never pays for it. Its types come from the types-grpcio stubs.
    import grpc

__all__ = (
    "GRPC_MAX_MESSAGE",
    "REDACTED",
    "BodyError",
    "DropConnection",
    "ErrorPage",
    "HTTPLimits",
    "HTTPServer",
    "WSGIApp",
    "bind_tcp",
    "go_error",
    "grpc_server",
    "grpc_target",
    "is_credential",
    "read_body",
    "redact_credentials",
    "request_headers",
    "serve_wsgi",
    "status_line",
    "url_host",
)

#: The largest gRPC message the mocks accept by default: the OTLP recommendation.
GRPC_MAX_MESSAGE = 64 * 1024 * 1024

#: What a credential reads in a mock's records of the requests it served.
REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
_SECRET_SCHEMES = ("bearer ", "basic ", "digest ")

_log = logging.getLogger(__name__)


def bind_tcp(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """Bind and listen on ``host:port`` (``0`` for a free port) and return the socket.

    ``SO_REUSEADDR`` lets a new server take a port in TIME_WAIT, never one with a live
    listener; ``SO_REUSEPORT`` stays off so a port is never shared silently.

    :raises PortInUseError: the port is taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        if error.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUseError(port=port, host=host) from error
        raise
    return sock


@contextmanager
def serve_wsgi(
    app: WSGIApp,
    sock: socket.socket,
    *,
    request_log: bool = False,
    limits: HTTPLimits | None = None,
    error_page: ErrorPage = go_error,
    drain: float = 0.0,
) -> Iterator[HTTPServer]:
    """Serve ``app`` over HTTP/1.1 on the bound ``sock`` while in the block.

    The server (see :mod:`mocksup._http`) parses every request strictly and hands the app
    a bounded, well-framed body as ``wsgi.input`` (read it with :func:`read_body`); it
    answers what it refuses itself (bad framing, oversized heads) with ``error_page``, keeps
    connections alive, caps them (``limits``) and logs each request when ``request_log``.
    Besides WSGI's keys, the environ has ``mocksup.socket`` (the connection) and
    ``mocksup.wait_disconnect(seconds) -> bool`` (sleep, waking when the client leaves). An
    app may raise :class:`DropConnection` to cut the connection. Leaving the block stops
    accepting at once, then waits up to ``drain`` seconds for the requests in flight to be
    answered. ``sock`` is handed over (closed on leaving); the server is yielded (``.port``,
    ``.connections``).

    :raises ValueError: ``drain`` is not a finite number of seconds, 0 or more.
    """
    if isinstance(drain, bool) or not isinstance(drain, (int, float)) or not 0 <= drain < math.inf:
        sock.close()
        raise ValueError(f"drain must be a finite number of seconds, 0 or more, not {drain!r}")
    server = HTTPServer(app, sock, limits=limits, error_page=error_page, request_log=request_log)
    server.start()
    try:
        yield server
    finally:
        server.shutdown(drain)


def request_headers(environ: dict[str, Any]) -> dict[str, str]:
    """A WSGI request's headers by lower-case name, ``content-type`` and ``-length`` included."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def is_credential(name: str, value: str) -> bool:
    """Whether the request header ``name: value`` carries a credential.

    ``authorization``, ``proxy-authorization``, API-key and cookie headers, any header whose
    name holds ``token``, and any value that starts like a bearer, basic or digest credential.
    """
    name = name.lower()
    return (
        name in _SECRET_HEADERS or "token" in name or value[:7].lower().startswith(_SECRET_SCHEMES)
    )


def redact_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with each credential's value (:func:`is_credential`) read :data:`REDACTED`.

    The mocks keep records of the requests they served, which tests print, save and upload
    with their reports: what an exporter or client authenticated with stays out of them
    unless a mock is told to keep it (``journal_credentials=True``).
    """
    return {
        name: REDACTED if is_credential(name, value) else value for name, value in headers.items()
    }


@functools.cache
def status_line(code: int) -> str:
    """The WSGI status for ``code``, with its standard reason phrase (``"404 Not Found"``)."""
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


def url_host(host: str) -> str:
    """``host`` as it goes into a URL or a ``host:port`` target: IPv6 in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def grpc_target(host: str, port: int) -> str:
    """Format ``host:port`` as gRPC wants it (``[::1]:4317`` for IPv6)."""
    return f"{url_host(host)}:{port}"


def grpc_server(
    host: str,
    port: int,
    *,
    max_workers: int = 16,
    max_message: int = GRPC_MAX_MESSAGE,
    options: Sequence[tuple[str, int | str]] = (),
    handlers: Sequence[grpc.GenericRpcHandler] = (),
) -> tuple[grpc.Server, int]:
    """Create a gRPC server bound to ``host:port`` (``0`` for a free port), not yet started.

    ``SO_REUSEPORT`` is off (grpcio turns it on by default, which would let two servers share
    a port and split the traffic silently); messages up to ``max_message`` bytes are received.
    Returns ``(server, bound_port)``; call ``server.start()`` before reporting ready: an open
    gRPC port is not yet a serving one.

    :raises PortInUseError: the port is taken.
    """
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="mocksup-grpc"),
        handlers=list(handlers),
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            *options,
        ],
    )
    try:
        bound = server.add_insecure_port(grpc_target(host, port))
    except RuntimeError as error:
        server.stop(None)
        raise PortInUseError(port=port, host=host) from error
    if bound == 0:
        server.stop(None)
        raise PortInUseError(port=port, host=host)
    return server, bound
