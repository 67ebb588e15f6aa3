"""Reasoning (``--reasoning-parser``) on chat: ``reasoning`` in replies and deltas, thinking
switched off per request or by default, and reasoning tokens in usage as vLLM counts them."""

from __future__ import annotations

import json
from typing import Any

import pydantic

from mocksup.vllm import MockVLLMServer, ScriptReply, ScriptRule
from mocksup.vllm.tokenizer import TOKENIZER
from tests.vllm.support import ServerTestCase, raw_post, scrape, sse_events

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def _tokens(text: str | None) -> int:
    return len(TOKENIZER.encode(text or ""))


class ReasoningChatTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        rules = [ScriptRule(contains="scripted", reply=ScriptReply(content="Fixed answer."))]
        return MockVLLMServer(port=0, reasoning_parser="qwen3", scripts=rules)

    def test_reply_carries_reasoning_counted_in_usage(self) -> None:
        reply = self.client.chat.completions.create(model="mock-model", messages=MESSAGES)
        message = reply.choices[0].message
        reasoning = message.model_extra["reasoning"]
        self.assertTrue(reasoning)
        self.assertTrue(message.content)
        assert reply.usage is not None and reply.usage.completion_tokens_details is not None
        thought = _tokens(reasoning)
        self.assertEqual(reply.usage.completion_tokens_details.reasoning_tokens, thought)
        # <think>, the reasoning, </think>, then the answer: every token is generated output.
        self.assertEqual(reply.usage.completion_tokens, thought + 2 + _tokens(message.content))
        self.assertEqual(reply.choices[0].finish_reason, "stop")

    def test_scripted_answer_follows_the_thinking(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "a scripted question"}]
        )
        self.assertEqual(reply.choices[0].message.content, "Fixed answer.")
        self.assertTrue(reply.choices[0].message.model_extra["reasoning"])

    def test_stream_sends_reasoning_deltas_then_content(self) -> None:
        full = self.client.chat.completions.create(model="mock-model", messages=MESSAGES, seed=3)
        body = {
            "model": "mock-model",
            "messages": MESSAGES,
            "seed": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        status, _, raw = raw_post(self.server, "/v1/chat/completions", body)
        self.assertEqual(status, 200)
        chunks = [json.loads(e) for e in sse_events(raw)[:-1]]
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        kinds = [next(iter(d), None) for d in deltas[1:]]
        # Reasoning first, then content, never mixed in one delta, markers never sent.
        first_content = kinds.index("content")
        self.assertEqual(set(kinds[:first_content]), {"reasoning"})
        self.assertEqual(set(kinds[first_content:]), {"content"})
        message = full.choices[0].message
        self.assertEqual(
            "".join(d.get("reasoning", "") for d in deltas), message.model_extra["reasoning"]
        )
        self.assertEqual("".join(d.get("content", "") for d in deltas), message.content)
        usage = chunks[-1]["usage"]
        assert full.usage is not None
        self.assertEqual(usage["completion_tokens"], full.usage.completion_tokens)
        self.assertEqual(
            usage["completion_tokens_details"],
            {"reasoning_tokens": _tokens(message.model_extra["reasoning"])},
        )

    def test_continuous_usage_counts_reasoning_so_far(self) -> None:
        body = {
            "model": "mock-model",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        chunks = [
            json.loads(e)
            for e in sse_events(raw_post(self.server, "/v1/chat/completions", body)[2])[:-1]
        ]
        counts = [c["usage"]["completion_tokens_details"]["reasoning_tokens"] for c in chunks]
        self.assertEqual(counts[0], 0)
        self.assertEqual(counts, sorted(counts))
        self.assertEqual(counts[-1], counts[-2])

    def test_enable_thinking_false_switches_it_off(self) -> None:
        for extra in (
            {"chat_template_kwargs": {"enable_thinking": False}},
            {"reasoning_effort": "none"},
        ):
            reply = self.client.chat.completions.create(
                model="mock-model", messages=MESSAGES, extra_body=extra
            )
            self.assertIsNone(reply.choices[0].message.model_extra["reasoning"], extra)
            assert reply.usage is not None and reply.usage.completion_tokens_details is not None
            self.assertEqual(reply.usage.completion_tokens_details.reasoning_tokens, 0)
            self.assertEqual(
                reply.usage.completion_tokens, _tokens(reply.choices[0].message.content)
            )

    def test_include_reasoning_false_hides_it_but_counts_it(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model", messages=MESSAGES, extra_body={"include_reasoning": False}
        )
        self.assertIsNone(reply.choices[0].message.model_extra["reasoning"])
        assert reply.usage is not None and reply.usage.completion_tokens_details is not None
        self.assertGreater(reply.usage.completion_tokens_details.reasoning_tokens, 0)
        body = {
            "model": "mock-model",
            "messages": MESSAGES,
            "stream": True,
            "include_reasoning": False,
        }
        raw = raw_post(self.server, "/v1/chat/completions", body)[2]
        self.assertNotIn(b'"reasoning"', raw)

    def test_max_tokens_inside_the_thinking(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model", messages=MESSAGES, max_tokens=4
        )
        choice = reply.choices[0]
        self.assertEqual(choice.finish_reason, "length")
        self.assertIsNone(choice.message.content)
        self.assertEqual(_tokens(choice.message.model_extra["reasoning"]), 3)
        assert reply.usage is not None and reply.usage.completion_tokens_details is not None
        self.assertEqual(reply.usage.completion_tokens_details.reasoning_tokens, 3)

    def test_thinking_token_budget(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model", messages=MESSAGES, extra_body={"thinking_token_budget": 2}
        )
        self.assertEqual(_tokens(reply.choices[0].message.model_extra["reasoning"]), 2)
        status, _, raw = raw_post(
            self.server,
            "/v1/chat/completions",
            {"model": "mock-model", "messages": MESSAGES, "thinking_token_budget": -5},
        )
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(raw)["error"]["param"], "thinking_token_budget")

    def test_reasoning_content_of_earlier_turns_is_accepted(self) -> None:
        history = [
            *MESSAGES,
            {"role": "assistant", "content": "Light.", "reasoning_content": "x"},
            {"role": "user", "content": "Why?"},
        ]
        reply = self.client.chat.completions.create(model="mock-model", messages=history)
        self.assertEqual(reply.choices[0].finish_reason, "stop")

    def test_generated_tokens_metric_counts_reasoning(self) -> None:
        before = scrape(self.server)[("vllm:generation_tokens_total", ())]
        reply = self.client.chat.completions.create(model="mock-model", messages=MESSAGES)
        after = scrape(self.server)[("vllm:generation_tokens_total", ())]
        assert reply.usage is not None
        self.assertEqual(after - before, reply.usage.completion_tokens)


class DefaultThinkingOffTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer.from_cli_args(
            [
                "--reasoning-parser",
                "deepseek_r1",
                "--default-chat-template-kwargs",
                '{"enable_thinking": false}',
            ],
            port=0,
        )

    def test_thinks_only_when_the_request_asks(self) -> None:
        off = self.client.chat.completions.create(model="mock-model", messages=MESSAGES)
        self.assertIsNone(off.choices[0].message.model_extra["reasoning"])
        on = self.client.chat.completions.create(
            model="mock-model",
            messages=MESSAGES,
            extra_body={"chat_template_kwargs": {"enable_thinking": True}},
        )
        self.assertTrue(on.choices[0].message.model_extra["reasoning"])


class NoReasoningParserTest(ServerTestCase):
    def test_no_reasoning_and_no_details(self) -> None:
        reply = self.client.chat.completions.create(model="mock-model", messages=MESSAGES)
        self.assertIsNone(reply.choices[0].message.model_extra["reasoning"])
        assert reply.usage is not None
        self.assertIsNone(reply.usage.completion_tokens_details)


class ReasoningSettingTest(ServerTestCase):
    @classmethod
    def setUpClass(cls) -> None:  # no server: settings only
        pass

    def test_parser_names_as_vllm_registers_them(self) -> None:
        self.assertEqual(MockVLLMServer(reasoning_parser="qwen3").reasoning_parser, "qwen3")
        self.assertIsNone(MockVLLMServer(reasoning_parser="None").reasoning_parser)
        with self.assertRaisesRegex(pydantic.ValidationError, "has not been registered"):
            MockVLLMServer(reasoning_parser="qwen-3")
        parsed: Any = MockVLLMServer.from_cli_args(["m", "--reasoning-parser", "glm45"])
        self.assertEqual(parsed.reasoning_parser, "glm45")
