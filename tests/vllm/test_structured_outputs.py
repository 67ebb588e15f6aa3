"""Structured outputs conform: JSON valid against its schema, text matching its regex, one of
the choices, a derivation of the grammar (issue 14, item 3).

Hundreds of schemas and regexes are drawn by the generators below (fixed seeds) and sent
through the ``openai`` client; every answer is checked with ``jsonschema`` (formats included)
or Python's ``re``, not with the mock's own checker.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema

from mocksup.vllm import TOKENIZER, MockVLLMServer
from tests.vllm.support import ServerTestCase, raw_post, sse_events

USER = [{"role": "user", "content": "Extract the data"}]
CHAT = "/v1/chat/completions"
FORMATS = ("date-time", "date", "time", "email", "uuid", "uri", "ipv4", "ipv6", "hostname")


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A JSON Schema of the keywords apps use, nested up to three levels."""
    kinds = ["string", "integer", "number", "boolean", "enum", "const", "null"]
    if depth < 3:
        kinds += ["object", "object", "array", "anyOf", "oneOf"]
    kind = rng.choice(kinds)
    if kind == "string":
        schema: dict[str, Any] = {"type": "string"}
        extra = rng.random()
        if extra < 0.3:
            schema["format"] = rng.choice(FORMATS)
        elif extra < 0.5:
            schema["pattern"] = rng.choice([r"^[A-Z]{2}\d{3}$", r"^\+?[0-9]{7,12}$", r"[a-z]+"])
        elif extra < 0.8:
            low = rng.randint(0, 8)
            schema.update(minLength=low, maxLength=low + rng.randint(0, 20))
        return schema
    if kind in ("integer", "number"):
        schema = {"type": kind}
        if rng.random() < 0.6:
            low = rng.randint(-50, 50)
            schema.update(minimum=low, maximum=low + rng.randint(0, 100))
        elif rng.random() < 0.5:
            schema["exclusiveMinimum" if rng.random() < 0.5 else "exclusiveMaximum"] = 0
        if kind == "integer" and rng.random() < 0.3:
            schema["multipleOf"] = rng.choice([2, 5, 10])
        return schema
    if kind in {"boolean", "null"}:
        return {"type": kind}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", 1, 2.5, None, True], rng.randint(1, 4))}
    if kind == "const":
        return {"const": rng.choice(["fixed", 42, False])}
    if kind == "object":
        names = rng.sample(["id", "name", "city", "tags", "count", "when", "owner", "info"], 4)
        properties = {n: random_schema(rng, depth + 1) for n in names[: rng.randint(1, 4)]}
        schema = {
            "type": "object",
            "properties": properties,
            "required": [n for n in properties if rng.random() < 0.6],
        }
        if rng.random() < 0.5:
            schema["additionalProperties"] = False
        return schema
    if kind == "array":
        low = rng.randint(0, 2)
        schema = {"type": "array", "items": random_schema(rng, depth + 1), "minItems": low}
        if rng.random() < 0.7:
            schema["maxItems"] = low + rng.randint(0, 3)
        return schema
    branches = [
        {"type": "string", "maxLength": 5},
        {"type": "integer"},
        {"type": "boolean"},
        {"type": "object", "properties": {"x": random_schema(rng, depth + 1)}, "required": ["x"]},
    ]
    return {kind: rng.sample(branches, rng.randint(2, 3))}


def with_refs(rng: random.Random) -> dict[str, Any]:
    """A schema whose parts live in ``$defs`` (recursion included)."""
    item = random_schema(rng, 1)
    return {
        "$defs": {
            "item": item,
            "node": {
                "type": "object",
                "properties": {
                    "value": {"$ref": "#/$defs/item"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["value"],
            },
        },
        "type": "object",
        "properties": {
            "root": {"$ref": "#/$defs/node"},
            "items": {
                "type": "array",
                "items": {"$ref": "#/$defs/item"},
                "minItems": 1,
                "maxItems": 3,
            },
        },
        "required": ["root", "items"],
    }


def random_regex(rng: random.Random) -> str:
    """A regular expression of the constructs structured-output backends take."""
    atoms = [
        r"\d",
        r"\w",
        "[a-z]",
        "[A-F0-9]",
        "[^,;]",
        r"\.",
        "x",
        "(?:ab|cd)",
        "(?P<n>[0-9]{2})",
        "-",
        "@",
        r"[\s]",
        "(foo|bar|baz)",
        r"\u00e9",
        "[._%+-]",
    ]
    quantifiers = ["", "", "?", "*", "+", "{2}", "{1,3}", "{0,2}", "+?"]
    parts = [rng.choice(atoms) + rng.choice(quantifiers) for _ in range(rng.randint(1, 6))]
    # Group names must be distinct for Python's re (the checker here).
    body = "".join(p.replace("<n>", f"<n{i}>") for i, p in enumerate(parts))
    if rng.random() < 0.3:
        body = f"({body}|{rng.choice(atoms)})"
    return ("^" if rng.random() < 0.5 else "") + body + ("$" if rng.random() < 0.5 else "")


def is_sum(text: str) -> bool:
    """Whether ``text`` is ``term (("+"|"-") term)*`` with ``term: NUMBER | "(" sum ")"``,
    spaces allowed between tokens (the Lark grammar below, checked by hand)."""
    tokens = re.findall(r"\d+(?:\.\d+)?|[()+-]|\S", text)
    at = 0

    def term() -> bool:
        nonlocal at
        if at < len(tokens) and tokens[at][0].isdigit():
            at += 1
            return True
        if at < len(tokens) and tokens[at] == "(":
            at += 1
            if not expression() or at >= len(tokens) or tokens[at] != ")":
                return False
            at += 1
            return True
        return False

    def expression() -> bool:
        nonlocal at
        if not term():
            return False
        while at < len(tokens) and tokens[at] in "+-":
            at += 1
            if not term():
                return False
        return True

    return expression() and at == len(tokens)


class StructuredOutputTest(ServerTestCase):
    """Many constraints through one mock, each answer checked by an independent validator."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, seed=7)

    def schema_reply(self, schema: dict[str, Any], **extra: Any) -> Any:
        response = self.client.chat.completions.create(
            model="mock-model",
            messages=USER,  # type: ignore[arg-type]
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema},
            },
            **extra,
        )
        return response

    def test_hundreds_of_schemas_give_valid_documents(self) -> None:
        rng = random.Random(1234)
        schemas = [random_schema(rng) for _ in range(260)] + [with_refs(rng) for _ in range(40)]
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
        kinds: set[str] = set()
        for i, schema in enumerate(schemas):
            with self.subTest(i=i, schema=schema):
                reply = self.schema_reply(schema, seed=i)
                choice = reply.choices[0]
                self.assertEqual(choice.finish_reason, "stop")
                document = json.loads(choice.message.content or "")
                jsonschema.Draft202012Validator(schema, format_checker=checker).validate(document)
                kinds.add(type(document).__name__)
        self.assertLessEqual({"dict", "list", "str", "int"}, kinds)

    def test_formats_and_keywords_are_really_exercised(self) -> None:
        schema = {
            "type": "object",
            "additionalProperties": False,
            "required": [*FORMATS, "tags", "score", "choice"],
            "properties": {
                **{f: {"type": "string", "format": f} for f in FORMATS},
                "tags": {
                    "type": "array",
                    "items": {"enum": ["a", "b", "c"]},
                    "minItems": 2,
                    "maxItems": 3,
                    "uniqueItems": True,
                },
                "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "choice": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 7}]},
            },
        }
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
        for seed in range(20):
            document = json.loads(self.schema_reply(schema, seed=seed).choices[0].message.content)
            jsonschema.validate(document, schema, format_checker=checker)
            self.assertRegex(document["date-time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            self.assertRegex(document["time"], r"^\d\d:\d\d:\d\dZ$")
            self.assertRegex(document["uuid"], r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")
            self.assertEqual(len(set(document["tags"])), len(document["tags"]))

    def test_same_seed_same_document_and_counts_are_the_tokenizers(self) -> None:
        schema = with_refs(random.Random(5))
        first, again = (self.schema_reply(schema, seed=11) for _ in range(2))
        other = self.schema_reply(schema, seed=12)
        text = first.choices[0].message.content or ""
        self.assertEqual(text, again.choices[0].message.content)
        self.assertNotEqual(text, other.choices[0].message.content)
        assert first.usage is not None
        self.assertEqual(first.usage.completion_tokens, len(TOKENIZER.encode(text)))

    def test_a_stream_carries_the_same_text_one_token_per_chunk(self) -> None:
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        }
        body = {
            "messages": USER,
            "seed": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        }
        status, _, raw = raw_post(self.server, CHAT, body)
        self.assertEqual(status, 200)
        chunks = [json.loads(e) for e in sse_events(raw)[:-1]]
        pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
        whole = self.schema_reply(schema, seed=3).choices[0].message.content
        self.assertEqual("".join(pieces), whole)
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], len(pieces) - 1)

    def test_max_tokens_cuts_the_document_as_vllm_does(self) -> None:
        schema = {"type": "array", "items": {"type": "string"}, "minItems": 5}
        reply = self.schema_reply(schema, max_tokens=4)
        self.assertEqual(reply.choices[0].finish_reason, "length")
        self.assertEqual(reply.usage.completion_tokens if reply.usage else None, 4)

    def test_json_object_and_json_in_structured_outputs(self) -> None:
        for seed in range(10):
            reply = self.client.chat.completions.create(
                model="mock-model",
                messages=USER,  # type: ignore[arg-type]
                response_format={"type": "json_object"},
                seed=seed,
            )
            self.assertIsInstance(json.loads(reply.choices[0].message.content or ""), dict)
        schema = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
        for as_text in (False, True):
            completion = self.client.completions.create(
                model="mock-model",
                prompt="numbers:",
                max_tokens=100,
                extra_body={
                    "structured_outputs": {"json": json.dumps(schema) if as_text else schema}
                },
            )
            jsonschema.validate(json.loads(completion.choices[0].text), schema)

    def test_hundreds_of_regexes_are_matched_in_full(self) -> None:
        rng = random.Random(99)
        for i in range(300):
            pattern = random_regex(rng)
            with self.subTest(pattern=pattern):
                reply = self.client.completions.create(
                    model="mock-model",
                    prompt="code:",
                    seed=i,
                    max_tokens=500,
                    extra_body={"structured_outputs": {"regex": pattern}},
                )
                self.assertEqual(reply.choices[0].finish_reason, "stop")
                self.assertIsNotNone(re.fullmatch(pattern, reply.choices[0].text))

    def test_choice_picks_one_and_the_seed_decides(self) -> None:
        choices = ["positive", "negative", "neutral ☺"]
        seen = set()
        for seed in range(30):
            reply = self.client.chat.completions.create(
                model="mock-model",
                messages=USER,
                seed=seed,  # type: ignore[arg-type]
                extra_body={"structured_outputs": {"choice": choices}},
            )
            seen.add(reply.choices[0].message.content)
        self.assertEqual(seen, set(choices))

    def test_grammars_in_ebnf_and_lark(self) -> None:
        ebnf = (
            'root ::= select\nselect ::= "SELECT " col " FROM " tbl (" WHERE " col "=" num)?'
            '\ncol ::= "a" | "b"\ntbl ::= [a-z]{3}\nnum ::= [1-9] [0-9]*'
        )
        lark = (
            'start: expr\nexpr: term (("+" | "-") term)*\nterm: NUMBER | "(" expr ")"\n'
            "%import common.NUMBER\n%import common.WS\n%ignore WS"
        )
        sql = re.compile(r"SELECT [ab] FROM [a-z]{3}( WHERE [ab]=[1-9][0-9]*)?")
        for seed in range(25):
            text = self.grammar_text(ebnf, seed)
            self.assertIsNotNone(sql.fullmatch(text), text)
            text = self.grammar_text(lark, seed)
            self.assertTrue(is_sum(text), text)

    def grammar_text(self, grammar: str, seed: int) -> str:
        reply = self.client.completions.create(
            model="mock-model",
            prompt="q:",
            seed=seed,
            max_tokens=4000,
            extra_body={"structured_outputs": {"grammar": grammar}},
        )
        self.assertEqual(reply.choices[0].finish_reason, "stop")
        return reply.choices[0].text


class RefusalTest(ServerTestCase):
    """What the mock cannot satisfy gets vLLM's 400, never a nonconforming answer."""

    def refused(self, structured: dict[str, Any]) -> dict[str, Any]:
        status, _, data = raw_post(
            self.server, CHAT, {"messages": USER, "structured_outputs": structured}
        )
        self.assertEqual(status, 400, data)
        error: dict[str, Any] = json.loads(data)["error"]
        self.assertEqual(error["type"], "BadRequestError")
        return error

    def test_constructs_beyond_generation_are_refused_with_vllms_messages(self) -> None:
        for pattern in (r"(?=a)\w+", r"(a)\1", r"\bword\b", r"\p{L}+"):
            error = self.refused({"regex": pattern})
            self.assertTrue(error["message"].startswith("Failed to transform regex into a grammar"))
        for schema in (
            {"type": "integer", "minimum": 5, "maximum": 2},
            {"type": "string", "minLength": 9, "maxLength": 3},
            {"type": "object", "required": ["a"], "additionalProperties": False},
            {"allOf": [{"type": "string"}, {"type": "integer"}]},
            {"type": "number", "minimum": 1, "exclusiveMaximum": 0},
            {"not": {}},
        ):
            error = self.refused({"json": schema})
            self.assertTrue(
                error["message"].startswith("Failed to transform json schema into a grammar"),
                error,
            )
        for grammar in ('root ::= "a" b', "root ::= x\nx ::= x", "%declare X\nstart: X"):
            self.assertEqual(
                self.refused({"grammar": grammar})["message"], "Invalid grammar specification."
            )
        status, _, _ = raw_post(self.server, CHAT, {"messages": USER})
        self.assertEqual(status, 200)
