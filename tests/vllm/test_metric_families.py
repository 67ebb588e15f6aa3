"""Every family vLLM 0.33's ``/metrics`` has under its default configuration, each checked to
move as vLLM's does for the same traffic (issue 10, items 6 and 7), parsed with
prometheus_client."""

from __future__ import annotations

import json

from prometheus_client.metrics_core import Metric

from mocksup.vllm import MockVLLMServer
from tests.vllm.support import ServerTestCase, metric_families, raw_post, raw_request, scrape

#: What ``# TYPE`` says of each family vLLM 0.33 exposes by default (one API server, so the
#: default registry with the client library's own collectors, counters with ``_created``).
EXPECTED_TYPES = {
    "python_gc_objects_collected_total": "counter",
    "python_gc_objects_uncollectable_total": "counter",
    "python_gc_collections_total": "counter",
    "python_info": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "vllm:estimated_flops_per_gpu_total": "counter",
    "vllm:estimated_read_bytes_per_gpu_total": "counter",
    "vllm:estimated_write_bytes_per_gpu_total": "counter",
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:num_requests_waiting_by_reason": "gauge",
    "vllm:engine_sleep_state": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries_total": "counter",
    "vllm:prefix_cache_hits_total": "counter",
    "vllm:external_prefix_cache_queries_total": "counter",
    "vllm:external_prefix_cache_hits_total": "counter",
    "vllm:mm_cache_queries_total": "counter",
    "vllm:mm_cache_hits_total": "counter",
    "vllm:num_preemptions_total": "counter",
    "vllm:prompt_tokens_total": "counter",
    "vllm:prompt_tokens_by_source_total": "counter",
    "vllm:prompt_tokens_cached_total": "counter",
    "vllm:prompt_tokens_cached_by_source_total": "counter",
    "vllm:generation_tokens_total": "counter",
    "vllm:request_success_total": "counter",
    "vllm:admission_rejections_total": "counter",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm:iteration_tokens_total": "histogram",
    "vllm:request_max_num_generation_tokens": "histogram",
    "vllm:request_params_n": "histogram",
    "vllm:request_params_max_tokens": "histogram",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_inference_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_num_preemptions": "histogram",
    "vllm:request_prefill_kv_computed_tokens": "histogram",
    "vllm:cache_config_info": "gauge",
    "http_requests_total": "counter",
    "http_request_size_bytes": "summary",
    "http_response_size_bytes": "summary",
    "http_request_duration_highr_seconds": "histogram",
    "http_request_duration_seconds": "histogram",
}

#: The client library's own families: they carry no ``_created`` series.
_NO_CREATED = {
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
    "python_gc_collections_total",
    "process_cpu_seconds_total",
}


def declared_types(server: MockVLLMServer) -> dict[str, str]:
    text = raw_request(server, "GET", "/metrics")[2].decode()
    return {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")
    }


class FamiliesTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, max_model_len=1024, enable_prompt_tokens_details=True)

    def test_every_family_vllm_exposes_and_nothing_else(self) -> None:
        raw_post(self.server, "/v1/completions", {"prompt": "x", "max_tokens": 1})  # http_*
        declared = declared_types(self.server)
        families = {k: v for k, v in declared.items() if not k.endswith("_created")}
        self.assertEqual(families, EXPECTED_TYPES)
        for name, kind in EXPECTED_TYPES.items():
            if kind in ("counter", "histogram", "summary") and name not in _NO_CREATED:
                created = name[: -len("_total")] if kind == "counter" else name
                self.assertEqual(declared.get(created + "_created"), "gauge", name)

    def test_cache_config_info_has_every_cache_config_field(self) -> None:
        (sample,) = metric_families(self.server)["vllm:cache_config_info"].samples
        labels = sample.labels
        self.assertEqual(len(labels), 38)
        self.assertEqual(labels["gpu_memory_utilization"], "0.92")
        self.assertEqual(labels["block_size"], "16")
        self.assertEqual(labels["enable_prefix_caching"], "True")
        self.assertEqual(labels["kv_cache_size_tokens"], str(8192 * 16))
        self.assertEqual(labels["kv_cache_max_concurrency"], str(round(8192 * 16 / 1024, 2)))
        self.assertEqual(labels["engine"], "0")
        self.assertEqual(sample.value, 1.0)

    def test_each_family_moves_as_vllms_does_for_the_same_traffic(self) -> None:
        self.server.clear(metrics=True)
        before = scrape(self.server)
        # vLLM's test_metrics_counts traffic: 10 completions of 7 prompt ids, 10 tokens each.
        for _ in range(10):
            raw_post(
                self.server,
                "/v1/completions",
                {
                    "prompt": [300, 301, 302, 303, 304, 305, 306],
                    "max_tokens": 10,
                    "ignore_eos": True,
                },
            )
        # A 40-token prompt twice: the second finds two 16-token blocks in the prefix cache.
        long = {"prompt": " the" * 40, "max_tokens": 2, "ignore_eos": True}
        raw_post(self.server, "/v1/completions", long)
        second = json.loads(raw_post(self.server, "/v1/completions", long)[2])
        self.assertEqual(second["usage"]["prompt_tokens_details"]["cached_tokens"], 32)
        # One chat request asking for two choices.
        chat = {
            "messages": [{"role": "user", "content": "hi"}],
            "n": 2,
            "max_tokens": 3,
            "ignore_eos": True,
        }
        reply = json.loads(raw_post(self.server, "/v1/chat/completions", chat)[2])
        pc = reply["usage"]["prompt_tokens"]  # once per request, as vLLM counts it
        prompt = 70 + 80 + 2 * pc
        generated = 100 + 4 + 6
        after = scrape(self.server)

        def moved(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after[key] - before.get(key, 0.0)

        expectations = {
            ("vllm:prompt_tokens_total", ()): prompt,
            ("vllm:generation_tokens_total", ()): generated,
            ("vllm:prefix_cache_queries_total", ()): prompt,
            ("vllm:prefix_cache_hits_total", ()): 32,
            ("vllm:prompt_tokens_cached_total", ()): 32,
            ("vllm:prompt_tokens_by_source_total", (("source", "local_compute"),)): prompt - 32,
            ("vllm:prompt_tokens_by_source_total", (("source", "local_cache_hit"),)): 32,
            ("vllm:prompt_tokens_by_source_total", (("source", "external_kv_transfer"),)): 0,
            ("vllm:prompt_tokens_cached_by_source_total", (("source", "device"),)): 32,
            ("vllm:prompt_tokens_cached_by_source_total", (("source", "host"),)): 0,
            ("vllm:request_success_total", (("finished_reason", "length"),)): 14,
            ("vllm:request_success_total", (("finished_reason", "stop"),)): 0,
            ("vllm:request_prompt_tokens_count", ()): 14,
            ("vllm:request_prompt_tokens_sum", ()): prompt,
            ("vllm:request_generation_tokens_sum", ()): generated,
            ("vllm:request_prefill_kv_computed_tokens_sum", ()): prompt - 32,
            ("vllm:iteration_tokens_total_sum", ()): prompt - 32 + generated,
            ("vllm:iteration_tokens_total_count", ()): generated,
            # n and the longest sequence are observed once per request, not per sequence.
            ("vllm:request_params_n_count", ()): 13,
            ("vllm:request_params_n_sum", ()): 14,
            ("vllm:request_max_num_generation_tokens_count", ()): 13,
            ("vllm:request_max_num_generation_tokens_sum", ()): 100 + 4 + 3,
            ("vllm:request_params_max_tokens_count", ()): 14,
            ("vllm:request_params_max_tokens_sum", ()): generated,
            ("vllm:time_to_first_token_seconds_count", ()): 14,
            ("vllm:inter_token_latency_seconds_count", ()): generated - 14,
            ("vllm:request_time_per_output_token_seconds_count", ()): 14,
            ("vllm:e2e_request_latency_seconds_count", ()): 14,
            ("vllm:request_queue_time_seconds_count", ()): 14,
            ("vllm:request_inference_time_seconds_count", ()): 14,
            ("vllm:request_prefill_time_seconds_count", ()): 14,
            ("vllm:request_decode_time_seconds_count", ()): 14,
            ("vllm:request_num_preemptions_count", ()): 14,
            ("vllm:request_num_preemptions_sum", ()): 0,
            ("vllm:num_preemptions_total", ()): 0,
            ("vllm:external_prefix_cache_queries_total", ()): 0,
            ("vllm:external_prefix_cache_hits_total", ()): 0,
            ("vllm:mm_cache_queries_total", ()): 0,
            ("vllm:mm_cache_hits_total", ()): 0,
            ("vllm:estimated_flops_per_gpu_total", ()): 0,
            ("vllm:admission_rejections_total", (("reason", "max_num_queued_reqs"),)): 0,
        }
        for (name, labels), value in expectations.items():
            with self.subTest(family=name, labels=labels):
                self.assertEqual(moved(name, **dict(labels)), value)
        for gauge in (
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
        ):
            self.assertEqual(after[(gauge, ())], 0, gauge)
        for reason in ("capacity", "deferred"):
            self.assertEqual(
                after[("vllm:num_requests_waiting_by_reason", (("reason", reason),))], 0
            )
        self.assertEqual(after[("vllm:engine_sleep_state", (("sleep_state", "awake"),))], 1)
        self.assertEqual(
            after[
                (
                    "http_requests_total",
                    (("handler", "/v1/completions"), ("method", "POST"), ("status", "2xx")),
                )
            ],
            12,
        )

    def test_process_and_python_families_describe_the_mock(self) -> None:
        families = metric_families(self.server)
        (info,) = families["python_info"].samples
        self.assertEqual(info.labels["implementation"], "CPython")
        (rss,) = families["process_resident_memory_bytes"].samples
        self.assertGreater(rss.value, 10 * 2**20)
        (start,) = families["process_start_time_seconds"].samples
        self.assertGreater(start.value, 1.6e9)
        (fds,) = families["process_open_fds"].samples
        self.assertGreaterEqual(fds.value, 3)
        gc_family: Metric = families["python_gc_collections"]
        self.assertEqual([s.labels["generation"] for s in gc_family.samples], ["0", "1", "2"])

    def test_labels_are_written_sorted_as_prometheus_client_writes_them(self) -> None:
        text = raw_request(self.server, "GET", "/metrics")[2].decode()
        self.assertIn('vllm:num_requests_running{engine="0",model_name="mock-model"} ', text)
        self.assertIn(
            'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",'
            'model_name="mock-model"} ',
            text,
        )


class NoStatsTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, disable_log_stats=True)

    def test_disable_log_stats_leaves_out_the_engine_families(self) -> None:
        raw_post(self.server, "/v1/completions", {"prompt": "x", "max_tokens": 1})
        declared = declared_types(self.server)
        self.assertFalse([name for name in declared if name.startswith("vllm:")])
        self.assertIn("http_requests_total", declared)
