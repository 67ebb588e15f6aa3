"""What every generation request has: sampling fields, their checks, and what a surface provides.

:class:`GenerationRequest` holds the fields chat and completions share, validated like vLLM's
``protocol.py`` (unknown fields are accepted and ignored) plus the rules vLLM's
``SamplingParams`` checks while serving (:meth:`GenerationRequest.check_sampling`). Each API
surface subclasses it and says what its prompts are; the rest of the pipeline (planning,
generation strategies, the engine) only sees this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._limits import STOP_STRINGS

__all__ = [
    "GenerationRequest",
    "Prompt",
    "StreamOptions",
    "StructuredOutputs",
    "Tool",
    "ToolFunction",
    "ToolUse",
    "check_logprob_counts",
]

_INT64 = 2**63


@dataclass
class ToolUse:
    """The tools a request offers: ``forced`` names a function it must call, ``required``
    says it must call one."""

    tools: list[Tool]
    forced: str | None = None
    required: bool = False


@dataclass
class Prompt:
    """One prompt of a request: its text, its token ids, and the text ``echo`` prepends."""

    text: str
    ids: list[int]
    echo: str = ""


class StreamOptions(BaseModel):
    """``stream_options``; ``include_usage`` is false unless set (vLLM 0.33)."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class StructuredOutputs(BaseModel):
    """``structured_outputs`` (vLLM's ``StructuredOutputsParams``, its fields' types)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    json_schema: str | dict[str, Any] | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None
    whitespace_pattern: str | None = None


class ToolFunction(BaseModel):
    """A tool's function definition."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    """One entry of ``tools``."""

    model_config = ConfigDict(extra="allow")

    type: str = "function"
    function: ToolFunction


class GenerationRequest(BaseModel):
    """The fields of a generation request every surface shares."""

    # vLLM accepts and logs unknown fields; so do we (minus the log line).
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(max_length=STOP_STRINGS)] | None = None
    seed: int | None = Field(None, ge=-_INT64, le=_INT64 - 1)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    echo: bool = False
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    logit_bias: dict[str, float] | None = None
    stop_token_ids: list[int] | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] = Field(default_factory=list)
    prompt_logprobs: int | None = None
    logprob_token_ids: list[int] | None = None
    truncate_prompt_tokens: int | None = Field(None, ge=-1, le=_INT64 - 1)
    truncation_side: Literal["left", "right"] | None = None
    return_token_ids: bool | None = None
    return_tokens_as_token_ids: bool | None = None
    request_id: str | None = None
    structured_outputs: StructuredOutputs | None = None
    response_format: dict[str, Any] | None = None
    priority: int = Field(0, ge=-_INT64, le=_INT64 - 1)

    @model_validator(mode="before")
    @classmethod
    def _check_stream_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stream_options") and not data.get("stream"):
            raise VLLMValidationError(
                "Stream options can only be defined when `stream=True`.",
                parameter="stream_options",
            )
        return data

    # -- what a surface provides ----------------------------------------------------------

    def prompts(self, role: str = "assistant") -> list[Prompt]:
        """The prompts, each one or ``n`` engine requests (``role``: the server's
        ``--response-role``)."""
        raise NotImplementedError

    def match_text(self) -> str:
        """The text script rules look at (the last user message, or the prompt)."""
        raise NotImplementedError

    @property
    def max_new(self) -> int | None:
        """The request's limit on generated tokens, if it sets one."""
        return self.max_tokens

    @property
    def max_new_name(self) -> str:
        """The field that set :attr:`max_new`, as vLLM names it in its errors."""
        return "max_tokens"

    @property
    def logprobs_wanted(self) -> int | None:
        """Alternatives per generated token (``None``: no log-probabilities)."""
        return None

    @property
    def tool_use(self) -> ToolUse | None:
        """The tools this request lets the model call (``None``: no tool calls at all)."""
        return None

    def thinks(self, defaults: dict[str, Any] | None) -> bool:
        """Whether a reasoning model thinks before answering (chat templates decide;
        ``defaults``: the server's ``--default-chat-template-kwargs``)."""
        return False

    @property
    def thinking_budget(self) -> int | None:
        """The most reasoning tokens (``None``: no limit)."""
        return None

    # -- shared ---------------------------------------------------------------------------

    @property
    def choices(self) -> int:
        """``n``."""
        return self.n if self.n is not None else 1

    @property
    def stop_list(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def check_logprob_counts(data: dict[str, Any], names: tuple[str, str]) -> None:
    """vLLM's checks of ``prompt_logprobs`` and the surface's other count (``names``), in
    its order: each a number, no prompt log-probabilities when streamed, each positive or
    -1."""
    for name in names:
        value = data.get(name)
        if value is not None and not isinstance(value, (int, float)):
            raise VLLMValidationError(f"`{name}` must be an integer.", parameter=name, value=value)
    prompt = data.get("prompt_logprobs")
    if prompt is not None and data.get("stream") and (prompt > 0 or prompt == -1):
        raise VLLMValidationError(
            "`prompt_logprobs` are not available when `stream=True`.",
            parameter="prompt_logprobs",
        )
    for name in names:
        value = data.get(name)
        if value is not None and value < 0 and value != -1:
            raise VLLMValidationError(
                f"`{name}` must be a positive value or -1.", parameter=name, value=value
            )
