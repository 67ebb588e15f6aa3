"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic Messages API as
vLLM 0.33 serves it (its ``anthropic`` entrypoint).

vLLM translates an Anthropic request into a chat request (system prompt, messages with
their text, thinking, ``tool_use`` and ``tool_result`` blocks, tools, ``tool_choice``,
``output_config``, ``thinking``) and the chat answer back: :func:`to_chat` and
:func:`message_body` do the same with the mock's chat request and plan, so usage, metrics
and the span are chat's (the message id is the chat id, ``chatcmpl-...``). Errors after
the schema check are Anthropic-shaped (``{"type": "error", "error": {"type", "message"}}``,
the type from the status as vLLM's ``translate_error_type`` picks it); a body the schema
refuses gets vLLM's usual 400, as FastAPI answers it before the Anthropic handler runs.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mocksup.vllm._chat import ChatRequest
from mocksup.vllm._errors import APIError
from mocksup.vllm._limits import STOP_STRINGS
from mocksup.vllm._plan import Choice, Plan

__all__ = [
    "CountTokensRequest",
    "MessagesRequest",
    "anthropic_error",
    "anthropic_usage",
    "error_type",
    "message_body",
    "stop_reason",
    "to_chat",
]

#: Anthropic's ``error.type`` for an HTTP status (vLLM's ``translate_error_type``).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
_BILLING_HEADER = "x-anthropic-billing-header"
_BLOCK_TYPES = Literal[
    "text",
    "image",
    "tool_use",
    "tool_result",
    "tool_reference",
    "thinking",
    "redacted_thinking",
    "tool_addition",
    "tool_removal",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentBlock(_Model):
    """A content block of a message (the fields vLLM reads)."""

    type: _BLOCK_TYPES
    text: str | None = None
    source: dict[str, Any] | None = None
    id: str | None = None
    tool_use_id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class Message(_Model):
    """One message: its role and its text or blocks."""

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(_Model):
    """A tool definition (``input_schema`` defaults to an object schema)."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = None
    defer_loading: bool | None = None

    @field_validator("input_schema")
    @classmethod
    def _object_by_default(cls, value: dict[str, Any]) -> dict[str, Any]:
        value.setdefault("type", "object")
        return value


class ToolChoice(_Model):
    """``tool_choice``: ``auto``, ``any``, ``none`` or a named ``tool``."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice.name is required when type is 'tool'")
        return self


class _Format(_Model):
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    type: Literal["json_schema"] = "json_schema"


class OutputConfig(_Model):
    """``output_config``: an effort and a JSON output format."""

    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: _Format | None = None


class _ThinkingEnabled(_Model):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)
    display: Literal["summarized", "omitted", "updates"] | None = None


class _ThinkingDisabled(_Model):
    type: Literal["disabled"]


class _ThinkingAdaptive(_Model):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted", "updates"] | None = None


Thinking = Annotated[
    _ThinkingEnabled | _ThinkingDisabled | _ThinkingAdaptive, Field(discriminator="type")
]


class CountTokensRequest(_Model):
    """``POST /v1/messages/count_tokens`` (vLLM's ``AnthropicCountTokensRequest``)."""

    model: str
    messages: list[Message]
    output_config: OutputConfig | None = None
    system: str | list[ContentBlock] | None = None
    thinking: Thinking | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _model_given(cls, value: str) -> str:
        if not value:
            raise ValueError("Model is required")
        return value


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages`` (vLLM's ``AnthropicMessagesRequest``)."""

    max_tokens: int
    metadata: dict[str, Any] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=STOP_STRINGS)] | None = None
    stream: bool | None = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None

    @field_validator("max_tokens")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("max_tokens must be positive")
        return value

    @model_validator(mode="after")
    def _budget_below_max(self) -> MessagesRequest:
        if isinstance(self.thinking, _ThinkingEnabled) and (
            self.thinking.budget_tokens >= self.max_tokens
        ):
            raise ValueError("thinking.budget_tokens must be less than max_tokens")
        return self


# -- the request as a chat request --------------------------------------------------------


def to_chat(request: CountTokensRequest) -> ChatRequest:
    """The chat request vLLM's ``to_chat_completion_request`` makes of ``request``.

    :raises APIError: 400 when the chat request it makes is not a valid one (vLLM answers
        the error it hits, translated).
    """
    messages: list[dict[str, Any]] = []
    system = _system_text(request.system)
    if system:
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        _add_message(messages, message)
    data: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "chat_template_kwargs": request.chat_template_kwargs,
    }
    if isinstance(request, MessagesRequest):
        data.update(
            max_tokens=request.max_tokens,
            max_completion_tokens=request.max_tokens,
            stop=request.stop_sequences,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
        )
        if request.stream:
            data["stream"] = True
            data["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    config = request.output_config
    if config is not None and config.format is not None and config.format.json_schema:
        data["response_format"] = {
            "type": "json_schema",
            "json_schema": {"schema": config.format.json_schema, "name": config.format.type},
        }
    if config is not None and config.effort is not None:
        data["reasoning_effort"] = config.effort
    if isinstance(request.thinking, _ThinkingDisabled):
        data["reasoning_effort"] = "none"
    elif isinstance(request.thinking, _ThinkingEnabled):
        data["thinking_token_budget"] = request.thinking.budget_tokens
    _add_tools(data, request)
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as error:
        raise APIError(400, str(error)) from None


def _system_text(system: str | list[ContentBlock] | None) -> str:
    if isinstance(system, str):
        return system
    return "".join(
        b.text
        for b in system or []
        if b.type == "text" and b.text and not b.text.startswith(_BILLING_HEADER)
    )


def _add_message(messages: list[dict[str, Any]], message: Message) -> None:
    # vLLM's _convert_messages: inline system messages stay in place (the mock's chat
    # template takes them anywhere); blocks become text, reasoning, tool calls and tool
    # messages.
    if message.role == "system":
        text = (
            message.content if isinstance(message.content, str) else _system_text(message.content)
        )
        if text and not text.startswith(_BILLING_HEADER):
            messages.append({"role": "system", "content": text})
        return
    out: dict[str, Any] = {"role": message.role}
    if isinstance(message.content, str):
        out["content"] = message.content
        messages.append(out)
        return
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for block in message.content:
        if block.type == "text" and block.text:
            texts.append(block.text)
        elif block.type == "thinking" and block.thinking is not None:
            reasoning.append(block.thinking)
        elif block.type == "tool_use":
            calls.append(
                {
                    "id": block.id or "call_0",
                    "type": "function",
                    "function": {
                        "name": block.name or "",
                        "arguments": json.dumps(block.input or {}),
                    },
                }
            )
        elif block.type == "tool_result":
            _add_tool_result(messages, block, message.role, texts)
    if reasoning:
        out["reasoning"] = "".join(reasoning)
    if calls:
        out["tool_calls"] = calls
    if texts:
        out["content"] = (
            texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]
        )
    if not (message.role == "user" and "content" not in out):
        messages.append(out)


def _add_tool_result(
    messages: list[dict[str, Any]], block: ContentBlock, role: str, texts: list[str]
) -> None:
    if role != "user":
        texts.append(f"Tool result: {block.content if block.content else ''}")
        return
    content = block.content
    if isinstance(content, list):
        content = "\n".join(
            str(item.get("text", ""))
            for item in content
            if isinstance(item, dict) and item.get("type") == "text"
        )
    messages.append(
        {"role": "tool", "tool_call_id": block.tool_use_id or "", "content": content or ""}
    )


def _add_tools(data: dict[str, Any], request: CountTokensRequest) -> None:
    choice = request.tool_choice
    if choice is not None:
        data["parallel_tool_calls"] = not choice.disable_parallel_tool_use
        data["tool_choice"] = {
            "auto": "auto",
            "any": "required",
            "none": "none",
            "tool": {"type": "function", "function": {"name": choice.name}},
        }[choice.type]
    if request.tools is None:
        return
    data["tools"] = [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.input_schema,
                "strict": t.strict,
                "defer_loading": t.defer_loading,
            },
        }
        for t in request.tools
    ]
    data.setdefault("tool_choice", "auto")


# -- the answer ---------------------------------------------------------------------------


def error_type(status: int) -> str:
    """Anthropic's ``error.type`` for ``status``."""
    found = _ERROR_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error(error: APIError) -> APIError:
    """``error`` as the Messages API answers it (status and headers kept)."""
    return _AnthropicError(error.status, error.message, headers=error.headers)


class _AnthropicError(APIError):
    def body(self) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": error_type(self.status), "message": self.message},
        }


def stop_reason(c: Choice, tool_used: bool, complete: bool) -> tuple[str | None, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a chat finish reason."""
    if c.finish_reason == "length":
        return "max_tokens", None
    if c.finish_reason not in ("stop", "tool_calls"):
        return None, None
    if complete:
        return "tool_use", None
    if isinstance(c.stop_reason, str):
        return "stop_sequence", c.stop_reason
    if c.finish_reason == "tool_calls" or tool_used:
        return "tool_use", None
    return "end_turn", None


def anthropic_usage(
    prompt: int, output: int, cached: int | None, created: int | None
) -> dict[str, int]:
    """``usage``: input tokens less those read from or written to the cache (the cache
    fields only with ``--enable-prompt-tokens-details``, as vLLM reports them)."""
    usage = {"input_tokens": prompt, "output_tokens": output}
    if cached is not None and created is not None:
        usage["input_tokens"] = max(0, prompt - cached - created)
        usage["cache_creation_input_tokens"] = created
        usage["cache_read_input_tokens"] = cached
    return usage


def message_body(plan: Plan, request_id: str, model: str, details: bool) -> dict[str, Any]:
    """The non-streamed ``message`` (vLLM's ``model_dump(exclude_none=True)``)."""
    c = plan.choices[0]
    content: list[dict[str, Any]] = []
    if c.reasoning:
        content.append({"type": "thinking", "thinking": c.reasoning, "signature": uuid.uuid4().hex})
    if c.text:
        content.append({"type": "text", "text": c.text})
    content.extend(
        {
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": json.loads(call["function"]["arguments"]),
        }
        for call in c.tool_calls
    )
    reason, sequence = stop_reason(c, bool(c.tool_calls), bool(c.tool_calls))
    body: dict[str, Any] = {
        "id": request_id,
        "type": "message",
        "role": "assistant",
        "content": content or [{"type": "text", "text": ""}],
        "model": model,
    }
    if reason is not None:
        body["stop_reason"] = reason
    if sequence is not None:
        body["stop_sequence"] = sequence
    body["usage"] = anthropic_usage(
        c.prompt_tokens,
        len(c.tokens),
        c.cached_tokens if details else None,
        c.created_cache_tokens if details else None,
    )
    return body
