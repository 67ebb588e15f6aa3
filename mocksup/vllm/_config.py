"""The fixed settings the app reads, resolved once in the child from the server's settings.

vLLM reads a few settings from its environment as well as from its flags (``VLLM_API_KEY``,
``VLLM_SERVER_DEV_MODE``, ``VLLM_ENABLE_RESPONSES_API_STORE``,
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, ``VLLM_MAX_N_SEQUENCES``,
``VLLM_MAX_COMPLETION_PROMPTS``, ``VLLM_MAX_STOP_STRINGS``, ``OTEL_SERVICE_NAME``,
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``);
:func:`server_config` applies them the same way, so ``env={...}`` on the mock works as the
environment of ``vllm serve`` does.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mocksup.vllm._limits import (
    MAX_COMPLETION_PROMPTS,
    MAX_N_SEQUENCES,
    env_int,
    stop_strings,
)
from mocksup.vllm._lora import LoRAModule

if TYPE_CHECKING:
    from mocksup.vllm.server import MockVLLMServer

__all__ = ["ServerConfig", "server_config"]

#: KV-cache blocks the mock has when ``num_gpu_blocks_override`` is not set.
DEFAULT_GPU_BLOCKS = 8192


@dataclass(frozen=True)
class ServerConfig:
    """What the app needs to know of its settings (copied in the child)."""

    model: str
    models: list[str]
    max_model_len: int
    api_keys: list[str]
    seed: int
    output_tokens: tuple[int, int]
    version: str
    request_id_headers: bool
    role: str
    max_request_bytes: int
    embedding_dim: int
    tracing: bool
    journal_credentials: bool
    force_include_usage: bool = False
    prompt_tokens_details: bool = False
    per_request_metrics: bool = False
    server_load_tracking: bool = False
    tokenizer_info_endpoint: bool = False
    auto_tool_choice: bool = False
    tool_call_parser: str | None = None
    tool_call_policy: str = "mention"
    tokens_as_token_ids: bool = False
    root_path: str = ""
    max_logprobs: int = 20
    #: ``VLLM_MAX_N_SEQUENCES``: the largest ``n``.
    max_n_sequences: int = MAX_N_SEQUENCES
    #: ``VLLM_MAX_COMPLETION_PROMPTS``: prompts in one completion request.
    max_completion_prompts: int = MAX_COMPLETION_PROMPTS
    docs: bool = True
    log_stats: bool = True
    prefix_caching: bool = True
    block_size: int = 16
    gpu_blocks: int = DEFAULT_GPU_BLOCKS
    gpu_memory_utilization: float = 0.92
    cache_dtype: str = "auto"
    fingerprint: str | None = None
    dev_mode: bool = False
    #: ``--reasoning-parser`` (``None``: replies carry no reasoning).
    reasoning_parser: str | None = None
    #: ``--default-chat-template-kwargs``.
    default_chat_template_kwargs: dict[str, Any] | None = None
    #: ``VLLM_ENABLE_RESPONSES_API_STORE``: the Responses API keeps responses.
    responses_store: bool = False
    enable_lora: bool = False
    lora_modules: tuple[LoRAModule, ...] = ()
    max_loras: int = 1
    max_lora_rank: int = 16
    runtime_lora_updating: bool = False
    data_parallel_size: int = 1
    #: ``--max-num-queued-reqs`` and ``--max-num-queued-tokens`` (``None``: no limit).
    max_num_queued_reqs: int | None = None
    max_num_queued_tokens: int | None = None

    @property
    def kv_cache_tokens(self) -> int:
        """The KV cache's capacity in tokens."""
        return self.gpu_blocks * self.block_size

    @property
    def validation_context(self) -> dict[str, Any]:
        """The limits request models check while validating (pydantic's ``context``)."""
        return {"max_completion_prompts": self.max_completion_prompts}


def server_config(
    server: MockVLLMServer, *, tracing: bool, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The app's settings from the server model and the environment (``os.environ``).

    :raises ValueError: a ``VLLM_MAX_*`` variable is not an integer, or
        ``VLLM_MAX_STOP_STRINGS`` no count vLLM can build its schemas with (vLLM fails to
        start).
    """
    env = os.environ if environ is None else environ
    # The request schemas took it as they were built (_limits.STOP_STRINGS); a value vLLM
    # would fail on fails the start here.
    stop_strings(env)
    keys = [server.api_key] if isinstance(server.api_key, str) else list(server.api_key or [])
    if not keys and env.get("VLLM_API_KEY"):
        keys = [env["VLLM_API_KEY"]]  # --api-key wins over VLLM_API_KEY, as in vLLM
    names = server.served_names
    return ServerConfig(
        model=server.model,
        models=names,
        max_model_len=server.max_model_len,
        api_keys=keys,
        seed=server.seed,
        output_tokens=server.output_tokens,
        version=server.vllm_version,
        request_id_headers=server.enable_request_id_headers,
        role=server.response_role,
        max_request_bytes=server.max_request_bytes,
        embedding_dim=server.embedding_dim,
        tracing=tracing,
        journal_credentials=server.journal_credentials,
        force_include_usage=server.enable_force_include_usage,
        prompt_tokens_details=server.enable_prompt_tokens_details,
        per_request_metrics=server.enable_per_request_metrics,
        server_load_tracking=server.enable_server_load_tracking,
        tokenizer_info_endpoint=server.enable_tokenizer_info_endpoint,
        auto_tool_choice=server.enable_auto_tool_choice,
        tool_call_parser=server.tool_call_parser,
        tool_call_policy=server.tool_call_policy,
        tokens_as_token_ids=server.return_tokens_as_token_ids,
        root_path=(server.root_path or "").rstrip("/"),
        max_logprobs=server.max_logprobs,
        max_n_sequences=env_int(env, "VLLM_MAX_N_SEQUENCES", MAX_N_SEQUENCES),
        max_completion_prompts=env_int(env, "VLLM_MAX_COMPLETION_PROMPTS", MAX_COMPLETION_PROMPTS),
        docs=not server.disable_fastapi_docs,
        log_stats=not server.disable_log_stats,
        prefix_caching=server.enable_prefix_caching,
        block_size=server.block_size,
        gpu_blocks=server.num_gpu_blocks_override or DEFAULT_GPU_BLOCKS,
        gpu_memory_utilization=server.gpu_memory_utilization,
        cache_dtype=server.kv_cache_dtype,
        fingerprint=_fingerprint(server),
        dev_mode=server.server_dev_mode or _truthy(env.get("VLLM_SERVER_DEV_MODE")),
        reasoning_parser=server.reasoning_parser or None,
        default_chat_template_kwargs=server.default_chat_template_kwargs,
        responses_store=server.enable_responses_api_store
        or _truthy(env.get("VLLM_ENABLE_RESPONSES_API_STORE")),
        enable_lora=server.enable_lora,
        lora_modules=tuple(server.lora_modules or ()),
        max_loras=server.max_loras,
        max_lora_rank=server.max_lora_rank,
        data_parallel_size=server.data_parallel_size,
        max_num_queued_reqs=server.max_num_queued_reqs,
        max_num_queued_tokens=server.max_num_queued_tokens,
        runtime_lora_updating=server.allow_runtime_lora_updating
        or env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "0").strip().lower() in ("1", "true"),
    )


def _truthy(value: str | None) -> bool:
    # vLLM reads VLLM_SERVER_DEV_MODE as bool(int(value)).
    try:
        return bool(int(value or "0"))
    except ValueError:
        return False


def _fingerprint(server: MockVLLMServer) -> str | None:
    # vLLM's ``system_fingerprint``: "vllm-<version>-<8 hex of its config hash>" by default.
    mode = server.fingerprint_mode
    if mode == "none":
        return None
    if mode == "custom":
        return server.fingerprint_value
    identity = f"{server.model}\x00{server.max_model_len}\x00{server.kv_cache_dtype}"
    return f"vllm-{server.vllm_version}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
