"""vLLM's engine metrics (the ``vllm:*`` families), kept consistent with the traffic.

Every family vLLM 0.33's ``PrometheusStatLogger`` (``vllm/v1/metrics/loggers.py``) registers
under its default configuration, in its order, with its names, HELP texts, types, labels and
buckets: labels ``model_name`` (the first served name) and ``engine`` (``"0"``), counters
exposed with ``_total`` and a ``_created`` family, label values pre-created as vLLM creates
them (five ``finished_reason`` values, two waiting reasons, the prompt-token sources, the
cache tiers, the admission-rejection reasons), and ``vllm:cache_config_info`` with one label
per ``CacheConfig`` field. The text is written with :mod:`._exposition`.

Each finished engine request updates the families as vLLM's ``record_finished_request`` and
per-step updates do, so vLLM's ``test_metrics_counts`` formulas hold: after N requests of P
prompt tokens (none cached) and M generated tokens, ``iteration_tokens_total`` has ``_sum``
N(P+M) and ``_count`` N·M (the first step carries the prompt and one token), the
inter-token-latency histogram N(M-1) observations, and so on. Cached prompt tokens are
counted as vLLM counts them: hits and queries, the ``local_cache_hit`` source, the ``device``
tier, and left out of the prefill's computed tokens.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from dataclasses import dataclass

from mocksup.vllm._config import ServerConfig
from mocksup.vllm._exposition import Histogram, Labels, created_family, family, sample
from mocksup.vllm._lora import Adapters
from mocksup.vllm._slots import Slots

__all__ = ["FINISH_REASONS", "EngineMetrics", "Finished", "buckets_1_2_5"]

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
_PREEMPTIONS = (1, 2, 3, 4, 5, 10, 20)
_SLEEP_OPERATIONS = (0.01, 0.1, 1, 10, 30, 60, 120, 300, 600)

_PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
_CACHE_TIERS = ("device", "host", "p2p", "disk", "external_unspecified")
_WAITING_REASONS = ("capacity", "deferred")
_ADMISSION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")


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
    finish_reason: str
    queue: float
    ttft: float
    prefill: float
    decode: float
    inference: float
    e2e: float
    itls: list[float]
    cached_tokens: int = 0
    preemptions: int = 0


_COUNTERS: tuple[tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
     ()),
    ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", ()),
    ("vllm:external_prefix_cache_queries",
     "External prefix cache queries from KV connector cross-instance cache sharing, in terms "
     "of number of queried tokens.", ()),
    ("vllm:external_prefix_cache_hits",
     "External prefix cache hits from KV connector cross-instance cache sharing, in terms of "
     "number of cached tokens.", ()),
    ("vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items.",
     ()),
    ("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.", ()),
    ("vllm:num_preemptions", "Cumulative number of preemption from the engine.", ()),
    ("vllm:prompt_tokens", "Number of prefill tokens processed.", ()),
    ("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.",
     (("source", _PROMPT_SOURCES),)),
    ("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).", ()),
    ("vllm:prompt_tokens_cached_by_source",
     "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host "
     "(offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or "
     "external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + "
     "vllm:external_prefix_cache_hits.", (("source", _CACHE_TIERS),)),
    ("vllm:generation_tokens", "Number of generation tokens processed.", ()),
    ("vllm:request_success", "Count of successfully processed requests.",
     (("finished_reason", FINISH_REASONS),)),
)  # fmt: skip

_PERF_COUNTERS = (
    ("vllm:estimated_flops_per_gpu",
     "Estimated number of floating point operations per GPU (for Model Flops Utilization "
     "calculations)."),
    ("vllm:estimated_read_bytes_per_gpu",
     "Estimated number of bytes read from memory per GPU (for Model Flops Utilization "
     "calculations)."),
    ("vllm:estimated_write_bytes_per_gpu",
     "Estimated number of bytes written to memory per GPU (for Model Flops Utilization "
     "calculations)."),
)  # fmt: skip

_HISTOGRAMS = (
    ("vllm:request_prompt_tokens", "Number of prefill tokens processed."),
    ("vllm:request_generation_tokens", "Number of generation tokens processed."),
    ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step."),
    ("vllm:request_max_num_generation_tokens",
     "Histogram of maximum number of requested generation tokens."),
    ("vllm:request_params_n", "Histogram of the n request parameter."),
    ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter."),
    ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
    ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."),
    ("vllm:request_time_per_output_token_seconds",
     "Histogram of time_per_output_token_seconds per request."),
    ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
    ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request."),
    ("vllm:request_inference_time_seconds",
     "Histogram of time spent in RUNNING phase for request."),
    ("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request."),
    ("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request."),
    ("vllm:request_num_preemptions", "Histogram of the number of times a request was preempted."),
    ("vllm:request_prefill_kv_computed_tokens",
     "Histogram of new KV tokens computed during prefill (excluding cached tokens)."),
)  # fmt: skip

_SLEEP_STATE_HELP = (
    "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is "
    "awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2."
)
_WAITING_BY_REASON_HELP = (
    "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
    "scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV "
    "transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting."
)


class EngineMetrics:
    """The engine's metric values; thread-safe; :meth:`render` gives the exposition text."""

    def __init__(self, config: ServerConfig, rank: int = 0) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._labels: dict[str, str] = {"engine": str(rank), "model_name": config.models[0]}
        #: Every data-parallel rank's metrics, this one first: the first rank renders them
        #: all (a family's series of every rank under one header, as one registry does).
        self.ranks: list[EngineMetrics] = [self]
        self.running = 0
        self.waiting = 0
        #: The engine's admission, which counts the KV blocks held (set by the engine).
        self.slots: Slots | None = None
        #: With ``--enable-lora``: the adapters, for ``vllm:lora_requests_info``.
        self.adapters: Adapters | None = None
        self.sleep_level: int | None = None  # None: awake
        self._sleep_ops: dict[str, list[float]] = {}  # operation -> [in flight, created]
        self._sleep_hist: dict[str, Histogram] = {}
        self._info_created = time.time()
        self._zero()

    def reset(self) -> None:
        """Zero the counters and histograms (the live gauges keep following the traffic),
        of every rank."""
        for rank in self.ranks:
            with rank._lock:
                rank._zero()

    @property
    def in_flight(self) -> tuple[int, int]:
        """Requests running and waiting over every rank."""
        return sum(r.running for r in self.ranks), sum(r.waiting for r in self.ranks)

    def _zero(self) -> None:
        now = time.time()
        tokens = buckets_1_2_5(self._config.max_model_len)
        bounds = {
            "vllm:iteration_tokens_total": _ITERATION,
            "vllm:request_params_n": _N,
            "vllm:time_to_first_token_seconds": _TTFT,
            "vllm:inter_token_latency_seconds": _ITL,
            "vllm:request_time_per_output_token_seconds": _ITL,
            "vllm:request_num_preemptions": _PREEMPTIONS,
        }
        self._hist = {
            name: Histogram(
                bounds.get(name, _LATENCY if name.endswith("_seconds") else tokens), now
            )
            for name, _ in _HISTOGRAMS
        }
        self._counters: dict[str, dict[str, float]] = {
            name: (dict.fromkeys(extra[0][1], 0.0) if extra else {"": 0.0})
            for name, _, extra in _COUNTERS
        }
        self._rejections = dict.fromkeys(_ADMISSION_REASONS, 0.0)
        self._created = now

    # -- live gauges -------------------------------------------------------------------

    def queued(self) -> None:
        """A request entered the waiting queue."""
        with self._lock:
            self.waiting += 1

    def admitted(self) -> None:
        """A queued request got a slot (and its KV blocks)."""
        with self._lock:
            self.waiting -= 1
            self.running += 1

    def released(self) -> None:
        """A running request ended (finished or aborted)."""
        with self._lock:
            self.running -= 1

    def preempted(self, sequences: int) -> None:
        """A running request of ``sequences`` engine requests went back to the queue."""
        with self._lock:
            self.running -= 1
            self.waiting += 1
            self._counters["vllm:num_preemptions"][""] += sequences

    def resumed(self, sequences: int) -> None:
        """A preempted request runs again."""
        with self._lock:
            self.waiting -= 1
            self.running += 1

    def rejected(self, reason: str) -> None:
        """A request was refused by the queue limit ``reason`` (``max_num_queued_reqs`` or
        ``max_num_queued_tokens``)."""
        with self._lock:
            self._rejections[reason] += 1

    def left_queue(self) -> None:
        """A waiting request was aborted before it ran."""
        with self._lock:
            self.waiting -= 1

    @property
    def kv_cache_usage(self) -> float:
        """The share of KV blocks the running requests hold, 0 to 1."""
        used = self.slots.used_blocks if self.slots is not None else 0
        return min(1.0, used / self._config.gpu_blocks)

    # -- finished requests ---------------------------------------------------------------

    def record(self, done: Finished) -> None:
        """Account one finished (or aborted) engine request."""
        computed = done.prompt_tokens - done.cached_tokens
        with self._lock:
            h = self._hist
            c = self._counters
            c["vllm:prompt_tokens"][""] += done.prompt_tokens
            by_source = c["vllm:prompt_tokens_by_source"]
            by_source["local_compute"] += computed
            by_source["local_cache_hit"] += done.cached_tokens
            c["vllm:prompt_tokens_cached"][""] += done.cached_tokens
            c["vllm:generation_tokens"][""] += done.generation_tokens
            success = c["vllm:request_success"]
            success[done.finish_reason] = success.get(done.finish_reason, 0) + 1
            iterations = h["vllm:iteration_tokens_total"]
            if done.generation_tokens:
                iterations.observe(computed + 1)
                iterations.observe(1, done.generation_tokens - 1)
            else:
                iterations.observe(computed)
            h["vllm:request_prompt_tokens"].observe(done.prompt_tokens)
            h["vllm:request_prefill_kv_computed_tokens"].observe(computed)
            h["vllm:request_generation_tokens"].observe(done.generation_tokens)
            if done.max_tokens_param:
                h["vllm:request_params_max_tokens"].observe(done.max_tokens_param)
            h["vllm:request_num_preemptions"].observe(done.preemptions)
            self._record_times(done)

    def _record_times(self, done: Finished) -> None:
        h = self._hist
        h["vllm:time_to_first_token_seconds"].observe(done.ttft)
        itl = h["vllm:inter_token_latency_seconds"]
        bounds, counts, where = itl.bounds, itl.counts, bisect.bisect_left
        if done.decode == 0:  # every gap 0 (zero latency): one bucket, counted at once
            counts[where(bounds, 0.0)] += len(done.itls)
        else:
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

    def record_request(self, n: int, max_generation_tokens: int) -> None:
        """Account a whole request once its last sequence finished (``n`` and the most
        tokens a sequence generated), as vLLM's parent request does."""
        with self._lock:
            self._hist["vllm:request_params_n"].observe(n)
            self._hist["vllm:request_max_num_generation_tokens"].observe(max_generation_tokens)

    def record_cache_query(self, queried: int, hits: int) -> None:
        """Account one prefix-cache lookup, in tokens."""
        with self._lock:
            c = self._counters
            c["vllm:prefix_cache_queries"][""] += queried
            c["vllm:prefix_cache_hits"][""] += hits
            c["vllm:prompt_tokens_cached_by_source"]["device"] += hits

    # -- sleep mode ------------------------------------------------------------------------

    def operation(self, name: str, seconds: float) -> None:
        """Account one sleep-mode operation (``sleep``, ``wake``...): vLLM registers these
        families at the first one."""
        with self._lock:
            if name not in self._sleep_ops:
                self._sleep_ops[name] = [0.0, time.time()]
                self._sleep_hist[name] = Histogram(_SLEEP_OPERATIONS, time.time())
            self._sleep_hist[name].observe(seconds)

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> str:
        """The families in Prometheus text format (none with ``disable_log_stats``): each
        family once, with a series per data-parallel rank."""
        out: list[str] = []
        if not self._config.log_stats:
            return ""
        with contextlib.ExitStack() as stack:
            for rank in self.ranks:
                stack.enter_context(rank._lock)
            self._render_perf(out)
            self._render_gauges(out)
            self._render_counters(out)
            self._render_histograms(out)
        if self.adapters is not None:
            family(out, "vllm:lora_requests_info", "Running stats on lora requests.", "gauge")
            for labels, value in self.adapters.labels():
                sample(out, "vllm:lora_requests_info", labels, value)
        self._render_cache_config(out)
        return "".join(out)

    def render_late(self) -> str:
        """Families vLLM registers only once used (sleep-mode operations)."""
        out: list[str] = []
        with self._lock:
            if not self._sleep_ops:
                return ""
            name = "vllm:sleep_mode_operation_duration_seconds"
            help_text = "Duration of one sleep-mode operation."
            family(out, name, help_text, "histogram")
            for operation, hist in self._sleep_hist.items():
                hist.lines(out, name, {"operation": operation})
            series: list[tuple[Labels, float]] = [
                ({"operation": op}, hist.created) for op, hist in self._sleep_hist.items()
            ]
            created_family(out, name, help_text, series)
            name = "vllm:sleep_mode_operations_in_flight"
            family(out, name, "Sleep-mode operations currently awaited.", "gauge")
            for operation, (in_flight, _) in self._sleep_ops.items():
                sample(out, name, {"operation": operation}, in_flight)
        return "".join(out)

    def _render_perf(self, out: list[str]) -> None:
        for name, help_text in _PERF_COUNTERS:
            family(out, name + "_total", help_text, "counter")
            for rank in self.ranks:
                sample(out, name + "_total", rank._labels, 0.0)
            created_family(out, name, help_text, [(r._labels, r._created) for r in self.ranks])

    def _render_gauges(self, out: list[str]) -> None:
        gauges = (
            ("vllm:num_requests_running", "Number of requests in model execution batches.",
             "running"),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
             "waiting"),
        )  # fmt: skip
        for name, help_text, field in gauges:
            family(out, name, help_text, "gauge")
            for rank in self.ranks:
                sample(out, name, rank._labels, getattr(rank, field))
        name = "vllm:num_requests_waiting_by_reason"
        family(out, name, _WAITING_BY_REASON_HELP, "gauge")
        for reason in _WAITING_REASONS:
            for rank in self.ranks:
                value = rank.waiting if reason == "capacity" else 0
                sample(out, name, {**rank._labels, "reason": reason}, value)
        name = "vllm:engine_sleep_state"
        family(out, name, _SLEEP_STATE_HELP, "gauge")
        level = self.sleep_level  # every rank sleeps and wakes together
        states = {
            "awake": 1 if level is None else 0,
            "weights_offloaded": 1 if level == 1 else 0,
            "discard_all": 1 if level == 2 else 0,
        }
        for state, value in states.items():
            for rank in self.ranks:
                sample(out, name, {**rank._labels, "sleep_state": state}, value)
        name = "vllm:kv_cache_usage_perc"
        family(out, name, "KV-cache usage. 1 means 100 percent usage.", "gauge")
        for rank in self.ranks:
            sample(out, name, rank._labels, rank.kv_cache_usage)

    def _render_counters(self, out: list[str]) -> None:
        for name, help_text, extra in _COUNTERS:
            family(out, name + "_total", help_text, "counter")
            series: list[tuple[Labels, float]] = []
            for value_label in self._counters[name]:
                for rank in self.ranks:
                    own = {**rank._labels, extra[0][0]: value_label} if extra else rank._labels
                    sample(out, name + "_total", own, rank._counters[name].get(value_label, 0))
                    series.append((own, rank._created))
            created_family(out, name, help_text, series)
            if name == "vllm:request_success":
                self._render_admission(out)

    def _render_admission(self, out: list[str]) -> None:
        # Registered right after request_success, with model_name and reason only.
        name = "vllm:admission_rejections"
        help_text = "Number of admission attempts rejected by a queue limit, by reason."
        family(out, name + "_total", help_text, "counter")
        series: list[tuple[Labels, float]] = []
        for reason in _ADMISSION_REASONS:
            own = {"model_name": self._labels["model_name"], "reason": reason}
            sample(out, name + "_total", own, self._rejections[reason])
            series.append((own, self._created))
        created_family(out, name, help_text, series)

    def _render_histograms(self, out: list[str]) -> None:
        for name, help_text in _HISTOGRAMS:
            family(out, name, help_text, "histogram")
            for rank in self.ranks:
                rank._hist[name].lines(out, name, rank._labels)
            created: list[tuple[Labels, float]] = [
                (r._labels, r._hist[name].created) for r in self.ranks
            ]
            created_family(out, name, help_text, created)

    def _render_cache_config(self, out: list[str]) -> None:
        name = "vllm:cache_config_info"
        family(out, name, "Information of the LLMEngine CacheConfig", "gauge")
        for rank in self.ranks:
            labels = {**cache_config_labels(self._config), "engine": rank._labels["engine"]}
            sample(out, name, labels, 1.0)


def cache_config_labels(config: ServerConfig) -> dict[str, str]:
    """Every ``CacheConfig`` field as vLLM 0.33 reports it (``str()`` of each value), plus
    ``engine``: what the mock's settings say, vLLM's defaults for the rest."""
    tokens = config.kv_cache_tokens
    values: dict[str, object] = {
        "block_size": config.block_size,
        "user_specified_block_size": config.block_size != 16,
        "kv_cache_layout": "NHD",
        "prefix_match_unit": config.block_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "cache_dtype": config.cache_dtype,
        "is_attention_free": False,
        "num_gpu_blocks_override": None,
        "sliding_window": None,
        "enable_prefix_caching": config.prefix_caching,
        "prefix_caching_hash_algo": "sha256",
        "prefix_cache_retention_interval": 0,
        "kv_cache_dtype_skip_layers": [],
        "mamba_page_size_padded": None,
        "skip_page_size_padded": None,
        "mamba_block_size": None,
        "mamba_cache_dtype": "auto",
        "mamba_ssm_cache_dtype": "auto",
        "mamba_cache_mode": "none",
        "enable_mamba_shared_prefix_checkpoint": False,
        "replayssm_buffer_len": 16,
        "use_replayssm": False,
        "use_kda_recoverssm": False,
        "num_gpu_blocks": config.gpu_blocks,
        "num_cpu_blocks": None,
        "simple_cpu_offload_num_blocks": None,
        "effective_attention_block_size": config.block_size,
        "kv_cache_size_tokens": tokens,
        "kv_cache_max_concurrency": round(tokens / config.max_model_len, 2),
        "hash_block_size": config.block_size,
        "cache_hit_alignment_tokens": config.block_size,
        "kv_sharing_fast_prefill": False,
        "swa_bounded_replay": True,
        "kv_cache_memory_bytes": None,
        "kv_offloading_size": None,
        "kv_offloading_backend": "native",
        "_block_size_resolved": True,
        "engine": "0",
    }
    return {key: str(value) for key, value in values.items()}
