"""MockRedisServer: the worked example of writing a mock, on a non-HTTP protocol.

It speaks a small subset of RESP2 (the Redis protocol): ``PING``, ``ECHO``, ``SET``, ``GET``,
``DEL``, ``EXISTS`` and ``FLUSHALL``, enough for a client that caches or counts. Everything a
mock needs is here: settings as pydantic fields, a ``serve()`` that binds, reports ready,
waits for the stop request and shuts down. The parent side (start, readiness, stop, reaping,
errors) comes from :class:`~mocksup.MockServerBase`.
"""

from __future__ import annotations

import socketserver
import threading
from typing import BinaryIO, ClassVar

from pydantic import Field

from mocksup._context import ServeContext
from mocksup.base import MockServerBase
from mocksup.serving import bind_tcp, url_host

__all__ = ["MockRedisServer"]


class MockRedisServer(MockServerBase):
    """An in-memory Redis look-alike for tests (RESP2, a handful of commands).

    ``max_value_size`` caps a bulk string; a larger one is refused with an error reply.
    """

    default_name: ClassVar[str] = "redis"

    port: int = Field(0, ge=0, le=65535)
    max_value_size: int = Field(512 * 1024 * 1024, gt=0)

    @property
    def url(self) -> str:
        """``redis://host:port``, as redis clients take it."""
        return f"redis://{url_host(self.host)}:{self.port}"

    def endpoints(self) -> dict[str, str]:
        return {"url": self.url}

    def client_env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url}

    def serve(self, ctx: ServeContext) -> None:
        store: dict[bytes, bytes] = {}
        lock = threading.Lock()
        limit = self.max_value_size

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    try:
                        command = _read_command(self.rfile, limit)  # type: ignore[arg-type]
                    except ValueError as error:
                        self.wfile.write(b"-ERR Protocol error: " + str(error).encode() + b"\r\n")
                        return
                    if command is None:
                        return
                    with lock:
                        reply = _execute(store, command)
                    self.wfile.write(reply)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True

        sock = bind_tcp(self.host, self.port)
        server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        server.shutdown()
        server.server_close()


def _read_command(rfile: BinaryIO, limit: int) -> list[bytes] | None:
    """Read one command: a RESP array of bulk strings, or an inline command line."""
    line = rfile.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()
    count = int(line[1:])
    args = []
    for _ in range(count):
        header = rfile.readline()
        if not header.startswith(b"$"):
            raise ValueError("expected '$'")
        size = int(header[1:])
        if size > limit:
            raise ValueError("invalid bulk length")
        args.append(rfile.read(size + 2)[:-2])
    return args


def _bulk(value: bytes | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _execute(store: dict[bytes, bytes], command: list[bytes]) -> bytes:
    if not command:
        return b"-ERR empty command\r\n"
    name, args = command[0].upper(), command[1:]
    arity = {
        b"PING": (0, 1),
        b"ECHO": (1, 1),
        b"SET": (2, 2),
        b"GET": (1, 1),
        b"DEL": (1, None),
        b"EXISTS": (1, None),
        b"FLUSHALL": (0, 0),
    }
    if name not in arity:
        return b"-ERR unknown command '%s'\r\n" % command[0]
    low, high = arity[name]
    if len(args) < low or (high is not None and len(args) > high):
        return b"-ERR wrong number of arguments for '%s' command\r\n" % name.lower()
    if name == b"PING":
        return _bulk(args[0]) if args else b"+PONG\r\n"
    if name == b"ECHO":
        return _bulk(args[0])
    if name == b"SET":
        store[args[0]] = args[1]
        return b"+OK\r\n"
    if name == b"GET":
        return _bulk(store.get(args[0]))
    if name == b"DEL":
        return b":%d\r\n" % sum(store.pop(key, None) is not None for key in args)
    if name == b"EXISTS":
        return b":%d\r\n" % sum(key in store for key in args)
    store.clear()
    return b"+OK\r\n"
