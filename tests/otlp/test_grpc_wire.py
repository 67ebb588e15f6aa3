"""The collector's own HTTP/2 server under hostile and unusual clients, over raw sockets.

Each test speaks HTTP/2 by hand (frames built here, HPACK from the h2 package where the
block must be valid) and checks what RFC 9113 and grpc-go answer; after each, a real grpcio
call still succeeds and what was stored before is still there.
"""

from __future__ import annotations

import resource
import socket
import struct
import threading
import time
import unittest

import grpc
import hpack
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from mocksup import ServeContext
from mocksup.otlp import MockOTLPCollector
from tests.otlp.support import TRACE_EXPORT, CollectorTestCase, grpc_call
from tests.otlp.test_http_input import request_bytes
from tests.support import ProcessTestCase, cpu_seconds_over, poll_until

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS = 0x1, 0x4
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 1, 3, 6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 7, 8, 9


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">L", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">L", stream)
        + payload
    )


def request_block(encoder: hpack.Encoder, path: str = TRACE_EXPORT) -> bytes:
    return encoder.encode(
        [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "localhost"), ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )  # fmt: skip


def padded_request(name: str) -> bytes:
    """A request of one span named ``name`` with a 57,000-character attribute."""
    pad = KeyValue(key="pad", value=AnyValue(string_value="x" * 57_000))
    span = Span(trace_id=bytes(range(16)), span_id=bytes(8 * [1]), name=name, attributes=[pad])
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    return request.SerializeToString()


def message(body: bytes) -> bytes:
    return b"\0" + struct.pack(">L", len(body)) + body


class Refused(AssertionError):
    """The server reset a stream that was to be answered (``code``: its error code)."""

    def __init__(self, stream: int, code: int) -> None:
        super().__init__(f"stream {stream} was reset with error code {code}")
        self.code = code


class Wire:
    """A raw HTTP/2 client connection: sends bytes, reads frames against a deadline."""

    def __init__(self, port: int, *, preface: bytes = PREFACE + frame(SETTINGS, 0, 0)) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        if preface:
            self.sock.sendall(preface)

    def close(self) -> None:
        self.sock.close()

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def frames(
        self, until: int, stream: int | None = None, *, reset: bool = False
    ) -> list[tuple[int, int, int, bytes]]:
        """Frames read until one of type ``until`` (on ``stream`` if given) or EOF; with
        ``reset``, also until an RST_STREAM on ``stream``."""
        got: list[tuple[int, int, int, bytes]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            while len(self.buf) >= 9:
                size = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + size:
                    break
                kind, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big")
                got.append((kind, flags, sid, self.buf[9 : 9 + size]))
                self.buf = self.buf[9 + size :]
                if (kind == until or (reset and kind == RST_STREAM)) and stream in (None, sid):
                    return got
            data = self.sock.recv(65536)
            if not data:
                got.append((-1, 0, 0, b""))  # EOF
                return got
            self.buf += data
        raise AssertionError(f"no frame of type {until} within 10 s: {got}")

    def eof(self) -> bool:
        """Whether the server closes the connection (reading and dropping what comes)."""
        return self.frames(until=-2)[-1][0] == -1

    def answer(self, stream: int) -> dict[str, str]:
        """The headers and trailers of the answer on ``stream``, read until it ends.

        :raises Refused: the server reset the stream instead.
        """
        fields: dict[str, str] = {}
        while True:
            got = self.frames(until=HEADERS, stream=stream, reset=True)
            kind, flags, _, payload = got[-1]
            if kind == RST_STREAM:
                raise Refused(stream, struct.unpack(">L", payload)[0])
            if kind != HEADERS:
                raise AssertionError(f"the connection closed before stream {stream} ended")
            fields.update(self.headers_of(payload))
            if flags & END_STREAM:
                return fields

    def headers_of(self, block: bytes) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.decoder.decode(block)}


class WireCase(CollectorTestCase):
    """Raw connections to the collector, with a call served before and after each test."""

    def setUp(self) -> None:
        super().setUp()
        _, error = grpc_call(self.collector.grpc_endpoint or "", request_bytes("before"))
        self.assertIsNone(error)

    def tearDown(self) -> None:
        _, error = grpc_call(self.collector.grpc_endpoint or "", request_bytes("after"))
        self.assertIsNone(error)
        names = [span.name for span in self.collector.spans()]
        self.assertEqual(names[0], "before")
        self.assertEqual(names[-1], "after")
        super().tearDown()

    def wire(self, **kwargs: bytes) -> Wire:
        wire = Wire(self.collector.grpc_port or 0, **kwargs)
        self.addCleanup(wire.close)
        return wire

    def goaway(self, wire: Wire) -> tuple[int, int]:
        kind, _, _, payload = wire.frames(until=GOAWAY)[-1]
        self.assertEqual(kind, GOAWAY)
        last, code = struct.unpack(">LL", payload[:8])
        self.assertTrue(wire.eof())
        return last, code


class WireTest(WireCase):
    """Protocol errors answer as RFC 9113 says, and never cost the collector its data."""

    def test_a_bad_preface_is_closed_without_an_answer(self) -> None:
        wire = self.wire(preface=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # Only the server's own SETTINGS (sent first), then the close: as grpc-go does.
        kinds = [kind for kind, *_ in wire.frames(until=-2)]
        self.assertEqual(kinds[-1], -1)
        self.assertNotIn(GOAWAY, kinds)

    def test_our_settings_ack_and_ping(self) -> None:
        wire = self.wire()
        settings = wire.frames(until=SETTINGS)[-1]
        values = dict(struct.iter_unpack(">HL", settings[3]))
        self.assertEqual(values[3], 100)  # MAX_CONCURRENT_STREAMS
        self.assertGreaterEqual(values[4], 1 << 20)  # INITIAL_WINDOW_SIZE: big exports flow
        self.assertGreaterEqual(values[5], 1 << 20)  # MAX_FRAME_SIZE
        wire.send(frame(PING, 0, 0, b"12345678"))
        _, flags, _, payload = wire.frames(until=PING)[-1]
        self.assertEqual((flags, payload), (1, b"12345678"))

    def test_frames_that_break_the_rules_get_goaway(self) -> None:
        block = request_block(hpack.Encoder())
        cases = {
            "HEADERS on stream 0": (frame(HEADERS, END_HEADERS, 0, block), PROTOCOL_ERROR),
            "an even stream": (frame(HEADERS, END_HEADERS, 2, block), PROTOCOL_ERROR),
            "DATA on an idle stream": (frame(DATA, 0, 7, b"x"), PROTOCOL_ERROR),
            "a short PING": (frame(PING, 0, 0, b"1"), FRAME_SIZE_ERROR),
            "SETTINGS of 5 bytes": (frame(SETTINGS, 0, 0, b"12345"), FRAME_SIZE_ERROR),
            "a frame past MAX_FRAME_SIZE": (b"\x7f\xff\xff\0\0\0\0\0\x01", FRAME_SIZE_ERROR),
            "a bad HPACK index": (frame(HEADERS, END_HEADERS, 1, b"\xff\x7f"), COMPRESSION_ERROR),
            "Huffman with EOS": (
                frame(HEADERS, END_HEADERS, 1, b"\x40\x84\xff\xff\xff\xff\x81\x00"),
                COMPRESSION_ERROR,
            ),
            "window overflow": (
                frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 2**31 - 1)),
                FLOW_CONTROL_ERROR,
            ),
        }  # fmt: skip
        for name, (bad, code) in cases.items():
            with self.subTest(name):
                wire = self.wire()
                wire.send(bad)
                self.assertEqual(self.goaway(wire)[1], code)

    def test_goaway_names_the_last_stream(self) -> None:
        wire = self.wire()
        body = message(request_bytes("first"))
        wire.send(
            frame(HEADERS, END_HEADERS, 1, request_block(wire.encoder)),
            frame(DATA, END_STREAM, 1, body),
            frame(PING, 0, 0, b"x"),
        )
        self.assertEqual(self.goaway(wire), (1, FRAME_SIZE_ERROR))
        self.assertIn("first", [span.name for span in self.collector.spans()])

    def test_a_dropped_call_closes_its_connection_without_an_answer(self) -> None:
        self.collector.drop_next(1, transport="grpc")
        wire = self.wire()
        wire.send(
            frame(HEADERS, END_HEADERS, 1, request_block(wire.encoder)),
            frame(DATA, END_STREAM, 1, message(request_bytes("dropped"))),
        )
        kinds = [kind for kind, *_ in wire.frames(until=-2)]
        self.assertEqual(kinds[-1], -1)
        self.assertNotIn(HEADERS, kinds)
        self.assertNotIn(GOAWAY, kinds)
        self.assertEqual([r.status for r in self.collector.requests()][-1], "dropped")

    def test_a_client_that_dies_mid_message_loses_only_its_message(self) -> None:
        wire = self.wire()
        body = message(request_bytes("half"))
        wire.send(frame(HEADERS, END_HEADERS, 1, request_block(wire.encoder)))
        wire.send(struct.pack(">L", len(body))[1:] + bytes((DATA, END_STREAM)) + b"\0\0\0\1")
        wire.send(body[: len(body) // 2])
        wire.close()
        self.assertNotIn("half", [span.name for span in self.collector.spans()])

    def test_answers_wait_for_the_clients_window(self) -> None:
        # The client allows no DATA at all: the answer's headers come, its message waits.
        wire = self.wire(preface=PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HL", 4, 0)))
        wire.send(
            frame(HEADERS, END_HEADERS, 1, request_block(wire.encoder)),
            frame(DATA, END_STREAM, 1, message(request_bytes("windowed"))),
        )
        got = wire.frames(until=HEADERS, stream=1)
        wire.send(frame(PING, 0, 0, b"12345678"))
        got += wire.frames(until=PING)
        self.assertNotIn(DATA, [kind for kind, *_ in got])
        wire.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">L", 3)))
        got = wire.frames(until=DATA)
        self.assertEqual(got[-1][3], b"\0\0\0")  # 3 bytes, as the window allows
        wire.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">L", 100)))
        got = wire.frames(until=HEADERS, stream=1)
        self.assertEqual(b"".join(p for k, _, _, p in got if k == DATA), b"\0\x02\x0a\x00")
        trailers = wire.headers_of(got[-1][3])
        self.assertEqual(trailers["grpc-status"], "0")
        self.assertIn("windowed", [span.name for span in self.collector.spans()])

    def test_streams_past_the_limit_are_refused(self) -> None:
        wire = self.wire()
        frames = [
            frame(HEADERS, END_HEADERS, 2 * n + 1, request_block(wire.encoder)) for n in range(101)
        ]
        wire.send(*frames)
        _, _, stream, payload = wire.frames(until=RST_STREAM)[-1]
        self.assertEqual((stream, payload), (201, struct.pack(">L", REFUSED_STREAM)))

    def test_unknown_methods_are_answered_at_once(self) -> None:
        # Before the message arrives, trailers-only, and the client's half is reset (NO_ERROR).
        wire = self.wire()
        wire.send(frame(HEADERS, END_HEADERS, 1, request_block(wire.encoder, "/a.B/C")))
        got = wire.frames(until=RST_STREAM)
        headers = [p for k, f, s, p in got if k == HEADERS and f & END_STREAM]
        answer = wire.headers_of(headers[0])
        self.assertEqual(
            (answer["grpc-status"], answer["grpc-message"]), ("12", "unknown service a.B")
        )
        self.assertEqual(got[-1][3], b"\0\0\0\0")

    def test_grpc_timeout_resets_a_stream_left_open(self) -> None:
        wire = self.wire()
        block = wire.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", TRACE_EXPORT),
             ("content-type", "application/grpc"), ("grpc-timeout", "100m")]
        )  # fmt: skip
        started = time.monotonic()
        wire.send(frame(HEADERS, END_HEADERS, 1, block))
        _, _, stream, payload = wire.frames(until=RST_STREAM)[-1]
        self.assertEqual((stream, payload), (1, struct.pack(">L", 8)))  # CANCEL, as grpc-go
        self.assertGreaterEqual(time.monotonic() - started, 0.1)


class HeadersTest(WireCase):
    """What grpc-go refuses from a request's headers, with its status, code and words."""

    def call(
        self, headers: list[tuple[str, str]], body: bytes = b""
    ) -> list[tuple[int, int, int, bytes]]:
        wire = self.wire()
        block = wire.encoder.encode(headers)
        flags = END_HEADERS | (0 if body else END_STREAM)
        wire.send(
            frame(HEADERS, flags, 1, block), *([frame(DATA, END_STREAM, 1, body)] if body else [])
        )
        got = wire.frames(until=HEADERS, stream=1)
        self.wires.append(wire)
        return got

    def answer(self, headers: list[tuple[str, str]]) -> tuple[str, str, str]:
        got = self.call(headers)
        fields = self.wires[-1].headers_of(got[-1][3])
        return fields[":status"], fields["grpc-status"], fields["grpc-message"]

    def setUp(self) -> None:
        super().setUp()
        self.wires: list[Wire] = []

    def test_refusals(self) -> None:
        base = [(":method", "POST"), (":scheme", "http"), (":path", TRACE_EXPORT),
                (":authority", "x"), ("content-type", "application/grpc")]  # fmt: skip

        def but(**changes: str) -> list[tuple[str, str]]:
            names = {k.replace("_", "-").replace("P", ":"): v for k, v in changes.items()}
            return [(k, names.pop(k, v)) for k, v in base] + list(names.items())

        service = "opentelemetry.proto.collector.trace.v1.TraceService"
        cases = {
            "JSON": (
                but(content_type="application/json"),
                ("415", "3", 'invalid gRPC request content-type "application/json"'),
            ),
            "GET": (
                but(Pmethod="GET"),
                ("405", "13", 'Received a HEADERS frame with :method "GET" which should be POST'),
            ),
            "timeout unit": (
                but(grpc_timeout="10x"),
                ("400", "13", 'malformed grpc-timeout: transport: timeout unit is not '
                 'recognized: "10x"'),
            ),
            "timeout length": (
                but(grpc_timeout="123456789S"),
                ("400", "13", 'malformed grpc-timeout: transport: timeout string is too '
                 'long: "123456789S"'),
            ),
            "timeout zero": (but(grpc_timeout="0m"), ("200", "4", "context deadline exceeded")),
            "two hosts": (
                [*base, ("host", "a"), ("host", "b")],
                ("400", "13", "num values of :authority: 1, num values of host: 2, both must "
                 "only have 1 value as per HTTP/2 spec"),
            ),
            "unknown method": (
                but(Ppath=f"/{service}/Nope"),
                ("200", "12", f"unknown method Nope for service {service}"),
            ),
            "no slash": (but(Ppath="nothing"), ("200", "12", 'malformed method name: "nothing"')),
            "br": (
                but(grpc_encoding="br"),
                ("200", "12", 'grpc: Decompressor is not installed for grpc-encoding "br"'),
            ),
        }  # fmt: skip
        for name, (headers, expected) in cases.items():
            with self.subTest(name):
                self.assertEqual(self.answer(headers), expected)

    def test_a_connection_header_resets_the_stream(self) -> None:
        wire = self.wire()
        block = wire.encoder.encode(
            [(":method", "POST"), (":path", TRACE_EXPORT), ("content-type", "application/grpc"),
             ("connection", "keep-alive")]
        )  # fmt: skip
        wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
        _, _, stream, payload = wire.frames(until=RST_STREAM)[-1]
        self.assertEqual((stream, payload), (1, struct.pack(">L", PROTOCOL_ERROR)))

    def test_malformed_fields_reset_the_stream(self) -> None:
        base = [(":method", "POST"), (":path", TRACE_EXPORT), ("content-type", "application/grpc")]
        cases = {
            "an upper-case name": [*base, ("X-Upper", "1")],
            "a line feed in a value": [*base, ("x-a", "1\r\nx-b: 2")],
            "a pseudo-header after a field": [*base, (":authority", "x")],
        }
        for name, headers in cases.items():
            with self.subTest(name):
                wire = self.wire()
                wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, wire.encoder.encode(headers)))
                _, _, stream, payload = wire.frames(until=RST_STREAM)[-1]
                self.assertEqual((stream, payload), (1, struct.pack(">L", PROTOCOL_ERROR)))

    def test_a_header_list_past_the_limit_resets_the_stream(self) -> None:
        wire = self.wire()
        block = request_block(wire.encoder) + wire.encoder.encode([("x-big", "v" * 70_000)])
        parts = [block[i : i + 16_384] for i in range(0, len(block), 16_384)]
        frames = [frame(HEADERS, 0, 1, parts[0])]
        frames += [frame(9, 0, 1, part) for part in parts[1:-1]]
        frames.append(frame(9, END_HEADERS, 1, parts[-1]))
        wire.send(*frames)
        _, _, stream, payload = wire.frames(until=RST_STREAM)[-1]
        self.assertEqual((stream, payload), (1, struct.pack(">L", FRAME_SIZE_ERROR)))
        # The HPACK state stayed in step: the next request on the connection is served.
        wire.send(
            frame(HEADERS, END_HEADERS, 3, request_block(wire.encoder)),
            frame(DATA, END_STREAM, 3, message(request_bytes("next"))),
        )
        self.assertEqual(wire.answer(3)["grpc-status"], "0")

    def test_continuation_and_padding_are_understood(self) -> None:
        wire = self.wire()
        block = request_block(wire.encoder)
        padded = bytes((7,)) + block[:10] + b"\0" * 7
        body = message(request_bytes("padded"))
        wire.send(
            frame(HEADERS, 0x8, 1, padded),  # PADDED, no END_HEADERS
            frame(9, END_HEADERS, 1, block[10:]),
            frame(DATA, 0x8 | END_STREAM, 1, bytes((3,)) + body + b"\0\0\0"),
        )
        self.assertEqual(wire.answer(1)["grpc-status"], "0")
        self.assertIn("padded", [span.name for span in self.collector.spans()])

    def test_a_frame_between_headers_and_continuation_is_an_error(self) -> None:
        wire = self.wire()
        block = request_block(wire.encoder)
        wire.send(frame(HEADERS, 0, 1, block[:5]), frame(PING, 0, 0, b"12345678"))
        self.assertEqual(self.goaway(wire), (0, PROTOCOL_ERROR))

    def test_grpc_message_is_percent_encoded(self) -> None:
        self.collector.fail_next(grpc_code="UNAVAILABLE", transport="grpc", message="déjà 100%\n")
        wire = self.wire()
        wire.send(
            frame(HEADERS, END_HEADERS, 1, request_block(wire.encoder)),
            frame(DATA, END_STREAM, 1, message(request_bytes("x"))),
        )
        fields = wire.headers_of(wire.frames(until=HEADERS, stream=1)[-1][3])
        self.assertEqual(fields["grpc-message"], "d%C3%A9j%C3%A0 100%25%0A")
        self.assertNotIn("=", fields["grpc-status-details-bin"])  # base64 without padding
        _, error = grpc_call(self.collector.grpc_endpoint or "", request_bytes("y"))
        self.assertIsNone(error)
        self.collector.fail_next(grpc_code="UNAVAILABLE", transport="grpc", message="déjà 100%")
        _, error = grpc_call(self.collector.grpc_endpoint or "", request_bytes("z"))
        assert error is not None
        self.assertEqual(error.details(), "déjà 100%")


class BodyTest(WireCase):
    """A unary call's body: one whole message, as grpc-go reads it to its end; what it
    refuses is not stored."""

    collector_settings = {"grpc_max_message": 64 << 10}

    def answer(self, *data: bytes, end: bool = True) -> tuple[str, str, str]:
        wire = self.wire()
        frames = [frame(HEADERS, END_HEADERS | (0 if data or not end else END_STREAM), 1,
                        request_block(wire.encoder))]  # fmt: skip
        frames += [frame(DATA, END_STREAM if end and i == len(data) - 1 else 0, 1, chunk)
                   for i, chunk in enumerate(data)]  # fmt: skip
        wire.send(*frames)
        fields = wire.answer(1)
        return fields[":status"], fields["grpc-status"], fields["grpc-message"]

    def test_a_body_that_is_not_one_whole_message_is_refused(self) -> None:
        one = message(request_bytes("kept"))
        eof = ("200", "13", "unexpected EOF")
        many = ("200", "13", "cardinality violation: received multiple request messages for "
                "non-client-streaming RPC")  # fmt: skip
        cases = {
            "no message": ((), ("200", "13", "cardinality violation: received no request "
                                "message from non-client-streaming RPC")),
            "a short prefix": ((b"\0\0\0",), eof),
            "a short message": ((b"\0\0\0\0\x64" + b"x" * 10,), eof),
            "an unknown flag": ((b"\2" + one[1:],), ("200", "13", "grpc: received unexpected "
                                                    "payload format 2")),
            "two messages": ((one, message(request_bytes("second"))), many),
            "two in one frame": ((one + message(request_bytes("second")),), many),
            "a stray byte after": ((one + b"\0",), eof),
            "half a second": ((one, b"\0\0\0\0\x64x"), eof),
            "a second past the limit": ((one + b"\0\0\x01\0\x01",), (
                "200", "8", "grpc: received message larger than max (65537 vs. 65536)")),
        }  # fmt: skip
        for name, (data, expected) in cases.items():
            with self.subTest(name):
                self.assertEqual(self.answer(*data), expected)
        self.assertEqual([span.name for span in self.collector.spans()], ["before"])

    def test_a_body_that_goes_on_is_refused_past_two_messages(self) -> None:
        # Never ended: a client that keeps sending is refused once the second message is
        # in, and what it sends is not kept meanwhile.
        one = message(request_bytes("kept"))
        second = b"\0" + struct.pack(">L", 64 << 10)
        rest = [b"x" * (16 << 10)] * 8  # the second message, and more
        self.assertEqual(
            self.answer(one, second, *rest, end=False),
            ("200", "13", "cardinality violation: received multiple request messages for "
             "non-client-streaming RPC"),
        )  # fmt: skip
        self.assertEqual([span.name for span in self.collector.spans()], ["before"])

    # The calls in progress on all connections hold 128 x (5 + 64 KiB) = 8,389,248 bytes
    # at most; a call that sends most of a message at the limit and waits holds 60,005.
    PART = b"\0" + struct.pack(">L", 64 << 10) + b"x" * 60000

    def hold(self, wire: Wire, streams: range) -> list[tuple[int, int, int, bytes]]:
        """Start a call on each of ``streams`` that holds :attr:`PART`; the frames answered
        until all of it was read."""
        for stream in streams:
            wire.send(
                frame(HEADERS, END_HEADERS, stream, request_block(wire.encoder)),
                frame(DATA, 0, stream, self.PART),
            )
        wire.send(frame(PING, 0, 0, b"in order"))
        return wire.frames(until=PING)

    def test_calls_in_progress_hold_128_messages_at_most_on_all_connections(self) -> None:
        first, second = self.wire(), self.wire()
        self.assertNotIn(RST_STREAM, [f[0] for f in self.hold(first, range(1, 141, 2))])
        # The 140th call, the 70th of the second connection, would pass the bound: it is
        # refused as not processed (a client may retry it); the others stay.
        frames = self.hold(second, range(1, 141, 2))
        resets = [(f[2], struct.unpack(">L", f[3])[0]) for f in frames if f[0] == RST_STREAM]
        self.assertEqual(resets, [(139, REFUSED_STREAM)])
        # The first connection's client dies: what its calls held is let go once the
        # server has read to that connection's end, which nothing orders against the
        # second's frames. A call refused as not processed until then is sent again, as a
        # client does; one of 57 KB (more than was left before) is taken within 10 s.
        first.close()
        answers: list[dict[str, str]] = []
        streams = iter(range(141, 1 << 31, 2))

        def call() -> bool:
            stream = next(streams)
            second.send(
                frame(HEADERS, END_HEADERS, stream, request_block(second.encoder)),
                frame(DATA, END_STREAM, stream, message(padded_request("room again"))),
            )
            try:
                answers.append(second.answer(stream))
            except Refused as refused:
                self.assertEqual(refused.code, REFUSED_STREAM)
                return False
            return True

        poll_until(call, "a call answered once the first connection closed")
        self.assertEqual(answers[0]["grpc-status"], "0")
        # The second's calls are cancelled: two more connections have the room of all 139.
        second.send(*[frame(RST_STREAM, 0, stream, struct.pack(">L", CANCEL))
                      for stream in range(1, 139, 2)])  # fmt: skip
        second.send(frame(PING, 0, 0, b"12345678"))
        second.frames(until=PING)
        for wire, streams in ((self.wire(), range(1, 141, 2)), (self.wire(), range(1, 139, 2))):
            self.assertNotIn(RST_STREAM, [f[0] for f in self.hold(wire, streams)])
        self.assertEqual([span.name for span in self.collector.spans()], ["before", "room again"])

    def test_answered_calls_give_their_room_back(self) -> None:
        # One after the other on one connection, 150 calls of 57 KB: more than may be held
        # at once, and all served.
        wire = self.wire()
        body = message(padded_request("served"))
        for stream in range(1, 301, 2):
            wire.send(
                frame(HEADERS, END_HEADERS, stream, request_block(wire.encoder)),
                frame(DATA, END_STREAM, stream, body),
            )
            self.assertEqual(wire.answer(stream)["grpc-status"], "0")
        self.assertEqual(len(self.collector.spans("served")), 150)

    def test_one_message_in_many_frames_is_one_call(self) -> None:
        one = message(request_bytes("in pieces"))
        self.assertEqual(self.answer(*[one[i : i + 3] for i in range(0, len(one), 3)])[1], "0")
        self.assertEqual([span.name for span in self.collector.spans()], ["before", "in pieces"])


class BoundsTest(WireCase):
    """Connections are capped and cleaned up; idle or stalled ones pin nothing."""

    collector_settings = {"max_connections": 3}

    def test_at_the_cap_the_quietest_connection_makes_room(self) -> None:
        first = self.wire()
        first.send(frame(PING, 0, 0, b"12345678"))
        first.frames(until=PING)  # all it sent is read: its close will not be a reset
        stalled = [self.wire() for _ in range(2)]
        for wire in stalled:
            wire.send(frame(HEADERS, END_HEADERS, 1, request_block(wire.encoder)))
        # A fourth: the idle first one gets GOAWAY and closes; the call is served.
        _, error = grpc_call(self.collector.grpc_endpoint or "", request_bytes("fourth"))
        self.assertIsNone(error)
        self.assertEqual(self.goaway(first)[1], 0)

    def test_no_descriptor_is_left_behind(self) -> None:
        assert self.collector.pid is not None
        child = psutil.Process(self.collector.pid)
        before = child.num_fds()
        for n in range(30):
            wire = Wire(self.collector.grpc_port or 0)
            if n % 3 == 0:
                wire.send(frame(HEADERS, END_HEADERS, 1, request_block(wire.encoder)))
            elif n % 3 == 1:
                wire.send(b"\0" * 9 + b"garbage")
            wire.close()
        poll_until(lambda: child.num_fds() <= before, "the connections' descriptors to close", 10)


class FewDescriptorsCollector(MockOTLPCollector):
    """The collector with a descriptor limit of 64, so clients can exhaust it."""

    def serve(self, ctx: ServeContext) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        super().serve(ctx)


class DescriptorExhaustionTest(ProcessTestCase):
    def test_a_full_descriptor_table_neither_spins_nor_floods_and_serves_once_freed(
        self,
    ) -> None:
        collector = FewDescriptorsCollector(port=0, grpc_port=0)
        self.addCleanup(collector.stop)
        collector.start()
        assert collector.pid is not None and collector.grpc_port is not None
        # Idle HTTP clients take every descriptor the child has: the gRPC server has no
        # connection of its own to close, so its accept fails until they leave.
        crowd = [
            socket.create_connection(("127.0.0.1", collector.port or 0), timeout=10)
            for _ in range(100)
        ]
        for sock in crowd:
            self.addCleanup(sock.close)
        child = psutil.Process(collector.pid)
        poll_until(lambda: child.num_fds() >= 64, "the crowd to fill the descriptor table")
        # A gRPC client now: the kernel takes its connection, the server cannot.
        waiting = socket.create_connection(("127.0.0.1", collector.grpc_port), timeout=10)
        self.addCleanup(waiting.close)
        self.assertLess(cpu_seconds_over(child, 1.0), 0.5, "the child spins")
        self.assertLessEqual(collector.log_tail(1000).count("cannot accept gRPC"), 1)
        for sock in crowd:
            sock.close()
        _, error = grpc_call(collector.grpc_endpoint or "", request_bytes("freed"))
        self.assertIsNone(error)
        self.assertEqual([span.name for span in collector.spans()], ["freed"])


class StopTest(CollectorTestCase):
    """Stop is prompt with calls held, stalled and idle."""

    def test_stop_with_calls_in_flight(self) -> None:
        collector = MockOTLPCollector(port=0, grpc_port=0)
        collector.start()
        self.addCleanup(collector.stop)
        collector.delay_next(60, transport="grpc")
        held = threading.Thread(
            target=grpc_call, args=(collector.grpc_endpoint or "", request_bytes("held"))
        )
        held.start()
        self.addCleanup(held.join)
        poll_until(lambda: collector.faults() == [], "the delay to be taken", 10)
        stalled = Wire(collector.grpc_port or 0)
        self.addCleanup(stalled.close)
        stalled.send(frame(HEADERS, END_HEADERS, 1, request_block(stalled.encoder)))
        idle = Wire(collector.grpc_port or 0)
        self.addCleanup(idle.close)
        # Once the ping is answered the server has read all the client sent: its close
        # cannot be a reset that discards the GOAWAY.
        idle.send(frame(PING, 0, 0, b"12345678"))
        idle.frames(until=PING)
        started = time.monotonic()
        collector.stop()
        self.assertLess(time.monotonic() - started, 2.0)  # grace 0.5 s, then the exit
        kinds = [kind for kind, *_ in idle.frames(until=-2)]
        self.assertIn(GOAWAY, kinds)
        self.assertEqual(kinds[-1], -1)


class RealClientTest(CollectorTestCase):
    """grpcio clients: large messages through flow control, delays that hold only their call."""

    def test_a_message_just_under_the_limit_and_one_over(self) -> None:
        def request(size: int) -> bytes:
            span = Span(name="big", trace_id=b"\1" * 16, span_id=b"\2" * 8)
            request = ExportTraceServiceRequest(
                resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
            )
            pad = size - request.ByteSize()
            span.attributes.add(key="pad").value.string_value = "x" * (pad - 20)
            request.resource_spans[0].scope_spans[0].spans[0].CopyFrom(span)
            return request.SerializeToString()

        limit = 4 << 20
        endpoint = self.collector.grpc_endpoint or ""
        ok = request(limit - 64)
        self.assertEqual(grpc_call(endpoint, ok), (b"\x0a\x00", None))
        _, error = grpc_call(endpoint, request(limit + 64))
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertRegex(
            error.details() or "", r"^grpc: received message larger than max \(\d+ vs\. 4194304\)$"
        )
        _, error = grpc_call(endpoint, ok + ok, compression=grpc.Compression.Gzip)
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(
            error.details(), "grpc: received message after decompression larger than max 4194304"
        )
        self.assertEqual(len(self.collector.spans()), 1)

    def test_a_delayed_export_holds_no_other_call(self) -> None:
        endpoint = self.collector.grpc_endpoint or ""
        self.collector.delay_next(3.0, transport="grpc")
        held = threading.Thread(target=grpc_call, args=(endpoint, request_bytes("slow")))
        held.start()
        self.addCleanup(held.join)
        # The held export has taken its fault: it is in its delay now.
        poll_until(lambda: self.collector.faults() == [], "the delay to be taken", 10)
        started = time.monotonic()
        self.assertEqual(grpc_call(endpoint, request_bytes("quick"))[1], None)
        self.assertLess(time.monotonic() - started, 2.5)
        held.join()
        self.assertEqual(sorted(span.name for span in self.collector.spans()), ["quick", "slow"])


if __name__ == "__main__":
    unittest.main()
