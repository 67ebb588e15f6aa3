"""Run-time adjustable settings of the vLLM mock: latency, faults and scripted replies.

They are pydantic models so one definition validates the constructor arguments of
:class:`~mocksup.vllm.MockVLLMServer` in the parent, the JSON bodies of the control API in the
child, and documents both.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = (
    "FAULT_KINDS",
    "MAX_DELAY",
    "FaultKind",
    "Faults",
    "Latency",
    "ScriptReply",
    "ScriptRule",
    "ToolCall",
)

#: What an injected fault does.
#:
#: ``rate_limit``: 429 with ``Retry-After`` (real vLLM never rate-limits; a gateway in front
#: does, so clients must cope). ``unavailable``: 503 with ``Retry-After``. ``server_error``: 500.
#: ``stream_error``: a streamed reply sends ``after_tokens`` tokens, then an error frame, then
#: ``[DONE]`` with HTTP 200 as vLLM does (a non-streamed reply answers 500).
#: ``stream_cut``: the stream (or body) stops after ``after_tokens`` tokens without ``[DONE]``.
#: ``reset``: the connection is reset (TCP RST) before any byte of the answer.
FaultKind = Literal[
    "rate_limit", "unavailable", "server_error", "stream_error", "stream_cut", "reset"
]

#: Every :data:`FaultKind`, for checking a name given at run time.
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))


#: The longest simulated delay, in seconds (``ttft``, ``itl``, ``retry_after``).
MAX_DELAY = 3600


class _Model(BaseModel):
    # NaN and infinities are refused everywhere: no setting is meant to be one.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Latency(_Model):
    """Simulated engine timing of each request.

    A request first waits for one of ``max_num_seqs`` slots (the queue time; the server's
    ``max_num_seqs`` unless changed here at run time), then its first
    token comes ``ttft`` seconds later (plus ``prefill_per_token`` for each prompt token not
    in the prefix cache) and every further token ``itl`` seconds after the one before, each
    drawn around its mean with ``ttft_stddev``/``itl_stddev`` and slowed by ``load_factor``
    as running sequences grow. Deadlines are absolute from the start of decoding, so sleeps
    never drift.
    Headers ``X-Mocksup-TTFT`` and ``X-Mocksup-ITL`` (seconds) override them per request.
    """

    ttft: float = Field(
        default=0.0, ge=0, le=MAX_DELAY, description="Seconds from admission to the first token."
    )
    itl: float = Field(default=0.0, ge=0, le=MAX_DELAY, description="Seconds between two tokens.")
    jitter: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Relative spread: each delay is scaled by 1 +/- U(0, jitter).",
    )
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        description="Sequences served at once (more queue); ``None``: the server's "
        "``max_num_seqs``.",
    )
    prefill_per_token: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Seconds of prefill per prompt token not found in the prefix cache, "
        "added to ``ttft``.",
    )
    ttft_stddev: float = Field(
        default=0.0,
        ge=0,
        le=MAX_DELAY,
        description="Standard deviation of ``ttft`` (seconds; seeded normal draws, kept "
        "within 30 % to 170 % of the mean).",
    )
    itl_stddev: float = Field(
        default=0.0,
        ge=0,
        le=MAX_DELAY,
        description="Standard deviation of ``itl``, drawn per token like ``ttft_stddev``.",
    )
    load_factor: float = Field(
        default=1.0,
        ge=1,
        le=100,
        description="Slowdown with ``max_num_seqs`` sequences running: delays are scaled "
        "by 1 + (load_factor - 1) x (running - 1) / (max_num_seqs - 1).",
    )


class Faults(_Model):
    """Injected failures of generation requests (``/v1/chat/completions``, ``/v1/completions``).

    The first ``first`` requests fail; after them each fails with probability ``rate``, drawn
    from a generator seeded with the server's ``seed`` so a run repeats. The header
    ``X-Mocksup-Fault: <kind>`` fails one request regardless.
    """

    kind: FaultKind = Field(default="unavailable", description="What a fault does.")
    first: int = Field(default=0, ge=0, description="Fail this many requests from now on.")
    rate: float = Field(default=0.0, ge=0, le=1, description="Probability that a request fails.")
    retry_after: int = Field(
        default=1, ge=0, le=MAX_DELAY, description="Seconds in Retry-After (429 and 503)."
    )
    after_tokens: int = Field(
        default=1, ge=0, le=2**31, description="Tokens streamed before a mid-stream fault."
    )


class ToolCall(_Model):
    """A tool call a scripted reply makes; ``arguments`` is sent JSON-encoded."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScriptReply(_Model):
    """What a matching rule answers. Fields left unset fall back to generated content."""

    content: str | None = Field(default=None, description="The text of every choice.")
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: Literal["stop", "length"] | None = Field(
        default=None, description="Overrides the computed finish reason."
    )
    error_status: int | None = Field(
        default=None, ge=400, le=599, description="Answer this HTTP error instead."
    )
    error_message: str = Field(default="Scripted error.", description="Message of the error body.")


class ScriptRule(_Model):
    """One ordered rule: the first rule whose every set condition holds answers.

    Conditions: ``model`` (equal), ``contains`` (substring of the last user message or the
    prompt), ``regex`` (searched in the same text), ``header`` (``"name: value"``, value
    compared exactly, name case-insensitively), ``call`` (the 1-based index of the
    generation request since start or :meth:`~mocksup.MockVLLMServer.clear`).
    ``times`` limits how often the rule may answer (``None``: always).
    """

    model: str | None = None
    contains: str | None = None
    regex: str | None = None
    header: str | None = None
    call: int | None = Field(default=None, ge=1)
    times: int | None = Field(default=None, ge=1)
    reply: ScriptReply = Field(default=ScriptReply())

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            from mocksup.vllm._matching import compile_pattern

            compile_pattern(value)
        return value
