"""The items a test gets back from the collector: spans, metrics, log records, requests.

They are frozen dataclasses built from the control API's JSON: ids are lowercase hex strings
(``""`` when absent), attribute values plain Python values (``str``, ``int``, ``float``,
``bool``, ``bytes``, ``list``, ``dict``, ``None`` for an empty value), and every item holds
the :class:`Resource` and :class:`Scope` it arrived with. Items of one request share those
two objects.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DataPoint",
    "LogRecord",
    "Metric",
    "RequestRecord",
    "Resource",
    "Scope",
    "Span",
    "SpanEvent",
    "SpanLink",
    "Trace",
    "exporter_env",
    "trace_tree",
]


@dataclass(frozen=True, slots=True)
class Resource:
    """The entity that produced the telemetry (``service.name`` and friends)."""

    attributes: Mapping[str, Any]
    schema_url: str = ""

    @property
    def service_name(self) -> str | None:
        """The ``service.name`` attribute, if any."""
        value = self.attributes.get("service.name")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Scope:
    """The instrumentation scope (library) that produced the telemetry."""

    name: str
    version: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    schema_url: str = ""


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """An event inside a span."""

    name: str
    time_unix_nano: int
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SpanLink:
    """A link from a span to another span."""

    trace_id: str
    span_id: str
    trace_state: str
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Span:
    """One received span.

    ``kind`` is ``"INTERNAL"``, ``"SERVER"``, ``"CLIENT"``, ``"PRODUCER"``, ``"CONSUMER"`` or
    ``"UNSPECIFIED"``; ``status_code`` is ``"UNSET"``, ``"OK"`` or ``"ERROR"``.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: Mapping[str, Any]
    events: tuple[SpanEvent, ...]
    links: tuple[SpanLink, ...]
    status_code: str
    status_message: str
    trace_state: str
    flags: int
    dropped_attributes_count: int
    resource: Resource
    scope: Scope

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_time_unix_nano - self.start_time_unix_nano

    @property
    def service_name(self) -> str | None:
        """The resource's ``service.name``."""
        return self.resource.service_name


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One data point of a metric.

    ``value`` holds a gauge's or sum's number; histograms and summaries fill ``count`` and
    ``sum``, and the rest of their fields (``bucket_counts``, ``explicit_bounds``, ``min``,
    ``max``, ``scale``, ``positive``, ``quantile_values``...) are in ``extra``.
    """

    attributes: Mapping[str, Any]
    start_time_unix_nano: int
    time_unix_nano: int
    value: int | float | None = None
    count: int | None = None
    sum: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Metric:
    """One received metric with its data points.

    ``type`` is ``"gauge"``, ``"sum"``, ``"histogram"``, ``"exponential_histogram"`` or
    ``"summary"``; ``aggregation_temporality`` is 1 for delta, 2 for cumulative, 0 for gauges
    and summaries.
    """

    name: str
    description: str
    unit: str
    type: str | None
    aggregation_temporality: int
    is_monotonic: bool
    data_points: tuple[DataPoint, ...]
    metadata: Mapping[str, Any]
    resource: Resource
    scope: Scope


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One received log record; ``body`` is a Python value like an attribute's."""

    time_unix_nano: int
    observed_time_unix_nano: int
    severity_number: int
    severity_text: str
    body: Any
    attributes: Mapping[str, Any]
    trace_id: str
    span_id: str
    flags: int
    event_name: str
    resource: Resource
    scope: Scope


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the collector answered (or dropped), faults included.

    ``status`` is the HTTP status for ``transport == "http"``, the gRPC code name (``"OK"``,
    ``"UNAVAILABLE"``...) for ``"grpc"``, or ``"dropped"``. ``size`` is the body as received,
    ``decoded_size`` after decompression; ``items`` counts the items stored.
    """

    id: int
    time: float
    transport: str
    signal: str | None
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
class Trace:
    """The spans of one trace and their tree.

    ``roots`` have no parent; ``orphans`` name a parent that did not arrive (yet).
    """

    trace_id: str
    spans: tuple[Span, ...]
    roots: tuple[Span, ...]
    orphans: tuple[Span, ...]
    _children: Mapping[str, tuple[Span, ...]]

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


def trace_tree(spans: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Roots, orphans and children (span ids, by start time) of one trace's span documents."""
    ordered = sorted(spans, key=lambda s: s["start_time_unix_nano"])
    ids = {s["span_id"] for s in ordered}
    children: dict[str, list[str]] = {}
    roots, orphans = [], []
    for s in ordered:
        parent = s["parent_span_id"]
        if not parent:
            roots.append(s["span_id"])
        else:
            children.setdefault(parent, []).append(s["span_id"])
            if parent not in ids:
                orphans.append(s["span_id"])
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


# -- building items from control API documents ---------------------------------------------


def _restore(value: Any) -> Any:
    if type(value) is dict:
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        return {k: _restore(v) for k, v in value.items()}
    if type(value) is list:
        return [_restore(v) for v in value]
    return value


def _attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    # Only arrays, maps and bytes come as containers; most attribute maps skip the walk.
    for value in attrs.values():
        if type(value) is dict or type(value) is list:
            return {k: _restore(v) for k, v in attrs.items()}
    return attrs


def _contexts(doc: Mapping[str, Any]) -> tuple[list[Resource], list[Scope]]:
    resources = [
        Resource(_attrs(r["attributes"]), r.get("schema_url", "")) for r in doc["resources"]
    ]
    scopes = [
        Scope(s["name"], s.get("version", ""), _attrs(s["attributes"]), s.get("schema_url", ""))
        for s in doc["scopes"]
    ]
    return resources, scopes


def spans_from_json(doc: Mapping[str, Any]) -> list[Span]:
    """Build spans from a control API document (``resources``, ``scopes``, ``spans``)."""
    resources, scopes = _contexts(doc)
    return [
        Span(
            s["trace_id"],
            s["span_id"],
            s["parent_span_id"],
            s["name"],
            s["kind"],
            s["start_time_unix_nano"],
            s["end_time_unix_nano"],
            _attrs(s["attributes"]),
            tuple(
                SpanEvent(e["name"], e["time_unix_nano"], _attrs(e["attributes"]))
                for e in s["events"]
            )
            if s["events"]
            else (),
            tuple(
                SpanLink(k["trace_id"], k["span_id"], k["trace_state"], _attrs(k["attributes"]))
                for k in s["links"]
            )
            if s["links"]
            else (),
            s["status"]["code"],
            s["status"]["message"],
            s["trace_state"],
            s["flags"],
            s["dropped_attributes_count"],
            resources[s["resource"]],
            scopes[s["scope"]],
        )
        for s in doc["spans"]
    ]


_POINT_KEYS = ("attributes", "start_time_unix_nano", "time_unix_nano", "value", "count", "sum")


def _point(p: Mapping[str, Any]) -> DataPoint:
    return DataPoint(
        _attrs(p["attributes"]),
        p["start_time_unix_nano"],
        p["time_unix_nano"],
        p.get("value"),
        p.get("count"),
        p.get("sum"),
        {k: v for k, v in p.items() if k not in _POINT_KEYS},
    )


def metrics_from_json(doc: Mapping[str, Any]) -> list[Metric]:
    """Build metrics from a control API document (``resources``, ``scopes``, ``metrics``)."""
    resources, scopes = _contexts(doc)
    return [
        Metric(
            m["name"],
            m["description"],
            m["unit"],
            m["type"],
            m["aggregation_temporality"],
            m["is_monotonic"],
            tuple(_point(p) for p in m["data_points"]),
            _attrs(m["metadata"]),
            resources[m["resource"]],
            scopes[m["scope"]],
        )
        for m in doc["metrics"]
    ]


def logs_from_json(doc: Mapping[str, Any]) -> list[LogRecord]:
    """Build log records from a control API document (``resources``, ``scopes``, ``logs``)."""
    resources, scopes = _contexts(doc)
    return [
        LogRecord(
            r["time_unix_nano"],
            r["observed_time_unix_nano"],
            r["severity_number"],
            r["severity_text"],
            _restore(r["body"]),
            _attrs(r["attributes"]),
            r["trace_id"],
            r["span_id"],
            r["flags"],
            r["event_name"],
            resources[r["resource"]],
            scopes[r["scope"]],
        )
        for r in doc["logs"]
    ]


def trace_from_json(trace_id: str, doc: Mapping[str, Any]) -> Trace:
    """Build a :class:`Trace` from ``GET /mocksup/traces/<id>``'s document."""
    spans = spans_from_json(doc)
    by_id = {s.span_id: s for s in spans}
    return Trace(
        trace_id=trace_id.lower(),
        spans=tuple(sorted(spans, key=lambda s: s.start_time_unix_nano)),
        roots=tuple(by_id[i] for i in doc["roots"]),
        orphans=tuple(by_id[i] for i in doc["orphans"]),
        _children={p: tuple(by_id[i] for i in ids) for p, ids in doc["children"].items()},
    )
