"""MockRedisServer, the worked example of a new mock, spoken to with a raw socket."""

from __future__ import annotations

import socket
import unittest

from mocksup import MockRedisServer


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


class RedisTest(unittest.TestCase):
    server: MockRedisServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = MockRedisServer(max_value_size=1024)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()

    def setUp(self) -> None:
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
        self.assertEqual(c.command(b"FLUSHALL"), b"+OK\r\n")
        self.assertEqual(c.command(b"EXISTS", b"j"), b":0\r\n")

    def test_shared_between_connections(self) -> None:
        self.client.command(b"SET", b"shared", b"1")
        other = RedisClient(self.server.port)
        self.addCleanup(other.close)
        self.assertEqual(other.command(b"GET", b"shared"), b"$1\r\n1\r\n")

    def test_inline_commands(self) -> None:
        self.assertEqual(self.client.send_raw(b"PING\r\n"), b"+PONG\r\n")

    def test_errors_keep_the_server_serving(self) -> None:
        c = self.client
        self.assertEqual(c.command(b"NOPE"), b"-ERR unknown command 'NOPE'\r\n")
        self.assertEqual(c.command(b"GET"), b"-ERR wrong number of arguments for 'get' command\r\n")
        self.client.command(b"SET", b"kept", b"yes")
        bad = RedisClient(self.server.port)
        self.addCleanup(bad.close)
        self.assertTrue(bad.send_raw(b"*1\r\n:5\r\n").startswith(b"-ERR Protocol error"))
        fresh = RedisClient(self.server.port)
        self.addCleanup(fresh.close)
        self.assertEqual(fresh.command(b"GET", b"kept"), b"$3\r\nyes\r\n")

    def test_value_over_the_limit_is_refused(self) -> None:
        other = RedisClient(self.server.port)
        self.addCleanup(other.close)
        reply = other.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2048\r\n")
        self.assertEqual(reply, b"-ERR Protocol error: invalid bulk length\r\n")
        self.assertEqual(self.client.command(b"EXISTS", b"k"), b":0\r\n")


if __name__ == "__main__":
    unittest.main()
