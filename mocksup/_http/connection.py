"""One client connection: requests read in order, answers written in order.

Keep-alive and pipelining, ``100 Continue``, ``HEAD`` without a body, chunked answers for
streams, one send per answer or stream chunk. A request's head must arrive within
``head_timeout`` of its first byte; a request whose body broke ends its connection after the
answer. A connection that must close lingers briefly so a client still uploading reads the
answer (a 413) rather than a reset.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from mocksup._http.body import DRAIN_LIMIT, Body, BodyError
from mocksup._http.request import Refuse, Request, parse_header, parse_request_line

if TYPE_CHECKING:
    from mocksup._http.server import HTTPServer

__all__ = ("Connection", "DropConnection", "phrase")

_log = logging.getLogger(__name__)

#: How long, and how much, a closing connection keeps reading what the client still sends.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 64 << 20


def phrase(status: int) -> str:
    """The reason phrase of ``status`` (``"Not Found"``), ``"Unknown"`` for an odd one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class DropConnection(Exception):
    """Raised by an app (before or while its body is sent) to end the connection at once.

    :param reset: send a TCP RST instead of an orderly close.
    """

    def __init__(self, reason: str = "dropped by the app", *, reset: bool = False) -> None:
        super().__init__(reason)
        self.reset = reset


class _KernelTimedIO(socket.SocketIO):
    """The connection's raw reader: a read that waited out the socket's kernel receive
    timeout (``SO_RCVTIMEO``) raises :class:`TimeoutError`, as a read of a socket with a
    Python timeout does, instead of reading as the end of the stream."""

    def readinto(self, b: Any) -> int:
        count = super().readinto(b)
        if count is None:  # EAGAIN: the timeout passed with nothing received
            raise TimeoutError("timed out")
        return count


def _timeval(seconds: float) -> bytes:
    # A zero timeval means "no timeout" to the kernel: the shortest real wait is 1 us.
    whole, fraction = divmod(max(seconds, 1e-6), 1.0)
    return struct.pack("ll", int(whole), max(int(fraction * 1e6), 0))


class _Gone(Exception):
    """The client closed the connection (or went quiet) between requests."""


_SLOW_HEAD = "the request head took too long"


class Connection:
    """One client connection: reads requests and writes responses, in order."""

    def __init__(self, server: HTTPServer, sock: socket.socket, peer: Any) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        # The socket stays blocking, its waits bounded by kernel timeouts (see _timeout).
        sock.settimeout(None)
        self.rfile = io.BufferedReader(_KernelTimedIO(sock, "rb"), 65536)
        with contextlib.suppress(OSError):  # a socket already reset fails at its first read
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(server.limits.io_timeout)
            )
        self._timeout_set: float | None = None
        #: Waiting for (or reading) the next request's head, since ``since``: reclaimable.
        self.idle = True
        self.since = time.monotonic()
        self.expect_continue = False
        self.closing = False
        #: The request being read is a HEAD: no answer to it carries a body.
        self.head_method = False

    def wait_disconnect(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; ``True`` at once if the client closed its connection.

        The environ's ``mocksup.wait_disconnect``: an app that takes time before its first
        byte (simulated latency) notices a client that gave up, as an ASGI server reports
        ``http.disconnect``. Data the client sends meanwhile (a pipelined request) is left
        alone: only the end of the stream counts.
        """
        deadline = time.monotonic() + max(seconds, 0.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                readable, _, _ = select.select([self.sock], [], [], remaining)
            except (OSError, ValueError):
                return True
            if not readable:
                return False
            try:
                peek = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                return True
            if not peek:
                return True
            # Pipelined data: the client is there; sleep out the rest without watching.
            threading.Event().wait(max(deadline - time.monotonic(), 0.0))
            return False

    def _timeout(self, seconds: float) -> None:
        """Bound every later wait of a read to ``seconds``, in the kernel.

        Python's own socket timeouts cost a ``poll()`` before every read and write and an
        ``ioctl()`` on every change, and each of those calls hands the GIL to another
        connection's thread: with 8 busy connections the vLLM mock made 36 futex calls a
        request, 10 without. ``SO_RCVTIMEO`` is set without releasing the GIL, and only
        when the bound changes; a read that waits it out raises :class:`TimeoutError`
        (:class:`_KernelTimedIO`). Writes are bounded by ``io_timeout`` throughout
        (``SO_SNDTIMEO``): one that makes no progress for that long raises
        :class:`BlockingIOError`.
        """
        # Set only on a change: setsockopt() takes the socket's lock, which the kernel holds
        # while it queues arriving data, and it waits for it holding the GIL (a sixth of
        # the collector's time in large uploads when it was set on every request).
        if seconds != self._timeout_set:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
            self._timeout_set = seconds

    def send_continue(self) -> None:
        self.expect_continue = False
        self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def hold(self, size: int) -> bool:
        return self.server.hold(size)

    def serve(self) -> None:
        limits = self.server.limits
        try:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self.closing and not self.server.stopping:
                self.head_method = False
                self._timeout(limits.idle_timeout)
                self.idle, self.since = True, time.monotonic()
                if self.server.waiting_for_room:
                    self.server.wake_waiters()
                try:
                    request = self._read_head()
                except _Gone:
                    return
                except Refuse as refuse:
                    self._timeout(limits.io_timeout)  # the head's may be spent
                    self._refuse(refuse.status, refuse.reason)
                    return
                self.idle, self.since = False, time.monotonic()
                self._timeout(limits.io_timeout)
                self._run(request)
        except (OSError, ValueError):
            pass  # the client went away (a timed-out socket file raises ValueError too)
        finally:
            self.close()

    def close(self, *, reset: bool = False) -> None:
        self.closing = True
        if self.server.stopping:
            self.server.wake_waiters()  # a draining shutdown counts the answers still owed
        if reset:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self._linger()
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _linger(self) -> None:
        """Close our side, then read and drop what the client still sends, for a while.

        Closing a socket with unread data in it sends a reset, which can destroy the
        answer in flight (a 413 to a large upload would reach the client as "connection
        reset"); reading until the client closes lets it read the answer first.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SECONDS
            dropped = 0
            while dropped < _LINGER_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
                if not data:
                    break
                dropped += len(data)
        except (OSError, ValueError):
            pass

    # -- reading a request head ----------------------------------------------------------

    def _read_head(self) -> Request:
        limits = self.server.limits
        try:
            buffered = self.rfile.peek(1)  # the wait for a request: up to idle_timeout
        except (OSError, ValueError):
            raise _Gone from None
        if not buffered:
            raise _Gone
        # From its first byte, the whole head must arrive within head_timeout: a client
        # dripping a byte now and then must not hold the connection for longer. A head
        # buffered whole (the usual case) waits for nothing; else each wait is bounded by
        # what is left (_readline_by).
        deadline = time.monotonic() + limits.head_timeout
        readline = self._head_reader(buffered, deadline)
        line = b""
        for _ in range(8):  # RFC 9112 2.2: ignore a few empty lines before a request
            try:
                line = readline(limits.max_request_line + 1)
            except TimeoutError:
                raise Refuse(408, _SLOW_HEAD) from None
            except (OSError, ValueError):
                raise _Gone from None
            if not line:
                raise _Gone
            if line not in (b"\r\n", b"\n"):
                break
        if not line.endswith(b"\n"):
            if len(line) > limits.max_request_line:
                raise Refuse(414, "request line too long")
            raise _Gone  # closed mid-line
        request = parse_request_line(line)
        self.head_method = request.method == "HEAD"
        count = size = 0
        headers: list[tuple[str, str]] = []
        while True:
            try:
                raw = readline(limits.max_header_bytes - size + 1)
            except TimeoutError:  # the deadline passed (or a read outlived it)
                raise Refuse(408, _SLOW_HEAD) from None
            except (OSError, ValueError):
                raise _Gone from None
            if raw in (b"\r\n", b"\n"):
                break
            size += len(raw)
            count += 1
            if size > limits.max_header_bytes or count > limits.max_headers:
                raise Refuse(431, "")
            if not raw.endswith(b"\n"):
                raise _Gone
            if time.monotonic() > deadline:
                raise Refuse(408, _SLOW_HEAD)
            headers.append(parse_header(raw))
        request.headers = headers
        request.frame(self, limits)
        return request

    def _head_reader(self, buffered: bytes, deadline: float) -> Callable[[int], bytes]:
        """How to read the lines of a head that starts ``buffered``: the buffered reader's
        ``readline`` when the whole head is there already (the usual case: no read will
        wait), else :meth:`_readline_by` ``deadline``."""
        if buffered[0] not in b"\r\n" and (b"\n\r\n" in buffered or b"\n\n" in buffered):
            return self.rfile.readline
        return functools.partial(self._readline_by, deadline)

    def _readline_by(self, deadline: float, limit: int) -> bytes:
        """``rfile.readline(limit)``, each wait for data cut short at ``deadline``.

        :raises TimeoutError: the deadline passed before the line ended.
        """
        rfile = self.rfile
        line = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._timeout(remaining)
            data = rfile.peek(1)  # what is buffered, else one read from the socket
            if not data:
                return bytes(line)  # the client closed
            room = limit - len(line)
            end = data.find(b"\n", 0, room)
            line += rfile.read(end + 1 if end >= 0 else min(len(data), room))
            if end >= 0 or len(line) >= limit:
                return bytes(line)

    # -- running the app -------------------------------------------------------------------

    def _run(self, request: Request) -> None:
        environ = request.environ(self)
        body: Body = environ["wsgi.input"]
        # "100 Continue" goes out when the app first reads the body; never read, the client
        # may still be waiting to send it, so the connection cannot carry another request.
        self.expect_continue = request.expect_continue
        response = _Response(self, request)
        result: Iterable[bytes] | None = None
        try:
            result = self.server.app(environ, response.start)
            response.send(result)
        except DropConnection as drop:
            self.close(reset=drop.reset)
            return
        except BodyError as error:
            if not response.started:
                self._refuse(error.status, error.message)
            self.closing = True
            return
        except (ConnectionError, TimeoutError, BlockingIOError):
            # The client went away mid-answer, or stopped reading it (a write stalled
            # past io_timeout).
            self.closing = True
            return
        except Exception:
            _log.exception("%s %s: the app failed", request.method, request.target)
            if response.started:
                self.closing = True  # a stream cut short, as a dying server would cut it
            else:
                self._answer_and_close(500, b"Internal Server Error")
            return
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _log.exception("closing the response of %s failed", request.target)
            if body.held:
                self.server.let_go(body.held)
                body.held = 0
        if self.server.request_log:
            _log.info(
                '%s "%s %s" %s', self.peer[0], request.method, request.target, response.status
            )
        # A broken body has set ``closing``: it is not drained (where it ends is unknown).
        if self.closing or not response.keep_alive or self.expect_continue or not body.drain():
            self.closing = True

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request the server itself refuses (its error page), then close."""
        self._answer_and_close(*self.server.error_page(status, reason))

    def _answer_and_close(self, code: int, page: bytes) -> None:
        self.closing = True
        head = (
            f"HTTP/1.1 {code} {phrase(code)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            self.sock.sendall(head.encode("latin-1") + (b"" if self.head_method else page))


class _Response:
    """Writes one response: status and headers on the first body chunk, framing decided
    then (``Content-Length`` as given or known, else chunked; nothing for ``HEAD``)."""

    __slots__ = ("_head", "conn", "headers", "keep_alive", "request", "started", "status")

    def __init__(self, conn: Connection, request: Request) -> None:
        self.conn = conn
        self.request = request
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.started = False
        self.keep_alive = request.keep_alive
        self._head: bytes | None = None

    def start(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = status
        self.headers = headers
        return self._write

    def _write(self, data: bytes) -> None:
        raise NotImplementedError("the write() callable of WSGI is not supported")

    def _compose(self, length: int | None) -> tuple[bytes, bool]:
        """The head, and whether the body goes chunked."""
        chunked = False
        lines = [f"HTTP/1.1 {self.status}"]
        has_length = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == "connection":
                if value.strip().lower() == "close":
                    self.keep_alive = False
                continue
            if lower == "content-length":
                has_length = True
            elif lower == "transfer-encoding":
                continue
            lines.append(f"{name}: {value}")
        if not has_length:
            if length is not None:
                lines.append(f"Content-Length: {length}")
            elif _has_body(self.status) and self.request.method != "HEAD":
                if self.request.version == "HTTP/1.1":
                    chunked = True
                    lines.append("Transfer-Encoding: chunked")
                else:
                    self.keep_alive = False
        body = self.request.body
        if (
            self.conn.closing  # the body broke (framing, limit, timeout): see Body
            or self.conn.expect_continue
            or (
                body is not None
                and body.length is not None
                and body.length - body.received > DRAIN_LIMIT
            )
        ):
            # The client may still be sending (or waiting to send) a body we will not read.
            self.keep_alive = False
        if not self.keep_alive:
            lines.append("Connection: close")
        elif self.request.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1"), chunked

    def send(self, result: Iterable[bytes]) -> None:
        """Send the app's answer: at once when it is a list, chunk by chunk otherwise."""
        if isinstance(result, (list, tuple)):
            self._send_whole(result)
        else:
            self._send_stream(result)

    def _send_whole(self, parts: list[bytes] | tuple[bytes, ...]) -> None:
        if not self.status:
            raise RuntimeError("the app returned without calling start_response")
        head, _ = self._compose(sum(map(len, parts)))
        self.started = True
        # One send for head and body: the client's first read has it all.
        self.conn.sock.sendall(head if self.request.method == "HEAD" else head + b"".join(parts))

    def _send_stream(self, result: Iterable[bytes]) -> None:
        sock = self.conn.sock
        chunked = False
        pending = b""  # the head, sent with the first data
        for data in result:
            if not self.started:
                pending, chunked = self._compose(None)
                self.started = True
                if self.request.method == "HEAD":
                    sock.sendall(pending)
                    return
            if data:
                sock.sendall(pending + (b"%x\r\n%s\r\n" % (len(data), data) if chunked else data))
                pending = b""
        if not self.started:  # an empty iterable
            pending, _ = self._compose(0)
            self.started = True
        elif chunked:
            pending += b"0\r\n\r\n"
        if pending:
            sock.sendall(pending)


def _has_body(status: str) -> bool:
    code = status[:3]
    return not (code.startswith("1") or code in ("204", "304"))
