"""Fuzz the collector's HTTP/2 layer (OTLP/gRPC) with broken connections.

Each case opens a connection and sends a seeded mix of valid calls (some split into
CONTINUATION frames, some padded) and damage: random frames of any type, flags, stream and
length, valid frames with flipped bytes, a broken preface, a connection cut mid-frame. The
server must answer with well-formed frames only, never crash, store exactly the spans of
the calls it answered OK (counted here from its answers), and keep its RSS bounded.
"""

from __future__ import annotations

import random
import socket
import struct
import unittest

import hpack

from mocksup.otlp import MockOTLPCollector
from tests.fuzz.support import Checks, flip, rng_for
from tests.otlp.support import TRACE_EXPORT, grpc_call
from tests.otlp.test_http_input import request_bytes
from tests.support import ProcessTestCase

CASES = 300
BATCH = 50
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    head = struct.pack(">L", len(payload))[1:] + bytes((kind, flags))
    return head + struct.pack(">L", stream) + payload


class _Case:
    """One connection's worth of frames, with the calls it holds."""

    def __init__(self, rng: random.Random, number: int) -> None:
        self.rng = rng
        self.number = number
        self.encoder = hpack.Encoder()
        self.stream = 1
        self.calls = 0

    def call(self) -> bytes:
        rng, stream = self.rng, self.stream
        self.stream += 2
        self.calls += 1
        block = self.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", TRACE_EXPORT),
             (":authority", "x"), ("content-type", "application/grpc"),
             ("x-case", f"{self.number}-{stream}")],
            huffman=rng.random() < 0.5,
        )  # fmt: skip
        body = request_bytes(f"case-{self.number}-{stream}")
        data = b"\0" + struct.pack(">L", len(body)) + body
        if rng.random() < 0.3:  # split into CONTINUATION frames
            cut = rng.randrange(1, len(block))
            head = frame(1, 0, stream, block[:cut]) + frame(9, 4, stream, block[cut:])
        else:
            head = frame(1, 4, stream, block)
        if rng.random() < 0.3:  # padded DATA
            pad = rng.randrange(0, 20)
            return head + frame(0, 0x9, stream, bytes((pad,)) + data + b"\0" * pad)
        return head + frame(0, 1, stream, data)

    def control(self) -> bytes:
        """A well-formed control frame with edge values, on a stream of this connection."""
        rng = self.rng
        stream = rng.choice((1, max(self.stream - 2, 1), self.stream))
        value = rng.choice((0, 1, 2**31 - 1, 2**31, rng.getrandbits(32)))
        return rng.choice(
            (
                frame(3, 0, stream, struct.pack(">L", value)),  # RST_STREAM
                frame(8, 0, rng.choice((0, stream)), struct.pack(">L", value)),  # WINDOW_UPDATE
                frame(2, 0, stream, struct.pack(">LB", value, 255)),  # PRIORITY
                frame(4, 0, 0, struct.pack(">HL", rng.randrange(1, 8), value)),  # SETTINGS
                frame(6, rng.choice((0, 1)), 0, rng.randbytes(8)),  # PING
                frame(7, 0, 0, struct.pack(">LL", stream, value)),  # GOAWAY
            )
        )

    def damage(self) -> bytes:
        rng = self.rng
        choice = rng.random()
        if choice < 0.3:
            return self.control()
        if choice < 0.55:
            payload = rng.randbytes(rng.choice((0, 1, 4, 5, 6, 8, 9, rng.randrange(0, 300))))
            kind = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, rng.randrange(256)))
            stream = rng.choice(
                (0, 1, 2, self.stream, max(self.stream - 2, 0), rng.getrandbits(31))
            )
            return frame(kind, rng.getrandbits(8), stream, payload)
        if choice < 0.85:
            return flip(rng, self.call()) if rng.random() < 0.9 else self.call()[:-3]
        # A frame header announcing more than will come, or more than is allowed.
        return struct.pack(">L", rng.getrandbits(24))[1:] + rng.randbytes(6)

    def build(self) -> bytes:
        rng = self.rng
        preface = PREFACE + frame(4, 0, 0, b"")
        if rng.random() < 0.05:
            preface = flip(rng, preface)
        parts = [preface]
        for _ in range(rng.randrange(1, 6)):
            parts.append(self.call() if rng.random() < 0.5 else self.damage())
        return b"".join(parts)


def exchange(port: int, data: bytes, rng: random.Random) -> bytes:
    """Send ``data`` in a few writes, half-close, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1)))
        try:
            for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
                sock.sendall(data[start:end])
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed first (a connection error): read what it said
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


def answered_ok(case: unittest.TestCase, received: bytes) -> int:
    """The calls the server answered with grpc-status 0; fails on a malformed frame."""
    pos, ok = 0, 0
    while pos < len(received):
        case.assertGreaterEqual(len(received) - pos, 9, f"a cut frame header: {received!r}")
        size = int.from_bytes(received[pos : pos + 3], "big")
        kind, flags = received[pos + 3], received[pos + 4]
        case.assertLessEqual(size, 16_384, "a frame past the client's MAX_FRAME_SIZE")
        case.assertGreaterEqual(len(received) - pos - 9, size, "a cut frame")
        payload = received[pos + 9 : pos + 9 + size]
        case.assertIn(kind, (0, 1, 3, 4, 6, 7, 8), f"frame type {kind}")
        if kind == 7:  # GOAWAY: never for a failure of the server's own
            case.assertNotEqual(payload[4:8], b"\0\0\0\2", f"INTERNAL_ERROR: {payload!r}")
        if kind == 1 and flags & 1:  # the answer's last HEADERS, its status in it
            # Answers use no dynamic table: each block decodes on its own.
            fields = {str(k): str(v) for k, v in hpack.Decoder().decode(payload)}
            ok += fields.get("grpc-status") == "0"
        pos += 9 + size
    return ok


class H2FramesTest(ProcessTestCase):
    """Broken HTTP/2 connections never cost the collector its data or its life."""

    collector: MockOTLPCollector

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.collector = MockOTLPCollector(port=0, grpc_port=0, max_items=None)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()

    def test_frames(self) -> None:
        rng = rng_for("h2-frames")
        collector = self.collector
        assert collector.pid is not None and collector.grpc_port is not None
        checks = Checks(self, collector.pid, frozenset())
        accepted = 0

        def canary() -> None:
            nonlocal accepted
            self.assertIsNone(grpc_call(collector.grpc_endpoint or "", request_bytes("c"))[1])
            accepted += 1
            self.assertEqual(len(collector.spans()), accepted)

        for number in range(CASES):
            case = _Case(rng, number)
            received = exchange(collector.grpc_port, case.build(), rng)
            accepted += answered_ok(self, received)
            if number % BATCH == BATCH - 1:
                checks.alive(canary)
        checks.alive(canary)
        self.assertGreater(accepted, CASES // 4, "too few calls got through to mean anything")


if __name__ == "__main__":
    unittest.main()
