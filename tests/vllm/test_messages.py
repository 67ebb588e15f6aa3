"""The Anthropic Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) driven by the
real ``anthropic`` SDK and raw HTTP: messages, events, tools, thinking, usage and errors."""

from __future__ import annotations

import json
import unittest
from typing import Any

import anthropic

from mocksup.vllm import MockVLLMServer, ScriptReply, ScriptRule
from mocksup.vllm._messages import error_type
from mocksup.vllm.tokenizer import TOKENIZER
from tests.vllm.support import ServerTestCase, raw_post, scrape

USER = [{"role": "user", "content": "how are you!"}]
WEATHER: Any = {
    "name": "get_current_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["location"],
    },
}


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event line type, data)`` of each event, checking the framing on the way."""
    text = raw.decode()
    assert text.endswith("\n\n")
    out = []
    for block in text[:-2].split("\n\n"):
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: "), block
        out.append((event[len("event: ") :], json.loads(data[len("data: ") :])))
    return out


class MessagesServerTest(ServerTestCase):
    anthropic: anthropic.Anthropic

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        rules = [
            ScriptRule(contains="stop test", reply=ScriptReply(content="One two. END three.")),
            ScriptRule(contains="say nothing", reply=ScriptReply(content="")),
        ]
        return MockVLLMServer(
            port=0,
            served_model_name="claude-3-7-sonnet-latest",
            enable_auto_tool_choice=True,
            tool_call_parser="hermes",
            enable_prompt_tokens_details=True,
            scripts=rules,
        )

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.anthropic = anthropic.Anthropic(base_url=cls.server.url, api_key="x", max_retries=0)
        cls.addClassCleanup(cls.anthropic.close)

    def create(self, **kwargs: Any) -> Any:
        kwargs.setdefault("model", "claude-3-7-sonnet-latest")
        kwargs.setdefault("max_tokens", 1024)
        kwargs.setdefault("messages", USER)
        return self.anthropic.messages.create(**kwargs)


class MessagesTest(MessagesServerTest):
    def test_message_and_usage(self) -> None:
        message = self.create(system="you are a helpful assistant")
        self.assertEqual(
            (message.type, message.role, message.stop_reason), ("message", "assistant", "end_turn")
        )
        self.assertRegex(message.id, r"^chatcmpl-[0-9a-f]{16}$")
        (block,) = message.content
        self.assertEqual(block.type, "text")
        prompt = [{"role": "system", "content": "you are a helpful assistant"}, *USER]
        count = json.loads(raw_post(self.server, "/tokenize", {"messages": prompt})[2])["count"]
        usage = message.usage
        cached, created = usage.cache_read_input_tokens, usage.cache_creation_input_tokens
        self.assertEqual(usage.input_tokens + cached + created, count)
        self.assertEqual(usage.output_tokens, len(TOKENIZER.encode(block.text)))
        counted = self.anthropic.messages.count_tokens(
            model="claude-3-7-sonnet-latest", system="you are a helpful assistant", messages=USER
        )
        self.assertEqual(counted.input_tokens, count)

    def test_stream_events_as_vllm_converts_them(self) -> None:
        whole = self.create()
        with self.create(stream=True) as stream:
            seen = list(stream)
        kinds = [e.type for e in seen]
        self.assertEqual(kinds[0], "message_start")
        self.assertEqual(kinds[-3:], ["content_block_stop", "message_delta", "message_stop"])
        self.assertEqual(kinds[1], "content_block_start")
        self.assertEqual(set(kinds[2:-3]), {"content_block_delta"})
        start = seen[0].message
        self.assertEqual((start.usage.output_tokens, start.id), (0, seen[0].message.id))
        self.assertGreater(start.usage.input_tokens, 5)
        text = "".join(e.delta.text for e in seen if e.type == "content_block_delta")
        self.assertEqual(text, whole.content[0].text)
        final = seen[-2]
        self.assertEqual(final.delta.stop_reason, "end_turn")
        self.assertEqual(final.usage.output_tokens, whole.usage.output_tokens)

    def test_raw_event_framing(self) -> None:
        body = {
            "model": "claude-3-7-sonnet-latest",
            "max_tokens": 5,
            "messages": USER,
            "stream": True,
        }
        status, headers, raw = raw_post(self.server, "/v1/messages", body)
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        got = events(raw)
        for kind, data in got:
            self.assertEqual(kind, data["type"])
        self.assertNotIn(b"[DONE]", raw)
        self.assertEqual(
            got[1][1],
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        self.assertEqual(got[-2][1]["delta"], {"stop_reason": "max_tokens", "stop_sequence": None})
        self.assertEqual(got[-1][1], {"type": "message_stop"})

    def test_prompt_cache_usage(self) -> None:
        # vLLM's own check: the start's input equals the final input plus the cache's share.
        def usage(**kwargs: Any) -> tuple[int, Any]:
            with self.create(stream=True, max_tokens=1, **kwargs) as stream:
                seen = list(stream)
            return seen[0].message.usage.input_tokens, seen[-2].usage

        content = "Cache coverage sentinel. " * 64 + "Answer with one word."
        prompt, cold = usage(messages=[{"role": "user", "content": content}])
        self.assertEqual(cold.cache_read_input_tokens, 0)
        self.assertGreater(cold.cache_creation_input_tokens, 0)
        self.assertEqual(
            prompt,
            cold.input_tokens + cold.cache_read_input_tokens + cold.cache_creation_input_tokens,
        )
        _, warm = usage(messages=[{"role": "user", "content": content}])
        self.assertGreater(warm.cache_read_input_tokens, 0)

    def test_stop_sequence(self) -> None:
        message = self.create(
            messages=[{"role": "user", "content": "stop test"}], stop_sequences=["END"]
        )
        self.assertEqual((message.stop_reason, message.stop_sequence), ("stop_sequence", "END"))
        self.assertEqual(message.content[0].text, "One two. ")

    def test_an_empty_answer_is_one_empty_text_block(self) -> None:
        message = self.create(messages=[{"role": "user", "content": "say nothing"}])
        self.assertEqual(
            [b.model_dump() for b in message.content],
            [{"type": "text", "text": "", "citations": None}],
        )
        self.assertEqual(message.usage.output_tokens, 0)

    def test_tool_use_and_its_result(self) -> None:
        message = self.create(
            messages=[{"role": "user", "content": "What's the weather in New York?"}],
            tools=[WEATHER],
            tool_choice={"type": "any"},
        )
        self.assertEqual(message.stop_reason, "tool_use")
        (call,) = message.content
        self.assertEqual((call.type, call.name), ("tool_use", "get_current_weather"))
        self.assertIsInstance(call.input, dict)
        self.assertIn("location", call.input)
        follow_up = self.create(
            messages=[
                {"role": "user", "content": "What's the weather in New York?"},
                {"role": "assistant", "content": [call.model_dump()]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": "15 degrees"}
                    ],
                },
            ],
            tools=[WEATHER],
        )
        self.assertEqual(follow_up.content[0].type, "text")

    def test_streamed_tool_use(self) -> None:
        with self.anthropic.messages.stream(
            model="claude-3-7-sonnet-latest",
            max_tokens=256,
            messages=USER,
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_current_weather"},
        ) as stream:
            final = stream.get_final_message()
        self.assertEqual(final.stop_reason, "tool_use")
        (call,) = final.content
        self.assertEqual(call.type, "tool_use")
        self.assertIn("location", call.input)

    def test_metrics_count_the_messages(self) -> None:
        key = ("vllm:request_success_total", (("finished_reason", "length"),))
        before = scrape(self.server)[key]
        self.create(max_tokens=3)
        self.assertEqual(scrape(self.server)[key], before + 1)

    def test_errors_are_anthropic_shaped_after_the_schema(self) -> None:
        with self.assertRaises(anthropic.NotFoundError) as caught:
            self.create(model="other")
        body = caught.exception.body
        assert isinstance(body, dict)
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], "not_found_error")
        self.assertIn("The model `other` does not exist", body["error"]["message"])
        # The schema refuses a body before vLLM's Anthropic handler: vLLM's own 400.
        status, _, raw = raw_post(
            self.server, "/v1/messages", {"model": "claude-3-7-sonnet-latest", "messages": USER}
        )
        error = json.loads(raw)["error"]
        self.assertEqual(
            (status, error["type"], error["param"]), (400, "Bad Request", "body.max_tokens")
        )
        with self.assertRaises(anthropic.RateLimitError) as limited:
            self.create(extra_headers={"X-Mocksup-Fault": "rate_limit"})
        self.assertEqual(limited.exception.response.headers["retry-after"], "1")
        self.assertEqual(limited.exception.body["error"]["type"], "rate_limit_error")
        self.assertEqual(self.create(max_tokens=2).stop_reason, "max_tokens")

    def test_error_mid_stream(self) -> None:
        body = {
            "model": "claude-3-7-sonnet-latest",
            "max_tokens": 20,
            "messages": USER,
            "stream": True,
        }
        status, _, raw = raw_post(
            self.server, "/v1/messages", body, {"X-Mocksup-Fault": "stream_error"}
        )
        got = events(raw)
        self.assertEqual(status, 200)
        self.assertEqual([k for k, _ in got[-2:]], ["content_block_stop", "error"])
        self.assertEqual(got[-1][1]["error"]["type"], "api_error")


class ErrorTypeTest(unittest.TestCase):
    def test_anthropic_error_types_by_status(self) -> None:
        expected = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            418: "invalid_request_error",
            422: "invalid_request_error",
            429: "rate_limit_error",
            500: "api_error",
            501: "api_error",
            503: "overloaded_error",
        }
        self.assertEqual({status: error_type(status) for status in expected}, expected)


class ThinkingTest(MessagesServerTest):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0, served_model_name="claude-3-7-sonnet-latest", reasoning_parser="qwen3"
        )

    def test_thinking_block_then_text(self) -> None:
        message = self.create()
        thinking, text = message.content
        self.assertEqual((thinking.type, text.type), ("thinking", "text"))
        self.assertRegex(thinking.signature, r"^[0-9a-f]{32}$")
        self.assertTrue(thinking.thinking)
        self.assertEqual(
            message.usage.output_tokens,
            len(TOKENIZER.encode(thinking.thinking)) + 2 + len(TOKENIZER.encode(text.text)),
        )
        off = self.create(thinking={"type": "disabled"})
        self.assertEqual([b.type for b in off.content], ["text"])
        budget = self.create(thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048)
        self.assertEqual(budget.content[0].type, "thinking")

    def test_streamed_thinking_is_signed(self) -> None:
        with self.create(stream=True) as stream:
            seen = list(stream)
        deltas = [e.delta for e in seen if e.type == "content_block_delta"]
        kinds = [d.type for d in deltas]
        first_text = kinds.index("text_delta")
        self.assertEqual(kinds[first_text - 1], "signature_delta")
        self.assertEqual(set(kinds[: first_text - 1]), {"thinking_delta"})
        starts = [e.content_block.type for e in seen if e.type == "content_block_start"]
        self.assertEqual(starts, ["thinking", "text"])

    def test_budget_must_stay_below_max_tokens(self) -> None:
        with self.assertRaises(anthropic.BadRequestError) as caught:
            self.create(thinking={"type": "enabled", "budget_tokens": 2048}, max_tokens=1024)
        self.assertIn("budget_tokens must be less than max_tokens", str(caught.exception))


class NoToolParserTest(MessagesServerTest):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, served_model_name="claude-3-7-sonnet-latest")

    def test_tools_need_auto_tool_choice(self) -> None:
        with self.assertRaises(anthropic.BadRequestError) as caught:
            self.create(tools=[WEATHER])
        body = caught.exception.body
        assert isinstance(body, dict)
        self.assertEqual(body["error"]["type"], "invalid_request_error")
        self.assertIn("--enable-auto-tool-choice", body["error"]["message"])
