"""The ``llm_request`` span, received by MockOTLPCollector over gRPC and HTTP/protobuf."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from mocksup.otlp import MockOTLPCollector
from mocksup.vllm import TOKENIZER, MockVLLMServer
from tests.support import ProcessTestCase
from tests.vllm.support import raw_post, scrape


class TracingTest(ProcessTestCase):
    collector: MockOTLPCollector
    server: MockVLLMServer
    client: openai.OpenAI

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.collector = MockOTLPCollector(port=0, grpc_port=0)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()
        cls.server = MockVLLMServer(port=0, otlp_traces_endpoint=cls.collector.grpc_endpoint)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        cls.client = openai.OpenAI(base_url=cls.server.base_url, api_key="x", max_retries=0)
        cls.addClassCleanup(cls.client.close)

    def test_span_parent_and_attributes(self) -> None:
        trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
        response = self.client.completions.create(
            model="mock-model",
            prompt="Hello world",
            max_tokens=7,
            temperature=0.01,
            top_p=0.1,
            extra_headers={"traceparent": f"00-{trace_id}-{parent}-01", "tracestate": "k=v"},
        )
        (span,) = self.collector.wait_for_spans("llm_request", trace_id=trace_id)
        self.assertEqual(
            (span.kind, span.parent_span_id, span.trace_state), ("SERVER", parent, "k=v")
        )
        a = span.attributes
        assert response.usage is not None
        self.assertEqual(a["gen_ai.request.id"], response.id + "-0")
        self.assertEqual(a["gen_ai.usage.prompt_tokens"], response.usage.prompt_tokens)
        self.assertEqual(a["gen_ai.usage.completion_tokens"], response.usage.completion_tokens)
        self.assertNotIn("gen_ai.response.finish_reasons", a)  # vLLM 0.33 sets none
        self.assertEqual((a["gen_ai.request.temperature"], a["gen_ai.request.top_p"]), (0.01, 0.1))
        self.assertEqual((a["gen_ai.request.max_tokens"], a["gen_ai.request.n"]), (7, 1))
        for key in ("time_in_queue", "time_to_first_token", "e2e"):
            self.assertGreater(a[f"gen_ai.latency.{key}"], 0, key)
        self.assertNotIn("gen_ai.request.model", a)
        resource = span.resource.attributes
        self.assertEqual(resource["service.name"], "unknown_service:python")
        self.assertEqual(resource["vllm.process_id"], str(self.server.pid))
        self.assertEqual(resource["vllm.instrumenting_module_name"], "vllm.llm_engine")
        self.assertEqual(resource["telemetry.sdk.name"], "opentelemetry")
        self.assertEqual(span.scope.name, "vllm.tracing.otel")

    def test_no_traceparent_starts_a_root(self) -> None:
        response = self.client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "hi"}], temperature=0
        )
        spans = self.collector.wait_for_spans(
            "llm_request", attributes={"gen_ai.request.id": response.id}
        )
        self.assertEqual(spans[0].parent_span_id, "")
        self.assertNotIn("gen_ai.request.temperature", spans[0].attributes)

    def test_fifty_concurrent_requests_keep_their_traces(self) -> None:
        contexts = {f"conc-{i}": (os.urandom(16).hex(), os.urandom(8).hex()) for i in range(50)}

        def send(request_id: str) -> None:
            trace_id, parent = contexts[request_id]
            headers = {"X-Request-Id": request_id, "traceparent": f"00-{trace_id}-{parent}-01"}
            body = {"messages": [{"role": "user", "content": request_id}]}
            status = raw_post(self.server, "/v1/chat/completions", body, headers)[0]
            self.assertEqual(status, 200)

        with ThreadPoolExecutor(10) as pool:
            list(pool.map(send, contexts))
        for request_id, (trace_id, parent) in contexts.items():
            spans = self.collector.wait_for_spans("llm_request", trace_id=trace_id)
            self.assertEqual(len(spans), 1)
            self.assertEqual(spans[0].parent_span_id, parent)
            self.assertEqual(spans[0].attributes["gen_ai.request.id"], f"chatcmpl-{request_id}")

    def test_http_protobuf_and_flush_on_stop(self) -> None:
        server = MockVLLMServer(
            port=0,
            otlp_traces_endpoint=self.collector.http_endpoint,
            otlp_traces_protocol="http/protobuf",
            otel_service_name="vllm-http",
        )
        self.addCleanup(server.stop)
        server.start()
        for i in range(20):
            raw_post(server, "/v1/completions", {"prompt": f"flush {i}", "max_tokens": 2})
        server.stop()
        # stop() returned: every span must already be in, without waiting.
        self.assertEqual(len(self.collector.spans("llm_request", service_name="vllm-http")), 20)


class SpanShapeTest(ProcessTestCase):
    """Item 3 to 5: the span as vLLM's OpenTelemetry SDK exports it."""

    collector: MockOTLPCollector
    server: MockVLLMServer
    client: openai.OpenAI

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.collector = MockOTLPCollector(port=0, grpc_port=0)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()
        cls.server = MockVLLMServer(
            port=0,
            otlp_traces_endpoint=cls.collector.grpc_endpoint,
            env={"OTEL_SERVICE_NAME": "my-vllm", "OTEL_RESOURCE_ATTRIBUTES": "team=llm"},
        )
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        cls.client = openai.OpenAI(base_url=cls.server.base_url, api_key="x", max_retries=0)
        cls.addClassCleanup(cls.client.close)

    def test_resource_scope_and_flags(self) -> None:
        trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
        self.client.completions.create(
            model="mock-model",
            prompt="x",
            max_tokens=1,
            extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        )
        root = self.client.completions.create(model="mock-model", prompt="y", max_tokens=1)
        (child,) = self.collector.wait_for_spans("llm_request", trace_id=trace_id)
        (alone,) = self.collector.wait_for_spans(
            "llm_request", attributes={"gen_ai.request.id": root.id + "-0"}
        )
        self.assertEqual((child.flags, alone.flags), (0x300, 0x100))
        self.assertEqual(child.scope.name, "vllm.tracing.otel")
        resource = child.resource.attributes
        self.assertEqual(resource["service.name"], "my-vllm")
        self.assertEqual(resource["team"], "llm")
        self.assertEqual(resource["vllm.process_id"], str(self.server.pid))
        self.assertEqual(
            (resource["telemetry.sdk.language"], resource["telemetry.sdk.name"]),
            ("python", "opentelemetry"),
        )
        self.assertRegex(str(resource["telemetry.sdk.version"]), r"^\d+\.\d+")
        self.assertRegex(str(resource["service.instance.id"]), r"^[0-9a-f-]{36}$")

    def test_startup_spans_join_one_trace_across_the_processes(self) -> None:
        mine = {"vllm.process_id": str(self.server.pid)}
        (load,) = self.collector.wait_for_spans("Load model", resource=mine)
        spans = {s.name: s for s in self.collector.spans(trace_id=load.trace_id)}
        self.assertEqual(spans["Overall Loading"].parent_span_id, "")
        self.assertEqual(
            spans["EngineCoreProc init"].parent_span_id, spans["AsyncMPClient init"].span_id
        )
        self.assertEqual(load.resource.attributes["vllm.process_kind"], "worker")
        self.assertEqual(load.resource.attributes["vllm.instrumenting_module_name"], "vllm.worker")
        self.assertEqual(load.attributes["code.function"], "BaseModelLoader.load_model")
        self.assertEqual(
            spans["Overall Loading"].resource.attributes["vllm.instrumenting_module_name"],
            "vllm.llm_engine",
        )

    def test_startup_spans_are_in_the_collector_once_the_mock_serves(self) -> None:
        # A test that clears the collector once its mocks serve must not see them arrive later.
        with MockVLLMServer(port=0, otlp_traces_endpoint=self.collector.grpc_endpoint) as late:
            # No wait: they arrived before start() returned.
            spans = self.collector.spans(resource={"vllm.process_id": str(late.pid)})
            mine = [s.name for s in spans]
        self.assertIn("Overall Loading", mine)
        self.assertIn("Warmup (GPU)", mine)

    def test_a_collector_that_refuses_does_not_delay_the_start(self) -> None:
        # The start-up export waits for an answer, not for a collector to come up: patient
        # gRPC retries would hold the ready for the export's whole 1 s timeout.
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        started = time.monotonic()
        with MockVLLMServer(port=0, otlp_traces_endpoint=f"127.0.0.1:{port}"):
            self.assertLess(time.monotonic() - started, 0.9)

    def test_an_unsampled_parent_gets_no_span(self) -> None:
        unsampled = os.urandom(16).hex()
        self.client.completions.create(
            model="mock-model",
            prompt="x",
            max_tokens=1,
            extra_headers={"traceparent": f"00-{unsampled}-{os.urandom(8).hex()}-00"},
        )
        sampled = os.urandom(16).hex()
        self.client.completions.create(
            model="mock-model",
            prompt="x",
            max_tokens=1,
            extra_headers={"traceparent": f"00-{sampled}-{os.urandom(8).hex()}-01"},
        )
        self.collector.wait_for_spans("llm_request", trace_id=sampled)
        self.assertEqual(self.collector.spans(trace_id=unsampled), [])

    def test_n_choices_share_the_request_id_and_report_n_1(self) -> None:
        response = self.client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "hi"}], n=3, max_tokens=2
        )
        spans = self.collector.wait_for_spans(
            "llm_request", count=3, attributes={"gen_ai.request.id": response.id}
        )
        self.assertEqual([s.attributes["gen_ai.request.n"] for s in spans], [1, 1, 1])
        self.assertTrue(all("gen_ai.response.finish_reasons" not in s.attributes for s in spans))


class LatencySpanTest(ProcessTestCase):
    """The span's latencies under the latency model (issue 14 item 8): what was modelled,
    what the client measured and what ``/metrics`` shows for the same request agree."""

    TTFT, PER_TOKEN, ITL = 0.02, 0.001, 0.01
    collector: MockOTLPCollector
    server: MockVLLMServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.collector = MockOTLPCollector(port=0, grpc_port=0)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()
        cls.server = MockVLLMServer(
            port=0,
            otlp_traces_endpoint=cls.collector.grpc_endpoint,
            latency={"ttft": cls.TTFT, "prefill_per_token": cls.PER_TOKEN, "itl": cls.ITL},
            # 8 blocks of 16 tokens: two requests of 10 + 100 tokens (7 blocks each) collide.
            block_size=16,
            num_gpu_blocks_override=8,
            max_model_len=128,
            enable_prefix_caching=False,  # every prompt token prefilled, every time
        )
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()

    def span_of(self, request_id: str) -> dict[str, Any]:
        (span,) = self.collector.wait_for_spans(
            "llm_request", attributes={"gen_ai.request.id": f"cmpl-{request_id}-0"}
        )
        latencies = {k.rpartition(".")[2]: v for k, v in span.attributes.items()
                     if k.startswith("gen_ai.latency.")}  # fmt: skip
        return {**latencies, "end_ns": span.end_time_unix_nano}

    def assert_histograms_hold(self, spans: list[dict[str, Any]]) -> None:
        samples = scrape(self.server)
        for family, key in (
            ("vllm:time_to_first_token_seconds", "time_to_first_token"),
            ("vllm:e2e_request_latency_seconds", "e2e"),
            ("vllm:request_queue_time_seconds", "time_in_queue"),
            ("vllm:request_prefill_time_seconds", "time_in_model_prefill"),
            ("vllm:request_decode_time_seconds", "time_in_model_decode"),
            ("vllm:request_inference_time_seconds", "time_in_model_inference"),
        ):
            self.assertEqual(samples[(family + "_count", ())], len(spans), family)
            total = sum(s[key] for s in spans)
            self.assertAlmostEqual(samples[(family + "_sum", ())], total, places=6, msg=family)

    def test_prefill_grows_with_the_prompt_in_span_client_and_metrics(self) -> None:
        self.server.clear(metrics=True)
        prompt = "of" + " of" * 59
        self.assertEqual(TOKENIZER.count(prompt), 60)
        body = {"prompt": prompt, "max_tokens": 5, "ignore_eos": True, "stream": True}
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        self.addCleanup(conn.close)
        started = time.monotonic()
        conn.request("POST", "/v1/completions", json.dumps(body),
                     {"Content-Type": "application/json", "X-Request-Id": "prefill"})  # fmt: skip
        response = conn.getresponse()
        while not response.readline().startswith(b"data: {"):
            pass
        client_ttft = time.monotonic() - started
        response.read()
        client_e2e = time.monotonic() - started
        span = self.span_of("prefill")
        modelled = self.TTFT + 60 * self.PER_TOKEN
        # A stream's first token goes out once due: at its modelled time or just after.
        self.assertGreaterEqual(span["time_in_model_prefill"], modelled)
        self.assertLess(span["time_in_model_prefill"], modelled + 1.0)
        self.assertAlmostEqual(
            span["time_to_first_token"],
            span["time_in_queue"] + span["time_in_model_prefill"],
            places=6,
        )
        self.assertLessEqual(span["time_to_first_token"], client_ttft)
        self.assertLess(client_ttft - span["time_to_first_token"], 1.0)
        self.assertGreaterEqual(span["time_in_model_decode"], 0)
        self.assertGreaterEqual(
            span["e2e"], span["time_to_first_token"] + span["time_in_model_decode"]
        )
        self.assertLessEqual(span["e2e"], client_e2e)
        self.assert_histograms_hold([span])

    def test_a_preempted_request_counts_its_pause(self) -> None:
        self.server.clear(metrics=True)
        prompt = "the" + " the" * 9  # 10 tokens; 110 with the output: 7 of the 8 blocks
        elapsed: dict[str, float] = {}

        def send(request_id: str) -> None:
            body = {"prompt": prompt, "max_tokens": 100, "ignore_eos": True}
            started = time.monotonic()
            status = raw_post(self.server, "/v1/completions", body,
                              {"X-Request-Id": request_id})[0]  # fmt: skip
            elapsed[request_id] = time.monotonic() - started
            self.assertEqual(status, 200)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(send, ["first", "second"]))
        samples = scrape(self.server)
        self.assertEqual(samples[("vllm:num_preemptions_total", ())], 1)
        self.assertEqual(samples[("vllm:request_num_preemptions_sum", ())], 1)
        spans = {name: self.span_of(name) for name in elapsed}
        modelled_decode = 99 * self.ITL
        # Non-streamed tokens keep their modelled times: the request that ran through
        # decodes in exactly 99 gaps; the preempted one also waited for the other to end
        # and prefilled its prompt and output again (at least a TTFT more).
        ran, paused = sorted(spans.values(), key=lambda s: s["time_in_model_decode"])
        self.assertAlmostEqual(ran["time_in_model_decode"], modelled_decode, places=6)
        self.assertGreaterEqual(paused["time_in_model_decode"], modelled_decode + self.TTFT)
        self.assertGreaterEqual(paused["end_ns"], ran["end_ns"] + self.TTFT * 1e9)
        for name, span in spans.items():
            # Both were scheduled at once and had their first token before the preemption.
            modelled_prefill = self.TTFT + 10 * self.PER_TOKEN
            self.assertAlmostEqual(span["time_in_model_prefill"], modelled_prefill, places=6)
            self.assertAlmostEqual(
                span["time_in_model_inference"],
                span["time_in_model_prefill"] + span["time_in_model_decode"],
                places=6,
            )
            self.assertGreaterEqual(
                span["e2e"], span["time_to_first_token"] + span["time_in_model_decode"]
            )
            self.assertLessEqual(span["e2e"], elapsed[name])
        self.assert_histograms_hold(list(spans.values()))
