"""Fuzz MockRedisServer's RESP: damaged arrays, inline commands, lengths, binary junk.

Each case is a connection sending a few commands, valid or damaged (wrong or negative
lengths, missing CRLF, huge counts, bare newlines, NUL bytes, a request cut short). Every
reply must parse as RESP and never echo a line break the client sent; after each batch the
child is alive, its RSS bounded, and the value stored before the run still there.
"""

from __future__ import annotations

import random
import socket
import unittest

from mocksup import MockRedisServer
from tests.fuzz.support import Checks, flip, rng_for
from tests.support import ProcessTestCase

CASES = 1500
BATCH = 150
COMMANDS = [b"PING", b"ECHO", b"SET", b"GET", b"DEL", b"EXISTS", b"DBSIZE", b"ping", b"NOPE"]


def array(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def command(rng: random.Random) -> bytes:
    name = rng.choice(COMMANDS)
    args = [rng.choice([b"k", b"key:1", b"", b"v" * rng.randrange(100), b"a\r\nb", b"\x00"])
            for _ in range(rng.randrange(0, 4))]  # fmt: skip
    valid = array(name, *args)
    choice = rng.randrange(10)
    if choice == 0:
        return name + b" " + b" ".join(a.replace(b"\r\n", b"") for a in args) + b"\r\n"
    if choice == 1:
        return flip(rng, valid, rng.randrange(1, 4))
    if choice == 2:
        return valid.replace(b"$", b"$-", 1)
    if choice == 3:
        return b"*" + str(rng.choice([-1, 0, 2**31, 10**20])).encode() + b"\r\n"
    if choice == 4:
        return b"$" + str(rng.choice([-1, -5, 10**12])).encode() + b"\r\n" + b"x" * 10 + b"\r\n"
    if choice == 5:
        return valid.replace(b"\r\n", b"\n")
    if choice == 6:
        return rng.randbytes(rng.randrange(1, 64))
    if choice == 7:
        return b"x" * rng.choice([10, 70_000])  # no line end (longer than 64 KiB, or short)
    return valid


def parse_replies(data: bytes) -> int:
    """How many RESP replies ``data`` holds; raises ``ValueError`` if it is not RESP."""
    count = position = 0
    while position < len(data):
        end = data.index(b"\r\n", position)
        kind, line = data[position : position + 1], data[position + 1 : end]
        if kind in b"+-:" and kind:
            if b"\n" in line or b"\r" in line:
                raise ValueError(f"a line break inside a simple reply: {line!r}")
            position = end + 2
        elif kind == b"$":
            size = int(line)
            position = end + 2 + (size + 2 if size >= 0 else 0)
            if size >= 0 and data[position - 2 : position] != b"\r\n":
                raise ValueError("a bulk reply without its CRLF")
        else:
            raise ValueError(f"not a reply type: {data[position : position + 20]!r}")
        count += 1
    return count


class RESPFuzzTest(ProcessTestCase):
    def test_damaged_commands(self) -> None:
        server = self.start_server(MockRedisServer())
        assert server.pid is not None
        rng = rng_for("resp")
        checks = Checks(self, server.pid, frozenset())
        self.assertEqual(self.exchange(server.port, array(b"SET", b"canary", b"alive")), b"+OK\r\n")

        def canary() -> None:
            reply = self.exchange(server.port, array(b"GET", b"canary"))
            self.assertEqual(reply, b"$5\r\nalive\r\n")

        for number in range(CASES):
            data = b"".join(command(rng) for _ in range(rng.randrange(1, 4)))
            if rng.random() < 0.1:
                data = data[: rng.randrange(len(data) + 1)]  # cut short, then closed
            reply = self.exchange(server.port, data)
            try:
                parse_replies(reply)
            except (ValueError, IndexError) as error:
                self.fail(f"{error}: {reply[:200]!r} for {data[:200]!r}")
            if number % BATCH == BATCH - 1:
                checks.alive(canary)
        checks.alive(canary)

    def exchange(self, port: int, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # refused already (a protocol error closes the connection)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
            return b"".join(chunks)


if __name__ == "__main__":
    unittest.main()
