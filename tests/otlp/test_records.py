"""Request records as a real collector child keeps them: credentials redacted unless kept,
and at most ``max_requests`` of them (the older ones counted as forgotten)."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any
from unittest import mock

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

from mocksup.otlp import RequestRecord
from tests.otlp.support import CollectorTestCase, post
from tests.otlp.test_http_input import request_bytes

#: What the HTTP exporter reads from ``OTEL_EXPORTER_OTLP_HEADERS`` (values URL-encoded).
HTTP_HEADERS_ENV = "authorization=Bearer%20sk-http-secret,x-api-key=key-http-secret,x-tenant=acme"
#: What the gRPC exporter is given as ``headers=`` (gRPC metadata).
GRPC_HEADERS = {
    "authorization": "Basic Z3JwYzpzZWNyZXQ=",
    "x-upstream-token": "tok-grpc-secret",
    "x-tenant": "acme",
}


class _Exports(CollectorTestCase):
    def export_with_credentials(self) -> tuple[RequestRecord, RequestRecord, str]:
        """One span through each real exporter, with credentials in its headers; return the
        two records and the control API's raw ``GET /mocksup/requests`` answer."""
        with mock.patch.dict(os.environ, {"OTEL_EXPORTER_OTLP_HEADERS": HTTP_HEADERS_ENV}):
            http = HTTPSpans(self.collector.http_endpoint + "/v1/traces", timeout=10)
        grpc = GRPCSpans(
            self.collector.grpc_endpoint, insecure=True, headers=GRPC_HEADERS, timeout=10
        )
        for exporter in (http, grpc):
            self.export_one(exporter)
        records = {r.transport: r for r in self.collector.requests()}
        self.assertEqual(len(self.collector.spans()), 2)
        with urllib.request.urlopen(self.collector.url + "/mocksup/requests", timeout=10) as answer:
            raw = answer.read().decode()
        return records["http"], records["grpc"], raw

    def export_one(self, exporter: SpanExporter) -> None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.addCleanup(provider.shutdown)
        with provider.get_tracer("tests.records").start_as_current_span("authenticated"):
            pass


class CredentialsTest(_Exports):
    """By default (``journal_credentials=False``) credentials read ``[redacted]``."""

    def test_exporters_credentials_are_redacted(self) -> None:
        http, grpc, raw = self.export_with_credentials()
        self.assertEqual(http.headers["authorization"], "[redacted]")
        self.assertEqual(http.headers["x-api-key"], "[redacted]")
        self.assertEqual(grpc.headers["authorization"], "[redacted]")
        self.assertEqual(grpc.headers["x-upstream-token"], "[redacted]")
        # What is not a credential stays as sent.
        self.assertEqual((http.headers["x-tenant"], grpc.headers["x-tenant"]), ("acme", "acme"))
        self.assertTrue(http.headers["user-agent"].startswith("OTel-OTLP-Exporter-Python/"))
        for secret in ("sk-http-secret", "key-http-secret", "Z3JwYzpzZWNyZXQ=", "tok-grpc"):
            self.assertNotIn(secret, raw)

    def test_refused_requests_are_redacted_too(self) -> None:
        headers = {"Authorization": "Bearer sk-refused", "X-Forward": "token sk-not-a-scheme"}
        self.assertEqual(post(self.collector, "/nowhere", b"", headers=headers)[0], 404)
        status, _, _ = post(
            self.collector, "/v1/traces", b"\xff", headers={"Cookie": "session=sk-cookie"}
        )
        self.assertEqual(status, 400)
        missing, bad = self.collector.requests()
        self.assertEqual(missing.headers["authorization"], "[redacted]")
        self.assertEqual(missing.headers["x-forward"], "token sk-not-a-scheme")
        self.assertEqual(bad.headers["cookie"], "[redacted]")


class KeptCredentialsTest(_Exports):
    """``journal_credentials=True`` keeps them, as the vLLM mock's setting of that name does."""

    collector_settings = {"journal_credentials": True}

    def test_exporters_credentials_are_kept(self) -> None:
        http, grpc, raw = self.export_with_credentials()
        self.assertEqual(http.headers["authorization"], "Bearer sk-http-secret")
        self.assertEqual(http.headers["x-api-key"], "key-http-secret")
        self.assertEqual(grpc.headers["authorization"], GRPC_HEADERS["authorization"])
        self.assertEqual(grpc.headers["x-upstream-token"], "tok-grpc-secret")
        self.assertIn("sk-http-secret", raw)


class MaxRequestsTest(CollectorTestCase):
    collector_settings = {"max_requests": 3, "grpc_port": None}

    def requests_document(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.collector.url + "/mocksup/requests", timeout=10) as answer:
            document: dict[str, Any] = json.loads(answer.read())
        return document

    def test_the_newest_records_are_kept_and_the_others_counted(self) -> None:
        statuses = []
        for number in range(5):
            path = "/nowhere" if number == 3 else "/v1/traces"
            statuses.append(post(self.collector, path, request_bytes(f"n{number}"))[0])
        self.assertEqual(statuses, [200, 200, 200, 404, 200])
        records = self.collector.requests()
        self.assertEqual([r.id for r in records], [3, 4, 5])
        self.assertEqual([r.status for r in records], [200, 404, 200])
        stats = self.collector.stats()
        # Forgotten records still count: every request and every span stays accounted for.
        self.assertEqual((stats["requests"], stats["requests_forgotten"]), (5, 2))
        self.assertEqual(stats["items"]["traces"], 4)
        document = self.requests_document()
        self.assertEqual(
            ([r["id"] for r in document["requests"]], document["forgotten"]), ([3, 4, 5], 2)
        )
        # A clear forgets the records and the count of forgotten ones.
        self.collector.clear()
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes("after"))[0], 200)
        self.assertEqual(len(self.collector.requests()), 1)
        self.assertEqual(self.collector.stats()["requests_forgotten"], 0)
