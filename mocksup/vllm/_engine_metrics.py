"""vLLM's engine metrics (the ``vllm:*`` families), kept consistent with the traffic.

Names, HELP texts, types, labels and buckets follow vLLM v1's ``PrometheusStatLogger``
(``vllm/v1/metrics/loggers.py``): labels ``model_name`` (the first served name) and
``engine`` (``"0"``), counters exposed with ``_total``, ``finished_reason`` pre-created for all
five reasons. The text is written with :mod:`._exposition`.

Each finished engine request updates every family the way vLLM's ``record_finished_request``
and per-step updates do, so vLLM's ``test_metrics_counts`` formulas hold: after N requests of
P prompt tokens and M generated tokens, ``iteration_tokens_total`` has ``_sum`` N(P+M) and
``_count`` N·M (the first step carries the prompt and one token), the inter-token-latency
histogram N(M-1) observations, and so on.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

from mocksup.vllm._exposition import Histogram, escape, family, fmt

__all__ = ["BLOCK_SIZE", "FINISH_REASONS", "EngineMetrics", "Finished", "buckets_1_2_5"]

#: vLLM's ``FINISH_REASON_STRINGS``, in its order.
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")

_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
         7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
_ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0, 20.0, 40.0, 80.0)  # fmt: skip
_LATENCY = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
            120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
_ITERATION = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
_N = (1, 2, 5, 10, 20)

#: KV-cache geometry the mock reports (``cache_config_info``) and fills while sequences run.
BLOCK_SIZE = 16
NUM_GPU_BLOCKS = 8192


def buckets_1_2_5(limit: int) -> tuple[float, ...]:
    """vLLM's ``build_1_2_5_buckets``: 1, 2, 5, 10, 20, 50, ... up to ``limit``."""
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > limit:
                return tuple(out)
            out.append(value)
        exponent += 1


@dataclass
class Finished:
    """One finished engine request, as the metrics and the span see it (seconds)."""

    prompt_tokens: int
    generation_tokens: int
    max_tokens_param: int | None
    n: int
    finish_reason: str
    queue: float
    ttft: float
    prefill: float
    decode: float
    inference: float
    e2e: float
    itls: list[float]


_HISTOGRAMS = (
    ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step."),
    ("vllm:request_prompt_tokens", "Number of prefill tokens processed."),
    ("vllm:request_generation_tokens", "Number of generation tokens processed."),
    (
        "vllm:request_max_num_generation_tokens",
        "Histogram of maximum number of requested generation tokens.",
    ),
    ("vllm:request_params_n", "Histogram of the n request parameter."),
    ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter."),
    (
        "vllm:request_prefill_kv_computed_tokens",
        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
    ),
    ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
    ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."),
    (
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
    ),
    ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
    ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request."),
    (
        "vllm:request_inference_time_seconds",
        "Histogram of time spent in RUNNING phase for request.",
    ),
    ("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request."),
    ("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request."),
)

_COUNTERS = (
    ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."),
    ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."),
    ("vllm:num_preemptions", "Cumulative number of preemption from the engine."),
    ("vllm:prompt_tokens", "Number of prefill tokens processed."),
    ("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external)."),
    ("vllm:generation_tokens", "Number of generation tokens processed."),
)


class EngineMetrics:
    """The engine's metric values; thread-safe; :meth:`render` gives the exposition text."""

    def __init__(self, model_name: str, max_model_len: int) -> None:
        self._lock = threading.Lock()
        self._labels = f'model_name="{escape(model_name)}",engine="0"'
        self._max_model_len = max_model_len
        self.running = 0
        self.waiting = 0
        self._kv_blocks = 0
        self._zero()

    def reset(self) -> None:
        """Zero the counters and histograms (the live gauges keep following the traffic)."""
        with self._lock:
            self._zero()

    def _zero(self) -> None:
        tokens = buckets_1_2_5(self._max_model_len)
        bounds = {
            "vllm:iteration_tokens_total": _ITERATION,
            "vllm:request_params_n": _N,
            "vllm:time_to_first_token_seconds": _TTFT,
            "vllm:inter_token_latency_seconds": _ITL,
            "vllm:request_time_per_output_token_seconds": _ITL,
        }
        self._hist = {
            name: Histogram(bounds.get(name, _LATENCY if name.endswith("_seconds") else tokens))
            for name, _ in _HISTOGRAMS
        }
        self._counters = dict.fromkeys((name for name, _ in _COUNTERS), 0)
        self._success = dict.fromkeys(FINISH_REASONS, 0)

    # -- live gauges -------------------------------------------------------------------

    def queued(self) -> None:
        """A request entered the waiting queue."""
        with self._lock:
            self.waiting += 1

    def admitted(self, blocks: int) -> None:
        """A queued request got a slot and holds ``blocks`` KV blocks."""
        with self._lock:
            self.waiting -= 1
            self.running += 1
            self._kv_blocks += blocks

    def released(self, blocks: int) -> None:
        """A running request ended (finished or aborted)."""
        with self._lock:
            self.running -= 1
            self._kv_blocks -= blocks

    def left_queue(self) -> None:
        """A waiting request was aborted before it ran."""
        with self._lock:
            self.waiting -= 1

    # -- finished requests ---------------------------------------------------------------

    def record(self, done: Finished) -> None:
        """Account one finished (or aborted) engine request."""
        with self._lock:
            h = self._hist
            c = self._counters
            c["vllm:prompt_tokens"] += done.prompt_tokens
            c["vllm:prefix_cache_queries"] += done.prompt_tokens
            c["vllm:generation_tokens"] += done.generation_tokens
            self._success[done.finish_reason] = self._success.get(done.finish_reason, 0) + 1
            iterations = h["vllm:iteration_tokens_total"]
            if done.generation_tokens:
                iterations.observe(done.prompt_tokens + 1)
                iterations.observe(1, done.generation_tokens - 1)
            else:
                iterations.observe(done.prompt_tokens)
            h["vllm:request_prompt_tokens"].observe(done.prompt_tokens)
            h["vllm:request_prefill_kv_computed_tokens"].observe(done.prompt_tokens)
            h["vllm:request_generation_tokens"].observe(done.generation_tokens)
            h["vllm:request_max_num_generation_tokens"].observe(done.generation_tokens)
            h["vllm:request_params_n"].observe(done.n)
            if done.max_tokens_param is not None:
                h["vllm:request_params_max_tokens"].observe(done.max_tokens_param)
            h["vllm:time_to_first_token_seconds"].observe(done.ttft)
            itl = h["vllm:inter_token_latency_seconds"]
            bounds, counts, where = itl.bounds, itl.counts, bisect.bisect_left
            for gap in done.itls:  # one per token: inlined, it is the hot loop
                counts[where(bounds, gap)] += 1
            itl.sum += sum(done.itls)
            per_token = done.decode / (done.generation_tokens - 1) if done.itls else 0.0
            h["vllm:request_time_per_output_token_seconds"].observe(per_token)
            h["vllm:e2e_request_latency_seconds"].observe(done.e2e)
            h["vllm:request_queue_time_seconds"].observe(done.queue)
            h["vllm:request_inference_time_seconds"].observe(done.inference)
            h["vllm:request_prefill_time_seconds"].observe(done.prefill)
            h["vllm:request_decode_time_seconds"].observe(done.decode)

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4)."""
        out: list[str] = []
        with self._lock:
            self._render_gauges(out)
            self._render_counters(out)
            for name, help_text in _HISTOGRAMS:
                family(out, name, help_text, "histogram")
                self._hist[name].lines(out, name, self._labels)
        name = "vllm:cache_config_info"
        family(out, name, "Information of the LLMEngine CacheConfig", "gauge")
        info = (
            f'block_size="{BLOCK_SIZE}",cache_dtype="auto",enable_prefix_caching="True",'
            f'engine="0",gpu_memory_utilization="0.9",num_cpu_blocks="None",'
            f'num_gpu_blocks="{NUM_GPU_BLOCKS}"'
        )
        out.append(f"{name}{{{info}}} 1.0\n")
        return "".join(out).encode()

    def _render_gauges(self, out: list[str]) -> None:
        labels = self._labels
        gauges = (
            ("vllm:num_requests_running", "Number of requests in model execution batches.",
             self.running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
             self.waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
             min(1.0, self._kv_blocks / NUM_GPU_BLOCKS)),
        )  # fmt: skip
        for name, help_text, value in gauges:
            family(out, name, help_text, "gauge")
            out.append(f"{name}{{{labels}}} {fmt(value)}\n")
        name = "vllm:engine_sleep_state"
        family(
            out,
            name,
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine "
            "is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means "
            "sleep level 2.",
            "gauge",
        )
        for state, value in (("awake", 1), ("weights_offloaded", 0), ("discard_all", 0)):
            out.append(f'{name}{{{labels},sleep_state="{state}"}} {fmt(value)}\n')

    def _render_counters(self, out: list[str]) -> None:
        labels = self._labels
        for name, help_text in _COUNTERS:
            family(out, name + "_total", help_text, "counter")
            out.append(f"{name}_total{{{labels}}} {fmt(self._counters[name])}\n")
        name = "vllm:request_success_total"
        family(out, name, "Count of successfully processed requests.", "counter")
        for reason, value in self._success.items():
            out.append(f'{name}{{{labels},finished_reason="{reason}"}} {fmt(value)}\n')
