"""vLLM's JSON shapes: non-streamed bodies (``model_dump()``, nulls present) and SSE chunks.

Chunks follow vLLM's ``exclude_unset`` serialisation: keys vLLM sets explicitly appear (even
as ``null``), the rest are absent. The common content chunk is assembled from pre-encoded
byte prefixes, since it is the hot path of every stream.
"""

from __future__ import annotations

import json
from typing import Any

from mocksup.vllm.generate import Choice, Plan
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["ChunkWriter", "chat_body", "completion_body", "dumps", "usage"]

DONE = b"data: [DONE]\n\n"


def dumps(value: Any) -> bytes:
    """Compact JSON with raw UTF-8, as pydantic's ``model_dump_json``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


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


def _chat_logprobs(choice: Choice) -> dict[str, Any] | None:
    if choice.logprobs is None or choice.top is None:
        return None
    return {"content": [_chat_token(choice, k) for k in range(len(choice.tokens))]}


def _chat_token(choice: Choice, k: int) -> dict[str, Any]:
    assert choice.logprobs is not None and choice.top is not None
    token = choice.tokens[k]
    return {
        "token": TOKENIZER.token_str(token),
        "logprob": choice.logprobs[k],
        "bytes": list(TOKENIZER.token_bytes(token)),
        "top_logprobs": [
            {"token": TOKENIZER.token_str(t), "logprob": v, "bytes": list(TOKENIZER.token_bytes(t))}
            for t, v in choice.top[k]
        ],
    }


def _completion_logprobs(choice: Choice, start: int, stop: int, offset: int) -> dict[str, Any]:
    assert choice.logprobs is not None and choice.top is not None
    tokens, offsets = [], []
    for k in range(start, stop):
        offsets.append(offset)
        tokens.append(TOKENIZER.token_str(choice.tokens[k]))
        offset += len(choice.deltas[k])
    return {
        "text_offset": offsets,
        "token_logprobs": choice.logprobs[start:stop],
        "tokens": tokens,
        "top_logprobs": [
            {TOKENIZER.token_str(t): v for t, v in choice.top[k]} for k in range(start, stop)
        ],
    }


def chat_body(
    plan: Plan, request_id: str, created: int, model: str, role: str = "assistant"
) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` body."""
    choices = []
    for c in plan.choices:
        message: dict[str, Any] = {
            "role": role,
            "content": None if c.tool_calls else c.echo + c.text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
        }
        if c.tool_calls:
            message["tool_calls"] = c.tool_calls
        message["reasoning"] = None
        choices.append(
            {
                "index": c.index,
                "message": message,
                "logprobs": _chat_logprobs(c),
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
                "token_ids": None,
            }
        )
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage(plan.prompt_tokens, sum(len(c.tokens) for c in plan.choices)),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


def completion_body(plan: Plan, request_id: str, created: int, model: str) -> dict[str, Any]:
    """The non-streamed ``text_completion`` body."""
    choices = []
    for c in plan.choices:
        logprobs = None
        if c.logprobs is not None:
            logprobs = _completion_logprobs(c, 0, len(c.tokens), len(c.echo))
        choices.append(
            {
                "index": c.index,
                "text": c.echo + c.text,
                "logprobs": logprobs,
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
                "token_ids": None,
                "prompt_logprobs": None,
                "prompt_token_ids": None,
            }
        )
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage(plan.prompt_tokens, sum(len(c.tokens) for c in plan.choices)),
        "kv_transfer_params": None,
    }


class ChunkWriter:
    """Encodes the SSE events of one stream.

    :param chat: chat chunks (``delta``) or completion chunks (``text``).
    :param continuous_usage: put the running ``usage`` on every chunk (``continuous_usage_stats``).
    """

    def __init__(
        self,
        plan: Plan,
        request_id: str,
        created: int,
        model: str,
        *,
        chat: bool,
        continuous_usage: bool = False,
        role: str = "assistant",
    ) -> None:
        self.plan = plan
        self.chat = chat
        self.role = role
        self.continuous = continuous_usage
        self._head = {
            "id": request_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        self._prefix = b"data: " + dumps(self._head)[:-1] + b',"choices":[{"index":'
        self._generated = [0] * len(plan.choices)
        self._offsets = [len(c.echo) for c in plan.choices]

    def _event(self, choice: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {**self._head, "choices": [choice]}
        if self.continuous:
            body["usage"] = usage(self.plan.prompt_tokens, sum(self._generated), details=False)
        return b"data: " + dumps(body) + b"\n\n"

    def role_chunks(self) -> list[bytes]:
        """Chat only: the first chunk of every choice, carrying the role (and any echo)."""
        out: list[bytes] = []
        if not self.chat:
            return out
        for c in self.plan.choices:
            delta = {"role": self.role, "content": ""}
            out.append(
                self._event(
                    {"index": c.index, "delta": delta, "logprobs": None, "finish_reason": None}
                )
            )
            if c.echo:
                echo = {"content": c.echo}
                choice = {"index": c.index, "delta": echo, "logprobs": None, "finish_reason": None}
                out.append(self._event(choice))
        return out

    def token(self, position: int, k: int) -> bytes:
        """The event for token ``k`` of choice ``position`` (empty when vLLM sends none)."""
        c = self.plan.choices[position]
        last = k == len(c.tokens) - 1
        self._generated[position] = k + 1
        delta = c.deltas[k]
        if not self.chat and k == 0 and c.echo:
            delta = c.echo + delta
        if not last and not self.continuous and c.logprobs is None:
            if not delta:
                return b""  # vLLM suppresses empty deltas
            if self.chat:
                return (
                    self._prefix
                    + f'{c.index},"delta":{{"content":'.encode()
                    + dumps(delta)
                    + b'},"logprobs":null,"finish_reason":null}]}\n\n'
                )
            return (
                self._prefix
                + f'{c.index},"text":'.encode()
                + dumps(delta)
                + b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
            )
        return self._slow(c, position, k, delta, last)

    def _slow(self, c: Choice, position: int, k: int, delta: str, last: bool) -> bytes:
        finish = c.finish_reason if last else None
        if self.chat:
            message: dict[str, Any] = {}
            if c.tool_calls:
                if last:
                    message["tool_calls"] = [
                        {"index": i, **call} for i, call in enumerate(c.tool_calls)
                    ]
            elif delta or last:
                message["content"] = delta
            if not message and not last:
                return b""
            logprobs = {"content": [_chat_token(c, k)]} if c.logprobs is not None else None
            choice: dict[str, Any] = {
                "index": c.index,
                "delta": message,
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        else:
            logprobs = None
            if c.logprobs is not None:
                logprobs = _completion_logprobs(c, k, k + 1, self._offsets[position])
            choice = {
                "index": c.index,
                "text": delta,
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        self._offsets[position] += len(delta)
        if last or not self.chat:
            choice["stop_reason"] = c.stop_reason if last else None
        return self._event(choice)

    def empty_finish(self, position: int) -> bytes:
        """The finish event of a choice that generated no token."""
        c = self.plan.choices[position]
        if self.chat:
            delta: dict[str, Any] = {"content": ""}
            if c.tool_calls:
                delta = {
                    "tool_calls": [{"index": i, **call} for i, call in enumerate(c.tool_calls)]
                }
            choice = {"index": c.index, "delta": delta, "logprobs": None}
        else:
            choice = {"index": c.index, "text": c.echo, "logprobs": None}
        choice["finish_reason"] = c.finish_reason
        choice["stop_reason"] = c.stop_reason
        return self._event(choice)

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
