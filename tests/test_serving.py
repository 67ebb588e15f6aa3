"""The HTTP/1.1 server of ``mocksup.serving``, in-process, over raw sockets: framing, limits,
keep-alive, 100-continue, HEAD, connection caps; plus bind errors and gRPC options."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import unittest
import unittest.mock
from collections.abc import Callable
from typing import Any

import psutil

from mocksup import MockServerBase, PortInUseError, ServeContext
from mocksup.serving import (
    BodyError,
    DropConnection,
    HTTPLimits,
    HTTPServer,
    bind_tcp,
    grpc_server,
    read_body,
    serve_wsgi,
)
from tests.support import ProcessTestCase, cpu_seconds_over, poll_until

StartResponse = Callable[..., Any]


class App:
    """A WSGI app with one route per behaviour under test."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.gone: list[bool] = []
        self.short_wait = 0.0
        self.watching = threading.Event()
        self.gone_event = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        path = environ["PATH_INFO"]
        if path == "/echo":
            try:
                body = read_body(environ, 1000)
            except BodyError as error:
                start_response(f"{error.status} Nope", [("Content-Type", "text/plain")])
                return [error.message.encode()]
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [body]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"a", b"", b"bc", b"d"])
        if path == "/block":
            self.release.wait(10)
            start_response("200 OK", [])
            return [b"released"]
        if path == "/disconnect":
            wait_disconnect = environ["mocksup.wait_disconnect"]
            # First a short wait with the client there, then a long one it ends by leaving.
            started = time.monotonic()
            self.gone.append(wait_disconnect(0.2))
            self.short_wait = time.monotonic() - started
            self.watching.set()
            self.gone.append(wait_disconnect(10))
            self.gone_event.set()
            start_response("200 OK", [])
            return [b"late"]
        if path == "/drop":
            raise DropConnection("test", reset=environ["QUERY_STRING"] == "reset")
        if path == "/fail":
            raise RuntimeError("a bug in the app")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['REQUEST_METHOD']} {path} {environ['QUERY_STRING']}".encode()]


class ServerTestCase(unittest.TestCase):
    limits = HTTPLimits()

    def setUp(self) -> None:
        self.app = App()
        context = serve_wsgi(self.app, bind_tcp("127.0.0.1", 0), limits=self.limits)
        self.server: HTTPServer = context.__enter__()
        self.addCleanup(context.__exit__, None, None, None)
        self.addCleanup(self.app.release.set)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def exchange(self, raw: bytes) -> bytes:
        """Send ``raw`` on a new connection, half-close, return all the server sent."""
        sock = self.connect()
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        return read_all(sock)

    def assert_serving(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            conn.request("GET", "/still?alive")
            self.assertEqual(conn.getresponse().read(), b"GET /still alive")
        finally:
            conn.close()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response


class KeepAliveTest(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        self.addCleanup(self.conn.close)

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[bytes, Any]:
        self.conn.request(method, path, body=body, **kw)
        response = self.conn.getresponse()
        return response.read(), response

    def test_requests_share_one_connection_whatever_their_framing(self) -> None:
        self.assertEqual(self.request("POST", "/echo", b"one")[0], b"one")
        first = self.conn.sock
        chunked = iter([b"tw", b"", b"o"])
        self.assertEqual(self.request("POST", "/echo", chunked, encode_chunked=True)[0], b"two")
        # An unread body is drained, and the next request still parses.
        data, response = self.request("POST", "/other", b"x" * 100_000)
        self.assertEqual(data, b"POST /other ")
        self.assertIsNone(response.getheader("Connection"))
        data, response = self.request("GET", "/stream")
        self.assertEqual((data, response.getheader("Transfer-Encoding")), (b"abcd", "chunked"))
        self.assertEqual(self.request("POST", "/echo", b"three")[0], b"three")
        self.assertIs(self.conn.sock, first)

    def test_head_has_no_body_and_keeps_the_connection_usable(self) -> None:
        # Raw bytes, not http.client: a client that knows it sent HEAD skips a body the
        # server wrongly sent, and would only stumble on it later, if at all.
        heads = {
            # An answer sent whole: its length is announced, its body is not sent.
            "/x": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\n",
            # A streamed answer: no length known, no chunked framing for a body never sent.
            "/stream": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
        }
        following = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
        for path, head in heads.items():
            with self.subTest(path=path):
                # HEAD and GET pipelined in one write: the GET's answer must start right
                # where the HEAD's head ends.
                raw = b"HEAD %s HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
                answer = self.exchange(raw % path.encode())
                self.assertEqual(answer, head + following + b"GET /next ")

    def test_body_over_the_limit_is_413_without_reading_it(self) -> None:
        data, response = self.request("POST", "/echo", b"x" * 5000)
        self.assertEqual(response.status, 413)
        self.assertIn(b"5000 bytes exceeds the limit of 1000", data)
        chunked = iter([b"x" * 600, b"y" * 600])
        _, response = self.request("POST", "/echo", chunked, encode_chunked=True)
        self.assertEqual(response.status, 413)


class RawFramingTest(ServerTestCase):
    def test_pipelined_requests_are_answered_in_order(self) -> None:
        raw = (
            b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
            + b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        )
        answer = self.exchange(raw)
        self.assertEqual(answer.count(b"HTTP/1.1 200 OK"), 4)
        self.assertLess(answer.index(b"GET /p0"), answer.index(b"GET /p1"))
        self.assertLess(answer.index(b"GET /p2"), answer.index(b"\r\n\r\nabc"))

    def test_chunked_body_with_extensions_and_trailers(self) -> None:
        raw = (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n"
            b"GET /after HTTP/1.1\r\n\r\n"
        )
        answer = self.exchange(raw)
        self.assertIn(b"\r\n\r\nabcde", answer)
        self.assertIn(b"GET /after", answer)

    def test_malformed_requests_get_go_style_errors_and_the_server_keeps_serving(self) -> None:
        cases = {
            b"GARBAGE\r\n\r\n": b"400 Bad Request: malformed request line",
            b"GET / HTTP/2.0\r\n\r\n": b"505 HTTP Version Not Supported",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n": b"400 Bad Request: malformed header",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n": b"400 Bad Request: obsolete line",
            b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n": b"400 Bad Request: bad Content",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nab": b"400 Bad Request: bad Content",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n": (
                b"400 Bad Request: both Transfer-Encoding"
            ),
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n": b"501 Not Implemented",
            b"GET / HTTP/1.1\r\nExpect: teapot\r\n\r\n": b"417 Expectation Failed",
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n": b"414 ",
            b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 201 + b"\r\n": b"431 Request Header Fields",
            b"GET / HTTP/1.1\r\nX: " + b"y" * 70000 + b"\r\n\r\n": b"431 Request Header Fields",
        }
        for raw, expected in cases.items():
            with self.subTest(raw=raw[:40]):
                answer = self.exchange(raw)
                head, _, body = answer.partition(b"\r\n\r\n")
                self.assertIn(b"Connection: close", head)
                self.assertIn(b"Content-Type: text/plain; charset=utf-8", head)
                self.assertTrue(body.startswith(expected), body)
        self.assert_serving()

    def test_bad_chunked_framing_is_400_from_the_apps_reader(self) -> None:
        for chunks in (b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcX\r\n0\r\n\r\n", b"-1\r\n"):
            with self.subTest(chunks=chunks):
                raw = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
                answer = self.exchange(raw)
                self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)
        self.assert_serving()

    def test_a_client_dying_mid_upload_leaves_the_server_serving(self) -> None:
        # A chunk promises more than arrives, then the client closes: the crash of
        # werkzeug's reader. Likewise a Content-Length that is never met.
        for raw in (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfff\r\nabc",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc",
            b"POST /echo HTTP/1.1\r\nContent-Length: 900\r\n\r\nabc",
            b"POST /echo HTTP/1.1\r\nContent-Le",
        ):
            with self.subTest(raw=raw):
                answer = self.exchange(raw)
                self.assertNotIn(b"200 OK", answer)
        self.assert_serving()

    def test_http_1_0_gets_no_chunked_framing_and_a_close(self) -> None:
        answer = self.exchange(b"GET /stream HTTP/1.0\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertNotIn(b"chunked", head)
        self.assertIn(b"Connection: close", head)
        self.assertEqual(body, b"abcd")

    def test_app_errors_and_drops(self) -> None:
        answer = self.exchange(b"GET /fail HTTP/1.1\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 500 Internal Server Error"), answer)
        self.assertEqual(self.exchange(b"GET /drop HTTP/1.1\r\n\r\n"), b"")
        sock = self.connect()
        sock.sendall(b"GET /drop?reset HTTP/1.1\r\n\r\n")
        with self.assertRaises(ConnectionResetError):
            while sock.recv(100):
                pass
        self.assert_serving()

    def test_absolute_form_and_percent_decoding(self) -> None:
        answer = self.exchange(b"GET http://example.com/a%20b?q=1 HTTP/1.1\r\n\r\n")
        self.assertTrue(answer.endswith(b"GET /a b q=1"), answer)


class ContinueTest(ServerTestCase):
    def test_100_continue_is_sent_when_the_app_reads(self) -> None:
        sock = self.connect()
        sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(sock.recv(100), b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"body")
        response = read_response(sock)
        self.assertEqual((response.status, response.read()), (200, b"body"))

    def test_no_100_when_the_app_answers_without_reading(self) -> None:
        sock = self.connect()
        sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        response = read_response(sock)
        self.assertEqual(response.status, 413)
        self.assertEqual(response.getheader("Connection"), "close")
        response.read()
        self.assertEqual(sock.recv(100), b"")  # closed: the body may still be on its way

    def test_curl_style_large_upload(self) -> None:
        # http.client sends the body without waiting; a server that answers 100 first
        # must still read it all.
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("POST", "/echo", b"z" * 999, headers={"Expect": "100-continue"})
        response = conn.getresponse()
        # http.client skips the interim 100 response and returns the final one.
        self.assertEqual((response.status, response.read()), (200, b"z" * 999))


class DisconnectTest(ServerTestCase):
    def test_the_app_learns_at_once_that_its_client_left(self) -> None:
        sock = self.connect()
        sock.sendall(b"GET /disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        # While the client stays, a wait runs to its end and says so.
        self.assertTrue(self.app.watching.wait(5))
        self.assertEqual(self.app.gone, [False])
        self.assertGreaterEqual(self.app.short_wait, 0.19)  # 0.2 s, less the timer's rounding
        # The app is now in (or about to start) a 10 s wait: leaving ends it at once.
        started = time.monotonic()
        sock.close()
        self.assertTrue(self.app.gone_event.wait(5))
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(self.app.gone, [False, True])


class LimitsTest(ServerTestCase):
    limits = HTTPLimits(max_connections=3, idle_timeout=30, head_timeout=0.5)

    def test_idle_connections_are_reclaimed_at_the_cap(self) -> None:
        idle = []
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
            self.addCleanup(conn.close)
            conn.request("GET", "/x")
            conn.getresponse().read()
            idle.append(conn)
        self.assertEqual(self.server.connections, 3)
        # A fourth client is served: the longest idle connection made room.
        self.assert_serving()
        self.assertLessEqual(self.server.connections, 3)

    def test_busy_connections_hold_the_cap_until_one_ends(self) -> None:
        socks = [self.connect() for _ in range(3)]
        for sock in socks:
            sock.sendall(b"GET /block HTTP/1.1\r\n\r\n")
        deadline = time.monotonic() + 5
        while self.server.connections < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        late = self.connect()
        late.sendall(b"GET /late HTTP/1.1\r\n\r\n")
        late.settimeout(0.3)
        with self.assertRaises(socket.timeout):
            late.recv(100)  # held in the backlog, not refused
        self.app.release.set()
        late.settimeout(10)
        self.assertTrue(read_response(late).read().startswith(b"GET /late"))

    def test_a_slow_head_is_cut_off(self) -> None:
        sock = self.connect()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while time.monotonic() - started < 15:  # a header line every 0.1 s, for ever
                sock.sendall(b"X: y\r\n")
                time.sleep(0.1)
        took = time.monotonic() - started
        self.assertGreaterEqual(took, 0.5)
        # head_timeout (0.5 s), then at most 2 s of lingering close: far from "for ever".
        self.assertLess(took, 10.0, "the server kept reading a slow head")
        self.assertTrue(read_all(sock).startswith(b"HTTP/1.1 408 Request Timeout"))


class HeldTest(ServerTestCase):
    """What the requests in progress hold of their bodies is bounded, all together."""

    limits = HTTPLimits(max_held=1500)

    def post(self, body: bytes) -> tuple[int, bytes, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            conn.request("POST", "/echo", body=body)
            response = conn.getresponse()
            return response.status, response.read(), response.getheader("Connection")
        finally:
            conn.close()

    def test_a_body_past_what_may_be_held_waits_for_room(self) -> None:
        # A request whose 1,000 bytes are half sent holds them all from its head on.
        first = self.connect()
        first.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"a" * 500)
        # Not before: a 600-byte body held first would leave no room for these 1,000.
        poll_until(lambda: self.server._held == 1000, "the first request's 1,000 bytes held")
        answers: list[tuple[int, bytes, str | None]] = []

        def refused() -> bool:
            answers.append(self.post(b"b" * 600))
            return answers[-1][0] == 503

        poll_until(refused, "a 600-byte body refused while 1,000 bytes are held")
        self.assertEqual(answers[-1][1:], (b"the server holds as many request bodies as it "
                                           b"may: try again later", "close"))  # fmt: skip
        self.assertEqual(self.post(b"c" * 400)[:2], (200, b"c" * 400))  # within the bound
        # A chunked body is counted as it is read: 600 bytes in two chunks are too many.
        late = self.connect()
        chunks = b"190\r\n" + b"d" * 400 + b"\r\nc8\r\n" + b"e" * 200 + b"\r\n0\r\n\r\n"
        late.sendall(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        self.assertEqual(read_response(late).status, 503)
        # The first request ends: its room is given back, once its answer is sent (a client
        # may read that answer a moment before, so the room is waited for).
        first.sendall(b"a" * 500)
        self.assertEqual(read_response(first).read(), b"a" * 1000)
        answers.clear()

        def served() -> bool:
            answers.append(self.post(b"f" * 1000))
            return answers[-1][0] == 200

        poll_until(served, "a 1,000-byte body served once the first request ended")
        self.assertEqual(answers[-1][1], b"f" * 1000)
        self.assert_serving()


class NoThreadTest(ServerTestCase):
    """A connection for which no thread can be started is refused; no other is lost."""

    def test_the_connection_refused_is_the_one_without_a_thread(self) -> None:
        server = self.server
        jobs = server._jobs

        class SlowJobs:
            # A worker back from a connection takes a while to ask for the next one: a
            # connection handed to it waits in the queue meanwhile.
            def put(self, conn: Any) -> None:
                jobs.put(conn)

            def get(self) -> Any:
                time.sleep(0.5)
                return jobs.get()

            def get_nowait(self) -> Any:
                return jobs.get_nowait()

        failing = threading.Event()

        class Thread(threading.Thread):
            def start(self) -> None:
                if failing.is_set() and self.name == "mocksup-conn":
                    raise RuntimeError("can't start new thread")
                super().start()

        server._jobs = SlowJobs()  # type: ignore[assignment]
        with unittest.mock.patch.object(threading, "Thread", Thread):
            self.assert_serving()  # a worker, idle once the connection closes
            poll_until(lambda: server._idle_workers == 1, "an idle worker")
            queued = self.connect()  # handed to that worker, through the queue
            queued.sendall(b"GET /queued HTTP/1.1\r\nHost: x\r\n\r\n")
            poll_until(lambda: server._idle_workers == 0, "the queued connection taken")
            failing.set()
            # A new worker is needed: it cannot start, so this connection is reset (at
            # times before connect() has even returned).
            with contextlib.suppress(ConnectionResetError):
                self.assertEqual(read_all(self.connect()), b"")
            failing.clear()
            self.assertEqual(read_response(queued).read(), b"GET /queued ")
            self.assert_serving()


class LimitValuesTest(unittest.TestCase):
    def test_limits_that_no_socket_could_keep_are_refused_when_made(self) -> None:
        bad: list[tuple[str, Any]] = [
            ("io_timeout", float("nan")), ("idle_timeout", float("inf")), ("head_timeout", 0),
            ("io_timeout", -1.0), ("max_connections", 0), ("max_headers", True),
            ("max_request_line", 1.5),
        ]  # fmt: skip
        for name, value in bad:
            with (
                self.subTest(name=name, value=value),
                self.assertRaisesRegex(ValueError, f"^HTTPLimits.{name} must be "),
            ):
                HTTPLimits(**{name: value})
        self.assertEqual(HTTPLimits(io_timeout=0.25, max_headers=1).io_timeout, 0.25)

    def test_a_drain_that_no_stop_could_keep_is_refused_before_serving(self) -> None:
        # NaN would spin the stop's wait, inf overflow it, at the stop: refused up front.
        for drain in (float("nan"), float("inf"), -0.5, True, "1"):
            sock = bind_tcp("127.0.0.1", 0)
            with (
                self.subTest(drain=drain),
                self.assertRaisesRegex(ValueError, "^drain must be a finite number"),
                serve_wsgi(lambda environ, start_response: [], sock, drain=drain),  # type: ignore[arg-type]
            ):
                pass
            self.assertEqual(sock.fileno(), -1)  # handed over: closed


class BindTest(unittest.TestCase):
    def test_busy_port(self) -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            with self.assertRaises(PortInUseError) as caught:
                bind_tcp("127.0.0.1", port)
            self.assertEqual(caught.exception.port, port)
            with self.assertRaises(PortInUseError):
                grpc_server("127.0.0.1", port)

    def test_grpc_does_not_share_a_port(self) -> None:
        first, port = grpc_server("127.0.0.1", 0)
        self.addCleanup(first.stop, None)
        first.start()
        with self.assertRaises(PortInUseError):
            grpc_server("127.0.0.1", port)

    def test_ipv6_loopback(self) -> None:
        try:
            sock = bind_tcp("::1", 0)
        except OSError:
            self.skipTest("no IPv6 loopback on this machine")
        with serve_wsgi(App(), sock) as server:
            conn = http.client.HTTPConnection("::1", server.port, timeout=5)
            conn.request("POST", "/echo", body=b"v6")
            self.assertEqual(conn.getresponse().read(), b"v6")
            conn.close()


class FewDescriptors(MockServerBase):
    """Serves :class:`App` with a descriptor limit of 64, so clients can exhaust it."""

    def serve(self, ctx: ServeContext) -> None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        with serve_wsgi(App(), bind_tcp(self.host, self.port)) as server:
            ctx.ready(port=server.port)
            ctx.wait()


class DescriptorExhaustionTest(ProcessTestCase):
    def test_full_descriptor_table_neither_spins_nor_floods_and_keeps_serving(self) -> None:
        server = self.start_server(FewDescriptors())
        crowd = []
        for _ in range(100):  # far more idle clients than the child has descriptors
            sock = socket.create_connection((server.host, server.port), timeout=10)
            self.addCleanup(sock.close)
            crowd.append(sock)
        # A real request still gets through: idle connections are closed to make room.
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/served")
        self.assertEqual(conn.getresponse().read(), b"GET /served ")
        child = psutil.Process(server.pid)
        self.assertLess(cpu_seconds_over(child, 1.0), 0.5, "the child spins")
        self.assertLessEqual(server.log_tail(1000).count("cannot accept connections"), 1)
        for sock in crowd:
            sock.close()
        conn.request("GET", "/after")
        self.assertEqual(conn.getresponse().read(), b"GET /after ")


if __name__ == "__main__":
    unittest.main()
