"""``POST /v1/completions``: vLLM's ``CompletionRequest``, its prompts, body and chunks."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from mocksup.vllm._encoding import dumps, usage
from mocksup.vllm._errors import APIError
from mocksup.vllm._limits import MAX_PROMPT_ITEMS
from mocksup.vllm._plan import Choice, Plan
from mocksup.vllm._sampling import GenerationRequest, Prompt
from mocksup.vllm._stream import ChunkWriter
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["CompletionChunks", "CompletionRequest", "completion_body"]


class CompletionRequest(GenerationRequest):
    """``POST /v1/completions`` (vLLM's ``CompletionRequest``, the fields used)."""

    prompt: str | list[str] | list[int] | list[list[int]] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _check_completion(self) -> CompletionRequest:
        if self.prompt is None or self.prompt in ("", []):
            raise ValueError("Either prompt or prompt_embeds must be provided and non-empty.")
        if self.logprobs is not None and self.logprobs < 0 and self.logprobs != -1:
            raise ValueError("`logprobs` must be a positive value or -1.")
        if self.suffix is not None:
            raise ValueError("suffix is not currently supported")
        return self

    def prompts(self) -> list[Prompt]:
        """Each prompt of ``prompt`` (a string, strings, token ids or lists of them)."""
        items: list[Any]
        if isinstance(self.prompt, str) or (
            self.prompt and all(isinstance(x, int) for x in self.prompt)
        ):
            items = [self.prompt]
        else:
            items = list(self.prompt or [])
        if len(items) > MAX_PROMPT_ITEMS:
            raise APIError(
                413, f"More than {MAX_PROMPT_ITEMS} prompts in one request (a limit of the mock)."
            )
        prompts = []
        for item in items:
            if isinstance(item, str):
                prompt = Prompt(item, TOKENIZER.encode(item))
            else:
                prompt = Prompt(TOKENIZER.decode(item), list(item))
            prompt.echo = prompt.text if self.echo else ""
            prompts.append(prompt)
        return prompts

    def match_text(self) -> str:
        """The prompt (string prompts joined by spaces)."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        return " ".join(p for p in prompt or [] if isinstance(p, str))

    @property
    def logprobs_wanted(self) -> int | None:
        """``logprobs``."""
        return self.logprobs


def _logprobs(choice: Choice, start: int, stop: int, offset: int) -> dict[str, Any]:
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


def completion_body(
    plan: Plan, request_id: str, created: int, model: str, role: str
) -> dict[str, Any]:
    """The non-streamed ``text_completion`` body (``role`` is unused: no messages)."""
    choices = []
    for c in plan.choices:
        logprobs = None
        if c.logprobs is not None:
            logprobs = _logprobs(c, 0, len(c.tokens), len(c.echo))
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


class CompletionChunks(ChunkWriter):
    """The ``text_completion`` events: one per token, the echo in the first."""

    chunk_object = "text_completion"

    def __init__(self, plan: Plan, *args: Any, **kwargs: Any) -> None:
        super().__init__(plan, *args, **kwargs)
        self._offsets = [len(c.echo) for c in plan.choices]

    def token(self, position: int, k: int) -> bytes:
        """The event for token ``k`` of choice ``position`` (empty when vLLM sends none)."""
        c = self.plan.choices[position]
        last = k == len(c.tokens) - 1
        self._generated[position] = k + 1
        delta = c.deltas[k]
        if k == 0 and c.echo:
            delta = c.echo + delta
        if not last and not self.continuous and c.logprobs is None:
            if not delta:
                return b""  # vLLM suppresses empty deltas
            return (
                self._prefix
                + f'{c.index},"text":'.encode()
                + dumps(delta)
                + b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
            )
        logprobs = None
        if c.logprobs is not None:
            logprobs = _logprobs(c, k, k + 1, self._offsets[position])
        self._offsets[position] += len(delta)
        choice = {"index": c.index, "text": delta, "logprobs": logprobs,
                  "finish_reason": c.finish_reason if last else None,
                  "stop_reason": c.stop_reason if last else None}  # fmt: skip
        return self._event(choice)

    def empty_finish(self, position: int) -> bytes:
        """The finish event of a choice that generated no token."""
        c = self.plan.choices[position]
        choice = {"index": c.index, "text": c.echo, "logprobs": None,
                  "finish_reason": c.finish_reason, "stop_reason": c.stop_reason}  # fmt: skip
        return self._event(choice)
