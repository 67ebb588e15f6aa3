"""Deterministic generation: what each choice of a request says, token by token.

The text of a choice depends only on the seed (the request's ``seed``, else the server's),
the prompt text and the choice's index, hashed with SHA-256 (never Python's ``hash()``, which is
salted per process), so the same request gives the same text and the same chunks in every
run and process. Generated text is made of vocabulary words, so it re-tokenizes to exactly
the tokens counted.

Every (prompt, choice) pair is one engine request, as vLLM v1 fans ``n > 1`` out into child
requests: each has its own id, prompt token count, finish reason, metrics and span.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from mocksup.vllm.protocol import APIError, ChatRequest, CompletionRequest
from mocksup.vllm.settings import ScriptReply
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["Choice", "Plan", "plan_request", "render_chat", "synthesize_arguments"]


@dataclass
class Choice:
    """One generated sequence (a vLLM engine request)."""

    index: int
    request_id: str
    prompt_tokens: int
    #: Generated token ids: ``len(tokens)`` is the completion token count.
    tokens: list[int]
    #: The text each token adds (``""`` while a multi-byte character is incomplete).
    deltas: list[str]
    text: str
    finish_reason: str
    stop_reason: str | int | None = None
    echo: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: The engine's ``max_tokens``: the request's, else what the context leaves.
    max_tokens: int = 0
    logprobs: list[float] | None = None
    top: list[list[tuple[int, float]]] | None = None


@dataclass
class Plan:
    """Everything a generation request answers, computed before any token is sent."""

    choices: list[Choice]
    prompt_tokens: int
    max_tokens_param: int | None


def render_chat(messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    """The prompt a chat request becomes (a ChatML-like template; it fixes the token count)."""
    parts = []
    for message in messages:
        parts.append(f"<|{message.get('role', 'user')}|>\n{_content_text(message)}\n")
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last ``user`` message (what script rules match)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message)
    return ""


def _content_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _rng(seed: int, prompt: str, index: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _generate_ids(rng: random.Random, length: int) -> list[int]:
    t = TOKENIZER
    draw = rng.random
    words, capitals, spaced = t.spaced_word_ids, t.capital_word_ids, t.spaced_capital_ids
    period = t.period_id
    ids: list[int] = []
    sentence = 0
    for _ in range(length):
        # Indexing with random() is a few times cheaper than choice() and as deterministic.
        if not ids:
            ids.append(capitals[int(draw() * len(capitals))])
        elif ids[-1] == period:
            ids.append(spaced[int(draw() * len(spaced))])
            sentence = 0
        elif sentence > 4 and draw() < 0.15:
            ids.append(period)
        else:
            ids.append(words[int(draw() * len(words))])
        sentence += 1
    return ids


def _deltas(tokens: list[int]) -> list[str]:
    if all(t >= 256 for t in tokens):
        # Vocabulary pieces are whole characters: no decoding state needed.
        return [TOKENIZER.pieces[t - 256] for t in tokens]
    # vLLM's incremental detokenizer holds back an incomplete UTF-8 character; so do we.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return [decoder.decode(TOKENIZER.token_bytes(t)) for t in tokens]


def synthesize_arguments(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Plausible arguments for a JSON schema: one value of the right type per property."""
    values: dict[str, Any] = {}
    for name, schema in ((parameters or {}).get("properties") or {}).items():
        if not isinstance(schema, dict):
            continue
        if schema.get("enum"):
            values[name] = schema["enum"][0]
            continue
        kind = schema.get("type")
        values[name] = {
            "integer": 1,
            "number": 1.0,
            "boolean": True,
            "array": [],
            "object": {},
            "null": None,
        }.get(kind if isinstance(kind, str) else "", "mock")
    return values


def plan_request(
    request: ChatRequest | CompletionRequest,
    *,
    request_id: str,
    served_model: str,
    max_model_len: int,
    seed: int,
    length_range: tuple[int, int],
    reply: ScriptReply | None,
) -> Plan:
    """Compute every choice of ``request``.

    :raises APIError: 400 when the prompt or ``max_tokens`` exceed ``max_model_len``.
    """
    echo_texts: list[str]
    if isinstance(request, ChatRequest):
        prompts = [render_chat(request.messages, request.add_generation_prompt)]
        prompt_ids = [TOKENIZER.encode(prompts[0])]
        last = request.messages[-1] if request.messages else {}
        echo = request.echo and last.get("role") == "assistant"
        echo_texts = [_content_text(last) if echo else ""]
    else:
        prompts, prompt_ids = _completion_prompts(request.prompt)
        echo_texts = prompts if request.echo else ["" for _ in prompts]
    max_param = request.max_new
    seed = request.seed if request.seed is not None else seed
    choices: list[Choice] = []
    total_prompt = 0
    for p, (prompt, ids) in enumerate(zip(prompts, prompt_ids, strict=True)):
        n_prompt = len(ids)
        total_prompt += n_prompt
        _check_length(n_prompt, max_param, max_model_len)
        limit = max_param if max_param is not None else max_model_len - n_prompt
        for i in range(request.n):
            index = p * request.n + i
            rid = request_id if isinstance(request, ChatRequest) else f"{request_id}-{p}"
            if request.n > 1:
                rid = f"{i}_{rid}"
            rng = _rng(seed, prompt, i)
            choice = _make_choice(request, rng, index, rid, n_prompt, limit, length_range, reply)
            choice.echo = echo_texts[p]
            choice.max_tokens = limit
            choices.append(choice)
    return Plan(choices=choices, prompt_tokens=total_prompt, max_tokens_param=max_param)


def _completion_prompts(prompt: Any) -> tuple[list[str], list[list[int]]]:
    if isinstance(prompt, str):
        return [prompt], [TOKENIZER.encode(prompt)]
    if prompt and all(isinstance(x, int) for x in prompt):
        return [TOKENIZER.decode(prompt)], [list(prompt)]
    texts, ids = [], []
    for item in prompt:
        if isinstance(item, str):
            texts.append(item)
            ids.append(TOKENIZER.encode(item))
        else:
            texts.append(TOKENIZER.decode(item))
            ids.append(list(item))
    return texts, ids


def _check_length(n_prompt: int, max_tokens: int | None, max_model_len: int) -> None:
    # vLLM's serving_engine ``_validate_input`` messages, word for word.
    if n_prompt >= max_model_len:
        raise APIError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {n_prompt} input tokens. Please reduce the length of the input "
            "messages.",
        )
    if max_tokens is not None and n_prompt + max_tokens > max_model_len:
        raise APIError(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
            f"maximum context length is {max_model_len} tokens and your request has "
            f"{n_prompt} input tokens ({max_tokens} > {max_model_len} - {n_prompt}).",
        )


def _make_choice(  # noqa: PLR0917
    request: ChatRequest | CompletionRequest,
    rng: random.Random,
    index: int,
    request_id: str,
    n_prompt: int,
    limit: int,
    length_range: tuple[int, int],
    reply: ScriptReply | None,
) -> Choice:
    tool_calls = _tool_calls(request, rng, reply)
    if tool_calls:
        text_of_calls = json.dumps(
            [
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                for c in tool_calls
            ]
        )
        tokens = TOKENIZER.encode(text_of_calls)[:limit]
        named = isinstance(request, ChatRequest) and isinstance(request.tool_choice, dict)
        reason = "stop" if named else "tool_calls"
        return Choice(
            index,
            request_id,
            n_prompt,
            tokens,
            [""] * len(tokens),
            "",
            reason,
            tool_calls=tool_calls,
        )
    if reply is not None and reply.content is not None:
        natural = TOKENIZER.encode(reply.content)
        tokens = natural[:limit]
        reason = "length" if len(natural) > limit else "stop"
    else:
        length = max(rng.randint(*length_range), request.min_tokens)
        if request.ignore_eos or length >= limit:
            length, reason = limit, "length"
        else:
            reason = "stop"
        tokens = _generate_ids(rng, length)
    deltas = _deltas(tokens)
    text = "".join(deltas)
    stop_reason: str | int | None = None
    if request.stop_list:
        tokens, deltas, text, hit = _apply_stop(
            tokens, deltas, request.stop_list, request.include_stop_str_in_output
        )
        if hit is not None:
            reason, stop_reason = "stop", hit
    if reply is not None and reply.finish_reason is not None:
        reason = reply.finish_reason
    choice = Choice(index, request_id, n_prompt, tokens, deltas, text, reason, stop_reason)
    wants = (
        request.logprobs
        if isinstance(request, CompletionRequest)
        else (request.top_logprobs or 0)
        if request.logprobs
        else None
    )
    if wants is not None:
        _add_logprobs(choice, rng, 20 if wants == -1 else wants)
    return choice


def _apply_stop(
    tokens: list[int], deltas: list[str], stops: list[str], include: bool
) -> tuple[list[int], list[str], str, str | None]:
    text = ""
    for j, delta in enumerate(deltas):
        before = len(text)
        text += delta
        # A stop string may span tokens: search the tail the new delta can complete.
        window = max(0, before - max(len(s) for s in stops) + 1)
        hits = [(text.find(s, window), s) for s in stops if text.find(s, window) >= 0]
        if hits:
            at, stop = min(hits)
            cut = at + len(stop) if include else at
            kept = text[:cut]
            new_deltas = [*deltas[:j], kept[before:] if cut > before else ""]
            if cut < before:
                # The cut falls inside earlier deltas: rebuild them from the kept text.
                new_deltas = _split_like(kept, deltas[: j + 1])
            return tokens[: j + 1], new_deltas, kept, stop
    return tokens, deltas, text, None


def _split_like(text: str, deltas: list[str]) -> list[str]:
    out, pos = [], 0
    for delta in deltas:
        out.append(text[pos : pos + len(delta)])
        pos += len(delta)
    return out


def _add_logprobs(choice: Choice, rng: random.Random, top: int) -> None:
    values = [-round(rng.random() ** 2 * 2.5, 6) for _ in choice.tokens]
    choice.logprobs = values
    alternatives: list[list[tuple[int, float]]] = []
    for token, value in zip(choice.tokens, values, strict=True):
        row = [(token, value)]
        for k in range(1, top):
            other = rng.choice(TOKENIZER.spaced_word_ids)
            row.append((other, round(value - k * 0.75 - rng.random() * 0.1, 6)))
        alternatives.append(row[:top] if top else [])
    choice.top = alternatives


def _tool_calls(
    request: ChatRequest | CompletionRequest, rng: random.Random, reply: ScriptReply | None
) -> list[dict[str, Any]]:
    if not isinstance(request, ChatRequest) or request.tool_choice == "none":
        return []
    calls: list[tuple[str, dict[str, Any]]] = []
    if reply is not None and reply.tool_calls:
        calls = [(c.name, c.arguments) for c in reply.tool_calls]
    elif request.tools and (
        request.tool_choice == "required" or isinstance(request.tool_choice, dict)
    ):
        wanted = (
            request.tool_choice.get("function", {}).get("name")
            if isinstance(request.tool_choice, dict)
            else None
        )
        tool = next((t for t in request.tools if t.function.name == wanted), request.tools[0])
        if wanted is not None and tool.function.name != wanted:
            raise APIError(400, f"Tool '{wanted}' has not been passed in `tools`.")
        calls = [(tool.function.name, synthesize_arguments(tool.function.parameters))]
    return [
        {
            "id": f"chatcmpl-tool-{rng.getrandbits(128):032x}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        for name, arguments in calls
    ]
