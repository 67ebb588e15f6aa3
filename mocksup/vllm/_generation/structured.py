"""Structured outputs: text that conforms to the request's constraint, as vLLM's grammar makes it.

The constraint is vLLM's: ``response_format`` (``json_schema``, ``json_object``) overrides
the same field of ``structured_outputs`` (``json``, ``regex``, ``choice``, ``grammar``,
``json_object``), as ``structured_outputs_from_response_format`` merges them. Each kind is
compiled into a maker of conforming text (cached by its text when it is short), and a
first, short text is drawn with a fixed seed: a constraint the mock cannot satisfy is
refused there, at validation, with vLLM's 400 (:func:`check_constraint`), never answered
with text that does not conform. The draft is then the constraint's text for the choice's
seeded generator, tokenized like any other text; ``max_tokens`` cuts it (finish reason
``length``), as it cuts vLLM's constrained output. Structural tags are not generated (the
text is free).

A text is made within a :class:`~.budget.Budget`: the characters ``max_tokens`` (else the
context) lets through, so a constraint that asks for a million characters costs what the
limit shows, and the request's steps of work. A constraint past them is refused with the
same 400, at the latest when its choices are planned (before any token is sent).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from typing import Any

from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._generation import Ask, Draft
from mocksup.vllm._generation.budget import CUT_MARGIN, Budget, Full, OverBudget, chars_for
from mocksup.vllm._generation.grammar import parse_grammar
from mocksup.vllm._generation.json_schema import schema_value
from mocksup.vllm._generation.patterns import Unsatisfiable, generate
from mocksup.vllm._generation.regexes import compiled, parse_regex
from mocksup.vllm._limits import MAX_STRUCTURED_CHARS
from mocksup.vllm._sampling import GenerationRequest
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["Constraint", "check_constraint", "constraint_of", "draft", "fitted", "json_text"]

#: A constraint: its kind and its specification as text (a schema as JSON).
Constraint = tuple[str, str]
#: A maker of conforming text within a budget (raising :class:`~.budget.Full` with the
#: text so far, :class:`~.budget.OverBudget` or :class:`~.patterns.Unsatisfiable`).
_Maker = Callable[[random.Random, Budget], str]

#: Characters of the draw that checks a constraint at validation.
_CHECK_CHARS = 4096
#: What a constraint the mock cannot satisfy raises while it is compiled or drawn: an
#: :class:`~.patterns.Unsatisfiable` or :class:`~.budget.OverBudget` (both ValueErrors),
#: a keyword of the wrong type, nesting past the recursion limit.
_REFUSED = (ValueError, TypeError, LookupError, RecursionError)
#: Specifications at most this long are cached once checked; a longer one is compiled
#: for its request (the cache must not hold megabytes).
_CACHED_SPEC = 8192


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
    """Compile the request's constraint and draw a short text, refusing a constraint the
    mock cannot satisfy.

    :raises VLLMValidationError: vLLM's 400 for the constraint's kind.
    """
    constraint = constraint_of(request)
    if constraint is not None:
        _checked(*constraint)


def _checked(kind: str, spec: str, *, draw: bool = True) -> _Maker:
    # ``draw``: a short text too (a long specification checked at validation is compiled
    # again for its choices, not drawn again).
    if len(spec) <= _CACHED_SPEC:
        return _checked_cached(kind, spec)
    if draw:
        return _check(kind, spec)
    try:
        return _maker(kind, spec)
    except _REFUSED as error:
        raise _refusal(kind, error) from None


@functools.lru_cache(maxsize=64)
def _checked_cached(kind: str, spec: str) -> _Maker:
    return _check(kind, spec)


def _check(kind: str, spec: str) -> _Maker:
    try:
        maker = _maker(kind, spec)
        maker(random.Random(0), Budget(_CHECK_CHARS))
    except Full:
        pass  # longer than the check's draw: the choices' budgets decide
    except _REFUSED as error:
        raise _refusal(kind, error) from None
    return maker


def _refusal(kind: str, error: Exception) -> VLLMValidationError:
    if kind == "grammar":
        return VLLMValidationError("Invalid grammar specification.")
    what = {"regex": "regex", "choice": "choices"}.get(kind, "json schema")
    reason = str(error) or "too deeply nested"
    return VLLMValidationError(f"Failed to transform {what} into a grammar: {reason}")


def _maker(kind: str, spec: str) -> _Maker:
    if kind == "json":
        return _json_maker(json.loads(spec))
    if kind == "json_object":
        return lambda rng, budget: json_text(_an_object(rng, budget))
    if kind == "regex":
        return _regex_maker(spec)
    if kind == "choice":
        choices = json.loads(spec)
        return lambda rng, budget: str(choices[int(rng.random() * len(choices))])
    return parse_grammar(spec).text


def _json_maker(schema: Any) -> _Maker:
    def make(rng: random.Random, budget: Budget) -> str:
        try:
            return json_text(schema_value(schema, rng, budget))
        except Full as full:
            raise Full(json_text(full.partial)[: full.prefix]) from None

    return make


def _regex_maker(spec: str) -> _Maker:
    node = parse_regex(spec)

    def matches(text: str, budget: Budget) -> bool:
        engine = compiled(spec)  # only for a whole text: a cut one is not checked
        found = budget.work.regex(
            lambda timeout: engine.fullmatch(text, timeout=timeout, concurrent=True)
        )
        return found is not None

    def matching(rng: random.Random, budget: Budget) -> str:
        for _ in range(8):
            text = generate(node, rng, budget=budget)
            if matches(text, budget):
                return text
        raise Unsatisfiable("the mock found no text the pattern matches")

    return matching


def json_text(value: Any) -> str:
    """A JSON document as the mock writes one (``", "`` and ``": "`` separators)."""
    return json.dumps(value, ensure_ascii=False)


def _an_object(rng: random.Random, budget: Budget) -> dict[str, Any]:
    # json_object: any object; a few keys of vocabulary words with plain values.
    schema = {"type": "object", "minProperties": 1, "maxProperties": 3,
              "properties": {"name": {"type": "string", "maxLength": 30},
                             "value": {"type": "integer"}, "valid": {"type": "boolean"}},
              "required": ["name"]}  # fmt: skip
    return dict(schema_value(schema, rng, budget))


def draft(ask: Ask) -> Draft | None:
    """The constraint's text for this choice (``None`` without a constraint).

    :raises VLLMValidationError: vLLM's 400: the text needs more than the mock's budget.
    """
    request = ask.request
    if request.response_format is None and request.structured_outputs is None:
        return None  # the common case, without a call
    known = ask.work.memo.get("constraint")
    if known is None:  # the request's first choice: its other choices share the maker
        constraint = constraint_of(request)
        maker = None if constraint is None else _checked(*constraint, draw=False)
        known = ask.work.memo["constraint"] = (constraint, maker)
    constraint, maker = known
    if constraint is None or maker is None:
        return None
    kind = constraint[0]
    budget = chars_for(ask.limit, ask.work)
    try:
        text, whole = _drawn(maker, kind, ask.rng, budget), True
    except Full as full:
        text, whole = str(full.partial), False
    try:
        tokens, reason = fitted(text, budget, ask.limit, whole=whole)
    except OverBudget as error:
        raise _refusal(kind, error) from None
    return Draft(tokens, reason)


def _drawn(maker: _Maker, kind: str, rng: random.Random, budget: Budget) -> str:
    try:
        return maker(rng, budget)
    except Unsatisfiable:
        pass  # this seed's draws ran out: the fixed seed's, as at validation
    except _REFUSED as error:
        raise _refusal(kind, error) from None
    try:
        return maker(random.Random(0), budget)
    except _REFUSED as error:
        raise _refusal(kind, error) from None


def fitted(text: str, budget: Budget, limit: int, *, whole: bool) -> tuple[list[int], str]:
    """The tokens of ``text`` within ``limit`` tokens, and the finish reason.

    :param whole: ``text`` is a whole conforming text; else it is a prefix of one, which
        the limit must cut within it (with :data:`~.budget.CUT_MARGIN` characters to spare).
    :raises OverBudget: the prefix (at most the budget's characters) ends before the limit
        does: the text would be longer than the mock builds.
    """
    budget.work.light(min(len(text), budget.chars))  # the tokenizer's time
    if whole and len(text) <= budget.chars:
        tokens = TOKENIZER.encode(text)
        return (tokens[:limit], "length") if len(tokens) > limit else (tokens, "stop")
    text = text[: budget.chars]
    tokens = TOKENIZER.encode(text)[: limit + 1]
    shown = sum(len(TOKENIZER.token_bytes(token)) for token in tokens[:limit])
    if len(tokens) <= limit or shown > len(text) - CUT_MARGIN:
        raise OverBudget(
            f"the text would be longer than the mock's {MAX_STRUCTURED_CHARS} characters"
        )
    return tokens[:limit], "length"
