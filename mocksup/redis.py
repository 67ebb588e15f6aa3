"""MockRedisServer: the worked example of writing a mock, on a non-HTTP protocol.

It speaks a small subset of RESP2 (the Redis protocol): ``PING``, ``ECHO``, ``SET``, ``GET``,
``DEL``, ``EXISTS``, ``DBSIZE`` and ``FLUSHALL``, enough for a client that caches or counts.
Everything a mock needs is here: settings as pydantic fields, a ``serve()`` that binds,
reports ready, waits for the stop request and shuts down, and the parent-side contract
(``clear()``, ``stats()``, ``summary()``) as a client of the running child. The rest (start,
readiness, stop, reaping, errors) comes from :class:`~mocksup.MockServerBase`.

Like Redis it holds at the edges: a request line is at most 64 KiB, a command at most 1 Mi
arguments, a value at most ``max_value_size`` bytes, and at most ``max_connections``
clients are served at once; past a limit the client gets Redis's error and is disconnected.
Error replies never echo a line break a client sent.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from typing import ClassVar, Protocol

from pydantic import Field

from mocksup._context import ServeContext
from mocksup.base import MockServerBase
from mocksup.errors import MockServerError
from mocksup.serving import bind_tcp, url_host

__all__ = ("MAX_ARGUMENTS", "MAX_INLINE", "MockRedisServer", "ProtocolError")

#: The longest request line (an inline command, or a ``*``/``$`` header), as Redis's own.
MAX_INLINE = 64 * 1024
#: The most arguments one command may have, as Redis's own.
MAX_ARGUMENTS = 1024 * 1024
#: Seconds the parent's own calls (``clear()``, ``stats()``) wait for an answer.
_CALL_TIMEOUT = 10.0


#: What socketserver hands a server: a connected socket (a datagram server's tuple never
#: comes here), and the client's address.
_Request = socket.socket | tuple[bytes, socket.socket]
_Address = tuple[str, int] | tuple[str, int, int, int]


class _Reader(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...
    def read(self, size: int = -1, /) -> bytes: ...


class ProtocolError(ValueError):
    """A request that breaks RESP: the client gets ``-ERR Protocol error: ...`` and is
    disconnected, as Redis does."""


class MockRedisServer(MockServerBase):
    """An in-memory Redis look-alike for tests (RESP2, a handful of commands).

    ``max_value_size`` caps a bulk string and ``max_connections`` the clients served at
    once; past either, the client gets an error reply (see the module docstring).

    Default port: ``0``, a free one (not Redis's 6379, which a real Redis on the machine may
    hold); :attr:`url` says which.
    """

    default_name: ClassVar[str] = "redis"

    max_value_size: int = Field(512 * 1024 * 1024, gt=0, le=2**32, strict=True)
    max_connections: int = Field(256, gt=0, le=10_000, strict=True)

    @property
    def url(self) -> str:
        """``redis://host:port``, as redis clients take it (IPv6 in brackets)."""
        return f"redis://{url_host(self.host)}:{self.port}"

    def client_env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url}

    def clear(self) -> None:
        """Forget every key (``FLUSHALL``)."""
        self._call(b"FLUSHALL")

    def stats(self) -> dict[str, object]:
        """``{"keys": N}``, the number of keys held (``DBSIZE``)."""
        return {"keys": int(self._call(b"DBSIZE"))}

    def summary(self) -> str:
        return f"{self.stats()['keys']} keys"

    def _call(self, *args: bytes) -> bytes:
        """Send one command to the running child; return its reply's value.

        :raises ChildCrashedError: the child exited (its exit code and output attached).
        :raises ChildSuspendedError: the child is stopped (SIGSTOP) and will not answer.
        :raises MockServerError: no answer within 10 s, or an error reply.
        """
        self.check_running()
        deadline = time.monotonic() + _CALL_TIMEOUT
        try:
            with socket.create_connection((self.client_host, self.port), 5) as sock:
                sock.sendall(_encode(args))
                line = self._read_reply(sock, deadline)
        except OSError as error:
            self.check_running()  # the child's own state says why, when it is the cause
            raise MockServerError(
                f"mock server {self.name!r} did not answer {args[0].decode()}: {error}",
                server=self.name,
            ) from error
        if line.startswith(b"-"):
            raise MockServerError(
                f"mock server {self.name!r} answered {args[0].decode()} with {line!r}",
                server=self.name,
            )
        return line[1:].rstrip(b"\r\n")

    def _read_reply(self, sock: socket.socket, deadline: float) -> bytes:
        # Short slices: between two, look at the child, so a suspended one is reported at
        # once instead of after the whole timeout.
        sock.settimeout(0.25)
        data = b""
        while not data.endswith(b"\r\n"):
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                self.check_running()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer within {_CALL_TIMEOUT:g} s") from None
                continue
            if not chunk:
                raise ConnectionError("the connection closed before the answer")
            data += chunk
        return data

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        server = _Server(sock, self.max_value_size, self.max_connections)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        server.shutdown()
        server.server_close()


class _Server(socketserver.ThreadingTCPServer):
    """One thread per client, at most ``max_connections`` of them; one store for all."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, max_value_size: int, max_connections: int) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.store: dict[bytes, bytes] = {}
        self.lock = threading.Lock()
        self.max_value_size = max_value_size
        self._slots = threading.BoundedSemaphore(max_connections)
        self._clients: set[socket.socket] = set()

    def process_request(self, request: _Request, client_address: _Address) -> None:
        assert isinstance(request, socket.socket)  # a stream server's requests are
        if not self._slots.acquire(blocking=False) and not self._slot_freeing():
            # Refused in the accept loop itself: a flood of clients costs no threads.
            with contextlib.suppress(OSError):
                request.sendall(b"-ERR max number of clients reached\r\n")
            self.shutdown_request(request)
            return
        with self.lock:
            self._clients.add(request)
        super().process_request(request, client_address)

    def _slot_freeing(self) -> bool:
        """Whether a slot frees soon, and take it: a client that already hung up still holds
        one until its thread sees the end of its stream (a moment, longer on a busy
        machine); it must not make a new client look like one too many."""
        with self.lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError, ValueError):
                if client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    return self._slots.acquire(timeout=2.0)
        return False

    def process_request_thread(self, request: _Request, client_address: _Address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self._clients.discard(request)
            self._slots.release()


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            try:
                command = _read_command(self.rfile, self.server.max_value_size)
            except ProtocolError as error:
                self.wfile.write(b"-ERR Protocol error: " + _safe(str(error).encode()) + b"\r\n")
                return
            if command is None:
                return
            if not command:
                continue  # an empty line or ``*0``: Redis answers nothing
            with self.server.lock:
                reply = _execute(self.server.store, command)
            self.wfile.write(reply)


def _read_line(rfile: _Reader) -> bytes | None:
    """One line of at most :data:`MAX_INLINE` bytes, without its line break; ``None`` at EOF."""
    line = rfile.readline(MAX_INLINE + 1)
    if not line.endswith(b"\n"):
        if len(line) > MAX_INLINE:
            raise ProtocolError("too big inline request")
        return None  # the client left mid-line
    return line.rstrip(b"\r\n")


def _read_command(rfile: _Reader, limit: int) -> list[bytes] | None:
    """Read one command: a RESP array of bulk strings, or an inline command line.

    :returns: the arguments (empty for an empty line or ``*0``), or ``None`` at EOF.
    :raises ProtocolError: the request breaks the protocol or a limit.
    """
    line = _read_line(rfile)
    if line is None:
        return None
    if not line.startswith(b"*"):
        return line.split()
    count = _number(line[1:], "invalid multibulk length")
    if count > MAX_ARGUMENTS:
        raise ProtocolError("invalid multibulk length")
    args = []
    for _ in range(max(count, 0)):
        header = _read_line(rfile)
        if header is None:
            return None
        if not header.startswith(b"$"):
            raise ProtocolError(f"expected '$', got '{header[:1].decode(errors='replace')}'")
        size = _number(header[1:], "invalid bulk length")
        if not 0 <= size <= limit:
            raise ProtocolError("invalid bulk length")
        data = rfile.read(size + 2)
        if len(data) < size + 2:
            return None
        if not data.endswith(b"\r\n"):
            raise ProtocolError("invalid bulk terminator")
        args.append(data[:-2])
    return args


def _number(text: bytes, error: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(error) from None


def _encode(args: tuple[bytes, ...]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _safe(text: bytes) -> bytes:
    """``text`` fit for a one-line reply: a line break a client sent would end the reply
    early and inject a reply of its own (Redis maps them to spaces as well)."""
    return text.replace(b"\r", b" ").replace(b"\n", b" ")


def _bulk(value: bytes | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(value), value)


_ARITY = {
    b"PING": (0, 1),
    b"ECHO": (1, 1),
    b"SET": (2, 2),
    b"GET": (1, 1),
    b"DEL": (1, None),
    b"EXISTS": (1, None),
    b"DBSIZE": (0, 0),
    b"FLUSHALL": (0, 0),
}


def _execute(store: dict[bytes, bytes], command: list[bytes]) -> bytes:
    name, args = command[0].upper(), command[1:]
    if name not in _ARITY:
        return b"-ERR unknown command '%s'\r\n" % _safe(command[0][:128])
    low, high = _ARITY[name]
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
    if name == b"DBSIZE":
        return b":%d\r\n" % len(store)
    store.clear()
    return b"+OK\r\n"
