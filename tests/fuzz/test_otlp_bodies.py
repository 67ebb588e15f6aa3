"""Fuzz the collector's OTLP bodies: protobuf and JSON, plain, gzip and deflate, over HTTP
and gRPC.

Bodies are valid exports with random damage (flipped bytes, splices, huge lengths, deep
nesting, empty envelopes by the hundred thousand, broken or concatenated gzip members,
JSON values of the wrong type). Every answer must be a success or a 4xx (gRPC: a status the
Collector gives), never a 5xx; every span the collector accepted from a body we can decode
must be stored, exactly; the child's RSS must stay bounded.
"""

from __future__ import annotations

import copy
import gzip
import json
import random
import unittest
import zlib
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from mocksup.otlp import MockOTLPCollector
from tests.fuzz.support import Checks, flip, rng_for, send_raw, splice
from tests.support import ProcessTestCase

CASES = 800
BATCH = 100
GRPC_CASES = 300
#: gRPC answers the Collector gives to a bad export (never UNKNOWN: that is a crash).
GRPC_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
}


def make_request(rng: random.Random, spans: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    key = resource.resource.attributes.add()
    key.key, key.value.string_value = "service.name", "fuzz"
    scope = resource.scope_spans.add()
    scope.scope.name = "fuzzer"
    for index in range(spans):
        span = scope.spans.add()
        span.name = f"op-{index}"
        span.trace_id = rng.randbytes(16)
        span.span_id = rng.randbytes(8)
        span.kind = rng.randrange(6)  # type: ignore[assignment]
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + index
        span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(10**9)
        for name, value in (("i", AnyValue(int_value=index)), ("d", AnyValue(double_value=0.5)),
                            ("s", AnyValue(string_value="x" * rng.randrange(20))),
                            ("b", AnyValue(bool_value=True))):  # fmt: skip
            attribute = span.attributes.add()
            attribute.key = name
            attribute.value.CopyFrom(value)
        event = span.events.add()
        event.name, event.time_unix_nano = "event", span.start_time_unix_nano
        if index:
            link = span.links.add()
            link.trace_id, link.span_id = span.trace_id, rng.randbytes(8)
    return request


def deep_value(depth: int) -> bytes:
    """A span whose attribute nests ``depth`` array values deep (encoded by hand: the
    protobuf library refuses to build what is deeper than it parses)."""
    value = AnyValue(string_value="bottom").SerializeToString()
    for _ in range(depth):
        array = _field(1, value)  # ArrayValue.values
        value = _field(5, array)  # AnyValue.array_value
    attribute = _field(1, b"deep") + _field(2, value)  # KeyValue
    span = (
        _field(1, b"\x01" * 16) + _field(2, b"\x02" * 8) + _field(5, b"deep") + _field(9, attribute)
    )
    return _field(1, _field(2, _field(2, span)))  # resource_spans.scope_spans.spans


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    size = len(payload)
    varint = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        varint.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes([number << 3 | 2]) + bytes(varint) + payload


def empty_envelopes(count: int) -> bytes:
    """``count`` empty ResourceSpans: 2 bytes each on the wire (an amplification attempt)."""
    return b"\x0a\x00" * count


def protobuf_body(rng: random.Random) -> bytes:
    base = make_request(rng, rng.randrange(1, 6)).SerializeToString()
    makers: list[Callable[[], bytes]] = [
        lambda: base,
        lambda: flip(rng, base, rng.randrange(1, 6)),
        lambda: splice(rng, base),
        lambda: base + b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
        lambda: b"\x0a" + b"\xff" * 10 + base,  # an overlong varint
        lambda: empty_envelopes(rng.choice([10, 1000, 100_000])),
        lambda: deep_value(rng.choice([10, 50, 200, 2000])),
        lambda: rng.randbytes(rng.randrange(1, 200)),
        lambda: b"",
    ]
    return rng.choice(makers)()


def json_body(rng: random.Random) -> bytes:
    request = make_request(rng, rng.randrange(1, 4))
    doc = _to_otlp_json(request)
    for _ in range(rng.randrange(0, 4)):
        _damage(rng, doc)
    if rng.random() < 0.05:
        return b"[" * 100_000 + b"]" * 100_000
    if rng.random() < 0.05:
        return json.dumps({"resourceSpans": [{}] * 20_000}).encode()
    text = json.dumps(doc)
    if rng.random() < 0.05:
        text = text.replace('"op-0"', '"\\ud800 lone"')
    if rng.random() < 0.05:
        text = text.replace("0.5", "NaN")
    return text.encode()


def _to_otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    spans = []
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                spans.append({
                    "traceId": span.trace_id.hex(), "spanId": span.span_id.hex(),
                    "name": span.name, "kind": span.kind,
                    "startTimeUnixNano": str(span.start_time_unix_nano),
                    "endTimeUnixNano": str(span.end_time_unix_nano),
                    "attributes": [{"key": "d", "value": {"doubleValue": 0.5}},
                                   {"key": "i", "value": {"intValue": "7"}}],
                    "status": {"code": 1},
                })  # fmt: skip
    service = {"key": "service.name", "value": {"stringValue": "fuzz"}}
    scopes = [{"scope": {"name": "f"}, "spans": spans}]
    return {"resourceSpans": [{"resource": {"attributes": [service]}, "scopeSpans": scopes}]}


def _damage(rng: random.Random, doc: Any) -> None:
    """Replace one value somewhere in ``doc`` with one of the wrong type or shape."""
    path: list[Any] = []
    node = doc
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append((node, key))
        node = node[key]
    if not path:
        return
    parent, key = path[-1]
    parent[key] = rng.choice([None, True, 0, -1, 1.5e308, "", "zz", [], {}, [None],
                              {"unknownField": 1}, "9" * 40, 2**64, -(2**63) - 1,
                              copy.deepcopy(doc) if rng.random() < 0.1 else "x"])  # fmt: skip


def compress(rng: random.Random, body: bytes) -> tuple[bytes, str]:
    choice = rng.randrange(8)
    if choice == 0:
        return gzip.compress(body, mtime=0), "gzip"
    if choice == 1:
        return zlib.compress(body), "deflate"
    if choice == 2:  # two members: a valid stream (RFC 1952)
        half = len(body) // 2
        return gzip.compress(body[:half]) + gzip.compress(body[half:]), "gzip"
    if choice == 3:
        return gzip.compress(body) + b"trailing garbage", "gzip"
    if choice == 4:
        return gzip.compress(body)[: rng.randrange(1, 30)], "gzip"
    if choice == 5:
        return flip(rng, gzip.compress(body)), "gzip"
    return body, ""


def spans_in(body: bytes, encoding: str) -> int | None:
    """How many spans the protobuf ``body`` holds, as a receiver decodes it; ``None`` when
    that cannot be told here (then the accounting of this case is skipped)."""
    try:
        if encoding == "gzip":
            data = _gunzip_all(body)
        elif encoding == "deflate":
            data = zlib.decompress(body)
        else:
            data = body
        request = ExportTraceServiceRequest.FromString(data)
    except Exception:
        return None
    return sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)


def _gunzip_all(body: bytes) -> bytes:
    return gzip.decompress(body)  # every member; raises on trailing garbage


class OTLPBodyFuzzTest(ProcessTestCase):
    collector: MockOTLPCollector

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.collector = MockOTLPCollector(port=0, grpc_port=0)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()

    def setUp(self) -> None:
        super().setUp()
        self.collector.clear()
        assert self.collector.pid is not None
        self.checks = Checks(self, self.collector.pid, frozenset({501, 505}))

    def post(self, body: bytes, content_type: str, encoding: str) -> int:
        collector = self.collector
        head = (
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            + (f"Content-Encoding: {encoding}\r\n" if encoding else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        )
        exchange = send_raw(collector.host, collector.port, head.encode() + body, timeout=30)
        self.checks.answers(exchange)
        self.assertEqual(len(exchange.answers), 1, exchange.raw[:200])
        answer = exchange.answers[0]
        if answer.status == 200 and content_type == "application/x-protobuf":
            # A partial success says how many were refused; they are not stored.
            rejected = ExportTraceServiceResponse.FromString(answer.body).partial_success
            self.assertEqual(rejected.rejected_spans, 0, rejected.error_message)
        return answer.status

    def test_protobuf_bodies(self) -> None:
        rng = rng_for("protobuf")
        stored = 0
        for number in range(CASES):
            body, encoding = compress(rng, protobuf_body(rng))
            if self.post(body, "application/x-protobuf", encoding) == 200:
                count = spans_in(body, encoding)
                now = len(self.collector.spans())
                if count is not None:  # else a body only the collector decodes (bad UTF-8)
                    self.assertEqual(now - stored, count, "accepted spans missing or extra")
                stored = now
            if number % BATCH == BATCH - 1:
                self.checks.alive()
        self.checks.alive()

    def test_json_bodies(self) -> None:
        rng = rng_for("json")
        for number in range(CASES):
            body, encoding = compress(rng, json_body(rng))
            self.post(body, rng.choice(["application/json", "application/json; charset=utf-8"]),
                      encoding)  # fmt: skip
            if number % BATCH == BATCH - 1:
                self.checks.alive(self.collector.stats)
        self.checks.alive(self.collector.stats)

    def test_grpc_bodies(self) -> None:
        rng = rng_for("grpc")
        assert self.collector.grpc_port is not None
        channel = grpc.insecure_channel(f"127.0.0.1:{self.collector.grpc_port}")
        self.addCleanup(channel.close)
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        expected = 0
        for _ in range(GRPC_CASES):
            body = protobuf_body(rng)
            try:
                export(body, timeout=30)
            except grpc.RpcError as error:
                self.assertIn(error.code(), GRPC_REFUSALS, f"{error.details()} for {body[:80]!r}")
                continue
            count = spans_in(body, "")
            expected += count or 0
        self.checks.alive(lambda: self.assertGreaterEqual(len(self.collector.spans()), expected))


if __name__ == "__main__":
    unittest.main()
