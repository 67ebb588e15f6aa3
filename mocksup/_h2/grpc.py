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
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from mocksup._h2.connection import Answer, Connection, Stream
from mocksup._h2.frames import ErrorCode
from mocksup._h2.hpack import literal

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
    """What a unary call answers: a ``message`` (status OK) or an error ``code`` with its
    ``message`` text and extra trailers (``-bin`` values are bytes)."""

    __slots__ = ("code", "message", "payload", "trailers")

    def __init__(
        self,
        payload: bytes = b"",
        *,
        code: str = "OK",
        message: str = "",
        trailers: Sequence[tuple[str, bytes | str]] = (),
    ) -> None:
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
            self._conn.answer(self._stream, self._handler.answer(self._stream, reply))
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
        """Check the request's headers; answer at once what grpc-go refuses before reading."""
        path = content_type = encoding = timeout = b""
        method = None
        for name, value in stream.headers:
            if name == b":path":
                path = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-encoding":
                encoding = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b":method":
                method = value
        if method != b"POST":
            # grpc-go resets such a stream without an answer.
            conn.reset(stream.id, ErrorCode.PROTOCOL_ERROR)
            return None
        subtype = _subtype(content_type)
        if subtype is None:
            text = f"invalid gRPC request content-type {content_type.decode('latin-1')!r}"
            return self._refuse(stream, "INTERNAL", text, http_status=415)
        stream.state = subtype
        if timeout:
            seconds = _timeout(timeout)
            if seconds is None:
                text = f"malformed grpc-timeout: {timeout.decode('latin-1')!r}"
                return self._refuse(stream, "INTERNAL", text, http_status=400)
            self._deadline(conn, stream, seconds)
        if path not in self.methods:
            return self._refuse(stream, "UNIMPLEMENTED", self._unknown(path))
        coding = encoding.decode("latin-1")
        if coding not in ("", "identity") and coding not in self.decoders:
            text = f"grpc: Decompressor is not installed for grpc-encoding {coding!r}"
            return self._refuse(stream, "UNIMPLEMENTED", text.replace("'", '"'))
        return None

    def received(self, conn: Connection, stream: Stream) -> Answer | None:
        """Refuse a message whose declared length is past the limit, before it all arrives."""
        if stream.size >= 5 and stream.size - len(stream.body[-1]) < 5:  # the prefix is in
            length = _PREFIX.unpack_from(_head(stream.body))[1]
            if length > self.max_message:
                text = f"grpc: received message larger than max ({length} vs. {self.max_message})"
                return self._refuse(stream, "RESOURCE_EXHAUSTED", text)
        return None

    def ended(self, conn: Connection, stream: Stream) -> Answer | None:
        """The request is complete: unframe, inflate and call the method."""
        path, fn = self.methods[_header(stream, b":path")]
        if stream.size < 5:
            return self._refuse(stream, "INTERNAL", "grpc: received no request message")
        flag, length = _PREFIX.unpack_from(_head(stream.body))
        if stream.size - 5 < length:
            return self._refuse(stream, "INTERNAL", "grpc: received a truncated message")
        if stream.size - 5 > length:
            return self._refuse(
                stream, "UNIMPLEMENTED", "grpc: received more than one request message"
            )
        message = _join_after_prefix(stream.body)
        encoding = _header(stream, b"grpc-encoding").decode("latin-1")
        if flag == 1:
            refused, message = self._inflate(message, encoding)
            if refused is not None:
                return self._refuse(stream, *refused)
        elif flag:
            text = f"grpc: received unexpected payload format {flag}"
            return self._refuse(stream, "INTERNAL", text)
        metadata = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in stream.headers
            if not name.startswith(b":") and not name.endswith(b"-bin")
        }
        call = Call(
            self, conn, stream, path=path, metadata=metadata, encoding=encoding, message=message
        )
        reply = fn(call)
        return None if reply is None else self.answer(stream, reply)

    # -- answers -----------------------------------------------------------------------

    def answer(self, stream: Stream, reply: Reply) -> Answer:
        """The HTTP/2 answer for ``reply``."""
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
            return f"malformed method name: {text!r}".replace("'", '"')
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
            return ("INTERNAL", f"grpc: failed to decompress the received message: {error}"), b""
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

        server.call_at(time.monotonic() + seconds, expire)


def _head(chunks: list[bytes | memoryview]) -> bytes:
    """The first five bytes of the body (the message prefix)."""
    head = b""
    for chunk in chunks:
        head += bytes(chunk[: 5 - len(head)])
        if len(head) == 5:
            break
    return head


def _join_after_prefix(chunks: list[bytes | memoryview]) -> bytes:
    """The body without its 5-byte prefix, joined in one copy."""
    skip = 5
    for index, chunk in enumerate(chunks):
        if len(chunk) > skip:
            return b"".join([chunk[skip:], *chunks[index + 1 :]])
        skip -= len(chunk)
    return b""


def _header(stream: Stream, name: bytes) -> bytes:
    for key, value in stream.headers:
        if key == name:
            return value
    return b""


def _subtype(content_type: bytes) -> bytes | None:
    """The content subtype (``b""`` for plain ``application/grpc``), ``None`` if not gRPC."""
    lowered = content_type.lower()
    if not lowered.startswith(b"application/grpc"):
        return None
    rest = lowered[16:]
    if not rest:
        return b""
    if rest[:1] == b"+":
        return rest[1:]
    return b"" if rest[:1] == b";" else None


def _content_type(subtype: bytes) -> bytes:
    return literal(b"content-type", b"application/grpc" + (b"+" + subtype if subtype else b""))


def _timeout(value: bytes) -> float | None:
    """``grpc-timeout`` in seconds (at most 8 digits and a unit), ``None`` if malformed."""
    digits, unit = value[:-1], value[-1:]
    if not 0 < len(digits) <= 8 or not digits.isdigit() or unit not in _UNITS:
        return None
    return int(digits) * _UNITS[unit]


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
