"""The OpenTelemetry Collector's answers (``compat="collector"``, the default) against the
specification's (``compat="spec"``), one case per difference of the table in the docs.

Protocol cases run the collector's HTTP app in-process (werkzeug's test client); what depends
on the server or on gRPC runs against a real child over real sockets.
"""

from __future__ import annotations

import gzip
import json
import socket
import unittest
import zlib
from typing import Any

import cramjam
import grpc
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.test import Client, TestResponse

from tests.otlp.support import CollectorTestCase, grpc_call, in_process, post, raw_grpc_call
from tests.otlp.test_http_input import json_span, request_bytes

PB = "application/x-protobuf"
JSON = "application/json"
#: The logger the SDK's gRPC exporters report a failed export to.
_GRPC_EXPORTER_LOG = "opentelemetry.exporter.otlp.proto.grpc.exporter"


def traces(*spans: Span, old_layout: bool = False) -> bytes:
    """A serialised traces request; ``old_layout`` puts the scope in field 1000."""
    scope = ScopeSpans(spans=list(spans)).SerializeToString()
    if old_layout:
        resource = b"\xc2\x3e" + bytes([len(scope)]) + scope  # field 1000, length-delimited
        return b"\x0a" + bytes([len(resource)]) + resource
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])]
    ).SerializeToString()


def send(
    client: Client,
    body: bytes = b"",
    *,
    path: str = "/v1/traces",
    content_type: str | None = PB,
    encoding: str | None = None,
    method: str = "POST",
    **headers: str,
) -> TestResponse:
    all_headers = dict(headers)
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    if encoding is not None:
        all_headers["Content-Encoding"] = encoding
    return client.open(path, method=method, data=body, headers=all_headers)


def spans_of(client: Client) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = json.loads(client.get("/mocksup/spans").data)["spans"]
    return spans


class BothModes(unittest.TestCase):
    """Each test builds the collector app in both modes."""

    def setUp(self) -> None:
        self.collector_app, self.collector_ingest = in_process()
        self.spec_app, self.spec_ingest = in_process(compat="spec")

    def both(self) -> list[tuple[str, Client]]:
        return [("collector", self.collector_app), ("spec", self.spec_app)]


class CaughtInBothModesTest(BothModes):
    """Items 1-8 and 10-12: what the Collector catches (or accepts), both modes do too."""

    def test_wrong_length_ids_in_protobuf(self) -> None:
        for label, span in {
            "hex text as trace id": Span(trace_id=b"5b8efff798038103d269b633813fc60c"),
            "short span id": Span(trace_id=bytes(16), span_id=b"abcd"),
            "long parent": Span(parent_span_id=bytes(16)),
            "link": Span(links=[Span.Link(trace_id=bytes(8))]),
        }.items():
            for mode, client in self.both():
                with self.subTest(label, mode=mode):
                    response = send(client, traces(span))
                    self.assertEqual(response.status_code, 400)
                    status = status_pb2.Status.FromString(response.data)
                    self.assertEqual(status.code, 3)
                    self.assertRegex(status.message, r"invalid (TraceID|SpanID) length")
                    self.assertEqual(spans_of(client), [])
        # Empty ids are fine (pdata writes them for a root's parent).
        response = send(self.collector_app, traces(Span(name="root", parent_span_id=b"")))
        self.assertEqual(response.status_code, 200)

    def test_wrong_length_ids_in_a_large_batch(self) -> None:
        # Past a few dozen ids they are checked in bulk: one bad id among 300 is still found.
        good = [Span(trace_id=bytes(16), span_id=bytes([1] * 8), parent_span_id=bytes(8))] * 300
        for label, bad in {
            "trace id": Span(trace_id=bytes(17), span_id=bytes(8)),
            "span id": Span(trace_id=bytes(16), span_id=bytes(16)),
            "parent id": Span(trace_id=bytes(16), span_id=bytes(8), parent_span_id=bytes(7)),
        }.items():
            with self.subTest(label):
                body = traces(*good[:150], bad, *good[150:])
                self.assertEqual(send(self.collector_app, body).status_code, 400)
        self.assertEqual(spans_of(self.collector_app), [])
        # Go's pdata writes an empty id as a field of length 0: fine, in bulk too.
        roots = b"".join(b"\x12\x04\x22\x00\x2a\x00" for _ in range(300))  # parent, name
        body = b"\x0a" + _varint(len(roots) + 3) + b"\x12" + _varint(len(roots)) + roots
        self.assertEqual(send(self.collector_app, body).status_code, 200)
        self.assertEqual(len(spans_of(self.collector_app)), 300)

    def test_wrong_wire_type(self) -> None:
        # Span.name (field 5) sent as a varint; a field no schema knows (99) is fine.
        wrong = b"\x0a\x06\x12\x04\x12\x02\x28\x05"
        unknown = b"\x0a\x07\x12\x05\x12\x03\x98\x06\x01"
        for mode, client in self.both():
            with self.subTest(mode=mode):
                response = send(client, wrong)
                self.assertEqual(response.status_code, 400)
                message = status_pb2.Status.FromString(response.data).message
                self.assertEqual(message, "proto: wrong wireType = 0 for field Name")
                self.assertEqual(send(client, unknown).status_code, 200)
                self.assertEqual(len(spans_of(client)), 1)

    def test_invalid_utf8_is_accepted_and_kept_readable(self) -> None:
        body = traces(Span(name="bad-X-name")).replace(b"X", b"\xff")
        for mode, client in self.both():
            with self.subTest(mode=mode):
                self.assertEqual(send(client, body).status_code, 200)
                (span,) = spans_of(client)
                self.assertEqual(span["name"], "bad-\ufffd-name")

    def test_pre_2022_layout_is_moved(self) -> None:
        for mode, client in self.both():
            with self.subTest(mode=mode):
                response = send(client, traces(Span(name="old"), old_layout=True))
                self.assertEqual(response.status_code, 200)
                self.assertEqual([s["name"] for s in spans_of(client)], ["old"])

    def test_encodings_the_collector_refuses(self) -> None:
        body = request_bytes("zipped")
        cases = {
            "identity": (body, "identity"),
            "raw deflate": (zlib.compress(body)[2:-4], "deflate"),
            "gzip header on an empty body": (b"", "gzip"),
            "two encodings": (gzip.compress(body), "gzip, identity"),
        }
        for label, (data, encoding) in cases.items():
            for mode, client in self.both():
                with self.subTest(label, mode=mode):
                    self.assertEqual(send(client, data, encoding=encoding).status_code, 400)
        # HTTP content codings are case-insensitive and x-gzip is gzip (RFC 9110): the
        # specification's reading; Go compares the header as sent.
        for encoding in ("GZIP", "x-gzip"):
            with self.subTest(encoding):
                response = send(self.collector_app, gzip.compress(body), encoding=encoding)
                self.assertEqual(response.status_code, 400)
                self.assertIn(b"unsupported Content-Encoding", response.data)
                response = send(self.spec_app, gzip.compress(body), encoding=encoding)
                self.assertEqual(response.status_code, 200)

    def test_bool_value_must_be_a_boolean(self) -> None:
        doc = json_span(attributes=[{"key": "b", "value": {"boolValue": 1}}])
        for mode, client in self.both():
            with self.subTest(mode=mode):
                response = send(client, json.dumps(doc).encode(), content_type=JSON)
                self.assertEqual(response.status_code, 400)

    def test_nesting_within_the_bound(self) -> None:
        def field(number: int, payload: bytes) -> bytes:
            return _varint(number << 3 | 2) + _varint(len(payload)) + payload

        def nested(depth: int) -> bytes:
            # Maps in maps, written by hand: the protobuf runtime refuses to build them.
            value = field(1, b"leaf")  # AnyValue.string_value
            for _ in range(depth):
                key_value = field(1, b"k") + field(2, value)
                value = field(6, field(1, key_value))  # AnyValue.kvlist_value.values
            span = field(5, b"deep") + field(9, field(1, b"a") + field(2, value))
            return field(1, field(2, field(2, span)))

        for mode, client in self.both():
            with self.subTest(mode=mode):
                self.assertEqual(send(client, nested(MAX_MAP_NESTING)).status_code, 200)
                (span,) = spans_of(client)
                self.assertEqual(span["name"], "deep")
                # Past what a protobuf parser reads back (100 messages deep): refused as
                # undecodable, never stored in a form queries could not read.
                response = send(client, nested(MAX_MAP_NESTING + 1))
                self.assertEqual(response.status_code, 400)


#: Maps nested in attribute values that a request may hold (a span's attribute is 5
#: messages deep, each map level 3 more, and protobuf parsers read 100).
MAX_MAP_NESTING = 31


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class AnsweredDifferentlyTest(BothModes):
    """Items 13-17: where the specification leaves room, each mode answers its way."""

    def test_body_over_the_limit(self) -> None:
        collector, _ = in_process(max_body_size=1000)
        spec, _ = in_process(compat="spec", max_body_size=1000)
        big = request_bytes("big", 40)
        self.assertGreater(len(big), 1000)
        response = send(collector, big)
        self.assertEqual((response.status_code, response.headers["Connection"]), (400, "close"))
        message = status_pb2.Status.FromString(response.data).message
        self.assertIn("http: request body too large", message)
        self.assertIn("max_body_size", message)
        response = send(spec, big)
        self.assertEqual((response.status_code, response.headers["Connection"]), (413, "close"))
        # Inflated past the limit: the same answers.
        bomb = gzip.compress(b"\0" * 5000)
        self.assertEqual(send(collector, bomb, encoding="gzip").status_code, 400)
        self.assertEqual(send(spec, bomb, encoding="gzip").status_code, 413)

    def test_default_limits(self) -> None:
        from mocksup.otlp import MockOTLPCollector

        collector = MockOTLPCollector().limits()
        spec = MockOTLPCollector(compat="spec").limits()
        self.assertEqual((collector.max_body_size, collector.grpc_max_message), (20 << 20, 4 << 20))
        self.assertEqual((spec.max_body_size, spec.grpc_max_message), (64 << 20, 64 << 20))
        mine = MockOTLPCollector(max_body_size=5, grpc_max_message=6).limits()
        self.assertEqual((mine.max_body_size, mine.grpc_max_message), (5, 6))

    def test_success_bodies(self) -> None:
        response = send(self.collector_app, request_bytes())
        self.assertEqual((response.status_code, response.data), (200, b"\x0a\x00"))
        response = send(self.collector_app, b"{}", content_type=JSON)
        self.assertEqual(json.loads(response.data), {"partialSuccess": {}})
        self.assertEqual(send(self.spec_app, request_bytes()).data, b"")
        self.assertEqual(json.loads(send(self.spec_app, b"{}", content_type=JSON).data), {})

    def test_retry_after(self) -> None:
        from mocksup.otlp import Fault

        for mode, client, ingest, expected in (
            ("collector", self.collector_app, self.collector_ingest, ("1", None)),
            ("spec", self.spec_app, self.spec_ingest, ("2", "2")),
        ):
            with self.subTest(mode=mode):
                ingest.faults.add([Fault(status=503, retry_after=1.9)])
                ingest.faults.add([Fault(status=500, retry_after=1.9)])
                first = send(client, request_bytes())
                second = send(client, request_bytes())
                self.assertEqual((first.status_code, second.status_code), (503, 500))
                got = (first.headers.get("Retry-After"), second.headers.get("Retry-After"))
                self.assertEqual(got, expected)

    def test_not_found_method_and_media_type(self) -> None:
        cases = (
            ("/v1/profiles", "POST", PB, 404, "404 page not found\n", "text/plain; charset=utf-8"),
            (
                "/v1/traces",
                "GET",
                PB,
                405,
                "405 method not allowed, supported: [POST]",
                "text/plain",
            ),
            (
                "/v1/traces",
                "POST",
                "text/plain",
                415,
                "415 unsupported media type, supported: [application/json, application/x-protobuf]",
                "text/plain",
            ),
        )
        for path, method, content_type, status, text, media in cases:
            with self.subTest(status=status):
                response = send(
                    self.collector_app, path=path, method=method, content_type=content_type
                )
                self.assertEqual(response.status_code, status)
                self.assertEqual((response.text, response.content_type), (text, media))
                spec = send(self.spec_app, path=path, method=method, content_type=content_type)
                self.assertEqual(spec.status_code, status)
                # A Status, in the request's encoding (JSON when that is not protobuf).
                if spec.content_type == PB:
                    self.assertTrue(status_pb2.Status.FromString(spec.data).message)
                else:
                    self.assertEqual(spec.content_type, JSON)
                    self.assertTrue(json.loads(spec.data)["message"])

    def test_metrics_without_data_points(self) -> None:
        request = ExportMetricsServiceRequest(
            resource_metrics=[
                ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[Metric(name="empty")])])
            ]
        ).SerializeToString()
        for client, ingest, kept in (
            (self.collector_app, self.collector_ingest, 0),
            (self.spec_app, self.spec_ingest, 1),
        ):
            self.assertEqual(send(client, request, path="/v1/metrics").status_code, 200)
            self.assertEqual(ingest.store.stats()["items"]["metrics"], kept)

    def test_json_body_shapes(self) -> None:
        for label, body, collector_status, spec_status in (
            ("empty", b"", 400, 200),
            ("whitespace", b" \r\n\t", 400, 200),
            ("data after the object", b'{"resourceSpans": []} trailing', 200, 400),
            ("top-level null", b"null", 200, 400),
            ("a list", b"[]", 400, 400),
            ("NaN token", b'{"x": NaN}', 400, 400),
        ):
            with self.subTest(label):
                response = send(self.collector_app, body, content_type=JSON)
                self.assertEqual(response.status_code, collector_status)
                response = send(self.spec_app, body, content_type=JSON)
                self.assertEqual(response.status_code, spec_status)

    def test_unknown_encoding_is_checked_first_by_the_collector(self) -> None:
        response = send(self.collector_app, b"x", content_type=None, encoding="br")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(json.loads(response.data)["message"], "unsupported Content-Encoding: br")
        # Another content type: Go's error handler cannot encode the Status, and says so.
        response = send(self.collector_app, b"x", content_type="text/plain", encoding="br")
        self.assertEqual(response.status_code, 500)
        self.assertEqual(json.loads(response.data)["code"], 13)
        # Before the router too.
        self.assertEqual(send(self.collector_app, path="/nope", encoding="br").status_code, 400)
        self.assertEqual(
            send(self.spec_app, b"x", content_type=None, encoding="br").status_code, 415
        )

    def test_media_type_parameters(self) -> None:
        for content_type, collector_status in (
            ("application/json; charset=utf-8", 200),
            ('Application/JSON ; charset="utf-8"', 200),
            ("application/json;", 200),
            ("application/json; charset", 415),
            ("application/json; a=1; a=2", 415),
            ("application/json;;", 415),
        ):
            with self.subTest(content_type):
                response = send(self.collector_app, b"{}", content_type=content_type)
                self.assertEqual(response.status_code, collector_status)
                self.assertEqual(
                    send(self.spec_app, b"{}", content_type=content_type).status_code, 200
                )


class ServerTest(CollectorTestCase):
    """Behaviours that need the real server and a real client."""

    def test_double_slash_path_is_redirected(self) -> None:
        # A raw socket: HTTP clients would clean or follow the path themselves.
        sock = socket.create_connection((self.collector.host, self.collector.port), timeout=10)
        self.addCleanup(sock.close)
        body = request_bytes()
        sock.sendall(
            b"POST //v1/traces?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = sock.recv(65536).split(b"\r\n\r\n")[0].decode()
        self.assertTrue(head.startswith("HTTP/1.1 301 "), head)
        self.assertIn("Location: /v1/traces?x=1", head)
        self.assertEqual(self.collector.spans(), [])
        (record,) = self.collector.requests()
        self.assertEqual((record.status, record.path), (301, "//v1/traces"))

    def test_python_exporter_behind_a_doubled_slash_loses_the_span(self) -> None:
        # An endpoint joined by hand with a trailing slash: the Collector redirects, and the
        # exporter (1.45, which counts any status under 400 as success and does not follow)
        # reports success for a span nobody kept. So does this collector now.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPExporter,
        )

        exporter = HTTPExporter(self.collector.http_endpoint + "//v1/traces", timeout=5)
        self.addCleanup(exporter.shutdown)
        provider = TracerProvider()
        self.addCleanup(provider.shutdown)
        with provider.get_tracer("t").start_as_current_span("lost") as span:
            pass
        exporter.export([span])  # type: ignore[list-item]
        self.assertEqual(self.collector.spans(), [])
        self.assertEqual([r.status for r in self.collector.requests()][:1], [301])


class GRPCTest(CollectorTestCase):
    """gRPC answers of the default (Collector) mode."""

    def test_deflate_is_unimplemented(self) -> None:
        endpoint = self.collector.grpc_endpoint or ""
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        self.addCleanup(provider.shutdown)
        with provider.get_tracer("t").start_as_current_span("deflated"):
            pass
        # The SDK's exporter, as an app sets it up: its deflated export fails at once (the
        # code is not one it retries) and it logs the collector's answer; gzip goes through.
        results = {}
        with self.assertLogs(_GRPC_EXPORTER_LOG, "ERROR") as logs:
            for compression in (grpc.Compression.Deflate, grpc.Compression.Gzip):
                exporter = OTLPSpanExporter(endpoint, insecure=True, compression=compression)
                self.addCleanup(exporter.shutdown)
                results[compression] = exporter.export(memory.get_finished_spans())
        self.assertEqual(
            results,
            {
                grpc.Compression.Deflate: SpanExportResult.FAILURE,
                grpc.Compression.Gzip: SpanExportResult.SUCCESS,
            },
        )
        (line,) = logs.output
        self.assertIn("error code: StatusCode.UNIMPLEMENTED", line)
        # Refused by the gRPC core before a handler runs: neither stored nor recorded.
        self.assertEqual([span.name for span in self.collector.spans()], ["deflated"])
        self.assertEqual([r.status for r in self.collector.requests()], ["OK"])
        # The same with a raw call.
        _, error = grpc_call(endpoint, request_bytes(), compression=grpc.Compression.Deflate)
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.UNIMPLEMENTED)
        _, error = grpc_call(endpoint, request_bytes(), compression=grpc.Compression.Gzip)
        self.assertIsNone(error)
        self.assertEqual(len(self.collector.requests()), 2)

    def test_zstd_and_snappy_are_inflated_as_the_collector_does(self) -> None:
        # The Collector's gRPC server has gzip, zstd and snappy (the framed format)
        # decompressors; what it lacks is UNIMPLEMENTED, as grpc-go answers it.
        endpoint = self.collector.grpc_endpoint or ""
        body = request_bytes("squeezed")
        for encoding, packed in (
            ("zstd", bytes(cramjam.zstd.compress(body))),
            ("snappy", bytes(cramjam.snappy.compress(body))),
            ("gzip", gzip.compress(body)),
        ):
            self.assertEqual(raw_grpc_call(endpoint, packed, encoding=encoding), (0, ""), encoding)
        self.assertEqual([s.name for s in self.collector.spans()], ["squeezed"] * 3)
        self.assertEqual(
            [r.content_encoding for r in self.collector.requests()], ["zstd", "snappy", "gzip"]
        )
        status, message = raw_grpc_call(
            endpoint, bytes(cramjam.snappy.compress_raw(body)), encoding="snappy"
        )
        self.assertEqual(status, grpc.StatusCode.INTERNAL.value[0])
        self.assertTrue(message.startswith("grpc: failed to read decompressed data: "), message)
        self.assertEqual(
            raw_grpc_call(endpoint, body, encoding="br"),
            (
                grpc.StatusCode.UNIMPLEMENTED.value[0],
                'grpc: Decompressor is not installed for grpc-encoding "br"',
            ),
        )
        self.assertEqual(len(self.collector.spans()), 3)

    def test_undecodable_and_wrong_ids_are_internal(self) -> None:
        for body in (b"\xff\xff garbage", traces(Span(trace_id=bytes(8)))):
            _, error = grpc_call(self.collector.grpc_endpoint or "", body)
            assert error is not None
            self.assertEqual(error.code(), grpc.StatusCode.INTERNAL)
            self.assertTrue(error.details().startswith("grpc: error unmarshalling request"))
        self.assertEqual([r.status for r in self.collector.requests()], ["INTERNAL", "INTERNAL"])

    def test_success_body_and_default_limit(self) -> None:
        response, error = grpc_call(self.collector.grpc_endpoint or "", request_bytes())
        self.assertEqual((response, error), (b"\x0a\x00", None))
        big = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(name="x" * (4 << 20))])])
            ]
        ).SerializeToString()
        _, error = grpc_call(self.collector.grpc_endpoint or "", big)
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)


class SpecGRPCTest(CollectorTestCase):
    collector_settings = {"compat": "spec"}

    def test_undecodable_is_invalid_argument_and_limit_64_mib(self) -> None:
        _, error = grpc_call(self.collector.grpc_endpoint or "", b"\xff\xff garbage")
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        response, error = grpc_call(self.collector.grpc_endpoint or "", request_bytes())
        self.assertEqual((response, error), (b"", None))
        big = traces(Span(name="x" * (5 << 20)))
        self.assertEqual(grpc_call(self.collector.grpc_endpoint or "", big)[1], None)


class HTTPRoundTripTest(CollectorTestCase):
    """The default mode over a real socket: success bodies the exporters see."""

    def test_collector_success_bodies(self) -> None:
        status, headers, body = post(self.collector, "/v1/traces", request_bytes())
        self.assertEqual((status, body), (200, b"\x0a\x00"))
        self.assertEqual(headers["content-type"], PB)
