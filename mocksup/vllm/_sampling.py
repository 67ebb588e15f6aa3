"""What every generation request has: sampling fields, their checks, and what a surface provides.

:class:`GenerationRequest` holds the fields chat and completions share, validated like vLLM's
``protocol.py`` (unknown fields are accepted and ignored) plus the rules vLLM's
``SamplingParams`` checks while serving (:meth:`GenerationRequest.check_sampling`). Each API
surface subclasses it and says what its prompts are; the rest of the pipeline (planning,
generation strategies, the engine) only sees this interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._limits import MAX_LOGPROBS
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["GenerationRequest", "Prompt", "StreamOptions", "Tool", "ToolFunction", "ToolUse"]

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
    """``stream_options``; ``include_usage`` defaults to true once the object is given."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


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
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-_INT64, le=_INT64 - 1)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    echo: bool = False

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

    def prompts(self) -> list[Prompt]:
        """The prompts, each one or ``n`` engine requests."""
        raise NotImplementedError

    def match_text(self) -> str:
        """The text script rules look at (the last user message, or the prompt)."""
        raise NotImplementedError

    @property
    def max_new(self) -> int | None:
        """The request's limit on generated tokens, if it sets one."""
        return self.max_tokens

    @property
    def logprobs_wanted(self) -> int | None:
        """Alternatives per generated token (``None``: no log-probabilities)."""
        return None

    @property
    def tool_use(self) -> ToolUse | None:
        """The tools this request lets the model call (``None``: no tool calls at all)."""
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

    def check_sampling(self) -> None:
        """The rules vLLM's ``SamplingParams`` applies before a request runs.

        :raises VLLMValidationError: vLLM's wording, parameter and value.
        """
        n = self.choices
        if n < 1:
            raise VLLMValidationError(f"n must be at least 1, got {n}.")
        if n > 16384:
            raise VLLMValidationError(
                f"n must be at most 16384, got {n}. To increase this limit, set the "
                "VLLM_MAX_N_SEQUENCES environment variable."
            )
        self._check_temperature_and_top_p()
        self._check_lengths()
        if any(not s for s in self.stop_list):
            raise VLLMValidationError("stop cannot contain an empty string.")
        wanted = self.logprobs_wanted
        if wanted:
            count = TOKENIZER.vocab_size if wanted == -1 else wanted
            if count > MAX_LOGPROBS:
                raise VLLMValidationError(
                    f"Requested sample logprobs of {count}, which is greater than max "
                    f"allowed: {MAX_LOGPROBS}",
                    parameter="logprobs",
                    value=count,
                )

    def _check_temperature_and_top_p(self) -> None:
        temperature = 1.0 if self.temperature is None else float(self.temperature)
        if not math.isfinite(temperature):
            raise VLLMValidationError(
                f"temperature must be a finite number, got {temperature}.",
                parameter="temperature",
                value=temperature,
            )
        if temperature < 0.0:
            raise VLLMValidationError(
                f"temperature must be non-negative, got {temperature}.",
                parameter="temperature",
                value=temperature,
            )
        if temperature > 2.0:
            raise VLLMValidationError(
                f"temperature must be in [0, 2], got {temperature}.",
                parameter="temperature",
                value=temperature,
            )
        top_p = 1.0 if self.top_p is None else float(self.top_p)
        if not 0.0 < top_p <= 1.0:
            raise VLLMValidationError(
                f"top_p must be in (0, 1], got {top_p}.", parameter="top_p", value=top_p
            )

    def _check_lengths(self) -> None:
        wanted = self.max_new
        if wanted is not None and wanted < 1:
            raise VLLMValidationError(
                f"max_tokens must be at least 1, got {wanted}.",
                parameter="max_tokens",
                value=wanted,
            )
        if self.min_tokens < 0:
            raise VLLMValidationError(
                f"min_tokens must be greater than or equal to 0, got {self.min_tokens}."
            )
        if wanted is not None and self.min_tokens > wanted:
            raise VLLMValidationError(
                f"min_tokens must be less than or equal to max_tokens={wanted}, "
                f"got {self.min_tokens}."
            )
