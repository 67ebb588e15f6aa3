"""In-process tests of the vLLM mock's parts: tokenizer, generation, metrics, spans, WSGI app."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import unittest
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from mocksup.vllm import TOKENIZER, MockVLLMServer, ScriptReply, ScriptRule
from mocksup.vllm._chat import ChatRequest
from mocksup.vllm._completions import CompletionRequest
from mocksup.vllm._config import ServerConfig, server_config
from mocksup.vllm._engine_metrics import FINISH_REASONS, EngineMetrics, Finished, buckets_1_2_5
from mocksup.vllm._plan import Settings, plan_request
from mocksup.vllm._tracing import SpanInput, build_span, parse_traceparent


def _config(names: list[str]) -> ServerConfig:
    return server_config(MockVLLMServer(served_model_name=names), tracing=False, environ={})


def _plan_digest(seed: int) -> str:
    request = ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "Tell me a story"}], "n": 2, "seed": seed}
    )
    plan = plan_request(request, "chatcmpl-x", Settings(4096, 0, (10, 40)), None, per_prompt_ids="")
    chunks = [c.deltas for c in plan.choices]
    return hashlib.sha256(json.dumps(chunks).encode()).hexdigest()


class TokenizerTest(unittest.TestCase):
    def test_round_trip_and_counts(self) -> None:
        for text in ["Hello world, how are you?", "naïve café 123 🙂", "  spaces\n\nand\ttabs"]:
            ids = TOKENIZER.encode(text)
            self.assertEqual(TOKENIZER.decode(ids), text)
            self.assertEqual(TOKENIZER.count(text), len(ids))

    def test_vocabulary_words_are_single_tokens(self) -> None:
        self.assertEqual(len(TOKENIZER.encode(" the world")), 2)
        self.assertEqual(len(TOKENIZER.encode("<|user|>")), 1)


class GenerationTest(unittest.TestCase):
    def test_same_seed_same_chunks_across_processes(self) -> None:
        here = _plan_digest(7)
        code = "from tests.vllm.test_units import _plan_digest; print(_plan_digest(7))"
        # A fresh interpreter has another string-hash salt: the text must not depend on it.
        other = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": "123", "PYTHONPATH": ":".join(sys.path)},
        ).stdout.strip()
        self.assertEqual(here, other)
        self.assertNotEqual(here, _plan_digest(8))

    def test_generated_text_retokenizes_to_the_count(self) -> None:
        request = CompletionRequest.model_validate({"prompt": "Once", "max_tokens": 30})
        plan = plan_request(request, "cmpl-1", Settings(4096, 3, (5, 60)), None, per_prompt_ids="-")
        choice = plan.choices[0]
        self.assertEqual(TOKENIZER.count(choice.text), len(choice.tokens))
        self.assertEqual(choice.request_id, "cmpl-1-0")

    def test_stop_string_cuts_and_reports(self) -> None:
        reply = ScriptReply(content="alpha beta gamma delta")
        request = ChatRequest.model_validate(
            {"messages": [{"role": "user", "content": "x"}], "stop": ["gamma"]}
        )
        plan = plan_request(request, "c", Settings(4096, 0, (1, 2)), reply, per_prompt_ids="")
        choice = plan.choices[0]
        self.assertEqual(choice.text, "alpha beta ")
        self.assertEqual((choice.finish_reason, choice.stop_reason), ("stop", "gamma"))
        self.assertEqual("".join(choice.deltas), choice.text)


class MetricsTest(unittest.TestCase):
    def test_vllm_test_metrics_counts_formulas(self) -> None:
        metrics = EngineMetrics(_config(["m"]))
        n, p, m = 10, 7, 10
        for _ in range(n):
            metrics.record(
                Finished(p, m, m, "length", 0.001, 0.02, 0.019, 0.09, 0.1, 0.11, [0.01] * 9)
            )
            metrics.record_request(1, m)
        families = {f.name: f for f in text_string_to_metric_families(metrics.render())}

        def value(family: str, suffix: str, **labels: str) -> float:
            for sample in families[family].samples:
                if sample.name == family + suffix and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
            raise AssertionError(f"no {family}{suffix} {labels}")

        self.assertEqual(value("vllm:time_to_first_token_seconds", "_count"), n)
        self.assertEqual(value("vllm:inter_token_latency_seconds", "_count"), n * (m - 1))
        self.assertEqual(value("vllm:request_prompt_tokens", "_sum"), n * p)
        self.assertEqual(value("vllm:request_generation_tokens", "_sum"), n * m)
        self.assertEqual(value("vllm:iteration_tokens_total", "_sum"), n * (p + m))
        self.assertEqual(value("vllm:iteration_tokens_total", "_count"), n * m)
        self.assertEqual(value("vllm:request_params_max_tokens", "_sum"), n * m)
        self.assertEqual(value("vllm:request_params_n", "_count"), n)
        self.assertEqual(value("vllm:request_max_num_generation_tokens", "_sum"), n * m)
        self.assertEqual(value("vllm:request_num_preemptions", "_count"), n)
        self.assertEqual(value("vllm:prompt_tokens", "_total"), n * p)
        self.assertEqual(value("vllm:generation_tokens", "_total"), n * m)
        for reason in FINISH_REASONS:
            expected = n if reason == "length" else 0
            self.assertEqual(
                value("vllm:request_success", "_total", finished_reason=reason), expected
            )
        sample = families["vllm:num_requests_running"].samples[0]
        self.assertEqual(sample.labels, {"model_name": "m", "engine": "0"})
        # prometheus_client writes labels sorted by name.
        self.assertIn('vllm:num_requests_running{engine="0",model_name="m"} 0.0', metrics.render())

    def test_token_buckets(self) -> None:
        self.assertEqual(buckets_1_2_5(100), (1, 2, 5, 10, 20, 50, 100))


class SpanTest(unittest.TestCase):
    def test_parent_and_attributes(self) -> None:
        parent = parse_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "vendor=x"
        )
        assert parent is not None
        span = build_span(
            SpanInput(
                request_id="cmpl-1-0",
                parent=parent,
                start_ns=10,
                finished=Finished(
                    5, 3, 3, "length", 0.001, 0.01, 0.009, 0.02, 0.029, 0.03, [0.01, 0.01]
                ),
                temperature=0.0,
                top_p=0.9,
                max_tokens=3,
            )
        )
        assert span is not None
        self.assertEqual(span.name, "llm_request")
        self.assertEqual(span.trace_id.hex(), "0af7651916cd43dd8448eb211c80319c")
        self.assertEqual(span.parent_span_id.hex(), "b7ad6b7169203331")
        self.assertEqual(span.trace_state, "vendor=x")
        attributes = {a.key: a.value for a in span.attributes}
        self.assertNotIn("gen_ai.request.temperature", attributes)  # 0.0 is falsy in vLLM
        self.assertEqual(attributes["gen_ai.request.top_p"].double_value, 0.9)
        self.assertEqual(attributes["gen_ai.usage.prompt_tokens"].int_value, 5)
        self.assertNotIn("gen_ai.response.finish_reasons", attributes)  # vLLM 0.33 sets none
        self.assertEqual(attributes["gen_ai.request.n"].int_value, 1)
        self.assertEqual(span.flags, 0x300)  # the SDK's "parent is remote"
        self.assertEqual(attributes["gen_ai.usage.completion_tokens"].int_value, 3)
        self.assertEqual(attributes["gen_ai.latency.e2e"].double_value, 0.03)
        self.assertEqual(span.end_time_unix_nano, 10 + 30_000_000)

    def test_invalid_traceparents_start_a_root(self) -> None:
        bad_version = "ff-" + "a" * 32 + "-" + "b" * 16 + "-01"
        zero_trace = "00-" + "0" * 32 + "-" + "b" * 16 + "-01"
        for header in ["", "garbage", bad_version, zero_trace]:
            self.assertIsNone(parse_traceparent(header))


class AppTest(unittest.TestCase):
    """The WSGI app in-process: error shapes and auth."""

    def setUp(self) -> None:
        rule = ScriptRule(contains="boom", reply=ScriptReply(error_status=400, error_message="no"))
        app, _ = MockVLLMServer(api_key="sekret", scripts=[rule], max_model_len=64).make_app()
        self.client = Client(app)
        self.auth = {"Authorization": "Bearer sekret"}
        self.json_type = {"Content-Type": "application/json"}

    def post(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.post(path, json=body, headers={**self.auth, **headers})

    def test_auth_guards_only_vllms_api_prefixes(self) -> None:
        # vLLM's middleware guards paths starting /v1, /v2, /inference and /cohere only.
        for path in ("/v1/models", "/v1/nothing", "/v2/rerank", "/inference/v1/generate",
                     "/cohere/x", "/v1"):  # fmt: skip
            response = self.client.get(path)
            self.assertEqual(
                (response.status_code, response.json), (401, {"error": "Unauthorized"}), path
            )
        for path in ("/health", "/ping", "/load", "/version", "/metrics", "/openapi.json"):
            self.assertEqual(self.client.get(path).status_code, 200, path)
        self.assertEqual(self.client.get("/nothing").status_code, 404)
        tokenized = self.client.post("/tokenize", json={"prompt": "hi"})
        self.assertEqual(tokenized.status_code, 200)
        self.assertEqual(self.client.options("/v1/models").status_code, 405)  # never guarded
        self.assertEqual(self.client.get("/v1/models", headers=self.auth).status_code, 200)

    def test_validation_and_parse_errors_are_400(self) -> None:
        chat = "/v1/chat/completions"
        options = {"include_usage": True}
        cases = [
            (self.post(chat, {"model": "mock-model"}), "Bad Request", "body.messages"),
            (self.post(chat, {"messages": [], "n": 0}), "BadRequestError", None),
            (
                self.client.post(chat, data=b"{not json", headers={**self.auth, **self.json_type}),
                "Bad Request",
                "body.1",
            ),
            (
                self.client.post(
                    chat, data=b"{}", headers={**self.auth, "Content-Type": "text/plain"}
                ),
                "Bad Request",
                None,
            ),
            (
                self.post("/v1/completions", {"prompt": "x", "stream_options": options}),
                "Bad Request",
                "stream_options",
            ),
        ]
        for response, kind, param in cases:
            self.assertEqual(response.status_code, 400, response.data)
            error = response.json["error"]
            self.assertEqual((error["type"], error["code"], error["param"]), (kind, 400, param))
            self.assertEqual(set(error), {"message", "type", "param", "code"})

    def test_context_length_messages(self) -> None:
        long = " the" * 100
        response = self.post("/v1/completions", {"prompt": long})
        self.assertEqual(response.status_code, 400)
        error = response.json["error"]
        self.assertEqual(
            error["message"],
            "This model's maximum context length is 64 tokens. However, your prompt contains "
            "100 input tokens, which exceeds this limit even without any output tokens. Please "
            "reduce the length of the input prompt. (parameter=input_tokens, value=100)",
        )
        self.assertEqual((error["type"], error["param"]), ("BadRequestError", "input_tokens"))
        response = self.post("/v1/completions", {"prompt": " the", "max_tokens": 100})
        error = response.json["error"]
        self.assertEqual(
            error["message"],
            "max_tokens=100 cannot be greater than max_model_len=64. Please request fewer "
            "output tokens. (parameter=max_tokens, value=100)",
        )
        self.assertEqual(error["param"], "max_tokens")
        # Within the context but past what the prompt leaves: capped, not refused.
        response = self.post("/v1/completions", {"prompt": " the" * 60, "max_tokens": 64,
                                                 "ignore_eos": True})  # fmt: skip
        self.assertEqual(response.status_code, 200, response.json)
        self.assertEqual(response.json["usage"]["completion_tokens"], 4)
        self.assertEqual(response.json["choices"][0]["finish_reason"], "length")
        # A prompt filling the context leaves no room for one token.
        response = self.post("/v1/completions", {"prompt": " the" * 64})
        self.assertEqual(response.json["error"]["message"],
                         "max_tokens must be at least 1, got 0. (parameter=max_tokens, "
                         "value=0)")  # fmt: skip

    def test_unknown_model_route_and_method(self) -> None:
        response = self.post("/v1/completions", {"model": "gpt-9", "prompt": "x"})
        self.assertEqual(response.status_code, 404)
        self.assertEqual(
            response.json["error"]["message"],
            "The model `gpt-9` does not exist. Valid aliases: mock-model.",
        )
        self.assertEqual(self.client.get("/nope", headers=self.auth).json, {"detail": "Not Found"})
        self.assertEqual(self.client.get("/v1/completions", headers=self.auth).status_code, 405)

    def test_scripted_error_and_tokenize(self) -> None:
        response = self.post("/v1/completions", {"prompt": "boom"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json["error"]["message"], "no")
        tokens = self.post("/tokenize", {"prompt": "Hello world", "return_token_strs": True}).json
        self.assertEqual(tokens["token_strs"], ["Hello", " world"])
        self.assertEqual(self.post("/detokenize", {"tokens": tokens["tokens"]}).json,
                         {"prompt": "Hello world"})  # fmt: skip

    def test_a_bug_answers_500_and_the_app_keeps_serving(self) -> None:
        app = self.client.application

        def broken(*args: Any) -> Any:
            raise RuntimeError("bug")

        app._routes["/version"] = (("GET",), broken)  # type: ignore[attr-defined]
        with self.assertLogs("mocksup.vllm._app", "ERROR"):
            response = self.client.get("/version")
        self.assertEqual(response.status_code, 500)
        self.assertEqual(response.json["error"]["type"], "InternalServerError")
        self.assertEqual(self.client.get("/health").status_code, 200)
