"""``--max-num-queued-reqs`` and ``--max-num-queued-tokens``: vLLM's API server refuses what
would pass them with 503 before answering, and counts each refusal in
``vllm:admission_rejections_total``."""

from __future__ import annotations

import http.client
import json

import openai

from mocksup.vllm import TOKENIZER, MockVLLMServer
from tests.vllm.support import (
    ServerTestCase,
    hold,
    raw_post,
    raw_request,
    running,
    scrape,
    until,
)

COMPLETIONS = "/v1/completions"
HELD = {"X-Mocksup-TTFT": "30"}  # in the engine, before its first token, until let go
BUSY = (
    "The engine is currently busy and cannot accept new requests. Please try again later "
    "or on a different instance."
)
BACKLOG = (
    "The engine has reached its prefill token backlog limit. Please try again later or on "
    "a different instance."
)


def let_go(server: MockVLLMServer, conn: http.client.HTTPConnection, prompt: str) -> None:
    """Close a held request's connection and wait until the mock let go of it (its journal
    entry is written after its place was given back)."""
    conn.close()
    until(lambda: any(e.body["prompt"] == prompt for e in server.requests(path=COMPLETIONS)))


def rejections(server: MockVLLMServer) -> dict[str, float]:
    samples = scrape(server)
    return {
        reason: samples[("vllm:admission_rejections_total", (("reason", reason),))]
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens")
    }


class QueuedRequestsTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer.from_cli_args(
            ["m", "--max-num-queued-reqs", "2"], port=0, enable_responses_api_store=True
        )

    def test_a_full_server_refuses_with_503_on_every_surface(self) -> None:
        self.server.clear(metrics=True)
        held = [hold(self, self.server, {"prompt": f"held {i}", "max_tokens": 1}, HELD)
                for i in range(2)]  # fmt: skip
        until(lambda: running(self.server) == 2)
        with self.assertRaises(openai.InternalServerError) as caught:
            self.client.completions.create(model="m", prompt="one more", max_tokens=1)
        self.assertEqual(caught.exception.status_code, 503)
        expected = {"message": BUSY, "type": "Service Unavailable", "param": None, "code": 503}
        self.assertEqual(caught.exception.response.json(), {"error": expected})
        # A stream is refused before it starts: a real 503, not an error event.
        chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        status, headers, data = raw_post(self.server, "/v1/chat/completions", chat)
        self.assertEqual((status, headers["content-type"]), (503, "application/json"))
        self.assertEqual(json.loads(data), {"error": expected})
        # vLLM looks before it renders the prompt: a prompt too long is refused as busy too.
        long = {"prompt": "x " * 5000, "max_tokens": 1}
        self.assertEqual(raw_post(self.server, COMPLETIONS, long)[0], 503)
        messages = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        status, _, data = raw_post(self.server, "/v1/messages", messages)
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(data)["error"]["type"], "overloaded_error")
        self.assertEqual(rejections(self.server),
                         {"max_num_queued_reqs": 4, "max_num_queued_tokens": 0})  # fmt: skip
        samples = scrape(self.server)
        self.assertEqual(samples[("vllm:num_requests_waiting", ())], 0)
        self.assertEqual(samples[("vllm:prompt_tokens_total", ())], 0)  # nothing else ran
        for i, conn in enumerate(held):
            let_go(self.server, conn, f"held {i}")
        self.assertEqual(raw_post(self.server, COMPLETIONS, {"prompt": "now", "max_tokens": 1})[0],
                         200)  # fmt: skip

    def test_each_choice_takes_a_place(self) -> None:
        self.server.clear(metrics=True)
        conn = hold(self, self.server, {"prompt": "held", "max_tokens": 1}, HELD)
        until(lambda: running(self.server) == 1)
        two = {"prompt": "two", "max_tokens": 1, "n": 2}
        self.assertEqual(raw_post(self.server, COMPLETIONS, two)[0], 503)
        # One place is left: one choice fits, and gives its place back when answered.
        for _ in range(3):
            one = {"prompt": "one", "max_tokens": 1}
            self.assertEqual(raw_post(self.server, COMPLETIONS, one)[0], 200)
        stream = {"prompt": "one", "max_tokens": 3, "stream": True}
        self.assertEqual(raw_post(self.server, COMPLETIONS, stream)[0], 200)
        self.assertEqual(raw_post(self.server, COMPLETIONS, stream)[0], 200)
        responses = {"model": "m", "input": "one", "max_output_tokens": 3, "stream": True}
        for _ in range(2):
            self.assertEqual(raw_post(self.server, "/v1/responses", responses)[0], 200)
        let_go(self.server, conn, "held")
        self.assertEqual(raw_post(self.server, COMPLETIONS, two)[0], 200)
        self.assertEqual(rejections(self.server)["max_num_queued_reqs"], 1)

    def test_a_stream_its_client_left_gives_its_place_back(self) -> None:
        self.server.clear(metrics=True)
        conn = hold(self, self.server, {"prompt": "held", "max_tokens": 1}, HELD)
        until(lambda: running(self.server) == 1)
        # Hundreds of KiB due at once: the mock is still writing when the client leaves, so
        # a write fails and the HTTP server closes the body.
        stream = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        body = {"prompt": "long", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        stream.request("POST", COMPLETIONS, json.dumps(body), {"Content-Type": "application/json"})
        response = stream.getresponse()
        self.assertEqual(response.status, 200)
        response.close()
        stream.close()
        probe = {"prompt": "probe", "max_tokens": 1}
        until(lambda: raw_post(self.server, COMPLETIONS, probe)[0] == 200)
        let_go(self.server, conn, "held")

    def test_a_background_response_gives_its_place_back(self) -> None:
        self.server.clear(metrics=True)
        body = {"model": "m", "input": "hi", "background": True, "store": True}
        status, _, data = raw_post(self.server, "/v1/responses", body)
        self.assertEqual(status, 200)
        path = "/v1/responses/" + json.loads(data)["id"]
        until(lambda: json.loads(raw_request(self.server, "GET", path)[2])["status"] == "completed")
        conn = hold(self, self.server, {"prompt": "held", "max_tokens": 1}, HELD)
        until(lambda: running(self.server) == 1)
        # The second place is free again once the generation in the background let go of it.
        probe = {"prompt": "probe", "max_tokens": 1}
        until(lambda: raw_post(self.server, COMPLETIONS, probe)[0] == 200)
        let_go(self.server, conn, "held")


class QueuedTokensTest(ServerTestCase):
    PROMPT = "of" + " of" * 59

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, max_num_queued_tokens=60)

    def test_a_prefill_backlog_refuses_until_it_clears(self) -> None:
        self.assertEqual(TOKENIZER.count(self.PROMPT), 60)
        self.server.clear(metrics=True)
        conn = hold(self, self.server, {"prompt": self.PROMPT, "max_tokens": 1}, HELD)
        until(lambda: running(self.server) == 1)
        status, _, data = raw_post(self.server, COMPLETIONS, {"prompt": "a", "max_tokens": 1})
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(data)["error"]["message"], BACKLOG)
        self.assertEqual(rejections(self.server),
                         {"max_num_queued_reqs": 0, "max_num_queued_tokens": 1})  # fmt: skip
        let_go(self.server, conn, self.PROMPT)
        # Past its first token a request no longer counts, however long it still runs.
        stream = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        self.addCleanup(stream.close)
        body = {"prompt": self.PROMPT, "max_tokens": 2, "ignore_eos": True, "stream": True}
        stream.request("POST", COMPLETIONS, json.dumps(body),
                       {"Content-Type": "application/json", "X-Mocksup-ITL": "30"})  # fmt: skip
        response = stream.getresponse()
        while not response.readline().startswith(b"data: {"):
            pass  # the first token was sent
        status, _, _ = raw_post(self.server, COMPLETIONS, {"prompt": "a", "max_tokens": 1})
        self.assertEqual(status, 200)
        self.assertEqual(rejections(self.server)["max_num_queued_tokens"], 1)
