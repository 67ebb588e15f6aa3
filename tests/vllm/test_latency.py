"""Latency realism: prefill that grows with the prompt (and shrinks with prefix-cache hits), a
seeded spread, slowdown under load, KV-cache usage that follows the tokens held, and
preemption when it is full, consistent in bodies, ``/metrics`` and ``/load`` (issue 14,
item 8).

Non-streamed requests are timed by their token deadlines, so their ``metrics`` object
(``--enable-per-request-metrics``) shows the simulated delays exactly; streamed ones are
timed as they are written.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
from typing import Any

from mocksup.vllm import TOKENIZER, MockVLLMServer
from tests.vllm.support import ServerTestCase, raw_post, raw_request, scrape, sse_events, until

CHAT = "/v1/chat/completions"
#: How far a delay in ms read back from float deadlines may be off: 1 ns.
ROUNDING_MS = 1e-6


def prefill_ms(server: MockVLLMServer, prompt: str, **extra: Any) -> float:
    """``time_to_first_token_ms`` of one non-streamed completion (the prefill, exactly)."""
    body = {"prompt": prompt, "max_tokens": 2, **extra}
    status, _, data = raw_post(server, "/v1/completions", body)
    assert status == 200, data
    return float(json.loads(data)["metrics"]["time_to_first_token_ms"])


class PrefillTest(ServerTestCase):
    """``prefill_per_token``, ``ttft_stddev`` and the prefix cache."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0,
            enable_per_request_metrics=True,
            latency={"ttft": 0.005, "prefill_per_token": 0.0005},
        )

    def test_prefill_grows_with_the_uncached_prompt(self) -> None:
        short = prefill_ms(self.server, "the" + " the" * 9)
        self.assertAlmostEqual(short, 5 + 10 * 0.5, places=6)
        prompt = "of" + " of" * 200
        self.assertEqual(TOKENIZER.count(prompt), 201)
        long = prefill_ms(self.server, prompt)
        self.assertAlmostEqual(long, 5 + 201 * 0.5, places=6)
        # Sent again, the prompt's full blocks (192 of its 201 tokens) come from the cache.
        again = prefill_ms(self.server, prompt)
        self.assertAlmostEqual(again, 5 + (201 - 192) * 0.5, places=6)
        samples = scrape(self.server)
        self.assertEqual(samples[("vllm:prefix_cache_hits_total", ())], 192)

    def test_a_spread_is_drawn_from_the_seed(self) -> None:
        self.server.set_latency(ttft_stddev=0.002, prefill_per_token=0.0)
        try:
            self.server.clear()
            first = [prefill_ms(self.server, f"request {i}") for i in range(12)]
            self.server.clear()
            again = [prefill_ms(self.server, f"request {i}") for i in range(12)]
        finally:
            self.server.set_latency(ttft_stddev=0.0, prefill_per_token=0.0005)
        # A delay read back from the monotonic-clock deadlines is exact to the clock's float
        # grid (picoseconds at a few hours of uptime), not to the bit: compare within 1 ns.
        for a, b in zip(first, again, strict=True):
            self.assertAlmostEqual(a, b, delta=ROUNDING_MS)
        self.assertGreater(len(set(first)), 8)
        # Each draw is clamped to 0.3..1.7 times the mean. The mock reports the prefill as the
        # difference of two monotonic timestamps (first token less scheduled), which rounds a
        # draw at a bound by a few 1e-9 ms once the clock is past a few hours: allow that.
        low, high = 0.3 * 5 - ROUNDING_MS, 1.7 * 5 + ROUNDING_MS
        self.assertTrue(all(low <= value <= high for value in first), first)
        mean = sum(first) / len(first)
        self.assertGreater(math.sqrt(sum((v - mean) ** 2 for v in first) / len(first)), 0.5)


class LoadTest(ServerTestCase):
    """``load_factor``: a request scheduled beside others runs slower."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0,
            enable_per_request_metrics=True,
            max_num_seqs=3,
            latency={"ttft": 0.01, "itl": 0.01, "load_factor": 3.0},
        )

    def test_delays_scale_with_the_running_sequences(self) -> None:
        alone = prefill_ms(self.server, "hello")
        self.assertAlmostEqual(alone, 10.0, places=6)
        # Two long streams run; a request scheduled third runs at the full factor.
        streams = [threading.Thread(target=self.long_stream) for _ in range(2)]
        for thread in streams:
            thread.start()
        until(lambda: scrape(self.server)[("vllm:num_requests_running", ())] == 2)
        loaded = prefill_ms(self.server, "hello", max_tokens=3)
        for thread in streams:
            thread.join()
        self.assertAlmostEqual(loaded, 30.0, places=6)

    def long_stream(self) -> None:
        body = {"prompt": "go", "max_tokens": 40, "ignore_eos": True, "stream": True}
        raw_post(self.server, "/v1/completions", body)


class KVCacheTest(ServerTestCase):
    """KV blocks follow the tokens held; a full cache preempts the request scheduled last."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0,
            block_size=16,
            num_gpu_blocks_override=8,
            max_model_len=512,
            enable_server_load_tracking=True,
            latency={"ttft": 0.02, "itl": 0.01},
        )

    def stream(self, out: dict[int, Any], key: int, tokens: int) -> None:
        body = {
            "prompt": "the " * 10,
            "max_tokens": tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=60)
        try:
            conn.request(
                "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
            )
            out[key] = [json.loads(e) for e in sse_events(conn.getresponse().read())[:-1]]
        finally:
            conn.close()

    def test_usage_follows_the_tokens_held(self) -> None:
        out: dict[int, Any] = {}
        thread = threading.Thread(target=self.stream, args=(out, 0, 80))
        thread.start()
        seen: list[float] = []
        loads: list[int] = []
        while thread.is_alive():
            seen.append(scrape(self.server)[("vllm:kv_cache_usage_perc", ())])
            loads.append(json.loads(raw_request(self.server, "GET", "/load")[2])["server_load"])
        thread.join()
        # 10 prompt tokens: 1 block with the first token, 6 blocks (90 tokens) at the end.
        allowed = {blocks / 8 for blocks in range(1, 7)}
        held = [value for value in seen if value]
        self.assertLessEqual(set(held), allowed)
        self.assertGreaterEqual(len(set(held)), 3, held)
        self.assertEqual(held, sorted(held))
        self.assertIn(1, loads)
        self.assertEqual(out[0][-1]["usage"]["completion_tokens"], 80)
        self.assertEqual(scrape(self.server)[("vllm:kv_cache_usage_perc", ())], 0)

    def test_a_full_cache_preempts_and_the_request_still_completes(self) -> None:
        self.server.clear(metrics=True)
        out: dict[int, Any] = {}
        # Two requests of 10 + 100 tokens need 7 blocks each; the cache has 8.
        threads = [threading.Thread(target=self.stream, args=(out, i, 100)) for i in range(2)]
        for thread in threads:
            thread.start()
        peak = 0.0
        while any(t.is_alive() for t in threads):
            peak = max(peak, scrape(self.server)[("vllm:kv_cache_usage_perc", ())])
        for thread in threads:
            thread.join()
        samples = scrape(self.server)
        preemptions = samples[("vllm:num_preemptions_total", ())]
        self.assertGreaterEqual(preemptions, 1)
        self.assertEqual(samples[("vllm:request_num_preemptions_sum", ())], preemptions)
        self.assertLessEqual(peak, 1.0)
        for key in (0, 1):
            self.assertEqual(out[key][-1]["usage"]["completion_tokens"], 100)
            self.assertEqual(len([c for c in out[key] if c["choices"]]), 100)
        for gauge in (
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
        ):
            self.assertEqual(samples[(gauge, ())], 0)
        self.assertEqual(samples[("vllm:generation_tokens_total", ())], 200)
