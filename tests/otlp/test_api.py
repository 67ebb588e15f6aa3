"""The package surface, the error type, faults as data, the control API's edges."""

from __future__ import annotations

import json
import pickle
import unittest

import pydantic

import mocksup.otlp
from mocksup import ControlAPIError, MockServerError
from mocksup.otlp import Fault, MockOTLPCollector, TelemetryTimeoutError
from tests.otlp.support import CollectorTestCase, post, wait_until_held
from tests.otlp.test_http_input import request_bytes
from tests.support import ProcessTestCase


class SurfaceTest(unittest.TestCase):
    def test_all_is_honest(self) -> None:
        for name in mocksup.otlp.__all__:
            self.assertTrue(hasattr(mocksup.otlp, name), name)
        public = {
            name
            for name, value in vars(mocksup.otlp).items()
            if not name.startswith("_") and isinstance(value, type)
        }
        self.assertEqual(public - set(mocksup.otlp.__all__), set())

    def test_timeout_error_pickles_with_its_fields(self) -> None:
        error = TelemetryTimeoutError(
            "waited", server="otlp", signal="traces", expected=2, matched=1, arrived=["'a' x2"]
        )
        copy = pickle.loads(pickle.dumps(error))
        self.assertIsInstance(copy, MockServerError)
        self.assertIsInstance(copy, AssertionError)
        self.assertEqual((copy.signal, copy.expected, copy.matched), ("traces", 2, 1))
        self.assertEqual((copy.arrived, copy.server, str(copy)), (["'a' x2"], "otlp", "waited"))

    def test_fault_validation_and_mapping(self) -> None:
        with self.assertRaises(pydantic.ValidationError):
            Fault(status=200)
        with self.assertRaises(pydantic.ValidationError):
            Fault(grpc_code="OK")
        with self.assertRaises(pydantic.ValidationError):
            Fault(count=0)
        self.assertEqual(Fault(status=429).grpc_status(), "RESOURCE_EXHAUSTED")
        self.assertEqual(Fault(status=504).grpc_status(), "UNAVAILABLE")
        self.assertEqual(Fault(grpc_code="UNAVAILABLE").http_status(), 503)
        self.assertEqual(Fault(grpc_code="INTERNAL").http_status(), 500)

    def test_settings(self) -> None:
        collector = MockOTLPCollector()
        self.assertEqual((collector.port, collector.grpc_port), (4318, 4317))
        self.assertEqual(collector.compat, "collector")
        # Unset limits take the mode's defaults (see test_compat).
        self.assertEqual((collector.max_body_size, collector.grpc_max_message), (None, None))
        self.assertEqual(
            (collector.max_stored_bytes, collector.max_request_objects), (512 << 20, 10**6)
        )
        with self.assertRaises(pydantic.ValidationError):
            MockOTLPCollector(compat="strict")
        self.assertEqual(collector.http_endpoint, "http://127.0.0.1:4318")
        self.assertIsNone(MockOTLPCollector(grpc_port=None).grpc_endpoint)
        with self.assertRaises(ValueError):
            MockOTLPCollector(grpc_port=None).exporter_env("grpc")
        with self.assertRaises(ValueError):
            collector.exporter_env("thrift")
        self.assertEqual(MockOTLPCollector(host="::1").http_endpoint, "http://[::1]:4318")
        pickle.loads(pickle.dumps(collector))


class ControlAPITest(CollectorTestCase):
    def test_health(self) -> None:
        health = self.collector.control.call("GET", "/health")
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["port"], self.collector.port)
        self.assertEqual(health["grpc_port"], self.collector.grpc_port)

    def test_unknown_route_and_bad_filter(self) -> None:
        with self.assertRaises(ControlAPIError) as caught:
            self.collector.control.call("GET", "/nope")
        self.assertEqual(caught.exception.status, 404)
        with self.assertRaises(ControlAPIError) as caught:
            self.collector.spans(kind="SIDEWAYS")
        self.assertEqual(caught.exception.status, 400)
        with self.assertRaises(ControlAPIError):
            self.collector.trace("1234")

    def test_requests_limit_and_filters(self) -> None:
        for _ in range(3):
            post(self.collector, "/v1/traces", request_bytes())
        post(self.collector, "/v1/logs", b"")
        self.assertEqual(len(self.collector.requests()), 4)
        self.assertEqual(len(self.collector.requests(limit=2)), 2)
        self.assertEqual(len(self.collector.requests("logs")), 1)
        self.assertEqual(self.collector.requests(transport="grpc"), [])
        (last,) = self.collector.requests(limit=1)
        self.assertEqual(last.signal, "logs")

    def test_bytes_and_nested_values_come_back_as_python(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
        from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

        attrs = [
            KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\x01")),
            KeyValue(
                key="list",
                value=AnyValue(array_value=ArrayValue(values=[AnyValue(bytes_value=b"x")])),
            ),
            KeyValue(key="none"),
        ]
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(name="b", attributes=attrs)])])
            ]
        )
        post(self.collector, "/v1/traces", request.SerializeToString())
        (span,) = self.collector.spans("b")
        self.assertEqual(span.attributes, {"raw": b"\x00\x01", "list": [b"x"], "none": None})


class JSONDoorTest(CollectorTestCase):
    """The control API's JSON answers: what a harness in another language reads."""

    def setUp(self) -> None:
        super().setUp()
        from tests.otlp.test_json import LOGS, METRICS, TRACES

        for path, message in (("/v1/traces", TRACES), ("/v1/metrics", METRICS), ("/v1/logs", LOGS)):
            self.assertEqual(post(self.collector, path, message.SerializeToString())[0], 200)

    def test_items_match_the_python_items(self) -> None:
        call = self.collector.control.call
        for route, items in (
            ("/spans", self.collector.spans()),
            ("/metrics", self.collector.metrics()),
            ("/logs", self.collector.logs()),
        ):
            with self.subTest(route):
                doc = call("GET", route)
                key = route.strip("/")
                self.assertEqual(doc["count"], len(items))
                self.assertEqual(len(doc[key]), len(items))
                for item_doc, item in zip(doc[key], items, strict=True):
                    expected = {
                        **item.to_json(),
                        "resource": item_doc["resource"],
                        "scope": item_doc["scope"],
                    }
                    self.assertEqual(json.loads(json.dumps(expected)), item_doc)
                    resource = doc["resources"][item_doc["resource"]]
                    self.assertEqual(resource["attributes"]["s"], "x")
                    self.assertEqual(resource["attributes"]["bytes"], {"$bytes": "AP8="})
                    self.assertEqual(doc["scopes"][item_doc["scope"]]["name"], "lib")

    def test_span_document(self) -> None:
        doc = self.collector.control.call("GET", "/spans", params={"name": "op"})
        (span,) = doc["spans"]
        self.assertEqual(span["trace_id"], bytes(range(1, 17)).hex())
        self.assertEqual(span["kind"], "CLIENT")
        self.assertEqual(span["status"], {"code": "ERROR", "message": "m"})
        self.assertEqual(span["attributes"]["arr"], [1, "y"])
        self.assertEqual(span["attributes"]["map"], {"inner": 2.0})
        self.assertIsNone(span["attributes"]["empty"])

    def test_wait_and_trace_routes(self) -> None:
        call = self.collector.control.call
        doc = call("GET", "/spans/wait", params={"count": 2, "timeout": 1})
        self.assertTrue(doc["matched"])
        self.assertEqual(len(doc["spans"]), 2)
        doc = call("GET", "/logs/wait", params={"count": 5, "timeout": 0.2}, wait=0.2)
        self.assertFalse(doc["matched"])
        self.assertEqual((doc["count"], doc["total"]), (1, 1))
        self.assertEqual(doc["arrived"], ["'ev'"])
        trace = call("GET", f"/traces/{bytes(range(1, 17)).hex()}")
        self.assertEqual([s["name"] for s in trace["spans"]], ["op"])
        # The test span names itself as its parent: neither a root nor an orphan.
        span_id = trace["spans"][0]["span_id"]
        self.assertEqual((trace["roots"], trace["orphans"]), ([], []))
        self.assertEqual(trace["children"], {span_id: [span_id]})


class StopTest(ProcessTestCase):
    def test_stop_ends_a_pending_wait(self) -> None:
        import threading
        import time

        collector = self.start_server(MockOTLPCollector(port=0, grpc_port=0))
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                collector.wait_for_spans("never", timeout=60)
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=wait)
        thread.start()
        self.addCleanup(thread.join, 5)
        wait_until_held(collector, 1)
        started = time.monotonic()
        collector.stop()
        thread.join(10)
        self.assertFalse(thread.is_alive())
        self.assertLess(time.monotonic() - started, 5)
        # The held wait was answered (503, "stopping"), not cut by the process exit.
        (error,) = errors
        self.assertIsInstance(error, ControlAPIError)
        assert isinstance(error, ControlAPIError)
        self.assertEqual(error.status, 503)
        self.assertIn("stopping", str(error))

    def test_a_stalled_upload_does_not_outlast_a_short_stop_budget(self) -> None:
        import logging
        import socket
        import time

        # The drain waits for requests in flight, within a fifth of the stop budget: a body
        # that never comes must not hold the child past the graceful part (0.25 s here).
        collector = self.start_server(MockOTLPCollector(port=0, grpc_port=0, stop_timeout=0.5))
        assert collector.port is not None
        with socket.create_connection((collector.host, collector.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
                b"\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
            )
            # Sent as the app starts reading the body: the request is in flight.
            self.assertEqual(sock.recv(64), b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(b"0123456789")
            started = time.monotonic()
            with self.assertNoLogs("mocksup", logging.WARNING):  # not SIGKILLed
                collector.stop()
            self.assertLess(time.monotonic() - started, 5.0)


class NoGCTest(unittest.TestCase):
    def test_pauses_and_restores_across_overlapping_users(self) -> None:
        import gc

        from mocksup.otlp._values import no_gc

        self.assertTrue(gc.isenabled())
        first, second = no_gc(), no_gc()
        first.__enter__()
        second.__enter__()
        self.assertFalse(gc.isenabled())
        first.__exit__(None, None, None)
        self.assertFalse(gc.isenabled())  # the second is still building
        second.__exit__(None, None, None)
        self.assertTrue(gc.isenabled())

    def test_leaves_a_disabled_collector_disabled(self) -> None:
        import gc

        from mocksup.otlp._values import no_gc

        gc.disable()
        self.addCleanup(gc.enable)
        with no_gc():
            pass
        self.assertFalse(gc.isenabled())
