"""The SSE framing every streamed surface shares; each surface subclasses :class:`ChunkWriter`.

Chunks follow vLLM 0.33's serialisation: ``model_dump_json(exclude_unset=True)``, so the
keys vLLM passes explicitly appear even as ``null`` (a chat content chunk ends with
``"token_ids":null}],"kv_transfer_params":null}``) and the others are absent; the final
usage chunk drops its ``null`` keys. Every token makes a chunk, even one whose text is still
empty. A surface's common content chunk is assembled from pre-encoded bytes, since it is
the hot path of every stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mocksup.vllm._encoding import dumps, short_usage
from mocksup.vllm._plan import Choice, Plan

__all__ = ["DONE", "ChunkWriter", "StreamSettings", "per_request_metrics"]

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class StreamSettings:
    """What a request and the server decide about its stream."""

    role: str = "assistant"
    include_usage: bool = False
    continuous_usage: bool = False
    fingerprint: str | None = None
    return_token_ids: bool = False
    #: ``--enable-prompt-tokens-details``.
    prompt_details: bool = False
    #: ``--enable-per-request-metrics``.
    request_metrics: bool = False
    #: ``--reasoning-parser`` is set: usage counts reasoning tokens.
    reasoning: bool = False
    #: ``include_reasoning: false`` with a parser: no reasoning, log-probabilities or ids.
    hide_reasoning: bool = False


class ChunkWriter:
    """Encodes the SSE events of one stream (what the engine calls while it runs)."""

    #: The ``object`` of every chunk.
    chunk_object = ""
    #: What ends the stream (the Responses and Messages APIs have no ``[DONE]``).
    end = DONE

    def __init__(
        self,
        plan: Plan,
        request_id: str,
        created: int,
        model: str,
        settings: StreamSettings,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.role = settings.role
        self.continuous = settings.continuous_usage
        self._head = {
            "id": request_id,
            "object": self.chunk_object,
            "created": created,
            "model": model,
        }
        self._prefix = b"data: " + dumps(self._head)[:-1] + b',"choices":[{"index":'
        self._generated = [0] * len(plan.choices)
        #: The plain content chunk can use the pre-encoded bytes.
        self._plain = not (settings.continuous_usage or settings.return_token_ids)

    def _event(self, choice: dict[str, Any], **extra: Any) -> bytes:
        body: dict[str, Any] = {**self._head, "choices": [choice]}
        if self.continuous:
            body["usage"] = self._running_usage(choice["index"])
        body.update(extra)
        return b"data: " + dumps(body) + b"\n\n"

    def _running_usage(self, index: int) -> dict[str, Any]:
        """The ``usage`` of a chunk when ``continuous_usage_stats`` is on."""
        raise NotImplementedError

    def _finish_extra(self) -> dict[str, Any]:
        # The terminal chunk of a choice carries the fingerprint when no usage chunk follows.
        extra: dict[str, Any] = {}
        if not self.settings.include_usage and self.settings.fingerprint is not None:
            extra["system_fingerprint"] = self.settings.fingerprint
        extra["kv_transfer_params"] = None
        return extra

    def opening(self) -> bytes:
        """What the stream sends before the engine admits the request (nothing, unless the
        surface opens its stream at once, as the Responses API does)."""
        return b""

    def role_chunks(self) -> list[bytes]:
        """The events sent before the first token (none unless the surface has some)."""
        return []

    def token(self, position: int, k: int) -> bytes:
        """The event for token ``k`` of choice ``position``."""
        raise NotImplementedError

    def empty_finish(self, position: int) -> bytes:
        """The finish event of a choice that generated no token."""
        raise NotImplementedError

    def abort_finish(self, position: int) -> bytes:
        """The finish event of a choice aborted before its end (``finish_reason: abort``)."""
        c = self.plan.choices[position]
        c.finish_reason, c.stop_reason, c.tool_calls = "abort", None, []
        return self.empty_finish(position)

    def usage_chunk(self) -> bytes:
        """The final ``"choices": []`` chunk with the whole request's usage."""
        plan = self.plan
        total = sum(c.generated if c.recorded else len(c.tokens) for c in plan.choices)
        details = prompt_details(plan, chat=self.chunk_object != "text_completion") if (
            self.settings.prompt_details) else None  # fmt: skip
        body: dict[str, Any] = {
            **self._head,
            "choices": [],
            "usage": short_usage(plan.prompt_tokens, total, details, self.reasoning_count()),
        }
        if self.settings.fingerprint is not None:
            body["system_fingerprint"] = self.settings.fingerprint
        metrics = per_request_metrics(plan) if self.settings.request_metrics else None
        if metrics is not None:
            body["metrics"] = {k: v for k, v in metrics.items() if v is not None}
        return b"data: " + dumps(body) + b"\n\n"

    def reasoning_count(self, position: int | None = None) -> int | None:
        """Reasoning tokens generated so far (of one choice, or all), with a reasoning
        parser; ``None`` without one."""
        if not self.settings.reasoning:
            return None
        choices = self.plan.choices if position is None else [self.plan.choices[position]]
        return sum(
            c.reasoning_within(c.generated if c.recorded else self._generated[c.index])
            for c in choices
        )

    @staticmethod
    def error_chunk(error: dict[str, Any]) -> bytes:
        """An error frame sent mid-stream (HTTP status stays 200)."""
        return b"data: " + dumps(error) + b"\n\n"


def prompt_details(plan: Plan, *, chat: bool) -> dict[str, Any]:
    """``usage.prompt_tokens_details`` with ``--enable-prompt-tokens-details``: the cached
    tokens of the request's first sequence (and, in chat, those it added to the cache)."""
    first = plan.choices[0] if plan.choices else None
    cached = first.cached_tokens if first is not None else 0
    created = first.created_cache_tokens if chat and first is not None else None
    return {"cached_tokens": cached, "created_cache_tokens": created, "multimodal_tokens": None}


def per_request_metrics(plan: Plan) -> dict[str, Any] | None:
    """The ``metrics`` object of ``--enable-per-request-metrics`` (milliseconds), for a
    request of one sequence; ``None`` otherwise, as vLLM leaves it out for ``n > 1``."""
    if len(plan.choices) != 1:
        return None
    c: Choice = plan.choices[0]
    timing = c.timing
    if timing is None:
        return None
    tokens = timing.generation_tokens
    mean_itl = timing.decode / (tokens - 1) * 1000 if tokens > 1 else None
    return {
        "time_to_first_token_ms": timing.prefill * 1000,
        "generation_time_ms": timing.decode * 1000,
        "queue_time_ms": timing.queue * 1000,
        "mean_itl_ms": mean_itl,
        "tokens_per_second": tokens / timing.inference if timing.inference > 0 else None,
        "speculative_decoding": None,
    }
