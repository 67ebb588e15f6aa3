"""Limits that keep the child's memory bounded, and values that must come back as valid JSON.

Each limit answers the client with a message naming the setting and keeps nothing big of the
refused request. Small limits here keep the tests fast; the defaults' figures (peak RSS for
the amplification cases) are in the docs, from ``benchmarks/bench_otlp.py --amplification``.
"""

from __future__ import annotations

import json
import math
import sys
import unittest

import grpc
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.otlp.support import CollectorTestCase, grpc_call, post
from tests.otlp.test_compat import traces
from tests.otlp.test_http_input import request_bytes


def empty_spans(count: int) -> bytes:
    """A traces request of ``count`` empty spans: 2 bytes each on the wire."""
    scope = b"\x12\x00" * count  # ScopeSpans: field 2 (spans), each empty
    return _field(1, _field(2, scope))  # request.resource_spans[0].scope_spans[0]


def _field(number: int, payload: bytes) -> bytes:
    size = len(payload)
    length = bytearray()
    while size > 0x7F:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return bytes([number << 3 | 2]) + bytes(length) + payload


class StructureLimitTest(CollectorTestCase):
    collector_settings = {"max_request_objects": 1000}

    def test_protobuf_messages(self) -> None:
        for label, body in (
            ("empty spans", empty_spans(1500)),
            ("empty attributes", traces(Span(attributes=[KeyValue()] * 1500))),
        ):
            with self.subTest(label):
                status, _, answer = post(self.collector, "/v1/traces", body)
                self.assertEqual(status, 400)
                message = status_pb2.Status.FromString(answer).message
                self.assertIn("max_request_objects", message)
                _, error = grpc_call(self.collector.grpc_endpoint or "", body)
                assert error is not None
                self.assertEqual(error.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("max_request_objects", error.details())
        # Within the limit, the same shapes are fine.
        self.assertEqual(post(self.collector, "/v1/traces", empty_spans(900))[0], 200)
        self.assertEqual(self.collector.stats()["items"]["traces"], 900)

    def test_json_objects(self) -> None:
        def attributes(count: int) -> bytes:
            # Objects that are not resources, scopes or items: only the JSON count sees them.
            values = ",".join(['{"key": "a"}'] * count)
            span = '{"attributes":[' + values + "]}"
            return ('{"resourceSpans":[{"scopeSpans":[{"spans":[' + span + "]}]}]}").encode()

        status, _, answer = post(
            self.collector, "/v1/traces", attributes(1500), content_type="application/json"
        )
        self.assertEqual(status, 400)
        self.assertIn("max_request_objects", json.loads(answer)["message"])
        self.assertEqual(self.collector.spans(), [])
        # A body too short to hold that many is not even counted.
        few = attributes(120)
        self.assertLess(len(few), 2000)
        status, _, _ = post(self.collector, "/v1/traces", few, content_type="application/json")
        self.assertEqual(status, 200)


class SpecStructureLimitTest(CollectorTestCase):
    collector_settings = {"max_request_objects": 1000, "compat": "spec"}

    def test_answered_413(self) -> None:
        self.assertEqual(post(self.collector, "/v1/traces", empty_spans(1500))[0], 413)


class StoreBudgetTest(CollectorTestCase):
    collector_settings = {"max_stored_bytes": 4000, "grpc_port": None}

    def test_items_past_the_budget_are_dropped(self) -> None:
        body = request_bytes("kb", 20)  # 20 spans of about 45 bytes
        sent = 0
        for _ in range(6):
            self.assertEqual(post(self.collector, "/v1/traces", body)[0], 200)
            sent += 20
        stats = self.collector.stats()
        self.assertLessEqual(stats["stored_bytes"], 4000)
        self.assertGreater(stats["stored_bytes"], 3000)
        self.assertEqual(stats["items"]["traces"] + stats["dropped"]["traces"], sent)
        self.assertGreater(stats["dropped"]["traces"], 0)
        kept = self.collector.spans()
        self.assertEqual(len(kept), stats["items"]["traces"])
        self.assertEqual(
            sum(r.dropped for r in self.collector.requests()), stats["dropped"]["traces"]
        )
        # The request at the edge kept what fitted, in order.
        edge = [r for r in self.collector.requests() if 0 < r.dropped < 20]
        self.assertEqual(len(edge), 1)


class RecordsTest(CollectorTestCase):
    def test_records_keep_bounded_text(self) -> None:
        headers = {f"x-big-{i}": "v" * 5000 for i in range(10)}  # 50 KB of headers
        self.assertEqual(
            post(self.collector, "/v1/traces", request_bytes(), headers=headers)[0], 200
        )
        self.assertEqual(post(self.collector, "/x" * 5000, b"")[0], 404)
        bad = json.dumps(
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "kind": "x" * 10**6}]}]}]}
        )
        status, _, answer = post(
            self.collector, "/v1/traces", bad.encode(), content_type="application/json"
        )
        self.assertEqual(status, 400)
        self.assertLess(len(answer), 2000)
        first, second, third = self.collector.requests()
        self.assertLess(sum(len(k) + len(v) for k, v in first.headers.items()), 9 * 1024)
        self.assertIn("more header(s) not kept", first.headers.get("...", ""))
        self.assertLess(len(second.path), 1200)
        self.assertLess(len(third.error or ""), 1200)


class ValuesTest(CollectorTestCase):
    def test_nan_and_infinities_are_valid_json(self) -> None:
        values = [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)]
        span = Span(
            name="odd",
            attributes=[KeyValue(key=k, value=AnyValue(double_value=v)) for k, v in values],
        )
        self.assertEqual(post(self.collector, "/v1/traces", traces(span))[0], 200)
        metrics = ExportMetricsServiceRequest(
            resource_metrics=[
                ResourceMetrics(
                    scope_metrics=[
                        ScopeMetrics(
                            metrics=[
                                Metric(
                                    name="g",
                                    gauge=Gauge(data_points=[NumberDataPoint(as_double=math.inf)]),
                                )
                            ]
                        )
                    ]
                )
            ]
        ).SerializeToString()
        self.assertEqual(post(self.collector, "/v1/metrics", metrics)[0], 200)
        strict = json.JSONDecoder(parse_constant=_refuse)  # as Go, JavaScript and jq read JSON
        _, _, body = post(self.collector, "/mocksup/spans", b"", method="GET")
        (doc,) = strict.decode(body.decode())["spans"]
        self.assertEqual(doc["attributes"], {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"})
        _, _, body = post(self.collector, "/mocksup/metrics", b"", method="GET")
        (metric,) = strict.decode(body.decode())["metrics"]
        self.assertEqual(metric["data_points"][0]["value"], "Infinity")
        # The Python items keep the float.
        (item,) = self.collector.spans("odd")
        self.assertTrue(math.isnan(item.attributes["nan"]))

    def test_unknown_span_kind_and_status_stay_numbers(self) -> None:
        spans = [
            Span(name="minus", kind=-1, status=Status(code=-1)),
            Span(name="seven", kind=7, status=Status(code=7)),
        ]  # type: ignore[arg-type]
        self.assertEqual(post(self.collector, "/v1/traces", traces(*spans))[0], 200)
        by_name = {s.name: s for s in self.collector.spans()}
        self.assertEqual((by_name["minus"].kind, by_name["minus"].status_code), (-1, -1))
        self.assertEqual((by_name["seven"].kind, by_name["seven"].status_code), (7, 7))
        self.assertEqual([s.name for s in self.collector.spans(kind=-1)], ["minus"])
        self.assertEqual([s.name for s in self.collector.spans(kind="CONSUMER")], [])
        doc = self.collector.control.call("GET", "/spans", params={"name": "seven"})
        self.assertEqual((doc["spans"][0]["kind"], doc["spans"][0]["status"]["code"]), (7, 7))


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


@unittest.skipUnless(sys.platform.startswith("linux"), "peak RSS from /proc")
class AmplificationTest(CollectorTestCase):
    """At the default limits, hostile bodies within the size limit stay far from 600 MiB."""

    def test_peak_rss(self) -> None:
        import gzip

        json_bomb = gzip.compress(b'{"resourceSpans":[' + b"{}," * (6 << 20) + b"{}]}")
        status, _, _ = post(
            self.collector,
            "/v1/traces",
            json_bomb,
            content_type="application/json",
            headers={"Content-Encoding": "gzip"},
        )
        self.assertEqual(status, 400)
        self.assertEqual(post(self.collector, "/v1/traces", empty_spans(9 << 20))[0], 400)
        self.assertLess(_peak_rss(self.collector.pid or 0), 600 << 20)


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
