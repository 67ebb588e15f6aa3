"""The Messages API's SSE events, as vLLM 0.33 converts its chat stream into them.

vLLM streams an Anthropic request as a chat request with ``include_usage`` and
``continuous_usage_stats``, and turns the chunks into Anthropic's events, each
``event: <type>\\ndata: <json>\\n\\n`` (``model_dump_json(exclude_unset=True)``): the first
chunk becomes ``message_start`` (its usage: the prompt, no output yet); thinking, text and
tool-call deltas open a content block each (``content_block_start``, then
``content_block_delta`` with ``thinking_delta``, ``text_delta`` or ``input_json_delta``),
closed by ``content_block_stop`` when another block starts or the output ends (a thinking
block gets its ``signature_delta`` first); the usage chunk becomes ``message_delta``
(``stop_reason``, ``stop_sequence``, the final usage), then ``message_stop``. An error
mid-stream closes the open block and sends an ``error`` event, and nothing after it.
"""

from __future__ import annotations

import uuid
from typing import Any

from mocksup.vllm._encoding import dumps
from mocksup.vllm._messages import anthropic_usage, error_type, stop_reason
from mocksup.vllm._plan import Plan
from mocksup.vllm._stream import ChunkWriter, StreamSettings, prompt_details

__all__ = ["MessagesEvents"]


def _event(kind: str, body: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, **body}) + b"\n\n"


class MessagesEvents(ChunkWriter):
    """Writes one message's events as the engine produces its tokens."""

    end = b""

    def __init__(
        self, plan: Plan, request_id: str, created: int, model: str, settings: StreamSettings
    ) -> None:
        super().__init__(plan, request_id, created, model, settings)
        self._request_id = request_id
        self._model = model
        self._block: str | None = None  # the type of the block open
        self._index = 0  # the open block's index, or the next one's
        self._signature = ""

    def role_chunks(self) -> list[bytes]:
        """``message_start``, from vLLM's first chat chunk."""
        message: dict[str, Any] = {
            "id": self._request_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.plan.prompt_tokens, "output_tokens": 0},
        }
        return [_event("message_start", {"message": message})]

    def token(self, position: int, k: int) -> bytes:
        """The events of token ``k``."""
        c = self.plan.choices[position]
        self._generated[position] = k + 1
        delta = c.deltas[k]
        out: list[bytes] = []
        if k < c.answer_start:
            if delta and not self.settings.hide_reasoning:
                self._open(out, "thinking", {"type": "thinking", "thinking": ""})
                self._delta(out, {"type": "thinking_delta", "thinking": delta})
        elif delta and not c.tool_calls:
            self._open(out, "text", {"type": "text", "text": ""})
            self._delta(out, {"type": "text_delta", "text": delta})
        if k == len(c.tokens) - 1:
            for call in c.tool_calls:
                self._close(out)
                block = {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": call["function"]["name"],
                    "input": {},
                }
                self._open(out, "tool_use", block)
                if call["function"]["arguments"]:
                    self._delta(
                        out,
                        {"type": "input_json_delta", "partial_json": call["function"]["arguments"]},
                    )
        return b"".join(out)

    def empty_finish(self, position: int) -> bytes:
        """A choice that generated nothing streams no block."""
        return b""

    def usage_chunk(self) -> bytes:
        """The last block's stop, ``message_delta`` with the stop reason and the final usage,
        and ``message_stop``."""
        c = self.plan.choices[0]
        out: list[bytes] = []
        self._close(out)
        # A streamed call's arguments are whole JSON here: it counts as complete.
        reason, sequence = stop_reason(c, bool(c.tool_calls), bool(c.tool_calls))
        generated = c.generated if c.recorded else len(c.tokens)
        details = prompt_details(self.plan, chat=True) if self.settings.prompt_details else None
        usage = anthropic_usage(
            self.plan.prompt_tokens,
            generated,
            details["cached_tokens"] if details else None,
            details["created_cache_tokens"] if details else None,
        )
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        out.append(_event("message_delta", {"delta": delta, "usage": usage}))
        out.append(_event("message_stop", {}))
        return b"".join(out)

    def error_chunk(self, error: dict[str, Any]) -> bytes:  # type: ignore[override]
        """The open block's stop, then Anthropic's ``error`` event (its type from the
        error's status)."""
        out: list[bytes] = []
        self._close(out)
        info = error.get("error", {})
        body = {
            "type": error_type(int(info.get("code") or 500)),
            "message": str(info.get("message", "")),
        }
        out.append(_event("error", {"error": body}))
        return b"".join(out)

    # -- blocks ---------------------------------------------------------------------------

    def _open(self, out: list[bytes], kind: str, block: dict[str, Any]) -> None:
        if self._block == kind and kind != "tool_use":
            return
        self._close(out)
        self._block = kind
        if kind == "thinking":
            self._signature = uuid.uuid4().hex
        out.append(_event("content_block_start", {"content_block": block, "index": self._index}))

    def _delta(self, out: list[bytes], delta: dict[str, Any]) -> None:
        out.append(_event("content_block_delta", {"delta": delta, "index": self._index}))

    def _close(self, out: list[bytes]) -> None:
        if self._block is None:
            return
        if self._block == "thinking":
            self._delta(out, {"type": "signature_delta", "signature": self._signature})
        out.append(_event("content_block_stop", {"index": self._index}))
        self._block = None
        self._index += 1
