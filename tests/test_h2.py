"""The collector's HTTP/2 server in-process: HPACK (RFC 7541), timers, connection bounds.

HPACK against the RFC's own examples (Appendix C) and, as an oracle, the h2 project's
encoder: whatever it encodes (Huffman or not, indexed or not), the decoder reads back. The
wire behaviour with real clients is in ``tests/otlp/test_grpc_wire.py``.
"""

from __future__ import annotations

import heapq
import random
import socket
import time
import tracemalloc
import unittest

import hpack

from mocksup._h2.connection import Connection
from mocksup._h2.grpc import GRPCHandler, Reply
from mocksup._h2.hpack import HeaderDecoder, HeaderListTooLarge, HPACKError, literal
from mocksup._h2.huffman import HuffmanError, huffman_decode, huffman_encode
from mocksup._h2.server import H2Limits, H2Server
from tests.otlp.test_grpc_wire import frame
from tests.support import run_code


class HuffmanTest(unittest.TestCase):
    def test_rfc_examples(self) -> None:
        # RFC 7541 C.4.1 and C.4.2.
        self.assertEqual(huffman_encode(b"www.example.com").hex(), "f1e3c2e5f23a6ba0ab90f4ff")
        self.assertEqual(huffman_decode(bytes.fromhex("a8eb10649cbf")), b"no-cache")

    def test_every_byte_round_trips_and_matches_another_encoder(self) -> None:
        rng = random.Random(7541)
        oracle = hpack.huffman.HuffmanEncoder(
            hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
        )
        for data in [bytes(range(256)), *(rng.randbytes(rng.randrange(40)) for _ in range(500))]:
            self.assertEqual(huffman_encode(data), oracle.encode(data))
            self.assertEqual(huffman_decode(huffman_encode(data)), data)

    def test_forbidden_strings(self) -> None:
        # EOS; padding of zeros; eight one bits of padding (at most seven are allowed).
        for bad in (b"\xff\xff\xff\xff", b"\x00", b"\xfe", b"\xff"):
            with self.subTest(bad), self.assertRaises(HuffmanError):
                huffman_decode(bad)


class DecoderTest(unittest.TestCase):
    def test_rfc_requests_with_huffman(self) -> None:
        # RFC 7541 C.4.1-C.4.3: three requests on one connection, the table carried over.
        decoder = HeaderDecoder(1 << 16)
        blocks = (
            "828684418cf1e3c2e5f23a6ba0ab90f4ff",
            "828684be5886a8eb10649cbf",
            "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
        )
        got = [decoder.decode(bytes.fromhex(block)) for block in blocks]
        self.assertEqual(got[1][-1], (b"cache-control", b"no-cache"))
        self.assertEqual(got[1][3], (b":authority", b"www.example.com"))
        self.assertEqual(got[2][-1], (b"custom-key", b"custom-value"))
        self.assertEqual(got[2][1:3], [(b":scheme", b"https"), (b":path", b"/index.html")])

    def test_against_an_encoder_with_a_changing_table(self) -> None:
        rng = random.Random(20261201)
        encoder, decoder = hpack.Encoder(), HeaderDecoder(1 << 20)
        for number in range(400):
            if number % 97 == 0:
                encoder.header_table_size = rng.choice((0, 64, 256, 4096))
            headers = [
                (":path", f"/p/{rng.randrange(30)}"),
                (f"x-{rng.randrange(50)}", "v" * rng.randrange(200)),
                ("grpc-timeout", f"{rng.randrange(10**8)}m"),
            ]
            block = encoder.encode(headers, huffman=rng.random() < 0.5)
            self.assertEqual(decoder.decode(block), [(k.encode(), v.encode()) for k, v in headers])

    def test_malformed_blocks(self) -> None:
        cases = {
            "index 0": b"\x80",
            "index past the tables": b"\xff\x00",
            "string past the block": b"\x40\x05ab",
            "integer too large": b"\xff\xff\xff\xff\xff\xff\x7f",
            "table size above the setting": b"\x3f\xe2\x1f",  # 4097
            "size update after a header": b"\x82\x20",
            "bad Huffman": b"\x40\x81\xff\x81\x00",
        }
        for name, block in cases.items():
            with self.subTest(name), self.assertRaises(HPACKError):
                HeaderDecoder(1 << 16).decode(block)

    def test_a_list_too_large_keeps_the_table_in_step(self) -> None:
        encoder, decoder = hpack.Encoder(), HeaderDecoder(1000)
        with self.assertRaises(HeaderListTooLarge):
            decoder.decode(encoder.encode([("x-a", "1" * 600), ("x-b", "2" * 600)]))
        # Both were added to the encoder's table; the decoder followed.
        block = encoder.encode([("x-a", "1" * 600)])
        self.assertLess(len(block), 3)  # an index
        self.assertEqual(decoder.decode(block), [(b"x-a", b"1" * 600)])

    def test_eviction_follows_the_size_update(self) -> None:
        encoder, decoder = hpack.Encoder(), HeaderDecoder(1 << 16)
        decoder.decode(encoder.encode([("x-one", "a" * 100), ("x-two", "b" * 100)]))
        encoder.header_table_size = 150  # room for one entry: the older is evicted
        block = encoder.encode([("x-two", "b" * 100)])
        self.assertEqual(decoder.decode(block), [(b"x-two", b"b" * 100)])
        self.assertEqual(decoder.decode(b"\xbe"), [(b"x-two", b"b" * 100)])  # index 62
        with self.assertRaises(HPACKError):  # the evicted entry
            decoder.decode(b"\xbf")
        # Emptied by a size update of 0, the table has no entry to refer to.
        with self.assertRaises(HPACKError):
            decoder.decode(b"\x20\xbe")

    def test_answers_decode_anywhere(self) -> None:
        block = literal(b"content-type", b"application/grpc") + literal(b"grpc-x", b"y")
        self.assertEqual(
            hpack.Decoder().decode(block), [("content-type", "application/grpc"), ("grpc-x", "y")]
        )


class TimersTest(unittest.TestCase):
    def test_cancelled_timers_do_not_pile_up(self) -> None:
        # Each call with a grpc-timeout has a timer, cancelled when it is answered: at
        # thousands of calls a second, the heap must not keep them for their whole timeout.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = H2Server(sock, handler=None)  # type: ignore[arg-type]
        self.addCleanup(server.shutdown)  # never started: closes the socket and the pipe
        fired: list[int] = []
        for number in range(100_000):
            server.call_at(1e12, lambda: None).cancel()
            if number % 1000 == 0:
                server.call_at(0, lambda number=number: fired.append(number))  # type: ignore[misc]
        self.assertLess(len(server._timers), 5000)
        while server._timers and server._timers[0][0] <= 1:
            heapq.heappop(server._timers)[2].fire()
        self.assertEqual(len(fired), 100)


def frame_types(data: bytes) -> list[int]:
    """The types of the frames in ``data``, which must hold whole frames only."""
    types, pos = [], 0
    while pos < len(data):
        types.append(data[pos + 3])
        pos += 9 + int.from_bytes(data[pos : pos + 3], "big")
    assert pos == len(data), data
    return types


class BoundsTest(unittest.TestCase):
    def serve(self, limits: H2Limits) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = H2Server(sock, GRPCHandler({}, 1024, {}), limits)
        server.start()
        self.addCleanup(server.shutdown)
        return server.port

    def test_silent_and_idle_connections_are_closed(self) -> None:
        port = self.serve(H2Limits(handshake_timeout=0.1, idle_timeout=0.1))
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(silent.close)
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(idle.close)
        idle.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0")
        started = time.monotonic()
        kinds = {}
        for name, sock in (("silent", silent), ("idle", idle)):
            received = b""
            while chunk := sock.recv(65536):  # until the server closes (or 10 s: an error)
                received += chunk
            kinds[name] = frame_types(received)
        # The silent one is closed without a word; the idle one is told why (GOAWAY).
        self.assertEqual(kinds, {"silent": [4, 8], "idle": [4, 8, 4, 7]})
        self.assertLess(time.monotonic() - started, 5.0)  # swept within a second or two

    def test_a_client_that_does_not_read_is_not_read(self) -> None:
        port = self.serve(H2Limits())
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ping = b"\0\0\x08\x06\0\0\0\0\0" + b"12345678"
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0")
        sock.settimeout(3)
        sent = 0
        with self.assertRaises(TimeoutError):  # the server stopped reading: sends block
            for _ in range(100_000):
                sock.sendall(ping * 64)
                sent += len(ping) * 64
        self.assertLess(sent, 64 << 20)


class HeldTest(unittest.TestCase):
    def test_a_few_bytes_held_do_not_keep_what_arrived_with_them(self) -> None:
        # 90 calls each hold one byte of a message, and each byte arrives together with
        # 1 MiB of DATA for a call answered at once (unknown method), whose data is
        # dropped: what stays must be about the bytes held, not the 90 MiB that came.
        handler = GRPCHandler({"/t.S/M": lambda call: Reply()}, 4 << 20, {})
        conn = Connection(handler, H2Limits())
        encoder = hpack.Encoder()

        def head(stream: int, path: str) -> bytes:
            fields = [(":method", "POST"), (":scheme", "http"), (":path", path),
                      (":authority", "x"), ("content-type", "application/grpc")]  # fmt: skip
            return frame(1, 0x4, stream, encoder.encode(fields))

        conn.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for n in range(90):
            held, dropped = 4 * n + 1, 4 * n + 3
            conn.feed(
                head(held, "/t.S/M") + head(dropped, "/no.Such/Method")
                + frame(0, 0, held, b"\0") + frame(0, 0, dropped, bytes((1 << 20) - 64))
            )  # fmt: skip
            conn.out.clear()
        grown = tracemalloc.get_traced_memory()[0] - before
        self.assertEqual(len(conn.streams), 90)
        self.assertLess(grown, 8 << 20)


class ImportsTest(unittest.TestCase):
    def test_the_collector_child_does_not_import_grpc(self) -> None:
        # What the child runs to serve OTLP/gRPC, in a fresh interpreter.
        code = (
            "import sys\n"
            "from mocksup.otlp import MockOTLPCollector\n"
            "collector = MockOTLPCollector(port=0, grpc_port=0)\n"
            "parts = collector._parts()\n"
            "server = collector._grpc_server(parts.ingest, parts.ports)\n"
            "server.start()\n"
            "server.shutdown()\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] == 'grpc'))\n"
        )
        result = run_code(code)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "[]"), result.stderr)


if __name__ == "__main__":
    unittest.main()
