"""The server: the accept loop, the connection cap, the workers; the limits and error page.

Serves one WSGI app on a bound, listening socket. Connections are served by kept worker
threads (never more than the cap); at the cap, the connection idle the longest is closed to
make room for a waiting client; running out of descriptors backs off and logs once a minute.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mocksup._http.connection import Connection, phrase

__all__ = ("ErrorPage", "HTTPLimits", "HTTPServer", "WSGIApp", "go_error")

_log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: Turns a request the server refuses before the app runs into ``(status, text body)``.
ErrorPage = Callable[[int, str], tuple[int, bytes]]


@dataclass(frozen=True)
class HTTPLimits:
    """What one HTTP server accepts; every limit answers the client, never crashes the mock.

    :param max_connections: connections served at once; further ones wait in the listen
        backlog, and idle keep-alive connections are closed to make room.
    :param max_request_line: bytes of the request line (414 past it).
    :param max_header_bytes: bytes of all header lines together (431 past it).
    :param max_headers: number of header lines (431 past it).
    :param idle_timeout: seconds a connection may wait for the first byte of its next
        request (closed without an answer past it).
    :param head_timeout: seconds the request line and headers may take to arrive in all,
        from the request's first byte (408 past it).
    :param io_timeout: seconds a body read or a response write may stall (a body stalled
        past it is broken: 400, and the connection closes after the answer).
    :param require_host: answer 400 to an HTTP/1.1 request without ``Host`` (as Go does).
    :param max_held: bytes of request bodies the requests in progress may hold at once, all
        connections together, counted as :func:`read_body` reads each whole; a body that
        would pass it is refused (503) before it is read.
    :raises ValueError: a count under 1, or a timeout that is not a finite number above 0.
    """

    max_connections: int = 256
    max_request_line: int = 16 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 200
    idle_timeout: float = 60.0
    head_timeout: float = 30.0
    io_timeout: float = 60.0
    require_host: bool = False
    max_held: int = 512 * 1024 * 1024

    def __post_init__(self) -> None:
        # Checked here, not when the first connection hits them: a bad timeout would
        # otherwise end every connection as it set its socket's bound.
        for name in (
            "max_connections",
            "max_request_line",
            "max_header_bytes",
            "max_headers",
            "max_held",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"HTTPLimits.{name} must be a whole number of 1 or more, not {value!r}"
                )
        for name in ("idle_timeout", "head_timeout", "io_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(
                    f"HTTPLimits.{name} must be a finite number of seconds above 0, not {value!r}"
                )


def go_error(status: int, reason: str) -> tuple[int, bytes]:
    """The default error page: Go's net/http answers (``"400 Bad Request: reason"``)."""
    line = f"{status} {phrase(status)}"
    return status, (f"{line}: {reason}" if reason else line).encode()


class HTTPServer:
    """Serves one WSGI app on a bound, listening socket, a thread per connection.

    :param error_page: the answer to a request refused before the app runs, as
        ``(status, text body)`` from ``(status, reason)``; Go's by default.
    """

    def __init__(
        self,
        app: WSGIApp,
        sock: socket.socket,
        *,
        limits: HTTPLimits | None = None,
        error_page: ErrorPage = go_error,
        request_log: bool = False,
    ) -> None:
        self.app = app
        self.sock = sock
        self.limits = limits or HTTPLimits()
        self.error_page = error_page
        self.request_log = request_log
        self.host, self.port = sock.getsockname()[:2]
        self.stopping = False
        #: The accept loop waits for a connection to end or go idle (read without the lock).
        self.waiting_for_room = False
        self._connections: set[Connection] = set()
        self._jobs: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._idle_workers = 0
        self._lock = threading.Condition()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._fd_warned = -1e9
        self._held = 0  # bytes of request bodies held (limits.max_held)
        self._held_lock = threading.Lock()

    def hold(self, size: int) -> bool:
        """Count ``size`` more bytes of request bodies held; ``False``, counting nothing,
        when that would pass ``max_held``."""
        with self._held_lock:
            if self._held + size > self.limits.max_held:
                return False
            self._held += size
            return True

    def let_go(self, size: int) -> None:
        """``size`` bytes of request bodies are not held any more."""
        with self._held_lock:
            self._held -= size

    @property
    def connections(self) -> int:
        """Connections open now."""
        with self._lock:
            return len(self._connections)

    def start(self) -> None:
        self.sock.setblocking(False)
        self._thread = threading.Thread(target=self._accept_loop, name="mocksup-http", daemon=True)
        self._thread.start()

    def shutdown(self, drain: float = 0.0) -> None:
        """Stop accepting and close idle connections; then wait up to ``drain`` seconds for
        the requests in flight to be answered (each connection closes after its answer)."""
        with self._lock:
            self.stopping = True
            self._lock.notify_all()
            idle = [c for c in self._connections if c.idle]
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        for conn in idle:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            idle_workers, self._idle_workers = self._idle_workers, 0
        for _ in range(idle_workers):
            self._jobs.put(None)
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()
        deadline = time.monotonic() + drain
        with self._lock:
            while any(not (c.idle or c.closing) for c in self._connections):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)  # woken as each connection closes or ends

    def _accept_loop(self) -> None:
        backoff = 0.0
        while not self.stopping:
            readable, _, _ = select.select([self.sock, self._wake_r], [], [])
            if self._wake_r in readable or not self._room():
                break
            try:
                sock, peer = self.sock.accept()
            except BlockingIOError:
                continue
            except OSError as error:
                if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                        continue
                    raise
                backoff = self._out_of_descriptors(error, backoff)
                continue
            backoff = 0.0
            sock.setblocking(True)
            conn = Connection(self, sock, peer)
            with self._lock:
                self._connections.add(conn)
                spawn = self._idle_workers == 0
                if not spawn:
                    self._idle_workers -= 1  # that worker will take this connection
            if not spawn:
                self._jobs.put(conn)
                continue
            # A new worker starts with this connection: never through the queue, where a
            # failed start would leave it (or take another's) for no worker to serve.
            worker = threading.Thread(target=self._work, args=(conn,), name="mocksup-conn")
            worker.daemon = True
            try:
                worker.start()
            except RuntimeError:  # no more threads: refuse this one, keep serving
                self._forget(conn)
                conn.close(reset=True)

    def _room(self) -> bool:
        """With a client waiting to be accepted: wait for room under the connection cap,
        closing the connection idle the longest to make it. ``False`` when stopping."""
        with self._lock:
            while len(self._connections) >= self.limits.max_connections and not self.stopping:
                self._reclaim_one()
                # Woken when a connection ends (the one reclaimed, or any other) or goes idle.
                self.waiting_for_room = True
                self._lock.wait()
                self.waiting_for_room = False
            return not self.stopping

    def _reclaim_one(self) -> bool:
        """Close the connection idle the longest (or stuck in its head); under the lock."""
        stale = [c for c in self._connections if c.idle and not c.closing]
        if not stale:
            return False
        victim = min(stale, key=lambda c: c.since)  # the longest idle, or stuck in its head
        victim.closing = True
        with contextlib.suppress(OSError):
            victim.sock.shutdown(socket.SHUT_RDWR)
        return True

    def _out_of_descriptors(self, error: OSError, backoff: float) -> float:
        now = time.monotonic()
        if now - self._fd_warned > 60:  # once a minute at most: no log flood
            self._fd_warned = now
            _log.warning(
                "cannot accept connections (%s; %d open); closing idle ones and backing off",
                error.strerror,
                self.connections,
            )
        backoff = min(max(backoff * 2, 0.005), 0.5)
        with self._lock:
            self._reclaim_one()
            self._lock.wait(backoff)  # woken early when a connection ends, or by shutdown
        return backoff

    def wake_waiters(self) -> None:
        """Tell the accept loop waiting at the cap that a connection can be reclaimed, or a
        draining shutdown that one has closed."""
        with self._lock:
            self._lock.notify_all()

    def _work(self, conn: Connection | None) -> None:
        """A worker: serves ``conn``, then connections from the queue one after the
        other, idle in between.

        Starting a thread costs more than serving a small request; kept workers (never
        more than the connection cap) make a new connection as cheap as a kept one.
        """
        while True:
            if conn is None:
                conn = self._jobs.get()
                if conn is None:
                    return
            try:
                conn.serve()
            finally:
                self._forget(conn)
            conn = None
            with self._lock:
                if self.stopping:
                    return
                self._idle_workers += 1

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            self._connections.discard(conn)
            self._lock.notify_all()
