"""Planning a generation request: every choice it answers, computed before any token is sent.

The text of a choice depends only on the seed (the request's ``seed``, else the server's),
the prompt text and the choice's index, hashed with SHA-256 (never Python's ``hash()``, which
is salted per process), so the same request gives the same text and the same chunks in every
run and process. A strategy (:mod:`mocksup.vllm._generation`) drafts the tokens; stop strings
and log-probabilities are applied here, whatever the strategy.

Every (prompt, choice) pair is one engine request, as vLLM v1 fans ``n > 1`` out into child
requests: each has its own id, prompt token count, finish reason, metrics and span.
"""

from __future__ import annotations

import codecs
import hashlib
import random
from dataclasses import dataclass, field, replace
from typing import Any

from mocksup.vllm._errors import APIError, VLLMValidationError
from mocksup.vllm._generation import Ask, Draft, draft
from mocksup.vllm._generation.budget import Work
from mocksup.vllm._limits import MAX_OUTPUT_FLOATS, MAX_OUTPUT_TOKENS
from mocksup.vllm._sampling import GenerationRequest
from mocksup.vllm.settings import ScriptReply
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["Choice", "Plan", "Settings", "plan_request"]


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
    #: The engine's ``max_tokens``: the request's, capped by what the context leaves.
    max_tokens: int = 0
    logprobs: list[float] | None = None
    #: Per token: the sampled token and its alternatives with their log-probabilities.
    top: list[list[tuple[int, float]]] | None = None
    logprobs_wanted: int = 0
    #: The prompt's token ids (shared by its choices) and its index in the request.
    prompt_ids: list[int] = field(default_factory=list)
    prompt_index: int = 0
    #: With a reasoning parser: the reasoning text (``None``: the choice did not think),
    #: its token count as vLLM's parsers count it (between the markers), and the index of
    #: the first answer token (the tokens before it are the thinking block).
    reasoning: str | None = None
    reasoning_tokens: int = 0
    answer_start: int = 0
    #: Set by the engine: prompt tokens found in the prefix cache, tokens generated before
    #: the request ended, whether it was accounted, and its timing record.
    cached_tokens: int = 0
    created_cache_tokens: int = 0
    block_hashes: list[int] = field(default_factory=list)
    generated: int = 0
    recorded: bool = False
    timing: Any = None
    #: A tool call's text: its parser (for the streamed deltas) and the message content.
    tool_parser: Any = None
    tool_content: str | None = None

    def reasoning_within(self, count: int) -> int:
        """Reasoning tokens among the first ``count`` tokens: the words after ``<think>``."""
        return min(max(count - 1, 0), self.reasoning_tokens)

    def cut(self, count: int) -> None:
        """Keep only the first ``count`` tokens (an aborted request's output)."""
        self.tokens, self.deltas = self.tokens[:count], self.deltas[:count]
        self.text = "".join(self.deltas)
        self.tool_calls = []
        if self.tool_parser is not None:
            answer = "".join(self.deltas[self.answer_start :])
            self.tool_content, self.tool_calls = self.tool_parser.extract(answer)
            self.text = self.tool_content or ""
        if self.logprobs is not None and self.top is not None:
            self.logprobs, self.top = self.logprobs[:count], self.top[:count]


@dataclass
class Plan:
    """Everything a generation request answers, computed before any token is sent."""

    choices: list[Choice]
    prompt_tokens: int
    max_tokens_param: int | None
    #: ``return_tokens_as_token_ids``: log-probability tokens as ``token_id:N``.
    as_ids: bool = False


@dataclass(frozen=True)
class Settings:
    """The server settings planning needs."""

    max_model_len: int
    seed: int
    length_range: tuple[int, int]
    role: str = "assistant"
    tokens_as_token_ids: bool = False
    #: ``--reasoning-parser``: chat requests that think write a thinking block first.
    reasoning_parser: str | None = None
    #: ``--default-chat-template-kwargs`` (``enable_thinking`` decides thinking).
    chat_template_kwargs: dict[str, Any] | None = None
    tool_call_policy: str = "mention"


def plan_request(
    request: GenerationRequest,
    request_id: str,
    settings: Settings,
    reply: ScriptReply | None,
    *,
    per_prompt_ids: str,
) -> Plan:
    """Compute every choice of ``request``.

    :param per_prompt_ids: the separator of engine request ids ``<id><sep><prompt index>``
        (``"-"`` for completions, ``"_"`` for batch chat), or ``""`` for one id (chat).
        The ``n`` choices of a prompt share its id, as vLLM's child requests report it.
    :raises VLLMValidationError: vLLM's 400 for a prompt or ``max_tokens`` past
        ``max_model_len`` (``max_tokens`` is otherwise capped to what the context leaves).
    :raises APIError: 413 past the mock's output limits.
    """
    max_param = request.max_new
    seed = request.seed if request.seed is not None else settings.seed
    n = request.choices
    _check_max_tokens(max_param, request.max_new_name, settings.max_model_len)
    prompts = request.prompts(settings.role)
    _check_output_size(request, len(prompts), settings)
    choices: list[Choice] = []
    total_prompt = 0
    work = Work()  # one budget of work for every choice's constraint
    for p, prompt in enumerate(prompts):
        ids = _truncated(prompt.ids, request, settings.max_model_len)
        n_prompt = len(ids)
        total_prompt += n_prompt
        _check_prompt(n_prompt, settings.max_model_len)
        room = settings.max_model_len - n_prompt
        limit = room if max_param is None else min(max_param, room)
        if limit < 1:
            raise VLLMValidationError(
                f"max_tokens must be at least 1, got {limit}.", parameter="max_tokens",
                value=limit,
            )  # fmt: skip
        rid = f"{request_id}{per_prompt_ids}{p}" if per_prompt_ids else request_id
        thinking = settings.reasoning_parser is not None and request.thinks(
            settings.chat_template_kwargs
        )
        for i in range(n):
            ask = Ask(request, _rng(seed, prompt.text, i), limit, settings.length_range, reply,
                      thinking, request.thinking_budget, settings.tool_call_policy,
                      work)  # fmt: skip
            choice = _make_choice(ask, p * n + i, rid, n_prompt)
            choice.echo = prompt.echo
            choice.max_tokens = limit
            choice.prompt_ids = ids
            choice.prompt_index = p
            choices.append(choice)
    as_ids = request.return_tokens_as_token_ids
    return Plan(
        choices=choices,
        prompt_tokens=total_prompt,
        max_tokens_param=max_param,
        as_ids=settings.tokens_as_token_ids if as_ids is None else as_ids,
    )


def _rng(seed: int, prompt: str, index: int) -> random.Random:
    text = f"{seed}\x00{index}\x00{prompt}".encode("utf-8", "surrogatepass")
    return random.Random(int.from_bytes(hashlib.sha256(text).digest()[:8], "big"))


def _check_output_size(request: GenerationRequest, prompts: int, settings: Settings) -> None:
    # The most tokens (and log-probabilities) the answer could hold, checked before any
    # is generated: within the body size limit, n and max_tokens could ask for gigabytes.
    cap = request.max_new if request.max_new is not None else settings.max_model_len
    natural = max(request.min_tokens, settings.length_range[1])
    per_choice = cap if request.ignore_eos else min(cap, natural)
    tokens = prompts * request.choices * per_choice
    if tokens > MAX_OUTPUT_TOKENS:
        raise APIError(
            413,
            f"The request may generate {tokens} tokens (prompts x n x tokens each), more than "
            f"the mock's limit of {MAX_OUTPUT_TOKENS}.",
        )
    wanted = request.logprobs_wanted
    floats = tokens * (1 + max(wanted or 0, 0)) if wanted is not None else 0
    if floats > MAX_OUTPUT_FLOATS:
        raise APIError(
            413,
            f"The request may return {floats} log-probabilities, more than the mock's limit "
            f"of {MAX_OUTPUT_FLOATS}.",
        )


def _check_max_tokens(max_tokens: int | None, name: str, max_model_len: int) -> None:
    # vLLM's TokenizeParams: a limit past the context is refused before tokenization.
    if max_tokens is not None and max_tokens > max_model_len:
        raise VLLMValidationError(
            f"{name}={max_tokens} cannot be greater than max_model_len={max_model_len}. "
            "Please request fewer output tokens.",
            parameter=name,
            value=max_tokens,
        )


def _check_prompt(n_prompt: int, max_model_len: int) -> None:
    # vLLM's token-length check, after truncation (a prompt of max_model_len tokens passes
    # it, and is then refused for leaving no room for output).
    if n_prompt > max_model_len:
        raise VLLMValidationError(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"prompt contains {n_prompt} input tokens, which exceeds this limit even without "
            "any output tokens. Please reduce the length of the input prompt.",
            parameter="input_tokens",
            value=n_prompt,
        )


def _truncated(ids: list[int], request: GenerationRequest, max_model_len: int) -> list[int]:
    # ``truncate_prompt_tokens``: keep that many (-1: as many as leave one for output),
    # from the right unless ``truncation_side`` is "left".
    keep = request.truncate_prompt_tokens
    if keep is None:
        return ids
    if keep > max_model_len:
        raise VLLMValidationError(
            f"truncate_prompt_tokens={keep} cannot be greater than max_model_len "
            f"= {max_model_len}. Please request a smaller truncation size.",
            parameter="truncate_prompt_tokens",
            value=keep,
        )
    if keep < 0:
        keep = max_model_len - 1
    if keep >= len(ids):
        return ids
    return ids[-keep:] if request.truncation_side == "left" and keep else ids[:keep]


def _make_choice(ask: Ask, index: int, request_id: str, n_prompt: int) -> Choice:
    drafted = draft(ask)
    head = drafted.reasoning
    answer = replace(drafted, tokens=drafted.tokens[head:]) if head else drafted
    choice = _answer(ask, answer, index, request_id, n_prompt)
    if ask.thinking:
        _think(choice, drafted.tokens[:head])
    wanted = ask.request.logprobs_wanted
    made_up = choice.tool_calls and choice.tool_parser is None  # a script's calls: no text
    if wanted is not None and not made_up and drafted.content is None:
        _add_logprobs(choice, ask.rng, wanted, ask.request.logprob_token_ids)
    return choice


def _think(choice: Choice, block: list[int]) -> None:
    # The thinking block goes before the answer: its markers add no text, its words are the
    # reasoning (streamed as reasoning deltas), and stop strings never looked at it.
    start, end = TOKENIZER.think_ids
    deltas = ["" if t in (start, end) else d for t, d in zip(block, _deltas(block), strict=True)]
    choice.reasoning = "".join(deltas)
    choice.reasoning_tokens = sum(1 for t in block if t not in (start, end))
    choice.answer_start = len(block)
    choice.tokens = block + choice.tokens
    choice.deltas = deltas + choice.deltas


def _answer(ask: Ask, drafted: Draft, index: int, request_id: str, n_prompt: int) -> Choice:
    tokens = drafted.tokens
    if drafted.content is not None:
        deltas = [drafted.content] + [""] * (len(tokens) - 1) if tokens else []
        return Choice(index, request_id, n_prompt, tokens, deltas, drafted.content,
                      drafted.finish_reason)  # fmt: skip
    if drafted.tool_calls:
        return Choice(index, request_id, n_prompt, tokens, [""] * len(tokens), "",
                      drafted.finish_reason, tool_calls=drafted.tool_calls)  # fmt: skip
    if drafted.tool_parser is not None:
        return _tool_choice(ask, drafted, index, request_id, n_prompt)
    deltas = _deltas(tokens)
    text = "".join(deltas)
    reason = drafted.finish_reason
    stop_reason: str | int | None = None
    request = ask.request
    if request.stop_list:
        tokens, deltas, text, hit = _apply_stop(
            tokens, deltas, request.stop_list, request.include_stop_str_in_output
        )
        if hit is not None:
            reason, stop_reason = "stop", hit
    if ask.reply is not None and ask.reply.finish_reason is not None:
        reason = ask.reply.finish_reason
    return Choice(index, request_id, n_prompt, tokens, deltas, text, reason, stop_reason)


def _tool_choice(ask: Ask, drafted: Draft, index: int, request_id: str, n_prompt: int) -> Choice:
    # The parser reads the calls out of the text, as vLLM's does; "tool_calls" is the
    # finish reason when it found calls, the engine stopped, and no tool was named.
    parser = drafted.tool_parser
    assert parser is not None
    deltas = _deltas(drafted.tokens)
    text = "".join(deltas)
    content, calls = parser.extract(text)
    reason = drafted.finish_reason
    if (
        calls
        and reason == "stop"
        and ask.request.tool_use is not None
        and (ask.request.tool_use.forced is None)
    ):
        reason = "tool_calls"
    # The choice's text is what the parser leaves as content (the surfaces show it); the
    # deltas stay the model's, for the parser's streamed framing and the log-probabilities.
    choice = Choice(index, request_id, n_prompt, drafted.tokens, deltas, content or "", reason,
                    tool_calls=calls)  # fmt: skip
    choice.tool_parser, choice.tool_content = parser, content
    return choice


def _deltas(tokens: list[int]) -> list[str]:
    top = 256 + len(TOKENIZER.pieces)
    if not tokens or (min(tokens) >= 256 and max(tokens) < top):
        # Vocabulary pieces are whole characters: no decoding state needed.
        return [TOKENIZER.pieces[t - 256] for t in tokens]
    # vLLM's incremental detokenizer holds back an incomplete UTF-8 character; so do we.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return [decoder.decode(TOKENIZER.token_bytes(t)) for t in tokens]


def _apply_stop(
    tokens: list[int], deltas: list[str], stops: list[str], include: bool
) -> tuple[list[int], list[str], str, str | None]:
    text = ""
    longest = max(len(s) for s in stops)
    for j, delta in enumerate(deltas):
        before = len(text)
        text += delta
        # A stop string may span tokens: search the tail the new delta can complete.
        window = max(0, before - longest + 1)
        hits = [(at, s) for s in stops if (at := text.find(s, window)) >= 0]
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


def _add_logprobs(
    choice: Choice, rng: random.Random, wanted: int, ids: list[int] | None = None
) -> None:
    # Each row: the sampled token first, then ``wanted`` other tokens, less likely (or the
    # ``logprob_token_ids`` asked for, every one of them returned).
    count = TOKENIZER.vocab_size if wanted == -1 else wanted
    values = [-round(rng.random() ** 2 * 2.5, 6) for _ in choice.tokens]
    words = TOKENIZER.spaced_word_ids
    rows: list[list[tuple[int, float]]] = []
    for token, value in zip(choice.tokens, values, strict=True):
        row = [(token, value)]
        start = int(rng.random() * len(words))
        others = ids if ids else [
            words[(start + k) % len(words)] if count < len(words) else k - 1
            for k in range(1, count + 1)
        ]  # fmt: skip
        for k, other in enumerate(others, 1):
            if other != token:
                row.append((other, round(value - k * 0.75 - rng.random() * 0.1, 6)))
        rows.append(row)
    choice.logprobs = values
    choice.top = rows
    choice.logprobs_wanted = -1 if ids else wanted
