"""MockRedisServer, the worked example of a new mock, spoken to with a raw socket."""

from __future__ import annotations

import socket
import time
import unittest

import psutil

from mocksup import MockRedisServer, MockServerError
from mocksup.redis import MAX_INLINE
from tests.support import ProcessTestCase


class RedisClient:
    """Just enough RESP for the tests: send a command, read one reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send_raw(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def command(self, *args: bytes) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        parts += [b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args]
        return self.send_raw(b"".join(parts))

    def reply(self) -> bytes:
        line = self.file.readline()
        if line.startswith(b"$") and line != b"$-1\r\n":
            return line + self.file.read(int(line[1:]) + 2)
        return line


class RedisTest(ProcessTestCase):
    server: MockRedisServer

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = MockRedisServer(max_value_size=1024)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()

    def setUp(self) -> None:
        super().setUp()
        self.client = RedisClient(self.server.port)
        self.addCleanup(self.client.close)
        self.client.command(b"FLUSHALL")

    def test_url(self) -> None:
        self.assertEqual(self.server.url, f"redis://127.0.0.1:{self.server.port}")

    def test_ping_and_echo(self) -> None:
        self.assertEqual(self.client.command(b"PING"), b"+PONG\r\n")
        self.assertEqual(self.client.command(b"PING", b"hi"), b"$2\r\nhi\r\n")
        self.assertEqual(self.client.command(b"ECHO", b"a\r\nb"), b"$4\r\na\r\nb\r\n")

    def test_set_get_del_exists(self) -> None:
        c = self.client
        self.assertEqual(c.command(b"GET", b"k"), b"$-1\r\n")
        self.assertEqual(c.command(b"SET", b"k", b"v1"), b"+OK\r\n")
        self.assertEqual(c.command(b"GET", b"k"), b"$2\r\nv1\r\n")
        self.assertEqual(c.command(b"SET", b"j", b""), b"+OK\r\n")
        self.assertEqual(c.command(b"EXISTS", b"k", b"j", b"nope"), b":2\r\n")
        self.assertEqual(c.command(b"DEL", b"k", b"nope"), b":1\r\n")
        self.assertEqual(c.command(b"EXISTS", b"k"), b":0\r\n")
        self.assertEqual(c.command(b"DBSIZE"), b":1\r\n")
        self.assertEqual(c.command(b"FLUSHALL"), b"+OK\r\n")
        self.assertEqual(c.command(b"EXISTS", b"j"), b":0\r\n")
        self.assertEqual(c.command(b"DBSIZE"), b":0\r\n")

    def test_shared_between_connections(self) -> None:
        self.client.command(b"SET", b"shared", b"1")
        other = RedisClient(self.server.port)
        self.addCleanup(other.close)
        self.assertEqual(other.command(b"GET", b"shared"), b"$1\r\n1\r\n")

    def test_inline_commands(self) -> None:
        self.assertEqual(self.client.send_raw(b"PING\r\n"), b"+PONG\r\n")
        # An empty line and an empty array get no answer at all, as from Redis.
        self.assertEqual(self.client.send_raw(b"\r\n*0\r\nPING\r\n"), b"+PONG\r\n")

    def fresh(self) -> RedisClient:
        client = RedisClient(self.server.port)
        self.addCleanup(client.close)
        return client

    def assert_refused_and_closed(self, client: RedisClient, request: bytes, error: bytes) -> None:
        self.assertEqual(client.send_raw(request), b"-ERR Protocol error: " + error + b"\r\n")
        self.assertEqual(client.file.read(), b"")  # disconnected, as Redis does
        self.assertEqual(self.client.command(b"PING"), b"+PONG\r\n")  # the others go on

    def test_a_line_with_no_end_is_cut_off_at_64_kib(self) -> None:
        rss = psutil.Process(self.server.pid).memory_info().rss
        client = self.fresh()
        sent = 0
        chunk = b"x" * (1024 * 1024)
        try:
            while sent < 64 * len(chunk):
                client.sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server hung up once the line passed its limit
        self.assertEqual(client.reply(), b"-ERR Protocol error: too big inline request\r\n")
        self.assertLess(sent, 64 * len(chunk))
        growth = psutil.Process(self.server.pid).memory_info().rss - rss
        self.assertLess(growth, 16 * 1024 * 1024)
        header = b"*1\r\n$" + b"1" * (MAX_INLINE + 1)
        self.assert_refused_and_closed(self.fresh(), header, b"too big inline request")

    def test_line_breaks_in_an_argument_are_never_echoed(self) -> None:
        # A reply that echoed them would end early and inject a reply of the client's own.
        reply = self.client.command(b"NOPE\r\n+OK")
        self.assertEqual(reply, b"-ERR unknown command 'NOPE  +OK'\r\n")
        self.assertEqual(self.client.command(b"PING"), b"+PONG\r\n")

    def test_malformed_lengths_are_refused_not_misread(self) -> None:
        cases = {
            b"*2\r\n$4\r\nECHO\r\n$-1\r\n": b"invalid bulk length",
            b"*1\r\n$x\r\n": b"invalid bulk length",
            b"*99999999\r\n": b"invalid multibulk length",
            b"*x\r\n": b"invalid multibulk length",
            b"*1\r\n:5\r\n": b"expected '$', got ':'",
            b"*1\r\n$4\r\nPINGxx": b"invalid bulk terminator",
        }
        for request, error in cases.items():
            with self.subTest(request):
                self.assert_refused_and_closed(self.fresh(), request, error)

    def test_errors_keep_the_server_serving(self) -> None:
        c = self.client
        self.assertEqual(c.command(b"NOPE"), b"-ERR unknown command 'NOPE'\r\n")
        self.assertEqual(c.command(b"GET"), b"-ERR wrong number of arguments for 'get' command\r\n")
        self.client.command(b"SET", b"kept", b"yes")
        bad = self.fresh()
        self.assertTrue(bad.send_raw(b"*1\r\n:5\r\n").startswith(b"-ERR Protocol error"))
        self.assertEqual(self.fresh().command(b"GET", b"kept"), b"$3\r\nyes\r\n")

    def test_value_over_the_limit_is_refused(self) -> None:
        other = RedisClient(self.server.port)
        self.addCleanup(other.close)
        reply = other.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2048\r\n")
        self.assertEqual(reply, b"-ERR Protocol error: invalid bulk length\r\n")
        self.assertEqual(self.client.command(b"EXISTS", b"k"), b":0\r\n")


class ConnectionLimitTest(ProcessTestCase):
    def test_clients_past_the_cap_are_refused_until_one_leaves(self) -> None:
        server = self.start_server(MockRedisServer(max_connections=2))
        # The supervisor's ready probe was a client too, until the server saw it close.
        first, second = self.served_client(server.port), self.served_client(server.port)
        third = RedisClient(server.port)
        self.addCleanup(third.close)
        self.assertEqual(third.reply(), b"-ERR max number of clients reached\r\n")
        self.assertEqual(third.file.read(), b"")
        self.assertEqual(second.command(b"PING"), b"+PONG\r\n")  # still served
        first.close()
        # The slot is free once the server has seen the client go: a new one gets it then.
        self.served_client(server.port)
        # The parent's own calls are clients too.
        with self.assertRaisesRegex(MockServerError, "max number of clients reached"):
            server.stats()

    def served_client(self, port: int) -> RedisClient:
        """A client the server serves, once a slot is free (within 10 s)."""
        deadline = time.monotonic() + 10
        while True:
            client = RedisClient(port)
            self.addCleanup(client.close)
            if client.send_raw(b"PING\r\n") == b"+PONG\r\n":
                return client
            self.assertLess(time.monotonic(), deadline, "no slot was freed")
            client.close()


if __name__ == "__main__":
    unittest.main()
