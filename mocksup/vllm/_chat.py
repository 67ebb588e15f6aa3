"""``POST /v1/chat/completions``: vLLM's ``ChatCompletionRequest``, its prompt, body and chunks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from mocksup.vllm._encoding import dumps, reasoning_details, usage
from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._generation.reasoning import check_reasoning_fields, thinking_enabled
from mocksup.vllm._logprobs import chat_logprobs, prompt_logprobs_body
from mocksup.vllm._plan import Choice, Plan
from mocksup.vllm._sampling import (
    GenerationRequest,
    Prompt,
    Tool,
    ToolUse,
    check_logprob_counts,
)
from mocksup.vllm._stream import ChunkWriter, per_request_metrics, prompt_details
from mocksup.vllm._tool_choice import check_tool_usage
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = [
    "CHAT_TEMPLATE",
    "BodyOptions",
    "ChatChunks",
    "ChatRequest",
    "chat_body",
    "content_text",
    "hides_reasoning",
    "render_chat",
]


#: vLLM's ``ReasoningEffort``.
_Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class ChatRequest(GenerationRequest):
    """``POST /v1/chat/completions`` (vLLM's ``ChatCompletionRequest``, the fields used)."""

    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = True
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: _Effort | None = None
    include_reasoning: bool = True
    thinking_token_budget: int | None = None

    # Model validators run last-defined first, as vLLM's: tools, then log-probabilities.
    @model_validator(mode="before")
    @classmethod
    def _check_logprobs(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("logprob_token_ids") and not data.get("logprobs"):
            raise VLLMValidationError(
                "when using `logprob_token_ids`, `logprobs` must be set to true.",
                parameter="logprob_token_ids",
            )
        check_logprob_counts(data, ("prompt_logprobs", "top_logprobs"))
        top = data.get("top_logprobs")
        if top is not None and (top == -1 or top > 0) and not data.get("logprobs"):
            raise VLLMValidationError(
                "when using `top_logprobs`, `logprobs` must be set to true.",
                parameter="top_logprobs",
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _check_tools(cls, data: Any) -> Any:
        return check_tool_usage(data)

    @model_validator(mode="before")
    @classmethod
    def _check_reasoning(cls, data: Any) -> Any:
        return check_reasoning_fields(data)

    @model_validator(mode="before")
    @classmethod
    def _check_generation_prompt(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if data.get("continue_final_message") and data.get("add_generation_prompt"):
                raise VLLMValidationError(
                    "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
                )
            response_format = data.get("response_format")
            if (
                isinstance(response_format, dict)
                and response_format.get("type") == "json_schema"
                and response_format.get("json_schema") is None
            ):
                raise VLLMValidationError(
                    "When response_format type is 'json_schema', the 'json_schema' field "
                    "must be provided.",
                    parameter="response_format",
                )
        return data

    def prompts(self, role: str = "assistant") -> list[Prompt]:
        """One prompt: the messages rendered by the mock's chat template."""
        if not self.messages:
            # vLLM renders the template; with nothing to render the engine refuses it.
            raise VLLMValidationError("The decoder prompt cannot be empty")
        text = render_chat(self.messages, self.add_generation_prompt, self.continue_final_message)
        last = self.messages[-1]
        echo = ""
        if self.echo and last.get("role") == self.reply_role(role):
            echo = content_text(last)
        return [Prompt(text, TOKENIZER.encode(text), echo)]

    def reply_role(self, response_role: str) -> str:
        """The reply's role: ``--response-role``, or the last message's without a
        generation prompt (vLLM's ``get_chat_request_role``)."""
        if self.add_generation_prompt:
            return response_role
        return str(self.messages[-1].get("role", response_role)) if self.messages else ""

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
    def max_new_name(self) -> str:
        """``max_completion_tokens`` when set, else ``max_tokens``."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    @property
    def logprobs_wanted(self) -> int | None:
        """``top_logprobs`` when ``logprobs`` is on."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def tool_use(self) -> ToolUse | None:
        """The tools, unless ``tool_choice`` is ``"none"``."""
        if self.tool_choice == "none" or not self.tools:
            return None
        choice = self.tool_choice
        forced = choice["function"]["name"] if isinstance(choice, dict) else None
        return ToolUse(list(self.tools), forced, choice == "required")

    def thinks(self, defaults: dict[str, Any] | None) -> bool:
        """``enable_thinking`` as the chat template sees it: the request's
        ``chat_template_kwargs``, else ``reasoning_effort`` (``"none"`` turns it off), else
        the server's defaults, else on."""
        return thinking_enabled(self.chat_template_kwargs, self.reasoning_effort, defaults)

    @property
    def thinking_budget(self) -> int | None:
        """``thinking_token_budget`` (``None``: unlimited)."""
        return self.thinking_token_budget


#: The mock's chat template, as a Jinja template would say it (``/tokenizer_info``).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def render_chat(
    messages: list[dict[str, Any]], add_generation_prompt: bool, continue_final: bool = False
) -> str:
    """The prompt a chat request becomes (a ChatML-like template; it fixes the token count).

    ``continue_final`` leaves the last message open, for the reply to continue it.
    """
    parts = [
        f"<|{message.get('role', 'user')}|>\n{content_text(message)}"
        f"{_calls_text(message) if 'tool_calls' in message else ''}\n"
        for message in messages
    ]
    if continue_final and parts:
        parts[-1] = parts[-1][:-1]
    elif add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def _calls_text(message: dict[str, Any]) -> str:
    # An assistant turn's tool calls, as the model wrote them (Hermes's format).
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return ""
    parts = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(
                f'<tool_call>\n{{"name": "{function.get("name", "")}", '
                f'"arguments": {function.get("arguments", "{}")}}}\n</tool_call>'
            )
    return "\n".join(parts)


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


class BodyOptions:
    """What a non-streamed body needs beyond the plan."""

    __slots__ = ("as_ids", "fingerprint", "metrics", "model", "prompt_details", "reasoning",
                 "request", "request_id", "role")  # fmt: skip

    def __init__(
        self,
        request: GenerationRequest,
        request_id: str,
        model: str,
        *,
        role: str,
        fingerprint: str | None,
        prompt_details: bool,
        metrics: bool,
    ) -> None:
        self.request = request
        self.request_id = request_id
        self.model = model
        self.role = role
        self.fingerprint = fingerprint
        self.prompt_details = prompt_details
        self.metrics = metrics
        self.as_ids = False
        #: ``--reasoning-parser`` is set.
        self.reasoning = False


def chat_body(plan: Plan, created: int, options: BodyOptions) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` body."""
    request = options.request
    options.as_ids = plan.as_ids
    hidden = hides_reasoning(request, options.reasoning)
    token_ids = bool(request.return_token_ids) and not hidden
    choices = [_choice(c, options, token_ids=token_ids, hidden=hidden) for c in plan.choices]
    first = plan.choices[0] if plan.choices else None
    prompt_logprobs = None
    if (
        first is not None
        and request.prompt_logprobs is not None
        and not getattr(request, "batch", False)
    ):
        prompt_logprobs = prompt_logprobs_body(first.prompt_ids, request.prompt_logprobs)
    details = prompt_details(plan, chat=True) if options.prompt_details else None
    metrics = per_request_metrics(plan) if options.metrics else None
    return {
        "id": options.request_id,
        "object": "chat.completion",
        "created": created,
        "model": options.model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": options.fingerprint,
        "usage": usage(
            plan.prompt_tokens,
            sum(len(c.tokens) for c in plan.choices),
            details,
            sum(c.reasoning_tokens for c in plan.choices) if options.reasoning else None,
        ),
        "prompt_logprobs": prompt_logprobs,
        "prompt_token_ids": (
            first.prompt_ids
            if token_ids and first is not None and not getattr(request, "batch", False)
            else None
        ),
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": metrics,
    }


def hides_reasoning(request: GenerationRequest, parser: bool) -> bool:
    """``include_reasoning: false`` with a reasoning parser: vLLM then drops the reasoning,
    and the log-probabilities and token ids that would reveal it."""
    return parser and getattr(request, "include_reasoning", True) is False


def _choice(c: Choice, options: BodyOptions, *, token_ids: bool, hidden: bool) -> dict[str, Any]:
    content: str | None = c.echo + c.text
    if c.tool_calls or (c.reasoning is not None and not content):
        content = None  # a parser that split off the reasoning reports no empty content
    if c.tool_parser is not None:
        content = c.tool_content  # what the tool parser left of the text
    message: dict[str, Any] = {
        "role": options.role,
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if c.tool_calls:
        message["tool_calls"] = c.tool_calls
    message["reasoning"] = None if hidden else c.reasoning
    return {
        "index": c.index,
        "message": message,
        "logprobs": None if hidden else chat_logprobs(c, 0, len(c.tokens), options.as_ids),
        "finish_reason": c.finish_reason,
        "stop_reason": c.stop_reason,
        "token_ids": c.tokens if token_ids else None,
        "routed_experts": None,
        "weight_versions": None,
    }


class ChatChunks(ChunkWriter):
    """The ``chat.completion.chunk`` events: a role chunk per choice, then ``delta`` chunks."""

    chunk_object = "chat.completion.chunk"

    def _running_usage(self, index: int) -> dict[str, Any]:
        plan = self.plan
        done = self._generated[index]
        reasoning = reasoning_details(self.reasoning_count(index))
        return {"prompt_tokens": plan.prompt_tokens, "total_tokens": plan.prompt_tokens + done,
                "completion_tokens": done, "completion_tokens_details": reasoning}  # fmt: skip

    def role_chunks(self) -> list[bytes]:
        """The first chunk of every choice, carrying the role (and any echo)."""
        out: list[bytes] = []
        ids = self.plan.choices[0].prompt_ids if self.settings.return_token_ids else None
        for c in self.plan.choices:
            delta = {"role": self.role, "content": ""}
            choice = {"index": c.index, "delta": delta, "logprobs": None, "finish_reason": None}
            out.append(self._event(choice, prompt_token_ids=ids, prompt_text=None))
        for c in self.plan.choices:
            if c.echo:
                echo = {"content": c.echo}
                choice = {"index": c.index, "delta": echo, "logprobs": None, "finish_reason": None}
                out.append(self._event(choice))
        return out

    def token(self, position: int, k: int) -> bytes:
        """The event for token ``k`` of choice ``position``."""
        c = self.plan.choices[position]
        last = k == len(c.tokens) - 1
        self._generated[position] = k + 1
        delta = c.deltas[k]
        if k < c.answer_start:
            return self._thought(c, k, delta, last)
        if c.tool_parser is not None:
            return self._tool_token(position, k, last)
        if not last and self._plain and c.logprobs is None and not c.tool_calls:
            return (
                self._prefix
                + f'{c.index},"delta":{{"content":'.encode()
                + dumps(delta)
                + b'},"logprobs":null,"finish_reason":null,"token_ids":null}],'
                b'"kv_transfer_params":null}\n\n'
            )
        return self._full(c, k, delta, last)

    def _thought(self, c: Choice, k: int, delta: str, last: bool) -> bytes:
        # A token of the thinking block: a reasoning delta (none for a marker, or when the
        # request hides reasoning), and no chunk at all unless something else must go out.
        hidden = self.settings.hide_reasoning
        key = None if hidden or not delta else "reasoning"
        shown = not hidden and (c.logprobs is not None or self.settings.return_token_ids)
        if key is None and not last and not shown:
            return b""
        return self._full(c, k, delta, last, key)

    def _full(
        self, c: Choice, k: int, delta: str, last: bool, key: str | None = "content"
    ) -> bytes:
        message: dict[str, Any] = {}
        if c.tool_calls and key != "reasoning":
            if last:
                message["tool_calls"] = [
                    {"index": i, **call} for i, call in enumerate(c.tool_calls)
                ]
        elif key is not None:
            message[key] = delta
        hidden = self.settings.hide_reasoning
        choice: dict[str, Any] = {
            "index": c.index,
            "delta": message,
            "logprobs": None if hidden else chat_logprobs(c, k, k + 1, self.plan.as_ids),
            "finish_reason": c.finish_reason if last else None,
        }
        if last:
            choice["stop_reason"] = c.stop_reason
        choice["token_ids"] = (
            [c.tokens[k]] if self.settings.return_token_ids and not hidden else None
        )
        if last:
            choice["weight_versions"] = None
            return self._event(choice, **self._finish_extra())
        return self._event(choice, kv_transfer_params=None)

    def _tool_token(self, position: int, k: int, last: bool) -> bytes:
        # A tool call's text: the chunks vLLM's parser sends for it (none for a token
        # that adds nothing, unless log-probabilities or token ids must go out).
        c = self.plan.choices[position]
        streams: dict[int, list[dict[str, Any] | None]] = self.__dict__.setdefault("_tools", {})
        if position not in streams:  # the parser reads the answer, after any reasoning
            streams[position] = c.tool_parser.stream(c.deltas[c.answer_start :])
        delta = streams[position][k - c.answer_start]
        if delta is None:
            if c.logprobs is None and not self.settings.return_token_ids:
                return b""
            delta = {}
        choice: dict[str, Any] = {
            "index": c.index,
            "delta": delta,
            "logprobs": chat_logprobs(c, k, k + 1, self.plan.as_ids),
            "finish_reason": c.finish_reason if last else None,
        }
        if last:
            choice["stop_reason"] = c.stop_reason
        choice["token_ids"] = [c.tokens[k]] if self.settings.return_token_ids else None
        if last:
            choice["weight_versions"] = None
            return self._event(choice, **self._finish_extra())
        return self._event(choice, kv_transfer_params=None)

    def empty_finish(self, position: int) -> bytes:
        """The finish event of a choice that generated no token."""
        c = self.plan.choices[position]
        delta: dict[str, Any] = {}
        if c.tool_calls:
            delta = {"tool_calls": [{"index": i, **call} for i, call in enumerate(c.tool_calls)]}
        token_ids: list[int] | None = [] if self.settings.return_token_ids else None
        choice = {"index": c.index, "delta": delta, "logprobs": None,
                  "finish_reason": c.finish_reason, "stop_reason": c.stop_reason,
                  "token_ids": token_ids, "weight_versions": None}  # fmt: skip
        return self._event(choice, **self._finish_extra())
