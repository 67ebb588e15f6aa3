"""The HTTP server of ``mocksup.serving`` in real children, over raw sockets: a connection
whose request body broke is closed right after the answer, a request head that arrives
too slowly is cut off at ``head_timeout`` from its first byte, and a client that stops
reading an answer is let go at ``io_timeout``; a stopping server sends the answers in
flight before it exits, for up to ``drain`` seconds."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import logging
import select
import socket
import threading
import time
import unittest
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from mocksup import MockServerBase, ServeContext
from mocksup.otlp import MockOTLPCollector
from mocksup.serving import BodyError, HTTPLimits, bind_tcp, read_body, serve_wsgi
from mocksup.vllm import MockVLLMServer
from tests.support import ProcessTestCase

#: The quick mocks' io_timeout: how long a stalled body is waited for.
IO_TIMEOUT = 0.5
#: How soon the server must close a connection after answering a request with a broken body.
CLOSE_WITHIN = 1.0


class QuickCollector(MockOTLPCollector):
    """The collector, with a short ``io_timeout`` so a stalled body is answered quickly."""

    def http_limits(self) -> HTTPLimits:
        return dataclasses.replace(super().http_limits(), io_timeout=IO_TIMEOUT)


class QuickVLLM(MockVLLMServer):
    """The vLLM mock, with a short ``io_timeout``."""

    def http_limits(self) -> HTTPLimits:
        return dataclasses.replace(super().http_limits(), io_timeout=IO_TIMEOUT)


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    try:
        body = read_body(environ, 1000)
    except BodyError as error:
        start_response(f"{error.status} Nope", [("Content-Type", "text/plain")])
        return [error.message.encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode() + b" " + body]


class TightHead(MockServerBase):
    """Serves :func:`echo` with a short ``head_timeout`` and ``idle_timeout``."""

    def serve(self, ctx: ServeContext) -> None:
        limits = HTTPLimits(head_timeout=0.5, idle_timeout=2.0)
        with serve_wsgi(echo, bind_tcp(self.host, self.port), limits=limits) as server:
            ctx.ready(port=server.port)
            ctx.wait()


def firehose(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/firehose`` streams 64 KiB chunks for as long as the client takes them."""
    if environ["PATH_INFO"] != "/firehose":
        return echo(environ, start_response)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return iter(lambda: b"x" * 65536, None)


class Firehose(MockServerBase):
    """Serves :func:`firehose` with a short ``io_timeout``."""

    def serve(self, ctx: ServeContext) -> None:
        limits = HTTPLimits(io_timeout=IO_TIMEOUT)
        with serve_wsgi(firehose, bind_tcp(self.host, self.port), limits=limits) as server:
            ctx.ready(port=server.port)
            ctx.wait()


def read_response(sock: socket.socket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response


def seconds_to_close(sock: socket.socket, limit: float = 10.0) -> float:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends);
    ``inf`` if it is still open after ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return float("inf")
    return time.monotonic() - started


class BrokenBody:
    """A request whose body breaks gets its 400 with ``Connection: close``, then the
    connection closes at once: nothing more is read from it (a mixin: the subclasses name
    the mock and its route)."""

    stock: ClassVar[MockServerBase]
    quick: ClassVar[MockServerBase]
    path: ClassVar[str]

    def connect(self, server: MockServerBase) -> socket.socket:
        case: unittest.TestCase = self  # type: ignore[assignment]
        assert server.port is not None
        sock = socket.create_connection((server.host, server.port), timeout=10)
        case.addCleanup(sock.close)
        return sock

    def head(self, framing: str) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n"
        ).encode()

    def assert_answered_and_closed(self, sock: socket.socket) -> http.client.HTTPResponse:
        case: unittest.TestCase = self  # type: ignore[assignment]
        response = read_response(sock)
        response.read()
        case.assertEqual(response.status, 400)
        case.assertEqual(response.getheader("Connection"), "close")
        case.assertLess(seconds_to_close(sock), CLOSE_WITHIN, "the connection stayed open")
        return response

    def test_a_bad_chunk_size_line_closes_the_connection_after_the_400(self) -> None:
        # With the default limits: a server that tried to drain this body would wait for
        # the next chunk-size line until io_timeout (60 s). A pipelined request after it
        # must not be read as a chunk size either: the client learns to resend it.
        chunked = self.head("Transfer-Encoding: chunked")
        pipelined = b"GET /mocksup/health HTTP/1.1\r\nHost: x\r\n\r\n"
        for after in (b"", pipelined):
            with self.subTest(pipelined=bool(after)):  # type: ignore[attr-defined]
                sock = self.connect(self.stock)
                sock.sendall(chunked + b"zz\r\nabc\r\n" + after)
                self.assert_answered_and_closed(sock)

    def test_a_body_shorter_than_its_framing_then_silence_gets_400_and_a_close(self) -> None:
        case: unittest.TestCase = self  # type: ignore[assignment]
        cases = {
            "chunk shorter than its size": self.head("Transfer-Encoding: chunked") + b"ff\r\nabc",
            "Content-Length not met": self.head("Content-Length: 100") + b'{"a"',
        }
        for name, raw in cases.items():
            with case.subTest(name):
                sock = self.connect(self.quick)
                sock.sendall(raw)  # and the client pauses, its side still open
                started = time.monotonic()
                self.assert_answered_and_closed(sock)
                case.assertGreaterEqual(time.monotonic() - started, IO_TIMEOUT)

    def test_a_400_to_a_well_framed_body_keeps_the_connection(self) -> None:
        case: unittest.TestCase = self  # type: ignore[assignment]
        sock = self.connect(self.stock)
        for _ in range(2):
            sock.sendall(self.head("Content-Length: 9") + b"{not json")
            response = read_response(sock)
            response.read()
            case.assertEqual(response.status, 400)
            case.assertIsNone(response.getheader("Connection"))
        sock.sendall(b"GET /mocksup/health HTTP/1.1\r\nHost: x\r\n\r\n")
        case.assertEqual(read_response(sock).status, 200)


class CollectorBrokenBodyTest(BrokenBody, ProcessTestCase):
    path = "/v1/traces"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.stock = MockOTLPCollector(port=0, grpc_port=None)
        cls.quick = QuickCollector(port=0, grpc_port=None)
        for server in (cls.stock, cls.quick):
            cls.addClassCleanup(server.stop)
            server.start()


class VLLMBrokenBodyTest(BrokenBody, ProcessTestCase):
    path = "/v1/completions"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.stock = MockVLLMServer(port=0)
        cls.quick = QuickVLLM(port=0)
        for server in (cls.stock, cls.quick):
            cls.addClassCleanup(server.stop)
            server.start()


class HeadTimeoutTest(ProcessTestCase):
    """``head_timeout`` (0.5 s here) bounds a request's head from its first byte."""

    server: ClassVar[TightHead]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = TightHead()
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()

    def connect(self) -> socket.socket:
        assert self.server.port is not None
        sock = socket.create_connection((self.server.host, self.server.port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def drip(self, sock: socket.socket, data: bytes) -> float:
        """Send ``data`` a byte every 0.05 s until the server stops reading (at most 15 s
        of it); return how long the server listened."""
        started = time.monotonic()
        try:
            for byte in data:
                sock.sendall(bytes([byte]))
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable:
                    break  # the server answered (or closed)
        except (ConnectionResetError, BrokenPipeError):
            pass
        return time.monotonic() - started

    def assert_cut_off(self, sock: socket.socket, took: float) -> None:
        self.assertGreaterEqual(took, 0.5)
        # Dripped to the end, the request would have taken 15 s or more.
        self.assertLess(took, 5.0, "the server kept reading a slow head")
        answer = b""
        sock.settimeout(10)
        while data := sock.recv(65536):
            answer += data
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer)
        self.assertIn(b"Connection: close", answer)

    def test_a_request_line_dripped_a_byte_at_a_time_gets_408(self) -> None:
        sock = self.connect()
        # Each byte within idle_timeout (2 s) of the last: only head_timeout can stop it.
        line = b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n"
        self.assert_cut_off(sock, self.drip(sock, line))

    def test_a_header_line_dripped_a_byte_at_a_time_gets_408(self) -> None:
        sock = self.connect()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        self.assert_cut_off(sock, self.drip(sock, b"X-Slow: " + b"b" * 300 + b"\r\n\r\n"))

    def test_the_deadline_starts_at_the_first_byte_not_at_the_connection(self) -> None:
        sock = self.connect()
        for path in (b"/one", b"/two"):
            # Silent for longer than head_timeout (within idle_timeout): not a slow head.
            time.sleep(0.8)  # measuring an interval: nothing to wait for
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
            response = read_response(sock)
            self.assertEqual((response.status, response.read()), (200, path + b" ok"))
        # Silent past idle_timeout: closed without an answer (no 408 to a request never begun).
        started = time.monotonic()
        sock.settimeout(10)
        self.assertEqual(sock.recv(100), b"")
        self.assertGreaterEqual(time.monotonic() - started, 1.5)


class StalledReaderTest(ProcessTestCase):
    """``io_timeout`` (0.5 s here) bounds a write that makes no progress."""

    def test_a_client_that_stops_reading_a_stream_is_let_go(self) -> None:
        server = Firehose()
        self.addCleanup(server.stop)
        server.start()
        assert server.port is not None
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        sock.sendall(b"GET /firehose HTTP/1.1\r\nHost: x\r\n\r\n")
        # The stimulus: a client that reads nothing for a while. The kernel still takes a
        # trickle for about a second after the buffers fill; then the server's writes stall
        # and io_timeout later it gives up.
        time.sleep(3.0)
        received = 0
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while (data := sock.recv(1 << 20)) and received < 256 << 20:
                received += len(data)
        # What was in flight (the socket buffers, a few MiB), then the end: a server that
        # had waited would stream on for as long as it is read.
        self.assertLess(received, 64 << 20)
        with socket.create_connection((server.host, server.port), timeout=10) as other:
            other.sendall(b"POST /still HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
            response = read_response(other)
            self.assertEqual((response.status, response.read()), (200, b"/still ok"))


class AnswersOnStop(MockServerBase):
    """Streams ``held`` at once, then ``answered`` ``delay`` seconds after its stop began
    (never when ``delay`` is None); leaving the block drains for ``drain`` seconds."""

    drain: float = 2.0
    delay: float | None = 0.2

    def serve(self, ctx: ServeContext) -> None:
        stopping = threading.Event()

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"held\n"
            stopping.wait()
            if self.delay is None:
                threading.Event().wait()  # an answer that never comes
            else:
                time.sleep(self.delay)  # the work still owed when the stop began
            yield b"answered\n"

        with serve_wsgi(app, bind_tcp(self.host, self.port), drain=self.drain) as server:
            ctx.ready(port=server.port)
            ctx.wait()
            stopping.set()


class DrainTest(ProcessTestCase):
    def held_request(self, server: MockServerBase) -> http.client.HTTPResponse:
        assert server.port is not None
        sock = socket.create_connection((server.host, server.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_response(sock)
        self.assertEqual(response.read1(), b"held\n")  # the app has the request
        return response

    def test_an_answer_in_flight_is_sent_before_the_exit(self) -> None:
        server = self.start_server(AnswersOnStop())
        response = self.held_request(server)
        server.stop()
        # The whole stream, its last chunk included: the exit did not cut it.
        self.assertEqual(response.read(), b"answered\n")

    def test_the_drain_is_bounded(self) -> None:
        server = self.start_server(AnswersOnStop(drain=0.3, delay=None, stop_timeout=5))
        response = self.held_request(server)
        started = time.monotonic()
        with self.assertNoLogs("mocksup", logging.WARNING):  # no SIGKILL was needed
            server.stop()
        self.assertLess(time.monotonic() - started, 3.0)
        with self.assertRaises(http.client.IncompleteRead):
            response.read()


if __name__ == "__main__":
    unittest.main()
