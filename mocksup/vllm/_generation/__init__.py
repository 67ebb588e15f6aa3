"""Generation strategies: what one choice of a request says, each kind in its own module.

A strategy takes an :class:`Ask` (the request, the choice's seeded generator, how many
tokens it may generate, the matching script reply) and returns a :class:`Draft` (its tokens,
finish reason and tool calls), or ``None`` when it does not apply. :func:`draft` asks them in
order: reasoning (a thinking block before whatever the others draft), tool calls, then
scripted content, then structured output (a JSON Schema, a regex, a choice or a grammar),
then free text, which always answers. Stop strings
and log-probabilities are applied afterwards to whatever text a strategy drafted
(:mod:`mocksup.vllm._plan`), so a new strategy (JSON Schema, regex, reasoning) only decides
tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mocksup.vllm._generation.budget import Work
from mocksup.vllm._sampling import GenerationRequest
from mocksup.vllm.settings import ScriptReply

if TYPE_CHECKING:
    from mocksup.vllm._tool_parsers import ToolParser

__all__ = ["Ask", "Draft", "Strategy", "draft"]


@dataclass
class Ask:
    """What a strategy knows about the choice it drafts."""

    request: GenerationRequest
    rng: random.Random
    #: Tokens the choice may generate (``max_tokens``, else what the context leaves).
    limit: int
    #: The server's range of natural text lengths, in tokens.
    length_range: tuple[int, int]
    reply: ScriptReply | None
    #: A reasoning parser is set and the request thinks: a thinking block comes first.
    thinking: bool = False
    #: The most reasoning tokens (Anthropic's ``thinking.budget_tokens``), if any.
    thinking_budget: int | None = None
    #: The server's ``tool_call_policy``: whether ``tool_choice="auto"`` calls a tool.
    tool_call_policy: str = "mention"
    #: The request's work for structured outputs and tool arguments, shared by its
    #: choices (:mod:`.budget`).
    work: Work = field(default_factory=Work)


@dataclass
class Draft:
    """One choice's generated tokens before stop strings and log-probabilities."""

    tokens: list[int]
    finish_reason: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: The text shown instead of the tokens' own (a tool call cut short shows none).
    content: str | None = None
    #: Leading tokens that are the thinking block, its markers included (0: none).
    reasoning: int = 0
    #: Reads tool calls out of the tokens' text, whole and streamed, as vLLM's parser
    #: for the request's tool choice does (the tokens are then a tool call's text).
    tool_parser: ToolParser | None = None


#: A strategy: a draft, or ``None`` to let the next one answer.
Strategy = Callable[[Ask], "Draft | None"]


def _strategies() -> tuple[Strategy, ...]:
    from mocksup.vllm._generation import free_text, reasoning, scripted, structured, tool_calls

    return (reasoning.draft, tool_calls.draft, scripted.draft, structured.draft, free_text.draft)


def draft(ask: Ask) -> Draft:
    """The first strategy's draft that applies (free text always does)."""
    for strategy in _STRATEGIES:
        result = strategy(ask)
        if result is not None:
            return result
    raise AssertionError("free text answers every request")


_STRATEGIES = _strategies()
