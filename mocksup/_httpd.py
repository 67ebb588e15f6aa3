"""A small, strict HTTP/1.1 server for the mocks' WSGI apps.

Why not werkzeug's development server: a mock must survive whatever the system under test,
a fuzzer or a dying client sends it, and werkzeug's server is not built for that (its chunked
reader could crash the interpreter on a short read, ``Expect: 100-continue`` went unanswered,
errors raised before the app ran closed the connection with no reply, ``HEAD`` got a body, and
it had no connection cap). This one is written for hostile input:

- **Framing is ours.** Request line, headers, ``Content-Length`` and ``chunked`` bodies are
  parsed here, strictly (RFC 9112): a malformed or ambiguous request (both framings, a bad
  length, obsolete line folding, a bad chunk) gets a 4xx/5xx answer and the connection closes.
  The app always sees a bounded, well-framed body (see :class:`Body`).
- **Limits everywhere.** Request line (414), header size and count (431), connections
  (:class:`HTTPLimits`), idle and head timeouts. At the connection cap, idle keep-alive
  connections are reclaimed first; descriptor exhaustion backs off and is logged once.
- **HTTP/1.1 as clients expect it.** Keep-alive, pipelining, ``100 Continue`` sent when the
  app first reads the body, ``HEAD`` without a body, chunked responses for streams, one send
  per response or stream chunk (``TCP_NODELAY``).

It speaks WSGI to the app, plus a few ``mocksup.*`` environ keys (see :func:`serve`). Nothing
here knows about processes, OTLP or vLLM.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, BinaryIO
from urllib.parse import unquote_to_bytes

__all__ = [
    "Body",
    "BodyError",
    "DropConnection",
    "HTTPLimits",
    "HTTPServer",
    "go_error",
    "read_body",
]

_log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: Turns a request the server refuses before the app runs into ``(status, text body)``.
ErrorPage = Callable[[int, str], tuple[int, bytes]]

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Unread request body drained to keep a connection; past it, the connection closes.
_DRAIN_LIMIT = 1 << 20
#: How long, and how much, a closing connection keeps reading what the client still sends.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 64 << 20


@dataclass(frozen=True)
class HTTPLimits:
    """What one HTTP server accepts; every limit answers the client, never crashes the mock.

    :param max_connections: connections served at once; further ones wait in the listen
        backlog, and idle keep-alive connections are closed to make room.
    :param max_request_line: bytes of the request line (414 past it).
    :param max_header_bytes: bytes of all header lines together (431 past it).
    :param max_headers: number of header lines (431 past it).
    :param idle_timeout: seconds a kept-alive connection may wait for its next request.
    :param head_timeout: seconds the request line and headers may take to arrive in all.
    :param io_timeout: seconds a body read or a response write may stall.
    :param require_host: answer 400 to an HTTP/1.1 request without ``Host`` (as Go does).
    """

    max_connections: int = 256
    max_request_line: int = 16 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 200
    idle_timeout: float = 60.0
    head_timeout: float = 30.0
    io_timeout: float = 60.0
    require_host: bool = False


class BodyError(Exception):
    """The request body cannot be had: too large (413), badly framed or cut short (400).

    Raised by :func:`read_body` and by reads of ``wsgi.input``; an app catches it to answer
    in its own format. Uncaught, the server answers with its error page and closes.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DropConnection(Exception):
    """Raised by an app (before or while its body is sent) to end the connection at once.

    :param reset: send a TCP RST instead of an orderly close.
    """

    def __init__(self, reason: str = "dropped by the app", *, reset: bool = False) -> None:
        super().__init__(reason)
        self.reset = reset


def go_error(status: int, reason: str) -> tuple[int, bytes]:
    """The default error page: Go's net/http answers (``"400 Bad Request: reason"``)."""
    phrase = f"{status} {_phrase(status)}"
    return status, (f"{phrase}: {reason}" if reason else phrase).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Refuse(Exception):
    """The request cannot be served: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Gone(Exception):
    """The client closed the connection (or went quiet) between requests."""


# -- request bodies ------------------------------------------------------------------------


class Body:
    """A request body as ``wsgi.input``: never reads past its framing, never trusts it.

    ``length`` is the ``Content-Length`` (``None`` for a chunked body). A body that ends
    before its framing says, or whose chunks are malformed, raises :class:`BodyError`
    (400); the connection is then closed. ``100 Continue`` goes out on the first read.
    """

    __slots__ = ("_chunk_left", "_conn", "_done", "length", "received")

    def __init__(self, conn: _Connection | None, length: int | None) -> None:
        self._conn = conn
        self.length = length
        self.received = 0
        self._chunk_left = 0 if length is None else length
        self._done = length == 0

    @property
    def done(self) -> bool:
        """Whether the whole body was read."""
        return self._done

    def _rfile(self) -> BinaryIO:
        conn = self._conn
        assert conn is not None
        if conn.expect_continue:
            conn.send_continue()
        return conn.rfile

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); ``b""`` at the end."""
        if self._done:
            return b""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if size == 0:
            return b""
        rfile = self._rfile()
        if self.length is None:
            return self._read_chunked(rfile, size)
        want = min(size, self._chunk_left)
        data = _read_exact(rfile, want)
        self._chunk_left -= want
        self.received += want
        self._done = self._chunk_left == 0
        return data

    def _read_chunked(self, rfile: BinaryIO, size: int) -> bytes:
        # Up to ``size`` bytes across as many chunks as it takes, as a file's read() does.
        parts = []
        while size > 0 and not self._done:
            if self._chunk_left == 0:
                self._chunk_left = self._next_chunk(rfile)
                if self._chunk_left == 0:
                    self._finish_chunked(rfile)
                    break
            want = min(size, self._chunk_left)
            parts.append(_read_exact(rfile, want))
            size -= want
            self._chunk_left -= want
            self.received += want
            if self._chunk_left == 0 and _read_line(rfile, 2) not in (b"\r\n", b"\n"):
                raise BodyError(400, "a chunk is not followed by CRLF")
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        """One line of the body (WSGI asks for it; the mocks never use it)."""
        limit = 1 << 16 if size is None or size < 0 else size
        out = bytearray()
        while len(out) < limit and not out.endswith(b"\n"):
            byte = self.read(1)
            if not byte:
                break
            out += byte
        return bytes(out)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def read_all(self, limit: int) -> bytes:
        """The whole body, or :class:`BodyError` 413 as soon as it passes ``limit`` bytes.

        A ``Content-Length`` over the limit is refused before anything is read (and before
        ``100 Continue`` is sent).
        """
        if self.length is not None and self.length > limit:
            raise BodyError(413, f"the body of {self.length} bytes exceeds the limit of {limit}")
        if self.length is not None:
            return self.read(self.length)
        parts = []
        size = 0
        while chunk := self.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise BodyError(413, f"the body exceeds the limit of {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def _next_chunk(self, rfile: BinaryIO) -> int:
        line = _read_line(rfile, 1024)
        if not line.endswith(b"\n"):
            raise BodyError(400, "a chunk-size line is too long or cut short")
        size_text = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not size_text or not set(size_text) <= _HEX or len(size_text) > 15:
            raise BodyError(400, f"bad chunk size {size_text[:20]!r}")
        return int(size_text, 16)

    def _finish_chunked(self, rfile: BinaryIO) -> None:
        # Trailer fields, up to the blank line; bounded like headers, then ignored.
        total = 0
        while True:
            line = _read_line(rfile, 8192)
            if line in (b"\r\n", b"\n"):
                break
            total += len(line)
            if not line.endswith(b"\n") or total > 65536:
                raise BodyError(400, "bad or oversized chunked trailer")
        self._done = True

    def drain(self) -> bool:
        """Read and drop what the app left unread; ``False`` if too much is left."""
        if self._done:
            return True
        if self.length is not None and self.length - self.received > _DRAIN_LIMIT:
            return False
        dropped = 0
        try:
            while self.read(65536):
                dropped += 65536
                if dropped > _DRAIN_LIMIT:
                    return False
        except BodyError:
            return False
        return True


def _read_exact(rfile: BinaryIO, size: int) -> bytes:
    try:
        data = rfile.read(size)
    except OSError as error:
        raise BodyError(400, f"the body could not be read ({error})") from None
    if len(data) != size:
        raise BodyError(400, "the client closed the connection before the body ended")
    return data


def _read_line(rfile: BinaryIO, limit: int) -> bytes:
    try:
        line = rfile.readline(limit)
    except OSError as error:
        raise BodyError(400, f"the body could not be read ({error})") from None
    if not line:
        raise BodyError(400, "the client closed the connection before the body ended")
    return line


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request's whole body, at most ``limit`` bytes.

    :raises BodyError: 413 past ``limit`` (refused from ``Content-Length`` alone when it
        says so), 400 when the body is badly framed or cut short.
    """
    stream = environ["wsgi.input"]
    if isinstance(stream, Body):
        return stream.read_all(limit)
    # Another WSGI server (werkzeug's test client in tests): trust its framing.
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BodyError(400, "invalid Content-Length") from None
    if length > limit:
        raise BodyError(413, f"the body of {length} bytes exceeds the limit of {limit}")
    data: bytes = stream.read(length) if length else stream.read(limit + 1)
    if len(data) > limit:
        raise BodyError(413, f"the body exceeds the limit of {limit} bytes")
    return data


# -- one connection ------------------------------------------------------------------------


class _Connection:
    """One client connection: reads requests and writes responses, in order."""

    def __init__(self, server: HTTPServer, sock: socket.socket, peer: Any) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.rfile: BinaryIO = sock.makefile("rb", 65536)  # type: ignore[assignment]
        #: Waiting for (or reading) the next request's head, since ``since``: reclaimable.
        self.idle = True
        self.since = time.monotonic()
        self.expect_continue = False
        self.closing = False
        #: The request being read is a HEAD: no answer to it carries a body.
        self.head_method = False

    def send_continue(self) -> None:
        self.expect_continue = False
        self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def serve(self) -> None:
        limits = self.server.limits
        try:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self.closing and not self.server.stopping:
                self.head_method = False
                self.sock.settimeout(limits.idle_timeout)
                self.idle, self.since = True, time.monotonic()
                if self.server.waiting_for_room:
                    self.server.wake_acceptor()
                try:
                    request = self._read_head()
                except _Gone:
                    return
                except _Refuse as refuse:
                    self._refuse(refuse.status, refuse.reason)
                    return
                self.idle, self.since = False, time.monotonic()
                self.sock.settimeout(limits.io_timeout)
                self._run(request)
        except (OSError, ValueError):
            pass  # the client went away (a timed-out socket file raises ValueError too)
        finally:
            self.close()

    def close(self, *, reset: bool = False) -> None:
        self.closing = True
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

    def _read_head(self) -> _Request:
        limits = self.server.limits
        rfile = self.rfile
        line = b""
        for _ in range(8):  # RFC 9112 2.2: ignore a few empty lines before a request
            try:
                line = rfile.readline(limits.max_request_line + 1)
            except (TimeoutError, OSError, ValueError):
                raise _Gone from None
            if not line:
                raise _Gone
            if line not in (b"\r\n", b"\n"):
                break
        self.sock.settimeout(limits.head_timeout)
        deadline = time.monotonic() + limits.head_timeout
        if not line.endswith(b"\n"):
            if len(line) > limits.max_request_line:
                raise _Refuse(414, "request line too long")
            raise _Gone  # closed mid-line
        request = _parse_request_line(line)
        self.head_method = request.method == "HEAD"
        count = size = 0
        headers: list[tuple[str, str]] = []
        while True:
            try:
                raw = rfile.readline(limits.max_header_bytes - size + 1)
            except (TimeoutError, OSError, ValueError):
                raise _Gone from None
            if raw in (b"\r\n", b"\n"):
                break
            size += len(raw)
            count += 1
            if size > limits.max_header_bytes or count > limits.max_headers:
                raise _Refuse(431, "")
            if not raw.endswith(b"\n"):
                raise _Gone
            if time.monotonic() > deadline:
                raise _Refuse(408, "the request head took too long")
            headers.append(_parse_header(raw))
        request.headers = headers
        request.frame(self, limits)
        return request

    # -- running the app -------------------------------------------------------------------

    def _run(self, request: _Request) -> None:
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
        except (ConnectionError, TimeoutError):
            self.closing = True  # the client went away mid-answer
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
        if self.server.request_log:
            _log.info(
                '%s "%s %s" %s', self.peer[0], request.method, request.target, response.status
            )
        if not response.keep_alive or self.expect_continue or not body.drain():
            self.closing = True

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request the server itself refuses (its error page), then close."""
        self._answer_and_close(*self.server.error_page(status, reason))

    def _answer_and_close(self, code: int, page: bytes) -> None:
        self.closing = True
        head = (
            f"HTTP/1.1 {code} {_phrase(code)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            self.sock.sendall(head.encode("latin-1") + (b"" if self.head_method else page))


def _parse_request_line(line: bytes) -> _Request:
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _Refuse(400, "malformed request line")
    method, target, version = parts
    if not set(method) <= _TOKEN:
        raise _Refuse(400, "malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/") and len(version) == 8 and version[5:6].isdigit():
            raise _Refuse(505, "unsupported protocol version")
        raise _Refuse(400, "malformed HTTP version")
    if any(b < 0x21 or b == 0x7F for b in target):
        raise _Refuse(400, "malformed request target")
    return _Request(method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"))


def _parse_header(raw: bytes) -> tuple[str, str]:
    if raw[:1] in (b" ", b"\t"):
        raise _Refuse(400, "obsolete line folding in a header")
    name, colon, value = raw.partition(b":")
    if not colon or not name or not set(name) <= _TOKEN:
        raise _Refuse(400, "malformed header line")
    value = value.strip(b" \t\r\n")
    if b"\r" in value or b"\x00" in value or b"\n" in value:
        raise _Refuse(400, "invalid character in a header value")
    return name.decode("ascii").lower(), value.decode("latin-1")


class _Request:
    __slots__ = ("body", "expect_continue", "headers", "keep_alive", "method", "target", "version")

    def __init__(self, method: str, target: str, version: str) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers: list[tuple[str, str]] = []
        self.body: Body | None = None
        self.keep_alive = version == "HTTP/1.1"
        self.expect_continue = False

    def get(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def frame(self, conn: _Connection, limits: HTTPLimits) -> None:
        """Decide the body's framing and the connection's fate from the headers (RFC 9112)."""
        tokens = {t.strip().lower() for v in self.get("connection") for t in v.split(",")}
        if "close" in tokens:
            self.keep_alive = False
        elif self.version == "HTTP/1.0" and "keep-alive" in tokens:
            self.keep_alive = True
        if limits.require_host and self.version == "HTTP/1.1" and not self.get("host"):
            raise _Refuse(400, "missing required Host header")
        codings = self.get("transfer-encoding")
        lengths = self.get("content-length")
        if codings:
            if lengths:
                raise _Refuse(400, "both Transfer-Encoding and Content-Length")
            if self.version == "HTTP/1.0":
                raise _Refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
            if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
                raise _Refuse(501, "unsupported transfer encoding")
            self.body = Body(conn, None)
        elif lengths:
            values = {v.strip() for v in ",".join(lengths).split(",")}
            text = values.pop() if len(values) == 1 else ""
            if not text or not set(text.encode()) <= _DIGITS or len(text) > 18:
                raise _Refuse(400, "bad Content-Length")
            self.body = Body(conn, int(text))
        else:
            self.body = Body(conn, 0)
        expect = [v.strip().lower() for v in self.get("expect")]
        if expect:
            if expect != ["100-continue"]:
                raise _Refuse(417, "")
            self.expect_continue = self.version == "HTTP/1.1" and not self.body.done

    def environ(self, conn: _Connection) -> dict[str, Any]:
        target = self.target
        if target.startswith(("http://", "https://")):
            # Absolute form (sent to proxies): keep the path and query.
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        path, _, query = target.partition("?")
        server = conn.server
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": self.target,
            "REQUEST_URI": self.target,
            "SERVER_NAME": server.host,
            "SERVER_PORT": str(server.port),
            "SERVER_PROTOCOL": self.version,
            "REMOTE_ADDR": conn.peer[0] if conn.peer else "",
            "REMOTE_PORT": str(conn.peer[1]) if conn.peer else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": self.body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "mocksup.socket": conn.sock,
            "mocksup.wait_disconnect": conn_waiter(conn),
        }
        for name, value in self.headers:
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name == "content-length":
                environ["CONTENT_LENGTH"] = value
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
                if key in environ:
                    # WSGI joins repeated headers (RFC 9110 5.3); Cookie joins with "; ".
                    environ[key] += ("; " if name == "cookie" else ", ") + value
                else:
                    environ[key] = value
        return environ


def conn_waiter(conn: _Connection) -> Callable[[float], bool]:
    """``wait(seconds) -> bool``: sleep up to ``seconds``, ``True`` at once if the client left.

    An app that takes time before its first byte (simulated latency) uses it to notice a
    client that gave up, as an ASGI server reports ``http.disconnect``. Data the client
    sends meanwhile (a pipelined request) is left alone: only end of stream counts.
    """

    def wait(seconds: float) -> bool:
        deadline = time.monotonic() + max(seconds, 0.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                readable, _, _ = select.select([conn.sock], [], [], remaining)
            except (OSError, ValueError):
                return True
            if not readable:
                return False
            try:
                peek = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                return True
            if not peek:
                return True
            # Pipelined data: the client is there; sleep out the rest without watching.
            threading.Event().wait(max(deadline - time.monotonic(), 0.0))
            return False

    return wait


class _Response:
    """Writes one response: status and headers on the first body chunk, framing decided
    then (``Content-Length`` as given or known, else chunked; nothing for ``HEAD``)."""

    __slots__ = ("_head", "conn", "headers", "keep_alive", "request", "started", "status")

    def __init__(self, conn: _Connection, request: _Request) -> None:
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
        if self.conn.expect_continue or (
            body is not None
            and body.length is not None
            and body.length - body.received > _DRAIN_LIMIT
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


# -- the server ----------------------------------------------------------------------------


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
        self._connections: set[_Connection] = set()
        self._jobs: queue.SimpleQueue[_Connection | None] = queue.SimpleQueue()
        self._idle_workers = 0
        self._lock = threading.Condition()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._fd_warned = -1e9

    @property
    def connections(self) -> int:
        """Connections open now."""
        with self._lock:
            return len(self._connections)

    def start(self) -> None:
        self.sock.setblocking(False)
        self._thread = threading.Thread(target=self._accept_loop, name="mocksup-http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop accepting and close idle connections; requests in flight are not waited for."""
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
            conn = _Connection(self, sock, peer)
            with self._lock:
                self._connections.add(conn)
                spawn = self._idle_workers == 0
                if not spawn:
                    self._idle_workers -= 1  # that worker will take this connection
            self._jobs.put(conn)
            if spawn:
                try:
                    threading.Thread(target=self._work, name="mocksup-conn", daemon=True).start()
                except RuntimeError:  # no more threads: refuse this one, keep serving
                    self._jobs.get_nowait()
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

    def wake_acceptor(self) -> None:
        """Tell the accept loop, waiting at the cap, that a connection can be reclaimed."""
        with self._lock:
            self._lock.notify_all()

    def _work(self) -> None:
        """A worker: serves connections one after the other, idle in between.

        Starting a thread costs more than serving a small request; kept workers (never
        more than the connection cap) make a new connection as cheap as a kept one.
        """
        while True:
            conn = self._jobs.get()
            if conn is None:
                return
            try:
                conn.serve()
            finally:
                self._forget(conn)
            with self._lock:
                if self.stopping:
                    return
                self._idle_workers += 1

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)
            self._lock.notify_all()
