"""The control routes' rules over raw HTTP: declared parameters, one long-poll timeout, the
streamed answers, and the HTTP server settings (connection cap, Go's Host rule)."""

from __future__ import annotations

import http.client
import json
import socket
import time

from pydantic import ValidationError

from mocksup.control import MAX_WAIT
from mocksup.otlp import Fault, MockOTLPCollector
from mocksup.otlp.faults import MAX_DELAY
from tests.otlp.support import CollectorTestCase, post
from tests.otlp.test_http_input import request_bytes
from tests.support import ProcessTestCase


def get(collector: MockOTLPCollector, target: str) -> tuple[int, dict[str, str], bytes]:
    """One raw GET; status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection(collector.host, collector.port, timeout=30)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class ParametersTest(CollectorTestCase):
    def setUp(self) -> None:
        super().setUp()
        post(self.collector, "/v1/traces", request_bytes("kept", 2))

    def refused(self, target: str) -> str:
        status, headers, body = get(self.collector, target)
        self.assertEqual((status, headers["content-type"]), (400, "application/json"), body)
        error: str = json.loads(body)["error"]
        return error

    def test_an_unknown_parameter_is_refused_naming_the_known_ones(self) -> None:
        error = self.refused("/mocksup/spans?service=x")
        self.assertIn("unknown parameter 'service'", error)
        self.assertIn("service_name", error)  # the spelling it meant
        self.assertIn("trace_id", error)
        self.assertIn("unknown parameter 'nmae'", self.refused("/mocksup/logs?nmae=x"))
        # A filter of another signal is unknown here too.
        self.assertIn("unknown parameter 'kind'", self.refused("/mocksup/metrics?kind=SERVER"))
        self.assertIn("unknown parameter 'x'", self.refused("/mocksup/stats?x=1"))
        # The right spelling filters.
        status, _, body = get(self.collector, "/mocksup/spans?service_name=x")
        self.assertEqual((status, json.loads(body)["count"]), (200, 0))

    def test_repeated_and_malformed_values(self) -> None:
        self.assertIn("more than once", self.refused("/mocksup/spans?name=a&name=b"))
        self.assertIn("'encoding' must be one of", self.refused("/mocksup/spans?encoding=xml"))
        self.assertIn("'count' must be an integer", self.refused("/mocksup/spans/wait?count=x"))
        self.assertIn("'after' must be from 0", self.refused("/mocksup/feed?after=-1"))
        self.assertIn("not 32 hex digits", self.refused("/mocksup/spans?trace_id=abcd"))
        self.assertIn("unknown span kind", self.refused("/mocksup/spans?kind=SIDEWAYS"))
        self.assertIn("'signal' must be one of", self.refused("/mocksup/export?signal=profiles"))

    def test_malformed_ids_kinds_and_cursors_name_their_parameter(self) -> None:
        # Python's own messages ("non-hexadecimal number found in fromhex() arg",
        # "invalid literal for int()") named neither the parameter nor what it wants.
        cases = {
            "/mocksup/spans?trace_id=zz": "trace_id 'zz' is not 32 hex digits",
            "/mocksup/traces/" + "g" * 32: "trace_id '" + "g" * 32 + "' is not 32 hex digits",
            "/mocksup/logs?span_id=%20" + "0" * 15: "span_id ' " + "0" * 15 + "' is not 16 hex",
            "/mocksup/spans?kind=--5": "unknown span kind '--5'; one of",
            "/mocksup/spans?status=1e3": "unknown status code '1e3'; one of",
            "/mocksup/feed?after=99&timeout=0": "parameter 'after': cursor 99 is past",
        }
        for target, message in cases.items():
            with self.subTest(target):
                self.assertIn(message, self.refused(target))

    def test_clear_takes_no_body(self) -> None:
        # A body was ignored while everything was forgotten: {"signal": "traces"} cleared
        # the logs and metrics too.
        for body in (b'{"signal": "traces"}', b'{"metrics": true}', b"[1]", b"0"):
            with self.subTest(body):
                status, _, answer = post(self.collector, "/mocksup/clear", body)
                self.assertEqual(status, 400)
                self.assertIn("takes no body", json.loads(answer)["error"])
        self.assertEqual(len(self.collector.spans()), 2)
        for body in (b"", b"{}"):
            self.assertEqual(post(self.collector, "/mocksup/clear", body)[0], 200)
        self.assertEqual(self.collector.spans(), [])

    def test_a_wait_longer_than_the_cap_is_refused_not_shortened(self) -> None:
        for route in ("spans/wait", "metrics/wait", "logs/wait", "feed"):
            with self.subTest(route):
                error = self.refused(f"/mocksup/{route}?timeout={MAX_WAIT + 1:g}")
                self.assertIn("the longest wait is 600 s", error)
        started = time.monotonic()
        status, _, body = get(self.collector, f"/mocksup/spans/wait?count=2&timeout={MAX_WAIT:g}")
        self.assertEqual((status, json.loads(body)["matched"]), (200, True))
        self.assertLess(time.monotonic() - started, 10)  # matched at once, not held

    def test_routes_methods_and_the_index(self) -> None:
        status, _, body = get(self.collector, "/mocksup/nope")
        self.assertEqual(status, 404)
        self.assertIn("no control route GET /mocksup/nope", json.loads(body)["error"])
        conn = http.client.HTTPConnection(self.collector.host, self.collector.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("DELETE", "/mocksup/stats")
        response = conn.getresponse()
        self.assertEqual((response.status, response.getheader("Allow")), (405, "GET"))
        response.read()
        status, _, body = get(self.collector, "/mocksup")
        routes = {r["path"]: r for r in json.loads(body)["routes"]}
        self.assertIn("after", routes["/mocksup/feed"]["params"])
        self.assertIn("service_name", routes["/mocksup/spans"]["params"])
        self.assertIn("timeout", routes["/mocksup/logs/wait"]["params"])
        health = json.loads(get(self.collector, "/mocksup/health")[2])
        self.assertEqual(
            (health["status"], health["class"], health["port"], health["grpc_port"]),
            ("ok", "MockOTLPCollector", self.collector.port, self.collector.grpc_port),
        )

    def test_bad_fault_bodies(self) -> None:
        conn = http.client.HTTPConnection(self.collector.host, self.collector.port, timeout=10)
        self.addCleanup(conn.close)
        for body, expected in (
            (b'{"status": 200}', "status"),
            (b"{", "not valid JSON"),
            (b'{"count": NaN}', "not valid JSON"),
            # Accepted, these made every export they met answer 500 (a timer of 1e308 s,
            # an infinity in the answer, an int64 field past its range).
            (b'{"delay": 1e308}', "delay\n  Input should be less than or equal to 3600"),
            (b'{"delay": 3600.5}', "less than or equal to 3600"),
            (b'{"status": 503, "retry_after": 1e308}', "retry_after\n  Input should be less"),
            (b'{"delay": 1e400}', "out of a double's range"),
            (b'{"rejected": 9223372036854775808}', "less than or equal to 9223372036854775807"),
        ):
            with self.subTest(body):
                conn.request("POST", "/mocksup/faults", body=body)
                response = conn.getresponse()
                answer = json.loads(response.read())
                self.assertEqual(response.status, 400)
                self.assertIn(expected, answer["error"])
        self.assertEqual(self.collector.faults(), [])
        self.assertEqual(post(self.collector, "/v1/traces", request_bytes("after", 1))[0], 200)
        with self.assertRaises(ValidationError):
            Fault(delay=float("inf"))
        with self.assertRaises(ValidationError):
            self.collector.delay_next(MAX_DELAY + 1)


class StreamedAnswerTest(CollectorTestCase):
    def test_item_answers_are_chunked_and_list_each_resource_once(self) -> None:
        for _ in range(3):  # the same resource and scope in three requests
            post(self.collector, "/v1/traces", request_bytes("same", 2))
        status, headers, body = get(self.collector, "/mocksup/spans")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("transfer-encoding"), "chunked")
        self.assertNotIn("content-length", headers)
        doc = json.loads(body)
        self.assertEqual((doc["count"], len(doc["spans"])), (6, 6))
        self.assertEqual((len(doc["resources"]), len(doc["scopes"])), (1, 1))
        self.assertEqual({(s["resource"], s["scope"]) for s in doc["spans"]}, {(0, 0)})

    def test_protobuf_answers_carry_their_count(self) -> None:
        post(self.collector, "/v1/traces", request_bytes("pb", 3))
        status, headers, body = get(self.collector, "/mocksup/spans?encoding=protobuf&name=pb")
        self.assertEqual((status, headers["x-mocksup-count"]), (200, "3"))
        self.assertEqual(headers["content-length"], str(len(body)))


class HTTPSettingsTest(ProcessTestCase):
    def raw(self, collector: MockOTLPCollector, request: bytes) -> bytes:
        with socket.create_connection((collector.host, collector.port), timeout=10) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def test_http11_without_host_is_refused_as_go_refuses_it(self) -> None:
        collector = self.start_server(MockOTLPCollector(port=0, grpc_port=None))
        answer = self.raw(collector, b"GET /mocksup/health HTTP/1.1\r\nConnection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "), head)
        self.assertEqual(body, b"400 Bad Request: missing required Host header")
        # HTTP/1.0 needs no Host, and the collector keeps serving.
        answer = self.raw(collector, b"GET /mocksup/health HTTP/1.0\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:40])

    def test_env_for_grpc_without_grpc_names_the_parameter(self) -> None:
        collector = self.start_server(MockOTLPCollector(port=0, grpc_port=None))
        status, _, body = get(collector, "/mocksup/env?protocol=grpc")
        self.assertEqual(status, 400)
        self.assertEqual(
            json.loads(body)["error"],
            "parameter 'protocol' is grpc, but gRPC is switched off on this collector "
            "(grpc_port=None)",
        )

    def test_spec_mode_accepts_it(self) -> None:
        collector = self.start_server(MockOTLPCollector(port=0, grpc_port=None, compat="spec"))
        answer = self.raw(collector, b"GET /mocksup/health HTTP/1.1\r\nConnection: close\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:40])

    def test_max_connections_reaches_the_server(self) -> None:
        self.assertEqual(MockOTLPCollector().http_limits().max_connections, 256)
        collector = self.start_server(MockOTLPCollector(port=0, grpc_port=None, max_connections=1))
        idle = socket.create_connection((collector.host, collector.port), timeout=10)
        self.addCleanup(idle.close)
        idle.sendall(b"GET /mocksup/health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", _read_response(idle))
        # The one connection allowed is idle: a second client is served once it is closed
        # to make room, and the first one sees its connection end.
        status, _, _ = get(collector, "/mocksup/health")
        self.assertEqual(status, 200)
        self.assertEqual(idle.recv(1), b"")


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return head
