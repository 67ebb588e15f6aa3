"""Hostile input against a real child: vLLM's 400s, bounded memory, journal, regexes, HEAD."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from mocksup.vllm import MockVLLMServer, ScriptReply, ScriptRule
from tests.fuzz.support import send_raw
from tests.support import half_sent_bodies, poll_until
from tests.vllm.support import ServerTestCase, raw_post

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Hello"}]


def _strict(raw: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"bare {token} in a JSON answer")

    return json.loads(raw, parse_constant=refuse)


def _send(server: MockVLLMServer, method: str, path: str, raw: bytes, **headers: str) -> Any:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(
            method, path, body=raw, headers={"Content-Type": "application/json", **headers}
        )
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


class ValidationTest(ServerTestCase):
    """Each malformed request vLLM 0.33 answers 400, with its type, param and wording."""

    def error(self, path: str, body: Any, **headers: str) -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, data, _ = _send(self.server, "POST", path, raw, **headers)
        self.assertEqual(status, 400, data)
        answer: dict[str, Any] = _strict(data)
        return answer.get("error", answer)

    def test_sampling_rules_answer_vllms_messages(self) -> None:
        cases = [
            ({"temperature": -5}, "temperature must be non-negative, got -5.0. "
             "(parameter=temperature, value=-5.0)", "temperature"),
            ({"top_p": 7}, "top_p must be in (0, 1], got 7.0. (parameter=top_p, value=7.0)",
             "top_p"),
            ({"logprobs": True, "top_logprobs": 21}, "Requested sample logprobs of 21, which "
             "is greater than max allowed: 20 (parameter=logprobs, value=21)", "logprobs"),
        ]  # fmt: skip
        for extra, message, param in cases:
            error = self.error(CHAT, {"messages": MESSAGES, **extra})
            self.assertEqual(
                (error["message"], error["type"], error["param"]),
                (message, "BadRequestError", param),
            )
        error = self.error(CHAT, {"messages": []})
        self.assertEqual(error["message"], "The decoder prompt cannot be empty")

    def test_huge_completion_logprobs_are_refused_at_once(self) -> None:
        start = time.monotonic()
        error = self.error("/v1/completions", {"prompt": "x", "logprobs": 10**6, "max_tokens": 16})
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual(error["param"], "logprobs")
        self.assertIn("greater than max allowed: 20", error["message"])

    def test_tool_rules(self) -> None:
        tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        named = {"type": "function", "function": "x"}
        error = self.error(CHAT, {"messages": MESSAGES, "tools": tools, "tool_choice": named})
        self.assertEqual(error["param"], "tool_choice.function")
        self.assertTrue(
            error["message"].startswith("1 validation error:\n  {'type': 'value_error'")
        )
        self.assertIn("Invalid value for `function`: `x` in `tool_choice`!", error["message"])
        for parameters in ({"properties": "x"}, {"properties": {"a": {"enum": 5}}}):
            bad = [{"type": "function", "function": {"name": "f", "parameters": parameters}}]
            error = self.error(
                CHAT, {"messages": MESSAGES, "tools": bad, "tool_choice": "required"}
            )
            self.assertEqual(error["type"], "BadRequestError")

    def test_responses_tools_that_are_not_objects(self) -> None:
        # Found by the JSON fuzz: a tool that is no object made the custom-tool check fail
        # (500); vLLM's check skips it and the field's validation refuses it.
        for tool in (1, [1], "x", None):
            error = self.error("/v1/responses", {"input": "hi", "tools": [tool]})
            self.assertEqual((error["type"], error["param"]), ("Bad Request", "body.tools.0"))
            self.assertIn("Input should be a valid dictionary", error["message"])

    def test_embedding_inputs_and_dimensions(self) -> None:
        path = "/v1/embeddings"
        for bad in (5, [[1.5]], [{}], [None]):
            error = self.error(path, {"input": bad})
            self.assertEqual(error["type"], "Bad Request", bad)
            self.assertTrue(error["param"].startswith("body.input"), error)
        for bad in ("abc", [1]):
            error = self.error(path, {"input": "x", "dimensions": bad})
            self.assertEqual((error["type"], error["param"]), ("Bad Request", "body.dimensions"))
        for bad in (-5, 385, 10**6):
            error = self.error(path, {"input": "x", "dimensions": bad})
            self.assertEqual(
                error["message"],
                f"Model 'mock-model' only supports dimensions in range [1, 384], got {bad}.",
            )
        start = time.monotonic()
        ok = raw_post(self.server, path, {"input": "x", "dimensions": 384})
        self.assertEqual((ok[0], len(json.loads(ok[2])["data"][0]["embedding"])), (200, 384))
        self.assertLess(time.monotonic() - start, 5)

    def test_tokenize_messages_of_numbers(self) -> None:
        error = self.error("/tokenize", {"messages": [1]})
        self.assertEqual(error["type"], "Bad Request")
        self.assertIn("'loc': 'body.TokenizeChatRequest.messages.0'", error["message"])

    def test_lone_surrogates(self) -> None:
        raw = b'"a\\ud800b"'
        bodies = {
            CHAT: b'{"messages": [{"role": "user", "content": %s}]}' % raw,
            "/v1/completions": b'{"prompt": %s}' % raw,
            "/v1/embeddings": b'{"input": %s}' % raw,
            "/tokenize": b'{"prompt": %s}' % raw,
        }
        for path, body in bodies.items():
            error = self.error(path, body)
            self.assertEqual(error["type"], "BadRequestError", path)
            self.assertIn("surrogates not allowed", error["message"], path)

    def test_deep_nesting_answers_400_and_the_journal_stays_readable(self) -> None:
        deep = b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        status, data, _ = _send(self.server, "POST", CHAT, deep)
        self.assertEqual(
            (status, _strict(data)), (400, {"detail": "There was an error parsing the body"})
        )
        entries = self.server.requests(path=CHAT)
        self.assertEqual(entries[-1].status, 400)
        self.assertIsInstance(entries[-1].body, str)  # kept as text, never re-parsed to death

    def test_infinite_latency_header(self) -> None:
        body = {"prompt": "x", "stream": True}
        for value in ("inf", "nan", "-1", "1e308"):
            error = self.error("/v1/completions", body, **{"X-Mocksup-TTFT": value})
            self.assertEqual(error["type"], "BadRequestError")
        self.assertEqual(raw_post(self.server, "/v1/completions", {"prompt": "x"})[0], 200)


class ControlNumbersTest(ServerTestCase):
    def test_non_finite_settings_are_refused_and_answers_stay_strict(self) -> None:
        for raw in (b'{"ttft": Infinity}', b'{"itl": NaN}', b'{"ttft": 1e308}'):
            status, data, _ = _send(self.server, "PUT", "/mocksup/latency", raw)
            self.assertEqual(status, 400, data)
            _strict(data)
        status, data, _ = _send(self.server, "PUT", "/mocksup/faults", b'{"retry_after": 1e308}')
        self.assertEqual(status, 400)
        self.assertEqual(_send(self.server, "GET", "/mocksup/latency", b"")[0], 200)
        # A request body holding NaN is journaled as text, so the journal stays strict JSON.
        raw_nan = b'{"prompt": "x", "max_tokens": 1, "temperature": NaN}'
        _send(self.server, "POST", "/v1/completions", raw_nan)
        status, data, _ = _send(self.server, "GET", "/mocksup/requests", b"")
        self.assertEqual(status, 200)
        _strict(data)

    def test_invalid_script_regex_is_a_json_400(self) -> None:
        status, data, _ = _send(self.server, "POST", "/mocksup/scripts", b'{"regex": "("}')
        self.assertEqual(status, 400)
        self.assertIn("invalid regex", _strict(data)["error"])

    def test_nan_long_poll_is_refused(self) -> None:
        refused = "parameter 'timeout' must be a finite number of seconds from 0 to 600, not"
        cases = {
            "nan": f"{refused} 'nan'",
            "inf": f"{refused} 'inf'",
            "-1": f"{refused} '-1'",
            "601": "parameter 'timeout' is 601 s; the longest wait is 600 s",
        }
        for value, message in cases.items():
            with self.subTest(timeout=value):
                target = f"/mocksup/requests?count=5&timeout={value}"
                status, data, _ = _send(self.server, "GET", target, b"")
                self.assertEqual(status, 400, data)
                self.assertTrue(_strict(data)["error"].startswith(message), data)
        # The same query with a valid timeout is served: the refusals were the timeout's.
        status, data, _ = _send(self.server, "GET", "/mocksup/requests?count=0&timeout=0", b"")
        self.assertEqual(status, 200, data)


class JournalTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, max_request_bytes=2 * 1024 * 1024, max_model_len=10**6)

    def test_bodies_are_bounded_and_oversize_ones_not_kept(self) -> None:
        self.server.clear()
        prompt = "word " * 40_000  # 200 kB
        status = raw_post(self.server, "/tokenize", {"prompt": prompt})[0]
        self.assertEqual(status, 200)
        (entry,) = self.server.requests(path="/tokenize")
        self.assertGreater(entry.body_size, 200_000)
        self.assertTrue(entry.body.endswith(f"...[truncated: {entry.body_size} bytes in all]"))
        self.assertLess(len(entry.body), 70_000)
        big = b'{"prompt": "' + b"x" * (3 * 1024 * 1024) + b'"}'
        status, data, _ = _send(self.server, "POST", "/tokenize", big)
        self.assertEqual(status, 413)
        self.assertIn("max_request_bytes", _strict(data)["error"]["message"])
        last = self.server.requests(path="/tokenize")[-1]
        self.assertEqual((last.status, last.body, last.body_size), (413, None, 0))

    def test_credentials_are_redacted(self) -> None:
        self.server.clear()
        headers = {"Authorization": "Bearer sk-secret", "X-Api-Key": "k1", "Cookie": "s=1",
                   "X-Forward": "Bearer sk-other", "X-Plain": "kept"}  # fmt: skip
        raw_post(self.server, "/tokenize", {"prompt": "x"}, headers)
        (entry,) = self.server.requests(path="/tokenize")
        for name in ("authorization", "x-api-key", "cookie", "x-forward"):
            self.assertEqual(entry.headers[name], "[redacted]", name)
        self.assertEqual(entry.headers["x-plain"], "kept")


class HeldBodiesTest(ServerTestCase):
    """The bodies of the requests in progress are bounded together (16 at
    ``max_request_bytes``): past that a request is answered 503, and served once room is
    made."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, max_request_bytes=1024)

    def test_a_request_past_what_may_be_held_is_refused_until_room_is_made(self) -> None:
        # 16 x 1,024 bytes, each half sent: all that may be held.
        address = (self.server.host, self.server.port)
        held = half_sent_bodies(self, address, "/tokenize", "application/json", count=16, size=1024)
        answers: list[Any] = []

        def refused() -> bool:
            answers.append(raw_post(self.server, "/tokenize", {"prompt": "x"}))
            return bool(answers[-1][0] == 503)

        poll_until(refused, "a request refused while 16 bodies at the limit are held")
        error = _strict(answers[-1][2])["error"]
        self.assertEqual(error["code"], 503)
        self.assertIn("request bodies", error["message"])
        for sock in held:  # the clients go away mid-body: their room is given back
            sock.close()
        poll_until(lambda: raw_post(self.server, "/tokenize", {"prompt": "x"})[0] == 200,
                   "a request served once the held bodies are gone")  # fmt: skip


class KeptCredentialsTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, journal_credentials=True)

    def test_the_setting_keeps_them(self) -> None:
        raw_post(self.server, "/tokenize", {"prompt": "x"}, {"Authorization": "Bearer sk-1"})
        (entry,) = self.server.requests(path="/tokenize")
        self.assertEqual(entry.headers["authorization"], "Bearer sk-1")


class MemoryTest(ServerTestCase):
    """Requests within the size limit (32 MiB) keep the child well under 600 MiB."""

    def rss(self) -> int:
        assert self.server.pid is not None
        return int(psutil.Process(self.server.pid).memory_info().rss)

    def test_hostile_bodies_stay_bounded(self) -> None:
        message = b'{"role":"user","content":""},'
        fan_out = b'{"prompt": "x", "n": 16384, "max_tokens": 4000, "ignore_eos": true}'
        bodies = [
            ("/v1/chat/completions", b'{"messages": [' + message * 1_000_000 + b"{}]}"),
            ("/v1/completions", b'{"prompt": [' + b"1000," * 6_000_000 + b"1]}"),
            ("/v1/completions", b'{"prompt": "' + b"\xc3\xa9" * 15_000_000 + b'"}'),
            ("/v1/embeddings", b'{"input": [' + b'"a",' * 7_000_000 + b'"a"]}'),
            ("/v1/completions", fan_out),
        ]
        for path, body in bodies:
            status, data, _ = _send(self.server, "POST", path, body)
            self.assertIn(status, (400, 413), data[:300])
            self.assertLess(self.rss(), 600 * 1024 * 1024, path)
        self.assertEqual(raw_post(self.server, "/v1/completions", {"prompt": "x"})[0], 200)


class RegexTest(ServerTestCase):
    #: Patterns that backtrack for ever on ``"a" * 60 + "!"``: each gives up after
    #: REGEX_TIMEOUT (0.25 s), so one hostile request spends 0.5 s matching them.
    SLOW = (r"(a|aa)+$", r"(aa|a)+$")

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        rules = [ScriptRule(regex=p, reply=ScriptReply(content="matched")) for p in cls.SLOW]
        return MockVLLMServer(port=0, scripts=rules)

    def storm(self) -> list[float]:
        """Two clients sending hostile prompts back to back until the test ends; returns
        the list their requests' durations go to, once the first has finished (so that
        from then on one is always being matched)."""
        stop, first = threading.Event(), threading.Event()
        took: list[float] = []
        hostile = {"prompt": "a" * 60 + "!", "max_tokens": 2}

        def client() -> None:
            while not stop.is_set():
                start = time.monotonic()
                status = raw_post(self.server, "/v1/completions", hostile)[0]
                took.append(time.monotonic() - start if status == 200 else -status)
                first.set()

        threads = [threading.Thread(target=client) for _ in range(2)]
        for thread in threads:
            thread.start()
            self.addCleanup(thread.join, 30)
        self.addCleanup(stop.set)
        self.assertTrue(first.wait(30))
        return took

    def test_a_backtracking_regex_stalls_no_other_request(self) -> None:
        took = self.storm()
        # Ten requests of each kind while the patterns run: /v1/models needs only the GIL
        # (patterns run without it); a generation request also takes the state lock
        # (patterns run outside it). Ten take well under 0.2 s; a pattern holding either
        # would hold most of them for a share of a hostile request's 0.5 s of matching.
        probes: dict[str, Callable[[], int]] = {
            "models": lambda: _send(self.server, "GET", "/v1/models", b"")[0],
            "completion": lambda: raw_post(
                self.server, "/v1/completions", {"prompt": "hi", "max_tokens": 1}
            )[0],
        }
        for name, probe in probes.items():
            start = time.monotonic()
            self.assertEqual([probe() for _ in range(10)], [200] * 10, name)
            self.assertLess(time.monotonic() - start, 1.5, f"{name} waited for the patterns")
        # The hostile requests were answered, each after both its patterns gave up. The
        # regex module's timeout counts the process's CPU time, so with the two clients'
        # patterns matching at once each gives up after about half its 0.25 s of wall time.
        self.assertGreaterEqual(min(took), 2 * 0.25 / 2 * 0.8, took)
        body = raw_post(self.server, "/v1/completions", {"prompt": "aaaa", "max_tokens": 20})[2]
        self.assertEqual(json.loads(body)["choices"][0]["text"], "matched")


class HeadTest(ServerTestCase):
    def test_head_on_health_and_metrics(self) -> None:
        # Raw and pipelined in one write, parsed strictly: a body sent after a HEAD's head
        # would be read as the next answer's status line (http.client, knowing it sent
        # HEAD, would silently skip it).
        raw = b"".join(
            b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, path)
            for method, path in (
                (b"HEAD", b"/health"),
                (b"HEAD", b"/metrics"),
                (b"GET", b"/version"),
            )
        )
        exchange = send_raw(self.server.host, self.server.port, raw, head_requests=2)
        self.assertEqual((exchange.error, exchange.trailing), ("", b""))
        health, metrics, version = exchange.answers
        self.assertEqual([a.status for a in exchange.answers], [200, 200, 200])
        self.assertEqual((health.body, metrics.body), (b"", b""))
        # The heads are GET's: /metrics announces the length of the text it did not send.
        self.assertGreater(int(metrics.headers["content-length"]), 1000)
        self.assertEqual(
            metrics.headers["content-type"], "text/plain; version=1.0.0; charset=utf-8"
        )
        self.assertIn("version", json.loads(version.body))
