"""Structured outputs cost what ``max_tokens`` lets through (issue 8): hostile schemas, regexes
and grammars answer at once, cut as vLLM cuts a constrained output at its limit, or refused
with vLLM's 400 when the mock would have to build more than its budget; the child keeps
serving, its memory flat.

Each request goes through the ``openai`` client with a 10 s timeout to a real child; before
the budget, ``minLength: 10**6`` took 11 s, ``10**7`` more than 120 s, ``minItems: 10**6``
14 s, and ``(a{1000}){1000}`` took the child to 1.9 GiB.
"""

from __future__ import annotations

import random
import time
import unittest
from typing import Any

import openai
import psutil

from mocksup.vllm import TOKENIZER, MockVLLMServer
from mocksup.vllm._generation.budget import Budget, Full
from mocksup.vllm._generation.json_schema import schema_value
from mocksup.vllm._generation.patterns import Unsatisfiable
from mocksup.vllm._generation.structured import json_text
from tests.vllm.support import ServerTestCase
from tests.vllm.test_structured_outputs import random_schema, with_refs

USER = [{"role": "user", "content": "Extract the data"}]
#: A hostile request answers within this (it took 0.01 to 0.1 s on a busy machine).
QUICK = 5.0

#: Schemas whose smallest document is huge, and what the start of the text looks like.
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "minLength 10**6": ({"type": "string", "minLength": 10**6}, r'"[A-Z][a-z]+( [a-z]+)* ?[a-z]*'),
    "minLength 10**7": ({"type": "string", "minLength": 10**7}, r'"[A-Z][a-z]+( [a-z]+)* ?[a-z]*'),
    "minItems 10**6": ({"type": "array", "minItems": 10**6}, r"\[.+, .+"),
    "minProperties 10**6": ({"type": "object", "minProperties": 10**6}, r'\{"[a-z]+_0": .+'),
    "nested arrays": (
        {"type": "array", "minItems": 1000, "items": {
            "type": "array", "minItems": 1000, "items": {"type": "array", "minItems": 1000}}},
        r"\[\[\[.+",
    ),
    "pattern a{10**6}": ({"type": "string", "pattern": "^a{1000000}$"}, r'"a+'),
    "pattern (a{1000}){1000}": ({"type": "string", "pattern": "^(a{1000}){1000}$"}, r'"a+'),
    "const of 10**6 characters": ({"const": "x" * 10**6}, r'"x+'),
    "enum of long strings": ({"enum": ["y" * 10**5, "z" * 10**5]}, r'"(y+|z+)'),
    "minItems of long strings": (
        {"type": "array", "minItems": 10**6, "items": {"type": "string", "minLength": 1000}},
        r'\["[A-Z][a-z ]+',
    ),
    "propertyNames minLength 10**6": (
        {"type": "object", "minProperties": 2, "propertyNames": {"minLength": 10**6}},
        r'\{"[A-Z][a-z ]+',
    ),
    "multipleOf over 10**300": (
        {"type": "integer", "minimum": 0, "maximum": 10**300, "multipleOf": 7}, r"\d+",
    ),
}  # fmt: skip


def _rss(server: MockVLLMServer) -> int:
    assert server.pid is not None
    return int(psutil.Process(server.pid).memory_info().rss)


class HostileSchemaTest(ServerTestCase):
    """The default context (4,096 tokens): every hostile schema is cut by the limit."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, tool_call_parser="hermes")

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.quick = openai.OpenAI(base_url=cls.server.base_url, api_key="EMPTY",
                                  max_retries=0, timeout=10)  # fmt: skip
        cls.addClassCleanup(cls.quick.close)

    def ask(self, schema: dict[str, Any], **extra: Any) -> tuple[Any, float]:
        start = time.monotonic()
        reply = self.quick.chat.completions.create(
            model="mock-model",
            messages=USER,  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            **extra,
        )
        return reply, time.monotonic() - start

    def assert_cut(self, reply: Any, tokens: int, start: str) -> None:
        choice = reply.choices[0]
        self.assertEqual(choice.finish_reason, "length")
        text = choice.message.content or ""
        self.assertEqual(len(TOKENIZER.encode(text)), tokens)
        self.assertEqual(reply.usage.completion_tokens, tokens)
        self.assertRegex(text, "^" + start)

    def test_hostile_schemas_are_cut_by_max_tokens_at_once(self) -> None:
        before = _rss(self.server)
        for name, (schema, start) in HOSTILE.items():
            with self.subTest(name):
                reply, took = self.ask(schema, max_tokens=16)
                self.assertLess(took, QUICK)
                self.assert_cut(reply, 16, start)
        self.assertLess(_rss(self.server) - before, 200 * 1024 * 1024)
        self.assertEqual(self.ask({"type": "integer"})[0].choices[0].finish_reason, "stop")

    def test_without_max_tokens_the_context_cuts_them(self) -> None:
        for name in ("minLength 10**7", "minItems 10**6", "minProperties 10**6", "nested arrays"):
            with self.subTest(name):
                schema, start = HOSTILE[name]
                reply, took = self.ask(schema)
                self.assertLess(took, QUICK)
                self.assert_cut(reply, 4096 - reply.usage.prompt_tokens, start)

    def test_a_stream_is_cut_the_same(self) -> None:
        schema = HOSTILE["minItems 10**6"][0]
        whole = self.ask(schema, max_tokens=40, seed=5)[0].choices[0].message.content
        stream = self.quick.chat.completions.create(
            model="mock-model", messages=USER, max_tokens=40, seed=5, stream=True,  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )  # fmt: skip
        chunks = [c.choices[0] for c in stream if c.choices]
        self.assertEqual("".join(c.delta.content or "" for c in chunks), whole)
        self.assertEqual(chunks[-1].finish_reason, "length")

    def test_tool_arguments_and_other_constraints_are_cut_too(self) -> None:
        tool = {"type": "function", "function": {"name": "save", "parameters": {
            "type": "object", "properties": {"text": {"type": "string", "minLength": 10**7}},
            "required": ["text"]}}}  # fmt: skip
        start = time.monotonic()
        reply = self.quick.chat.completions.create(
            model="mock-model", messages=USER, max_tokens=16, tools=[tool],  # type: ignore[list-item, arg-type]
            tool_choice={"type": "function", "function": {"name": "save"}},
        )  # fmt: skip
        self.assertLess(time.monotonic() - start, QUICK)
        self.assertEqual(reply.choices[0].finish_reason, "length")
        self.assertEqual(reply.usage.completion_tokens if reply.usage else None, 16)
        for constraint in (
            {"regex": "a{1000000}"},
            {"regex": "(a{1000}){1000}"},
            {"grammar": 'root ::= "x"{1000000}'},
            {"choice": ["y" * 10**6]},
        ):
            with self.subTest(constraint=constraint):
                start = time.monotonic()
                completion = self.quick.completions.create(
                    model="mock-model", prompt="code:", max_tokens=16,
                    extra_body={"structured_outputs": constraint},
                )  # fmt: skip
                self.assertLess(time.monotonic() - start, QUICK)
                self.assertEqual(completion.choices[0].finish_reason, "length")
                self.assertRegex(completion.choices[0].text, r"^(a|x|y){16}$")


class RefusedTest(ServerTestCase):
    """A context of 131,072 tokens would let through more than the mock builds (100,000
    characters): those constraints get vLLM's 400, at once; and so does a constraint that
    needs more work than the mock's steps, however short its text."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, max_model_len=131072)

    def refused(self, body: dict[str, Any], prefix: str) -> str:
        start = time.monotonic()
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.chat.completions.create(model="mock-model", messages=USER,  # type: ignore[arg-type]
                                                timeout=10, extra_body=body)  # fmt: skip
        self.assertLess(time.monotonic() - start, QUICK)
        error: dict[str, Any] = caught.exception.body  # type: ignore[assignment]
        self.assertEqual(error["type"], "BadRequestError")
        self.assertTrue(error["message"].startswith(prefix), error["message"])
        return str(error["message"])

    def test_past_the_mocks_characters(self) -> None:
        before = _rss(self.server)
        for name in ("minLength 10**7", "minItems 10**6", "const of 10**6 characters"):
            with self.subTest(name):
                message = self.refused(
                    {"structured_outputs": {"json": HOSTILE[name][0]}},
                    "Failed to transform json schema into a grammar: ",
                )
                self.assertIn("longer than the mock's 100000 characters", message)
        message = self.refused({"structured_outputs": {"regex": "(a{1000}){1000}"}},
                               "Failed to transform regex into a grammar: ")  # fmt: skip
        self.assertIn("longer than the mock's 100000 characters", message)
        self.assertLess(_rss(self.server) - before, 200 * 1024 * 1024)

    def test_past_the_mocks_work(self) -> None:
        cases = [
            ({"structured_outputs": {"regex": "(){100000000}"}}, "regex"),
            ({"structured_outputs": {"json": {
                "type": "array", "minItems": 10**6,
                "items": {"oneOf": [{"const": i} for i in range(2000)]}}}}, "json schema"),
        ]  # fmt: skip
        for body, kind in cases:
            with self.subTest(kind):
                message = self.refused(body, f"Failed to transform {kind} into a grammar: ")
                self.assertIn("more than the mock's 100000 steps of work", message)
        self.refused(
            {"structured_outputs": {"json": {"type": "number", "maximum": 1e300,
                                             "multipleOf": 1e-300}}},
            "Failed to transform json schema into a grammar: multipleOf is too small",
        )  # fmt: skip
        chain = "\n".join(f'r{i} ::= r{i + 1} "x"' for i in range(3000))
        self.refused({"structured_outputs": {"grammar": f'root ::= r0\n{chain}\nr3000 ::= "."'}},
                     "Invalid grammar specification.")  # fmt: skip
        reply = self.client.chat.completions.create(model="mock-model", messages=USER,  # type: ignore[arg-type]
                                                    max_tokens=3)  # fmt: skip
        self.assertEqual(reply.usage.completion_tokens if reply.usage else None, 3)


class PrefixTest(unittest.TestCase):
    """In-process: a document cut by its budget knows exactly how much of its text begins a
    conforming document (what the limit may show)."""

    def test_the_prefix_ends_where_only_closers_follow(self) -> None:
        rng = random.Random(8)
        schemas = [random_schema(rng) for _ in range(150)] + [with_refs(rng) for _ in range(30)]
        schemas += [schema for schema, _ in HOSTILE.values()]
        cut = 0
        for i, schema in enumerate(schemas):
            for chars in (1, 7, 40, 300):
                with self.subTest(i=i, chars=chars):
                    try:
                        schema_value(schema, random.Random(i), Budget(chars))
                        continue  # short enough
                    except Unsatisfiable:
                        continue  # this seed found none (the mock draws again with another)
                    except Full as full:
                        text, prefix = json_text(full.partial), full.prefix
                    cut += 1
                    self.assertGreater(prefix, chars)
                    self.assertRegex(text[prefix:], r'^"?(: null)?[\]}]*$', text[:prefix][-40:])
        self.assertGreater(cut, 200)


if __name__ == "__main__":
    unittest.main()
