"""What arrived, taken out: OTLP/JSON documents, dumps, replay into another collector, and
the span documents written from the protobuf."""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import unittest
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, LogsData, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData

from mocksup.otlp import MockOTLPCollector, ReplayError, _encode, replay
from mocksup.otlp._answers import _Index, _items_text
from mocksup.otlp._encode import item_columns
from mocksup.otlp._query import items_from_protobuf
from mocksup.otlp._signals import Signal
from tests.otlp.support import CollectorTestCase, Pipelines, post
from tests.otlp.test_json import LOGS, METRICS, TRACES
from tests.support import ProcessTestCase

_IDS = {"traceId", "spanId", "parentSpanId"}


def reference_otlp_json(message: Any) -> dict[str, Any]:
    """OTLP/JSON by protobuf's own proto3 JSON printer, ids turned from base64 to hex."""
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    return _hex_ids(doc)


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: base64.b64decode(v).hex() if k in _IDS else _hex_ids(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value


class OTLPJSONTest(CollectorTestCase):
    def setUp(self) -> None:
        super().setUp()
        for path, message in (("/v1/traces", TRACES), ("/v1/metrics", METRICS), ("/v1/logs", LOGS)):
            self.assertEqual(post(self.collector, path, message.SerializeToString())[0], 200)

    def test_documents_are_what_the_proto3_json_printer_writes_with_hex_ids(self) -> None:
        for signal, message, data in (
            ("traces", TRACES, TracesData),
            ("metrics", METRICS, MetricsData),
            ("logs", LOGS, LogsData),
        ):
            with self.subTest(signal):
                document = self.collector.otlp_json(signal)  # type: ignore[arg-type]
                expected = reference_otlp_json(data.FromString(message.SerializeToString()))
                self.assertEqual(document, expected)

    def test_the_shape_people_rely_on(self) -> None:
        (resource_spans,) = self.collector.otlp_json("traces")["resourceSpans"]
        span = resource_spans["scopeSpans"][0]["spans"][0]
        self.assertEqual(span["traceId"], bytes(range(1, 17)).hex())
        self.assertEqual(span["kind"], 3)  # an integer, never "SPAN_KIND_CLIENT"
        self.assertEqual(span["startTimeUnixNano"], str(2**63 + 5))  # int64 as a string
        self.assertEqual(span["status"], {"code": 2, "message": "m"})
        resource = {a["key"]: a.get("value") for a in resource_spans["resource"]["attributes"]}
        self.assertEqual(resource["s"], {"stringValue": "x"})
        self.assertEqual(resource["bytes"], {"bytesValue": "AP8="})
        self.assertEqual(resource_spans["schemaUrl"], "https://schema")
        (metrics,) = self.collector.otlp_json("metrics", name="g")["resourceMetrics"]
        (gauge,) = metrics["scopeMetrics"][0]["metrics"]
        self.assertEqual(gauge["gauge"]["dataPoints"][0]["asDouble"], "Infinity")

    def test_filters_are_the_query_methods_own(self) -> None:
        document = self.collector.otlp_json("traces", name="no ids")
        (resource_spans,) = document["resourceSpans"]
        self.assertEqual([s["name"] for s in resource_spans["scopeSpans"][0]["spans"]], ["no ids"])
        self.assertEqual(
            self.collector.otlp_json("logs", service_name="other"), {"resourceLogs": []}
        )
        with self.assertRaises(TypeError):
            self.collector.otlp_json("metrics", kind="SERVER")
        with self.assertRaises(ValueError):
            self.collector.otlp_json("profiles")  # type: ignore[arg-type]


class DumpTest(ProcessTestCase):
    """Export from one collector, replay into another: the same items, field for field."""

    def setUp(self) -> None:
        super().setUp()
        self.source = self.start_server(MockOTLPCollector(port=0, grpc_port=0))
        self.target = self.start_server(MockOTLPCollector(port=0, grpc_port=None))
        for transport in ("http", "grpc"):
            sdk = Pipelines(self, self.source, transport, service=f"dump-{transport}")
            tracer = sdk.tracer
            with (
                tracer.start_as_current_span("parent", attributes={"a": 'ünïcödé "q"'}),
                tracer.start_as_current_span("child") as child,
            ):
                child.add_event("ev", {"n": 1})
            sdk.meter.create_counter("count").add(3, {"route": "/x"})
            sdk.meter.create_histogram("latency").record(0.5)
            sdk.flush_metrics()
            sdk.logger.emit(body={"structured": [1, 2]}, event_name="ev")
        self.source.wait_for_spans(count=4)
        self.source.wait_for_logs(count=2)
        self.source.wait_for_metrics(count=4)

    def assert_same_items(self, a: MockOTLPCollector, b: MockOTLPCollector) -> None:
        for query in ("spans", "metrics", "logs"):
            left, right = getattr(a, query)(), getattr(b, query)()
            self.assertEqual(len(left), len(right))
            for x, y in zip(left, right, strict=True):
                self.assertEqual(x.to_protobuf(), y.to_protobuf())
                self.assertEqual((x.resource, x.scope), (y.resource, y.scope))

    def test_the_dump_is_otlp_json_lines_in_arrival_order(self) -> None:
        out = io.BytesIO()
        lines = self.source.export(out)
        text = out.getvalue().decode("utf-8")
        self.assertTrue(text.endswith("\n"))
        documents = [json.loads(line) for line in text.splitlines()]
        self.assertEqual(lines, len(documents))
        records = [r for r in self.source.requests() if r.items]
        self.assertEqual(len(documents), len(records))
        keys = {"traces": "resourceSpans", "metrics": "resourceMetrics", "logs": "resourceLogs"}
        # One object per stored request, in the order the requests came, signals mixed.
        self.assertEqual([list(d) for d in documents], [[keys[r.signal or ""]] for r in records])
        self.assertIn("ünïcödé", text)  # UTF-8, as the file format says
        spans_only = io.BytesIO()
        self.source.export(spans_only, signals=["traces"])
        self.assertEqual(
            {next(iter(json.loads(line))) for line in spans_only.getvalue().splitlines()},
            {"resourceSpans"},
        )

    def test_replay_round_trips_field_for_field(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "dump.jsonl")
            lines = self.source.export(path)
            for encoding in ("protobuf", "json"):
                with self.subTest(encoding):
                    self.target.clear()
                    self.assertEqual(
                        replay(path, self.target.http_endpoint, encoding=encoding), lines
                    )  # type: ignore[arg-type]
                    self.assert_same_items(self.source, self.target)
                    self.assertEqual(self.target.stats()["items"], self.source.stats()["items"])
            self.target.clear()
            self.assertEqual(self.target.load(path), lines)
            self.assert_same_items(self.source, self.target)

    def test_replay_stops_at_a_refused_line_and_names_it(self) -> None:
        out = io.BytesIO()
        self.source.export(out)
        self.target.fail_next(1, status=400, signal="metrics")
        first_metrics = 1 + next(
            i for i, line in enumerate(out.getvalue().splitlines()) if b"resourceMetrics" in line
        )
        out.seek(0)
        with self.assertRaises(ReplayError) as caught:
            replay(out, self.target.http_endpoint)
        self.assertEqual((caught.exception.line, caught.exception.status), (first_metrics, 400))
        self.assertIn(f"line {first_metrics}", str(caught.exception))

    def test_unreadable_lines(self) -> None:
        for text, line in (
            ('{"resourceSpans": []}\nnot json\n', 2),
            ('\n{"unknown": 1}\n', 2),
            ("[1]\n", 1),
        ):
            with self.subTest(text):
                with self.assertRaises(ReplayError) as caught:
                    replay(io.StringIO(text), self.target.http_endpoint)
                self.assertEqual(caught.exception.line, line)


class SpanDocumentTest(unittest.TestCase):
    """The span documents written from the protobuf say what ``Span.to_json`` says."""

    def documents(self, request: ExportTraceServiceRequest) -> tuple[list[Any], bool]:
        return _written("traces", request.SerializeToString())

    def expected(self, request: ExportTraceServiceRequest) -> list[Any]:
        return _as_items("traces", request.SerializeToString())

    def check(self, request: ExportTraceServiceRequest, *, columns: bool = True) -> None:
        documents, used = self.documents(request)
        self.assertEqual(used, columns)
        self.assertEqual(documents, self.expected(request))

    def test_plain_and_mixed_spans(self) -> None:
        self.check(TRACES)  # every value type, events, links, an unknown-free request
        plain = [
            Span(name=f"s{i}", trace_id=bytes([i + 1] * 16), span_id=bytes([i + 1] * 8), kind=2,
                 attributes=[KeyValue(key=f"k{j}", value=AnyValue(string_value=f"v{i}{j}"))
                             for j in range(i % 4)])
            for i in range(9)
        ]  # fmt: skip
        plain[4].attributes.append(KeyValue(key='quote"d\\', value=AnyValue(string_value='a\n"b')))
        plain[5].attributes.append(KeyValue(key="", value=AnyValue(string_value="no key")))
        plain[6].attributes.append(KeyValue(key="no value"))
        plain[7].attributes.append(KeyValue(key="i", value=AnyValue(int_value=7)))
        plain[8].attributes.append(KeyValue(key="empty", value=AnyValue(string_value="")))
        self.check(_request(plain))
        self.check(_request([Span(name="x", kind=9)]))  # an enum value no one knows

    def test_spans_with_the_same_keys(self) -> None:
        # One template for all (its keys written in): keys that look like its own syntax.
        keys = ["http.method", 'quo"te\\', "per%cent", "%s", "%%", "ключ"]
        values = ["GET", "%d %s %%", "", 'a\n"b', "\u2028", "\x00"]

        def span(i: int, order: list[int]) -> Span:
            kvs = [KeyValue(key=keys[j], value=AnyValue(string_value=f"{values[j]}{i}"))
                   for j in order]  # fmt: skip
            return Span(name=f"s{i}", trace_id=bytes([i + 1] * 16), attributes=kvs)

        in_order = list(range(len(keys)))
        _encode._TEMPLATES.clear()
        self.check(_request([span(i, in_order) for i in range(5)]))
        self.assertEqual([keys for _, keys in _encode._TEMPLATES], [tuple(keys)])
        _encode._TEMPLATES.clear()
        for spans in (
            [span(0, in_order), span(1, in_order[::-1]), span(2, in_order)],  # another order
            [span(0, in_order), span(1, in_order[:-1])],  # one fewer
            [span(0, in_order), span(1, [0, 0, 2, 3, 4, 5])],  # a key twice, one missing
        ):
            self.check(_request(spans))
        self.assertEqual(_encode._TEMPLATES, {})
        self.check(_request([Span(name=f"bare{i}") for i in range(3)]))  # no attributes
        self.assertEqual([keys for _, keys in _encode._TEMPLATES], [()])

    def test_long_keys_are_written_but_not_kept(self) -> None:
        # A client's keys must not make the caches hold what it sent (megabytes of keys).
        long = [f"{i}" * 3000 for i in range(3)]
        kvs = [KeyValue(key=k, value=AnyValue(string_value="v")) for k in long]
        _encode._TEMPLATES.clear()
        _encode._KEYS.clear()
        self.check(_request([Span(name=f"s{i}", attributes=kvs) for i in range(2)]))
        self.check(_request([Span(name="mixed", attributes=[kvs[0], kvs[0]]), Span()]))
        extra = KeyValue(key=long[1], value=AnyValue(int_value=1))  # not a string: by KeyValue
        self.check(_request([Span(name="by one", attributes=[extra])]), columns=True)
        self.assertEqual((_encode._TEMPLATES, _encode._KEYS), ({}, {}))

    def test_misaligned_columns_are_not_used(self) -> None:
        # A key without a value and a value without a key: as many keys as string values,
        # but they do not pair up; the counts per span must catch it.
        span = Span(name="x", attributes=[KeyValue(key="a"),
                                          KeyValue(value=AnyValue(string_value="b"))])  # fmt: skip
        self.check(_request([span]))

    def test_a_field_sent_twice_is_read_as_protobuf_reads_it(self) -> None:
        # Two keys in one KeyValue (the last wins) and none in the next: same totals.
        kv = b"\x0a\x01a\x0a\x01b\x12\x03\x0a\x01x"
        no_key = b"\x12\x03\x0a\x01y"
        span = (
            b"\x2a\x01s" + b"\x4a" + bytes([len(kv)]) + kv + b"\x4a" + bytes([len(no_key)]) + no_key
        )
        raw = _frame(1, _frame(2, _frame(2, span)))
        request = ExportTraceServiceRequest.FromString(raw)
        documents, used = _written("traces", raw)
        self.assertFalse(used)
        self.assertEqual(documents[0]["attributes"], {"b": "x", "": "y"})
        self.assertEqual(documents, self.expected(request))


class LogDocumentTest(unittest.TestCase):
    """The log documents written from the protobuf say what ``LogRecord.to_json`` says."""

    def check(self, raw: bytes, *, columns: bool = True) -> list[Any]:
        documents, used = _written("logs", raw)
        self.assertEqual(used, columns)
        self.assertEqual(documents, _as_items("logs", raw))
        return documents

    def test_every_value_type(self) -> None:
        self.check(LOGS.SerializeToString())  # a kvlist body, attributes of every type

    def test_records_of_one_kind(self) -> None:
        keys = ["code.function", 'quo"te\\', "per%cent", "%d", "ключ"]

        def record(i: int, body: str) -> LogRecord:
            kvs = [KeyValue(key=k, value=AnyValue(string_value=f"v{i}%s{j}"))
                   for j, k in enumerate(keys)]  # fmt: skip
            return LogRecord(time_unix_nano=i + 1, severity_number=9, severity_text="INFO",
                             body=AnyValue(string_value=body), attributes=kvs,
                             trace_id=bytes([i + 1] * 16), span_id=bytes([i + 1] * 8))  # fmt: skip

        _encode._TEMPLATES.clear()
        bodies = ["plain", "", 'a\n"b"', "%s %d %%", "\u2028\x00"]
        documents = self.check(_logs([record(i, body) for i, body in enumerate(bodies)]))
        self.assertEqual([d["body"] for d in documents], bodies)
        self.assertEqual([keys for _, keys in _encode._TEMPLATES], [tuple(keys)])

    def test_bodies_of_other_types_and_none(self) -> None:
        bodies = [
            AnyValue(string_value="text"),
            AnyValue(int_value=-7),
            AnyValue(double_value=float("nan")),
            AnyValue(bytes_value=b"\x00\xff"),
            AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="in an array")])),
            None,
        ]
        kv = KeyValue(key="k", value=AnyValue(string_value="v"))
        records = [
            LogRecord(body=body, attributes=[kv]) if body is not None else LogRecord(flags=1)
            for body in bodies
        ]
        documents = self.check(_logs(records))
        self.assertEqual(documents[1]["body"], -7)
        self.assertEqual(documents[5]["body"], None)

    def test_a_body_sent_twice_is_read_as_protobuf_reads_it(self) -> None:
        # The same record field twice (the parser merges them: the last string wins), so
        # the body column would hold two strings for one record: not used.
        once = LogRecord(body=AnyValue(string_value="first")).SerializeToString()
        twice = once + LogRecord(body=AnyValue(string_value="second")).SerializeToString()
        other = LogRecord(severity_text="other").SerializeToString()
        raw = _frame(1, _frame(2, _frame(2, twice) + _frame(2, other)))
        documents = self.check(raw, columns=False)
        self.assertEqual([d["body"] for d in documents], ["second", None])


class MetricDocumentTest(unittest.TestCase):
    """The metric documents written from the protobuf say what ``Metric.to_json`` says."""

    def check(self, raw: bytes) -> list[Any]:
        documents, _ = _written("metrics", raw)
        self.assertEqual(documents, _as_items("metrics", raw))
        return documents

    def test_every_type(self) -> None:
        documents = self.check(METRICS.SerializeToString())
        types = ["gauge", "sum", "histogram", "exponential_histogram", "summary"]
        self.assertEqual([d["type"] for d in documents], types)

    def test_number_points(self) -> None:
        kv = [KeyValue(key="k%s", value=AnyValue(string_value='"v"')),
              KeyValue(key="n", value=AnyValue(double_value=float("-inf")))]  # fmt: skip
        points = [
            NumberDataPoint(as_int=-(2**63), attributes=kv, start_time_unix_nano=1),
            NumberDataPoint(as_double=0.1, time_unix_nano=2**64 - 1),
            NumberDataPoint(as_double=float("nan")),
            NumberDataPoint(as_double=-0.0),
            NumberDataPoint(),  # no value
        ]
        metrics = [
            Metric(name="gauge", description="d", unit="ms", gauge=Gauge(data_points=points)),
            Metric(name="counter", sum=Sum(data_points=points[:1], aggregation_temporality=1)),
            Metric(name="up-down", sum=Sum(data_points=[], is_monotonic=True)),
            Metric(name="no data", metadata=kv),
        ]
        documents = self.check(
            MetricsData(
                resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=metrics)])]
            ).SerializeToString()
        )
        self.assertEqual([p["value"] for p in documents[0]["data_points"]],
                         [-(2**63), 0.1, "NaN", -0.0, None])  # fmt: skip
        self.assertEqual(documents[3]["type"], None)


class ManyScopesTest(CollectorTestCase):
    """``GET`` over requests of several resources and scopes, each scope's items of one
    kind with keys of their own: each item's document, resource and scope as in Python."""

    def test_spans_and_logs(self) -> None:
        from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource

        def kvs(tag: str, i: int) -> list[KeyValue]:
            return [KeyValue(key=f"{tag}.{k}", value=AnyValue(string_value=f"{tag}{i}{k}"))
                    for k in ("a", "b", "c")]  # fmt: skip

        def resource(name: str) -> Resource:
            return Resource(attributes=[KeyValue(key="service.name",
                                                 value=AnyValue(string_value=name))])  # fmt: skip

        scopes = [("r1", "s1"), ("r1", "s2"), ("r2", "s1"), ("r2", "s3")]
        traces = TracesData(resource_spans=[
            ResourceSpans(resource=resource(r), scope_spans=[
                ScopeSpans(scope=InstrumentationScope(name=s),
                           spans=[Span(name=f"{r}{s}{i}", trace_id=bytes([i + 1] * 16),
                                       span_id=bytes([i + 1] * 8), attributes=kvs(r + s, i))
                                  for i in range(3)])
                for rr, s in scopes if rr == r])
            for r in ("r1", "r2")])  # fmt: skip
        logs = LogsData(resource_logs=[
            ResourceLogs(resource=resource(r), scope_logs=[
                ScopeLogs(scope=InstrumentationScope(name=s),
                          log_records=[LogRecord(body=AnyValue(string_value=f"{r}{s}{i}"),
                                                 attributes=kvs(r + s, i))
                                       for i in range(3)])
                for rr, s in scopes if rr == r])
            for r in ("r1", "r2")])  # fmt: skip
        self.assertEqual(post(self.collector, "/v1/traces", traces.SerializeToString())[0], 200)
        self.assertEqual(post(self.collector, "/v1/logs", logs.SerializeToString())[0], 200)
        for route, items in (("/spans", self.collector.spans()), ("/logs", self.collector.logs())):
            with self.subTest(route):
                doc = self.collector.control.call("GET", route)
                self.assertEqual(len(items), 12)
                for item_doc, item in zip(doc[route.strip("/")], items, strict=True):
                    resource_doc = doc["resources"][item_doc["resource"]]
                    scope_doc = doc["scopes"][item_doc["scope"]]
                    self.assertEqual(
                        {k: v for k, v in item_doc.items() if k not in ("resource", "scope")},
                        json.loads(json.dumps(item.to_json())),
                    )
                    self.assertEqual(
                        resource_doc["attributes"]["service.name"], item.resource.service_name
                    )
                    self.assertEqual(scope_doc["name"], item.scope.name)
                    tag = f"{item.resource.service_name}{item.scope.name}"
                    self.assertEqual(list(item_doc["attributes"]), [f"{tag}.{k}" for k in "abc"])


def _as_items(signal: Signal, raw: bytes) -> list[Any]:
    """What the items' ``to_json`` say of a serialised ``*Data`` (resource 0, scope 0)."""
    items = items_from_protobuf(signal, raw)
    return [json.loads(json.dumps({**x.to_json(), "resource": 0, "scope": 0})) for x in items]


def _written(signal: Signal, raw: bytes) -> tuple[list[Any], bool]:
    """The documents the control API writes for a serialised ``*Data`` of one resource and
    one scope, and whether they came from the columns."""
    message = {"traces": TracesData, "metrics": MetricsData, "logs": LogsData}[signal].FromString(
        raw
    )
    used = signal != "metrics" and item_columns(signal, raw, message) is not None
    return [json.loads(text) for text in _items_text(signal, raw, _Index())], used


def _logs(records: list[LogRecord]) -> bytes:
    return LogsData(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    ).SerializeToString()


def _request(spans: list[Span]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )


def _frame(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


class CrashedCollectorTest(ProcessTestCase):
    def test_an_export_from_a_dead_collector_says_it_crashed(self) -> None:
        import signal

        from mocksup import ChildCrashedError

        collector = self.start_server(MockOTLPCollector(port=0, grpc_port=None))
        assert collector.pid is not None
        os.kill(collector.pid, signal.SIGKILL)
        with self.assertRaises(ChildCrashedError) as caught:
            collector.export(io.BytesIO())
        self.assertEqual(caught.exception.returncode, -signal.SIGKILL)
