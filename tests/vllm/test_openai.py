"""The mock in its child process, driven by the official ``openai`` client and raw HTTP."""

from __future__ import annotations

import json
import socket

import openai

from mocksup.vllm import MockVLLMServer, ScriptReply, ScriptRule, ToolCall
from tests.vllm.support import ServerTestCase, raw_post, sse_events, transport_errors

MESSAGES = [{"role": "user", "content": "Tell me about the world"}]


class ChatTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        rules = [
            ScriptRule(contains="weather", reply=ScriptReply(content="It is sunny today.")),
            ScriptRule(
                header="x-scenario: tools",
                reply=ScriptReply(tool_calls=[ToolCall(name="lookup", arguments={"q": "x"})]),
            ),
        ]
        return MockVLLMServer(
            port=0,
            served_model_name=["base", "alias"],
            scripts=rules,
            enable_auto_tool_choice=True,
            tool_call_parser="hermes",
        )

    def test_chat_completion_shape_and_usage(self) -> None:
        response = self.client.chat.completions.create(
            model="alias", messages=MESSAGES, max_tokens=5
        )
        self.assertTrue(response.id.startswith("chatcmpl-"))
        self.assertEqual((response.object, response.model), ("chat.completion", "alias"))
        choice = response.choices[0]
        self.assertEqual((choice.finish_reason, choice.message.role), ("length", "assistant"))
        assert response.usage is not None
        self.assertEqual(response.usage.completion_tokens, 5)
        tokenized = raw_post(self.server, "/tokenize", {"messages": MESSAGES})[2]
        self.assertEqual(response.usage.prompt_tokens, json.loads(tokenized)["count"])
        self.assertEqual(
            response.usage.total_tokens,
            response.usage.prompt_tokens + response.usage.completion_tokens,
        )

    def test_request_id_header_becomes_the_id(self) -> None:
        response = self.client.chat.completions.create(
            messages=MESSAGES, model="base", extra_headers={"X-Request-Id": "abc123"}
        )
        self.assertEqual(response.id, "chatcmpl-abc123")

    def test_stream_matches_the_non_streamed_text(self) -> None:
        full = self.client.chat.completions.create(model="base", messages=MESSAGES, seed=11)
        stream = self.client.chat.completions.create(
            model="base", messages=MESSAGES, seed=11, stream=True
        )
        with stream:
            chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, full.choices[0].message.content)
        self.assertEqual(chunks[-1].choices[0].finish_reason, full.choices[0].finish_reason)
        self.assertTrue(all(c.usage is None for c in chunks))

    def test_sse_framing_is_vllms(self) -> None:
        body = {"model": "base", "messages": MESSAGES, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        status, headers, raw = raw_post(self.server, "/v1/chat/completions", body)
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        events = sse_events(raw)
        self.assertEqual(events[-1], "[DONE]")
        first, *middle, last, usage = (json.loads(e) for e in events[:-1])
        self.assertEqual(
            first["choices"],
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
              "finish_reason": None}],
        )  # fmt: skip
        # vLLM 0.33 sends the keys it sets explicitly, even as null.
        self.assertEqual((first["prompt_token_ids"], first["prompt_text"]), (None, None))
        for chunk in middle:
            self.assertNotIn("usage", chunk)
            self.assertEqual(chunk["object"], "chat.completion.chunk")
            self.assertEqual(
                set(chunk["choices"][0]),
                {"index", "delta", "logprobs", "finish_reason", "token_ids"},
            )
            self.assertEqual(list(chunk)[-1], "kv_transfer_params")  # fmt: skip
        self.assertEqual(last["choices"][0]["stop_reason"], None)
        self.assertEqual(last["choices"][0]["weight_versions"], None)
        self.assertNotIn("system_fingerprint", last)  # the usage chunk carries it
        self.assertEqual(usage["choices"], [])
        self.assertEqual(usage["usage"]["completion_tokens"], len(middle) + 1)
        self.assertNotIn("prompt_tokens_details", usage["usage"])
        self.assertTrue(usage["system_fingerprint"].startswith("vllm-0.33.0-"))

    def test_stream_options_without_include_usage_sends_no_usage(self) -> None:
        # vLLM 0.33: include_usage defaults to false even when stream_options is given.
        body = {"model": "base", "messages": MESSAGES, "stream": True, "stream_options": {}}
        events = [json.loads(e) for e in sse_events(raw_post(
            self.server, "/v1/chat/completions", body)[2])[:-1]]  # fmt: skip
        self.assertTrue(all(e["choices"] for e in events))
        self.assertTrue(all("usage" not in e for e in events))

    def test_n_choices_and_seed_determinism(self) -> None:
        def ask(seed: int) -> list[str]:
            response = self.client.chat.completions.create(
                model="base", messages=MESSAGES, n=3, seed=seed
            )
            self.assertEqual([c.index for c in response.choices], [0, 1, 2])
            return [c.message.content or "" for c in response.choices]

        first = ask(5)
        self.assertEqual(first, ask(5))
        self.assertNotEqual(first, ask(6))
        self.assertEqual(len(set(first)), 3)

    def test_stop_sequence(self) -> None:
        response = self.client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "weather?"}], stop=["sunny"]
        )
        self.assertEqual(response.choices[0].message.content, "It is ")
        self.assertEqual(response.choices[0].finish_reason, "stop")
        self.assertEqual(
            response.choices[0].model_extra,
            {"stop_reason": "sunny", "token_ids": None, "routed_experts": None,
             "weight_versions": None},
        )  # fmt: skip

    def test_scripted_tool_call(self) -> None:
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
        response = self.client.chat.completions.create(
            model="base",
            messages=MESSAGES,
            tools=tools,  # type: ignore[arg-type]
            extra_headers={"X-Scenario": "tools"},
        )
        choice = response.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        assert choice.message.tool_calls
        call = choice.message.tool_calls[0]
        self.assertEqual(
            (call.function.name, json.loads(call.function.arguments)), ("lookup", {"q": "x"})
        )

    def test_required_tool_choice_synthesizes_arguments(self) -> None:
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        }
        tools = [{"type": "function", "function": {"name": "forecast", "parameters": schema}}]
        stream = self.client.chat.completions.create(
            model="base",
            messages=MESSAGES,
            tools=tools,
            tool_choice="required",
            stream=True,  # type: ignore[arg-type]
        )
        with stream:
            chunks = list(stream)
        deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
        self.assertEqual({d.index for d in deltas}, {0})
        assert deltas[0].function is not None
        self.assertEqual(deltas[0].function.name, "forecast")
        arguments = json.loads("".join((d.function.arguments or "") for d in deltas if d.function))
        self.assertIsInstance(arguments, dict)
        self.assertLessEqual(set(arguments), {"city", "days"})
        self.assertTrue(all(type(arguments[k]) is t for k, t in (("city", str), ("days", int))
                            if k in arguments))  # fmt: skip
        self.assertEqual(chunks[-1].choices[0].finish_reason, "tool_calls")

    def test_logprobs(self) -> None:
        response = self.client.chat.completions.create(
            model="base", messages=MESSAGES, logprobs=True, top_logprobs=2, max_tokens=4
        )
        logprobs = response.choices[0].logprobs
        assert logprobs is not None and logprobs.content is not None
        self.assertEqual(len(logprobs.content), 4)
        self.assertTrue(all(len(t.top_logprobs) == 2 for t in logprobs.content))
        self.assertEqual(
            "".join(t.token for t in logprobs.content), response.choices[0].message.content
        )

    def test_models(self) -> None:
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], ["base", "alias"])
        self.assertEqual(models.data[0].owned_by, "vllm")
        self.assertEqual(
            models.data[0].model_extra and models.data[0].model_extra["max_model_len"], 4096
        )

    def test_completions_stream_and_echo(self) -> None:
        full = self.client.completions.create(model="base", prompt="Once upon", seed=2, echo=True)
        self.assertTrue(full.choices[0].text.startswith("Once upon"))
        self.assertTrue(full.id.startswith("cmpl-"))
        stream = self.client.completions.create(
            model="base", prompt="Once upon", seed=2, echo=True, stream=True
        )
        with stream:
            text = "".join(c.choices[0].text for c in stream)
        self.assertEqual(text, full.choices[0].text)

    def test_errors_map_to_openai_exceptions(self) -> None:
        with self.assertRaises(openai.NotFoundError) as caught:
            self.client.chat.completions.create(model="gpt-9", messages=MESSAGES)
        self.assertEqual(
            caught.exception.body,
            {"message": "The model `gpt-9` does not exist. Valid aliases: base, alias.",
             "type": "NotFoundError", "param": "model", "code": 404},
        )  # fmt: skip
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model="base", messages=MESSAGES, max_tokens=10**6)
        # and the server still serves
        self.client.chat.completions.create(model="base", messages=MESSAGES, max_tokens=1)

    def test_embeddings(self) -> None:
        response = self.client.embeddings.create(model="base", input=["a", "b"])
        self.assertEqual(len(response.data), 2)
        self.assertEqual(len(response.data[0].embedding), 384)
        again = self.client.embeddings.create(model="base", input="a")
        self.assertEqual(again.data[0].embedding, response.data[0].embedding)

    def test_journal(self) -> None:
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        self.client.completions.create(
            model="base",
            prompt="journal me",
            max_tokens=2,
            extra_headers={"traceparent": traceparent},
        )
        entries = [
            e
            for e in self.server.requests(path="/v1/completions")
            if e.body["prompt"] == "journal me"
        ]
        self.assertEqual(len(entries), 1)
        entry = entries[0]
        self.assertEqual((entry.method, entry.status), ("POST", 200))
        self.assertEqual(entry.headers["traceparent"], traceparent)
        self.assertGreaterEqual(entry.duration, entry.first_byte - 1e-9)


class ControlTest(ServerTestCase):
    def test_clear_empties_the_journal(self) -> None:
        # The class's server is shared: start from an empty journal, so counts are exact.
        self.server.clear()
        for round_ in range(2):  # the journal keeps recording after a clear
            self.client.models.list()
            (entry,) = self.server.wait_for_requests(path="/v1/models")
            self.assertEqual((entry.method, entry.path, entry.status), ("GET", "/v1/models", 200))
            self.assertEqual(self.server.requests(), [entry], round_)
            self.server.clear()
            self.assertEqual(self.server.requests(), [])

    def test_runtime_changes(self) -> None:
        latency = self.server.set_latency(ttft=0.0, itl=0.0, max_num_seqs=4)
        self.assertEqual(latency.max_num_seqs, 4)
        self.server.add_script(
            ScriptRule(call=None, contains="ping", reply=ScriptReply(content="pong"))
        )
        response = self.client.completions.create(model="mock-model", prompt="ping")
        self.assertEqual(response.choices[0].text, "pong")
        self.server.set_scripts([])
        config = self.server.runtime_config()
        self.assertEqual(config["rules"], [])
        self.assertEqual(config["latency"]["max_num_seqs"], 4)
        stats = self.server.stats()
        self.assertGreaterEqual(stats["generation_calls"], 1)
        self.assertEqual((stats["running"], stats["waiting"]), (0, 0))
        self.assertIn("generations", self.server.summary())


class AuthTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, api_key="sekret")

    def test_key_required(self) -> None:
        self.assertEqual(self.server.openai_env()["OPENAI_API_KEY"], "sekret")
        self.client.models.list()
        bad = openai.OpenAI(base_url=self.server.base_url, api_key="wrong", max_retries=0)
        with bad, self.assertRaises(openai.AuthenticationError) as caught:
            bad.models.list()
        self.assertEqual(caught.exception.response.json(), {"error": "Unauthorized"})


class FaultTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, seed=3)

    def ask(self, **headers: str) -> str:
        self.client.completions.create(
            model="mock-model", prompt="x", max_tokens=3, extra_headers=headers
        )
        return "ok"

    def test_first_n_then_success_with_retry_after(self) -> None:
        self.server.set_faults(kind="rate_limit", first=2, retry_after=7)
        for _ in range(2):
            with self.assertRaises(openai.RateLimitError) as caught:
                self.ask()
            self.assertEqual(caught.exception.response.headers["retry-after"], "7")
        self.assertEqual(self.ask(), "ok")

    def test_unavailable_and_server_error(self) -> None:
        with self.assertRaises(openai.InternalServerError) as caught:
            self.ask(**{"X-Mocksup-Fault": "unavailable"})
        self.assertEqual(caught.exception.status_code, 503)
        self.assertEqual(caught.exception.body["type"], "ServiceUnavailableError")  # type: ignore[index]
        with self.assertRaises(openai.InternalServerError):
            self.ask(**{"X-Mocksup-Fault": "server_error"})
        self.assertEqual(self.ask(), "ok")

    def test_probabilistic_faults_repeat_after_clear(self) -> None:
        self.server.set_faults(kind="unavailable", rate=0.5, first=0)
        self.addCleanup(self.server.set_faults, rate=0.0)

        def run() -> list[bool]:
            outcome = []
            for _ in range(12):
                try:
                    self.ask()
                    outcome.append(True)
                except openai.InternalServerError:
                    outcome.append(False)
            return outcome

        self.server.clear()
        first = run()
        self.server.clear()
        self.assertEqual(first, run())
        self.assertIn(True, first)
        self.assertIn(False, first)

    def test_error_frame_mid_stream_then_done(self) -> None:
        body = {"model": "mock-model", "prompt": "x", "max_tokens": 5, "stream": True}
        status, _, raw = raw_post(
            self.server, "/v1/completions", body, {"X-Mocksup-Fault": "stream_error"}
        )
        self.assertEqual(status, 200)
        events = sse_events(raw)
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(json.loads(events[-2])["error"]["code"], 500)
        self.assertEqual(len(events), 3)  # after_tokens=1: one token, the error, [DONE]
        stream = self.client.completions.create(
            model="mock-model",
            prompt="x",
            stream=True,
            extra_headers={"X-Mocksup-Fault": "stream_error"},
        )
        with stream, self.assertRaises(openai.APIError):
            list(stream)

    def test_cut_and_reset(self) -> None:
        stream = self.client.completions.create(
            model="mock-model",
            prompt="x",
            stream=True,
            extra_headers={"X-Mocksup-Fault": "stream_cut"},
        )
        with stream, self.assertRaises(transport_errors()):
            list(stream)
        with self.assertRaises(transport_errors()):
            self.ask(**{"X-Mocksup-Fault": "stream_cut"})
        with self.assertRaises(openai.APIConnectionError):
            self.ask(**{"X-Mocksup-Fault": "reset"})
        self.assertEqual(self.ask(), "ok")


class StreamVariantsTest(ServerTestCase):
    def test_n_choices_stream_in_step(self) -> None:
        body = {"messages": MESSAGES, "n": 2, "stream": True, "max_tokens": 3, "seed": 1}
        events = sse_events(raw_post(self.server, "/v1/chat/completions", body)[2])
        chunks = [json.loads(e) for e in events[:-1]]
        self.assertEqual(
            [c["choices"][0]["delta"].get("role") for c in chunks[:2]], ["assistant"] * 2
        )
        self.assertEqual([c["choices"][0]["index"] for c in chunks[:2]], [0, 1])
        finished = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
        self.assertEqual(sorted(c["index"] for c in finished), [0, 1])
        self.assertEqual({c["finish_reason"] for c in finished}, {"length"})

    def test_continuous_usage_stats(self) -> None:
        options = {"include_usage": True, "continuous_usage_stats": True}
        body = {"prompt": "x", "max_tokens": 3, "stream": True, "stream_options": options}
        events = [
            json.loads(e)
            for e in sse_events(raw_post(self.server, "/v1/completions", body)[2])[:-1]
        ]
        self.assertEqual([e["usage"]["completion_tokens"] for e in events], [1, 2, 3, 3])
        self.assertEqual(events[-1]["choices"], [])

    def test_prompt_list_and_chat_echo(self) -> None:
        response = self.client.completions.create(
            model="mock-model", prompt=["a", "b"], n=2, max_tokens=2
        )
        self.assertEqual([c.index for c in response.choices], [0, 1, 2, 3])
        assert response.usage is not None
        self.assertEqual(response.usage.completion_tokens, 8)
        echoed = self.client.chat.completions.create(
            model="mock-model",
            messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well,"}],
            max_tokens=2,
            extra_body={"echo": True},
        )
        self.assertTrue((echoed.choices[0].message.content or "").startswith("Well,"))

    def test_package_exports(self) -> None:
        import mocksup.vllm

        for name in mocksup.vllm.__all__:
            self.assertTrue(hasattr(mocksup.vllm, name), name)

    def test_reset_is_a_tcp_reset(self) -> None:
        body = json.dumps({"prompt": "x"}).encode()
        with socket.create_connection((self.server.host, self.server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n"
                b"X-Mocksup-Fault: reset\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            with self.assertRaises(ConnectionResetError):
                sock.recv(100)
        (entry,) = [
            e for e in self.server.requests() if e.headers.get("x-mocksup-fault") == "reset"
        ][-1:]
        self.assertIsNone(entry.status)
