"""``GET /v1/models``: one model card per served name, as vLLM's ``ModelCard``."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["model_card", "models_body"]


def models_body(
    names: list[str],
    root: str,
    max_model_len: int,
    created: int,
    adapters: list[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    """The ``/v1/models`` list: a card per served name, each with the model path as
    ``root`` (vLLM's ``BaseModelPath.model_path``), then one per LoRA adapter
    (``adapters``: name, path, parent)."""
    cards = [model_card(name, root, max_model_len, created) for name in names]
    cards += [model_card(n, path, None, created, parent) for n, path, parent in adapters or []]
    return {"object": "list", "data": cards}


def model_card(
    name: str, root: str, max_model_len: int | None, created: int, parent: str | None = None
) -> dict[str, Any]:
    """One entry of ``/v1/models`` (a LoRA adapter's has a ``parent`` and no
    ``max_model_len``)."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": max_model_len,
        "permission": [
            {
                "id": f"modelperm-{hashlib.sha256(name.encode()).hexdigest()[:16]}",
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
