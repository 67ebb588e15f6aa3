"""Fuzz every JSON route of the vLLM mock with damaged JSON, streamed and not.

The routes are the ``POST`` routes the mock lists in its ``/openapi.json`` (its own route
table), each with one or more seed bodies; chat requests also carry structured-output
constraints (``response_format``, ``structured_outputs`` with a schema, a regex, a grammar,
choices) and tool choices, whose sizes and bounds the damage turns hostile. Each case is a
seed with values of the wrong type or range, keys removed or added, deep nesting, odd
Unicode, huge numbers. Every answer must come within the socket timeout and be a 200 or the
4xx vLLM gives (never a 5xx: vLLM validates before it generates); a streamed 200 must be
well-framed server-sent events that end as the route's stream ends. After each batch the
child must be alive, its RSS bounded, and its journal must hold exactly the requests sent so
far (path, size, status, in order), and a canary request must be answered.
"""

from __future__ import annotations

import copy
import json
import random
import time
import unittest
import urllib.request
from typing import Any

from mocksup.vllm import MockVLLMServer
from tests.fuzz.support import Checks, Exchange, rng_for, send_raw
from tests.support import ProcessTestCase

CASES = 2000
BATCH = 200
#: What the journal holds: every request of the run (so each earlier one must still be
#: there after every batch).
JOURNAL = 10_000

USER = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
]
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "string", "minLength": 1}},
    "required": ["a"],
}
TOOL = {"type": "function", "function": {"name": "add", "parameters": PARAMETERS}}
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 20, "pattern": "^[a-z]+$"},
        "tags": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9},
            "minItems": 1,
            "maxItems": 3,
            "uniqueItems": True,
        },
        "kind": {"enum": ["a", "b", 3]},
        "size": {"type": "number", "multipleOf": 0.5, "maximum": 10},
        "more": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "null"}},
    },
    "required": ["name", "tags"],
}
CHAT: dict[str, Any] = {
    "model": "mock-model",
    "messages": USER,
    "max_tokens": 4,
    "temperature": 0.5,
    "top_p": 0.9,
    "n": 2,
    "stop": ["zz"],
    "logprobs": True,
    "top_logprobs": 2,
    "seed": 7,
    "tools": [TOOL],
    "tool_choice": "auto",
    "stream_options": {"include_usage": True},
    "stream": False,
}
SHORT_CHAT = {"model": "mock-model", "messages": USER, "max_tokens": 12, "seed": 3}

#: Seed bodies by route; a route may have several.
SEEDS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**SHORT_CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA}}}),
    ("/v1/chat/completions", {"model": "mock-model", "messages": USER,  # no max_tokens
                              "structured_outputs": {"json": SCHEMA}}),
    ("/v1/chat/completions", {**SHORT_CHAT, "structured_outputs": {"regex": r"[a-z]{2,5}-\d{3}"}}),
    ("/v1/chat/completions", {**SHORT_CHAT, "structured_outputs": {
        "grammar": 'root ::= "id-" num\nnum ::= [1-9] [0-9]{0,3}'}}),
    ("/v1/chat/completions", {**SHORT_CHAT, "structured_outputs": {"choice": ["yes", "no"]}}),
    ("/v1/chat/completions", {**SHORT_CHAT, "response_format": {"type": "json_object"}}),
    ("/v1/chat/completions", {**SHORT_CHAT, "tools": [TOOL], "tool_choice": "required"}),
    ("/v1/chat/completions", {**SHORT_CHAT, "tools": [TOOL], "tool_choice": {
        "type": "function", "function": {"name": "add"}}}),
    ("/v1/completions", {
        "model": "mock-model", "prompt": ["Once upon", "a time"], "max_tokens": 3, "echo": True,
        "logprobs": 2, "n": 1, "stream": False, "ignore_eos": True, "min_tokens": 1,
    }),
    ("/v1/completions", {"model": "mock-model", "prompt": "Code:", "max_tokens": 8,
                         "structured_outputs": {"regex": r"[A-Z]{3}\d{2}"}}),
    ("/v1/embeddings", {"model": "mock-model", "input": ["a b", "c"], "dimensions": 8}),
    ("/tokenize", {"model": "mock-model", "prompt": "hello world", "return_token_strs": True}),
    ("/detokenize", {"model": "mock-model", "tokens": [1, 2, 3]}),
    ("/v1/responses", {
        "model": "mock-model", "input": "Say hi", "instructions": "Be brief.",
        "max_output_tokens": 6, "temperature": 0.5, "store": False, "stream": False,
        "tools": [{"type": "function", "name": "add",
                   "parameters": PARAMETERS}],
        "text": {"format": {"type": "json_schema", "name": "thing", "schema": SCHEMA}},
    }),
    ("/v1/messages", {
        "model": "mock-model", "max_tokens": 6, "system": "Be brief.", "stream": False,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
        "tools": [{"name": "add", "input_schema": PARAMETERS}],
        "tool_choice": {"type": "auto"}, "temperature": 0.5, "stop_sequences": ["zz"],
    }),
    ("/v1/messages/count_tokens", {
        "model": "mock-model", "system": "Be brief.",
        "messages": [{"role": "user", "content": "How many tokens is this?"}],
        "tools": [{"name": "add", "input_schema": PARAMETERS}],
    }),
    ("/v1/chat/completions/batch", {
        "model": "mock-model", "max_tokens": 3, "seed": 1,
        "messages": [[{"role": "user", "content": "One"}], [{"role": "user", "content": "Two"}]],
    }),
    ("/invocations", {**SHORT_CHAT, "structured_outputs": {"choice": ["up", "down"]}}),
    ("/invocations", {"model": "mock-model", "prompt": "Hello", "max_tokens": 3}),
    ("/v1/load_lora_adapter", {"lora_name": "fuzz-lora", "lora_path": "/adapters/fuzz"}),
    ("/v1/unload_lora_adapter", {"lora_name": "fuzz-lora"}),
    ("/v1/responses/{response_id}/cancel", {}),
    ("/ping", {}),
]  # fmt: skip

ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**6, 10**9, 10**30, 1e308,
    -1e308, 0.5, "", "x", "\u0000", "\U0001f600", "mock-model", "a" * 5000, [], [None], [[]],
    [1.5], [{}], {}, {"type": "text"}, {"role": "user"}, [1] * 1000, "auto", "none",
    "required", {"type": "string", "minLength": 10**7}, {"type": "array", "minItems": 10**6},
    "(a{1000}){1000}", "(){100000000}",
]  # fmt: skip


#: Keywords whose values decide how much a constraint generates, and values that ask for
#: much (or for nothing, many times over).
SIZES = frozenset({"minLength", "maxLength", "minItems", "maxItems", "minProperties",
                   "maxProperties", "minimum", "maximum", "multipleOf", "pattern", "enum",
                   "const", "regex", "grammar", "choice", "items"})  # fmt: skip
HOSTILE: list[Any] = [
    10**6, 10**7, 2**63, 1e308, 1e-300, -1, "x", r"a{1000000}", r"(a{1000}){1000}",
    r"(){100000000}", r"(a|a)*(a|a)*b", "root ::= (\"\"){100000000}", ["y" * 100_000],
    {"type": "array", "minItems": 10**6, "items": {"type": "array", "minItems": 10**3}},
    {"type": "object", "minProperties": 10**6}, {"const": "z" * 100_000},
]  # fmt: skip


def damaged(rng: random.Random, body: dict[str, Any]) -> bytes:
    doc = copy.deepcopy(body)
    if rng.random() < 0.5:
        doc["stream"] = True
    for _ in range(rng.randrange(1, 4)):
        choice = rng.randrange(7)
        if choice == 6:
            _hostile(rng, doc)
            continue
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


def _hostile(rng: random.Random, doc: Any) -> None:
    """Set one size keyword of a constraint (a schema, a pattern, choices) to a hostile value."""
    found: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in pairs:
            if key in SIZES:
                found.append((node, key))
            if isinstance(value, (dict, list)):
                stack.append(value)
    if found:
        parent, key = rng.choice(found)
        parent[key] = copy.deepcopy(rng.choice(HOSTILE))


def _replace(rng: random.Random, doc: Any) -> None:
    """Replace one value somewhere in ``doc`` (at any depth) with an odd one."""
    node, key = doc, None
    parent: Any = None
    while isinstance(node, (dict, list)) and node and (key is None or rng.random() < 0.6):
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        parent, node = node, node[key]
    if parent is not None:
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))


#: The events that end a stream of the Responses and Messages APIs (``None``: ``[DONE]``).
_LAST_EVENTS = {
    "/v1/responses": {"response.completed", "response.incomplete", "response.failed", "error"},
    "/v1/messages": {"message_stop", "error"},
}


def check_stream(case: unittest.TestCase, path: str, exchange: Exchange) -> None:
    """A streamed 200 is server-sent events of JSON objects ending as the route's end:
    ``data: [DONE]`` for the OpenAI routes, a terminal event for Responses and Messages."""
    for answer in exchange.answers:
        if answer.status != 200 or "text/event-stream" not in answer.headers.get(
            "content-type", ""
        ):
            continue
        events = [e for e in answer.body.decode().split("\n\n") if e]
        case.assertTrue(events, exchange.raw[:200])
        kinds = []
        for event in events:
            lines = dict(line.split(": ", 1) for line in event.split("\n"))
            case.assertLessEqual(set(lines), {"event", "data"}, event[:100])
            kinds.append(lines.get("event"))
            if lines["data"] != "[DONE]":
                case.assertIsInstance(json.loads(lines["data"]), dict)
        if path in _LAST_EVENTS:
            case.assertIn(kinds[-1], _LAST_EVENTS[path], exchange.raw[:300])
        else:
            case.assertEqual(events[-1], "data: [DONE]", exchange.raw[:300])


class VLLMJSONFuzzTest(ProcessTestCase):
    server: MockVLLMServer
    canary_tokens: list[int]
    routes: set[str]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = MockVLLMServer(
            port=0,
            output_tokens=(1, 4),
            journal_limit=JOURNAL,
            enable_auto_tool_choice=True,  # else vLLM refuses tool_choice="auto"
            tool_call_parser="hermes",
            enable_lora=True,
            allow_runtime_lora_updating=True,  # the LoRA routes
        )
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        with urllib.request.urlopen(cls.server.url + "/openapi.json", timeout=10) as answer:
            paths = json.load(answer)["paths"]
        cls.routes = {path for path, operations in paths.items() if "post" in operations}

    def setUp(self) -> None:
        super().setUp()
        # What the journal held already (the route table's request), then every request
        # sent: path, body size, status.
        self.sent = [(e.path, e.body_size, e.status) for e in self.server.requests()]

    def test_every_route_the_mock_serves_has_seeds(self) -> None:
        seeded = {path for path, _ in SEEDS}
        self.assertEqual(seeded, self.routes)
        expected = {"/v1/chat/completions", "/v1/responses", "/v1/messages", "/invocations",
                    "/v1/messages/count_tokens", "/v1/chat/completions/batch",
                    "/v1/load_lora_adapter", "/v1/unload_lora_adapter"}  # fmt: skip
        self.assertLessEqual(expected, self.routes)

    def canary(self) -> None:
        # Exactly what was sent, in order, is in the journal: nothing lost, nothing extra.
        entries = self.server.requests()
        self.assertEqual([(e.path, e.body_size, e.status) for e in entries], self.sent)
        self.assertEqual([e.index for e in entries], list(range(len(entries))))
        raw = self.request("/tokenize", b'{"prompt": "a b"}')
        self.assertEqual(raw.answers[0].status, 200)
        self.assertEqual(json.loads(raw.answers[0].body)["tokens"], self.canary_tokens)

    def request(self, path: str, body: bytes) -> Exchange:
        target = path.replace("{response_id}", "resp_fuzz")
        head = (
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        exchange = send_raw(self.server.host, self.server.port, head + body, timeout=30)
        if exchange.answers:
            self.sent.append((target, len(body), exchange.answers[0].status))
        return exchange

    def test_every_route_with_damaged_json(self) -> None:
        rng = rng_for("vllm-json")
        assert self.server.pid is not None
        checks = Checks(self, self.server.pid, frozenset())
        first = self.request("/tokenize", b'{"prompt": "a b"}').answers[0]
        self.canary_tokens = json.loads(first.body)["tokens"]
        slowest = 0.0
        for number in range(CASES):
            path, seed = rng.choice(SEEDS)
            started = time.monotonic()
            exchange = self.request(path, damaged(rng, seed))
            slowest = max(slowest, time.monotonic() - started)
            checks.answers(exchange)
            self.assertEqual(len(exchange.answers), 1, exchange.raw[:200])
            status = exchange.answers[0].status
            self.assertIn(status, (200, 400, 404, 413), exchange.answers[0].body[:300])
            check_stream(self, path, exchange)
            if number % BATCH == BATCH - 1:
                checks.alive(self.canary)
        checks.alive(self.canary)
        # Both kinds of answer happened: the damage is neither always fatal nor ignored.
        self.assertGreater(checks.statuses.get(200, 0), CASES // 20)
        self.assertGreater(checks.statuses.get(400, 0), CASES // 5)
        self.assertLess(slowest, 5.0, "one request took seconds: something is unbounded")


if __name__ == "__main__":
    unittest.main()
