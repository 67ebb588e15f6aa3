"""Structured outputs: text that conforms to the request's constraint, as vLLM's grammar makes it.

The constraint is vLLM's: ``response_format`` (``json_schema``, ``json_object``) overrides
the same field of ``structured_outputs`` (``json``, ``regex``, ``choice``, ``grammar``,
``json_object``), as ``structured_outputs_from_response_format`` merges them. Each kind is
compiled once (an LRU cache keyed by its text) into a maker of conforming text, and a first
text is drawn with a fixed seed: a constraint the mock cannot satisfy is refused there, at
validation, with vLLM's 400 (:func:`check_constraint`), never answered with text that does
not conform. The draft is then the constraint's text for the choice's seeded generator,
tokenized like any other text; ``max_tokens`` cuts it (finish reason ``length``), as it
cuts vLLM's constrained output. Structural tags are not generated (the text is free).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from typing import Any

from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._generation import Ask, Draft
from mocksup.vllm._generation.grammar import parse_grammar
from mocksup.vllm._generation.json_schema import schema_value
from mocksup.vllm._generation.patterns import Unsatisfiable, generate, parse_regex
from mocksup.vllm._sampling import GenerationRequest
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["Constraint", "check_constraint", "constraint_of", "draft", "json_text"]

#: A constraint: its kind and its specification as text (a schema as JSON).
Constraint = tuple[str, str]
_Maker = Callable[[random.Random], str]


def constraint_of(request: GenerationRequest) -> Constraint | None:
    """The request's structured-output constraint, ``None`` for free text."""
    response_format = request.response_format
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            return ("json_object", "")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
            return ("json", _schema_text(schema))
    options = request.structured_outputs
    if options is None:
        return None
    if options.json_schema is not None:
        return ("json", _schema_text(options.json_schema))
    if options.regex is not None:
        return ("regex", options.regex)
    if options.choice:
        return ("choice", json.dumps(options.choice))
    if options.grammar:
        return ("grammar", options.grammar)
    if options.json_object:
        return ("json_object", "")
    return None


def _schema_text(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def check_constraint(request: GenerationRequest) -> None:
    """Compile the request's constraint, refusing one the mock cannot satisfy.

    :raises VLLMValidationError: vLLM's 400 for the constraint's kind.
    """
    constraint = constraint_of(request)
    if constraint is not None:
        _compiled(*constraint)


@functools.lru_cache(maxsize=256)
def _compiled(kind: str, spec: str) -> tuple[_Maker, str]:
    # The maker and a first text, drawn with a fixed seed: the fallback should a request's
    # own draw fail (a pattern's retries running out), so a checked request always answers.
    try:
        maker = _maker(kind, spec)
        return maker, maker(random.Random(0))
    except (Unsatisfiable, RecursionError) as error:
        reason = str(error) or "too deeply nested"
        if kind == "grammar":
            raise VLLMValidationError("Invalid grammar specification.") from None
        what = "regex" if kind == "regex" else "json schema"
        raise VLLMValidationError(f"Failed to transform {what} into a grammar: {reason}") from None


def _maker(kind: str, spec: str) -> _Maker:
    if kind == "json":
        schema = json.loads(spec)
        return lambda rng: json_text(schema_value(schema, rng))
    if kind == "json_object":
        return lambda rng: json_text(_an_object(rng))
    if kind == "regex":
        import regex

        node, compiled = parse_regex(spec), regex.compile(spec)

        def matching(rng: random.Random) -> str:
            for _ in range(8):
                text = generate(node, rng)
                if compiled.fullmatch(text):
                    return text
            raise Unsatisfiable("the mock found no text the pattern matches")

        return matching
    if kind == "choice":
        choices = json.loads(spec)
        return lambda rng: str(choices[int(rng.random() * len(choices))])
    grammar = parse_grammar(spec)
    return grammar.text


def json_text(value: Any) -> str:
    """A JSON document as the mock writes one (``", "`` and ``": "`` separators)."""
    return json.dumps(value, ensure_ascii=False)


def _an_object(rng: random.Random) -> dict[str, Any]:
    # json_object: any object; a few keys of vocabulary words with plain values.
    schema = {"type": "object", "minProperties": 1, "maxProperties": 3,
              "properties": {"name": {"type": "string", "maxLength": 30},
                             "value": {"type": "integer"}, "valid": {"type": "boolean"}},
              "required": ["name"]}  # fmt: skip
    return dict(schema_value(schema, rng))


def draft(ask: Ask) -> Draft | None:
    """The constraint's text for this choice (``None`` without a constraint)."""
    request = ask.request
    if request.response_format is None and request.structured_outputs is None:
        return None  # the common case, without a call
    constraint = constraint_of(request)
    if constraint is None:
        return None
    maker, fallback = _compiled(*constraint)
    try:
        text = maker(ask.rng)
    except Unsatisfiable:
        text = fallback
    tokens = TOKENIZER.encode(text)
    if len(tokens) > ask.limit:
        return Draft(tokens[: ask.limit], "length")
    return Draft(tokens, "stop")
