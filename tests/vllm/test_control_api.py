"""The vLLM mock's control API on ``mocksup.control``: declared parameters, the ``timeout``
long poll, bodies, and the parent-side methods that call it."""

from __future__ import annotations

import json
import threading
import time
from unittest import mock

from mocksup import ControlAPIError, WaitTimeoutError
from mocksup.control import MAX_DEPTH, MAX_WAIT
from mocksup.vllm import VLLMClient
from tests.vllm.support import ServerTestCase, raw_post, raw_request

BODY = {"prompt": "hello", "max_tokens": 2}


class ControlAPITest(ServerTestCase):
    def get(self, target: str) -> tuple[int, dict[str, object]]:
        status, _, data = raw_request(self.server, "GET", target)
        return status, json.loads(data)

    def test_unknown_parameters_are_refused_naming_the_known_ones(self) -> None:
        status, body = self.get("/mocksup/requests?pth=/v1/completions")
        self.assertEqual(status, 400)
        self.assertEqual(
            body["error"],
            "unknown parameter 'pth' for GET /mocksup/requests; known: count, path, timeout",
        )
        # The old long-poll name is gone: one wait convention, ``timeout``.
        status, body = self.get("/mocksup/requests?count=1&wait=5")
        self.assertEqual(status, 400)
        self.assertIn("unknown parameter 'wait'", str(body["error"]))
        status, body = self.get("/mocksup/stats?verbose=1")
        self.assertEqual(
            (status, body["error"]),
            (400, "unknown parameter 'verbose' for GET /mocksup/stats; known: none"),
        )

    def test_timeout_is_capped_at_the_frameworks_limit_and_said_so(self) -> None:
        status, body = self.get(f"/mocksup/requests?count=1&timeout={MAX_WAIT + 1:g}")
        self.assertEqual(status, 400)
        self.assertIn("the longest wait is 600 s", str(body["error"]))
        for bad in ("nan", "inf", "-1", "x"):
            status, body = self.get(f"/mocksup/requests?count=1&timeout={bad}")
            self.assertEqual(status, 400, bad)

    def test_a_long_poll_past_the_old_60_s_cap_returns_when_the_request_arrives(self) -> None:
        self.server.clear()
        timer = threading.Timer(0.5, raw_post, (self.server, "/v1/completions", BODY))
        started = time.monotonic()  # before the timer starts: it fires 0.5 s after this
        timer.start()
        self.addCleanup(timer.cancel)
        # A timeout of 500 s is accepted (no 60 s cap) and answered as soon as it holds.
        status, _, data = raw_request(
            self.server, "GET", "/mocksup/requests?path=/v1/completions&count=1&timeout=500"
        )
        elapsed = time.monotonic() - started
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(data)["requests"]), 1)
        self.assertGreaterEqual(elapsed, 0.5)
        self.assertLess(elapsed, 30)

    def test_routes_index_health_and_errors(self) -> None:
        status, index = self.get("/mocksup")
        self.assertEqual(status, 200)
        routes = {(r["path"], tuple(r["methods"])) for r in index["routes"]}  # type: ignore[union-attr,index]
        for route in [
            ("/mocksup/requests", ("GET",)),
            ("/mocksup/requests", ("DELETE",)),
            ("/mocksup/clear", ("POST",)),
            ("/mocksup/latency", ("PUT",)),
            ("/mocksup/scripts", ("POST",)),
        ]:
            self.assertIn(route, routes)
        status, health = self.get("/mocksup/health")
        self.assertEqual((health["status"], health["class"]), ("ok", "MockVLLMServer"))
        self.assertEqual(health["version"], "0.33.0")
        status, _, data = raw_request(self.server, "PATCH", "/mocksup/latency")
        self.assertEqual((status, json.loads(data)["error"][:5]), (405, "PATCH"))
        status, _, data = raw_request(self.server, "GET", "/mocksup/nothing")
        self.assertEqual(status, 404)

    def test_bodies_are_checked(self) -> None:
        cases = [
            ("POST", "/mocksup/clear", b'{"metrics": "yes"}', "metrics"),
            ("POST", "/mocksup/clear", b"[1]", "JSON object"),
            ("PUT", "/mocksup/latency", b'{"ttft": -1}', "ttft"),
            ("PUT", "/mocksup/latency", b'{"ttft": NaN}', "not valid JSON"),
            ("PUT", "/mocksup/faults", b'{"kind": "meteor"}', "kind"),
            ("PUT", "/mocksup/scripts", b'{"rules": 1}', "rules"),
            ("POST", "/mocksup/scripts", b'{"regex": "("}', "invalid regex"),
        ]
        json_type = {"Content-Type": "application/json"}
        for method, path, body, words in cases:
            status, _, data = raw_request(self.server, method, path, body, json_type)
            self.assertEqual(status, 400, (path, body))
            self.assertIn(words, json.loads(data)["error"], (path, body))
        # Nothing was changed by the refused bodies.
        self.assertEqual(self.server.runtime_config()["latency"]["ttft"], 0.0)

    def test_a_deeply_nested_rule_is_refused_and_the_rules_stay_readable(self) -> None:
        # 980 levels of tool arguments parsed, were stored, and then every GET of the rules
        # or the config answered 500 (the encoder ran out of stack) until they were replaced.
        arguments = '{"a":' * 980 + "1" + "}" * 980
        body = '{"reply": {"tool_calls": [{"name": "f", "arguments": ' + arguments + "}]}}"
        status, _, data = raw_request(self.server, "POST", "/mocksup/scripts", body.encode())
        self.assertEqual(status, 400)
        self.assertIn(f"deeper than {MAX_DEPTH} levels", json.loads(data)["error"])
        for path in ("/mocksup/scripts", "/mocksup/config"):
            self.assertEqual(raw_request(self.server, "GET", path)[0], 200, path)
        self.assertEqual(
            json.loads(raw_request(self.server, "GET", "/mocksup/scripts")[2]), {"rules": []}
        )

    def test_clear_with_metrics_zeroes_the_counters(self) -> None:
        raw_post(self.server, "/v1/completions", BODY)
        self.server.clear(metrics=True)
        self.assertEqual(self.server.requests(), [])
        _, _, text = raw_request(self.server, "GET", "/metrics")
        self.assertIn(b"vllm:generation_tokens_total{", text)
        self.assertIn(b'vllm:generation_tokens_total{engine="0",model_name="mock-model"} 0.0', text)

    def test_a_wait_longer_than_one_poll_polls_again(self) -> None:
        self.server.clear()
        client = VLLMClient(self.server.url, "vllm")
        timer = threading.Timer(1.0, raw_post, (self.server, "/v1/completions", BODY))
        timer.start()
        self.addCleanup(timer.cancel)
        # With polls of at most 0.3 s, a 10 s wait is several polls, and still returns
        # as soon as the request arrives.
        with mock.patch("mocksup.vllm.client.MAX_WAIT", 0.3):
            started = time.monotonic()
            entries = client.wait_for_requests(count=1, path="/v1/completions", timeout=10)
        self.assertEqual(len(entries), 1)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        with mock.patch("mocksup.vllm.client.MAX_WAIT", 0.3), self.assertRaises(WaitTimeoutError):
            client.wait_for_requests(count=5, path="/v1/completions", timeout=1)

    def test_an_unreachable_mock_is_a_control_api_error(self) -> None:
        with self.assertRaises(ControlAPIError):
            VLLMClient("http://127.0.0.1:1", "gone").stats()
