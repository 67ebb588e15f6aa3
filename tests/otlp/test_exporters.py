"""The real OpenTelemetry Python exporters against the collector in its child process."""

from __future__ import annotations

from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.otlp.support import CollectorTestCase, Pipelines


class ExportersTest(CollectorTestCase):
    """Every signal, both transports, with and without gzip: what was sent comes back."""

    def check_all_signals(self, transport: str, gzip: bool) -> None:
        service = f"svc-{transport}-{'gzip' if gzip else 'plain'}"
        sdk = Pipelines(self, self.collector, transport, gzip=gzip, service=service)
        with (
            sdk.tracer.start_as_current_span(
                "parent", kind=SpanKind.SERVER, attributes={"http.route": "/x", "n": 3}
            ) as parent,
            sdk.tracer.start_as_current_span("child", attributes={"ok": True}) as child,
        ):
            child.set_status(Status(StatusCode.ERROR, "boom"))
            child.add_event("retry", {"attempt": 2})
        counter = sdk.meter.create_counter("requests", unit="1", description="reqs")
        counter.add(5, {"route": "/x"})
        histogram = sdk.meter.create_histogram("latency", unit="s")
        histogram.record(0.25, {"route": "/x"})
        sdk.flush_metrics()
        sdk.logger.emit(
            body="hello",
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"k": "v"},
            event_name="greeting",
        )

        spans = self.collector.wait_for_spans(count=2, service_name=service, timeout=10)
        by_name = {s.name: s for s in spans}
        ctx = parent.get_span_context()
        self.assertEqual(by_name["parent"].trace_id, f"{ctx.trace_id:032x}")
        self.assertEqual(by_name["parent"].span_id, f"{ctx.span_id:016x}")
        self.assertEqual(by_name["parent"].kind, "SERVER")
        self.assertEqual(by_name["parent"].attributes, {"http.route": "/x", "n": 3})
        self.assertEqual(by_name["child"].parent_span_id, f"{ctx.span_id:016x}")
        self.assertEqual(by_name["child"].status_code, "ERROR")
        self.assertEqual(by_name["child"].status_message, "boom")
        self.assertEqual(by_name["child"].events[0].attributes, {"attempt": 2})
        self.assertEqual(by_name["child"].resource.service_name, service)
        self.assertEqual(by_name["child"].scope.name, "tests.otlp")
        self.assertEqual(by_name["child"].scope.version, "1.0")

        metrics = self.collector.wait_for_metrics(count=2, service_name=service, timeout=10)
        by_metric = {m.name: m for m in metrics}
        requests = by_metric["requests"]
        self.assertEqual((requests.type, requests.unit, requests.is_monotonic), ("sum", "1", True))
        self.assertEqual(requests.data_points[0].value, 5)
        self.assertEqual(requests.data_points[0].attributes, {"route": "/x"})
        latency = by_metric["latency"]
        self.assertEqual(latency.type, "histogram")
        self.assertEqual((latency.data_points[0].count, latency.data_points[0].sum), (1, 0.25))
        self.assertEqual(latency.scope.name, "tests.otlp.meter")

        logs = self.collector.wait_for_logs("greeting", service_name=service, timeout=10)
        self.assertEqual(logs[0].body, "hello")
        self.assertEqual(logs[0].severity_text, "WARN")
        self.assertEqual(logs[0].severity_number, SeverityNumber.WARN.value)
        self.assertEqual(logs[0].attributes, {"k": "v"})

        records = self.collector.requests(transport=transport)
        self.assertEqual(len(records), 4)  # 2 spans, 1 metrics export, 1 log
        # Content-Encoding over HTTP, grpc-encoding over gRPC.
        expected_encoding = "gzip" if gzip else ""
        for record in records:
            self.assertIn(record.status, (200, "OK"))
            self.assertEqual(record.content_encoding, expected_encoding)
            self.assertTrue(record.headers["user-agent"].startswith("OTel-OTLP-Exporter-Python"))
        stats = self.collector.stats()
        self.assertEqual(stats["items"], {"traces": 2, "metrics": 2, "logs": 1})

    def test_http_protobuf(self) -> None:
        self.check_all_signals("http", gzip=False)

    def test_http_protobuf_gzip(self) -> None:
        self.check_all_signals("http", gzip=True)

    def test_grpc(self) -> None:
        self.check_all_signals("grpc", gzip=False)

    def test_grpc_gzip(self) -> None:
        self.check_all_signals("grpc", gzip=True)


class QueryTest(CollectorTestCase):
    """Filters, trace reconstruction, waits that see history, clear()."""

    def setUp(self) -> None:
        super().setUp()
        self.sdk = Pipelines(self, self.collector, "http", service="shop")
        self.other = Pipelines(self, self.collector, "grpc", service="billing")

    def test_filters(self) -> None:
        with self.sdk.tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.status_code", 200)
            with self.sdk.tracer.start_as_current_span("db", kind=SpanKind.CLIENT) as db:
                db.set_status(Status(StatusCode.ERROR))
        with self.other.tracer.start_as_current_span("charge", attributes={"amount": 1.5}):
            pass
        self.collector.wait_for_spans(count=3)
        c = self.collector
        self.assertEqual([s.name for s in c.spans(kind="SERVER")], ["GET /cart"])
        self.assertEqual([s.name for s in c.spans(kind="client")], ["db"])
        self.assertEqual([s.name for s in c.spans(status="ERROR")], ["db"])
        self.assertEqual([s.name for s in c.spans(service_name="billing")], ["charge"])
        self.assertEqual(
            [s.name for s in c.spans(resource={"service.name": "shop"}, kind="SERVER")],
            ["GET /cart"],
        )
        self.assertEqual(
            [s.name for s in c.spans(attributes={"http.status_code": 200})], ["GET /cart"]
        )
        self.assertEqual(c.spans(attributes={"http.status_code": 500}), [])
        self.assertEqual([s.name for s in c.spans(attributes={"amount": 1.5})], ["charge"])
        self.assertEqual([s.name for s in c.spans(attributes={"amount": None})], ["charge"])
        self.assertEqual([s.name for s in c.spans("db")], ["db"])
        self.assertEqual(c.spans(scope="nope"), [])

    def test_trace_tree(self) -> None:
        with self.sdk.tracer.start_as_current_span("root") as root:
            tracer = self.sdk.tracer
            with tracer.start_as_current_span("a"), tracer.start_as_current_span("a1"):
                pass
            with self.sdk.tracer.start_as_current_span("b"):
                pass
        trace_id = f"{root.get_span_context().trace_id:032x}"
        self.collector.wait_for_spans(count=4, trace_id=trace_id.upper())
        trace = self.collector.trace(trace_id)
        self.assertEqual([s.name for s in trace.roots], ["root"])
        self.assertEqual(trace.orphans, ())
        self.assertEqual([s.name for s in trace.children(trace.roots[0])], ["a", "b"])
        (a,) = trace.find("a")
        self.assertEqual([s.name for s in trace.children(a)], ["a1"])
        self.assertEqual(trace.parent(a), trace.roots[0])

    def test_wait_sees_history_and_consumes_nothing(self) -> None:
        with self.sdk.tracer.start_as_current_span("early"):
            pass
        self.collector.wait_for_spans("early")
        # Arrived before this wait, and still there for the next one.
        self.assertEqual(len(self.collector.wait_for_spans("early", timeout=1)), 1)
        self.assertEqual(len(self.collector.spans("early")), 1)

    def test_wait_timeout_lists_what_arrived(self) -> None:
        from mocksup.otlp import TelemetryTimeoutError

        with self.sdk.tracer.start_as_current_span("present"):
            pass
        self.collector.wait_for_spans("present")
        with self.assertRaises(TelemetryTimeoutError) as caught:
            self.collector.wait_for_spans("absent", count=1, timeout=0.3)
        self.assertIsInstance(caught.exception, AssertionError)
        self.assertIn("'present' (service shop)", str(caught.exception))
        self.assertEqual((caught.exception.expected, caught.exception.matched), (1, 0))

    def test_wait_returns_when_items_arrive_later(self) -> None:
        import threading

        started = threading.Event()

        def export_later() -> None:
            started.wait(5)
            with self.sdk.tracer.start_as_current_span("late"):
                pass

        thread = threading.Thread(target=export_later)
        thread.start()
        self.addCleanup(thread.join)
        started.set()
        spans = self.collector.wait_for_spans("late", timeout=10)
        self.assertEqual([s.name for s in spans], ["late"])

    def test_clear(self) -> None:
        with self.sdk.tracer.start_as_current_span("old"):
            pass
        self.collector.wait_for_spans("old")
        generation = self.collector.stats()["generation"]
        self.collector.clear()
        self.assertEqual(self.collector.stats()["generation"], generation + 1)
        self.assertEqual(self.collector.spans(), [])
        self.assertEqual(self.collector.requests(), [])
        self.assertEqual(self.collector.stats()["requests"], 0)

    def test_logs_and_metrics_filters(self) -> None:
        self.sdk.logger.emit(body="a", severity_number=SeverityNumber.INFO, attributes={"x": 1})
        self.sdk.logger.emit(body="b", severity_number=SeverityNumber.ERROR, severity_text="E")
        gauge = self.sdk.meter.create_up_down_counter("queue")
        gauge.add(3, {"q": "one"})
        gauge.add(4, {"q": "two"})
        self.sdk.flush_metrics()
        self.collector.wait_for_logs(count=2)
        c = self.collector
        self.assertEqual([r.body for r in c.logs(min_severity=SeverityNumber.ERROR.value)], ["b"])
        self.assertEqual([r.body for r in c.logs(body="a")], ["a"])
        self.assertEqual([r.body for r in c.logs(severity_text="E")], ["b"])
        self.assertEqual([r.body for r in c.logs(attributes={"x": 1})], ["a"])
        (queue,) = c.wait_for_metrics("queue", attributes={"q": "two"})
        self.assertEqual([p.value for p in queue.data_points], [4])
        self.assertEqual(c.metrics(type="gauge"), [])
        self.assertEqual([m.name for m in c.metrics(type="sum")], ["queue"])

    def test_exporter_env(self) -> None:
        env = self.collector.exporter_env("grpc")
        self.assertEqual(env["OTEL_EXPORTER_OTLP_ENDPOINT"], self.collector.grpc_endpoint)
        self.assertEqual(env["OTEL_EXPORTER_OTLP_PROTOCOL"], "grpc")
        served = self.collector.control.call("GET", "/env", params={"protocol": "grpc"})
        self.assertEqual(served, env)
        self.assertEqual(
            self.collector.exporter_env()["OTEL_EXPORTER_OTLP_ENDPOINT"],
            self.collector.http_endpoint,
        )


class HTTPOnlyTest(CollectorTestCase):
    """gRPC switched off; the Python exporter's deflate (zlib) compression."""

    collector_settings = {"grpc_port": None}

    def test_grpc_is_off(self) -> None:
        self.assertIsNone(self.collector.grpc_endpoint)
        self.assertNotIn("grpc_port", self.collector.control.call("GET", "/health"))
        with self.assertRaises(ValueError):
            self.collector.exporter_env("grpc")

    def test_http_deflate(self) -> None:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider()
        self.addCleanup(provider.shutdown)
        exporter = OTLPSpanExporter(
            self.collector.http_endpoint + "/v1/traces", compression=Compression.Deflate
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("deflated"):
            pass
        self.assertEqual(len(self.collector.wait_for_spans("deflated")), 1)
        (record,) = self.collector.requests()
        self.assertEqual(record.content_encoding, "deflate")
        self.assertLess(record.size, record.decoded_size)
