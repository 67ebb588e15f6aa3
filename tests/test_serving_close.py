"""The HTTP server of ``mocksup.serving`` in real children, over raw sockets: a connection
whose request body broke is closed right after the answer."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import time
import unittest
from typing import ClassVar

from mocksup import MockServerBase
from mocksup.otlp import MockOTLPCollector
from mocksup.serving import HTTPLimits
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


if __name__ == "__main__":
    unittest.main()
