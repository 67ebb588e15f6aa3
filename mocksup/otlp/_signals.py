"""The three OTLP signals' shared shape: request → resources → scopes → items.

Every signal nests the same way under differently named repeated fields; this table names
them once, for the store, the ingest and the queries alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, get_args

__all__ = (
    "FIELDS",
    "SIGNALS",
    "Signal",
    "Transport",
    "all_scopes",
    "items_of",
    "resources_of",
    "scopes_of",
)

# Here rather than in :mod:`mocksup.otlp.faults` (which re-exports them): the modules that
# serve import them, and must not import pydantic, which Fault needs, before they serve.
#: An OTLP signal: what a request exports, and what a fault, a query or a record is about.
Signal = Literal["traces", "metrics", "logs"]
#: How a request reached the collector: OTLP/HTTP or OTLP/gRPC.
Transport = Literal["http", "grpc"]

#: The signals the collector receives, in the order routes and counters list them.
SIGNALS: tuple[Signal, ...] = get_args(Signal)

#: Per signal: the request's resources, a resource's scopes, a scope's items.
FIELDS: dict[Signal, tuple[str, str, str]] = {
    "traces": ("resource_spans", "scope_spans", "spans"),
    "metrics": ("resource_metrics", "scope_metrics", "metrics"),
    "logs": ("resource_logs", "scope_logs", "log_records"),
}


def resources_of(signal: Signal, message: Any) -> Any:
    """The repeated ``Resource*`` field of a request or ``*Data`` message."""
    return getattr(message, FIELDS[signal][0])


def scopes_of(signal: Signal, resource: Any) -> Any:
    """The repeated ``Scope*`` field of one resource entry."""
    return getattr(resource, FIELDS[signal][1])


def items_of(signal: Signal, scope: Any) -> Any:
    """The repeated spans, metrics or log records of one scope entry."""
    return getattr(scope, FIELDS[signal][2])


def all_scopes(signal: Signal, message: Any) -> Iterator[Any]:
    """Every scope entry of a request, in order."""
    for resource in resources_of(signal, message):
        yield from scopes_of(signal, resource)
