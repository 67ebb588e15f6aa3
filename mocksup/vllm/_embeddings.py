"""``POST /v1/embeddings``: deterministic unit vectors, with vLLM's request model and checks.

The request is vLLM's completion form (``input``: token ids, lists of them, a string or
strings; ``dimensions``). The mock answers as a Matryoshka model of ``embedding_dim``
dimensions: ``dimensions`` outside ``[1, embedding_dim]`` gets vLLM's 400.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from mocksup.vllm._encoding import usage
from mocksup.vllm._errors import APIError, VLLMValidationError
from mocksup.vllm._limits import MAX_OUTPUT_FLOATS, MAX_PROMPT_ITEMS
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["EmbeddingRequest", "embedding", "embeddings"]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` (vLLM's ``EmbeddingCompletionRequest``, the fields used)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: list[int] | list[list[int]] | str | list[str]
    dimensions: int | None = None
    encoding_format: str = "float"


def embeddings(
    request: EmbeddingRequest, model: str, size: int, *, request_id: str
) -> dict[str, Any]:
    """The ``/v1/embeddings`` body: one vector per input, ``float`` or ``base64`` encoded.

    :raises VLLMValidationError: ``dimensions`` out of range.
    :raises APIError: 413 past the mock's limits on inputs and returned numbers.
    """
    dim = size if request.dimensions is None else request.dimensions
    if request.dimensions is not None and not 1 <= dim <= size:
        raise VLLMValidationError(
            f"Model {model!r} only supports dimensions in range [1, {size}], got {dim}."
        )
    raw = request.input
    inputs: list[Any] = [raw] if isinstance(raw, str) or _is_ids(raw) else list(raw)
    if len(inputs) > MAX_PROMPT_ITEMS or len(inputs) * dim > MAX_OUTPUT_FLOATS:
        raise APIError(
            413,
            f"{len(inputs)} inputs of {dim} dimensions exceed the mock's limits "
            f"({MAX_PROMPT_ITEMS} inputs, {MAX_OUTPUT_FLOATS} numbers).",
        )
    items, prompt_tokens = [], 0
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            text, prompt_tokens = item, prompt_tokens + TOKENIZER.count(item)
        else:
            text, prompt_tokens = TOKENIZER.decode(list(item)), prompt_tokens + len(item)
        vector = embedding(text, dim)
        value: Any = vector
        if request.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
        items.append({"index": index, "object": "embedding", "embedding": value})
    return {
        "id": f"embd-{request_id}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": items,
        "usage": usage(prompt_tokens, 0),
    }


def _is_ids(value: Any) -> bool:
    return bool(value) and all(isinstance(x, int) for x in value)


def embedding(text: str, dim: int) -> list[float]:
    """A unit vector from SHA-256 in counter mode: the same text, the same vector."""
    seed = text.encode("utf-8", "surrogatepass")
    raw = bytearray()
    counter = 0
    while len(raw) < dim * 2:
        raw += hashlib.sha256(b"%d\x00" % counter + seed).digest()
        counter += 1
    values = [(int.from_bytes(raw[2 * i : 2 * i + 2], "big") / 32767.5) - 1.0 for i in range(dim)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]
