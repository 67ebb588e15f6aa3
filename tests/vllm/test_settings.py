"""The documented settings and waits, each against a real child."""

from __future__ import annotations

import json
import threading
import time
import unittest
from typing import Any

import openai

from mocksup import ChildCrashedError, WaitTimeoutError
from mocksup.vllm import MockVLLMServer, ScriptReply, ScriptRule, VLLMClient
from mocksup.vllm._engine import Slots
from tests.vllm.support import ServerTestCase, raw_post


class WaitTest(ServerTestCase):
    def test_a_wait_held_before_the_request_returns_when_it_arrives(self) -> None:
        self.server.clear()
        got: list[float] = []

        def wait() -> None:
            start = time.monotonic()
            self.server.wait_for_requests(path="/tokenize", timeout=10)
            got.append(time.monotonic() - start)

        thread = threading.Thread(target=wait)
        thread.start()
        self.addCleanup(thread.join, 15)
        # Give the long poll a head start so it is held when the request lands; a short
        # head start never fails the test, it only makes it weaker.
        time.sleep(0.2)
        raw_post(self.server, "/tokenize", {"prompt": "x"})
        thread.join(15)
        self.assertEqual(len(got), 1)
        self.assertLess(got[0], 3.0)  # far under the 10 s timeout: woken, not timed out

    def test_a_timeout_lists_what_arrived(self) -> None:
        self.server.clear()
        raw_post(self.server, "/tokenize", {"prompt": "x"})
        with self.assertRaises(WaitTimeoutError) as caught:
            self.server.wait_for_requests(count=2, path="/tokenize", timeout=0.2)
        error = caught.exception
        self.assertIsInstance(error, AssertionError)
        self.assertEqual((error.expected, error.matched), (2, 1))
        self.assertEqual(error.arrived, ["1 x POST /tokenize -> 200"])

    def test_client_from_a_url(self) -> None:
        self.server.clear()
        raw_post(self.server, "/tokenize", {"prompt": "x"})
        client = VLLMClient(self.server.url)
        (entry,) = client.wait_for_requests(path="/tokenize")
        self.assertEqual(entry.body, {"prompt": "x"})

    def test_delete_requests_empties_only_the_journal(self) -> None:
        self.server.clear()
        self.client.completions.create(model="mock-model", prompt="x", max_tokens=1)
        self.server.clear_requests()
        self.assertEqual(self.server.requests(), [])
        self.assertEqual(self.server.stats()["generation_calls"], 1)


class HandCountedTokensTest(ServerTestCase):
    def test_counts(self) -> None:
        # "Hello" and " world" are vocabulary pieces: 2 tokens.
        completion = self.client.completions.create(model="mock-model", prompt="Hello world")
        assert completion.usage is not None
        self.assertEqual(completion.usage.prompt_tokens, 2)
        # "<|user|>", "\n", "Hello", " world", "\n", "<|assistant|>", "\n": 7 tokens.
        chat = self.client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "Hello world"}]
        )
        assert chat.usage is not None
        self.assertEqual(chat.usage.prompt_tokens, 7)
        # Not in the vocabulary: one token per UTF-8 byte ("é" is two).
        odd = self.client.completions.create(model="mock-model", prompt="é")
        assert odd.usage is not None
        self.assertEqual(odd.usage.prompt_tokens, 2)


class SettingsTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0,
            api_key=["key-a", "key-b"],
            enable_request_id_headers=True,
            response_role="bot",
            max_request_bytes=2048,
            journal_limit=3,
        )

    def test_every_key_of_a_list_works(self) -> None:
        for key in ("key-a", "key-b"):
            with openai.OpenAI(base_url=self.server.base_url, api_key=key, max_retries=0) as c:
                c.models.list()
        bad = openai.OpenAI(base_url=self.server.base_url, api_key="x", max_retries=0)
        with bad, self.assertRaises(openai.AuthenticationError):
            bad.models.list()

    def test_request_id_header_is_echoed(self) -> None:
        headers = {"Authorization": "Bearer key-a", "X-Request-Id": "abc"}
        status, answer, _ = raw_post(self.server, "/v1/completions", {"prompt": "x"}, headers)
        self.assertEqual((status, answer["x-request-id"]), (200, "abc"))

    def test_response_role(self) -> None:
        reply = self.client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
        self.assertEqual(reply.choices[0].message.role, "bot")

    def test_max_request_bytes(self) -> None:
        headers = {"Authorization": "Bearer key-a"}
        ok = raw_post(self.server, "/tokenize", {"prompt": "x" * 1000}, headers)
        too_big = raw_post(self.server, "/tokenize", {"prompt": "x" * 3000}, headers)
        self.assertEqual((ok[0], too_big[0]), (200, 413))

    def test_journal_limit_keeps_the_newest(self) -> None:
        headers = {"Authorization": "Bearer key-a"}
        for i in range(5):
            raw_post(self.server, "/tokenize", {"prompt": f"p{i}"}, headers)
        entries = self.server.requests(path="/tokenize")
        self.assertEqual([e.body["prompt"] for e in entries], ["p2", "p3", "p4"])


class EnvironmentLimitsTest(ServerTestCase):
    """``VLLM_MAX_N_SEQUENCES``, ``VLLM_MAX_COMPLETION_PROMPTS`` and ``VLLM_MAX_STOP_STRINGS``
    are read from the child's environment, as vLLM reads them: the limits move, so the
    errors' advice holds."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        env = {
            "VLLM_MAX_N_SEQUENCES": "3",
            "VLLM_MAX_COMPLETION_PROMPTS": "2",
            "VLLM_MAX_STOP_STRINGS": "6",
        }
        return MockVLLMServer(port=0, env=env)

    def test_stop_strings_are_limited_by_vllm_max_stop_strings(self) -> None:
        user = [{"role": "user", "content": "x"}]
        for path, body, field in (
            ("/v1/chat/completions", {"messages": user}, "stop"),
            ("/v1/completions", {"prompt": "x"}, "stop"),
            ("/v1/messages", {"messages": user}, "stop_sequences"),
        ):
            with self.subTest(path):
                request = {"model": "mock-model", "max_tokens": 1, **body}
                status, _, data = raw_post(self.server, path, {**request, field: list("abcdef")})
                self.assertEqual(status, 200, data)
                status, _, data = raw_post(self.server, path, {**request, field: list("abcdefg")})
                self.assertEqual(status, 400, data)
                self.assertIn(b"at most 6 items after validation, not 7", data)

    def error(self, **request: Any) -> dict[str, Any]:
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.completions.create(model="mock-model", max_tokens=1, **request)
        body = caught.exception.body
        assert isinstance(body, dict)
        return body

    def test_n_is_limited_by_vllm_max_n_sequences(self) -> None:
        reply = self.client.completions.create(model="mock-model", prompt="x", n=3, max_tokens=1)
        self.assertEqual(len(reply.choices), 3)
        self.assertEqual(
            self.error(prompt="x", n=4)["message"],
            "n must be at most 3, got 4. To increase this limit, set the VLLM_MAX_N_SEQUENCES "
            "environment variable.",
        )
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(
                model="mock-model", messages=[{"role": "user", "content": "x"}], n=4
            )

    def test_prompts_are_limited_by_vllm_max_completion_prompts(self) -> None:
        reply = self.client.completions.create(model="mock-model", prompt=["a", "b"], max_tokens=1)
        self.assertEqual(len(reply.choices), 2)
        body = self.error(prompt=["a", "b", "c"])
        # vLLM's schema error wraps the sentence (its validator raises inside pydantic's).
        self.assertIn(
            "prompt list length 3 exceeds the maximum allowed count of 2. To increase this "
            "limit, set the VLLM_MAX_COMPLETION_PROMPTS environment variable.",
            body["message"],
        )
        self.assertEqual(body["param"], "prompt")
        # SageMaker's route tries each request type: none takes this one.
        status, _, data = raw_post(self.server, "/invocations", {"prompt": ["a", "b", "c"]})
        self.assertEqual(status, 400)
        self.assertIn(b"Cannot find suitable handler for request", data)

    def test_without_the_variables_the_limits_are_vllms_defaults(self) -> None:
        with MockVLLMServer(port=0) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            self.addCleanup(client.close)
            for request, expected in (
                ({"prompt": "x", "n": 16385}, "n must be at most 16384, got 16385."),
                ({"prompt": ["p"] * 1025}, "maximum allowed count of 1024."),
            ):
                with self.assertRaises(openai.BadRequestError) as caught:
                    client.completions.create(model="mock-model", max_tokens=1, **request)
                self.assertIn(expected, str(caught.exception))

    def test_a_value_that_is_no_integer_fails_the_start_naming_the_variable(self) -> None:
        for name, value, said in (
            ("VLLM_MAX_COMPLETION_PROMPTS", "many", "is not an integer"),
            ("VLLM_MAX_STOP_STRINGS", "some", "is not an integer"),
            ("VLLM_MAX_STOP_STRINGS", "-1", "is negative"),  # vLLM's schemas cannot be built
            ("VLLM_MAX_STOP_STRINGS", str(2**64), "is past 2**64 - 1"),  # nor with this
        ):
            with self.subTest(name=name, value=value):
                server = MockVLLMServer(port=0, env={name: value})
                with self.assertRaises(ChildCrashedError) as caught:
                    server.start()
                self.assertIn(f"{name}={value!r} {said}", str(caught.exception))


class NoEchoTest(ServerTestCase):
    def test_request_id_header_not_echoed_by_default(self) -> None:
        _, headers, _ = raw_post(
            self.server, "/v1/completions", {"prompt": "x"}, {"X-Request-Id": "abc"}
        )
        self.assertNotIn("x-request-id", headers)


class ScriptRulesTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        rules = [
            ScriptRule(model="alias", reply=ScriptReply(content="by model")),
            ScriptRule(regex=r"^order \d+$", reply=ScriptReply(content="by regex")),
            ScriptRule(call=3, reply=ScriptReply(content="third call")),
            ScriptRule(contains="once", times=1, reply=ScriptReply(content="only once")),
        ]
        return MockVLLMServer(port=0, served_model_names=["base", "alias"], scripts=rules)

    def text(self, prompt: str, model: str = "base") -> str:
        reply = self.client.completions.create(model=model, prompt=prompt, max_tokens=10)
        return reply.choices[0].text

    def test_conditions(self) -> None:
        self.server.clear()
        self.assertEqual(self.text("x", model="alias"), "by model")  # call 1
        self.assertEqual(self.text("order 42"), "by regex")  # call 2
        self.assertEqual(self.text("y"), "third call")  # call 3
        self.assertEqual(self.text("once"), "only once")
        self.assertNotEqual(self.text("once"), "only once")
        self.assertNotEqual(self.text("order 42 please"), "by regex")


class JitterTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(
            port=0, seed=7, latency={"ttft": 0.1, "jitter": 0.5}, enable_per_request_metrics=True
        )

    def drawn(self) -> list[tuple[float, float]]:
        """Four requests after a clear(): each one's TTFT as the engine drew it (its own
        account, from the token deadlines: ms) and its duration on the server's clock (s)."""
        self.server.clear()
        ttfts = []
        for _ in range(4):
            _, _, data = raw_post(self.server, "/v1/completions", {"prompt": "x", "max_tokens": 1})
            ttfts.append(json.loads(data)["metrics"]["time_to_first_token_ms"])
        durations = [e.duration for e in self.server.requests(path="/v1/completions")]
        return list(zip(ttfts, durations, strict=True))

    def test_jitter_repeats_from_the_seed(self) -> None:
        first, second = self.drawn(), self.drawn()
        for (ttft, duration), (again, _) in zip(first, second, strict=True):
            self.assertAlmostEqual(ttft, again, delta=1e-6)  # the same draw, to 1 ns
            self.assertGreaterEqual(ttft, 50 - 1e-6)  # 0.1 s scaled by at least 1 - 0.5
            self.assertLessEqual(ttft, 150 + 1e-6)
            # Never early, not grossly late (a busy machine may add tens of ms).
            self.assertGreaterEqual(duration, ttft / 1000 - 1e-9)
            self.assertLess(duration, ttft / 1000 + 1.0)
        ttfts = [ttft for ttft, _ in first]
        self.assertGreater(max(ttfts) - min(ttfts), 5)


class TimingTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, latency={"ttft": 0.1, "itl": 0.01})

    def test_server_clock_ttft_and_duration(self) -> None:
        self.server.clear()
        body = {"prompt": "x", "max_tokens": 20, "ignore_eos": True, "stream": True}
        raw_post(self.server, "/v1/completions", body)
        (entry,) = self.server.wait_for_requests(path="/v1/completions")
        self.assertGreaterEqual(entry.first_byte, 0.1)
        self.assertGreaterEqual(entry.duration, 0.1 + 19 * 0.01)
        self.assertLess(entry.duration, 2.0)


class SlotsTest(unittest.TestCase):
    def test_acquire_has_a_deadline(self) -> None:
        slots = Slots(1)
        slots.acquire(1, 1.0)
        start = time.monotonic()
        with self.assertRaises(TimeoutError):
            slots.acquire(1, 0.1)
        self.assertGreaterEqual(time.monotonic() - start, 0.1)
        slots.release(1)
        slots.acquire(1, 0.1)
