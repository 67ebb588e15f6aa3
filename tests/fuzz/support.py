"""What the fuzz tests share: seeded mutators, a raw-socket sender, and the health check run
after each batch (the child alive, what it accepted still there, no 5xx, RSS bounded)."""

from __future__ import annotations

import http.client
import io
import os
import random
import socket
import unittest
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import psutil

#: Every fuzz test's seed; ``MOCKSUP_FUZZ_SEED`` overrides it to explore further by hand.
SEED = int(os.environ.get("MOCKSUP_FUZZ_SEED", "20261201"))
#: A child's resident memory must stay under this through a fuzz run.
RSS_LIMIT = 600 * 1024 * 1024


def rng_for(name: str) -> random.Random:
    """A generator seeded from :data:`SEED` and the test's name: each test repeats alone."""
    return random.Random(f"{SEED}:{name}")


@dataclass
class Answer:
    """One parsed response from the raw bytes a server sent."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    """What one raw request produced: the parsed answers and any framing trouble."""

    raw: bytes
    answers: list[Answer] = field(default_factory=list)
    trailing: bytes = b""  # bytes after the last parseable answer (a framing bug)
    error: str = ""


def send_raw(
    host: str,
    port: int,
    data: bytes,
    *,
    pieces: int = 1,
    half_close: bool = True,
    head_requests: int = 0,
    timeout: float = 5.0,
) -> Exchange:
    """Send ``data`` in ``pieces`` writes on a new connection, read everything until the
    server closes (or ``timeout``), and parse the answers (the first ``head_requests`` of
    them answer ``HEAD``, strictly: they have no body)."""
    exchange = Exchange(data)
    received = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        cuts = sorted({len(data) * i // pieces for i in range(1, pieces)})
        start = 0
        try:
            for cut in [*cuts, len(data)]:
                sock.sendall(data[start:cut])
                start = cut
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # a server may close as soon as it refused the request
        except TimeoutError:
            exchange.error = "timed out"
    # Strict: an answer to HEAD has no body, so a body sent anyway leaves bytes that do not
    # parse as the next answer. (A HEAD whose request line the server cannot read gets a
    # body like any refusal; the caller does not count it in ``head_requests``.)
    parsed = _parse(bytes(received), head_requests)
    exchange.answers, exchange.trailing = parsed[0], parsed[1]
    exchange.error = exchange.error or parsed[2]
    return exchange


def _parse(received: bytes, head_requests: int) -> tuple[list[Answer], bytes, str]:
    """The answers in ``received``, any bytes that are not an answer, and the trouble."""
    stream = _Stream(received)
    answers: list[Answer] = []
    while stream.tell() < len(received):
        position = stream.tell()
        method = "HEAD" if len(answers) < head_requests else "GET"
        response = http.client.HTTPResponse(cast(socket.socket, _FakeSocket(stream)), method=method)
        try:
            response.begin()
            body = response.read()
        except (http.client.HTTPException, ValueError) as error:
            stream.seek(position)
            return answers, stream.read(), f"unparseable answer: {error!r}"
        headers = {k.lower(): v for k, v in response.getheaders()}
        answers.append(Answer(response.status, headers, body))
    return answers, b"", ""


class _Stream(io.BytesIO):
    """Received bytes read answer after answer (an answer's close() must not end them)."""

    def close(self) -> None:
        pass


class _FakeSocket:
    def __init__(self, stream: io.BytesIO) -> None:
        self.stream = stream

    def makefile(self, *args: object, **kwargs: object) -> io.BytesIO:
        return self.stream


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


class Checks:
    """Assertions shared by fuzz tests over one child."""

    def __init__(self, case: unittest.TestCase, pid: int, allowed_5xx: frozenset[int]) -> None:
        self.case = case
        self.pid = pid
        self.allowed_5xx = allowed_5xx
        self.peak = 0
        self.statuses: dict[int, int] = {}

    def answers(self, exchange: Exchange) -> None:
        """No unparseable bytes, no timeouts, no 5xx beyond the real counterpart's."""
        raw = exchange.raw[:300]
        self.case.assertEqual(exchange.error, "", f"{exchange.error} for {raw!r}")
        for answer in exchange.answers:
            self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
            if answer.status >= 500:
                self.case.assertIn(
                    answer.status, self.allowed_5xx, f"{answer.status} {answer.body[:300]!r} "
                    f"for {raw!r}"
                )  # fmt: skip

    def alive(self, more: Callable[[], object] | None = None) -> None:
        """The child runs, answers ``more()`` (a canary query), and its RSS is bounded."""
        self.case.assertTrue(psutil.pid_exists(self.pid), "the child died")
        status = psutil.Process(self.pid).status()
        self.case.assertNotEqual(status, psutil.STATUS_ZOMBIE, "the child died")
        if more is not None:
            more()
        self.peak = max(self.peak, rss(self.pid))
        self.case.assertLess(self.peak, RSS_LIMIT, "the child's memory grew past the limit")


def batches(items: list[bytes] | Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pick(rng: random.Random, weighted: list[tuple[float, Callable[[], bytes]]]) -> bytes:
    """Call one of the makers, chosen by weight."""
    total = sum(w for w, _ in weighted)
    point = rng.random() * total
    for weight, make in weighted:
        point -= weight
        if point <= 0:
            return make()
    return weighted[-1][1]()


def flip(rng: random.Random, data: bytes, count: int = 1) -> bytes:
    """``data`` with ``count`` random bytes replaced."""
    out = bytearray(data)
    for _ in range(count):
        if out:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def splice(rng: random.Random, data: bytes) -> bytes:
    """``data`` truncated, extended, or with a slice repeated or deleted."""
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
    choice = rng.randrange(4)
    if choice == 0:
        return data[:a]
    if choice == 1:
        return data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
    if choice == 2:
        return data[:b] + data[a:b] + data[b:]
    return data[:a] + data[b:]
