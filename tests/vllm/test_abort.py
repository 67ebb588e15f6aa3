"""A request whose client goes away is aborted, as vLLM's ``with_cancellation`` aborts it:
``finished_reason="abort"``, no span, gauges and ``/load`` back down, the journal says so."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

from mocksup.otlp import MockOTLPCollector
from mocksup.vllm import MockVLLMServer
from tests.vllm.support import ServerTestCase, raw_post, scrape, until

ABORT = ("vllm:request_success_total", (("finished_reason", "abort"),))


def send_and_leave(server: MockVLLMServer, body: dict[str, object], ttft: float) -> None:
    """Send one request on a raw socket, wait until the engine runs it, then close."""
    send(server, body, ttft).close()


def send(server: MockVLLMServer, body: dict[str, object], ttft: float) -> socket.socket:
    """Send one request on a raw socket and return it once the engine runs the request."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    payload = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-Mocksup-TTFT: {ttft}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    until(lambda: server.stats()["running"] >= 1)
    return sock


class AbortTest(ServerTestCase):
    collector: MockOTLPCollector

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        cls.collector = MockOTLPCollector(port=0, grpc_port=0)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()
        return MockVLLMServer(
            port=0,
            otlp_traces_endpoint=cls.collector.grpc_endpoint,
            enable_server_load_tracking=True,
        )

    def load(self) -> int:
        with urllib.request.urlopen(self.server.url + "/load", timeout=10) as answer:
            return int(json.loads(answer.read())["server_load"])

    def test_a_non_streamed_request_is_aborted_when_its_client_leaves(self) -> None:
        self.server.clear()
        before = scrape(self.server)
        started = time.monotonic()
        sock = send(self.server, {"prompt": "leaving early", "max_tokens": 5}, ttft=30)
        self.assertEqual(self.load(), 1)  # counted while it runs, with load tracking on
        sock.close()
        (entry,) = self.server.wait_for_requests(path="/v1/completions", timeout=20)
        # Aborted at once, not after its 30 s of simulated prefill.
        self.assertLess(time.monotonic() - started, 20)
        self.assertLess(entry.duration, 20)
        self.assertTrue(entry.client_disconnected)
        self.assertIsNone(entry.status)
        after = scrape(self.server)
        self.assertEqual(after[ABORT], before[ABORT] + 1)
        for gauge in (
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
        ):
            self.assertEqual(after[(gauge, ())], 0, gauge)
        self.assertEqual(self.load(), 0)
        for reason in ("stop", "length"):
            key = ("vllm:request_success_total", (("finished_reason", reason),))
            self.assertEqual(after[key], before[key], reason)
        # vLLM's cancellation wrapper answers an (unheard) empty 200: the HTTP metrics say so.
        requests = (
            "http_requests_total",
            (("handler", "/v1/completions"), ("method", "POST"), ("status", "2xx")),
        )
        self.assertEqual(after[requests], before.get(requests, 0) + 1)
        # No span for it: the next request's span comes, the aborted one never did.
        response = raw_post(self.server, "/v1/completions", {"prompt": "next", "max_tokens": 1})
        next_id = json.loads(response[2])["id"] + "-0"
        self.collector.wait_for_spans("llm_request", attributes={"gen_ai.request.id": next_id})
        ids = [s.attributes["gen_ai.request.id"] for s in self.collector.spans("llm_request")]
        self.assertEqual(ids.count(next_id), 1)
        self.assertEqual(len(ids), 1, ids)

    def test_a_stream_waiting_for_its_first_token_is_aborted_too(self) -> None:
        self.server.clear()
        before = scrape(self.server)
        body = {"prompt": "stream and leave", "max_tokens": 5, "stream": True}
        send_and_leave(self.server, body, ttft=30)
        (entry,) = self.server.wait_for_requests(path="/v1/completions", timeout=20)
        self.assertLess(entry.duration, 20)
        self.assertTrue(entry.client_disconnected)
        after = scrape(self.server)
        self.assertEqual(after[ABORT], before[ABORT] + 1)
        self.assertEqual(after[("vllm:num_requests_running", ())], 0)

    def test_vllms_abort_metrics_reset(self) -> None:
        # vLLM's test_abort_metrics_reset: long requests, then cancelled; gauges back to 0.
        self.server.clear()
        body = {"prompt": [1, 2, 3, 4, 5], "max_tokens": 500, "temperature": 0.0}
        for _ in range(3):
            send_and_leave(self.server, body, ttft=30)
        self.server.wait_for_requests(count=3, path="/v1/completions", timeout=20)
        after = scrape(self.server)
        self.assertEqual(
            (
                after[("vllm:num_requests_running", ())],
                after[("vllm:num_requests_waiting", ())],
                after[("vllm:kv_cache_usage_perc", ())],
            ),
            (0, 0, 0),
        )
