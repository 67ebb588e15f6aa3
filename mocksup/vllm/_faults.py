"""Injected faults that act on the connection or answer before generation.

A ``reset`` closes the TCP connection with RST, a ``stream_cut`` stops a body midway, and
``rate_limit``, ``unavailable`` and ``server_error`` answer an error before the request
reaches the simulated engine. Mid-stream errors are the engine's (:mod:`._engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mocksup.serving import DropConnection
from mocksup.vllm._errors import APIError
from mocksup.vllm.settings import FaultKind

__all__ = ["EARLY", "ClientGone", "Cut", "cut_body", "fail_early"]

#: The kinds answered before generation (no metrics, no span).
EARLY = frozenset({"rate_limit", "unavailable", "server_error", "reset"})


class Cut(DropConnection):
    """Raised inside a response to end the connection without finishing the body
    (``reset=True``: with a TCP RST); the HTTP server closes it, no error page, no log."""


class ClientGone(Cut):
    """The client closed its connection while its request ran: the request was aborted
    (vLLM's ``with_cancellation``) and nothing more is sent."""


def fail_early(environ: dict[str, Any], fault: FaultKind, retry_after: int) -> None:
    """Answer ``fault`` now: raise the error, or reset the connection and raise :class:`Cut`."""
    if fault == "reset":
        raise Cut("connection reset (injected fault)", reset=True)
    if fault == "server_error":
        raise APIError(500, "Internal server error (injected fault).")
    status = 429 if fault == "rate_limit" else 503
    message = (
        "Too many requests (injected fault)." if status == 429
        else "The server is temporarily unavailable (injected fault)."
    )  # fmt: skip
    raise APIError(status, message, headers=[("Retry-After", str(retry_after))])


def cut_body(payload: bytes) -> Iterator[bytes]:
    """Send half of ``payload``, then drop the connection."""
    yield payload[: len(payload) // 2]
    raise Cut("body cut (injected fault)")
