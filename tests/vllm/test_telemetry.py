"""``/metrics`` under traffic (parsed with prometheus_client) and the timing the mock simulates."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request

from mocksup.vllm import MockVLLMServer
from tests.vllm.support import ServerTestCase, hold, raw_post, raw_request, running, scrape, until

#: How late a delay may be on a loaded machine before a test calls it wrong.
SLACK = 1.0


class MetricsTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0, served_model_name=["base", "alias"], enable_server_load_tracking=True
        )

    def test_vllm_metrics_counts_after_traffic(self) -> None:
        # vLLM's tests/entrypoints/openai/test_metrics.py, replayed over HTTP.
        self.server.clear(metrics=True)
        prompt = "The capital of the world is"
        p = json.loads(raw_post(self.server, "/tokenize", {"prompt": prompt})[2])["count"]
        n, m = 10, 10
        for _ in range(n):
            response = self.client.completions.create(
                model="alias", prompt=prompt, max_tokens=m, extra_body={"ignore_eos": True}
            )
            self.assertEqual(response.choices[0].finish_reason, "length")
        got = scrape(self.server)
        expected = {
            "vllm:time_to_first_token_seconds_count": n,
            "vllm:inter_token_latency_seconds_count": n * (m - 1),
            "vllm:e2e_request_latency_seconds_count": n,
            "vllm:request_queue_time_seconds_count": n,
            "vllm:request_inference_time_seconds_count": n,
            "vllm:request_prefill_time_seconds_count": n,
            "vllm:request_decode_time_seconds_count": n,
            "vllm:request_prompt_tokens_sum": n * p,
            "vllm:request_prompt_tokens_count": n,
            "vllm:request_generation_tokens_sum": n * m,
            "vllm:request_params_n_count": n,
            "vllm:request_params_max_tokens_sum": n * m,
            "vllm:iteration_tokens_total_sum": n * (p + m),
            "vllm:iteration_tokens_total_count": n * m,
            "vllm:prompt_tokens_total": n * p,
            "vllm:generation_tokens_total": n * m,
        }
        for name, value in expected.items():
            self.assertEqual(got[(name, ())], value, name)
        for reason in ("stop", "length", "abort", "error", "repetition"):
            key = ("vllm:request_success_total", (("finished_reason", reason),))
            self.assertEqual(got[key], n if reason == "length" else 0, reason)
        # prometheus-fastapi-instrumentator's families, as vLLM's API server has them.
        http = ("http_requests_total", (("handler", "/v1/completions"), ("method", "POST"),
                                        ("status", "2xx")))  # fmt: skip
        self.assertEqual(got[http], n)
        self.assertEqual(got[("http_request_duration_highr_seconds_count", ())], n + 1)  # +tokenize
        self.assertFalse(any(dict(labels).get("handler") == "/metrics" for _, labels in got))

    def test_live_gauges_follow_a_slow_stream_and_its_disconnect(self) -> None:
        self.server.clear()
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        body = {"prompt": "x", "max_tokens": 400, "ignore_eos": True, "stream": True}
        conn.request(
            "POST",
            "/v1/completions",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "X-Mocksup-ITL": "0.02"},
        )
        response = conn.getresponse()
        self.assertTrue(response.readline().startswith(b"data: "))  # the chunk-size line
        during = scrape(self.server)
        self.assertGreaterEqual(during[("vllm:num_requests_running", ())], 1)
        self.assertGreater(during[("vllm:kv_cache_usage_perc", ())], 0)
        with urllib.request.urlopen(self.server.url + "/load", timeout=5) as answer:
            load = json.loads(answer.read())
        self.assertGreaterEqual(load["server_load"], 1)
        response.close()
        conn.close()
        # The journal entry of a stream is written after its engine request was released.
        self.server.wait_for_requests(path="/v1/completions", timeout=10)
        after = scrape(self.server)
        self.assertEqual(after[("vllm:num_requests_running", ())], 0)
        self.assertEqual(after[("vllm:num_requests_waiting", ())], 0)
        self.assertEqual(after[("vllm:kv_cache_usage_perc", ())], 0)
        self.assertGreaterEqual(
            after[("vllm:request_success_total", (("finished_reason", "abort"),))], 1
        )

    def test_load_counts_each_request_in_flight(self) -> None:
        self.server.clear()

        def load() -> int:
            return int(json.loads(raw_request(self.server, "GET", "/load")[2])["server_load"])

        self.assertEqual(load(), 0)
        held = hold(self, self.server, {"prompt": "wait", "max_tokens": 1},
                    {"X-Mocksup-TTFT": "30"})  # fmt: skip
        until(lambda: running(self.server) == 1)
        self.assertEqual(load(), 1)
        stream = hold(self, self.server, {"prompt": "go", "max_tokens": 2, "stream": True},
                      {"X-Mocksup-ITL": "30"})  # fmt: skip
        until(lambda: running(self.server) == 2)
        self.assertEqual(load(), 2)
        held.close()
        stream.close()
        self.server.wait_for_requests(path="/v1/completions", count=2)
        self.assertEqual(load(), 0)

    def test_requests_beyond_max_num_seqs_queue(self) -> None:
        self.server.set_latency(max_num_seqs=1)
        self.addCleanup(self.server.set_latency, max_num_seqs=256)
        self.server.clear()
        slow = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        self.addCleanup(slow.close)
        body = {"prompt": "x", "max_tokens": 30, "ignore_eos": True, "stream": True}
        headers = {"Content-Type": "application/json", "X-Mocksup-ITL": "0.02"}
        slow.request("POST", "/v1/completions", body=json.dumps(body), headers=headers)
        response = slow.getresponse()
        response.readline()  # the slot is taken: the stream has started
        queued = raw_post(self.server, "/v1/completions", {"prompt": "y", "max_tokens": 1})
        self.assertEqual(queued[0], 200)
        response.read()
        entries = self.server.wait_for_requests(path="/v1/completions", count=2, timeout=5)
        (entry,) = [e for e in entries if e.body["prompt"] == "y"]
        # It waited for the stream's remaining ~0.58 s of decoding before it could run.
        self.assertGreater(entry.duration, 0.3)
        waited = scrape(self.server)[("vllm:request_queue_time_seconds_sum", ())]
        self.assertGreater(waited, 0.3)


class LatencyTest(ServerTestCase):
    """The mock is never early (exact lower bounds, on the client's clock and the server's)
    and not grossly late (generous upper bounds: a busy 2-core machine may be late by tens
    of milliseconds). How close to the settings it keeps is measured by
    ``benchmarks/bench_vllm.py``, not asserted here."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, latency={"ttft": 0.1, "itl": 0.01})

    def test_tokens_are_never_early_and_come_at_ttft_and_itl(self) -> None:
        self.server.clear(metrics=True)
        tokens = 40
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        self.addCleanup(conn.close)
        body = {"prompt": "x", "max_tokens": tokens, "ignore_eos": True, "stream": True}
        start = time.monotonic()
        conn.request(
            "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        arrivals = []
        while line := response.readline():  # chunked framing: size lines and data lines
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic() - start)
        self.assertEqual(len(arrivals), tokens)
        # Token k is due TTFT + k x ITL after the request came in, which is after `start`.
        for k, arrival in enumerate(arrivals):
            self.assertGreaterEqual(arrival, 0.1 + k * 0.01, f"token {k} came early")
        last = 0.1 + (tokens - 1) * 0.01
        self.assertLess(arrivals[0], 0.1 + SLACK)
        self.assertLess(arrivals[-1], last + SLACK)
        # The server's clock: the journal, and the engine's own account in /metrics.
        (entry,) = self.server.wait_for_requests(path="/v1/completions", timeout=5)
        self.assertGreaterEqual(entry.first_byte, 0.1)
        self.assertGreaterEqual(entry.duration, last)
        self.assertLess(entry.duration, last + SLACK)
        samples = scrape(self.server)
        ttft = samples[("vllm:time_to_first_token_seconds_sum", ())]
        self.assertGreaterEqual(ttft, 0.1)
        self.assertLess(ttft, 0.1 + SLACK)
        self.assertGreaterEqual(samples[("vllm:e2e_request_latency_seconds_sum", ())], last)
        self.assertEqual(samples[("vllm:inter_token_latency_seconds_count", ())], tokens - 1)

    def test_non_streamed_request_takes_ttft_plus_decode(self) -> None:
        self.server.clear(metrics=True)
        body = {"prompt": "x", "max_tokens": 11, "ignore_eos": True}
        latency = {"X-Mocksup-TTFT": "0.02", "X-Mocksup-ITL": "0.005"}
        start = time.monotonic()
        raw_post(self.server, "/v1/completions", body, latency)
        took = time.monotonic() - start
        whole = 0.02 + 10 * 0.005
        self.assertGreaterEqual(took, whole)
        self.assertLess(took, whole + SLACK)
        (entry,) = self.server.requests(path="/v1/completions")
        self.assertGreaterEqual(entry.duration, whole)
        self.assertLess(entry.duration, whole + SLACK)
        # A request answered whole is accounted at its token deadlines, so the engine's
        # own times are the settings, to the float.
        samples = scrape(self.server)
        exact = {
            "vllm:request_prefill_time_seconds_sum": 0.02,
            "vllm:request_decode_time_seconds_sum": 10 * 0.005,
            "vllm:inter_token_latency_seconds_sum": 10 * 0.005,
            "vllm:inter_token_latency_seconds_count": 10,
        }
        for name, value in exact.items():
            self.assertAlmostEqual(samples[(name, ())], value, delta=1e-9, msg=name)
