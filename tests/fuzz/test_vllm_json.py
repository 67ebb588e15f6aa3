"""Fuzz the vLLM mock's API routes with damaged JSON: every route, streamed and not.

Each case is a valid request with values of the wrong type or range, keys removed or added,
deep nesting, odd Unicode, huge numbers. Every answer must be a 200 or the 4xx vLLM gives
(never a 5xx: vLLM validates before it generates), a streamed 200 must be well-framed
server-sent events that end in ``[DONE]``, and after each batch the child must be alive,
its RSS bounded, its journal readable, and a canary request answered.
"""

from __future__ import annotations

import copy
import json
import random
import unittest
from typing import Any

from mocksup.vllm import MockVLLMServer
from tests.fuzz.support import Checks, Exchange, rng_for, send_raw
from tests.support import ProcessTestCase

CASES = 1500
BATCH = 150

ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "mock-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
        ],
        "max_tokens": 4,
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 2,
        "stop": ["zz"],
        "logprobs": True,
        "top_logprobs": 2,
        "seed": 7,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "add",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"type": "integer"}},
                        "required": ["a"],
                    },
                },
            }
        ],
        "tool_choice": "auto",
        "stream_options": {"include_usage": True},
        "stream": False,
    },
    "/v1/completions": {
        "model": "mock-model",
        "prompt": ["Once upon", "a time"],
        "max_tokens": 3,
        "echo": True,
        "logprobs": 2,
        "n": 1,
        "stream": False,
        "ignore_eos": True,
        "min_tokens": 1,
    },
    "/v1/embeddings": {"model": "mock-model", "input": ["a b", "c"], "dimensions": 8},
    "/tokenize": {"model": "mock-model", "prompt": "hello world", "return_token_strs": True},
    "/detokenize": {"model": "mock-model", "tokens": [1, 2, 3]},
}

ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 0.5,
    "", "x", "\u0000", "\U0001f600", "mock-model", "a" * 5000, [], [None], [[]], [1.5],
    [{}], {}, {"type": "text"}, {"role": "user"}, [1] * 1000, "auto", "none", "required",
]  # fmt: skip


def damaged(rng: random.Random, body: dict[str, Any]) -> bytes:
    doc = copy.deepcopy(body)
    if rng.random() < 0.5:
        doc["stream"] = True
    for _ in range(rng.randrange(1, 4)):
        choice = rng.randrange(6)
        if choice == 0 and doc:
            del doc[rng.choice(list(doc))]
        elif choice == 1:
            _replace(rng, doc)
        elif choice == 2:
            key = rng.choice(["extra", "request_id", "priority", "logit_bias", "response_format",
                              "structured_outputs", "chat_template_kwargs", "prompt_logprobs",
                              "truncate_prompt_tokens", "max_completion_tokens"])  # fmt: skip
            doc[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif choice == 3:  # nested arrays, spliced in after encoding (json.dumps recurses)
            doc[rng.choice(list(doc) or ["x"])] = f"__DEEP_{rng.choice([10, 100, 5000])}__"
        else:
            _replace(rng, doc)
    text = json.dumps(doc)
    for depth in (10, 100, 5000):
        text = text.replace(f'"__DEEP_{depth}__"', "[" * depth + '"deep"' + "]" * depth)
    if rng.random() < 0.05:
        text = text.replace('"hello', '"\\udc80hello').replace('"What', '"\\ud83dWhat')
    if rng.random() < 0.05:
        text = text.replace("0.5", "NaN").replace("0.9", "Infinity")
    if rng.random() < 0.03:
        text = text[: rng.randrange(len(text))]
    return text.encode()


def _replace(rng: random.Random, doc: Any) -> None:
    """Replace one value somewhere in ``doc`` (at any depth) with an odd one."""
    node, key = doc, None
    parent: Any = None
    while isinstance(node, (dict, list)) and node and (key is None or rng.random() < 0.6):
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        parent, node = node, node[key]
    if parent is not None:
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))


def check_stream(case: unittest.TestCase, exchange: Exchange) -> None:
    """A streamed 200 is ``data:`` events ending in ``[DONE]``, each a JSON object."""
    for answer in exchange.answers:
        if answer.status != 200 or "text/event-stream" not in answer.headers.get(
            "content-type", ""
        ):
            continue
        events = [e for e in answer.body.decode().split("\n\n") if e]
        case.assertTrue(events, exchange.raw[:200])
        case.assertEqual(events[-1], "data: [DONE]", exchange.raw[:300])
        for event in events[:-1]:
            case.assertTrue(event.startswith("data: "), event[:100])
            case.assertIsInstance(json.loads(event[6:]), dict)


class VLLMJSONFuzzTest(ProcessTestCase):
    server: MockVLLMServer
    canary_tokens: list[int]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = MockVLLMServer(
            port=0,
            output_tokens=(1, 4),
            journal_limit=200,
            enable_auto_tool_choice=True,  # else vLLM refuses tool_choice="auto"
            tool_call_parser="hermes",
        )
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()

    def canary(self) -> None:
        self.server.requests()  # the journal stays readable whatever it recorded
        raw = self.request("/tokenize", b'{"prompt": "a b"}')
        self.assertEqual(raw.answers[0].status, 200)
        self.assertEqual(json.loads(raw.answers[0].body)["tokens"], self.canary_tokens)

    def request(self, path: str, body: bytes) -> Exchange:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return send_raw(self.server.host, self.server.port, head + body, timeout=30)

    def test_every_route_with_damaged_json(self) -> None:
        rng = rng_for("vllm-json")
        assert self.server.pid is not None
        checks = Checks(self, self.server.pid, frozenset())
        first = self.request("/tokenize", b'{"prompt": "a b"}').answers[0]
        self.canary_tokens = json.loads(first.body)["tokens"]
        for number in range(CASES):
            path = rng.choice(list(ROUTES))
            exchange = self.request(path, damaged(rng, ROUTES[path]))
            checks.answers(exchange)
            self.assertEqual(len(exchange.answers), 1, exchange.raw[:200])
            status = exchange.answers[0].status
            self.assertIn(status, (200, 400, 404, 413), exchange.answers[0].body[:300])
            check_stream(self, exchange)
            if number % BATCH == BATCH - 1:
                checks.alive(self.canary)
        checks.alive(self.canary)
        # Both kinds of answer happened: the damage is neither always fatal nor ignored.
        self.assertGreater(checks.statuses.get(200, 0), CASES // 20)
        self.assertGreater(checks.statuses.get(400, 0), CASES // 5)


if __name__ == "__main__":
    unittest.main()
