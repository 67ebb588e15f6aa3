"""Text renderings (pure functions of the items) and the data-point count of stats()."""

from __future__ import annotations

import unittest

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from mocksup.otlp import Trace, render, render_trace
from mocksup.otlp._query import items_from_protobuf
from mocksup.otlp.render import format_duration
from tests.otlp.support import CollectorTestCase, Pipelines
from tests.otlp.test_json import LOGS, METRICS

T0 = 1_700_000_000_000_000_000
TRACE = bytes(range(1, 17))


def span(name: str, number: int, parent: int = 0, start: int = 0, ms: float = 1.0,
         **fields: object) -> Span:  # fmt: skip
    """A span of TRACE with span id ``number``, starting ``start`` ms after T0."""
    return Span(
        trace_id=TRACE, span_id=bytes([number] * 8),
        parent_span_id=bytes([parent] * 8) if parent else b"", name=name,
        start_time_unix_nano=T0 + start * 1_000_000,
        end_time_unix_nano=T0 + int((start + ms) * 1_000_000), **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def spans_of(*spans: Span, service: str = "shop") -> list[object]:
    resource = Resource(attributes=[KeyValue(key="service.name",
                                             value=AnyValue(string_value=service))])  # fmt: skip
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource, scope_spans=[ScopeSpans(scope=InstrumentationScope(name="lib"),
                                                   spans=list(spans))])])  # fmt: skip
    return items_from_protobuf("traces", request.SerializeToString())


class RenderTest(unittest.TestCase):
    def test_a_span_in_one_line(self) -> None:
        (item,) = spans_of(
            span(
                "GET /cart",
                2,
                parent=1,
                ms=12.5,
                kind=Span.SPAN_KIND_SERVER,
                attributes=[
                    KeyValue(key="http.route", value=AnyValue(string_value="/cart")),
                    KeyValue(key="n", value=AnyValue(int_value=3)),
                ],
            )
        )
        self.assertEqual(
            render(item),  # type: ignore[arg-type]
            f"span shop 'GET /cart' SERVER UNSET 12.5 ms trace={TRACE.hex()} "
            f"span={'02' * 8} parent={'01' * 8} http.route=/cart n=3",
        )

    def test_metrics_and_logs_in_one_line(self) -> None:
        metrics = items_from_protobuf("metrics", METRICS.SerializeToString())
        lines = [render(m) for m in metrics]
        self.assertEqual(lines[0], "metric - 'g' gauge 1 point(s): inf")
        self.assertTrue(lines[1].startswith("metric - 's' sum unit=1 1 point(s): -3 {s=x b=True"))
        self.assertEqual(lines[2], "metric - 'h' histogram 1 point(s): count=3 sum=1.5")
        (log,) = items_from_protobuf("logs", LOGS.SerializeToString())
        self.assertTrue(render(log).startswith("log - W {'s': 'x'"))
        self.assertIn(
            f" event=ev trace={TRACE.hex()} span={bytes(range(1, 9)).hex()} ", render(log)
        )
        for item in [*metrics, log]:
            self.assertNotIn("\n", render(item))

    def test_detailed_has_every_field_on_its_own_line(self) -> None:
        (item,) = spans_of(span("op", 2, ms=2, status=Status(code=2, message="boom")))
        text = render(item, "detailed")  # type: ignore[arg-type]
        lines = text.splitlines()
        self.assertEqual(lines[0], "Span 'op'")
        self.assertIn(f"    Trace ID       : {TRACE.hex()}", lines)
        self.assertIn("    Status code    : ERROR", lines)
        self.assertIn("    Status message : boom", lines)
        self.assertIn("    Duration       : 2.0 ms", lines)
        self.assertIn("    Start time     : 2023-11-14 22:13:20.000000 UTC", lines)
        self.assertIn("    Resource       : service.name=shop", lines)
        (log,) = items_from_protobuf("logs", LOGS.SerializeToString())
        self.assertIn("    Severity       : W (13)", render(log, "detailed").splitlines())
        with self.assertRaises(ValueError):
            render(log, "verbose")  # type: ignore[arg-type]

    def test_durations(self) -> None:
        self.assertEqual(
            [format_duration(n) for n in (850, 12_500, 3_200_000, 1_250_000_000)],
            ["850 ns", "12.5 µs", "3.2 ms", "1.25 s"],
        )


class TraceTreeTest(unittest.TestCase):
    def test_an_indented_tree_with_durations_and_offsets(self) -> None:
        items = spans_of(
            span("GET /cart", 1, ms=120, kind=Span.SPAN_KIND_SERVER),
            span("load cart", 2, parent=1, start=2, ms=30),
            span("SELECT", 3, parent=2, start=5, ms=20, kind=Span.SPAN_KIND_CLIENT),
            span("charge", 4, parent=1, start=40, ms=50, status=Status(code=2)),
            span("late child", 5, parent=9, start=100, ms=5),
        )
        trace = Trace.from_spans(TRACE.hex(), items)  # type: ignore[arg-type]
        self.assertEqual(
            render_trace(trace).splitlines(),
            [
                f"trace {TRACE.hex()}: 5 span(s), 120.0 ms",
                "GET /cart (shop, SERVER) 120.0 ms at +0 ns",
                "├── load cart (shop, UNSPECIFIED) 30.0 ms at +2.0 ms",
                "│   └── SELECT (shop, CLIENT) 20.0 ms at +5.0 ms",
                "└── charge (shop, UNSPECIFIED) 50.0 ms at +40.0 ms ERROR",
                f"(parent {'09' * 8} did not arrive)",
                "└── late child (shop, UNSPECIFIED) 5.0 ms at +100.0 ms",
            ],
        )

    def test_loops_and_deep_chains(self) -> None:
        looped = spans_of(span("a", 1, parent=2), span("b", 2, parent=1))
        text = render_trace(Trace.from_spans(TRACE.hex(), looped))  # type: ignore[arg-type]
        self.assertEqual(text.splitlines()[1], "(spans in a parent loop)")
        chain = [Span(trace_id=TRACE, span_id=(i + 1).to_bytes(8, "big"),
                      parent_span_id=i.to_bytes(8, "big") if i else b"", name=f"n{i}")
                 for i in range(3000)]  # fmt: skip
        text = render_trace(Trace.from_spans(TRACE.hex(), spans_of(*chain)))  # type: ignore[arg-type]
        self.assertEqual(len(text.splitlines()), 3001)
        self.assertTrue(text.splitlines()[-1].lstrip().startswith("└── n2999"))


class MetricPointsTest(CollectorTestCase):
    def test_stats_count_data_points_and_metrics_apart(self) -> None:
        sdk = Pipelines(self, self.collector, "grpc", service="points")
        counter = sdk.meter.create_counter("hits")
        for route in ("/a", "/b", "/c"):
            counter.add(1, {"route": route})
        sdk.flush_metrics()
        self.collector.wait_for_metrics("hits")
        stats = self.collector.stats()
        self.assertEqual((stats["items"]["metrics"], stats["metric_points"]), (1, 3))
        self.assertIn("3 metric points", self.collector.summary())
