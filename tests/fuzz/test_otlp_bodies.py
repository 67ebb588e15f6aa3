"""Fuzz the collector's OTLP bodies: protobuf and JSON, plain, gzip and deflate, over HTTP
and gRPC.

Bodies are valid exports with random damage (flipped bytes, splices, huge lengths, deep
nesting, empty envelopes by the hundred thousand, broken or concatenated gzip members,
JSON values of the wrong type). Every answer must be a success or a 4xx (gRPC: a status the
Collector gives), never a 5xx; every span in an accepted body (counted here, from the bytes)
must be stored, or counted as dropped past the cap, exactly; the child's RSS must stay
bounded.
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
#: The collector's ``max_items`` here: past it, accepted spans are dropped and counted.
CAP = 60
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


def decompress(body: bytes, encoding: str) -> bytes:
    """``body`` decoded as a receiver decodes it (raises what it refuses)."""
    if encoding == "gzip":
        return gzip.decompress(body)  # every member; raises on trailing garbage
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def spans_in(body: bytes) -> int:
    """How many spans the protobuf ``body`` holds, read off the wire format here (no
    protobuf runtime: the collector may accept what it refuses, such as bad UTF-8).

    :raises ValueError: the framing down to the spans is broken.
    """
    return sum(
        1
        for number, resource in _fields(body)
        if number == 1  # ExportTraceServiceRequest.resource_spans
        for number_2, scope in _fields(resource)
        if number_2 == 2  # ResourceSpans.scope_spans
        for number_3, _ in _fields(scope)
        if number_3 == 2  # ScopeSpans.spans
    )


def _fields(message: bytes) -> list[tuple[int, bytes]]:
    """The length-delimited fields of ``message``, by number; the others skipped."""
    fields, position = [], 0
    while position < len(message):
        key, position = _varint(message, position)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire_type == 0:
            _, position = _varint(message, position)
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            size, position = _varint(message, position)
            fields.append((number, message[position : position + size]))
            position += size
        else:
            raise ValueError(f"wire type {wire_type}")
        if position > len(message):
            raise ValueError("a field runs past the end")
    return fields


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    for index in range(position, min(position + 10, len(data))):
        value |= (data[index] & 0x7F) << shift
        if not data[index] & 0x80:
            if value >= 1 << 64:
                raise ValueError("varint over 64 bits")
            return value, index + 1
        shift += 7
    raise ValueError("truncated or overlong varint")


def json_spans_in(body: bytes) -> int:
    """How many spans the OTLP/JSON ``body`` holds, read as the collector reads it: keys
    in camelCase or snake_case, unknown keys ignored, a list given as ``null`` empty.

    :raises ValueError: the body is not JSON or its shape down to the spans is wrong.
    """
    total = 0
    for resource in _members(json.loads(body), "resourceSpans", "resource_spans"):
        for scope in _members(resource, "scopeSpans", "scope_spans"):
            total += len(_members(scope, "spans", "spans"))
    return total


def _members(message: Any, camel: str, snake: str) -> list[Any]:
    if not isinstance(message, dict):
        raise ValueError(f"a message that is {type(message).__name__}")
    value = message.get(camel, message.get(snake))
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{camel} is {type(value).__name__}")
    return value


class OTLPBodyFuzzTest(ProcessTestCase):
    collector: MockOTLPCollector

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # A cap on stored items well under what each test's accepted exports hold (150 to
        # 300 spans), so the fuzz also goes through trimming at the cap and dropping past it.
        cls.collector = MockOTLPCollector(port=0, grpc_port=0, max_items=CAP)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()

    def setUp(self) -> None:
        super().setUp()
        self.collector.clear()
        assert self.collector.pid is not None
        self.checks = Checks(self, self.collector.pid, frozenset({501, 505}))
        #: Spans in the exports the collector accepted, counted here from the bodies.
        self.accepted = 0

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
        if answer.status == 200:
            # A partial success says how many were refused; they are not stored.
            if content_type == "application/x-protobuf":
                rejected = ExportTraceServiceResponse.FromString(answer.body).partial_success
                self.assertEqual(rejected.rejected_spans, 0, rejected.error_message)
            else:
                partial = json.loads(answer.body).get("partialSuccess", {})
                self.assertEqual(int(partial.get("rejectedSpans", 0)), 0, partial)
        return answer.status

    def account(self, count_spans: Callable[[bytes], int], body: bytes, encoding: str) -> None:
        """One more accepted export: its spans, counted here, are all stored or counted as
        dropped (past a cap), none lost and none extra."""
        try:
            count = count_spans(decompress(body, encoding))
        except Exception as error:
            self.fail(f"accepted, but broken when read here ({error!r}): {body[:200]!r}")
        self.accepted += count
        stats = self.collector.stats()
        stored, dropped = stats["items"]["traces"], stats["dropped"]["traces"]
        self.assertEqual(stored + dropped, self.accepted, f"after {count} spans in {body[:200]!r}")
        self.assertEqual(
            stored, min(self.accepted, CAP), "stored past the cap, or dropped short of it"
        )

    def stored(self) -> None:
        """The spans the collector counts as stored are the spans it returns."""
        self.assertEqual(len(self.collector.spans()), self.collector.stats()["items"]["traces"])

    def test_protobuf_bodies(self) -> None:
        rng = rng_for("protobuf")
        for number in range(CASES):
            body, encoding = compress(rng, protobuf_body(rng))
            if self.post(body, "application/x-protobuf", encoding) == 200:
                self.account(spans_in, body, encoding)
            if number % BATCH == BATCH - 1:
                self.checks.alive(self.stored)
        self.checks.alive(self.stored)
        self.assertGreater(self.collector.stats()["dropped"]["traces"], 0, "the cap was never met")

    def test_json_bodies(self) -> None:
        rng = rng_for("json")
        for number in range(CASES):
            body, encoding = compress(rng, json_body(rng))
            content_type = rng.choice(["application/json", "application/json; charset=utf-8"])
            if self.post(body, content_type, encoding) == 200:
                self.account(json_spans_in, body, encoding)
            if number % BATCH == BATCH - 1:
                self.checks.alive(self.stored)
        self.checks.alive(self.stored)
        self.assertGreater(self.collector.stats()["dropped"]["traces"], 0, "the cap was never met")

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
        for number in range(GRPC_CASES):
            body = protobuf_body(rng)
            try:
                answer = export(body, timeout=30)
            except grpc.RpcError as error:
                self.assertIn(error.code(), GRPC_REFUSALS, f"{error.details()} for {body[:80]!r}")
            else:
                rejected = ExportTraceServiceResponse.FromString(answer).partial_success
                self.assertEqual(rejected.rejected_spans, 0, rejected.error_message)
                self.account(spans_in, body, "")
            if number % BATCH == BATCH - 1:
                self.checks.alive(self.stored)
        self.checks.alive(self.stored)
        self.assertGreater(self.collector.stats()["dropped"]["traces"], 0, "the cap was never met")


if __name__ == "__main__":
    unittest.main()
