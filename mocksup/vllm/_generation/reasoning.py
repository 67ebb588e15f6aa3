"""Reasoning: a thinking block before the answer, as a reasoning model writes it.

With a reasoning parser (``--reasoning-parser``) and thinking on for the request, a choice
generates ``<think>``, sentences of reasoning, ``</think>``, then whatever the other
strategies draft for the answer in the tokens left. The reasoning's length is drawn from the
server's ``output_tokens`` range with the choice's seeded generator (capped by a thinking
budget), so it is deterministic like the rest. A limit reached inside the block cuts the
reasoning (no closing marker, no answer, finish reason ``length``), as a model cut short
mid-thought. vLLM's parsers count the tokens between the markers as reasoning tokens.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._generation import Ask, Draft
from mocksup.vllm._generation import draft as draft_any
from mocksup.vllm._generation.free_text import word_ids
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["REASONING_PARSERS", "check_reasoning_fields", "draft", "thinking_enabled"]

#: The ``--reasoning-parser`` names vLLM 0.33.0 registers. The mock writes every one's
#: output the same way (``<think>`` ... ``</think>`` before the answer; thinking off with
#: ``enable_thinking: false``, as Qwen3's parser reads it).
REASONING_PARSERS = frozenset(
    """
    beam cohere_command3 cohere_command4 deepseek_r1 deepseek_v3 deepseek_v4 deepseek_v41
    ernie45 gemma4 glm45 glm47 granite granite_thinking_parser hf holo2 hunyuan_a13b hy_v3
    hy_v4 inkling k2_horizon kimi_k2 kimi_k3 ling3 mimo minicpmv minimax_m2
    minimax_m2_append_think minimax_m3 mistral muse muse_glimmer musespark1x nemotron_v3 olmo3
    openai_gptoss plamo3 poolside_v1 qwen3 seed_oss step3 step3p5 step5
    """.split()  # noqa: SIM905
)


def draft(ask: Ask) -> Draft | None:
    """The thinking block and the answer after it (``None`` when the choice does not think)."""
    if not ask.thinking:
        return None
    start, end = TOKENIZER.think_ids
    length = ask.rng.randint(*ask.length_range)
    if ask.thinking_budget is not None:
        length = min(length, ask.thinking_budget)
    if length + 1 >= ask.limit:
        # Cut inside the block: the marker and as much reasoning as fits.
        tokens = [start, *word_ids(ask.rng, ask.limit - 1)]
        return Draft(tokens, "length", reasoning=len(tokens))
    block = [start, *word_ids(ask.rng, length), end]
    room = ask.limit - len(block)
    if room == 0:
        return Draft(block, "length", reasoning=len(block))
    answer = draft_any(replace(ask, thinking=False, limit=room))
    return replace(answer, tokens=block + answer.tokens, reasoning=len(block))


def thinking_enabled(
    kwargs: dict[str, Any] | None, effort: str | None, defaults: dict[str, Any] | None
) -> bool:
    """``enable_thinking`` as vLLM hands it to the chat template: the request's
    ``chat_template_kwargs``, else ``reasoning_effort`` (``"none"``: off), else the server's
    ``--default-chat-template-kwargs``, else on (a thinking model's default)."""
    if kwargs and "enable_thinking" in kwargs:
        return bool(kwargs["enable_thinking"])
    if effort is not None:
        return effort != "none"
    if defaults and "enable_thinking" in defaults:
        return bool(defaults["enable_thinking"])
    return True


def check_reasoning_fields(data: Any) -> Any:
    """vLLM's rules on a chat body's reasoning fields, before the schema: the deprecated
    ``reasoning_content`` of a message is renamed ``reasoning``; ``thinking_token_budget``
    is a non-negative integer, or -1 for no limit.

    :raises VLLMValidationError: a bad ``thinking_token_budget``, in vLLM's words.
    """
    if not isinstance(data, dict):
        return data
    messages = data.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and "reasoning_content" in message:
                value = message.pop("reasoning_content")
                if value is not None and message.get("reasoning") is None:
                    message["reasoning"] = value
    budget = data.get("thinking_token_budget")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < -1:
            raise VLLMValidationError(
                "`thinking_token_budget` must be a non-negative integer or -1 for unlimited.",
                parameter="thinking_token_budget",
                value=budget,
            )
        if budget == -1:
            data["thinking_token_budget"] = None
    return data
