"""Fuzz the HTTP framing of the mocks' ports with raw sockets.

Each case is a request built from a valid one with a few mutations of its request line,
headers, body framing or delivery (split writes, pipelining, HEAD, early close). Every
answer must parse as HTTP, no answer may be a 5xx that the real server would not give, and
after each batch the child must be alive, its RSS bounded, and what it held still there.
"""

from __future__ import annotations

import json
import random
import socket
import unittest
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mocksup.otlp import MockOTLPCollector
from mocksup.vllm import MockVLLMServer
from tests.fuzz.support import Checks, rng_for, send_raw
from tests.support import ProcessTestCase

CASES = 1500
BATCH = 100
#: The longest request line the mocks read (``HTTPLimits.max_request_line``, 16 KiB).
_MAX_REQUEST_LINE = 16 * 1024

Header = tuple[bytes, bytes]


def canary_spans(name: str) -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add()
    attribute = spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "fuzz"
    span = spans.scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = name, bytes(range(16)), bytes(range(8))
    span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
    return request.SerializeToString()


class Request:
    """A request under construction, serialised at the end (mutators change its parts)."""

    def __init__(self, method: bytes, target: bytes, headers: list[Header], body: bytes) -> None:
        self.method = method
        self.target = target
        self.version = b"HTTP/1.1"
        self.headers = [(b"Host", b"fuzz"), *headers]
        self.body = body
        self.framing = "length"  # or "chunked", "none"
        self.chunks: list[bytes] | None = None

    def serialise(self) -> bytes:
        headers = list(self.headers)
        body = self.body
        if self.framing == "length":
            headers.append((b"Content-Length", str(len(body)).encode()))
        elif self.framing == "chunked":
            headers.append((b"Transfer-Encoding", b"chunked"))
            if self.chunks is None:
                size = max(1, len(body) // 3)
                parts = [body[i : i + size] for i in range(0, len(body), size)]
                self.chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
            body = b"".join(self.chunks)
        line = b" ".join((self.method, self.target, self.version))
        head = b"".join(b"%s: %s\r\n" % h for h in headers)
        return line + b"\r\n" + head + b"\r\n" + body

    def reads_as_head(self) -> bool:
        """A HEAD whose request line a server can read (RFC 9112 3): its answer, even a
        refusal of its headers or body, has no body. A line the server refuses (414, 400,
        505) is answered before it knows the method, with a body."""
        line = b" ".join((self.method, self.target, self.version))
        return (
            self.method == b"HEAD"
            and self.version in (b"HTTP/1.1", b"HTTP/1.0")
            and all(0x21 <= byte != 0x7F for byte in self.target)
            and len(line) + 2 <= _MAX_REQUEST_LINE
        )


def _chunk_mutation(rng: random.Random, request: Request) -> None:
    request.framing = "chunked"
    request.serialise()
    assert request.chunks is not None
    chunks = request.chunks
    if not chunks:
        chunks.append(b"0\r\n\r\n")
    index = rng.randrange(len(chunks))
    choice = rng.randrange(7)
    if choice == 0:  # a size larger than the data that follows (a client dying mid-upload)
        chunks[index] = b"fffff\r\n" + chunks[index].split(b"\n", 1)[-1]
        del chunks[index + 1 :]
    elif choice == 1:
        chunks[index] = chunks[index].replace(b"\r\n", b"\n", rng.randrange(1, 3))
    elif choice == 2:
        chunks[index] = b"zz" + chunks[index]
    elif choice == 3:
        chunks[index] = chunks[index].replace(b"\r\n", b';ext=1;q="x"\r\n', 1)
    elif choice == 4:
        chunks[-1] = b"0\r\nTrailer-Field: 1\r\n\r\n"
    elif choice == 5:
        del chunks[-1]  # no last chunk
    else:
        chunks[index] = b"-" + chunks[index]


def mutators(rng: random.Random) -> list[Callable[[Request], None]]:
    def method(r: Request) -> None:
        r.method = rng.choice([b"GET", b"HEAD", b"PUT", b"OPTIONS", b"DELETE", b"get",
                               b"P\x00ST", b"", b"X" * 300, b"PRI", b"CONNECT"])  # fmt: skip

    def target(r: Request) -> None:
        r.target = rng.choice([b"/", b"//v1/traces", r.target + b"?a=1&a=2", b"/%00%ff",
                               b"/" + b"a" * 20000, b"*", b"http://h" + r.target, b"/\x7f",
                               r.target + b"/", b"/mocksup/stats?x=%zz", b"/../../etc/passwd",
                               r.target.upper()])  # fmt: skip

    def version(r: Request) -> None:
        r.version = rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/1", b"http/1.1",
                                b"HTTP/1.1 x", b"", b"HTTP/3.0"])  # fmt: skip

    def header(r: Request) -> None:
        r.headers.append(rng.choice([
            (b"Expect", b"100-continue"), (b"Expect", b"nothing"), (b"Connection", b"close"),
            (b"Connection", b"keep-alive, Upgrade"), (b"Content-Type", b"application/json"),
            (b"Content-Type", b"text/html"), (b"Content-Type", b"application/x-protobuf; x"),
            (b"Content-Encoding", b"gzip"), (b"Content-Encoding", b"deflate"),
            (b"Content-Encoding", b"br, gzip"), (b"Transfer-Encoding", b"gzip, chunked"),
            (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"7"),
            (b"Content-Length", b"-5"), (b"Content-Length", b"99999999999999999999"),
            (b"Content-Length", b"1e3"), (b"X-Big", b"y" * 70000), (b"X-Nul", b"a\x00b"),
            (b"Bad Name", b"v"), (b"", b"empty name"), (b"Authorization", b"Bearer sk-secret"),
            (b"traceparent", b"00-zz-yy-01"), (b"X-Mocksup-TTFT", b"inf"),
            (b"X-Mocksup-Fault", b"nonsense"),
        ]))  # fmt: skip
        if rng.random() < 0.1:
            r.headers.extend([(b"X-Many", b"1")] * 250)

    def fold(r: Request) -> None:
        r.headers.append((b"X-Folded", b"a\r\n continued"))

    def framing(r: Request) -> None:
        r.framing = rng.choice(["chunked", "none", "length"])
        if r.framing == "length" and rng.random() < 0.5:
            r.headers.append((b"Content-Length", str(len(r.body) + rng.choice([-1, 1])).encode()))

    def chunks(r: Request) -> None:
        _chunk_mutation(rng, r)

    def body(r: Request) -> None:
        data = bytearray(r.body or b"{}")
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        r.body = bytes(data)

    return [method, target, version, header, header, fold, framing, chunks, chunks, body]


class FramingFuzz:
    """The fuzz run; mixed into a test case that starts ``server`` and names templates."""

    server: MockOTLPCollector | MockVLLMServer
    allowed_5xx: frozenset[int] = frozenset({501, 505})

    def templates(self) -> list[Request]:
        raise NotImplementedError

    def canary(self) -> None:
        raise NotImplementedError

    def test_raw_framing(self) -> None:
        case: unittest.TestCase = self  # type: ignore[assignment]
        rng = rng_for(type(self).__name__)
        server = self.server
        assert server.pid is not None
        checks = Checks(case, server.pid, self.allowed_5xx)
        changes = mutators(rng)
        for number in range(CASES):
            request = rng.choice(self.templates())
            for change in rng.sample(changes, rng.randrange(1, 4)):
                change(request)
            raw = request.serialise()
            heads = 1 if request.reads_as_head() else 0
            if rng.random() < 0.2:  # pipelining: a plain request after this one
                raw += b"GET /health HTTP/1.1\r\nHost: fuzz\r\n\r\n"
            if rng.random() < 0.1:
                _abandon(server.host, server.port, raw[: rng.randrange(len(raw) + 1)])
            else:
                pieces = rng.choice([1, 1, 1, 2, 7])
                checks.answers(
                    send_raw(server.host, server.port, raw, pieces=pieces, head_requests=heads)
                )
            if number % 100 == 99:
                checks.alive(self.canary)
        checks.alive(self.canary)


def _abandon(host: str, port: int, data: bytes) -> None:
    """Send part of a request and close at once, without reading: a client killed."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)


class CollectorFramingTest(FramingFuzz, ProcessTestCase):
    server: MockOTLPCollector

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = MockOTLPCollector(port=0, grpc_port=None)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        body = canary_spans("canary")
        status, _ = _post(cls.server.host, cls.server.port, "/v1/traces", body)
        assert status == 200, status

    def templates(self) -> list[Request]:
        protobuf = [(b"Content-Type", b"application/x-protobuf")]
        spans = canary_spans("fuzzed")
        return [
            Request(b"POST", b"/v1/traces", protobuf, spans),
            Request(b"POST", b"/v1/logs", [(b"Content-Type", b"application/json")], b"{}"),
            Request(b"GET", b"/mocksup/stats", [], b""),
            Request(b"HEAD", b"/mocksup/stats", [], b""),
        ]

    def canary(self) -> None:
        self.assertEqual(len(self.server.spans("canary")), 1)


class VLLMFramingTest(FramingFuzz, ProcessTestCase):
    server: MockVLLMServer
    allowed_5xx = frozenset()  # uvicorn answers every unparseable request 400

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = MockVLLMServer(port=0, output_tokens=(1, 3))
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()

    def templates(self) -> list[Request]:
        chat = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        completion = json.dumps({"prompt": "hi", "max_tokens": 2, "stream": True})
        content = [(b"Content-Type", b"application/json")]
        return [
            Request(b"POST", b"/v1/chat/completions", content, chat.encode()),
            Request(b"POST", b"/v1/completions", content, completion.encode()),
            Request(b"POST", b"/tokenize", content, b'{"prompt": "a b"}'),
            Request(b"GET", b"/v1/models", [], b""),
            Request(b"GET", b"/metrics", [], b""),
            Request(b"HEAD", b"/health", [], b""),
        ]

    def canary(self) -> None:
        status, body = _post(self.server.host, self.server.port, "/tokenize", b'{"prompt":"a"}')
        self.assertEqual(status, 200, body)


def _post(host: str, port: int, path: str, body: bytes) -> tuple[int, bytes]:
    content_type = "application/json" if body.startswith(b"{") else "application/x-protobuf"
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    exchange = send_raw(host, port, raw)
    answer = exchange.answers[0]
    return answer.status, answer.body


if __name__ == "__main__":
    unittest.main()
