"""``POST /v1/chat/completions``: vLLM's ``ChatCompletionRequest``, its prompt, body and chunks."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from mocksup.vllm._encoding import dumps, usage
from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._plan import Choice, Plan
from mocksup.vllm._sampling import GenerationRequest, Prompt, Tool, ToolUse
from mocksup.vllm._stream import ChunkWriter
from mocksup.vllm._tool_choice import check_tool_usage
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["ChatChunks", "ChatRequest", "chat_body", "content_text", "render_chat"]


class ChatRequest(GenerationRequest):
    """``POST /v1/chat/completions`` (vLLM's ``ChatCompletionRequest``, the fields used)."""

    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    add_generation_prompt: bool = True

    # Model validators run last-defined first, as vLLM's: tools, then log-probabilities.
    @model_validator(mode="before")
    @classmethod
    def _check_logprobs(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        top = data.get("top_logprobs")
        if top is not None and not isinstance(top, (int, float)):
            raise VLLMValidationError(
                "`top_logprobs` must be an integer.", parameter="top_logprobs", value=top
            )
        if top is not None:
            if top < 0 and top != -1:
                raise VLLMValidationError(
                    "`top_logprobs` must be a positive value or -1.",
                    parameter="top_logprobs",
                    value=top,
                )
            if (top == -1 or top > 0) and not data.get("logprobs"):
                raise VLLMValidationError(
                    "when using `top_logprobs`, `logprobs` must be set to true.",
                    parameter="top_logprobs",
                )
        return data

    @model_validator(mode="before")
    @classmethod
    def _check_tools(cls, data: Any) -> Any:
        return check_tool_usage(data)

    def prompts(self) -> list[Prompt]:
        """One prompt: the messages rendered by the mock's chat template."""
        if not self.messages:
            # vLLM renders the template; with nothing to render the engine refuses it.
            raise VLLMValidationError("The decoder prompt cannot be empty")
        text = render_chat(self.messages, self.add_generation_prompt)
        last = self.messages[-1]
        echo = content_text(last) if self.echo and last.get("role") == "assistant" else ""
        return [Prompt(text, TOKENIZER.encode(text), echo)]

    def match_text(self) -> str:
        """The text of the last ``user`` message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message)
        return ""

    @property
    def max_new(self) -> int | None:
        """``max_completion_tokens``, which wins over the deprecated ``max_tokens``."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    @property
    def logprobs_wanted(self) -> int | None:
        """``top_logprobs`` when ``logprobs`` is on."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def tool_use(self) -> ToolUse | None:
        """The tools, unless ``tool_choice`` is ``"none"``."""
        if self.tool_choice == "none":
            return None
        choice = self.tool_choice
        forced = choice["function"]["name"] if isinstance(choice, dict) else None
        return ToolUse(list(self.tools or []), forced, choice == "required")


def render_chat(messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    """The prompt a chat request becomes (a ChatML-like template; it fixes the token count)."""
    parts = [
        f"<|{message.get('role', 'user')}|>\n{content_text(message)}\n" for message in messages
    ]
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def content_text(message: dict[str, Any]) -> str:
    """The text of a message: its string content, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def chat_body(plan: Plan, request_id: str, created: int, model: str, role: str) -> dict[str, Any]:
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
                "logprobs": _logprobs(c),
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
        "usage": _usage(plan),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


def _usage(plan: Plan) -> dict[str, Any]:
    return usage(plan.prompt_tokens, sum(len(c.tokens) for c in plan.choices))


def _logprobs(choice: Choice) -> dict[str, Any] | None:
    if choice.logprobs is None or choice.top is None:
        return None
    return {"content": [_token_logprobs(choice, k) for k in range(len(choice.tokens))]}


def _token_logprobs(choice: Choice, k: int) -> dict[str, Any]:
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


class ChatChunks(ChunkWriter):
    """The ``chat.completion.chunk`` events: a role chunk per choice, then ``delta`` chunks."""

    chunk_object = "chat.completion.chunk"

    def role_chunks(self) -> list[bytes]:
        """The first chunk of every choice, carrying the role (and any echo)."""
        out: list[bytes] = []
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
        if not last and not self.continuous and c.logprobs is None:
            if not delta:
                return b""  # vLLM suppresses empty deltas
            return (
                self._prefix
                + f'{c.index},"delta":{{"content":'.encode()
                + dumps(delta)
                + b'},"logprobs":null,"finish_reason":null}]}\n\n'
            )
        return self._full(c, k, delta, last)

    def _full(self, c: Choice, k: int, delta: str, last: bool) -> bytes:
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
        logprobs = {"content": [_token_logprobs(c, k)]} if c.logprobs is not None else None
        choice: dict[str, Any] = {
            "index": c.index,
            "delta": message,
            "logprobs": logprobs,
            "finish_reason": c.finish_reason if last else None,
        }
        if last:
            choice["stop_reason"] = c.stop_reason
        return self._event(choice)

    def empty_finish(self, position: int) -> bytes:
        """The finish event of a choice that generated no token."""
        c = self.plan.choices[position]
        delta: dict[str, Any] = {"content": ""}
        if c.tool_calls:
            delta = {"tool_calls": [{"index": i, **call} for i, call in enumerate(c.tool_calls)]}
        choice = {"index": c.index, "delta": delta, "logprobs": None,
                  "finish_reason": c.finish_reason, "stop_reason": c.stop_reason}  # fmt: skip
        return self._event(choice)
