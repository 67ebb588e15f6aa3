"""Tool calling as apps see it: the auto policy, arguments valid against the tool's schema,
vLLM's framing of streamed tool-call deltas, parallel calls and follow-up turns (issue 14,
item 4)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pydantic

from mocksup.vllm import MockVLLMServer, ScriptReply, ScriptRule, ToolCall
from tests.vllm.support import ServerTestCase, raw_post, sse_events

CHAT = "/v1/chat/completions"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "format": "uuid"}},
    "required": ["zone"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "current_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "current_time": TIME}


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def chunks_of(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(e) for e in sse_events(raw)[:-1]]


class AutoToolTest(ServerTestCase):
    """``tool_choice="auto"`` with the default policy (``mention``) and Hermes's framing."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, enable_auto_tool_choice=True, tool_call_parser="hermes")

    def test_the_openai_two_step_tool_loop(self) -> None:
        messages: list[Any] = ask("What is the weather in Paris? Use get_weather.")
        first = self.client.chat.completions.create(
            model="mock-model",
            messages=messages,
            tools=TOOLS,  # type: ignore[arg-type]
        )
        choice = first.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        self.assertIsNone(choice.message.content)
        (call,) = choice.message.tool_calls or []
        self.assertRegex(call.id, r"^chatcmpl-tool-[0-9a-f]{16}$")
        self.assertEqual(call.function.name, "get_weather")  # type: ignore[union-attr]
        arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
        jsonschema.validate(arguments, WEATHER)
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"})
        second = self.client.chat.completions.create(
            model="mock-model",
            messages=messages,
            tools=TOOLS,  # type: ignore[arg-type]
        )
        self.assertEqual(second.choices[0].finish_reason, "stop")
        self.assertIsNone(second.choices[0].message.tool_calls)
        self.assertTrue(second.choices[0].message.content)
        assert first.usage is not None and second.usage is not None
        # The second prompt holds the call as the model wrote it, and the tool's answer.
        self.assertGreater(
            second.usage.prompt_tokens, first.usage.prompt_tokens + first.usage.completion_tokens
        )

    def test_a_message_naming_no_tool_gets_text(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=ask("Tell me a joke"),
            tools=TOOLS,  # type: ignore[arg-type]
        )
        self.assertEqual(reply.choices[0].finish_reason, "stop")
        self.assertIsNone(reply.choices[0].message.tool_calls)

    def test_two_tools_named_make_parallel_calls_unless_disabled(self) -> None:
        text = "First current time, then get weather for Oslo"
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=ask(text),
            tools=TOOLS,  # type: ignore[arg-type]
        )
        calls = reply.choices[0].message.tool_calls or []
        self.assertEqual([c.function.name for c in calls], ["current_time", "get_weather"])  # type: ignore[union-attr]
        self.assertEqual(len({c.id for c in calls}), 2)
        for c in calls:
            jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])  # type: ignore[union-attr]
        single = self.client.chat.completions.create(
            model="mock-model",
            messages=ask(text),
            tools=TOOLS,  # type: ignore[arg-type]
            parallel_tool_calls=False,
        )
        self.assertEqual(len(single.choices[0].message.tool_calls or []), 1)
        assert reply.usage is not None and single.usage is not None
        self.assertLess(single.usage.completion_tokens, reply.usage.completion_tokens)

    def test_streamed_calls_are_framed_as_the_hermes_parser_frames_them(self) -> None:
        body = {"messages": ask("get_weather in Rome please"), "tools": TOOLS, "seed": 4}
        status, _, raw = raw_post(
            self.server, CHAT, {**body, "stream": True, "stream_options": {"include_usage": True}}
        )
        self.assertEqual(status, 200)
        chunks = chunks_of(raw)
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]][1:]
        calls = [d for d in deltas if "tool_calls" in d]
        # The name goes out alone, then the arguments as they grow; content stays null.
        self.assertEqual(calls[0]["tool_calls"][0]["function"], {"name": "get_weather"})
        self.assertEqual(set(calls[0]["tool_calls"][0]), {"id", "type", "index", "function"})
        self.assertTrue(all(d["content"] is None for d in calls))
        fragments = [d["tool_calls"][0] for d in calls[1:]]
        self.assertTrue(
            all(
                f == {"index": 0, "function": {"arguments": f["function"]["arguments"]}}
                for f in fragments
            )
        )
        whole = json.loads(raw_post(self.server, CHAT, body)[2])
        (call,) = whole["choices"][0]["message"]["tool_calls"]
        self.assertEqual(
            "".join(f["function"]["arguments"] for f in fragments), call["function"]["arguments"]
        )
        # Tokens of the markup before the name send no chunk: fewer chunks than tokens.
        usage = chunks[-1]["usage"]
        self.assertEqual(usage["completion_tokens"], whole["usage"]["completion_tokens"])
        self.assertLess(len(deltas), usage["completion_tokens"])
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "tool_calls")

    def test_max_tokens_cutting_a_call_leaves_its_text_as_content(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=ask("get_weather"),
            tools=TOOLS,  # type: ignore[arg-type]
            max_tokens=20,
        )
        choice = reply.choices[0]
        self.assertEqual(choice.finish_reason, "length")
        self.assertIsNone(choice.message.tool_calls)
        self.assertTrue((choice.message.content or "").startswith('<tool_call>\n{"name"'))

    def test_a_script_decides_over_the_policy(self) -> None:
        self.server.set_scripts(
            [
                ScriptRule(
                    contains="scripted",
                    reply=ScriptReply(
                        tool_calls=[ToolCall(name="current_time", arguments={"zone": "utc"})]
                    ),
                )
            ]
        )
        try:
            reply = self.client.chat.completions.create(
                model="mock-model",
                messages=ask("a scripted turn"),
                tools=TOOLS,  # type: ignore[arg-type]
            )
        finally:
            self.server.set_scripts([])
        (call,) = reply.choices[0].message.tool_calls or []
        self.assertEqual(json.loads(call.function.arguments), {"zone": "utc"})  # type: ignore[union-attr]


class ForcedToolTest(ServerTestCase):
    """Named and ``"required"`` tool choices, streamed as vLLM streams them."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, tool_call_parser="hermes")

    def test_a_named_tool_streams_one_chunk_per_token(self) -> None:
        named = {"type": "function", "function": {"name": "current_time"}}
        body = {
            "messages": ask("hello"),
            "tools": TOOLS,
            "tool_choice": named,
            "seed": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        chunks = chunks_of(raw_post(self.server, CHAT, body)[2])
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]][1:]
        self.assertEqual(len(deltas), chunks[-1]["usage"]["completion_tokens"])
        head = deltas[0]["tool_calls"][0]
        self.assertEqual(
            (head["type"], head["index"], head["function"]["name"]), ("function", 0, "current_time")
        )
        self.assertTrue(
            all(set(d["tool_calls"][0]["function"]) == {"arguments"} for d in deltas[1:])
        )
        arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas)
        jsonschema.validate(json.loads(arguments), TIME, format_checker=jsonschema.FormatChecker())
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "stop")
        whole = json.loads(
            raw_post(self.server, CHAT, {**body, "stream": False, "stream_options": None})[2]
        )
        self.assertEqual(whole["choices"][0]["message"]["content"], "")
        self.assertEqual(whole["choices"][0]["finish_reason"], "stop")

    def test_required_streams_the_array_calls_as_vllm_does(self) -> None:
        body = {
            "messages": ask("current_time and get_weather"),
            "tools": TOOLS,
            "tool_choice": "required",
            "stream": True,
        }
        chunks = chunks_of(raw_post(self.server, CHAT, body)[2])
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]][1:]
        self.assertEqual(deltas[-1], {})
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "tool_calls")
        heads = [tc for d in deltas for tc in d.get("tool_calls", []) if "id" in tc]
        self.assertEqual([h["function"]["name"] for h in heads], ["current_time", "get_weather"])
        tails = [tc for d in deltas for tc in d.get("tool_calls", []) if "id" not in tc]
        self.assertTrue(all(t["function"]["name"] is None for t in tails))
        for head in heads:
            text = head["function"]["arguments"] + "".join(
                t["function"]["arguments"] for t in tails if t["index"] == head["index"]
            )
            name = head["function"]["name"]
            jsonschema.validate(json.loads(text), SCHEMAS[name])

    def test_a_named_call_cut_by_max_tokens_keeps_its_partial_arguments(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=ask("hi"),
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=3,
        )
        choice = reply.choices[0]
        self.assertEqual(choice.finish_reason, "length")
        (call,) = choice.message.tool_calls or []
        self.assertTrue(call.function.arguments.startswith("{"))  # type: ignore[union-attr]


class PolicyTest(ServerTestCase):
    """``tool_call_policy="always"``: a call unless the last message is a tool's answer."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0, enable_auto_tool_choice=True, tool_call_parser="x", tool_call_policy="always"
        )

    def test_always_and_never(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=ask("anything"),
            tools=TOOLS,  # type: ignore[arg-type]
        )
        (call,) = reply.choices[0].message.tool_calls or []
        self.assertEqual(call.function.name, "get_weather")  # type: ignore[union-attr]
        after = [
            *ask("anything"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "done"},
        ]
        reply = self.client.chat.completions.create(
            model="mock-model",
            messages=after,
            tools=TOOLS,  # type: ignore[arg-type]
        )
        self.assertIsNone(reply.choices[0].message.tool_calls)
        with self.assertRaises(pydantic.ValidationError):
            MockVLLMServer(tool_call_policy="sometimes")  # type: ignore[arg-type]
        never = MockVLLMServer(
            port=0, enable_auto_tool_choice=True, tool_call_parser="x", tool_call_policy="never"
        )
        with never:
            status, _, data = raw_post(
                never, CHAT, {"messages": ask("get_weather"), "tools": TOOLS}
            )
        self.assertEqual(status, 200)
        self.assertNotIn("tool_calls", json.loads(data)["choices"][0]["message"])
