"""Request bodies as the app sees them: bounded by their framing, never trusted.

:class:`Body` is ``wsgi.input``: it reads a ``Content-Length`` body or decodes a chunked one
(strictly: sizes, CRLFs, trailers bounded), sends ``100 Continue`` on the first read, and
raises :class:`BodyError` for a body badly framed, cut short or too large. Once it has raised,
the body is broken for good: its connection closes after the answer, since where the next
request would start is unknown. :func:`read_body` is how an app takes the whole of it, within
its own size limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol

__all__ = ("DRAIN_LIMIT", "Body", "BodyError", "read_body")

_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Unread request body drained to keep a connection; past it, the connection closes.
DRAIN_LIMIT = 1 << 20


class _Source(Protocol):
    """What a body reads from: the connection's buffered reader, its 100-continue, and the
    flag that ends the connection after the answer."""

    expect_continue: bool
    closing: bool

    @property
    def rfile(self) -> BinaryIO: ...

    def send_continue(self) -> None: ...

    def hold(self, size: int) -> bool: ...


class BodyError(Exception):
    """The request body cannot be had: too large (413), badly framed or cut short (400),
    or more than the server may hold at once (503).

    Raised by :func:`read_body` and by reads of ``wsgi.input``; an app catches it to answer
    in its own format. Uncaught, the server answers with its error page and closes.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Body:
    """A request body as ``wsgi.input``: never reads past its framing, never trusts it.

    ``length`` is the ``Content-Length`` (``None`` for a chunked body). A body that ends
    before its framing says, whose chunks are malformed, or that stalls past the
    server's ``io_timeout`` raises :class:`BodyError` (400), as does :meth:`read_all` past
    its limit (413). From then on every read raises the same error and the connection is
    marked to close after the answer (``Connection: close``, nothing more read from it).
    ``100 Continue`` goes out on the first read.
    """

    __slots__ = ("_chunk_left", "_conn", "_done", "error", "held", "length", "received")

    def __init__(self, conn: _Source | None, length: int | None) -> None:
        self._conn = conn
        self.length = length
        self.received = 0
        self._chunk_left = 0 if length is None else length
        self._done = length == 0
        #: The error that broke the body, if one did.
        self.error: BodyError | None = None
        #: Bytes counted against the server's ``max_held`` (let go when the request ends).
        self.held = 0

    @property
    def done(self) -> bool:
        """Whether the whole body was read."""
        return self._done

    def _fail(self, error: BodyError) -> BodyError:
        # Where this body ends, and the next request starts, is unknown now (or the client
        # is still sending what will not be read): the connection cannot carry another.
        self.error = error
        if self._conn is not None:
            self._conn.closing = True
        return error

    def _rfile(self) -> BinaryIO:
        conn = self._conn
        assert conn is not None
        if conn.expect_continue:
            conn.send_continue()
        return conn.rfile

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); ``b""`` at the end.

        :raises BodyError: the body is badly framed, cut short or stalled (400).
        """
        if self.error is not None:
            raise self.error
        try:
            return self._read(size)
        except BodyError as error:
            raise self._fail(error) from None

    def _read(self, size: int | None) -> bytes:
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
        ``100 Continue`` is sent); so is one past what the server may still hold (503).
        """
        if self.length is not None and self.length > limit:
            message = f"the body of {self.length} bytes exceeds the limit of {limit}"
            raise self._fail(BodyError(413, message))
        if self.length is not None:
            self._hold(self.length - self.received)
            return self.read(self.length)
        parts = []
        size = 0
        while chunk := self.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise self._fail(BodyError(413, f"the body exceeds the limit of {limit} bytes"))
            self._hold(len(chunk))
            parts.append(chunk)
        return b"".join(parts)

    def _hold(self, size: int) -> None:
        """Count ``size`` bytes the app will hold against the server's ``max_held``."""
        if self._conn is None or not size:
            return
        if not self._conn.hold(size):
            message = "the server holds as many request bodies as it may: try again later"
            raise self._fail(BodyError(503, message))
        self.held += size

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
        """Read and drop what the app left unread; ``False`` if too much is left, or the
        body is broken."""
        if self._done:
            return True
        if self.error is not None:
            return False
        if self.length is not None and self.length - self.received > DRAIN_LIMIT:
            return False
        dropped = 0
        try:
            while self.read(65536):
                dropped += 65536
                if dropped > DRAIN_LIMIT:
                    return False
        except BodyError:
            return False
        return True


def _read_exact(rfile: BinaryIO, size: int) -> bytes:
    try:
        data = rfile.read(size)
    except (OSError, ValueError) as error:  # ValueError: the connection's file is closed
        raise BodyError(400, f"the body could not be read ({error})") from None
    if len(data) != size:
        raise BodyError(400, "the client closed the connection before the body ended")
    return data


def _read_line(rfile: BinaryIO, limit: int) -> bytes:
    try:
        line = rfile.readline(limit)
    except (OSError, ValueError) as error:
        raise BodyError(400, f"the body could not be read ({error})") from None
    if not line:
        raise BodyError(400, "the client closed the connection before the body ended")
    return line


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request's whole body, at most ``limit`` bytes.

    :raises BodyError: 413 past ``limit`` (refused from ``Content-Length`` alone when it
        says so), 400 when the body is badly framed or cut short, 503 when the server holds
        as many request bodies as it may (``max_held``).
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
