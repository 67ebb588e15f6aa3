"""The event loop: one thread serves every HTTP/2 connection of a listening socket.

Single-threaded on purpose: a unary gRPC call costs a few tens of microseconds of Python
here, where a thread handoff per call (grpcio's poller thread to its worker pool and back)
costs more than the call. Work that must wait (an injected delay) runs elsewhere and comes
back through :meth:`H2Server.call_soon`, so no connection ever waits for another.

Bounded like the HTTP/1.1 server: at most ``max_connections`` (a client arriving at the cap
takes the room of the connection quiet the longest, idle ones first, which gets GOAWAY); a
connection must finish its preface within ``handshake_timeout`` and is closed after
``idle_timeout`` without a request; a client that does not read its answers stops being
read; a stream past its ``grpc-timeout`` is reset.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mocksup._h2.connection import Connection, Handler
from mocksup._h2.frames import ErrorCode
from mocksup._h2.stream import Held

__all__ = ("H2Limits", "H2Server", "Timer")

_log = logging.getLogger(__name__)
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
#: Answers queued past this many bytes: the client is not reading; stop reading it too.
_OUT_CAP = 4 << 20


@dataclass(frozen=True)
class H2Limits:
    """What one HTTP/2 server accepts.

    :param max_connections: connections served at once (a client arriving at the cap takes
        the room of the connection quiet the longest).
    :param max_streams: requests in progress per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    :param max_header_list: bytes of one request's header list (SETTINGS_MAX_HEADER_LIST_SIZE).
    :param max_held: bytes of request bodies the calls in progress may hold at once, on all
        connections together; the DATA that would pass it resets its stream
        (REFUSED_STREAM: not processed, a client may retry).
    :param handshake_timeout: seconds a new connection may take to send its preface.
    :param idle_timeout: seconds a connection may stay without a request in progress.
    """

    max_connections: int = 256
    max_streams: int = 100
    max_header_list: int = 64 * 1024
    max_held: int = 512 * 1024 * 1024
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0


class Timer:
    """A call :meth:`H2Server.call_at` will make, unless cancelled first."""

    __slots__ = ("call",)

    def __init__(self, call: Callable[[], None]) -> None:
        self.call: Callable[[], None] | None = call

    def cancel(self) -> None:
        """Never make the call (and let go of what it holds)."""
        self.call = None

    def fire(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            call()


class _Peer:
    """A connection and its socket."""

    __slots__ = ("conn", "events", "sock", "started")

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self.events = _READ
        self.started = time.monotonic()


class H2Server:
    """Serves HTTP/2 (h2c with prior knowledge, as gRPC clients speak it) on ``sock``.

    :param handler_factory: makes the :class:`Handler` of each new connection.
    """

    def __init__(
        self, sock: socket.socket, handler: Handler, limits: H2Limits | None = None
    ) -> None:
        self.sock = sock
        self.handler = handler
        self.limits = limits or H2Limits()
        self.port: int = sock.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_seq = 0
        self._timers_compact_at = 1024
        self._peers: dict[int, _Peer] = {}
        self._held = Held()  # what every connection's streams hold (limits.max_held)
        self._listening = False
        self._stopping = False
        self._fd_backoff = 0.0  # seconds of the last pause in accepting (0: none)
        self._fd_warned = -120.0  # when running out of descriptors was last logged
        self._thread: threading.Thread | None = None

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._peers)

    def start(self) -> None:
        """Serve from a daemon thread."""
        self.sock.setblocking(False)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, _READ, None)
        self._selector.register(self.sock, _READ, self)
        self._listening = True
        self._thread = threading.Thread(target=self._loop, name="mocksup-h2", daemon=True)
        self._thread.start()

    def shutdown(self, grace: float = 0.5) -> None:
        """Stop: GOAWAY to every connection, answers in flight get ``grace`` seconds."""
        self.call_soon(self._begin_stop)
        if self._thread is not None:
            self._thread.join(grace + 2)
        self._selector.close()
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the loop's thread (thread-safe)."""
        self._calls.append(call)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def call_at(self, moment: float, call: Callable[[], None]) -> Timer:
        """Run ``call`` on the loop at ``moment`` (``time.monotonic()``) unless cancelled;
        loop thread only."""
        self._timer_seq += 1
        timer = Timer(call)
        heapq.heappush(self._timers, (moment, self._timer_seq, timer))
        if len(self._timers) > self._timers_compact_at:
            # Most timers (a call's deadline) are cancelled long before they are due.
            self._timers = [entry for entry in self._timers if entry[2].call is not None]
            heapq.heapify(self._timers)
            self._timers_compact_at = max(1024, 2 * len(self._timers))
        return timer

    # -- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        select = self._selector.select
        next_sweep = time.monotonic() + 1.0
        while self._peers or not self._stopping:
            timeout = 1.0
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            for key, mask in select(timeout):
                peer = key.data
                if peer is None:
                    self._wake()
                elif peer is self:
                    self._accept()
                else:
                    self._serve(peer, mask)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                heapq.heappop(self._timers)[2].fire()
            if now >= next_sweep:
                next_sweep = now + 1.0
                self._sweep(now)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)
        calls = self._calls
        while calls:
            calls.popleft()()

    def _accept(self) -> None:
        for _ in range(16):
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_descriptors(error)
                return
            self._fd_backoff = 0.0
            if len(self._peers) >= self.limits.max_connections:
                self._reclaim()  # a client is here: make room for it
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = _Peer(sock, Connection(self.handler, self.limits, self._held))
            self._peers[sock.fileno()] = peer
            self._selector.register(sock, _READ, peer)
            self._flush(peer)  # our SETTINGS go first

    def _out_of_descriptors(self, error: OSError) -> None:
        """No descriptor for a new connection: make room by closing the quietest one, and
        stop listening for a while (5 ms, doubling up to 0.5 s) so the loop does not spin
        on a client the kernel holds in the backlog; said once a minute at most."""
        now = time.monotonic()
        if now - self._fd_warned > 60:
            self._fd_warned = now
            _log.warning(
                "cannot accept gRPC connections (%s; %d open); closing idle ones and backing off",
                error.strerror,
                len(self._peers),
            )
        self._reclaim()
        self._fd_backoff = min(max(self._fd_backoff * 2, 0.005), 0.5)
        self._selector.unregister(self.sock)
        self._listening = False
        self.call_at(now + self._fd_backoff, self._listen_again)

    def _listen_again(self) -> None:
        if not self._stopping and not self._listening:
            self._selector.register(self.sock, _READ, self)
            self._listening = True

    def _serve(self, peer: _Peer, mask: int) -> None:
        try:
            if mask & _READ:
                self._read(peer)
            if mask & _WRITE and peer.sock.fileno() != -1:
                self._flush(peer)
        except Exception:
            # A bug met by one connection's input: that connection ends (GOAWAY
            # INTERNAL_ERROR), every other one and the stored data stay.
            _log.exception("gRPC connection failed; closing it")
            peer.conn.fail(ErrorCode.INTERNAL_ERROR, "internal error")
            with contextlib.suppress(Exception):
                self._flush(peer)
            self._close(peer)

    def _read(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(peer)
            return
        peer.conn.feed(data)
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        conn = peer.conn
        out = conn.out
        if out:
            try:
                sent = peer.sock.send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(peer)
                return
            del out[:sent]
        if not out and (conn.closed or (conn.finished and self._stopping)):
            self._close(peer)
            return
        events = (_WRITE if out else 0) | (_READ if len(out) < _OUT_CAP else 0)
        if events != peer.events:
            peer.events = events
            self._selector.modify(peer.sock, events, peer)

    def flush(self, conn: Connection) -> None:
        """Write what ``conn`` queued outside a read (a late answer, a timer)."""
        for peer in self._peers.values():
            if peer.conn is conn:
                self._flush(peer)
                return

    def _close(self, peer: _Peer) -> None:
        fd = peer.sock.fileno()
        if self._peers.pop(fd, None) is None:
            return
        peer.conn.end()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(peer.sock)
        peer.sock.close()

    def _reclaim(self) -> None:
        """At the cap: close the connection quiet the longest, idle ones first."""
        if self._peers:
            victim = min(self._peers.values(), key=lambda p: (not p.conn.idle, p.conn.since))
            victim.conn.fail(ErrorCode.NO_ERROR, "too many connections")
            self._flush(victim)
            self._close(victim)  # GOAWAY written if the socket took it; room made either way

    def _sweep(self, now: float) -> None:
        limits = self.limits
        for peer in list(self._peers.values()):
            conn = peer.conn
            quiet = now - conn.since
            if not conn.handshaken and now - peer.started > limits.handshake_timeout:
                self._close(peer)
            elif conn.idle and quiet > limits.idle_timeout:
                conn.fail(ErrorCode.NO_ERROR, "idle")
                self._flush(peer)

    def _begin_stop(self) -> None:
        self._stopping = True
        if self._listening:
            self._selector.unregister(self.sock)
            self._listening = False
        for peer in list(self._peers.values()):
            peer.conn.goaway(ErrorCode.NO_ERROR)
            self._flush(peer)
        self.call_at(time.monotonic() + 0.5, self._end_stop)

    def _end_stop(self) -> None:
        for peer in list(self._peers.values()):
            self._close(peer)
