"""Helpers for the collector tests: SDK pipelines wired to a collector, raw HTTP posts."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct
import threading
import time
import unittest
from collections.abc import Callable
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GRPCLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GRPCMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HTTPMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from werkzeug.test import Client

from mocksup.otlp import MockOTLPCollector
from tests.support import ProcessTestCase, children, poll_until

__all__ = ["CollectorTestCase", "Pipelines", "grpc_call", "in_process", "post", "raw_grpc_call"]

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def in_process(**settings: Any) -> tuple[Client, Any]:
    """The collector's HTTP app in this process (no child, no socket), and its ingest.

    For protocol logic: werkzeug's test client calls the WSGI app directly, about a hundred
    times faster than a request to a child.
    """
    parts = MockOTLPCollector(port=0, grpc_port=None, **settings)._parts()
    return Client(parts.app), parts.ingest


def grpc_call(
    endpoint: str, body: bytes, *, path: str = TRACE_EXPORT, **kwargs: Any
) -> tuple[bytes | None, grpc.RpcError | None]:
    """One raw unary gRPC call with the request bytes as given; returns (response, error)."""
    options = [("grpc.max_send_message_length", 128 << 20)]
    with grpc.insecure_channel(endpoint.removeprefix("http://"), options=options) as channel:
        call = channel.unary_unary(path)
        try:
            return call(body, timeout=10, **kwargs), None
        except grpc.RpcError as error:
            return None, error


def raw_grpc_call(
    endpoint: str, body: bytes, *, encoding: str, path: str = TRACE_EXPORT
) -> tuple[int, str]:
    """One unary gRPC call sent by hand over HTTP/2 (h2), its message flagged compressed
    with ``grpc-encoding: encoding``: what a grpc-go client would send, and grpcio's client
    cannot (it sends only identity, deflate and gzip). Returns ``grpc-status`` and
    ``grpc-message`` as the server sent them."""
    host, _, port = endpoint.removeprefix("http://").rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", f"{host}:{port}"), ("content-type", "application/grpc"),
            ("te", "trailers"), ("grpc-encoding", encoding),
        ])  # fmt: skip
        conn.send_data(1, b"\x01" + struct.pack(">I", len(body)) + body, end_stream=True)
        sock.sendall(conn.data_to_send())
        answer: dict[str, str] = {}
        ended = False
        while not ended:
            data = sock.recv(65536)
            if not data:
                raise AssertionError(f"the connection closed before the call ended: {answer}")
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    answer.update((bytes(k).decode(), bytes(v).decode()) for k, v in event.headers)
                ended = ended or isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset))
            sock.sendall(conn.data_to_send())
    return int(answer["grpc-status"]), answer.get("grpc-message", "")


def post(
    collector: MockOTLPCollector,
    path: str,
    body: bytes,
    *,
    content_type: str = "application/x-protobuf",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP request to the collector; return status, headers, body."""
    conn = http.client.HTTPConnection(collector.host, collector.port, timeout=10)
    try:
        conn.request(
            method, path, body=body, headers={"Content-Type": content_type, **(headers or {})}
        )
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def post_json(collector: MockOTLPCollector, path: str, doc: Any, **kwargs: Any) -> Any:
    """Post an OTLP/JSON document; return (status, decoded JSON answer)."""
    status, headers, body = post(
        collector, path, json.dumps(doc).encode(), content_type="application/json", **kwargs
    )
    return status, headers, json.loads(body) if body else None


def gzipped(data: bytes) -> bytes:
    """``data`` gzip-compressed (deterministic, for tests)."""
    return gzip.compress(data, mtime=0)


class Pipelines:
    """SDK providers for traces, metrics and logs exporting to one collector.

    :param transport: ``"http"`` or ``"grpc"``.
    :param gzip: compress the exports.
    """

    def __init__(
        self,
        case: unittest.TestCase,
        collector: MockOTLPCollector,
        transport: str,
        *,
        gzip: bool = False,
        service: str = "svc",
        timeout: float = 10.0,
    ) -> None:
        resource = Resource.create({"service.name": service})
        if transport == "http":
            base = collector.http_endpoint
            compression = Compression.Gzip if gzip else Compression.NoCompression
            spans: Any = HTTPSpans(base + "/v1/traces", compression=compression, timeout=timeout)
            metrics: Any = HTTPMetrics(
                base + "/v1/metrics", compression=compression, timeout=timeout
            )
            logs: Any = HTTPLogs(base + "/v1/logs", compression=compression, timeout=timeout)
        else:
            endpoint = collector.grpc_endpoint
            codec = grpc.Compression.Gzip if gzip else None
            spans = GRPCSpans(endpoint, insecure=True, compression=codec, timeout=timeout)
            metrics = GRPCMetrics(endpoint, insecure=True, compression=codec, timeout=timeout)
            logs = GRPCLogs(endpoint, insecure=True, compression=codec, timeout=timeout)
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        # A reader that never fires on its own: force_flush() exports, no timer races.
        self.reader = PeriodicExportingMetricReader(metrics, export_interval_millis=3_600_000)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
        self.tracer = self.tracer_provider.get_tracer("tests.otlp", "1.0")
        self.meter = self.meter_provider.get_meter("tests.otlp.meter")
        self.logger = self.logger_provider.get_logger("tests.otlp.logger")
        case.addCleanup(self.shutdown)

    def flush_metrics(self) -> None:
        """Export the metrics collected so far, now."""
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        """Shut every provider down (idempotent)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


class CollectorTestCase(ProcessTestCase):
    """One collector per class on free ports, cleared before each test.

    The class fails (an error in its class cleanup) when a process it started outlives it.
    """

    collector: MockOTLPCollector
    collector_settings: dict[str, Any] = {}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        before = {p.pid for p in children()}
        # Class cleanups run last-registered first: this check runs after the stop below.
        cls.addClassCleanup(_check_class_left_nothing, cls.__name__, before)
        settings = {"port": 0, "grpc_port": 0, **cls.collector_settings}
        cls.collector = MockOTLPCollector(**settings)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()

    def setUp(self) -> None:
        super().setUp()
        self.collector.clear()

    def held(
        self, wait: Callable[[], Any], send: Callable[[], None], timeout: float = 30.0
    ) -> tuple[Any, float]:
        """Start ``wait`` in a thread, check the collector holds it, ``send``; return the
        wait's answer (or raise its error) and the seconds from the send to the answer."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["value"] = wait()
            except BaseException as error:
                box["error"] = error
            box["at"] = time.monotonic()
            done.set()

        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(thread.join, timeout + 5)
        wait_until_held(self.collector, 1)
        sent = time.monotonic()
        send()
        self.assertTrue(done.wait(timeout + 5))
        if "error" in box:
            raise box["error"]
        return box["value"], box["at"] - sent


def wait_until_held(collector: MockOTLPCollector, count: int, timeout: float = 10.0) -> None:
    """Return once the collector holds ``count`` long polls (its ``stats()["waiting"]``)."""
    poll_until(
        lambda: collector.stats()["waiting"] >= count,
        f"the collector was to hold {count} wait(s)",
        timeout,
    )


def _check_class_left_nothing(name: str, before: set[int]) -> None:
    left = [p for p in children() if p.pid not in before]
    for process in left:
        process.kill()
    if left:
        raise AssertionError(f"{name} left child processes running: {[p.pid for p in left]}")
