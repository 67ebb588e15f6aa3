"""How every answer of the vLLM mock is encoded: compact strict JSON, and vLLM's ``UsageInfo``."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "usage"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> bytes:
    """Compact JSON with raw UTF-8, as pydantic's ``model_dump_json``.

    NaN and infinities are refused (``ValueError``) rather than written as bare ``NaN``
    tokens, which strict JSON parsers reject. A lone surrogate (a client may send one,
    escaped, and the journal keeps it) is written as its ``\\uXXXX`` escape: still JSON.
    """
    return _encode(value).encode("utf-8", "backslashreplace")


def usage(prompt: int, completion: int, details: bool = True) -> dict[str, Any]:
    """vLLM's ``UsageInfo`` (field order as vLLM's)."""
    body: dict[str, Any] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }
    if details:
        body["prompt_tokens_details"] = None
    return body
