"""The Responses API (``/v1/responses``) driven by the real ``openai`` client and raw HTTP:
bodies, the event stream, the store, background responses, tools, metrics and the span."""

from __future__ import annotations

import json
import re
import threading
import unittest
from typing import Any

import openai

from mocksup.otlp import MockOTLPCollector
from mocksup.vllm import MockVLLMServer, ScriptReply, ScriptRule, ToolCall
from mocksup.vllm._response_store import ResponseStore
from mocksup.vllm.tokenizer import TOKENIZER
from tests.vllm.support import ServerTestCase, raw_post, raw_request, scrape, until

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current temperature for a place.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
#: What opens an item and what closes it, in the stream.
PAIRS = {
    "response.completed": "response.created",
    "response.incomplete": "response.created",
    "response.output_item.done": "response.output_item.added",
    "response.content_part.done": "response.content_part.added",
    "response.output_text.done": "response.output_text.delta",
    "response.reasoning_text.done": "response.reasoning_text.delta",
    "response.function_call_arguments.done": "response.function_call_arguments.delta",
}


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event line type, data)`` of each event, checking the framing on the way."""
    text = raw.decode()
    assert text.endswith("\n\n"), "every event ends with a blank line"
    out = []
    for block in text[:-2].split("\n\n"):
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: "), block
        out.append((event[len("event: ") :], json.loads(data[len("data: ") :])))
    return out


def check_nesting(kinds: list[str]) -> None:
    """Every closing event closes the latest open one; nothing is left open."""
    opened: list[str] = []
    for kind in kinds:
        if kind in PAIRS:
            start = PAIRS[kind]
            if start.endswith(".delta") and (not opened or opened[-1] != start):
                continue  # an item may have no delta (a call without arguments)
            assert opened and opened[-1] == start, (kind, opened)
            opened.pop()
        elif kind in PAIRS.values() and not (opened and opened[-1] == kind == _delta(kind)):
            opened.append(kind)
    assert not opened, opened


def _delta(kind: str) -> str:
    return kind if kind.endswith(".delta") else ""


def prompt_tokens(server: MockVLLMServer, messages: list[dict[str, Any]]) -> int:
    """What ``/tokenize`` counts for these chat messages."""
    return int(json.loads(raw_post(server, "/tokenize", {"messages": messages})[2])["count"])


class ResponsesTest(ServerTestCase):
    collector: MockOTLPCollector

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        cls.collector = MockOTLPCollector(port=0, grpc_port=0)
        cls.addClassCleanup(cls.collector.stop)
        cls.collector.start()
        rules = [
            ScriptRule(
                contains="tool please",
                reply=ScriptReply(
                    tool_calls=[ToolCall(name="get_weather", arguments={"location": "Oslo"})]
                ),
            )
        ]
        return MockVLLMServer(
            port=0,
            reasoning_parser="qwen3",
            enable_auto_tool_choice=True,
            tool_call_parser="hermes",
            enable_responses_api_store=True,
            otlp_traces_endpoint=cls.collector.grpc_endpoint,
            scripts=rules,
        )

    def test_response_object_items_and_usage(self) -> None:
        response = self.client.responses.create(input="What is 13 * 24?")
        self.assertRegex(response.id, r"^resp_[0-9a-f]{16}$")
        self.assertEqual(
            (response.object, response.status, response.model),
            ("response", "completed", "mock-model"),
        )
        reasoning, message = response.output
        self.assertEqual((reasoning.type, message.type), ("reasoning", "message"))
        assert reasoning.content is not None and message.type == "message"
        thought = reasoning.content[0].text
        self.assertTrue(thought)
        self.assertEqual(message.content[0].text, response.output_text)
        usage = response.usage
        assert usage is not None and usage.output_tokens_details is not None
        self.assertEqual(
            usage.input_tokens,
            prompt_tokens(self.server, [{"role": "user", "content": "What is 13 * 24?"}]),
        )
        reasoning_tokens = len(TOKENIZER.encode(thought))
        self.assertEqual(usage.output_tokens_details.reasoning_tokens, reasoning_tokens)
        self.assertEqual(
            usage.output_tokens,
            reasoning_tokens + 2 + len(TOKENIZER.encode(response.output_text)),
        )
        self.assertEqual(usage.total_tokens, usage.input_tokens + usage.output_tokens)
        self.assertEqual(
            (response.temperature, response.top_p, response.tool_choice), (1.0, 1.0, "none")
        )

    def test_max_output_tokens_makes_it_incomplete(self) -> None:
        response = self.client.responses.create(input="Tell a story", max_output_tokens=30)
        self.assertEqual(response.status, "incomplete")
        assert response.incomplete_details is not None
        self.assertEqual(response.incomplete_details.reason, "max_output_tokens")
        self.assertEqual(response.max_output_tokens, 30)
        self.assertEqual(response.output[-1].status, "incomplete")

    def test_stream_event_sequence(self) -> None:
        stream = self.client.responses.create(
            input="Say hello", stream=True, extra_body={"seed": 5}
        )
        with stream:
            events = list(stream)
        kinds = [e.type for e in events]
        self.assertEqual(kinds[:2], ["response.created", "response.in_progress"])
        self.assertEqual(kinds[-1], "response.completed")
        self.assertEqual([e.sequence_number for e in events], list(range(len(events))))
        check_nesting(kinds)
        final = events[-1].response
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        self.assertEqual(text, final.output_text)
        thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
        self.assertEqual(thought, final.output[0].content[0].text)
        done = [e.item.id for e in events if e.type == "response.output_item.done"]
        self.assertEqual([item.id for item in final.output], done)
        for event in events:
            if event.type.startswith("response.output_text"):
                self.assertEqual((event.output_index, event.item_id), (1, done[1]))
        same = self.client.responses.create(input="Say hello", extra_body={"seed": 5})
        self.assertEqual(same.output_text, final.output_text)

    def test_raw_sse_framing(self) -> None:
        status, headers, raw = raw_post(
            self.server, "/v1/responses", {"input": "hi", "stream": True, "max_output_tokens": 9}
        )
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        events = sse(raw)
        for kind, data in events:
            self.assertEqual(kind, data["type"])
            self.assertEqual(
                list(data)[-1] if kind != "response.function_call_arguments.done" else "type",
                "type",
            )
        self.assertNotIn(b"[DONE]", raw)
        self.assertEqual(events[-1][0], "response.incomplete")
        created = events[0][1]["response"]
        self.assertEqual(
            (created["status"], created["output"], created["usage"]), ("in_progress", [], None)
        )

    def test_store_retrieve_and_previous_response_id(self) -> None:
        first = self.client.responses.create(
            instructions="Answer briefly.", input="My name is John."
        )
        self.assertEqual(self.client.responses.retrieve(first.id).model_dump(), first.model_dump())
        second = self.client.responses.create(
            input="What is my name?", previous_response_id=first.id
        )
        self.assertEqual(second.previous_response_id, first.id)
        # History: the first input and the first answer; its instructions do not carry over.
        history = [
            {"role": "user", "content": "My name is John."},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "What is my name?"},
        ]
        assert second.usage is not None
        self.assertEqual(second.usage.input_tokens, prompt_tokens(self.server, history))
        unstored = self.client.responses.create(input="Hello!", store=False)
        with self.assertRaisesRegex(openai.NotFoundError, "Response with id .* not found."):
            self.client.responses.retrieve(unstored.id)
        with self.assertRaises(openai.NotFoundError) as caught:
            self.client.responses.create(input="x", previous_response_id="resp_missing")
        error = caught.exception.body
        assert isinstance(error, dict)
        self.assertEqual((error["type"], error["param"]), ("invalid_request_error", "response_id"))

    def test_cancel_a_synchronous_response_is_refused(self) -> None:
        done = self.client.responses.create(input="Hello")
        with self.assertRaisesRegex(openai.BadRequestError, "Cannot cancel a synchronous"):
            self.client.responses.cancel(done.id)
        with self.assertRaises(openai.NotFoundError):
            self.client.responses.cancel("resp_unknown")

    def test_background_completes(self) -> None:
        queued = self.client.responses.create(input="Hello!", background=True)
        self.assertEqual((queued.status, queued.output), ("queued", []))
        until(lambda: self.client.responses.retrieve(queued.id).status == "completed")
        done = self.client.responses.retrieve(queued.id)
        self.assertTrue(done.output_text)
        self.assertTrue(done.background)

    def test_background_cancel_aborts_the_generation(self) -> None:
        aborts = ("vllm:request_success_total", (("finished_reason", "abort"),))
        before = scrape(self.server)[aborts]
        queued = self.client.responses.create(
            input="Write a long story.",
            background=True,
            max_output_tokens=400,
            extra_body={"ignore_eos": True},
            extra_headers={"X-Mocksup-ITL": "0.05"},
        )
        self.assertEqual(self.client.responses.retrieve(queued.id).status, "queued")
        cancelled = self.client.responses.cancel(queued.id)
        self.assertEqual(cancelled.status, "cancelled")
        # The generation is aborted at once (not after its 20 s), and stays cancelled.
        until(lambda: scrape(self.server)[aborts] == before + 1, timeout=5)
        self.assertEqual(self.client.responses.retrieve(queued.id).status, "cancelled")

    def test_background_stream_and_its_replay(self) -> None:
        stream = self.client.responses.create(input="Hi", background=True, stream=True)
        with stream:
            events = list(stream)
        self.assertEqual(events[-1].type, "response.completed")
        response_id = events[0].response.id
        status, _, raw = raw_request(
            self.server, "GET", f"/v1/responses/{response_id}?stream=true&starting_after=2"
        )
        self.assertEqual(status, 200)
        replayed = sse(raw)
        self.assertEqual([d["sequence_number"] for _, d in replayed], list(range(3, len(events))))
        self.assertEqual(self.client.responses.retrieve(response_id).status, "completed")
        status, _, raw = raw_request(self.server, "GET", f"/v1/responses/{response_id}?stream=x")
        self.assertEqual((status, json.loads(raw)["error"]["param"]), (400, "query.stream"))

    def test_forced_function_call_and_its_follow_up(self) -> None:
        response = self.client.responses.create(
            input="Weather in Paris?",
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
        )
        (call,) = [item for item in response.output if item.type == "function_call"]
        assert call.type == "function_call"
        self.assertEqual(call.name, "get_weather")
        self.assertIn("location", json.loads(call.arguments))
        self.assertTrue(call.call_id.startswith("chatcmpl-tool-"))
        turns: Any = [
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "20 C"},
        ]
        follow_up = self.client.responses.create(input=turns)
        self.assertEqual(follow_up.status, "completed")
        self.assertTrue(follow_up.output_text)

    def test_streamed_function_call(self) -> None:
        stream = self.client.responses.create(
            input="Call get_weather for Berlin.",
            tools=[WEATHER],
            tool_choice="required",
            stream=True,
        )
        with stream:
            events = list(stream)
        added = [
            e.item
            for e in events
            if e.type == "response.output_item.added" and e.item.type == "function_call"
        ]
        self.assertEqual(len(added), 1)
        arguments = "".join(
            e.delta for e in events if e.type == "response.function_call_arguments.delta"
        )
        (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
        self.assertEqual((done.arguments, arguments), (arguments, done.arguments))
        self.assertIn("location", json.loads(arguments))
        # A forced call leaks no JSON into the text.
        self.assertEqual(
            "".join(e.delta for e in events if e.type == "response.output_text.delta"), ""
        )
        check_nesting([e.type for e in events])

    def test_auto_tool_choice_follows_the_scripts(self) -> None:
        response = self.client.responses.create(input="tool please", tools=[WEATHER])
        self.assertEqual(response.output[-1].type, "function_call")
        plain = self.client.responses.create(input="no tools now", tools=[WEATHER])
        self.assertEqual(plain.output[-1].type, "message")

    def test_text_format_is_a_structured_output_constraint(self) -> None:
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        response = self.client.responses.create(
            input="a number",
            text={
                "format": {
                    "type": "json_schema",
                    "name": "number",
                    "schema": schema,
                    "strict": True,
                }
            },
        )
        assert response.text is not None and response.text.format is not None
        self.assertEqual(response.text.format.type, "json_schema")
        status, _, raw = raw_post(
            self.server,
            "/v1/responses",
            {
                "input": "x",
                "text": {
                    "format": {"type": "json_schema", "name": "bad", "schema": {"type": "nonsense"}}
                },
            },
        )
        self.assertEqual(status, 400, raw)
        status, _, raw = raw_post(
            self.server,
            "/v1/responses",
            {
                "input": "x",
                "text": {"format": {"type": "json_object"}},
                "structured_outputs": {"regex": "a+"},
            },
        )
        self.assertEqual(status, 400)
        self.assertIn(
            "Cannot specify both structured_outputs and text.format",
            json.loads(raw)["error"]["message"],
        )

    def test_logprobs(self) -> None:
        response = self.client.responses.create(
            input="Hi", include=["message.output_text.logprobs"], top_logprobs=5
        )
        part = response.output[-1].content[-1]
        assert part.type == "output_text" and part.logprobs
        self.assertEqual(len(part.logprobs), len(TOKENIZER.encode(part.text)))
        self.assertEqual(len(part.logprobs[0].top_logprobs), 5)
        self.assertEqual(response.top_logprobs, 5)

    def test_streamed_logprobs(self) -> None:
        stream = self.client.responses.create(
            input="Say hello.",
            stream=True,
            top_logprobs=3,
            include=["message.output_text.logprobs"],
        )
        with stream:
            deltas = [e for e in stream if e.type == "response.output_text.delta"]
        self.assertTrue(deltas)
        for delta in deltas:
            (entry,) = delta.logprobs
            self.assertLessEqual(entry.logprob, 0.0)
            assert entry.top_logprobs is not None
            self.assertEqual(len(entry.top_logprobs), 3)

    def test_input_items_and_thinking_switched_off(self) -> None:
        response = self.client.responses.create(
            input=[
                {"role": "system", "content": "Finish with QED."},
                {"role": "user", "content": [{"type": "input_text", "text": "5 * 3?"}]},
                {"role": "assistant", "content": "15. QED."},
                {"type": "message", "role": "user", "content": "Double it."},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "Doubling."}],
                },
            ],
        )
        self.assertEqual(response.status, "completed")
        self.assertEqual([i.type for i in response.output], ["reasoning", "message"])
        chat = [
            {"role": "system", "content": "Finish with QED."},
            {"role": "user", "content": "5 * 3?"},
            {"role": "assistant", "content": "15. QED."},
            {"role": "user", "content": "Double it."},
            {"role": "assistant", "content": ""},
        ]
        assert response.usage is not None
        self.assertEqual(response.usage.input_tokens, prompt_tokens(self.server, chat))
        for extra in ({"chat_template_kwargs": {"enable_thinking": False}}, {}):
            kwargs: Any = {"reasoning": {"effort": "none"}} if not extra else {}
            plain = self.client.responses.create(input="Hi", extra_body=extra, **kwargs)
            self.assertEqual([i.type for i in plain.output], ["message"])
            self.assertIsNone(plain.incomplete_details)
            assert plain.usage is not None
            self.assertEqual(plain.usage.output_tokens_details.reasoning_tokens, 0)

    def test_metrics_and_span_as_vllm_counts_them(self) -> None:
        before = scrape(self.server)
        # X-Request-Id names chat requests, never responses (nor their engine requests).
        response = self.client.responses.create(
            input="Count me", max_output_tokens=12, extra_headers={"X-Request-Id": "mine"}
        )
        self.assertRegex(response.id, r"^resp_[0-9a-f]{16}$")
        self.client.responses.retrieve(response.id)
        after = scrape(self.server)
        assert response.usage is not None

        def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
            return after[(name, labels)] - before.get((name, labels), 0.0)

        self.assertEqual(moved("vllm:generation_tokens_total"), response.usage.output_tokens)
        self.assertEqual(moved("vllm:prompt_tokens_total"), response.usage.input_tokens)
        self.assertEqual(moved("vllm:request_success_total", (("finished_reason", "length"),)), 1)
        for handler in ("/v1/responses", "/v1/responses/{response_id}"):
            labels = (
                ("handler", handler),
                ("method", "POST" if handler.endswith("s") else "GET"),
                ("status", "2xx"),
            )
            self.assertEqual(moved("http_requests_total", labels), 1, handler)
        (span,) = self.collector.wait_for_spans(
            "llm_request", attributes={"gen_ai.request.id": response.id + "_0"}
        )
        attributes = span.attributes
        self.assertEqual(attributes["gen_ai.usage.prompt_tokens"], response.usage.input_tokens)
        self.assertEqual(attributes["gen_ai.usage.completion_tokens"], response.usage.output_tokens)
        self.assertEqual(attributes["gen_ai.request.max_tokens"], 12)

    def test_errors(self) -> None:
        cases: list[tuple[dict[str, Any], int, str, str | None]] = [
            ({"input": "x", "model": "other"}, 404, "does not exist", "model"),
            (
                {"input": "x", "max_output_tokens": 10**6},
                400,
                "max_output_tokens=1000000 cannot be greater than max_model_len=4096",
                "max_output_tokens",
            ),
            (
                {"input": "x", "prompt": {"id": "p"}},
                400,
                "prompt template is not supported",
                "prompt",
            ),
            (
                {"input": "x", "tool_choice": "required"},
                400,
                "Tool choice 'required' must be specified with 'tools' parameter.",
                "tool_choice",
            ),
            (
                {"input": [{"type": "mystery"}]},
                400,
                "Unsupported input item type: mystery",
                "input",
            ),
            (
                {"input": "x", "background": True, "store": False},
                400,
                "background can only be used when `store` is true",
                "background",
            ),
        ]
        for body, status, message, param in cases:
            got, _, raw = raw_post(self.server, "/v1/responses", body)
            error = json.loads(raw)["error"]
            self.assertEqual((got, error["param"]), (status, param), body)
            self.assertIn(message, error["message"])
        self.assertEqual(raw_post(self.server, "/v1/responses", {"input": "still here"})[0], 200)


class ResponsesWithoutStoreTest(ServerTestCase):
    """vLLM's default: no store (``VLLM_ENABLE_RESPONSES_API_STORE`` unset), no parser."""

    def test_store_is_silently_off(self) -> None:
        response = self.client.responses.create(input="Hello!")
        self.assertEqual(response.status, "completed")
        with self.assertRaises(openai.NotFoundError):
            self.client.responses.retrieve(response.id)
        with self.assertRaisesRegex(openai.BadRequestError, "VLLM_ENABLE_RESPONSES_API_STORE=1"):
            self.client.responses.create(input="x", background=True)

    def test_one_message_without_a_parser(self) -> None:
        response = self.client.responses.create(
            input="Weather?", tools=[WEATHER], tool_choice="required"
        )
        (message,) = response.output
        self.assertEqual((message.type, message.status), ("message", "completed"))
        self.assertTrue(response.output_text)

    def test_request_id_names_the_response(self) -> None:
        response = self.client.responses.create(
            input="x",
            extra_body={"request_id": "resp_mine"},
            extra_headers={"X-Request-Id": "ignored"},
        )
        self.assertEqual(response.id, "resp_mine")

    def test_a_stream_broken_by_a_generation_error_ends_without_a_terminal_event(self) -> None:
        body = {"input": "x", "stream": True, "max_output_tokens": 20}
        with self.assertRaises(Exception):  # noqa: B017 - the connection ends mid-body
            raw_post(self.server, "/v1/responses", body, {"X-Mocksup-Fault": "stream_error"})
        self.assertEqual(raw_post(self.server, "/v1/responses", {"input": "x"})[0], 200)

    def test_concurrent_requests(self) -> None:
        results: list[str] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            response = self.client.responses.create(input=f"question {i}", extra_body={"seed": i})
            with lock:
                results.append(response.id)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        self.assertEqual(len(set(results)), 8)
        self.assertTrue(all(re.fullmatch(r"resp_[0-9a-f]{16}", r) for r in results))


class ResponseStoreTest(unittest.TestCase):
    """The store in-process: what a race between a cancel and the end of a generation, and
    the bounds, do."""

    def test_a_cancelled_response_stays_cancelled(self) -> None:
        store = ResponseStore()
        cancelled = threading.Event()
        store.queue("resp_a", {"id": "resp_a", "status": "queued"}, cancelled, None)
        self.assertEqual(store.cancel("resp_a"), {"id": "resp_a", "status": "cancelled"})
        self.assertTrue(cancelled.is_set())
        store.finish("resp_a", {"id": "resp_a", "status": "completed"})  # it ended meanwhile
        entry = store.get("resp_a")
        assert entry is not None and entry.body is not None
        self.assertEqual(entry.body["status"], "cancelled")
        self.assertEqual(store.cancel("resp_a"), "sync")
        self.assertIsNone(store.cancel("resp_b"))

    def test_the_oldest_are_forgotten_past_the_bounds(self) -> None:
        store = ResponseStore(limit=3, max_bytes=10**6)
        for i in range(5):
            store.keep_messages(f"r{i}", [{"role": "user", "content": "x"}])
            store.finish(f"r{i}", {"id": f"r{i}", "status": "completed"})
        self.assertEqual(len(store), 3)
        self.assertEqual(
            [store.get(f"r{i}") is None for i in range(5)], [True, True, False, False, False]
        )
        # Each body is about 80 bytes of JSON: two fit in 200.
        small = ResponseStore(limit=100, max_bytes=200)
        for i in range(5):
            small.finish(f"r{i}", {"id": f"r{i}", "text": "y" * 60})
        self.assertEqual(len(small), 2)
        self.assertEqual(
            [small.get(f"r{i}") is None for i in range(5)], [True, True, True, False, False]
        )
