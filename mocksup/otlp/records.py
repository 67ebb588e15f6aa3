"""Records of what happened at the collector: requests, traces, and the exporter environment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mocksup.otlp._signals import Signal, Transport
from mocksup.otlp.items import LogRecord, Span
from mocksup.otlp.metrics import Metric

__all__ = ("FeedPage", "RequestRecord", "Trace", "exporter_env", "trace_tree")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the collector answered (or dropped), faults included.

    ``status`` is the HTTP status for ``transport == "http"``, the gRPC code name (``"OK"``,
    ``"UNAVAILABLE"``...) for ``"grpc"``, or ``"dropped"``. ``size`` is the body as received,
    ``decoded_size`` after decompression; ``items`` counts the items stored. ``headers``
    (HTTP headers or gRPC metadata) have their credentials read ``[redacted]`` unless the
    collector keeps them (``journal_credentials=True``).
    """

    id: int
    time: float
    transport: Transport
    signal: Signal | None
    path: str
    method: str
    content_type: str
    content_encoding: str
    headers: Mapping[str, str]
    size: int
    decoded_size: int
    status: int | str
    items: int
    rejected: int = 0
    dropped: int = 0
    fault: str | None = None
    error: str | None = None
    duration: float = 0.0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RequestRecord:
        """Build a record from its control API document."""
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in doc.items() if key in names})


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One page of a collector's live feed (:meth:`~mocksup.MockOTLPCollector.feed`).

    ``items`` are spans, metrics and log records in arrival order; ``cursor`` is what to pass
    as the next page's ``after``; ``generation`` counts the collector's clears (a reader that
    sees it change knows that what it showed was forgotten).
    """

    items: tuple[Span | Metric | LogRecord, ...]
    cursor: int
    generation: int


@dataclass(frozen=True, slots=True)
class Trace:
    """The spans of one trace (by start time) and their tree.

    ``roots`` have no parent; ``orphans`` name a parent that did not arrive (yet).
    """

    trace_id: str
    spans: tuple[Span, ...]
    roots: tuple[Span, ...]
    orphans: tuple[Span, ...]
    _children: Mapping[str, tuple[Span, ...]]

    @classmethod
    def from_spans(cls, trace_id: str, spans: Iterable[Span]) -> Trace:
        """Build the tree of one trace's spans."""
        ordered = sorted(spans, key=lambda s: s.start_time_unix_nano)
        tree = trace_tree(ordered)
        by_id = {s.span_id: s for s in ordered}
        return cls(
            trace_id=trace_id.lower(),
            spans=tuple(ordered),
            roots=tuple(by_id[i] for i in tree["roots"]),
            orphans=tuple(by_id[i] for i in tree["orphans"]),
            _children={p: tuple(by_id[i] for i in ids) for p, ids in tree["children"].items()},
        )

    def children(self, span: Span | str) -> tuple[Span, ...]:
        """The spans whose parent is ``span`` (a span or a span id), by start time."""
        span_id = span if isinstance(span, str) else span.span_id
        return self._children.get(span_id, ())

    def parent(self, span: Span) -> Span | None:
        """The parent of ``span`` if it arrived."""
        return self.by_id().get(span.parent_span_id)

    def by_id(self) -> dict[str, Span]:
        """Spans by span id."""
        return {s.span_id: s for s in self.spans}

    def find(self, name: str) -> list[Span]:
        """The spans called ``name``."""
        return [s for s in self.spans if s.name == name]


def trace_tree(spans: Iterable[Span]) -> dict[str, Any]:
    """Roots, orphans and children (span ids, in the given order) of one trace's spans."""
    spans = list(spans)
    ids = {s.span_id for s in spans}
    children: dict[str, list[str]] = {}
    roots, orphans = [], []
    for s in spans:
        parent = s.parent_span_id
        if not parent:
            roots.append(s.span_id)
        else:
            children.setdefault(parent, []).append(s.span_id)
            if parent not in ids:
                orphans.append(s.span_id)
    return {"roots": roots, "orphans": orphans, "children": children}


def exporter_env(endpoint: str, protocol: str) -> dict[str, str]:
    """The environment that points OpenTelemetry SDKs at ``endpoint`` with ``protocol``."""
    if protocol not in ("grpc", "http/protobuf", "http/json"):
        raise ValueError(f"unknown protocol {protocol!r}; use grpc, http/protobuf or http/json")
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
    }
    if protocol == "grpc":
        env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    return env
