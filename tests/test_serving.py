"""The serving helpers in-process: keep-alive WSGI serving, bind errors, gRPC options."""

from __future__ import annotations

import http.client
import socket
import unittest
from typing import Any

from mocksup import PortInUseError
from mocksup.serving import bind_tcp, grpc_server, serve_wsgi


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a", b"b", b"c"]
    else:
        body = b"ignored the body"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


class KeepAliveTest(unittest.TestCase):
    def setUp(self) -> None:
        context = serve_wsgi(app, bind_tcp("127.0.0.1", 0))
        self.server = context.__enter__()
        self.addCleanup(context.__exit__, None, None, None)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        self.addCleanup(self.conn.close)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[bytes, Any]:
        self.conn.request(method, path, body=body)
        response = self.conn.getresponse()
        return response.read(), response

    def test_requests_share_one_connection(self) -> None:
        self.assertEqual(self.request("POST", "/echo", b"one")[0], b"one")
        first = self.conn.sock
        self.assertEqual(self.request("POST", "/echo", b"two")[0], b"two")
        # The app ignores this body: it is drained, and the next request still parses.
        data, response = self.request("POST", "/ignore", b"x" * 100_000)
        self.assertEqual(data, b"ignored the body")
        self.assertIsNone(response.getheader("Connection"))
        self.assertEqual(self.request("GET", "/stream")[0], b"abc")
        self.assertEqual(self.request("POST", "/echo", b"three")[0], b"three")
        self.assertIs(self.conn.sock, first)

    def test_chunked_request_bodies_close_the_connection(self) -> None:
        self.conn.request("POST", "/ignore", body=iter([b"abc"]), encode_chunked=True)
        response = self.conn.getresponse()
        response.read()
        self.assertEqual(response.getheader("Connection"), "close")
        # http.client reconnects by itself; the server is still fine.
        self.assertEqual(self.request("POST", "/echo", b"after")[0], b"after")


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
        with serve_wsgi(app, sock) as server:
            conn = http.client.HTTPConnection("::1", server.port, timeout=5)
            conn.request("POST", "/echo", body=b"v6")
            self.assertEqual(conn.getresponse().read(), b"v6")
            conn.close()


if __name__ == "__main__":
    unittest.main()
