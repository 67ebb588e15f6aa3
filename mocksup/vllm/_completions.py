"""``POST /v1/completions``: vLLM's ``CompletionRequest``, its prompts, body and chunks."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationInfo, model_validator

from mocksup.vllm._chat import BodyOptions
from mocksup.vllm._checks import check_prompt_ids
from mocksup.vllm._encoding import dumps, usage
from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._limits import MAX_COMPLETION_PROMPTS
from mocksup.vllm._logprobs import (
    completion_logprobs,
    prompt_logprob_rows,
    prompt_logprobs_body,
)
from mocksup.vllm._plan import Choice, Plan
from mocksup.vllm._sampling import GenerationRequest, Prompt, check_logprob_counts
from mocksup.vllm._stream import ChunkWriter, per_request_metrics
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["CompletionChunks", "CompletionRequest", "completion_body"]

_TokenId = Annotated[int, Field(ge=0)]


class CompletionRequest(GenerationRequest):
    """``POST /v1/completions`` (vLLM's ``CompletionRequest``, the fields used)."""

    prompt: list[_TokenId] | list[list[_TokenId]] | str | list[str] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    suffix: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_prompt(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        limit = (info.context or {}).get("max_completion_prompts", MAX_COMPLETION_PROMPTS)
        if data.get("max_tokens", 0) is None:
            data["max_tokens"] = 16  # null means the default, as in vLLM
        prompt = data.get("prompt")
        if prompt is None or prompt == "":
            raise VLLMValidationError(
                "Either prompt or prompt_embeds must be provided and non-empty.",
                parameter="prompt",
            )
        many = isinstance(prompt, list) and not all(isinstance(p, int) for p in prompt)
        if many and len(prompt) > limit:
            raise VLLMValidationError(
                f"prompt list length {len(prompt)} exceeds the maximum allowed count of "
                f"{limit}. To increase this limit, set the "
                "VLLM_MAX_COMPLETION_PROMPTS environment variable.",
                parameter="prompt",
            )
        if data.get("logprob_token_ids") and data.get("logprobs") is None:
            raise VLLMValidationError(
                "when using `logprob_token_ids`, `logprobs` must be set.",
                parameter="logprob_token_ids",
            )
        check_logprob_counts(data, ("prompt_logprobs", "logprobs"))
        return data

    @model_validator(mode="after")
    def _check_completion(self) -> CompletionRequest:
        if self.prompt == []:
            raise ValueError("Either prompt or prompt_embeds must be provided and non-empty.")
        if self.suffix is not None:
            raise ValueError("suffix is not currently supported")
        return self

    def prompts(self, role: str = "assistant") -> list[Prompt]:
        """Each prompt of ``prompt`` (a string, strings, token ids or lists of them)."""
        items: list[Any]
        if isinstance(self.prompt, str) or (
            self.prompt and all(isinstance(x, int) for x in self.prompt)
        ):
            items = [self.prompt]
        else:
            items = list(self.prompt or [])
        prompts = []
        for item in items:
            if isinstance(item, str):
                prompt = Prompt(item, TOKENIZER.encode(item))
            else:
                check_prompt_ids(item)
                prompt = Prompt(TOKENIZER.decode(item), list(item))
            # With return_token_ids vLLM echoes no prompt text (the ids say it).
            prompt.echo = prompt.text if self.echo and not self.return_token_ids else ""
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

    @property
    def prompt_logprobs_wanted(self) -> int | None:
        """``prompt_logprobs``, else ``logprobs`` with ``echo`` (vLLM asks for both)."""
        if self.prompt_logprobs is None and self.echo:
            return self.logprobs
        return self.prompt_logprobs


def _choice_logprobs(c: Choice, request: CompletionRequest, as_ids: bool) -> Any:
    if request.logprobs is None or c.top is None:
        return None
    rows: list[list[tuple[int, float]] | None] = list(c.top)
    tokens = list(c.tokens)
    if request.echo:
        # Echo covers the prompt too: its tokens, with the prompt's log-probabilities.
        rows = [*prompt_logprob_rows(c.prompt_ids, request.logprobs), *rows]
        tokens = [*c.prompt_ids, *tokens]
    return completion_logprobs(tokens, rows, c.logprobs_wanted, 0, as_ids)


def completion_body(plan: Plan, created: int, options: BodyOptions) -> dict[str, Any]:
    """The non-streamed ``text_completion`` body (``role`` is unused: no messages)."""
    request = options.request
    assert isinstance(request, CompletionRequest)
    token_ids = bool(request.return_token_ids)
    wanted = request.prompt_logprobs_wanted
    choices = []
    for c in plan.choices:
        choices.append(
            {
                "index": c.index,
                "text": c.echo + c.text,
                "logprobs": _choice_logprobs(c, request, plan.as_ids),
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
                "token_ids": c.tokens if token_ids else None,
                "prompt_logprobs": (
                    prompt_logprobs_body(c.prompt_ids, wanted) if wanted is not None else None
                ),
                "prompt_token_ids": c.prompt_ids if token_ids else None,
                "routed_experts": None,
                "weight_versions": None,
            }
        )
    details = None
    if options.prompt_details and plan.choices:
        details = {"cached_tokens": plan.choices[-1].cached_tokens,
                   "created_cache_tokens": None, "multimodal_tokens": None}  # fmt: skip
    single = len({c.prompt_index for c in plan.choices}) == 1
    return {
        "id": options.request_id,
        "object": "text_completion",
        "created": created,
        "model": options.model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": options.fingerprint,
        "usage": usage(plan.prompt_tokens, sum(len(c.tokens) for c in plan.choices), details),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": per_request_metrics(plan) if options.metrics and single else None,
    }


class CompletionChunks(ChunkWriter):
    """The ``text_completion`` events: one per token, the echo in the first."""

    chunk_object = "text_completion"

    def __init__(self, plan: Plan, *args: Any, **kwargs: Any) -> None:
        super().__init__(plan, *args, **kwargs)
        self._offsets = [0] * len(plan.choices)
        self._first = [True] * len(plan.choices)

    def _running_usage(self, index: int) -> dict[str, Any]:
        c = self.plan.choices[index]
        done = self._generated[index]
        return {"prompt_tokens": c.prompt_tokens, "total_tokens": c.prompt_tokens + done,
                "completion_tokens": done}  # fmt: skip

    def token(self, position: int, k: int) -> bytes:
        """The event for token ``k`` of choice ``position``."""
        c = self.plan.choices[position]
        last = k == len(c.tokens) - 1
        self._generated[position] = k + 1
        delta = c.deltas[k]
        first = self._first[position]
        if not last and not first and self._plain and c.logprobs is None:
            return (
                self._prefix
                + f'{c.index},"text":'.encode()
                + dumps(delta)
                + b',"logprobs":null,"finish_reason":null,"stop_reason":null,'
                b'"prompt_token_ids":null,"token_ids":null,"weight_versions":null}],'
                b'"kv_transfer_params":null}\n\n'
            )
        return self._full(c, position, k, last)

    def _full(self, c: Choice, position: int, k: int, last: bool) -> bytes:
        first, self._first[position] = self._first[position], False
        settings = self.settings
        text, tokens = c.deltas[k], [c.tokens[k]]
        rows: list[list[tuple[int, float]] | None] = list(c.top[k : k + 1] if c.top else [])
        prompt_ids = None
        if first and (c.echo or settings.return_token_ids):
            # The first chunk carries the echoed prompt (and its ids).
            prompt_ids = c.prompt_ids
            text = c.echo + text
            if c.echo and c.top is not None:
                wanted = c.logprobs_wanted
                rows = [*prompt_logprob_rows(c.prompt_ids, wanted), *rows]
                tokens = [*c.prompt_ids, *tokens]
        logprobs = None
        if c.logprobs is not None:
            logprobs = completion_logprobs(
                tokens, rows, c.logprobs_wanted, self._offsets[position], self.plan.as_ids
            )
            if logprobs["tokens"]:
                self._offsets[position] = logprobs["text_offset"][-1] + len(logprobs["tokens"][-1])
        choice = {"index": c.index, "text": text, "logprobs": logprobs,
                  "finish_reason": c.finish_reason if last else None,
                  "stop_reason": c.stop_reason if last else None,
                  "prompt_token_ids": prompt_ids,
                  "token_ids": [c.tokens[k]] if settings.return_token_ids else None,
                  "weight_versions": None}  # fmt: skip
        if last:
            return self._event(choice, **self._finish_extra())
        return self._event(choice, kv_transfer_params=None)

    def empty_finish(self, position: int) -> bytes:
        """The finish event of a choice that generated no token."""
        c = self.plan.choices[position]
        ids = c.prompt_ids if self._first[position] and self.settings.return_token_ids else None
        self._first[position] = False
        token_ids: list[int] | None = [] if self.settings.return_token_ids else None
        choice = {"index": c.index, "text": c.echo, "logprobs": None,
                  "finish_reason": c.finish_reason, "stop_reason": c.stop_reason,
                  "prompt_token_ids": ids, "token_ids": token_ids,
                  "weight_versions": None}  # fmt: skip
        return self._event(choice, **self._finish_extra())
