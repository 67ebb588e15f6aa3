"""The routes vLLM serves for a generative model beside chat and completions (issue 10,
item 14): the batch chat route, SageMaker's ``/invocations``, the API docs, and the
development routes behind ``VLLM_SERVER_DEV_MODE=1`` with their effects."""

from __future__ import annotations

import http.client
import json
import threading

from mocksup.vllm import MockVLLMServer
from tests.vllm.support import ServerTestCase, raw_post, raw_request, scrape, sse_events, until

USER = [{"role": "user", "content": "hi"}]


def post(server: MockVLLMServer, path: str) -> tuple[int, object]:
    status, _, data = raw_request(server, "POST", path)
    return status, json.loads(data) if data else None


def get(server: MockVLLMServer, path: str) -> object:
    status, _, data = raw_request(server, "GET", path)
    assert status == 200, (path, status, data)
    return json.loads(data)


class RoutesTest(ServerTestCase):
    def test_batch_chat_answers_each_conversation(self) -> None:
        body = {"messages": [USER, [{"role": "user", "content": "the world"}]], "max_tokens": 3}
        status, _, data = raw_post(self.server, "/v1/chat/completions/batch", body)
        self.assertEqual(status, 200, data)
        reply = json.loads(data)
        self.assertEqual(reply["object"], "chat.completion")
        self.assertEqual([c["index"] for c in reply["choices"]], [0, 1])
        usage = reply["usage"]
        tokenized = [
            json.loads(raw_post(self.server, "/tokenize", {"messages": m})[2])["count"]
            for m in body["messages"]
        ]
        self.assertEqual(usage["prompt_tokens"], sum(tokenized))
        self.assertEqual(usage["completion_tokens"], 6)
        status, _, data = raw_post(
            self.server, "/v1/chat/completions/batch", {"messages": [USER], "n": 2}
        )
        self.assertEqual(status, 400)
        self.assertIn("do not support `n > 1`", json.loads(data)["error"]["message"])
        status, _, data = raw_post(self.server, "/v1/chat/completions/batch", {"messages": []})
        self.assertEqual(json.loads(data)["error"]["param"], "body.messages")

    def test_invocations_serves_chat_and_completions_as_their_routes(self) -> None:
        chat = {"messages": USER, "max_completion_tokens": 5, "temperature": 0.0}
        direct = json.loads(raw_post(self.server, "/v1/chat/completions", chat)[2])
        invoked = json.loads(raw_post(self.server, "/invocations", chat)[2])
        self.assertEqual(invoked.keys(), direct.keys())
        self.assertEqual(invoked["choices"], direct["choices"])
        completion = json.loads(raw_post(self.server, "/invocations", {"prompt": "x"})[2])
        self.assertEqual(completion["object"], "text_completion")
        status, _, data = raw_post(self.server, "/invocations", {"nothing": 1})
        self.assertEqual(status, 400)
        self.assertEqual(
            json.loads(data)["error"]["message"],
            "Cannot find suitable handler for request. Expected one of: "
            "['ChatCompletionRequest', 'CompletionRequest']",
        )

    def test_api_docs(self) -> None:
        schema = get(self.server, "/openapi.json")
        assert isinstance(schema, dict)
        self.assertEqual(schema["info"], {"title": "FastAPI", "version": "0.1.0"})
        self.assertIn("post", schema["paths"]["/v1/chat/completions"])
        self.assertNotIn("/docs", schema["paths"])
        for path, title in (("/docs", b"Swagger UI"), ("/redoc", b"ReDoc")):
            status, headers, page = raw_request(self.server, "GET", path)
            self.assertEqual(status, 200)
            self.assertTrue(headers["content-type"].startswith("text/html"))
            self.assertIn(title, page)
            self.assertIn(b"/openapi.json", page)

    def test_dev_routes_are_absent_without_dev_mode(self) -> None:
        for path in ("/sleep", "/pause", "/reset_prefix_cache"):
            self.assertEqual(post(self.server, path)[0], 404, path)
        self.assertEqual(raw_request(self.server, "GET", "/is_sleeping")[0], 404)


class NoDocsTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, disable_fastapi_docs=True)

    def test_disable_fastapi_docs(self) -> None:
        for path in ("/docs", "/redoc", "/openapi.json"):
            self.assertEqual(raw_request(self.server, "GET", path)[0], 404, path)


class DevModeTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        # As vLLM, the mock reads VLLM_SERVER_DEV_MODE from its environment.
        return MockVLLMServer(port=0, env={"VLLM_SERVER_DEV_MODE": "1"})

    def sleep_state(self) -> tuple[float, float, float]:
        got = scrape(self.server)
        return tuple(  # type: ignore[return-value]
            got[("vllm:engine_sleep_state", (("sleep_state", s),))]
            for s in ("awake", "weights_offloaded", "discard_all")
        )

    def test_sleep_refuses_generation_until_woken_and_metrics_follow(self) -> None:
        sleeps = ("vllm:sleep_mode_operation_duration_seconds_count", (("operation", "sleep"),))
        before = scrape(self.server).get(sleeps, 0)
        self.assertEqual(
            post(self.server, "/sleep?level=1"), (200, {"status": "sleeping", "level": 1})
        )
        self.addCleanup(post, self.server, "/wake_up")
        self.assertEqual(get(self.server, "/is_sleeping"), {"is_sleeping": True})
        self.assertEqual(self.sleep_state(), (0, 1, 0))
        status, _, data = raw_post(self.server, "/v1/completions", {"prompt": "x"})
        error = json.loads(data)["error"]
        self.assertEqual(
            (status, error["type"], error["code"]), (503, "ServiceUnavailableError", 503)
        )
        self.assertEqual(error["message"], "Generation is paused. Please retry after it resumes.")
        # A stream has started with 200: the refusal comes as an error frame.
        status, _, raw = raw_post(self.server, "/v1/completions", {"prompt": "x", "stream": True})
        frames = sse_events(raw)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(frames[0])["error"]["code"], 503)
        self.assertEqual(frames[-1], "[DONE]")
        # A partial wake keeps it asleep; the rest wakes it.
        self.assertEqual(
            post(self.server, "/wake_up?tags=weights"),
            (200, {"status": "sleeping", "tags": ["weights"]}),
        )
        self.assertEqual(get(self.server, "/is_sleeping"), {"is_sleeping": True})
        self.assertEqual(
            post(self.server, "/wake_up?tags=kv_cache"),
            (200, {"status": "awake", "tags": ["kv_cache"]}),
        )
        self.assertEqual(get(self.server, "/is_sleeping"), {"is_sleeping": False})
        self.assertEqual(self.sleep_state(), (1, 0, 0))
        self.assertEqual(raw_post(self.server, "/v1/completions", {"prompt": "x"})[0], 200)
        got = scrape(self.server)
        self.assertEqual(got[sleeps], before + 1)
        http = (
            "http_requests_total",
            (("handler", "/sleep"), ("method", "POST"), ("status", "2xx")),
        )
        self.assertGreaterEqual(got[http], 1)

    def test_level_two_and_bad_queries(self) -> None:
        post(self.server, "/sleep?level=2")
        self.addCleanup(post, self.server, "/wake_up")
        self.assertEqual(self.sleep_state(), (0, 0, 1))
        for query, param in (
            ("level=3", "query.level"),
            ("level=x", "query.level"),
            ("mode=later", "query.mode"),
        ):
            status, body = post(self.server, f"/sleep?{query}")
            assert isinstance(body, dict)
            self.assertEqual((status, body["error"]["param"]), (400, param), query)
            self.assertEqual(body["error"]["type"], "Bad Request")

    def test_pause_keep_holds_new_requests_in_the_queue(self) -> None:
        self.assertEqual(post(self.server, "/pause?mode=keep"), (200, {"status": "paused"}))
        self.assertEqual(get(self.server, "/is_paused"), {"is_paused": True})
        results: list[int] = []
        sender = threading.Thread(
            target=lambda: results.append(
                raw_post(self.server, "/v1/completions", {"prompt": "held"})[0]
            )
        )
        sender.start()
        until(lambda: self.server.stats()["waiting"] == 1)
        self.assertEqual(scrape(self.server)[("vllm:num_requests_waiting", ())], 1)
        self.assertEqual(post(self.server, "/resume"), (200, {"status": "resumed"}))
        sender.join(10)
        self.assertEqual(results, [200])

    def test_pause_abort_ends_a_running_stream_with_abort(self) -> None:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        body = {"prompt": "x", "max_tokens": 500, "ignore_eos": True, "stream": True}
        conn.request(
            "POST",
            "/v1/completions",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "X-Mocksup-ITL": "0.05"},
        )
        response = conn.getresponse()
        self.assertTrue(response.readline().startswith(b"data: "))
        post(self.server, "/pause?mode=abort")
        self.addCleanup(post, self.server, "/resume")
        rest = response.read().decode()
        conn.close()
        frames = [f.strip() for f in rest.split("\n\n") if f.strip().startswith("data: {")]
        last = json.loads(frames[-1][len("data: ") :])
        self.assertEqual(last["choices"][0]["finish_reason"], "abort")
        self.assertTrue(rest.rstrip().endswith("data: [DONE]"))
        got = scrape(self.server)
        self.assertGreaterEqual(
            got[("vllm:request_success_total", (("finished_reason", "abort"),))], 1
        )
        self.assertEqual(got[("vllm:num_requests_running", ())], 0)

    def test_reset_prefix_cache_forgets_cached_blocks(self) -> None:
        body = {"prompt": " the" * 40, "max_tokens": 1}
        raw_post(self.server, "/v1/completions", body)
        before = scrape(self.server)[("vllm:prefix_cache_hits_total", ())]
        raw_post(self.server, "/v1/completions", body)
        self.assertEqual(scrape(self.server)[("vllm:prefix_cache_hits_total", ())], before + 32)
        self.assertEqual(post(self.server, "/reset_prefix_cache"), (200, {"success": True}))
        raw_post(self.server, "/v1/completions", body)
        self.assertEqual(scrape(self.server)[("vllm:prefix_cache_hits_total", ())], before + 32)

    def test_other_dev_routes(self) -> None:
        self.assertEqual(raw_request(self.server, "POST", "/reset_mm_cache")[:1], (200,))
        info = get(self.server, "/server_info?config_format=json")
        assert isinstance(info, dict)
        self.assertEqual(set(info), {"vllm_config", "vllm_env", "system_env"})
        self.assertEqual(info["vllm_env"]["VLLM_SERVER_DEV_MODE"], "1")
        self.assertEqual(get(self.server, "/get_world_size"), {"world_size": 1})
