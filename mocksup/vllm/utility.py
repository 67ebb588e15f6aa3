"""The utility routes' logic: model cards, ``/tokenize``, ``/detokenize``, embeddings."""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import time
import uuid
from typing import Any

from mocksup.vllm.generate import render_chat
from mocksup.vllm.protocol import APIError
from mocksup.vllm.tokenizer import TOKENIZER
from mocksup.vllm.wire import usage

__all__ = ["detokenize", "embeddings", "model_card", "random_hex", "tokenize"]

_ids = random.Random()  # seeded from os.urandom once; ids need uniqueness, not secrecy


def random_hex() -> str:
    """A uuid4 in hex, as vLLM's ``random_uuid()``, without a getrandom() call per request."""
    return uuid.UUID(int=_ids.getrandbits(128), version=4).hex


def model_card(name: str, base: str, max_model_len: int, created: int) -> dict[str, Any]:
    """One entry of ``/v1/models``, as vLLM's ``ModelCard``."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": base,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [
            {
                "id": f"modelperm-{hashlib.sha256(name.encode()).hexdigest()[:32]}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


def tokenize(data: dict[str, Any], max_model_len: int) -> dict[str, Any]:
    """``/tokenize``: ``prompt`` or chat ``messages`` (rendered as generation renders them)."""
    if isinstance(data.get("messages"), list):
        text = render_chat(data["messages"], bool(data.get("add_generation_prompt", True)))
    elif isinstance(data.get("prompt"), str):
        text = data["prompt"]
    else:
        raise APIError(400, "Either `prompt` (a string) or `messages` must be given.")
    tokens = TOKENIZER.encode(text)
    strs = [TOKENIZER.token_str(t) for t in tokens] if data.get("return_token_strs") else None
    return {"count": len(tokens), "max_model_len": max_model_len, "tokens": tokens,
            "token_strs": strs}  # fmt: skip


def detokenize(data: dict[str, Any]) -> dict[str, Any]:
    """``/detokenize``: ``tokens`` back to text."""
    tokens = data.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise APIError(400, "tokens: Input should be a valid list of integers")
    return {"prompt": TOKENIZER.decode(tokens)}


def embeddings(data: dict[str, Any], model: str, dim: int) -> dict[str, Any]:
    """``/v1/embeddings``: deterministic unit vectors, ``float`` or ``base64`` encoded."""
    raw = data.get("input")
    if isinstance(raw, str) or (raw and all(isinstance(x, int) for x in raw)):
        raw = [raw]
    if not raw or not isinstance(raw, list):
        raise APIError(400, "input: Input should be a non-empty string or list")
    dim = int(data.get("dimensions") or dim)
    items, prompt_tokens = [], 0
    for index, item in enumerate(raw):
        if isinstance(item, str):
            text, prompt_tokens = item, prompt_tokens + TOKENIZER.count(item)
        else:
            text, prompt_tokens = TOKENIZER.decode(list(item)), prompt_tokens + len(item)
        vector = embedding(text, dim)
        value: Any = vector
        if data.get("encoding_format") == "base64":
            value = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
        items.append({"index": index, "object": "embedding", "embedding": value})
    return {
        "id": f"embd-{random_hex()}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": items,
        "usage": usage(prompt_tokens, 0),
    }


def embedding(text: str, dim: int) -> list[float]:
    """A unit vector from SHA-256 in counter mode: the same text, the same vector."""
    raw = b""
    counter = 0
    while len(raw) < dim * 2:
        raw += hashlib.sha256(f"{counter}\x00{text}".encode()).digest()
        counter += 1
    values = [(int.from_bytes(raw[2 * i : 2 * i + 2], "big") / 32767.5) - 1.0 for i in range(dim)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]
