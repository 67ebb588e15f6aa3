"""Queries over stored batches: filter on the protobuf, answer as protobuf or JSON.

A query selects, batch by batch, the items that match its filters, looking at protobuf fields
only. The selection then becomes either

- a ``TracesData``/``MetricsData``/``LogsData`` message (what the Python client asks for: an
  unfiltered query is the stored bytes concatenated, since an ``Export*ServiceRequest`` and
  its ``*Data`` message share the layout), or
- a JSON document, resources and scopes listed once and referred to by index::

    {"resources": [{"attributes": {...}, "schema_url": ""}, ...],
     "scopes": [{"name": ..., "version": ..., "attributes": {...}, "schema_url": ""}, ...],
     "spans": [{..., "resource": 0, "scope": 0}, ...]}

Both are built from the same selection, and the JSON items by the same classes the Python
client uses (:mod:`mocksup.otlp.items`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mocksup.otlp._signals import Signal, items_of, resources_of, scopes_of
from mocksup.otlp._store import Batch
from mocksup.otlp._values import KINDS, STATUS_CODES, no_gc, to_python
from mocksup.otlp.items import LogRecord, Resource, Scope, Span
from mocksup.otlp.metrics import Metric

__all__ = (
    "ITEM_KEYS",
    "Query",
    "Result",
    "filter_params",
    "items_from_protobuf",
    "json_document",
    "parse_attr_filters",
    "select",
    "summarise",
)

_HEX = re.compile(r"[0-9a-fA-F]*")
# A span kind or status code given as its number: plain ASCII digits, kept as sent.
_ENUM_NUMBER = re.compile(r"-?[0-9]+")
_METRIC_TYPES = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
#: The key of the item list in a query document, per signal.
ITEM_KEYS = {"traces": "spans", "metrics": "metrics", "logs": "logs"}

_MISSING = object()


@functools.cache
def _parsers() -> dict[str, Callable[[bytes], Any]]:
    """Per signal, the parser of its export request. Imported on first use: a parent that
    only starts a collector (``mocksup up``) does not load the protobuf modules before
    its child has its server."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    return {
        "traces": ExportTraceServiceRequest.FromString,
        "metrics": ExportMetricsServiceRequest.FromString,
        "logs": ExportLogsServiceRequest.FromString,
    }


@functools.cache
def _data_types() -> dict[str, Any]:
    """Per signal, its ``TracesData``/``MetricsData``/``LogsData`` class (see _parsers)."""
    from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
    from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    return {"traces": TracesData, "metrics": MetricsData, "logs": LogsData}


def parse_attr_filters(specs: Iterable[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into a filter mapping.

    The value is read as JSON when it parses (``code=200`` is the integer 200,
    ``ok=true`` a boolean) and compared as text otherwise; ``key`` alone asks only that the
    attribute exists (the mapping then holds a sentinel).
    """
    out: dict[str, Any] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        if not sep:
            out[key] = _MISSING
            continue
        try:
            out[key] = (json.loads(text), text)
        except ValueError:
            out[key] = (text, text)
    return out


def _attrs_match(kvs: Iterable[Any], wanted: Mapping[str, Any]) -> bool:
    if not wanted:
        return True
    have = {kv.key: kv.value for kv in kvs}
    for key, expected in wanted.items():
        value = have.get(key)
        if value is None:
            return False
        if expected is _MISSING:
            continue
        actual = to_python(value)
        parsed, text = expected
        if actual not in (parsed, text):
            return False
    return True


def _id_filter(text: str | None, size: int, what: str) -> bytes | None:
    if not text:
        return None
    if not _HEX.fullmatch(text) or len(text) != 2 * size:
        shown = repr(text) if len(text) <= 64 else repr(text[:64]) + "..."
        raise ValueError(f"{what} {shown} is not {2 * size} hex digits")
    return bytes.fromhex(text)


def _enum_filter(value: str | None, names: tuple[str, ...], what: str) -> int | None:
    if value is None or value == "":
        return None
    if _ENUM_NUMBER.fullmatch(value):
        return int(value)  # a number, known to the enum or not (kept as sent)
    name = value.upper()
    for prefix in ("SPAN_KIND_", "STATUS_CODE_"):
        name = name.removeprefix(prefix)
    if name not in names:
        raise ValueError(f"unknown {what} {value!r}; one of {', '.join(names)}")
    return names.index(name)


class Query:
    """A filter over one signal; build it from the control API's query parameters.

    :param params: ``name``, ``attr`` (a list of ``key=value``), ``resource`` (same, on
        resource attributes), ``service_name``, ``scope`` (instrumentation scope name),
        ``trace_id``; spans also ``kind`` and ``status``; logs ``severity_text``,
        ``min_severity``, ``body`` and ``span_id``; metrics ``type``.
    :raises ValueError: a parameter has no valid value.
    """

    def __init__(self, signal: Signal, params: Mapping[str, Any]) -> None:
        self.signal = signal
        self.name: str | None = params.get("name") or None
        self.attrs = parse_attr_filters(params.get("attr") or [])
        self.resource = parse_attr_filters(params.get("resource") or [])
        service = params.get("service_name")
        if service:
            self.resource["service.name"] = (service, service)
        self.scope: str | None = params.get("scope") or None
        self.trace_id = _id_filter(params.get("trace_id"), 16, "trace_id")
        self.span_id = _id_filter(params.get("span_id"), 8, "span_id")
        self.kind = _enum_filter(params.get("kind"), KINDS, "span kind")
        self.status = _enum_filter(params.get("status"), STATUS_CODES, "status code")
        self.severity_text: str | None = params.get("severity_text") or None
        self.min_severity = int(params.get("min_severity") or 0)
        self.body: str | None = params.get("body")
        self.metric_type: str | None = params.get("type") or None
        if self.metric_type is not None and self.metric_type not in _METRIC_TYPES:
            raise ValueError(f"unknown metric type {self.metric_type!r}")
        self.is_empty = not (
            self.name
            or self.attrs
            or self.resource
            or self.scope
            or self.trace_id
            or self.span_id
            or self.kind is not None
            or self.status is not None
            or self.severity_text
            or self.min_severity
            or self.body is not None
            or self.metric_type
        )


def select(signal: Signal, query: Query, batch: Batch) -> tuple[bytes, int]:
    """The items of one stored batch that ``query`` matches, as a serialised ``*Data``
    message (the stored bytes themselves when nothing is filtered), and how many."""
    if query.is_empty:
        return batch.raw, batch.count
    parts = []
    count = 0
    message = _parsers()[signal](batch.raw)
    for top in resources_of(signal, message):
        if not _attrs_match(top.resource.attributes, query.resource):
            continue
        for group in scopes_of(signal, top):
            if query.scope is not None and group.scope.name != query.scope:
                continue
            items = _select(signal, query, group)
            if items:
                parts.append(_group_bytes(signal, top, group, items))
                count += len(items)
    # Repeated fields concatenate: the groups' messages joined are one message.
    return b"".join(parts), count


def _group_bytes(signal: Signal, top: Any, group: Any, items: list[Any]) -> bytes:
    data = _data_types()[signal]()
    out_top = resources_of(signal, data).add()
    out_top.resource.CopyFrom(top.resource)
    out_top.schema_url = top.schema_url
    out_group = scopes_of(signal, out_top).add()
    out_group.scope.CopyFrom(group.scope)
    out_group.schema_url = group.schema_url
    items_of(signal, out_group).extend(items)
    serialised: bytes = data.SerializeToString()
    return serialised


class Result:
    """The growing selection of a query, kept serialised."""

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self.count = 0
        # In arrival order: serialised *Data messages (whole batches or selections). Each
        # is serialised at once: holding a selected item would keep its whole request's
        # parsed message (about 1.5 KiB a span) alive until the answer.
        self.parts: list[bytes] = []

    def add(self, query: Query, batches: Iterable[Batch]) -> None:
        """Append the items of ``batches`` that ``query`` matches."""
        with no_gc():
            for batch in batches:
                part, count = select(self.signal, query, batch)
                if count:
                    self.parts.append(part)
                    self.count += count

    def protobuf(self) -> bytes:
        """The selection as a serialised ``TracesData``/``MetricsData``/``LogsData``."""
        return b"".join(self.parts)

    def items(self) -> list[Any]:
        """The selected items as :mod:`~mocksup.otlp.items` objects (in the child)."""
        with no_gc():
            return items_from_protobuf(self.signal, self.protobuf())


def json_document(signal: Signal, items: list[Any]) -> dict[str, Any]:
    """Items as a JSON document with resources and scopes listed once."""
    with no_gc():
        return _json_document(signal, items)


def _json_document(signal: Signal, items: list[Any]) -> dict[str, Any]:
    resources: dict[int, int] = {}
    scopes: dict[int, int] = {}
    resource_docs: list[dict[str, Any]] = []
    scope_docs: list[dict[str, Any]] = []
    docs = []
    for item in items:
        # Items of one group share their Resource and Scope objects: index by identity.
        r = resources.get(id(item.resource))
        if r is None:
            r = resources[id(item.resource)] = len(resource_docs)
            resource_docs.append(item.resource.to_json())
        s = scopes.get(id(item.scope))
        if s is None:
            s = scopes[id(item.scope)] = len(scope_docs)
            scope_docs.append(item.scope.to_json())
        docs.append({**item.to_json(), "resource": r, "scope": s})
    return {"resources": resource_docs, "scopes": scope_docs, ITEM_KEYS[signal]: docs}


def _select(signal: Signal, q: Query, group: Any) -> list[Any]:
    if signal == "traces":
        # One pass per filter given, cheapest first, each over the survivors of the last.
        spans: Any = group.spans
        if q.name is not None:
            spans = [s for s in spans if s.name == q.name]
        if q.trace_id is not None:
            spans = [s for s in spans if s.trace_id == q.trace_id]
        if q.kind is not None:
            spans = [s for s in spans if s.kind == q.kind]
        if q.status is not None:
            spans = [s for s in spans if s.status.code == q.status]
        if q.attrs:
            spans = [s for s in spans if _attrs_match(s.attributes, q.attrs)]
        return list(spans)
    if signal == "metrics":
        metrics = [
            m
            for m in group.metrics
            if (q.name is None or m.name == q.name)
            and (q.metric_type is None or m.WhichOneof("data") == q.metric_type)
            and (not q.attrs or any(_attrs_match(p.attributes, q.attrs) for p in _points(m)))
        ]
        return [_matching_points(m, q) for m in metrics] if q.attrs else metrics
    return [
        r
        for r in group.log_records
        if (q.name is None or r.event_name == q.name)
        and (q.severity_text is None or r.severity_text == q.severity_text)
        and r.severity_number >= q.min_severity
        and (q.trace_id is None or r.trace_id == q.trace_id)
        and (q.span_id is None or r.span_id == q.span_id)
        and (q.body is None or _body_text(r) == q.body)
        and _attrs_match(r.attributes, q.attrs)
    ]


def _body_text(record: Any) -> str:
    body = to_python(record.body)
    return body if isinstance(body, str) else json.dumps(body)


def _points(metric: Any) -> Any:
    kind = metric.WhichOneof("data")
    return getattr(metric, kind).data_points if kind else ()


def _matching_points(metric: Any, q: Query) -> Any:
    # Attribute filters on metrics select data points: answer a copy with the matching ones.
    copy = type(metric)()
    copy.CopyFrom(metric)
    points = _points(copy)
    for index in reversed(range(len(points))):
        if not _attrs_match(points[index].attributes, q.attrs):
            del points[index]
    return copy


def summarise(signal: Signal, batches: Iterable[Batch], limit: int = 20) -> list[str]:
    """Short lines naming what arrived (``'GET /x' x3 (service svc)``), for wait errors."""
    result = Result(signal)
    result.add(Query(signal, {}), batches)
    counts: dict[str, int] = {}
    for item in result.items():
        service = item.service_name
        name = (item.event_name or str(item.body)[:60]) if signal == "logs" else item.name
        label = f"{name!r}" + (f" (service {service})" if service else "")
        counts[label] = counts.get(label, 0) + 1
    lines = [f"{label} x{n}" if n > 1 else label for label, n in counts.items()]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more kinds"]
    return lines


def items_from_protobuf(signal: Signal, data: bytes) -> list[Any]:
    """The items of a ``TracesData``/``MetricsData``/``LogsData`` message, in order.

    The Python client calls it in the test's process: it never touches the garbage collector
    there (the child's callers pause it around their own calls, see ``no_gc``).
    """
    out: list[Any] = []
    if signal == "traces":
        for rs in _data_types()["traces"].FromString(data).resource_spans:
            resource = Resource.from_protobuf(rs.resource, rs.schema_url)
            for ss in rs.scope_spans:
                scope = Scope.from_protobuf(ss.scope, ss.schema_url)
                out.extend([Span(s, resource, scope) for s in ss.spans])
    elif signal == "metrics":
        for rm in _data_types()["metrics"].FromString(data).resource_metrics:
            resource = Resource.from_protobuf(rm.resource, rm.schema_url)
            for sm in rm.scope_metrics:
                scope = Scope.from_protobuf(sm.scope, sm.schema_url)
                out.extend([Metric(m, resource, scope) for m in sm.metrics])
    else:
        for rl in _data_types()["logs"].FromString(data).resource_logs:
            resource = Resource.from_protobuf(rl.resource, rl.schema_url)
            for sl in rl.scope_logs:
                scope = Scope.from_protobuf(sl.scope, sl.schema_url)
                out.extend([LogRecord(r, resource, scope) for r in sl.log_records])
    return out


def filter_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """The control API parameters of the query methods' keyword arguments (``None``: unset;
    ``count``, ``timeout`` and ``self`` are not filters)."""
    params: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("self", "count", "timeout") or value is None:
            continue
        if key in ("attributes", "resource"):
            params["attr" if key == "attributes" else "resource"] = [
                k if v is None else f"{k}={json.dumps(v)}" for k, v in value.items()
            ]
        elif key == "event_name":
            params["name"] = value
        else:
            params[key] = value
    return params
