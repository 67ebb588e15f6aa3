"""How every answer of the vLLM mock is encoded: compact strict JSON, and vLLM's ``UsageInfo``."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "reasoning_details", "short_usage", "usage"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> bytes:
    """Compact JSON with raw UTF-8, as pydantic's ``model_dump_json``.

    NaN and infinities are refused (``ValueError``) rather than written as bare ``NaN``
    tokens, which strict JSON parsers reject. A lone surrogate (a client may send one,
    escaped, and the journal keeps it) is written as its ``\\uXXXX`` escape: still JSON.
    """
    return _encode(value).encode("utf-8", "backslashreplace")


def usage(
    prompt: int, completion: int, details: Any = None, reasoning: int | None = None
) -> dict[str, Any]:
    """vLLM's ``UsageInfo`` as a non-streamed body carries it (field order as vLLM's).

    :param details: ``prompt_tokens_details`` (``None`` unless
        ``--enable-prompt-tokens-details``).
    :param reasoning: the reasoning tokens, with a reasoning parser (``None`` without).
    """
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": reasoning_details(reasoning),
    }


def short_usage(
    prompt: int, completion: int, details: Any = None, reasoning: int | None = None
) -> dict[str, Any]:
    """``UsageInfo`` as stream chunks carry it: ``None`` fields left out."""
    body: dict[str, Any] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }
    if details is not None:
        body["prompt_tokens_details"] = details
    if reasoning is not None:
        body["completion_tokens_details"] = reasoning_details(reasoning)
    return body


def reasoning_details(reasoning: int | None) -> dict[str, int] | None:
    """``completion_tokens_details``: vLLM reports it only with a reasoning parser."""
    return None if reasoning is None else {"reasoning_tokens": reasoning}
