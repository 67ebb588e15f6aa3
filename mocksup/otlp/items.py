"""The items a test gets back from the collector: spans, metrics, log records, requests.

:class:`Span`, :class:`Metric` and :class:`LogRecord` are read-only views over the received
protobuf message: ids come out as lowercase hex strings (``""`` when absent), attribute
values as plain Python values (``str``, ``int``, ``float``, ``bool``, ``bytes``, ``list``,
``dict``, ``None`` for an empty value), and every item holds the :class:`Resource` and
:class:`Scope` it arrived with (shared by the items of one request).

Why views and not eagerly built dataclasses: a query over 100k spans must take well under a
second, and building 100k attribute dictionaries (or encoding and decoding them as JSON) alone
takes several. A view decodes a field when it is read (attributes once, then cached), so
``spans()`` costs a protobuf parse plus one small object per span. The same classes produce
the control API's JSON documents (:meth:`Span.to_json`), so there is one conversion.
"""

from __future__ import annotations

import base64
import gc
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

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

#: Span kinds and status codes by number, as items and the control API spell them.
KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")


def to_python(value: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (``None`` when empty)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind is None:
        return None
    if kind == "array_value":
        return [to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: to_python(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes_of(kvs: Iterable[Any]) -> dict[str, Any]:
    """OTLP ``KeyValue`` lists as a dict of Python values."""
    out = {}
    for kv in kvs:
        value = kv.value
        kind = value.WhichOneof("value")
        # Strings are most attribute values: skip the general converter's call for them.
        out[kv.key] = value.string_value if kind == "string_value" else to_python(value)
    return out


def jsonable(value: Any) -> Any:
    """A Python attribute value as JSON: bytes become ``{"$bytes": "<base64>"}``."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def _jsonable_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    for value in attrs.values():
        if isinstance(value, (bytes, list, dict)):
            return {k: jsonable(v) for k, v in attrs.items()}
    return dict(attrs)


@dataclass(frozen=True, slots=True)
class Resource:
    """The entity that produced the telemetry (``service.name`` and friends)."""

    attributes: Mapping[str, Any]
    schema_url: str = ""

    @classmethod
    def from_protobuf(cls, resource: Any, schema_url: str = "") -> Resource:
        """Build it from an OTLP ``Resource`` message."""
        return cls(attributes_of(resource.attributes), schema_url)

    @property
    def service_name(self) -> str | None:
        """The ``service.name`` attribute, if any."""
        value = self.attributes.get("service.name")
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        """The control API's JSON form."""
        return {"attributes": _jsonable_attrs(self.attributes), "schema_url": self.schema_url}


@dataclass(frozen=True, slots=True)
class Scope:
    """The instrumentation scope (library) that produced the telemetry."""

    name: str
    version: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    schema_url: str = ""

    @classmethod
    def from_protobuf(cls, scope: Any, schema_url: str = "") -> Scope:
        """Build it from an OTLP ``InstrumentationScope`` message."""
        return cls(scope.name, scope.version, attributes_of(scope.attributes), schema_url)

    def to_json(self) -> dict[str, Any]:
        """The control API's JSON form."""
        return {
            "name": self.name,
            "version": self.version,
            "attributes": _jsonable_attrs(self.attributes),
            "schema_url": self.schema_url,
        }


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


class _View:
    """A read-only view over one received protobuf message, with its resource and scope."""

    __slots__ = ("_attributes", "_pb", "_resource", "_scope")
    _fields: tuple[str, ...] = ()

    def __init__(self, pb: Any, resource: Resource, scope: Scope) -> None:
        self._pb = pb
        self._resource = resource
        self._scope = scope
        self._attributes: dict[str, Any] | None = None

    @property
    def resource(self) -> Resource:
        """The resource this item arrived with."""
        return self._resource

    @property
    def scope(self) -> Scope:
        """The instrumentation scope this item arrived with."""
        return self._scope

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The item's attributes as Python values (decoded on first access)."""
        if self._attributes is None:
            self._attributes = attributes_of(self._pb.attributes)
        return self._attributes

    @property
    def service_name(self) -> str | None:
        """The resource's ``service.name``."""
        return self._resource.service_name

    def to_protobuf(self) -> Any:
        """A copy of the received protobuf message (without resource and scope)."""
        copy = type(self._pb)()
        copy.CopyFrom(self._pb)
        return copy

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _View)
        return (self._pb, self._resource, self._scope) == (other._pb, other._resource, other._scope)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._pb.SerializeToString(), self._resource, self._scope))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"


def _rebuild(cls: type[_View], data: bytes, resource: Resource, scope: Scope) -> _View:
    message = _MESSAGE_TYPES[cls.__name__]()
    message.ParseFromString(data)
    return cls(message, resource, scope)


class Span(_View):
    """One received span.

    ``kind`` is ``"INTERNAL"``, ``"SERVER"``, ``"CLIENT"``, ``"PRODUCER"``, ``"CONSUMER"`` or
    ``"UNSPECIFIED"``; ``status_code`` is ``"UNSET"``, ``"OK"`` or ``"ERROR"``.
    """

    __slots__ = ()
    _fields = ("name", "kind", "trace_id", "span_id", "parent_span_id", "status_code")

    @property
    def trace_id(self) -> str:
        """The trace id, 32 lowercase hex digits."""
        return str(self._pb.trace_id.hex())

    @property
    def span_id(self) -> str:
        """The span id, 16 lowercase hex digits."""
        return str(self._pb.span_id.hex())

    @property
    def parent_span_id(self) -> str:
        """The parent's span id, ``""`` for a root span."""
        return str(self._pb.parent_span_id.hex())

    @property
    def name(self) -> str:
        """The span name."""
        return str(self._pb.name)

    @property
    def kind(self) -> str:
        """The span kind's name."""
        kind = int(self._pb.kind)
        return KINDS[kind] if kind < len(KINDS) else str(kind)

    @property
    def start_time_unix_nano(self) -> int:
        """Start time, nanoseconds since the epoch."""
        return int(self._pb.start_time_unix_nano)

    @property
    def end_time_unix_nano(self) -> int:
        """End time, nanoseconds since the epoch."""
        return int(self._pb.end_time_unix_nano)

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_time_unix_nano - self.start_time_unix_nano

    @property
    def status_code(self) -> str:
        """``"UNSET"``, ``"OK"`` or ``"ERROR"``."""
        code = int(self._pb.status.code)
        return STATUS_CODES[code] if code < len(STATUS_CODES) else str(code)

    @property
    def status_message(self) -> str:
        """The status description."""
        return str(self._pb.status.message)

    @property
    def trace_state(self) -> str:
        """The W3C trace state."""
        return str(self._pb.trace_state)

    @property
    def flags(self) -> int:
        """The span's flags (trace flags and the parent-is-remote bits)."""
        return int(self._pb.flags)

    @property
    def dropped_attributes_count(self) -> int:
        """Attributes the sender dropped."""
        return int(self._pb.dropped_attributes_count)

    @property
    def events(self) -> tuple[SpanEvent, ...]:
        """The span's events."""
        return tuple(
            SpanEvent(e.name, e.time_unix_nano, attributes_of(e.attributes))
            for e in self._pb.events
        )

    @property
    def links(self) -> tuple[SpanLink, ...]:
        """The span's links."""
        return tuple(
            SpanLink(k.trace_id.hex(), k.span_id.hex(), k.trace_state, attributes_of(k.attributes))
            for k in self._pb.links
        )

    def to_json(self) -> dict[str, Any]:
        """The control API's JSON form (without resource and scope)."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "trace_state": self.trace_state,
            "flags": self.flags,
            "name": self.name,
            "kind": self.kind,
            "start_time_unix_nano": self.start_time_unix_nano,
            "end_time_unix_nano": self.end_time_unix_nano,
            "attributes": _jsonable_attrs(self.attributes),
            "events": [
                {
                    "name": e.name,
                    "time_unix_nano": e.time_unix_nano,
                    "attributes": _jsonable_attrs(e.attributes),
                }
                for e in self.events
            ],
            "links": [
                {
                    "trace_id": k.trace_id,
                    "span_id": k.span_id,
                    "trace_state": k.trace_state,
                    "attributes": _jsonable_attrs(k.attributes),
                }
                for k in self.links
            ],
            "status": {"code": self.status_code, "message": self.status_message},
            "dropped_attributes_count": self.dropped_attributes_count,
        }


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One data point of a metric.

    ``value`` holds a gauge's or sum's number; histograms and summaries fill ``count`` and
    ``sum``, and the rest of their fields (``bucket_counts``, ``explicit_bounds``, ``min``,
    ``max``, ``scale``, ``zero_count``, ``positive``, ``negative``, ``quantile_values``) are
    in ``extra``.
    """

    attributes: Mapping[str, Any]
    start_time_unix_nano: int
    time_unix_nano: int
    value: int | float | None = None
    count: int | None = None
    sum: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_protobuf(cls, kind: str, p: Any) -> DataPoint:
        """Build it from a data point message of a metric of type ``kind``."""
        attrs = attributes_of(p.attributes)
        if kind in ("gauge", "sum"):
            which = p.WhichOneof("value")
            value = getattr(p, which) if which else None
            return cls(attrs, p.start_time_unix_nano, p.time_unix_nano, value)
        if kind == "summary":
            quantiles = [{"quantile": q.quantile, "value": q.value} for q in p.quantile_values]
            extra: dict[str, Any] = {"quantile_values": quantiles}
            return cls(attrs, p.start_time_unix_nano, p.time_unix_nano, None, p.count, p.sum, extra)
        optional = {name: getattr(p, name) if p.HasField(name) else None for name in ("min", "max")}
        if kind == "histogram":
            extra = {
                "bucket_counts": list(p.bucket_counts),
                "explicit_bounds": list(p.explicit_bounds),
                **optional,
            }
        else:
            extra = {
                "scale": p.scale,
                "zero_count": p.zero_count,
                "positive": {
                    "offset": p.positive.offset,
                    "bucket_counts": list(p.positive.bucket_counts),
                },
                "negative": {
                    "offset": p.negative.offset,
                    "bucket_counts": list(p.negative.bucket_counts),
                },
                **optional,
            }
        total = p.sum if p.HasField("sum") else None
        return cls(attrs, p.start_time_unix_nano, p.time_unix_nano, None, p.count, total, extra)

    def to_json(self) -> dict[str, Any]:
        """The control API's JSON form."""
        return {
            "attributes": _jsonable_attrs(self.attributes),
            "start_time_unix_nano": self.start_time_unix_nano,
            "time_unix_nano": self.time_unix_nano,
            "value": self.value,
            "count": self.count,
            "sum": self.sum,
            **self.extra,
        }


class Metric(_View):
    """One received metric (of one export) with its data points.

    ``type`` is ``"gauge"``, ``"sum"``, ``"histogram"``, ``"exponential_histogram"`` or
    ``"summary"``; ``aggregation_temporality`` is 1 for delta, 2 for cumulative, 0 for gauges
    and summaries. ``attributes`` are the metric's ``metadata``.
    """

    __slots__ = ()
    _fields = ("name", "type", "unit", "data_points")

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The metric's ``metadata`` attributes."""
        if self._attributes is None:
            self._attributes = attributes_of(self._pb.metadata)
        return self._attributes

    @property
    def name(self) -> str:
        """The metric name."""
        return str(self._pb.name)

    @property
    def description(self) -> str:
        """The metric description."""
        return str(self._pb.description)

    @property
    def unit(self) -> str:
        """The metric unit."""
        return str(self._pb.unit)

    @property
    def type(self) -> str | None:
        """The data type, ``None`` if the metric has no data."""
        kind = self._pb.WhichOneof("data")
        return str(kind) if kind else None

    @property
    def aggregation_temporality(self) -> int:
        """1 delta, 2 cumulative, 0 when the type has none."""
        kind = self.type
        return int(getattr(self._pb, kind).aggregation_temporality) if kind in _TEMPORAL else 0

    @property
    def is_monotonic(self) -> bool:
        """Whether a sum is monotonic (``False`` for other types)."""
        return self.type == "sum" and bool(self._pb.sum.is_monotonic)

    @property
    def data_points(self) -> tuple[DataPoint, ...]:
        """The data points, decoded."""
        kind = self.type
        if kind is None:
            return ()
        return tuple(DataPoint.from_protobuf(kind, p) for p in getattr(self._pb, kind).data_points)

    def to_json(self) -> dict[str, Any]:
        """The control API's JSON form (without resource and scope)."""
        return {
            "name": self.name,
            "description": self.description,
            "unit": self.unit,
            "type": self.type,
            "aggregation_temporality": self.aggregation_temporality,
            "is_monotonic": self.is_monotonic,
            "data_points": [p.to_json() for p in self.data_points],
            "metadata": _jsonable_attrs(self.attributes),
        }


_TEMPORAL = ("sum", "histogram", "exponential_histogram")


class LogRecord(_View):
    """One received log record; ``body`` is a Python value like an attribute's."""

    __slots__ = ()
    _fields = ("event_name", "severity_text", "body", "trace_id", "span_id")

    @property
    def time_unix_nano(self) -> int:
        """When the event happened (0 if unknown)."""
        return int(self._pb.time_unix_nano)

    @property
    def observed_time_unix_nano(self) -> int:
        """When the record was observed."""
        return int(self._pb.observed_time_unix_nano)

    @property
    def severity_number(self) -> int:
        """The severity number (9 INFO, 13 WARN, 17 ERROR...)."""
        return int(self._pb.severity_number)

    @property
    def severity_text(self) -> str:
        """The severity text as sent."""
        return str(self._pb.severity_text)

    @property
    def body(self) -> Any:
        """The body as a Python value."""
        return to_python(self._pb.body)

    @property
    def trace_id(self) -> str:
        """The correlated trace id, ``""`` if none."""
        return str(self._pb.trace_id.hex())

    @property
    def span_id(self) -> str:
        """The correlated span id, ``""`` if none."""
        return str(self._pb.span_id.hex())

    @property
    def flags(self) -> int:
        """The record's trace flags."""
        return int(self._pb.flags)

    @property
    def event_name(self) -> str:
        """The event name, ``""`` for a plain log."""
        return str(self._pb.event_name)

    def to_json(self) -> dict[str, Any]:
        """The control API's JSON form (without resource and scope)."""
        return {
            "time_unix_nano": self.time_unix_nano,
            "observed_time_unix_nano": self.observed_time_unix_nano,
            "severity_number": self.severity_number,
            "severity_text": self.severity_text,
            "body": jsonable(self.body),
            "attributes": _jsonable_attrs(self.attributes),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "flags": self.flags,
            "event_name": self.event_name,
        }


_MESSAGE_TYPES: dict[str, Any] = {}


def _register() -> None:
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric as PbMetric
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    _MESSAGE_TYPES.update(Span=PbSpan, Metric=PbMetric, LogRecord=PbLogRecord)


_register()


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects.

    Creating 100k items triggers collections that walk the whole (growing) heap again and
    again, which doubles the cost of a large query; these objects hold no cycles, so reference
    counting frees them all the same.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def items_from_protobuf(signal: str, data: bytes) -> list[Any]:
    """The items of a ``TracesData``/``MetricsData``/``LogsData`` message, in order."""
    with no_gc():
        return _items_from_protobuf(signal, data)


def _items_from_protobuf(signal: str, data: bytes) -> list[Any]:
    out: list[Any] = []
    if signal == "traces":
        for rs in TracesData.FromString(data).resource_spans:
            resource = Resource.from_protobuf(rs.resource, rs.schema_url)
            for ss in rs.scope_spans:
                scope = Scope.from_protobuf(ss.scope, ss.schema_url)
                out.extend([Span(s, resource, scope) for s in ss.spans])
    elif signal == "metrics":
        for rm in MetricsData.FromString(data).resource_metrics:
            resource = Resource.from_protobuf(rm.resource, rm.schema_url)
            for sm in rm.scope_metrics:
                scope = Scope.from_protobuf(sm.scope, sm.schema_url)
                out.extend([Metric(m, resource, scope) for m in sm.metrics])
    else:
        for rl in LogsData.FromString(data).resource_logs:
            resource = Resource.from_protobuf(rl.resource, rl.schema_url)
            for sl in rl.scope_logs:
                scope = Scope.from_protobuf(sl.scope, sl.schema_url)
                out.extend([LogRecord(r, resource, scope) for r in sl.log_records])
    return out


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
