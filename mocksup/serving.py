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
import io
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mocksup.errors import PortInUseError

__all__ = [
    "GRPC_MAX_MESSAGE",
    "bind_tcp",
    "grpc_server",
    "grpc_target",
    "request_headers",
    "serve_wsgi",
    "status_line",
    "url_host",
]

#: The largest gRPC message the mocks accept by default: the OTLP recommendation.
GRPC_MAX_MESSAGE = 64 * 1024 * 1024

#: How often werkzeug's accept loop looks at its shutdown flag; its default of 0.5 s would
#: dominate every stop.
_POLL_INTERVAL = 0.02

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
def serve_wsgi(app: Any, sock: socket.socket, *, request_log: bool = False) -> Iterator[Any]:
    """Serve ``app`` with a threaded werkzeug server on the bound ``sock`` while in the block.

    HTTP/1.1 with keep-alive (see :func:`_handler`); one thread per connection; no access
    log unless ``request_log``. Leaving the block stops accepting within about 20 ms.
    ``sock`` is handed over (closed here); the werkzeug server is yielded (``.port``).
    """
    from werkzeug.serving import make_server

    host, port = sock.getsockname()[:2]
    server = make_server(
        host, port, app, threaded=True, request_handler=_handler(request_log), fd=sock.fileno()
    )
    sock.close()  # werkzeug holds its own duplicate of the descriptor
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_INTERVAL},
        name="mocksup-wsgi",
        daemon=True,
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()


#: The most of an unread request body drained to keep a connection open; past it, close.
_DRAIN_LIMIT = 1024 * 1024
#: Seconds an idle keep-alive connection may hold its thread.
_IDLE_TIMEOUT = 120


class _Body(io.RawIOBase):
    """The request body as a stream that never reads past Content-Length.

    werkzeug's handler hands the raw connection to the app and, having no keep-alive, reads
    whatever follows as leftovers; bounded like this, the next request stays on the wire.
    """

    def __init__(self, stream: Any, length: int) -> None:
        super().__init__()
        self._stream = stream
        self.remaining = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.remaining <= 0:
            return 0
        view = memoryview(buffer)[: self.remaining]
        count: int = self._stream.readinto(view) or 0
        self.remaining -= count
        return count

    def readline(self, size: int | None = -1) -> bytes:
        limit = self.remaining if size is None or size < 0 else min(size, self.remaining)
        line: bytes = self._stream.readline(limit) if limit > 0 else b""
        self.remaining -= len(line)
        return line

    def drain(self) -> bool:
        """Read and drop what the app left unread; ``False`` if too much is left."""
        if self.remaining > _DRAIN_LIMIT:
            return False
        while self.remaining > 0:
            if not self.read(min(self.remaining, 65536)):
                return False
        return True


@functools.cache
def _handler(request_log: bool) -> type:
    """werkzeug's request handler with HTTP/1.1 keep-alive, which werkzeug leaves off.

    Clients that reuse connections (``requests`` sessions in the OTLP exporter, ``httpx`` in
    the openai client) would otherwise pay a TCP handshake per request. A body sent with
    Content-Length is bounded and drained after the response; a chunked request body, or a
    large unread one, closes the connection as werkzeug would.
    """
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        timeout = _IDLE_TIMEOUT
        # werkzeug writes a chunk of a streamed response as four small writes, then flushes:
        # buffered, they leave as one send. (Unbuffered, with Nagle's algorithm against the
        # client's delayed ACK, a token could stall for 40 ms.)
        wbufsize = 64 * 1024
        _keep_alive = False

        def setup(self) -> None:
            super().setup()
            # Small responses and stream events go out at once, not after the next ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run_wsgi(self) -> None:
            raw = self.rfile
            body = None
            if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length >= 0:
                    body = _Body(raw, length)
                    self.rfile = body  # type: ignore[assignment]
            self._keep_alive = body is not None and not self.close_connection
            self._connection: list[str] = []
            try:
                super().run_wsgi()
            finally:
                self.rfile = raw
            if body is None or not body.drain():
                self.close_connection = True

        def send_header(self, keyword: str, value: str) -> None:
            # werkzeug adds "Connection: close" to every response, after the app's headers;
            # hold Connection headers back and decide in end_headers().
            if keyword.lower() == "connection":
                self._connection.append(value)
                return
            super().send_header(keyword, value)

        def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
            # The response was cut short (a client gone, or a mock's injected fault): the
            # connection cannot carry another request.
            self.close_connection = True
            super().connection_dropped(error, environ)

        def end_headers(self) -> None:
            # More than one: the app set its own. One: werkzeug's "close", kept only when
            # this connection must close anyway.
            app_set = len(self._connection) > 1
            if app_set or (self._connection and not self._keep_alive):
                super().send_header("Connection", self._connection[0])
            self._connection = []
            super().end_headers()

        if not request_log:

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass

    return Handler


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
    options: Sequence[tuple[str, Any]] = (),
    handlers: Sequence[Any] = (),
) -> tuple[Any, int]:
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
