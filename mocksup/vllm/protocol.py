"""Request models and error bodies, as vLLM's OpenAI-compatible server defines them.

Requests are validated with pydantic like vLLM's own ``protocol.py`` (unknown fields are
accepted and ignored), but every failure is answered 400 with vLLM's error body, never
FastAPI's 422.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "APIError",
    "ChatRequest",
    "CompletionRequest",
    "StreamOptions",
    "error_body",
    "json_object",
    "parse_request",
]

_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    413: "BadRequestError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class APIError(Exception):
    """An error answered with vLLM's body ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "InternalServerError")
        self.param = param
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        """The JSON body vLLM sends (``code`` is the HTTP status, as its ``ErrorInfo``)."""
        return error_body(self.message, self.type, self.status, self.param)


def error_body(message: str, type: str, code: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's error body (``engine/protocol.py`` ``ErrorResponse``)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Request(BaseModel):
    # vLLM accepts and logs unknown fields; so do we (minus the log line).
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(None, ge=1)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    include_stop_str_in_output: bool = False
    echo: bool = False

    @model_validator(mode="after")
    def _check_stream_options(self) -> _Request:
        if self.stream_options is not None and not self.stream:
            raise ValueError("Stream options can only be defined when `stream=True`.")
        return self

    @property
    def stop_list(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]


class StreamOptions(BaseModel):
    """``stream_options``; ``include_usage`` defaults to true once the object is given."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class Function(BaseModel):
    """A tool's function definition."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    """One entry of ``tools``."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: Function


class ChatRequest(_Request):
    """``POST /v1/chat/completions`` (vLLM's ``ChatCompletionRequest``, the fields used)."""

    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(0, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _check_chat(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("when using `top_logprobs`, `logprobs` must be set to true.")
        if isinstance(self.tool_choice, str) and self.tool_choice not in (
            "none",
            "auto",
            "required",
        ):
            raise ValueError(f"Invalid value for `tool_choice`: {self.tool_choice!r}")
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise ValueError("When using `tool_choice`, `tools` must be set.")
        return self

    @property
    def max_new(self) -> int | None:
        """``max_completion_tokens``, which wins over the deprecated ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    """``POST /v1/completions`` (vLLM's ``CompletionRequest``, the fields used)."""

    prompt: str | list[str] | list[int] | list[list[int]] | None = None
    max_tokens: int | None = Field(16, ge=1)
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

    @property
    def max_new(self) -> int | None:
        """``max_tokens``."""
        return self.max_tokens


def json_object(content_type: str, body: bytes) -> dict[str, Any]:
    """Decode a JSON object body.

    :raises APIError: 400 for another content type, malformed JSON or a non-object.
    """
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise APIError(
            400, f"Unsupported Media Type: Only 'application/json' is allowed, got {content_type!r}"
        )
    try:
        data = json.loads(body)
    except ValueError as error:
        raise APIError(400, f"JSON decode error: {error}") from None
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    return data


def parse_request(
    model: type[ChatRequest] | type[CompletionRequest], raw: bytes, content_type: str
) -> Any:
    """Decode and validate a JSON request body.

    :raises APIError: 400 for a wrong content type, malformed JSON or a validation error.
    """
    data = json_object(content_type, raw)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise APIError(400, _validation_message(error)) from None


def _validation_message(error: ValidationError) -> str:
    # vLLM's handler joins the errors like this, with the cause of a validator's ValueError.
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
        message = str(item.get("msg", ""))
        message = message.removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or str(error)


_Request.model_rebuild()
