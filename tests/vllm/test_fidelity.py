"""The wire as vLLM 0.33 answers it: context limits, validation bodies, request features,
server options, headers and the keys of every body (issue 10, items 2 and 8 to 13)."""

from __future__ import annotations

import json
import re
from typing import Any

import openai

from mocksup.vllm import TOKENIZER, MockVLLMServer
from tests.vllm.support import (
    ServerTestCase,
    hold,
    raw_post,
    raw_request,
    running,
    sse_events,
    until,
)

USER = [{"role": "user", "content": "Tell me about the world"}]
CHAT = "/v1/chat/completions"
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def error_of(response: tuple[int, dict[str, str], bytes]) -> tuple[int, dict[str, Any]]:
    status, _, data = response
    return status, json.loads(data)["error"]


class ContextTest(ServerTestCase):
    """Item 2: ``max_tokens`` past what the context leaves is capped, not refused."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, max_model_len=8192)

    def test_max_tokens_is_capped_to_the_room_the_prompt_leaves(self) -> None:
        prompt = " the" * 8000
        response = self.client.completions.create(
            model="mock-model", prompt=prompt, max_tokens=8192, extra_body={"ignore_eos": True}
        )
        assert response.usage is not None
        self.assertEqual(response.usage.prompt_tokens, 8000)
        self.assertEqual(response.usage.completion_tokens, 192)
        self.assertEqual(response.choices[0].finish_reason, "length")

    def test_max_tokens_past_the_context_and_prompts_past_it(self) -> None:
        status, error = error_of(
            raw_post(self.server, CHAT, {"messages": USER, "max_completion_tokens": 10000})
        )
        self.assertEqual((status, error["param"]), (400, "max_completion_tokens"))
        self.assertTrue(
            error["message"].startswith(
                "max_completion_tokens=10000 cannot be greater than max_model_len=8192."
            )
        )
        status, error = error_of(
            raw_post(self.server, "/v1/completions", {"prompt": [7] * 9000, "max_tokens": 1})
        )
        self.assertEqual(
            (status, error["type"], error["param"]), (400, "BadRequestError", "input_tokens")
        )
        self.assertIn(
            "your prompt contains 9000 input tokens, which exceeds this limit", error["message"]
        )
        with self.assertRaises(openai.BadRequestError):
            self.client.completions.create(model="mock-model", prompt=[7] * 9000)


class ValidationTest(ServerTestCase):
    """Items 8 and 9: vLLM's error bodies, and the checks it makes before running."""

    def test_schema_errors_are_fastapis_list_with_the_location_as_param(self) -> None:
        status, error = error_of(raw_post(self.server, CHAT, {"messages": USER, "seed": 2**63}))
        self.assertEqual((status, error["type"], error["code"]), (400, "Bad Request", 400))
        self.assertEqual(error["param"], "body.seed")
        self.assertTrue(error["message"].startswith("1 validation error:\n  {'type': "))
        self.assertIn("'loc': 'body.seed'", error["message"])
        ok = raw_post(self.server, CHAT, {"messages": USER, "seed": 2**63 - 1, "max_tokens": 1})
        self.assertEqual(ok[0], 200)
        status, error = error_of(
            raw_post(self.server, CHAT, {"messages": USER, "stop": list("abcde")})
        )
        self.assertEqual((status, error["param"]), (400, "body.stop"))  # at most 4 stop strings

    def test_rule_errors_name_their_parameter(self) -> None:
        status, error = error_of(raw_post(self.server, CHAT, {"messages": USER, "temperature": 3}))
        self.assertEqual(
            (status, error["type"], error["param"]), (400, "BadRequestError", "temperature")
        )
        self.assertEqual(
            error["message"],
            "temperature must be in [0, 2], got 3.0. (parameter=temperature, value=3.0)",
        )
        status, error = error_of(raw_post(self.server, CHAT, {"messages": USER, "top_logprobs": 2}))
        self.assertEqual((error["type"], error["param"]), ("Bad Request", "top_logprobs"))
        for field, value, words in [
            ("presence_penalty", 3, "presence_penalty must be in [-2, 2]"),
            ("top_k", -5, "top_k must be 0 (disable)"),
            ("min_p", 2, "min_p must be in [0, 1]"),
            ("repetition_penalty", 0, "repetition_penalty must be greater"),
        ]:
            status, error = error_of(raw_post(self.server, CHAT, {"messages": USER, field: value}))
            self.assertEqual(status, 400, field)
            self.assertIn(words, error["message"])

    def test_logit_bias_keys_values_and_vocabulary(self) -> None:
        vocabulary = TOKENIZER.vocab_size
        cases = [
            ({"not_a_token_id": 50, "bad2": 1}, "['not_a_token_id', 'bad2']", "logit_bias"),
            ({str(vocabulary + 5): 1.0}, f"Vocabulary size: {vocabulary}", "logit_bias"),
            ({"1": "not_a_number"}, "valid number", "body.logit_bias.1"),
        ]
        for bias, words, param in cases:
            status, error = error_of(
                raw_post(self.server, CHAT, {"messages": USER, "logit_bias": bias})
            )
            self.assertEqual((status, error["param"]), (400, param), bias)
            self.assertIn(words, error["message"])
        ok = raw_post(
            self.server, CHAT, {"messages": USER, "logit_bias": {"300": 1.0}, "max_tokens": 1}
        )
        self.assertEqual(ok[0], 200)

    def test_log_probability_limits(self) -> None:
        status, error = error_of(
            raw_post(self.server, CHAT, {"messages": USER, "logprobs": True, "top_logprobs": 21})
        )
        self.assertEqual((status, error["param"]), (400, "logprobs"))
        self.assertIn(
            "Requested sample logprobs of 21, which is greater than max allowed: 20",
            error["message"],
        )
        status, error = error_of(
            raw_post(self.server, "/v1/completions", {"prompt": "x", "prompt_logprobs": -1})
        )
        self.assertEqual((status, error["param"]), (400, "prompt_logprobs"))
        self.assertIn(f"Requested prompt logprobs of {TOKENIZER.vocab_size}", error["message"])
        status, error = error_of(
            raw_post(
                self.server,
                "/v1/completions",
                {"prompt": "x", "prompt_logprobs": 1, "stream": True},
            )
        )
        self.assertIn("`prompt_logprobs` are not available when `stream=True`", error["message"])

    def test_prompt_token_ids_must_be_in_the_vocabulary(self) -> None:
        status, error = error_of(
            raw_post(self.server, "/v1/completions", {"prompt": [1, 99999999]})
        )
        self.assertEqual(
            (status, error["message"]), (400, "Token id 99999999 is out of vocabulary")
        )

    def test_structured_outputs_and_tool_choice_shapes(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"structured_outputs": {"regex": "("}}, "Failed to transform regex"),
            ({"structured_outputs": {"choice": []}}, "cannot be an empty list"),
            ({"structured_outputs": {"json": "{", "regex": "a"}}, "only use one kind"),
            ({"structured_outputs": {"grammar": "  "}}, "grammar cannot be an empty string"),
            (
                {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {}},
                "Invalid value for `function`: `None` in `tool_choice`",
            ),
            ({"response_format": {"type": "json_schema"}}, "'json_schema' field must be provided"),
        ]
        for extra, words in cases:
            status, error = error_of(raw_post(self.server, CHAT, {"messages": USER, **extra}))
            self.assertEqual(status, 400, extra)
            self.assertIn(words, error["message"])

    def test_tool_choice_needs_a_tool_call_parser_as_in_vllm(self) -> None:
        tools = [{"type": "function", "function": {"name": "f"}}]
        status, error = error_of(raw_post(self.server, CHAT, {"messages": USER, "tools": tools}))
        self.assertEqual(status, 400)
        self.assertEqual(
            error["message"],
            '"auto" tool choice requires '
            "--enable-auto-tool-choice and --tool-call-parser to "
            "be set",
        )
        status, error = error_of(
            raw_post(
                self.server, CHAT, {"messages": USER, "tools": tools, "tool_choice": "required"}
            )
        )
        self.assertEqual(
            error["message"], 'tool_choice="required" requires --tool-call-parser to be set'
        )


class FeaturesTest(ServerTestCase):
    """Item 10: the request features vLLM honours."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, tool_call_parser="hermes", enable_auto_tool_choice=True)

    def test_return_token_ids(self) -> None:
        body = {"messages": USER, "max_tokens": 6, "return_token_ids": True}
        reply = json.loads(raw_post(self.server, CHAT, body)[2])
        tokenized = json.loads(raw_post(self.server, "/tokenize", {"messages": USER})[2])
        self.assertEqual(reply["prompt_token_ids"], tokenized["tokens"])
        choice = reply["choices"][0]
        self.assertEqual(len(choice["token_ids"]), reply["usage"]["completion_tokens"])
        self.assertEqual(TOKENIZER.decode(choice["token_ids"]), choice["message"]["content"])
        events = [
            json.loads(e)
            for e in sse_events(raw_post(self.server, CHAT, {**body, "stream": True})[2])[:-1]
        ]
        self.assertEqual(events[0]["prompt_token_ids"], tokenized["tokens"])
        streamed = [t for e in events[1:] for t in e["choices"][0]["token_ids"]]
        self.assertEqual(streamed, choice["token_ids"])

    def test_prompt_logprobs(self) -> None:
        reply = json.loads(
            raw_post(self.server, CHAT, {"messages": USER, "max_tokens": 1, "prompt_logprobs": 2})[
                2
            ]
        )
        rows = reply["prompt_logprobs"]
        self.assertEqual(len(rows), reply["usage"]["prompt_tokens"])
        self.assertIsNone(rows[0])
        ids = json.loads(raw_post(self.server, "/tokenize", {"messages": USER})[2])["tokens"]
        for token, row in zip(ids[1:], rows[1:], strict=True):
            self.assertIn(str(token), row)
            self.assertIn(len(row), (2, 3))
            self.assertEqual(set(row[str(token)]), {"logprob", "rank", "decoded_token"})
        completion = json.loads(
            raw_post(
                self.server,
                "/v1/completions",
                {"prompt": "the world is", "prompt_logprobs": 0, "max_tokens": 1},
            )[2]
        )
        self.assertEqual(len(completion["choices"][0]["prompt_logprobs"]), 3)

    def test_truncate_prompt_tokens_and_request_id(self) -> None:
        reply = self.client.completions.create(
            model="mock-model",
            prompt=" the" * 50,
            max_tokens=1,
            extra_body={"truncate_prompt_tokens": 10, "request_id": "mine-1"},
        )
        assert reply.usage is not None
        self.assertEqual(reply.usage.prompt_tokens, 10)
        self.assertEqual(reply.id, "cmpl-mine-1")
        # The X-Request-Id header wins over the body's request_id, as in vLLM.
        reply = self.client.completions.create(
            model="mock-model",
            prompt="x",
            max_tokens=1,
            extra_body={"request_id": "body"},
            extra_headers={"X-Request-Id": "header"},
        )
        self.assertEqual(reply.id, "cmpl-header")

    def test_continue_final_message(self) -> None:
        messages = [
            {"role": "user", "content": "say it"},
            {"role": "assistant", "content": "An apple a day"},
        ]
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=messages,  # type: ignore[arg-type]
            extra_body={"continue_final_message": True, "add_generation_prompt": False},
        )
        self.assertEqual(reply.choices[0].message.role, "assistant")
        assert reply.usage is not None
        rendered = "<|user|>\nsay it\n<|assistant|>\nAn apple a day"
        self.assertEqual(reply.usage.prompt_tokens, TOKENIZER.count(rendered))
        _, error = error_of(
            raw_post(
                self.server,
                CHAT,
                {
                    "messages": messages,
                    "continue_final_message": True,
                    "add_generation_prompt": True,
                },
            )
        )
        self.assertIn(
            "Cannot set both `continue_final_message` and `add_generation_prompt`", error["message"]
        )

    def test_echo_with_logprobs_covers_the_prompt(self) -> None:
        reply = self.client.completions.create(
            model="mock-model", prompt="the world is", max_tokens=2, echo=True, logprobs=0
        )
        logprobs = reply.choices[0].logprobs
        assert logprobs is not None and logprobs.tokens and logprobs.top_logprobs is not None
        self.assertEqual(logprobs.tokens[:3], ["the", " world", " is"])
        assert logprobs.token_logprobs is not None
        self.assertIsNone(logprobs.token_logprobs[0])
        self.assertEqual(len(logprobs.tokens), 5)
        # logprobs=0: each generated token still lists itself (logprobs + 1 entries).
        self.assertEqual([len(t) for t in logprobs.top_logprobs[3:]], [1, 1])
        self.assertEqual("".join(logprobs.tokens), reply.choices[0].text)

    def test_a_required_tool_past_max_tokens_makes_no_call(self) -> None:
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "forecast",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ]
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=USER,
            tools=tools,  # type: ignore[arg-type]
            tool_choice="required",
            max_completion_tokens=1,
        )
        choice = reply.choices[0]
        self.assertEqual(choice.finish_reason, "length")
        self.assertIsNone(choice.message.tool_calls)
        self.assertEqual(choice.message.content, "")
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=USER,
            tools=tools,  # type: ignore[arg-type]
            tool_choice="required",
        )
        (call,) = reply.choices[0].message.tool_calls or []
        self.assertRegex(call.id, r"^chatcmpl-tool-[0-9a-f]{16}$")


class ServerOptionsTest(ServerTestCase):
    """Items 11 and 12: server options and headers."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0,
            enable_force_include_usage=True,
            root_path="/llm",
            max_logprobs=5,
            enable_tokenizer_info_endpoint=True,
            enable_request_id_headers=True,
            api_key="k",
            enable_prompt_tokens_details=True,
            enable_per_request_metrics=True,
        )

    def test_force_include_usage_streams_usage_on_every_chunk(self) -> None:
        body = {"messages": USER, "stream": True, "max_tokens": 3}
        raw = raw_post(self.server, CHAT, body, {"Authorization": "Bearer k"})[2]
        events = [json.loads(e) for e in sse_events(raw)[:-1]]
        self.assertTrue(all("usage" in e for e in events))
        last = events[-1]
        self.assertEqual(last["choices"], [])
        self.assertEqual(last["usage"]["completion_tokens"], 3)
        self.assertEqual(last["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
        self.assertEqual(set(last["metrics"]) >= {"time_to_first_token_ms", "queue_time_ms"}, True)

    def test_root_path_serves_both_spellings_and_keeps_the_key(self) -> None:
        for prefix in ("", "/llm"):
            client = openai.OpenAI(
                base_url=self.server.url + prefix + "/v1", api_key="k", max_retries=0
            )
            self.addCleanup(client.close)
            reply = client.chat.completions.create(model="mock-model", messages=USER, max_tokens=1)  # type: ignore[arg-type]
            self.assertEqual(len(reply.choices), 1)
            wrong = openai.OpenAI(
                base_url=self.server.url + prefix + "/v1", api_key="bad", max_retries=0
            )
            self.addCleanup(wrong.close)
            with self.assertRaises(openai.AuthenticationError):
                wrong.models.list()

    def test_max_logprobs_and_tokenizer_info(self) -> None:
        status, error = error_of(
            raw_post(
                self.server,
                CHAT,
                {"messages": USER, "logprobs": True, "top_logprobs": 6},
                {"Authorization": "Bearer k"},
            )
        )
        self.assertIn("greater than max allowed: 5", error["message"])
        status, _, data = raw_request(self.server, "GET", "/tokenizer_info")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(data)["tokenizer_class"], "MockTokenizer")

    def test_request_id_header_on_every_answer(self) -> None:
        for method, path in [("GET", "/health"), ("GET", "/nothing"), ("GET", "/v1/models")]:
            _, headers, _ = raw_request(self.server, method, path)
            self.assertRegex(headers["x-request-id"], r"^[0-9a-f]{32}$", path)
        _, headers, _ = raw_request(self.server, "GET", "/version", headers={"X-Request-Id": "abc"})
        self.assertEqual(headers["x-request-id"], "abc")

    def test_prompt_tokens_details_and_per_request_metrics_in_bodies(self) -> None:
        reply = json.loads(
            raw_post(
                self.server,
                CHAT,
                {"messages": USER, "max_tokens": 3},
                {"Authorization": "Bearer k"},
            )[2]
        )
        self.assertEqual(
            reply["usage"]["prompt_tokens_details"],
            {"cached_tokens": 0, "created_cache_tokens": 0, "multimodal_tokens": None},
        )
        metrics = reply["metrics"]
        self.assertEqual(
            set(metrics),
            {
                "time_to_first_token_ms",
                "generation_time_ms",
                "queue_time_ms",
                "mean_itl_ms",
                "tokens_per_second",
                "speculative_decoding",
            },
        )


class DefaultsTest(ServerTestCase):
    """Items 11 to 13 with the default settings."""

    def test_load_is_zero_without_load_tracking(self) -> None:
        # Even with a request in flight: vLLM counts only with --enable-server-load-tracking.
        self.server.clear()
        held = hold(self, self.server, {"prompt": "wait", "max_tokens": 1},
                    {"X-Mocksup-TTFT": "30"})  # fmt: skip
        until(lambda: running(self.server) == 1)
        _, _, data = raw_request(self.server, "GET", "/load")
        self.assertEqual(json.loads(data), {"server_load": 0})
        held.close()
        self.server.wait_for_requests(path="/v1/completions")

    def test_orca_load_report_on_request(self) -> None:
        for kind, prefix in (
            ("TEXT", "TEXT named_metrics.num_requests_waiting="),
            ("json", 'JSON {"named_metrics": {"num_requests_waiting": '),
        ):
            _, headers, _ = raw_post(
                self.server,
                CHAT,
                {"messages": USER, "max_tokens": 1},
                {"endpoint-load-metrics-format": kind},
            )
            self.assertTrue(headers["endpoint-load-metrics"].startswith(prefix), headers)
            self.assertIn("kv_cache_usage_perc", headers["endpoint-load-metrics"])
        _, headers, _ = raw_post(self.server, CHAT, {"messages": USER, "max_tokens": 1})
        self.assertNotIn("endpoint-load-metrics", headers)
        _, headers, _ = raw_post(
            self.server,
            CHAT,
            {"messages": USER, "max_tokens": 1, "stream": True},
            {"endpoint-load-metrics-format": "TEXT"},
        )
        self.assertNotIn("endpoint-load-metrics", headers)

    def test_bodies_carry_vllms_null_keys_and_short_ids(self) -> None:
        chat = json.loads(raw_post(self.server, CHAT, {"messages": USER, "max_tokens": 2})[2])
        self.assertEqual(
            list(chat),
            [
                "id",
                "object",
                "created",
                "model",
                "choices",
                "service_tier",
                "system_fingerprint",
                "usage",
                "prompt_logprobs",
                "prompt_token_ids",
                "prompt_text",
                "kv_transfer_params",
                "ec_transfer_params",
                "metrics",
            ],
        )
        self.assertEqual(
            list(chat["choices"][0]),
            [
                "index",
                "message",
                "logprobs",
                "finish_reason",
                "stop_reason",
                "token_ids",
                "routed_experts",
                "weight_versions",
            ],
        )
        self.assertEqual(
            list(chat["usage"]),
            [
                "prompt_tokens",
                "total_tokens",
                "completion_tokens",
                "prompt_tokens_details",
                "completion_tokens_details",
            ],
        )
        self.assertRegex(chat["id"], r"^chatcmpl-[0-9a-f]{16}$")
        self.assertRegex(chat["system_fingerprint"], r"^vllm-0\.33\.0-[0-9a-f]{8}$")
        completion = json.loads(raw_post(self.server, "/v1/completions", {"prompt": "x"})[2])
        self.assertRegex(completion["id"], r"^cmpl-[0-9a-f]{16}$")
        self.assertEqual(
            list(completion["choices"][0]),
            [
                "index",
                "text",
                "logprobs",
                "finish_reason",
                "stop_reason",
                "token_ids",
                "prompt_logprobs",
                "prompt_token_ids",
                "routed_experts",
                "weight_versions",
            ],
        )
        self.assertEqual(completion["metrics"], None)
        models = json.loads(raw_request(self.server, "GET", "/v1/models")[2])
        self.assertTrue(HEX16.match(models["data"][0]["permission"][0]["id"][len("modelperm-") :]))

    def test_version_is_the_imitated_release(self) -> None:
        _, _, data = raw_request(self.server, "GET", "/version")
        self.assertEqual(json.loads(data), {"version": "0.33.0"})


class StructuredAndTokenIdsTest(ServerTestCase):
    """Items 9 and 10: what vLLM's grammar backend refuses, and token-id features."""

    def test_schemas_and_grammars_vllm_cannot_compile_are_refused(self) -> None:
        bad_schema = {"type": "object", "properties": {"a": {"type": "string"}, "foo": "bar"}}
        good_schema = {
            "$defs": {"C": {"enum": ["x"], "type": "string"}},
            "properties": {"c": {"$ref": "#/$defs/C"}},
            "type": "object",
        }
        grammar = 'root ::= rule\nrule ::= "a" | "b"\n'
        cases = [
            ({"json": bad_schema}, 400, "Failed to transform json schema into a grammar"),
            ({"json": {"type": "text"}}, 400, "unknown type 'text'"),
            ({"json": {"$ref": "#/$defs/Missing"}}, 400, "cannot resolve $ref"),
            ({"json": "{not json"}, 400, "Invalid JSON grammar specification."),
            (
                {"grammar": grammar.replace("rule\n", "rulez\n", 1)},
                400,
                "Invalid grammar specification.",
            ),
            ({"regex": {"1": "Python"}}, 400, "body.structured_outputs.regex"),
            ({"json": good_schema}, 200, ""),
            ({"grammar": grammar}, 200, ""),
        ]
        for options, status, words in cases:
            body = {"messages": USER, "max_tokens": 1, "structured_outputs": options}
            got, _, data = raw_post(self.server, CHAT, body)
            self.assertEqual(got, status, options)
            if words:
                self.assertIn(words, json.dumps(json.loads(data)["error"]))
        body = {
            "messages": USER,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": bad_schema},
            },
        }
        self.assertEqual(raw_post(self.server, CHAT, body)[0], 400)

    def test_logprob_token_ids_and_allowed_token_ids(self) -> None:
        reply = self.client.completions.create(
            model="mock-model",
            prompt="Hello",
            max_tokens=2,
            logprobs=5,
            extra_body={
                "logprob_token_ids": [5000],
                "allowed_token_ids": [300],
                "return_tokens_as_token_ids": True,
            },
        )
        logprobs = reply.choices[0].logprobs
        assert logprobs is not None and logprobs.top_logprobs is not None
        self.assertEqual(logprobs.tokens, ["token_id:300", "token_id:300"])
        self.assertEqual(
            [set(t) for t in logprobs.top_logprobs], [{"token_id:300", "token_id:5000"}] * 2
        )
        chat = self.client.chat.completions.create(
            model="mock-model",
            messages=USER,
            max_tokens=1,
            logprobs=True,
            top_logprobs=5,
            extra_body={"logprob_token_ids": [100, 1000]},
        )
        content = chat.choices[0].logprobs
        assert content is not None and content.content is not None
        self.assertEqual(len(content.content[0].top_logprobs), 3)  # sampled + the two asked
        status, error = error_of(
            raw_post(self.server, CHAT, {"messages": USER, "logprob_token_ids": [1]})
        )
        self.assertEqual((status, error["param"]), (400, "logprob_token_ids"))
        status, error = error_of(
            raw_post(
                self.server,
                "/v1/completions",
                {"prompt": "x", "logprobs": 1, "logprob_token_ids": [10**7]},
            )
        )
        self.assertIn("out-of-vocab token ids. Vocabulary size: 151936", error["message"])
