"""Scripted content: the text of the matching rule's reply, cut at the choice's limit."""

from __future__ import annotations

from mocksup.vllm._generation import Ask, Draft
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["draft"]


def draft(ask: Ask) -> Draft | None:
    """The reply's ``content`` (``None`` when the rule sets no content)."""
    if ask.reply is None or ask.reply.content is None:
        return None
    natural = TOKENIZER.encode(ask.reply.content)
    reason = "length" if len(natural) > ask.limit else "stop"
    return Draft(natural[: ask.limit], reason)
