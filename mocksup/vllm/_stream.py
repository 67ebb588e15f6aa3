"""The SSE framing every streamed surface shares; each surface subclasses :class:`ChunkWriter`.

Chunks follow vLLM's ``exclude_unset`` serialisation: keys vLLM sets explicitly appear (even
as ``null``), the rest are absent. A surface's common content chunk is assembled from
pre-encoded byte prefixes (:attr:`ChunkWriter._prefix`), since it is the hot path of every
stream.
"""

from __future__ import annotations

from typing import Any

from mocksup.vllm._encoding import dumps, usage
from mocksup.vllm._plan import Plan

__all__ = ["DONE", "ChunkWriter"]

DONE = b"data: [DONE]\n\n"


class ChunkWriter:
    """Encodes the SSE events of one stream (what the engine calls while it runs).

    :param continuous_usage: put the running ``usage`` on every chunk
        (``continuous_usage_stats``).
    """

    #: The ``object`` of every chunk.
    chunk_object = ""

    def __init__(
        self,
        plan: Plan,
        request_id: str,
        created: int,
        model: str,
        *,
        continuous_usage: bool = False,
        role: str = "assistant",
    ) -> None:
        self.plan = plan
        self.role = role
        self.continuous = continuous_usage
        self._head = {
            "id": request_id,
            "object": self.chunk_object,
            "created": created,
            "model": model,
        }
        self._prefix = b"data: " + dumps(self._head)[:-1] + b',"choices":[{"index":'
        self._generated = [0] * len(plan.choices)

    def _event(self, choice: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {**self._head, "choices": [choice]}
        if self.continuous:
            body["usage"] = usage(self.plan.prompt_tokens, sum(self._generated), details=False)
        return b"data: " + dumps(body) + b"\n\n"

    def role_chunks(self) -> list[bytes]:
        """The events sent before the first token (none unless the surface has some)."""
        return []

    def token(self, position: int, k: int) -> bytes:
        """The event for token ``k`` of choice ``position`` (empty when vLLM sends none)."""
        raise NotImplementedError

    def empty_finish(self, position: int) -> bytes:
        """The finish event of a choice that generated no token."""
        raise NotImplementedError

    def usage_chunk(self) -> bytes:
        """The final ``"choices": []`` chunk with the whole request's usage."""
        total = sum(len(c.tokens) for c in self.plan.choices)
        body: dict[str, Any] = {
            **self._head,
            "choices": [],
            "usage": usage(self.plan.prompt_tokens, total, False),
        }
        return b"data: " + dumps(body) + b"\n\n"

    @staticmethod
    def error_chunk(error: dict[str, Any]) -> bytes:
        """An error frame sent mid-stream (HTTP status stays 200)."""
        return b"data: " + dumps(error) + b"\n\n"
