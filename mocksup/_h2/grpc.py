"""Unary gRPC over the HTTP/2 server, answering as grpc-go (the Collector's server) does.

A :class:`GRPCHandler` maps ``/package.Service/Method`` paths to unary functions that take a
:class:`Call` (the message, inflated and bounded, and the request metadata) and return a
:class:`Reply`, or ``None`` when they answer later from another thread with
:meth:`Call.finish`. Everything before the function (content type, ``grpc-timeout``,
``grpc-encoding``, the message's framing and size) is checked here with grpc-go's codes and
texts; errors are trailers-only answers, and a stream whose deadline passes is reset
(RST_STREAM CANCEL), as grpc-go resets it.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from mocksup._h2.connection import Connection
from mocksup._h2.frames import ErrorCode
from mocksup._h2.hpack import literal
from mocksup._h2.stream import Answer, Stream

if TYPE_CHECKING:
    from mocksup._h2.server import H2Server

__all__ = ("CODES", "Call", "GRPCHandler", "Reply", "Unary")

#: gRPC status codes by name.
CODES = {
    name: number
    for number, name in enumerate(
        (
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        )
    )
}
_PREFIX = struct.Struct(">BL")
_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_STATUS_200 = b"\x88"  # ":status: 200", static table index 8


class Reply:
    """What a unary call answers: a ``payload`` (status OK) or an error ``code`` with its
    ``message`` text and extra trailers (``-bin`` values are bytes); or, with ``drop``, no
    answer at all: the connection is closed (the client sees UNAVAILABLE)."""

    __slots__ = ("code", "drop", "message", "payload", "trailers")

    def __init__(
        self,
        payload: bytes = b"",
        *,
        code: str = "OK",
        message: str = "",
        trailers: Sequence[tuple[str, bytes | str]] = (),
        drop: bool = False,
    ) -> None:
        self.drop = drop
        self.payload = payload
        self.code = code
        self.message = message
        self.trailers = trailers


class Call:
    """One unary call as the function sees it."""

    __slots__ = ("_conn", "_handler", "_stream", "encoding", "message", "metadata", "path")

    def __init__(
        self,
        handler: GRPCHandler,
        conn: Connection,
        stream: Stream,
        *,
        path: str,
        metadata: dict[str, str],
        encoding: str,
        message: bytes,
    ) -> None:
        self._handler = handler
        self._conn = conn
        self._stream = stream
        self.path = path
        self.metadata = metadata
        self.encoding = encoding
        self.message = message

    def finish(self, reply: Reply) -> None:
        """Answer from any thread (for a function that returned ``None``)."""
        server = self._handler.server
        assert server is not None

        def send() -> None:
            answer = self._handler.answer(self._conn, self._stream, reply)
            if answer is not None:
                self._conn.answer(self._stream, answer)
            server.flush(self._conn)

        server.call_soon(send)


Unary = Callable[[Call], "Reply | None"]
#: Inflates a compressed message: (data, limit) -> at most limit + 1 bytes.
Inflate = Callable[[bytes, int], bytes]


class GRPCHandler:
    """The :class:`~mocksup._h2.connection.Handler` for unary gRPC methods.

    :param methods: ``"/pkg.Service/Method"`` -> function.
    :param max_message: the receive limit in bytes, on the message as sent and inflated.
    :param decoders: ``grpc-encoding`` name -> inflater (``identity`` needs none).
    """

    def __init__(
        self, methods: Mapping[str, Unary], max_message: int, decoders: Mapping[str, Inflate]
    ) -> None:
        self.methods = {path.encode(): (path, fn) for path, fn in methods.items()}
        self.services = {path.rsplit("/", 1)[0].lstrip("/") for path in methods}
        self.max_message = max_message
        self.decoders = dict(decoders)
        self.server: H2Server | None = None
        self._ok_heads: dict[bytes, bytes] = {}
        self._ok_trailers = literal(b"grpc-status", b"0") + literal(b"grpc-message", b"")

    # -- the Handler protocol ----------------------------------------------------------

    def opened(self, conn: Connection, stream: Stream) -> Answer | None:
        """Check the request's headers; answer at once what grpc-go refuses before reading,
        in grpc-go's order."""
        head = _Head(stream.headers)
        if head.connection:  # "Transports must consider requests containing the Connection
            conn.reset(stream.id, ErrorCode.PROTOCOL_ERROR)  # header as malformed" (A41)
            return None
        stream.state = head.subtype or b""
        if head.authorities > 1 or head.hosts > 1:
            text = (
                f"num values of :authority: {head.authorities}, num values of host: "
                f"{head.hosts}, both must only have 1 value as per HTTP/2 spec"
            )
            return self._refuse(stream, "INTERNAL", text, http_status=400)
        if head.subtype is None:
            text = f"invalid gRPC request content-type {_quote(head.content_type)}"
            return self._refuse(stream, "INVALID_ARGUMENT", text, http_status=415)
        seconds = None
        if head.timeout is not None:
            seconds, error = _timeout(head.timeout)
            if error:
                return self._refuse(
                    stream, "INTERNAL", f"malformed grpc-timeout: {error}", http_status=400
                )
        if head.method != b"POST":
            text = (
                f"Received a HEADERS frame with :method {_quote(head.method)} which should be POST"
            )
            return self._refuse(stream, "INTERNAL", text, http_status=405)
        if seconds is not None:
            if seconds <= 0:
                return self._refuse(stream, "DEADLINE_EXCEEDED", "context deadline exceeded")
            self._deadline(conn, stream, seconds)
        if head.path not in self.methods:
            return self._refuse(stream, "UNIMPLEMENTED", self._unknown(head.path))
        coding = head.encoding.decode("latin-1")
        if coding not in ("", "identity") and coding not in self.decoders:
            text = f"grpc: Decompressor is not installed for grpc-encoding {_quote(head.encoding)}"
            return self._refuse(stream, "UNIMPLEMENTED", text)
        return None

    def received(self, conn: Connection, stream: Stream) -> Answer | None:
        """Refuse a message whose declared length is past the limit, before it all arrives;
        and a body past two messages' worth, which no unary call sends: what it holds is
        never kept past that (grpc-go refuses once a second message is in)."""
        size = stream.size
        if size >= 5 and size - len(stream.body[-1]) < 5:  # the prefix is in
            too_large = self._too_large(_PREFIX.unpack_from(_head(stream.body))[1])
            if too_large is not None:
                return self._refuse(stream, *too_large)
        if size > 2 * (5 + self.max_message):
            start = 5 + _PREFIX.unpack_from(_head(stream.body))[1]
            return self._refuse(stream, *self._second_message(stream.body, start, size - start))
        return None

    def ended(self, conn: Connection, stream: Stream) -> Answer | None:
        """The request is complete: unframe, inflate and call the method."""
        path, fn = self.methods[_header(stream, b":path")]
        if not stream.size:
            text = (
                "cardinality violation: received no request message from non-client-streaming RPC"
            )
            return self._refuse(stream, "INTERNAL", text)
        if stream.size < 5:
            return self._refuse(stream, "INTERNAL", "unexpected EOF")
        flag, length = _PREFIX.unpack_from(_head(stream.body))
        rest = stream.size - 5 - length  # what follows the first message
        if rest < 0:
            return self._refuse(stream, "INTERNAL", "unexpected EOF")
        message = _join_after_prefix(stream.body, length)
        encoding = _header(stream, b"grpc-encoding").decode("latin-1")
        if flag == 1:
            refused, message = self._inflate(message, encoding)
            if refused is not None:
                return self._refuse(stream, *refused)
        elif flag:
            text = f"grpc: received unexpected payload format {flag}"
            return self._refuse(stream, "INTERNAL", text)
        if rest:
            return self._refuse(stream, *self._second_message(stream.body, 5 + length, rest))
        metadata = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in stream.headers
            if not name.startswith(b":") and not name.endswith(b"-bin")
        }
        call = Call(
            self, conn, stream, path=path, metadata=metadata, encoding=encoding, message=message
        )
        reply = fn(call)
        return None if reply is None else self.answer(conn, stream, reply)

    def _second_message(
        self, body: list[bytes | memoryview], start: int, size: int
    ) -> tuple[str, str]:
        """The refusal of a unary call whose body goes on after its message: ``size`` more
        bytes from ``start``. grpc-go reads a unary call's body to its end before the
        handler runs: a second message refuses the call, and so does the start of one, as
        its reads fail. (Checked here once the first message is inflated; grpc-go has
        unmarshalled it by then, so a first message it cannot parse is refused as such
        there. The second is not inflated.)"""
        if size < 5:
            return "INTERNAL", "unexpected EOF"
        length = _PREFIX.unpack_from(_bytes_at(body, start, 5))[1]
        too_large = self._too_large(length)
        if too_large is not None:
            return too_large
        if size - 5 < length:
            return "INTERNAL", "unexpected EOF"
        return (
            "INTERNAL",
            "cardinality violation: received multiple request messages for "
            "non-client-streaming RPC",
        )

    def _too_large(self, length: int) -> tuple[str, str] | None:
        """grpc-go's refusal of a message prefix declaring ``length`` bytes, if past the limit."""
        if length <= self.max_message:
            return None
        text = f"grpc: received message larger than max ({length} vs. {self.max_message})"
        return "RESOURCE_EXHAUSTED", text

    # -- answers -----------------------------------------------------------------------

    def answer(self, conn: Connection, stream: Stream, reply: Reply) -> Answer | None:
        """The HTTP/2 answer for ``reply``; ``None`` when it drops the connection."""
        if reply.drop:
            conn.drop()
            return None
        if reply.code != "OK" or reply.trailers:
            return self._refuse(stream, reply.code, reply.message, reply.trailers)
        subtype = stream.state if isinstance(stream.state, bytes) else b""
        head = self._ok_heads.get(subtype)
        if head is None:
            head = self._ok_heads[subtype] = _STATUS_200 + _content_type(subtype)
        data = _PREFIX.pack(0, len(reply.payload)) + reply.payload
        return Answer(head, data, self._ok_trailers)

    def _refuse(
        self,
        stream: Stream,
        code: str,
        text: str,
        trailers: Sequence[tuple[str, bytes | str]] = (),
        *,
        http_status: int = 200,
    ) -> Answer:
        subtype = stream.state if isinstance(stream.state, bytes) else b""
        block = bytearray(
            _STATUS_200 if http_status == 200 else literal(b":status", b"%d" % http_status)
        )
        block += _content_type(subtype)
        block += literal(b"grpc-status", b"%d" % CODES[code])
        block += literal(b"grpc-message", percent_encode(text))
        for name, value in trailers:
            # Binary (-bin) values go base64 without padding, as grpc-go sends them.
            raw = (
                base64.b64encode(value).rstrip(b"=")
                if isinstance(value, bytes)
                else value.encode("latin-1")
            )
            block += literal(name.encode("latin-1"), raw)
        return Answer(None, b"", bytes(block))

    def _unknown(self, path: bytes) -> str:
        text = path.decode("utf-8", "replace")
        method = text[1:] if text.startswith("/") else text
        if "/" not in method:
            return f"malformed method name: {_quote(path)}"
        service, _, name = method.rpartition("/")
        if service not in self.services:
            return f"unknown service {service}"
        return f"unknown method {name} for service {service}"

    def _inflate(self, message: bytes, encoding: str) -> tuple[tuple[str, str] | None, bytes]:
        if encoding in ("", "identity"):
            return ("INTERNAL", "grpc: compressed flag set with identity or empty encoding"), b""
        try:
            inflated = self.decoders[encoding](message, self.max_message)
        except Exception as error:  # any codec failure is the client's
            # grpc-go's words: gzip fails opening its reader, stream codecs while reading.
            what = "decompress the message" if encoding == "gzip" else "read decompressed data"
            return ("INTERNAL", f"grpc: failed to {what}: {error}"), b""
        if len(inflated) > self.max_message:
            text = f"grpc: received message after decompression larger than max {self.max_message}"
            return ("RESOURCE_EXHAUSTED", text), b""
        return None, inflated

    def _deadline(self, conn: Connection, stream: Stream, seconds: float) -> None:
        server = self.server
        if server is None:
            return

        def expire() -> None:
            if not stream.answered and conn.streams.get(stream.id) is stream:
                conn.reset(stream.id, ErrorCode.CANCEL)
                server.flush(conn)

        stream.timer = server.call_at(time.monotonic() + seconds, expire)


def _head(chunks: list[bytes | memoryview]) -> bytes:
    """The first five bytes of the body (the message prefix)."""
    head = b""
    for chunk in chunks:
        head += bytes(chunk[: 5 - len(head)])
        if len(head) == 5:
            break
    return head


def _bytes_at(chunks: list[bytes | memoryview], start: int, size: int) -> bytes:
    """``size`` bytes of the body from ``start`` (all there)."""
    out = b""
    for chunk in chunks:
        if start < len(chunk):
            out += bytes(chunk[start : start + size - len(out)])
            if len(out) == size:
                break
        start = max(start - len(chunk), 0)
    return out


def _join_after_prefix(chunks: list[bytes | memoryview], length: int) -> bytes:
    """The first message of the body (``length`` bytes after its prefix), in one copy."""
    skip = 5
    for index, chunk in enumerate(chunks):
        if len(chunk) > skip:
            joined = b"".join([chunk[skip:], *chunks[index + 1 :]])
            return joined if len(joined) == length else joined[:length]
        skip -= len(chunk)
    return b""


def _header(stream: Stream, name: bytes) -> bytes:
    for key, value in stream.headers:
        if key == name:
            return value
    return b""


def _subtype(content_type: bytes) -> bytes | None:
    """The content subtype (``b""`` for plain ``application/grpc``), ``None`` if not gRPC.

    grpc-go's rule, case-sensitive: what follows ``application/grpc`` and a ``+`` or ``;``
    (an unknown subtype is decoded as protobuf all the same).
    """
    if content_type == b"application/grpc":
        return b""
    if content_type.startswith(b"application/grpc") and content_type[16:17] in (b"+", b";"):
        return content_type[17:]
    return None


def _content_type(subtype: bytes) -> bytes:
    return literal(b"content-type", b"application/grpc" + (b"+" + subtype if subtype else b""))


def _timeout(value: bytes) -> tuple[float, str]:
    """``grpc-timeout`` in seconds, or grpc-go's complaint about it."""
    if len(value) < 2:
        return 0.0, f"transport: timeout string is too short: {_quote(value)}"
    if len(value) > 9:  # 8 digits and the unit
        return 0.0, f"transport: timeout string is too long: {_quote(value)}"
    unit = _UNITS.get(value[-1:])
    if unit is None:
        return 0.0, f"transport: timeout unit is not recognized: {_quote(value)}"
    if not value[:-1].isdigit():
        return 0.0, f"strconv.ParseUint: parsing {_quote(value[:-1])}: invalid syntax"
    return int(value[:-1]) * unit, ""


def _quote(value: bytes) -> str:
    """``value`` as Go's ``%q`` shows a string (double quotes, escapes)."""
    return json.dumps(value.decode("utf-8", "replace"), ensure_ascii=False)


class _Head:
    """What the gRPC layer reads from a request's header list."""

    __slots__ = (
        "authorities",
        "connection",
        "content_type",
        "encoding",
        "hosts",
        "method",
        "path",
        "subtype",
        "timeout",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.path = self.content_type = self.encoding = self.method = b""
        self.timeout: bytes | None = None
        self.authorities = self.hosts = 0
        self.connection = False
        for name, value in headers:
            if name == b":path":
                self.path = value
            elif name == b"content-type":
                self.content_type = value
            elif name == b"grpc-encoding":
                self.encoding = value
            elif name == b"grpc-timeout":
                self.timeout = value
            elif name == b":method":
                self.method = value
            elif name == b":authority":
                self.authorities += 1
            elif name == b"host":
                self.hosts += 1
            elif name == b"connection":
                self.connection = True
        self.subtype = _subtype(self.content_type)


def percent_encode(text: str) -> bytes:
    """``grpc-message``'s encoding: UTF-8, with bytes outside printable ASCII and ``%`` as
    ``%XX``."""
    raw = text.encode("utf-8", "replace")
    if all(0x20 <= byte <= 0x7E and byte != 0x25 for byte in raw):
        return raw
    return b"".join(
        bytes((byte,)) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte
        for byte in raw
    )
