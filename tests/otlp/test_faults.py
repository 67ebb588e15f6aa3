"""Fault injection against the real exporters' retry logic, the memory cap, gRPC limits."""

from __future__ import annotations

import json

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from mocksup.otlp import Fault
from tests.otlp.support import CollectorTestCase, Pipelines, post, post_json
from tests.otlp.test_http_input import json_span, request_bytes

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def grpc_export(endpoint: str, body: bytes) -> tuple[bytes | None, grpc.RpcError | None]:
    """One raw TraceService/Export call; returns (response bytes, error)."""
    with grpc.insecure_channel(endpoint.removeprefix("http://")) as channel:
        call = channel.unary_unary(TRACE_EXPORT)
        try:
            return call(body, timeout=10), None
        except grpc.RpcError as error:
            return None, error


class RetryTest(CollectorTestCase):
    """An exporter that meets an injected retryable error retries; its data lands once."""

    def export_one(self, transport: str, name: str) -> None:
        sdk = Pipelines(self, self.collector, transport)
        with sdk.tracer.start_as_current_span(name):
            pass

    def test_http_503_with_retry_after(self) -> None:
        self.collector.fail_next(1, status=503, retry_after=0, signal="traces")
        self.export_one("http", "retried")
        self.assertEqual(len(self.collector.wait_for_spans("retried")), 1)
        records = self.collector.requests(signal="traces")
        self.assertEqual([r.status for r in records], [503, 200])
        self.assertEqual(records[0].fault, "503/UNAVAILABLE, retry after 0s")
        self.assertEqual(records[0].items, 0)
        self.assertEqual(self.collector.faults(), [])

    def test_http_429_with_retry_after(self) -> None:
        self.collector.fail_next(2, status=429, retry_after=0, transport="http")
        self.export_one("http", "throttled")
        self.assertEqual(len(self.collector.wait_for_spans("throttled")), 1)
        self.assertEqual([r.status for r in self.collector.requests()], [429, 429, 200])

    def test_http_retry_after_header_and_status_body(self) -> None:
        self.collector.fail_next(1, status=503, retry_after=1.5)
        status, headers, body = post(self.collector, "/v1/traces", request_bytes())
        # The Collector's whole seconds, rounded down (compat="spec" rounds up: test_compat).
        self.assertEqual((status, headers["retry-after"]), (503, "1"))
        parsed = status_pb2.Status.FromString(body)
        info = error_details_pb2.RetryInfo()
        self.assertTrue(parsed.details[0].Unpack(info))
        self.assertEqual(info.retry_delay.ToTimedelta().total_seconds(), 1.5)
        self.assertEqual(self.collector.spans(), [])

    def test_http_non_retryable_400_is_not_retried(self) -> None:
        self.collector.fail_next(1, status=400, message="no thanks")
        self.export_one("http", "refused")
        (record,) = self.collector.requests()
        self.assertEqual((record.status, record.error), (400, "no thanks"))
        self.assertEqual(self.collector.spans(), [])

    def test_http_dropped_connection_is_retried(self) -> None:
        self.collector.drop_next(1, transport="http")
        self.export_one("http", "after-drop")
        self.assertEqual(len(self.collector.wait_for_spans("after-drop")), 1)
        self.assertEqual([r.status for r in self.collector.requests()], ["dropped", 200])

    def test_grpc_dropped_connection_is_retried(self) -> None:
        # The connection closes without an answer: UNAVAILABLE, which the exporter retries.
        self.collector.drop_next(1, transport="grpc")
        _, error = grpc_export(self.collector.grpc_endpoint or "", request_bytes())
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(dict(error.trailing_metadata() or ()), {})
        self.collector.drop_next(1, transport="grpc")
        self.export_one("grpc", "after-drop")
        self.assertEqual(len(self.collector.wait_for_spans("after-drop")), 1)
        statuses = [r.status for r in self.collector.requests()]
        self.assertEqual(statuses, ["dropped", "dropped", "OK"])

    def test_grpc_unavailable_with_retry_info(self) -> None:
        self.collector.fail_next(1, grpc_code="UNAVAILABLE", retry_after=0.05)
        self.export_one("grpc", "grpc-retried")
        self.assertEqual(len(self.collector.wait_for_spans("grpc-retried")), 1)
        self.assertEqual([r.status for r in self.collector.requests()], ["UNAVAILABLE", "OK"])

    def test_grpc_resource_exhausted_from_http_status(self) -> None:
        self.collector.fail_next(1, status=429, retry_after=0.05, transport="grpc")
        self.export_one("grpc", "grpc-throttled")
        self.assertEqual(len(self.collector.wait_for_spans("grpc-throttled")), 1)
        statuses = [r.status for r in self.collector.requests()]
        self.assertEqual(statuses, ["RESOURCE_EXHAUSTED", "OK"])

    def test_grpc_retry_info_in_both_trailers(self) -> None:
        self.collector.fail_next(1, grpc_code="UNAVAILABLE", retry_after=2)
        _, error = grpc_export(self.collector.grpc_endpoint or "", request_bytes())
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
        trailers = dict(error.trailing_metadata())
        retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        self.assertEqual((retry.retry_delay.seconds, retry.retry_delay.nanos), (2, 0))
        details = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        self.assertEqual(details.code, grpc.StatusCode.UNAVAILABLE.value[0])
        info = error_details_pb2.RetryInfo()
        self.assertTrue(details.details[0].Unpack(info))
        self.assertEqual(info.retry_delay.seconds, 2)

    def test_partial_success(self) -> None:
        self.collector.partial_success_next(1, "one span too many", count=2)
        status, _, doc = post_json(self.collector, "/v1/traces", json_span())
        self.assertEqual(status, 200)
        self.assertEqual(
            doc, {"partialSuccess": {"rejectedSpans": "1", "errorMessage": "one span too many"}}
        )
        body, error = grpc_export(self.collector.grpc_endpoint or "", request_bytes())
        self.assertIsNone(error)
        partial = ExportTraceServiceResponse.FromString(body or b"").partial_success
        self.assertEqual((partial.rejected_spans, partial.error_message), (1, "one span too many"))
        self.assertIn(b"one span too many", body or b"")
        self.assertEqual([r.rejected for r in self.collector.requests()], [1, 1])
        self.assertEqual(self.collector.stats()["rejected_items"]["traces"], 2)
        self.assertEqual(len(self.collector.spans()), 2)  # kept: the test sees what was sent

    def test_partial_success_is_not_retried_by_the_exporter(self) -> None:
        self.collector.partial_success_next(1, signal="traces")
        self.export_one("grpc", "partial")
        self.assertEqual(len(self.collector.wait_for_spans("partial")), 1)
        self.assertEqual(len(self.collector.requests()), 1)

    def test_delay(self) -> None:
        self.collector.delay_next(0.3)
        status, _, _ = post(self.collector, "/v1/traces", request_bytes("slow"))
        self.assertEqual(status, 200)
        (record,) = self.collector.requests()
        self.assertGreaterEqual(record.duration, 0.3)
        self.assertEqual(record.fault, "delay 0.3s")

    def test_faults_match_signal_and_transport_in_order(self) -> None:
        self.collector.add_faults(
            Fault(signal="logs", status=500, count=None),
            Fault(transport="grpc", status=503),
            Fault(status=502),
        )
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes())[0], 502)
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes())[0], 200)
        self.assertEqual(post_json(self.collector, "/v1/logs", {})[0], 500)
        self.assertEqual(post_json(self.collector, "/v1/logs", {})[0], 500)
        pending = self.collector.faults()
        self.assertEqual(
            [(f["signal"], f["remaining"]) for f in pending], [("logs", None), (None, 1)]
        )
        self.collector.clear_faults()
        self.assertEqual(self.collector.faults(), [])

    def test_invalid_fault_is_refused(self) -> None:
        from mocksup import ControlAPIError

        with self.assertRaises(ControlAPIError) as caught:
            self.collector.control.call("POST", "/faults", body={"grpc_code": "NOPE"})
        self.assertEqual(caught.exception.status, 400)
        self.assertEqual(json.loads(json.dumps(self.collector.faults())), [])

    def test_pending_faults_are_bounded(self) -> None:
        from mocksup import ControlAPIError
        from mocksup.otlp.faults import MAX_PENDING

        first = [{"status": 503, "count": None}] * (MAX_PENDING - 1)
        self.collector.control.call("POST", "/faults", body=first)
        # Past the bound: refused whole, saying what to do; what was pending stays.
        with self.assertRaises(ControlAPIError) as caught:
            self.collector.control.call("POST", "/faults", body=[{"status": 502}] * 2)
        self.assertEqual(caught.exception.status, 400)
        self.assertIn(f"{MAX_PENDING - 1:,} faults pending", str(caught.exception))
        self.assertIn("DELETE /mocksup/faults", str(caught.exception))
        self.assertEqual(len(self.collector.faults()), MAX_PENDING - 1)
        # Up to it: taken.
        self.collector.add_faults(Fault(status=502))
        pending = self.collector.faults()
        self.assertEqual((len(pending), pending[-1]["status"]), (MAX_PENDING, 502))
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes())[0], 503)
        self.collector.clear_faults()
        self.collector.add_faults(Fault(status=502))
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes())[0], 502)


class CapTest(CollectorTestCase):
    collector_settings = {"max_items": 3, "grpc_max_message": 4096}

    def test_items_past_the_cap_are_counted_as_dropped(self) -> None:
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes("a", 2))[0], 200)
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes("b", 2))[0], 200)
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes("c", 1))[0], 200)
        self.assertEqual([s.name for s in self.collector.spans()], ["a", "a", "b"])
        stats = self.collector.stats()
        self.assertEqual(stats["dropped"]["traces"], 2)
        self.assertEqual(stats["stored_items"], 3)
        self.assertEqual([r.dropped for r in self.collector.requests()], [0, 1, 1])

    def test_grpc_over_the_message_limit(self) -> None:
        big = request_bytes("big", 200)
        self.assertGreater(len(big), 4096)
        _, error = grpc_export(self.collector.grpc_endpoint or "", big)
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        _, error = grpc_export(self.collector.grpc_endpoint or "", request_bytes("small"))
        self.assertIsNone(error)
        self.assertEqual([s.name for s in self.collector.spans()], ["small"])
