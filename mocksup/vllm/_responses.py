"""``POST /v1/responses``: vLLM's ``ResponsesRequest``, its translation into a chat request,
and the ``response`` object it answers.

vLLM serves the Responses API on its chat machinery: ``instructions``, the stored history of
``previous_response_id`` and ``input`` become chat messages, ``text.format`` becomes a
structured-output constraint, ``reasoning.effort`` a ``reasoning_effort``, and the tools are
the chat template's. :func:`to_chat` does the same into the mock's
:class:`~._chat.ChatRequest`, so planning, the engine, metrics and the span are the chat
ones; the engine request id is the response id plus ``_0`` (vLLM's first sub-request).

Without a parser (``--reasoning-parser``, or ``--enable-auto-tool-choice`` with
``--tool-call-parser``) vLLM answers the model's text as one ``message`` item; with one it
splits it into ``reasoning``, ``message`` and ``function_call`` items. Bodies are the
``model_dump()`` of vLLM's ``ResponsesResponse`` with the ``openai`` types' fields (every
field, ``null`` ones included); :mod:`._responses_stream` writes the same objects as events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mocksup.vllm._chat import ChatRequest
from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._ids import random_hex
from mocksup.vllm._logprobs import token_text
from mocksup.vllm._plan import Choice, Plan
from mocksup.vllm._sampling import StructuredOutputs

__all__ = [
    "ResponseContext",
    "ResponsesRequest",
    "function_call_item",
    "message_item",
    "output_items",
    "reasoning_item",
    "response_body",
    "to_chat",
    "usage_body",
]

_INT64 = 2**63
#: ``include`` values vLLM accepts (OpenAI's list).
_INCLUDE = Literal[
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
    "file_search_call.results",
    "message.input_image.image_url",
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
]
#: The fields of the ``openai`` types vLLM dumps, in their order (unset ones are ``null``).
_FUNCTION_TOOL = (
    "name",
    "parameters",
    "strict",
    "type",
    "allowed_callers",
    "async",
    "defer_loading",
    "description",
    "output_schema",
)
_REASONING = ("context", "effort", "generate_summary", "mode", "summary")
_JSON_SCHEMA_FORMAT = ("name", "schema", "type", "description", "strict")


class ResponsesRequest(BaseModel):
    """``POST /v1/responses`` (vLLM's ``ResponsesRequest``, the fields the mock reads or
    echoes; others are accepted and ignored, as vLLM does)."""

    model_config = ConfigDict(extra="allow")

    background: bool | None = False
    include: list[_INCLUDE] | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] | None = None
    model: str | None = None
    logit_bias: dict[str, float] | None = None
    parallel_tool_calls: bool | None = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    include_reasoning: bool = True
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] = "auto"
    store: bool | None = True
    stream: bool | None = False
    temperature: float | None = None
    text: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_logprobs: int | None = 0
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    truncation: Literal["auto", "disabled"] | None = "disabled"
    user: str | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    safety_identifier: str | None = None
    request_id: str | None = None
    seed: int | None = Field(None, ge=-_INT64, le=_INT64 - 1)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    structured_outputs: StructuredOutputs | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    # Validators run last-defined first, as vLLM's: tools, then the prompt, then background.
    @model_validator(mode="before")
    @classmethod
    def _check_background(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("background") and not data.get("store", True):
            raise VLLMValidationError(
                "background can only be used when `store` is true", parameter="background"
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _check_prompt(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("prompt") is not None:
            raise VLLMValidationError("prompt template is not supported", parameter="prompt")
        if isinstance(data, dict) and data.get("prompt_cache_retention") == "in-memory":
            data["prompt_cache_retention"] = "in_memory"  # older SDKs' spelling
        return data

    @model_validator(mode="before")
    @classmethod
    def _check_tools(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        tools = data.get("tools")
        choice = data.get("tool_choice", "auto")
        named = isinstance(choice, dict) and choice.get("type") in ("function", "custom")
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, dict):
                continue  # as vLLM: the field's own validation refuses it (400)
            fmt = tool.get("format")
            if (
                tool.get("type") == "custom"
                and isinstance(fmt, dict)
                and (fmt.get("type") == "grammar")
            ):
                raise VLLMValidationError(
                    "Custom tools with a grammar format are not supported; only free-form "
                    "text custom tools are accepted.",
                    parameter="tools",
                )
        if not tools:
            if choice in ("auto", "none"):
                data["tool_choice"] = "none"
            elif choice == "required":
                raise VLLMValidationError(
                    "Tool choice 'required' must be specified with 'tools' parameter.",
                    parameter="tool_choice",
                )
            elif named:
                raise _tool_not_found()
        elif named:
            names = {t.get("name") for t in tools if isinstance(t, dict)}
            if not choice.get("name") or choice["name"] not in names:
                raise _tool_not_found()
        return data

    @property
    def wants_logprobs(self) -> bool:
        """``include`` asks for the output text's log-probabilities."""
        return bool(self.include) and "message.output_text.logprobs" in (self.include or [])


def _tool_not_found() -> VLLMValidationError:
    return VLLMValidationError(
        "Tool choice 'function' not found in 'tools' parameter.", parameter="tool_choice"
    )


@dataclass
class ResponseContext:
    """One Responses request as the answer needs it: the request, the served name and the
    server's parsers, the chat messages it became, and what is known once it ran."""

    request: ResponsesRequest
    response_id: str
    model: str
    #: ``--reasoning-parser`` is set.
    reasoning_parser: bool
    #: ``--enable-auto-tool-choice`` with ``--tool-call-parser``: calls are parsed.
    tool_parser: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    #: The request stores its response (``store`` with the store enabled).
    stored: bool = False

    @property
    def parsed(self) -> bool:
        """vLLM splits the output into items with a parser; without one it is one message."""
        return self.reasoning_parser or self.tool_parser


def to_chat(
    context: ResponseContext,
    history: list[dict[str, Any]] | None,
    previous_output: list[dict[str, Any]] | None,
    max_model_len: int,
) -> ChatRequest:
    """The chat request ``context.request`` becomes, its messages kept in ``context``.

    :param history: the stored input messages of ``previous_response_id``.
    :param previous_output: the stored output items of ``previous_response_id``.
    :raises VLLMValidationError: an input item vLLM cannot turn into a message, or both
        ``structured_outputs`` and ``text.format``.
    """
    request = context.request
    messages = _messages(request, history, previous_output)
    context.messages = messages
    data: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "seed": request.seed,
        "stop": request.stop,
        "logit_bias": request.logit_bias,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "repetition_penalty": request.repetition_penalty,
        "ignore_eos": request.ignore_eos,
        "stop_token_ids": request.stop_token_ids,
        "include_stop_str_in_output": request.include_stop_str_in_output,
        "chat_template_kwargs": request.chat_template_kwargs,
        "include_reasoning": request.include_reasoning,
        "request_id": context.response_id,
    }
    if request.stream:
        # The final events need the usage: the engine's usage step writes them.
        data["stream"], data["stream_options"] = True, {"include_usage": True}
    if request.max_output_tokens is not None:
        # vLLM caps the limit at what the context leaves; it never refuses a large one.
        data["max_tokens"] = min(request.max_output_tokens, max_model_len)
    if request.reasoning and request.reasoning.get("effort") is not None:
        data["reasoning_effort"] = request.reasoning["effort"]
    if request.wants_logprobs:
        data["logprobs"] = True
        data["top_logprobs"] = request.top_logprobs or 0
    _add_format(data, request)
    _add_tools(data, context)
    return ChatRequest.model_validate(data)


def _messages(
    request: ResponsesRequest,
    history: list[dict[str, Any]] | None,
    previous_output: list[dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    # The conversation: instructions, the previous response's input and output, this input.
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    # Instructions do not carry over: the previous request's system messages are dropped.
    messages.extend(m for m in history or [] if m.get("role") != "system")
    for item in previous_output or []:
        if item.get("type") == "message":
            messages.extend(
                {"role": "assistant", "content": part.get("text", "")}
                for part in item.get("content") or []
            )
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
    else:
        for item in request.input:
            _add_item(messages, item)
    return messages


def _add_item(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    # vLLM's _construct_message_from_response_item: calls and reasoning join the assistant
    # message before them; tool outputs become tool messages; messages pass as they are.
    kind = item.get("type")
    prev = messages[-1] if messages and messages[-1].get("role") == "assistant" else None
    if kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments")},
        }
        if prev is not None and isinstance(prev.get("tool_calls", []), list):
            prev.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "tool_calls": [call]})
    elif kind == "reasoning":
        if item.get("encrypted_content"):
            raise VLLMValidationError("Encrypted content is not supported.", parameter="input")
        parts = item.get("content") or item.get("summary") or [{}]
        text = parts[0].get("text", "") if isinstance(parts[0], dict) else ""
        if prev is not None and prev.get("reasoning") is None:
            prev["reasoning"] = text
        else:
            messages.append({"role": "assistant", "reasoning": text})
    elif kind in ("function_call_output", "custom_tool_call_output"):
        messages.append(
            {"role": "tool", "content": item.get("output"), "tool_call_id": item.get("call_id")}
        )
    elif "role" in item:
        message = {**item, "content": _content(item.get("content"))}
        if item.get("role") == "assistant" and prev is not None and prev.get("content") is None:
            prev["content"] = message["content"]
        else:
            messages.append(message)
    else:
        raise VLLMValidationError(f"Unsupported input item type: {kind}", parameter="input")


def _content(content: Any) -> Any:
    # Responses content parts (input_text, output_text) are chat text parts.
    if not isinstance(content, list):
        return content
    return [
        {"type": "text", "text": part.get("text", "")}
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text")
        else part
        for part in content
    ]


def _add_format(data: dict[str, Any], request: ResponsesRequest) -> None:
    fmt = (request.text or {}).get("format")
    if not isinstance(fmt, dict):
        if request.structured_outputs is not None:
            data["structured_outputs"] = request.structured_outputs.model_dump(by_alias=True)
        return
    if request.structured_outputs is not None:
        raise VLLMValidationError(
            "Cannot specify both structured_outputs and text.format",
            parameter="structured_outputs",
        )
    if fmt.get("type") == "json_object":
        data["structured_outputs"] = {"json_object": True}
    elif fmt.get("type") == "json_schema" and fmt.get("schema") is not None:
        data["structured_outputs"] = {"json": fmt["schema"]}


def _add_tools(data: dict[str, Any], context: ResponseContext) -> None:
    request = context.request
    functions = [t for t in request.tools if t.get("type") == "function"]
    if not functions:
        return
    data["tools"] = [
        {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}}
        for t in functions
    ]
    data["parallel_tool_calls"] = request.parallel_tool_calls
    choice = request.tool_choice
    if not context.tool_parser:
        # Without a tool parser vLLM's Responses API parses no call: the model's text is
        # the answer, whatever tool_choice says.
        data["tool_choice"] = "none"
    elif isinstance(choice, dict):
        data["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        data["tool_choice"] = choice


# -- the answer ---------------------------------------------------------------------------


def output_items(
    context: ResponseContext, c: Choice, as_ids: bool, hide: bool
) -> list[dict[str, Any]]:
    """The output items of the answer (vLLM's ``build_response_output_items``, or its one
    message without a parser)."""
    status = "incomplete" if c.finish_reason == "length" else "completed"
    logprobs = _logprobs(c, as_ids) if context.request.wants_logprobs and not hide else None
    if not context.parsed:
        content = [output_text(c.text, logprobs)] if c.text else []
        return [message_item(f"msg_{random_hex()}", content, status)]
    items: list[dict[str, Any]] = []
    if c.reasoning and not hide:
        items.append(reasoning_item(f"rs_{random_hex()}", c.reasoning, None))
    if c.text:
        message_status = "completed" if c.tool_calls else status
        items.append(
            message_item(f"msg_{random_hex()}", [output_text(c.text, logprobs)], message_status)
        )
    for i, call in enumerate(c.tool_calls):
        last = i == len(c.tool_calls) - 1
        items.append(
            function_call_item(f"fc_{random_hex()}", call, status if last else "completed")
        )
    return items


def output_text(text: str, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"annotations": [], "text": text, "type": "output_text", "logprobs": logprobs}


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """A ``message`` output item."""
    return {
        "id": item_id,
        "content": content,
        "role": "assistant",
        "status": status,
        "type": "message",
        "phase": None,
    }


def reasoning_item(item_id: str, text: str | None, status: str | None) -> dict[str, Any]:
    """A ``reasoning`` output item (``text`` ``None``: no content yet)."""
    content = None if text is None else [{"text": text, "type": "reasoning_text"}]
    return {
        "id": item_id,
        "summary": [],
        "type": "reasoning",
        "content": content,
        "encrypted_content": None,
        "status": status,
    }


def function_call_item(
    item_id: str, call: dict[str, Any], status: str, arguments: str | None = None
) -> dict[str, Any]:
    """A ``function_call`` output item for one of a choice's tool calls."""
    function = call["function"]
    return {
        "arguments": function["arguments"] if arguments is None else arguments,
        "call_id": call["id"],
        "name": function["name"],
        "type": "function_call",
        "id": item_id,
        "async": None,
        "caller": None,
        "namespace": None,
        "status": status,
    }


def _logprobs(c: Choice, as_ids: bool) -> list[dict[str, Any]] | None:
    # Over the answer's tokens: the Responses API returns them for the output text.
    if c.logprobs is None or c.top is None:
        return None
    return logprob_entries(c, c.answer_start, len(c.tokens), as_ids)


def logprob_entries(c: Choice, start: int, stop: int, as_ids: bool) -> list[dict[str, Any]]:
    """The ``Logprob`` entries of tokens ``start`` to ``stop`` (``top_logprobs`` of each)."""
    assert c.logprobs is not None and c.top is not None
    wanted = c.logprobs_wanted
    out = []
    for k in range(start, stop):
        text = token_text(c.tokens[k], as_ids)
        top = c.top[k][:wanted] if wanted > 0 else []
        out.append(
            {
                "token": text,
                "bytes": list(text.encode("utf-8", "replace")),
                "logprob": max(c.logprobs[k], -9999.0),
                "top_logprobs": [
                    {
                        "token": (t := token_text(tok, as_ids)),
                        "bytes": list(t.encode("utf-8", "replace")),
                        "logprob": max(v, -9999.0),
                    }
                    for tok, v in top
                ],
            }
        )
    return out


def usage_body(plan: Plan, reasoning: bool) -> dict[str, Any]:
    """``ResponseUsage``: the prompt, its cached tokens, the output and its reasoning."""
    c = plan.choices[0]
    generated = c.generated if c.recorded else len(c.tokens)
    return {
        "input_tokens": c.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": c.cached_tokens,
            "cache_write_tokens": c.created_cache_tokens,
            "input_tokens_per_turn": [],
            "cached_tokens_per_turn": [],
        },
        "output_tokens": generated,
        "output_tokens_details": {
            "reasoning_tokens": c.reasoning_within(generated) if reasoning else 0,
            "tool_output_tokens": 0,
            "output_tokens_per_turn": [],
            "tool_output_tokens_per_turn": [],
        },
        "total_tokens": c.prompt_tokens + generated,
    }


def response_body(
    context: ResponseContext,
    *,
    status: str,
    output: list[dict[str, Any]],
    max_tokens: int,
    usage: dict[str, Any] | None,
    top_logprobs: int | None,
) -> dict[str, Any]:
    """The ``response`` object (vLLM's ``ResponsesResponse.from_request``)."""
    request = context.request
    return {
        "id": context.response_id,
        "created_at": context.created,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": request.instructions,
        "metadata": request.metadata,
        "model": context.model,
        "object": "response",
        "output": output,
        "parallel_tool_calls": (
            True if request.parallel_tool_calls is None else request.parallel_tool_calls
        ),
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "tool_choice": _tool_choice(request.tool_choice),
        "tools": [_tool(t) for t in request.tools],
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "background": bool(request.background),
        "max_output_tokens": max_tokens,
        "max_tool_calls": request.max_tool_calls,
        "previous_response_id": request.previous_response_id,
        "prompt": None,
        "prompt_cache_options": _cache_options(request.prompt_cache_options),
        "prompt_cache_key": request.prompt_cache_key,
        "prompt_cache_retention": request.prompt_cache_retention,
        "reasoning": _shape(request.reasoning, _REASONING),
        "safety_identifier": request.safety_identifier,
        "service_tier": request.service_tier,
        "status": status,
        "text": _text(request.text),
        "top_logprobs": top_logprobs,
        "truncation": request.truncation,
        "usage": usage,
        "user": request.user,
        "presence_penalty": request.presence_penalty or 0.0,
        "frequency_penalty": request.frequency_penalty or 0.0,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "input_messages": None,
        "output_messages": None,
    }


def _shape(value: dict[str, Any] | None, fields: tuple[str, ...]) -> dict[str, Any] | None:
    # An openai type as pydantic dumps it: its fields in order, unset ones null, extras last.
    if value is None:
        return None
    return {**{f: value.get(f) for f in fields}, **value}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        return tool
    return {**{f: tool.get(f) for f in _FUNCTION_TOOL}, **tool}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"name": choice.get("name"), "type": "function"}
    return choice


def _text(text: dict[str, Any] | None) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        fmt = _shape(fmt, _JSON_SCHEMA_FORMAT)
    return {"format": fmt, "verbosity": text.get("verbosity")}


def _cache_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    if options is None:
        return None
    return {
        "mode": options.get("mode", "implicit"),
        "ttl": options.get("ttl", "30m"),
        "comparison_response_id": options.get("comparison_response_id"),
    }
