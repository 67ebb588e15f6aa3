"""The rules vLLM applies to a generation request's parameters before it runs.

vLLM checks them in three places, in this order: building ``SamplingParams`` (``logit_bias``
keys to token ids), ``SamplingParams._verify_args`` (ranges) and, in the engine's input
processor, ``SamplingParams.verify`` (against the model: ``--max-logprobs``, the vocabulary,
structured-output constraints). :func:`check_sampling` applies the same rules in the same
order with vLLM's wording, parameter and value; every failure is a
:class:`~._errors.VLLMValidationError`, answered 400.
"""

from __future__ import annotations

import json
import math
from typing import Any

import regex

from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._generation.patterns import Unsatisfiable
from mocksup.vllm._generation.regexes import TooLarge, compiled, parse_regex
from mocksup.vllm._generation.structured import check_constraint
from mocksup.vllm._sampling import GenerationRequest, StructuredOutputs
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["check_prompt_ids", "check_sampling"]

#: vLLM's ``MAX_LOGPROB_TOKEN_IDS``.
MAX_LOGPROB_TOKEN_IDS = 128


def check_sampling(request: GenerationRequest, max_logprobs: int, max_n: int) -> None:
    """Apply vLLM's sampling-parameter rules to ``request``.

    :param max_logprobs: ``--max-logprobs`` (-1: the vocabulary size).
    :param max_n: ``VLLM_MAX_N_SEQUENCES``: the largest ``n``.
    :raises VLLMValidationError: the first rule broken, in vLLM's words.
    """
    # Rules about fields most requests leave out run only when the field is set.
    if request.logit_bias:
        _logit_bias_keys(request.logit_bias)
    _ranges(request, max_n)
    _lengths(request)
    if (
        request.logprob_token_ids is not None
        or request.prompt_logprobs is not None
        or request.logprobs_wanted is not None
    ):
        _logprobs(request, TOKENIZER.vocab_size if max_logprobs == -1 else max_logprobs)
    if request.logit_bias or request.stop_token_ids or request.allowed_token_ids is not None:
        _vocabulary(request)
    if request.structured_outputs is not None or request.response_format is not None:
        _structured_outputs(request.structured_outputs, request.response_format)
        check_constraint(request)


def check_prompt_ids(ids: list[int]) -> None:
    """A prompt given as token ids must stay within the vocabulary."""
    if not ids:
        return
    low, high = min(ids), max(ids)
    if low < 0:
        raise VLLMValidationError(f"Token id {low} is out of vocabulary")
    if high >= TOKENIZER.vocab_size:
        raise VLLMValidationError(f"Token id {high} is out of vocabulary")


def _logit_bias_keys(bias: dict[str, float] | None) -> None:
    if not bias:
        return
    invalid = []
    for key in bias:
        try:
            int(key)
        except ValueError:
            invalid.append(key)
    if invalid:
        raise VLLMValidationError(
            f"logit_bias contains key(s) that cannot be converted to integer token IDs: "
            f"{invalid!r}",
            parameter="logit_bias",
            value=invalid,
        )


def _ranges(request: GenerationRequest, max_n: int) -> None:
    n = request.choices
    if n < 1:
        raise VLLMValidationError(f"n must be at least 1, got {n}.")
    if n > max_n:
        raise VLLMValidationError(
            f"n must be at most {max_n}, got {n}. To increase this limit, set the "
            "VLLM_MAX_N_SEQUENCES environment variable."
        )
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None and not -2.0 <= value <= 2.0:
            raise VLLMValidationError(f"{name} must be in [-2, 2], got {float(value)}.")
    repetition = request.repetition_penalty
    if repetition is not None and not math.isfinite(repetition):
        raise VLLMValidationError(
            f"repetition_penalty must be a finite number, got {float(repetition)}."
        )
    if repetition is not None and repetition <= 0.0:
        raise VLLMValidationError(
            f"repetition_penalty must be greater than zero, got {float(repetition)}."
        )
    _temperature_and_top_p(request)
    if request.top_k is not None and request.top_k < -1:
        raise VLLMValidationError(f"top_k must be 0 (disable), or at least 1, got {request.top_k}.")
    if request.min_p is not None and not 0.0 <= request.min_p <= 1.0:
        raise VLLMValidationError(f"min_p must be in [0, 1], got {float(request.min_p)}.")


def _temperature_and_top_p(request: GenerationRequest) -> None:
    temperature = 1.0 if request.temperature is None else float(request.temperature)
    problem = None
    if not math.isfinite(temperature):
        problem = f"temperature must be a finite number, got {temperature}."
    elif temperature < 0.0:
        problem = f"temperature must be non-negative, got {temperature}."
    elif temperature > 2.0:
        problem = f"temperature must be in [0, 2], got {temperature}."
    if problem:
        raise VLLMValidationError(problem, parameter="temperature", value=temperature)
    top_p = 1.0 if request.top_p is None else float(request.top_p)
    if not 0.0 < top_p <= 1.0:
        raise VLLMValidationError(
            f"top_p must be in (0, 1], got {top_p}.", parameter="top_p", value=top_p
        )


def _lengths(request: GenerationRequest) -> None:
    wanted = request.max_new
    if wanted is not None and wanted < 1:
        raise VLLMValidationError(
            f"max_tokens must be at least 1, got {wanted}.", parameter="max_tokens", value=wanted
        )
    if request.min_tokens < 0:
        raise VLLMValidationError(
            f"min_tokens must be greater than or equal to 0, got {request.min_tokens}."
        )
    if wanted is not None and request.min_tokens > wanted:
        raise VLLMValidationError(
            f"min_tokens must be less than or equal to max_tokens={wanted}, "
            f"got {request.min_tokens}."
        )
    if any(not s for s in request.stop_list):
        raise VLLMValidationError("stop cannot contain an empty string.")
    if any(not word for word in request.bad_words):
        raise VLLMValidationError(
            f"bad_words cannot contain an empty string. Got bad_words={request.bad_words}"
        )


def _logprobs(request: GenerationRequest, allowed: int) -> None:
    vocabulary = TOKENIZER.vocab_size
    ids = request.logprob_token_ids
    if ids is not None:
        if len(ids) > MAX_LOGPROB_TOKEN_IDS:
            raise VLLMValidationError(
                f"Requested logprob_token_ids of length {len(ids)}, which is greater than max "
                f"allowed: {MAX_LOGPROB_TOKEN_IDS}",
                parameter="logprob_token_ids",
                value=len(ids),
            )
        invalid = _out_of_vocabulary(ids)
        if invalid:
            raise VLLMValidationError(
                f"token_id(s) {invalid} in logprob_token_ids contain out-of-vocab token ids. "
                f"Vocabulary size: {vocabulary}",
                parameter="logprob_token_ids",
                value=invalid,
            )
    # With logprob_token_ids vLLM samples no top log-probabilities of its own.
    sampled = None if ids else request.logprobs_wanted
    for name, wanted, what in (
        ("logprobs", sampled, "sample"),
        ("prompt_logprobs", request.prompt_logprobs, "prompt"),
    ):
        if wanted is not None and wanted < 0 and wanted != -1:
            raise VLLMValidationError(
                f"{name} must be non-negative or -1, got {wanted}.", parameter=name, value=wanted
            )
        count = vocabulary if wanted == -1 else wanted
        if count and count > allowed:
            raise VLLMValidationError(
                f"Requested {what} logprobs of {count}, which is greater than max allowed: "
                f"{allowed}",
                parameter=name,
                value=count,
            )


def _out_of_vocabulary(ids: list[int]) -> list[int]:
    size = TOKENIZER.vocab_size
    return [token for token in ids if token < 0 or token >= size]


def _vocabulary(request: GenerationRequest) -> None:
    size = TOKENIZER.vocab_size
    bias = [int(key) for key in request.logit_bias or {}]
    for name, ids in (("logit_bias", bias), ("stop_token_ids", request.stop_token_ids or [])):
        invalid = _out_of_vocabulary(ids)
        if invalid:
            raise VLLMValidationError(
                f"token_id(s) {invalid} in {name} contain out-of-vocab token ids. "
                f"Vocabulary size: {size}",
                parameter=name,
                value=invalid,
            )
    allowed = request.allowed_token_ids
    if allowed is not None and not allowed:
        raise VLLMValidationError(
            "allowed_token_ids is not None and empty!", parameter="allowed_token_ids", value=[]
        )
    if allowed and _out_of_vocabulary(allowed):
        raise VLLMValidationError(
            "allowed_token_ids contains out-of-vocab token id!",
            parameter="allowed_token_ids",
            value=allowed,
        )


def _structured_outputs(options: StructuredOutputs | None, response_format: Any) -> None:
    # What vLLM refuses before a grammar backend runs, and what its backend cannot compile.
    if response_format is not None and isinstance(response_format, dict):
        spec = response_format.get("json_schema")
        if response_format.get("type") == "json_schema" and isinstance(spec, dict):
            _json_schema(spec.get("schema", {}))
    if options is None:
        return
    kinds = [v for v in (options.json_schema, options.regex, options.choice) if v is not None]
    if len(kinds) > 1:
        raise VLLMValidationError(
            "You can only use one kind of constraints for structured outputs "
            "('json', 'regex' or 'choice')."
        )
    if options.choice is not None and not options.choice:
        raise VLLMValidationError(f"Choice '{options.choice}' cannot be an empty list")
    for key, value in (("grammar", options.grammar), ("json", options.json_schema),
                       ("structural_tag", options.structural_tag)):  # fmt: skip
        if isinstance(value, str) and not value.strip():
            raise VLLMValidationError(f"structured_outputs.{key} cannot be an empty string")
    if options.regex is not None:
        _regex(options.regex)
    if options.json_schema is not None:
        schema: Any = options.json_schema
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError:
                raise VLLMValidationError("Invalid JSON grammar specification.") from None
        _json_schema(schema)
    if options.grammar and grammar_problem(options.grammar):
        raise VLLMValidationError("Invalid grammar specification.")


def _regex(pattern: str) -> None:
    if "\x00" in pattern:
        raise VLLMValidationError(
            "structured_outputs.regex must not contain a NUL character ('\\x00')"
        )
    try:
        try:
            compiled(pattern)  # bounded: the engine copies out counted repetitions
        except TooLarge:
            parse_regex(pattern)  # generated all the same, and sent if max_tokens cuts it
    except Unsatisfiable as error:
        raise VLLMValidationError(f"Failed to transform regex into a grammar: {error}") from None


def _json_schema(schema: Any) -> None:
    problem = schema_problem(schema, schema)
    if problem:
        raise VLLMValidationError(f"Failed to transform json schema into a grammar: {problem}")


_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "contains", "propertyNames", "if",
               "then", "else", "additionalItems", "unevaluatedProperties")  # fmt: skip
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def schema_problem(node: Any, root: Any, depth: int = 0) -> str | None:
    """What makes ``node`` no JSON schema a grammar compiler takes (``None``: nothing)."""
    if isinstance(node, bool):
        return None
    if not isinstance(node, dict) or depth > 64:
        return f"a schema must be an object or a boolean, not {node!r:.60}"
    kinds = node.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in _JSON_TYPES:
            return f"unknown type {kind!r:.60}"
    ref = node.get("$ref")
    if ref is not None and not _resolves(ref, root):
        return f"cannot resolve $ref {ref!r:.60}"
    children: list[Any] = [node[key] for key in _SUBSCHEMAS if key in node]
    for key in _SUBSCHEMA_MAPS:
        mapping = node.get(key, {})
        if not isinstance(mapping, dict):
            return f"{key} must be an object"
        children.extend(mapping.values())
    for key in _SUBSCHEMA_LISTS:
        listed = node.get(key, [])
        if not isinstance(listed, list):
            return f"{key} must be an array"
        children.extend(listed)
    for child in children:
        problem = schema_problem(child, root, depth + 1)
        if problem:
            return problem
    return None


def _resolves(ref: Any, root: Any) -> bool:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return False
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


_RULE = regex.compile(r"^\s*([A-Za-z_][\w-]*)\s*::=", regex.MULTILINE)
_LITERALS = regex.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\'(?:\\.|[^\'\\])*\'')
_NAME = regex.compile(r"[A-Za-z_][\w-]*")


def grammar_problem(grammar: str) -> str | None:
    """What makes an EBNF grammar fail to parse (an undefined rule, no ``root``); grammars
    in Lark's syntax (no ``::=``) are taken as they are."""
    if "::=" not in grammar:
        return None
    names = set(_RULE.findall(grammar))
    if "root" not in names:
        return "no root rule"
    bodies = _RULE.sub(" ", _LITERALS.sub(" ", grammar))
    for name in _NAME.findall(bodies):
        if name not in names:
            return f"undefined rule {name}"
    return None
