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
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mocksup.errors import PortInUseError

__all__ = ["GRPC_MAX_MESSAGE", "bind_tcp", "grpc_server", "grpc_target", "serve_wsgi"]

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
def serve_wsgi(
    app: Any,
    sock: socket.socket,
    *,
    request_log: bool = False,
    handler: Any = None,
) -> Iterator[Any]:
    """Serve ``app`` with a threaded werkzeug server on the bound ``sock`` while in the block.

    HTTP/1.1 with keep-alive; one thread per connection; no access log unless
    ``request_log``. Leaving the block stops accepting within about 20 ms.
    Yields the werkzeug server.
    """
    from werkzeug.serving import WSGIRequestHandler, make_server

    if handler is None:
        handler = WSGIRequestHandler if request_log else _quiet_handler()
    host, port = sock.getsockname()[:2]
    server = make_server(host, port, app, threaded=True, request_handler=handler, fd=sock.fileno())
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


@functools.cache
def _quiet_handler() -> type:
    from werkzeug.serving import WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    return QuietHandler


def grpc_target(host: str, port: int) -> str:
    """Format ``host:port`` as gRPC wants it (``[::1]:4317`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
