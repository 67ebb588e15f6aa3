"""Scripted faults: how the collector misbehaves for the next exports, to test retry logic.

A :class:`Fault` is data (it travels as JSON through the control API). The collector keeps an
ordered list of them; each export takes the first fault whose ``signal`` and ``transport``
match, and a fault with a ``count`` is used up after that many exports. Adding faults in
sequence scripts a sequence of answers (two 503s, then a partial success, then normal).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mocksup.otlp._limits import MAX_PENDING_FAULTS
from mocksup.otlp._signals import Signal, Transport
from mocksup.otlp._status import GRPC_CODES, grpc_code_for_http, http_status_for_grpc

__all__ = ("MAX_DELAY", "MAX_PENDING", "Fault", "Signal", "Transport")

#: The longest ``delay`` and ``retry_after`` of a fault, in seconds (an hour: longer than
#: any client's timeout, and short enough for every timer and header that carries it).
MAX_DELAY = 3600.0
#: The most faults pending at once: a ``POST /mocksup/faults`` past it is refused (400).
MAX_PENDING = MAX_PENDING_FAULTS
#: The largest ``rejected`` count: OTLP's ``rejected_*`` fields are int64.
_MAX_REJECTED = 2**63 - 1


class Fault(BaseModel):
    """One scripted misbehaviour of the collector.

    What happens, in this order: wait ``delay`` seconds; then if ``drop``, close the
    connection without an answer; else if ``status`` or ``grpc_code`` is set, answer that
    error and store nothing; else if ``rejected`` or ``message`` is set, answer a partial
    success with that count and message; else answer normally. A partial success still
    stores every item, so a test sees what the client sent; the request record carries the
    rejected count.

    :param signal: only exports of this signal (``None``: any).
    :param transport: only this transport, ``"http"`` or ``"grpc"`` (``None``: both).
    :param count: how many exports it applies to (``None``: every one until cleared).
    :param status: the HTTP status to answer (gRPC gets the collector's mapped code:
        429 becomes RESOURCE_EXHAUSTED, 502/503/504 UNAVAILABLE, 400 INVALID_ARGUMENT...).
    :param grpc_code: the gRPC code name to answer (HTTP gets the mapped status unless
        ``status`` is set).
    :param retry_after: seconds the client should wait: the ``Retry-After`` header over HTTP
        (whole seconds, rounded up; the ``Status`` body's ``RetryInfo`` has the exact value),
        ``RetryInfo`` over gRPC (in ``grpc-status-details-bin`` and in
        ``google.rpc.retryinfo-bin``, since the Python exporter reads only the latter). At
        most ``MAX_DELAY`` (3600).
    :param rejected: partial success: how many items to report as rejected.
    :param message: the ``error_message`` of a partial success, or of the error status.
    :param delay: seconds to wait before answering, at most ``MAX_DELAY`` (3600).
    :param drop: close the connection without answering. Over gRPC, which cannot drop a
        connection from a handler, the call ends with UNAVAILABLE and no ``RetryInfo``:
        what a client sees when its connection breaks.
    """

    # NaN and infinities are refused: no setting is meant to be one, and none encodes back.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    signal: Signal | None = None
    transport: Transport | None = None
    count: int | None = Field(default=1, ge=1)
    status: int | None = Field(default=None, ge=400, le=599)
    grpc_code: str | None = None
    retry_after: float | None = Field(default=None, ge=0, le=MAX_DELAY)
    rejected: int = Field(default=0, ge=0, le=_MAX_REJECTED)
    message: str = ""
    delay: float = Field(default=0.0, ge=0, le=MAX_DELAY)
    drop: bool = False

    @model_validator(mode="after")
    def _check_code(self) -> Fault:
        if self.grpc_code is not None and self.grpc_code not in GRPC_CODES:
            raise ValueError(f"unknown gRPC code {self.grpc_code!r}; one of {sorted(GRPC_CODES)}")
        if self.grpc_code == "OK":
            raise ValueError("grpc_code OK is not a fault; leave it unset")
        return self

    @property
    def is_error(self) -> bool:
        """Whether the fault answers an error status."""
        return self.status is not None or self.grpc_code is not None

    def http_status(self) -> int:
        """The HTTP status this fault answers (only meaningful if :attr:`is_error`)."""
        if self.status is not None:
            return self.status
        return http_status_for_grpc(self.grpc_code or "UNKNOWN")

    def grpc_status(self) -> str:
        """The gRPC code name this fault answers (only meaningful if :attr:`is_error`)."""
        if self.grpc_code is not None:
            return self.grpc_code
        return grpc_code_for_http(self.status or 500)

    def describe(self) -> str:
        """A short label for the request record."""
        parts = []
        if self.delay:
            parts.append(f"delay {self.delay:g}s")
        if self.drop:
            parts.append("drop")
        elif self.is_error:
            parts.append(f"{self.http_status()}/{self.grpc_status()}")
            if self.retry_after is not None:
                parts.append(f"retry after {self.retry_after:g}s")
        elif self.rejected or self.message:
            parts.append(f"partial success ({self.rejected} rejected)")
        return ", ".join(parts) or "none"
