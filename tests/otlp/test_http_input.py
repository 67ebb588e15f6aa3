"""Bad and unusual OTLP/HTTP input gets the specification's answer (``compat="spec"``), and
nothing is lost. The Collector's answers to the same input are in ``test_compat``."""

from __future__ import annotations

import http.client
import json
import socket
import zlib

from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.otlp.support import CollectorTestCase, gzipped, post, post_json
from tests.support import half_sent_bodies, poll_until

TRACE_ID = "5B8EFFF798038103D269B633813FC60C"
SPAN_ID = "EEE19B7EC3C1B174"


def request_bytes(name: str = "kept", count: int = 1) -> bytes:
    spans = [
        Span(trace_id=bytes(range(16)), span_id=bytes([i + 1] * 8), name=name) for i in range(count)
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString()


def json_span(**overrides: object) -> dict[str, object]:
    span: dict[str, object] = {
        "traceId": TRACE_ID,
        "spanId": SPAN_ID,
        "name": "json-span",
        "kind": 2,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": 1544712661000000000,
    }
    span.update(overrides)
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


class HTTPInputTest(CollectorTestCase):
    collector_settings = {"max_body_size": 1 << 20, "compat": "spec"}

    def setUp(self) -> None:
        super().setUp()
        # Data accepted before every bad request must survive it.
        status, _, _ = post(self.collector, "/v1/traces", request_bytes("kept"))
        self.assertEqual(status, 200)

    def tearDown(self) -> None:
        # ...and the collector keeps serving after it.
        status, _, _ = post(self.collector, "/v1/traces", request_bytes("after"))
        self.assertEqual(status, 200)
        self.assertEqual([s.name for s in self.collector.spans()], ["kept", "after"])
        super().tearDown()

    def assert_status_body(
        self, body: bytes, code: int, *, json_body: bool = False
    ) -> status_pb2.Status:
        status = status_pb2.Status()
        if json_body:
            doc = json.loads(body)
            status.code, status.message = doc["code"], doc["message"]
        else:
            status.ParseFromString(body)
        self.assertEqual(status.code, code)
        self.assertTrue(status.message)
        return status

    def test_success_mirrors_content_type(self) -> None:
        status, headers, body = post(self.collector, "/v1/traces", request_bytes("pb"))
        self.assertEqual((status, headers["content-type"]), (200, "application/x-protobuf"))
        self.assertEqual(
            ExportTraceServiceResponse.FromString(body).HasField("partial_success"), False
        )
        status, headers, doc = post_json(self.collector, "/v1/traces", json_span())
        self.assertEqual((status, headers["content-type"], doc), (200, "application/json", {}))
        self.assertEqual(len(self.collector.spans("json-span")), 1)
        self.collector.clear()
        post(self.collector, "/v1/traces", request_bytes("kept"))

    def test_empty_request_is_ok(self) -> None:
        for content_type in ("application/x-protobuf", "application/json"):
            status, _, _ = post(self.collector, "/v1/traces", b"", content_type=content_type)
            self.assertEqual(status, 200)
        status, _, _ = post_json(self.collector, "/v1/logs", {})
        self.assertEqual(status, 200)

    def test_method_not_allowed(self) -> None:
        status, headers, body = post(self.collector, "/v1/traces", b"", method="GET")
        self.assertEqual((status, headers["allow"]), (405, "POST"))
        self.assert_status_body(body, 2)  # UNKNOWN: no gRPC code maps to 405

    def test_unsupported_media_type(self) -> None:
        status, _, body = post(self.collector, "/v1/traces", b"x", content_type="text/plain")
        self.assertEqual(status, 415)
        self.assert_status_body(body, 2, json_body=True)

    def test_charset_parameter_is_fine(self) -> None:
        status, _, _ = post(
            self.collector,
            "/v1/traces",
            json.dumps(json_span()).encode(),
            content_type="application/json; charset=utf-8",
        )
        self.assertEqual(status, 200)
        self.collector.clear()
        post(self.collector, "/v1/traces", request_bytes("kept"))

    def test_unknown_path(self) -> None:
        status, _, body = post(self.collector, "/v1/profiles", request_bytes())
        self.assertEqual(status, 404)
        self.assert_status_body(body, 12)

    def test_undecodable_protobuf(self) -> None:
        status, headers, body = post(self.collector, "/v1/traces", b"\xff\xff\xff garbage")
        self.assertEqual((status, headers["content-type"]), (400, "application/x-protobuf"))
        status_message = self.assert_status_body(body, 3)
        bad_request = error_details_pb2.BadRequest()
        self.assertTrue(status_message.details[0].Unpack(bad_request))

    def test_undecodable_json(self) -> None:
        status, headers, body = post(
            self.collector, "/v1/traces", b"{not json", content_type="application/json"
        )
        self.assertEqual((status, headers["content-type"]), (400, "application/json"))
        self.assert_status_body(body, 3, json_body=True)

    def test_wrong_id_length(self) -> None:
        status, _, doc = post_json(self.collector, "/v1/traces", json_span(spanId="abcd"))
        self.assertEqual(status, 400)
        self.assertEqual(doc["code"], 3)
        self.assertIn("length mismatch", doc["message"])
        self.assertEqual(doc["details"][0]["fieldViolations"][0]["field"], "span_id")

    def test_values_nested_too_deeply(self) -> None:
        for depth in (60, 5000):
            # Written as text: json.dumps itself cannot nest 5000 levels.
            value = '{"arrayValue":{"values":[' * depth + '{"stringValue":"x"}' + "]}}" * depth
            text = json.dumps(json_span(attributes=[{"key": "deep", "value": "@"}]))
            body = text.replace('"@"', value).encode()
            status, _, answer = post(
                self.collector, "/v1/traces", body, content_type="application/json"
            )
            self.assertEqual(status, 400, depth)
            self.assertEqual(json.loads(answer)["code"], 3)
        shallow = {"arrayValue": {"values": [{"kvlistValue": {"values": []}}]}}
        status, _, _ = post_json(
            self.collector, "/v1/traces", json_span(attributes=[{"key": "a", "value": shallow}])
        )
        self.assertEqual(status, 200)
        (span,) = self.collector.spans("json-span")
        self.assertEqual(span.attributes, {"a": [{}]})
        self.collector.clear()
        post(self.collector, "/v1/traces", request_bytes("kept"))

    def test_broken_gzip(self) -> None:
        status, _, body = post(
            self.collector,
            "/v1/traces",
            gzipped(request_bytes())[:-12],
            headers={"Content-Encoding": "gzip"},
        )
        self.assertEqual(status, 400)
        self.assert_status_body(body, 3)
        status, _, _ = post(
            self.collector, "/v1/traces", b"not gzip at all", headers={"Content-Encoding": "gzip"}
        )
        self.assertEqual(status, 400)
        # HTTP's deflate is zlib-wrapped: raw deflate is refused, in both modes.
        raw_deflate = zlib.compress(request_bytes())[2:-4]
        status, _, body = post(
            self.collector, "/v1/traces", raw_deflate, headers={"Content-Encoding": "deflate"}
        )
        self.assertEqual(status, 400)
        self.assertIn("zlib", self.assert_status_body(body, 3).message)

    def test_unknown_encoding(self) -> None:
        status, _, _ = post(
            self.collector, "/v1/traces", request_bytes(), headers={"Content-Encoding": "br"}
        )
        self.assertEqual(status, 400)

    def test_gzip_and_deflate(self) -> None:
        for encoding, data in (
            ("gzip", gzipped(request_bytes("zipped"))),
            ("x-gzip", gzipped(request_bytes("zipped"))),  # RFC 9110: the same as gzip
            ("deflate", zlib.compress(request_bytes("zipped"))),
        ):
            status, _, _ = post(
                self.collector, "/v1/traces", data, headers={"Content-Encoding": encoding}
            )
            self.assertEqual(status, 200, encoding)
        self.assertEqual(len(self.collector.spans("zipped")), 3)
        records = self.collector.requests(limit=3)
        self.assertEqual([r.content_encoding for r in records], ["gzip", "x-gzip", "deflate"])
        self.assertEqual(records[0].decoded_size, len(request_bytes("zipped")))
        self.collector.clear()
        post(self.collector, "/v1/traces", request_bytes("kept"))

    def test_body_over_limit(self) -> None:
        # The head alone says the body is too large: the answer comes before the body is
        # sent (a client still sending would meet a closed connection).
        sock = socket.create_connection((self.collector.host, self.collector.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {(1 << 20) + 1}\r\n\r\n".encode()
        )
        reply = sock.makefile("rb")
        status_line = reply.readline()
        headers = {}
        while line := reply.readline().strip():
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        body = reply.read(int(headers["content-length"]))
        self.assertTrue(status_line.startswith(b"HTTP/1.1 413 "), status_line)
        self.assertEqual(headers.get("connection"), "close")
        self.assert_status_body(body, 8)

    def test_gzip_bomb_refused_after_the_limit(self) -> None:
        bomb = gzipped(b"\0" * (64 << 20))  # 64 MiB inflated, 64 KiB on the wire
        self.assertLess(len(bomb), 1 << 20)
        status, _, body = post(
            self.collector, "/v1/traces", bomb, headers={"Content-Encoding": "gzip"}
        )
        self.assertEqual(status, 413)
        self.assert_status_body(body, 8)
        (record,) = self.collector.requests(limit=1)
        self.assertEqual((record.status, record.size), (413, len(bomb)))

    def test_chunked_body(self) -> None:
        conn = http.client.HTTPConnection(self.collector.host, self.collector.port, timeout=10)
        self.addCleanup(conn.close)
        data = request_bytes("chunked")
        conn.request(
            "POST",
            "/v1/traces",
            body=iter([data[:5], data[5:]]),
            headers={"Content-Type": "application/x-protobuf"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        response.read()
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.collector.spans("chunked")), 1)
        self.collector.clear()
        post(self.collector, "/v1/traces", request_bytes("kept"))

    def test_errors_are_counted_and_recorded(self) -> None:
        post(self.collector, "/v1/traces", b"\xff\xff", content_type="application/x-protobuf")
        (record,) = self.collector.requests(limit=1)
        self.assertEqual(record.status, 400)
        self.assertIn("cannot parse", record.error or "")
        self.assertEqual(self.collector.stats()["rejected_requests"], 1)


#: What the HTTP server drains of a body its app left unread to keep the connection
#: (``mocksup/_http/body.py``'s ``DRAIN_LIMIT``): written out, so that the test pins it.
DRAIN_LIMIT = 1 << 20


class UnreadBodyTest(CollectorTestCase):
    """A body the collector answers without reading (an unknown path): up to 1 MiB of it is
    drained and the connection serves the next request; more, and the connection closes
    (rather than read an unbounded body that no one wants)."""

    collector_settings = {"grpc_port": None}

    def unread_then_next(self, size: int, *, chunked: bool) -> tuple[int, str, int | None]:
        """Post ``size`` body bytes to an unknown path over a raw socket, then ask for the
        stats on the same connection: the first status, its ``Connection`` header, and the
        second status (``None`` when the connection was closed instead)."""
        sock = socket.create_connection((self.collector.host, self.collector.port), timeout=10)
        self.addCleanup(sock.close)
        head = b"POST /v1/nowhere HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-protobuf\r\n"
        if chunked:
            pieces = [b"x" * min(65536, size - at) for at in range(0, size, 65536)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
            head += b"Transfer-Encoding: chunked\r\n\r\n"
        else:
            body = b"x" * size
            head += b"Content-Length: %d\r\n\r\n" % size
        sock.sendall(head + body)
        first = http.client.HTTPResponse(sock)
        first.begin()
        first.read()
        try:
            sock.sendall(b"GET /mocksup/stats HTTP/1.1\r\nHost: h\r\n\r\n")
            second = http.client.HTTPResponse(sock)
            second.begin()
            second.read()
        except (http.client.RemoteDisconnected, ConnectionError):
            return first.status, first.getheader("Connection") or "", None
        return first.status, first.getheader("Connection") or "", second.status

    def test_content_length_body_up_to_the_limit_is_drained(self) -> None:
        self.assertEqual(self.unread_then_next(DRAIN_LIMIT, chunked=False), (404, "", 200))

    def test_content_length_body_past_the_limit_closes(self) -> None:
        # The head says so: the answer itself announces the close.
        self.assertEqual(
            self.unread_then_next(DRAIN_LIMIT + 1, chunked=False), (404, "close", None)
        )

    def test_chunked_body_up_to_the_limit_is_drained(self) -> None:
        self.assertEqual(self.unread_then_next(DRAIN_LIMIT, chunked=True), (404, "", 200))

    def test_chunked_body_past_the_limit_closes(self) -> None:
        # Its size is known only by reading it: the answer went out before the drain gave up.
        self.assertEqual(self.unread_then_next(DRAIN_LIMIT + 1, chunked=True), (404, "", None))
        # The collector serves on, and recorded the request it answered.
        self.assertEqual([r.status for r in self.collector.requests()], [404])
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes())[0], 200)


class HeldBodiesTest(CollectorTestCase):
    """The bodies of the exports in progress are bounded together (25 at the body limit):
    past that an export is answered 503, retryable, and nothing of it is kept."""

    collector_settings = {"grpc_port": None, "max_body_size": 1024}

    def test_an_export_past_what_may_be_held_is_refused_until_room_is_made(self) -> None:
        # 25 x 1,024 bytes, each half sent: all that may be held.
        address = (self.collector.host, self.collector.port)
        held = half_sent_bodies(
            self, address, "/v1/traces", "application/x-protobuf", count=25, size=1024
        )
        answers: list[tuple[int, dict[str, str], bytes]] = []

        def refused() -> bool:
            answers.append(post(self.collector, "/v1/traces", request_bytes("refused")))
            return answers[-1][0] == 503

        poll_until(refused, "an export refused while 25 bodies at the limit are held")
        _, headers, body = answers[-1]
        self.assertEqual(headers["connection"], "close")
        answer = status_pb2.Status.FromString(body)
        self.assertEqual(answer.code, 14)  # UNAVAILABLE: an exporter retries it
        self.assertIn("request bodies", answer.message)
        # The clients go away mid-body: what their requests held is given back.
        for sock in held:
            sock.close()
        poll_until(lambda: post(self.collector, "/v1/traces", request_bytes("kept"))[0] == 200,
                   "an export served once the held bodies are gone")  # fmt: skip
        # Kept: exactly the exports answered 200 (on a busy machine, the first tries may
        # come before the server holds all 25 bodies); nothing of one refused.
        served = [status for status, _, _ in answers].count(200)
        names = [span.name for span in self.collector.spans()]
        self.assertEqual(names, ["refused"] * served + ["kept"])
