"""Queries over stored batches: filter cheaply on the protobuf, materialise what matches.

The answer of a query is a JSON-able document (what the control API sends)::

    {"resources": [{"attributes": {...}, "schema_url": ""}, ...],
     "scopes": [{"name": ..., "version": ..., "attributes": {...}, "schema_url": ""}, ...],
     "spans": [{..., "resource": 0, "scope": 0}, ...]}

Resources and scopes are listed once and referred to by index: a batch of 512 spans shares
one of each, so this keeps the document, its encoding and the parent's decoding small.
Filters look at the protobuf fields before anything is materialised.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mocksup.otlp._store import Batch

__all__ = ["ITEM_KEYS", "KINDS", "STATUS_CODES", "Query", "Result", "parse_attr_filters"]

#: Span kinds and status codes by number, as the control API spells them.
KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")
_METRIC_TYPES = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_PARSERS: dict[str, Any] = {
    "traces": ExportTraceServiceRequest.FromString,
    "metrics": ExportMetricsServiceRequest.FromString,
    "logs": ExportLogsServiceRequest.FromString,
}
#: The key of the item list in a query document, per signal.
ITEM_KEYS = {"traces": "spans", "metrics": "metrics", "logs": "logs"}

_MISSING = object()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        # JSON has no bytes: a one-key marker object that the parent turns back into bytes.
        return {"$bytes": base64.b64encode(value.bytes_value).decode()}
    return getattr(value, kind)


def _attrs(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


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
        actual = _value(value)
        parsed, text = expected
        if actual not in (parsed, text):
            return False
    return True


def _enum_filter(value: str | None, names: tuple[str, ...], what: str) -> int | None:
    if value is None or value == "":
        return None
    if value.isdigit():
        return int(value)
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

    def __init__(self, signal: str, params: Mapping[str, Any]) -> None:
        self.signal = signal
        self.name: str | None = params.get("name") or None
        self.attrs = parse_attr_filters(params.get("attr") or [])
        self.resource = parse_attr_filters(params.get("resource") or [])
        service = params.get("service_name")
        if service:
            self.resource["service.name"] = (service, service)
        self.scope: str | None = params.get("scope") or None
        trace_id = (params.get("trace_id") or "").lower()
        self.trace_id = bytes.fromhex(trace_id) if trace_id else None
        span_id = (params.get("span_id") or "").lower()
        self.span_id = bytes.fromhex(span_id) if span_id else None
        self.kind = _enum_filter(params.get("kind"), KINDS, "span kind")
        self.status = _enum_filter(params.get("status"), STATUS_CODES, "status code")
        self.severity_text: str | None = params.get("severity_text") or None
        self.min_severity = int(params.get("min_severity") or 0)
        self.body: str | None = params.get("body")
        self.metric_type: str | None = params.get("type") or None
        if self.metric_type is not None and self.metric_type not in _METRIC_TYPES:
            raise ValueError(f"unknown metric type {self.metric_type!r}")


class Result:
    """The growing answer of a query: resources and scopes by index, and the items."""

    def __init__(self, signal: str) -> None:
        self.signal = signal
        self.resources: list[dict[str, Any]] = []
        self.scopes: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self._resource_index: dict[bytes, int] = {}
        self._scope_index: dict[bytes, int] = {}

    def document(self, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The JSON-able answer (``items`` replaces the item list when given)."""
        return {
            "resources": self.resources,
            "scopes": self.scopes,
            ITEM_KEYS[self.signal]: self.items if items is None else items,
        }

    def _resource(self, resource: Any) -> int:
        key = resource.SerializeToString()
        index = self._resource_index.get(key)
        if index is None:
            index = self._resource_index[key] = len(self.resources)
            self.resources.append({"attributes": _attrs(resource.attributes), "schema_url": ""})
        return index

    def _scope(self, scope: Any, schema_url: str) -> int:
        key = scope.SerializeToString() + schema_url.encode()
        index = self._scope_index.get(key)
        if index is None:
            index = self._scope_index[key] = len(self.scopes)
            self.scopes.append(
                {
                    "name": scope.name,
                    "version": scope.version,
                    "attributes": _attrs(scope.attributes),
                    "schema_url": schema_url,
                }
            )
        return index

    def add(self, query: Query, batches: Iterable[Batch]) -> None:
        """Append the items of ``batches`` that ``query`` matches."""
        parse = _PARSERS[self.signal]
        for batch in batches:
            message = parse(batch.raw)
            for top in _tops(self.signal, message):
                if not _attrs_match(top.resource.attributes, query.resource):
                    continue
                resource = -1
                for scope_group in _scope_groups(self.signal, top):
                    if query.scope is not None and scope_group.scope.name != query.scope:
                        continue
                    items = _select(self.signal, query, scope_group)
                    if not items:
                        continue
                    if resource < 0:
                        resource = self._resource(top.resource)
                        self.resources[resource]["schema_url"] = top.schema_url
                    scope = self._scope(scope_group.scope, scope_group.schema_url)
                    self.items.extend(
                        _MATERIALISE[self.signal](item, resource, scope, query) for item in items
                    )


def _tops(signal: str, message: Any) -> Any:
    if signal == "traces":
        return message.resource_spans
    if signal == "metrics":
        return message.resource_metrics
    return message.resource_logs


def _scope_groups(signal: str, top: Any) -> Any:
    if signal == "traces":
        return top.scope_spans
    if signal == "metrics":
        return top.scope_metrics
    return top.scope_logs


def _select(signal: str, q: Query, group: Any) -> list[Any]:
    if signal == "traces":
        spans = group.spans
        return [
            s
            for s in spans
            if (q.name is None or s.name == q.name)
            and (q.kind is None or s.kind == q.kind)
            and (q.status is None or s.status.code == q.status)
            and (q.trace_id is None or s.trace_id == q.trace_id)
            and _attrs_match(s.attributes, q.attrs)
        ]
    if signal == "metrics":
        return [
            m
            for m in group.metrics
            if (q.name is None or m.name == q.name)
            and (q.metric_type is None or m.WhichOneof("data") == q.metric_type)
            and (not q.attrs or any(_attrs_match(p.attributes, q.attrs) for p in _points(m)))
        ]
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
    body = _value(record.body)
    return body if isinstance(body, str) else json.dumps(body)


def _points(metric: Any) -> Any:
    kind = metric.WhichOneof("data")
    return getattr(metric, kind).data_points if kind else ()


def _span(s: Any, resource: int, scope: int, query: Query) -> dict[str, Any]:
    return {
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(),
        "trace_state": s.trace_state,
        "flags": s.flags,
        "name": s.name,
        "kind": KINDS[s.kind] if s.kind < len(KINDS) else str(s.kind),
        "start_time_unix_nano": s.start_time_unix_nano,
        "end_time_unix_nano": s.end_time_unix_nano,
        "attributes": _attrs(s.attributes),
        "events": [
            {"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": _attrs(e.attributes)}
            for e in s.events
        ],
        "links": [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "trace_state": link.trace_state,
                "attributes": _attrs(link.attributes),
            }
            for link in s.links
        ],
        "status": {
            "code": STATUS_CODES[s.status.code] if s.status.code < 3 else str(s.status.code),
            "message": s.status.message,
        },
        "dropped_attributes_count": s.dropped_attributes_count,
        "resource": resource,
        "scope": scope,
    }


def _log(r: Any, resource: int, scope: int, query: Query) -> dict[str, Any]:
    return {
        "time_unix_nano": r.time_unix_nano,
        "observed_time_unix_nano": r.observed_time_unix_nano,
        "severity_number": r.severity_number,
        "severity_text": r.severity_text,
        "body": _value(r.body),
        "attributes": _attrs(r.attributes),
        "trace_id": r.trace_id.hex(),
        "span_id": r.span_id.hex(),
        "flags": r.flags,
        "event_name": r.event_name,
        "resource": resource,
        "scope": scope,
    }


def _metric(m: Any, resource: int, scope: int, query: Query) -> dict[str, Any]:
    kind = m.WhichOneof("data")
    data = getattr(m, kind) if kind else None
    points = [
        _point(kind or "", p)
        for p in (data.data_points if data is not None else ())
        if _attrs_match(p.attributes, query.attrs)
    ]
    return {
        "name": m.name,
        "description": m.description,
        "unit": m.unit,
        "type": kind,
        "aggregation_temporality": getattr(data, "aggregation_temporality", 0),
        "is_monotonic": getattr(data, "is_monotonic", False),
        "data_points": points,
        "metadata": _attrs(m.metadata),
        "resource": resource,
        "scope": scope,
    }


def _point(kind: str, p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": _attrs(p.attributes),
        "start_time_unix_nano": p.start_time_unix_nano,
        "time_unix_nano": p.time_unix_nano,
    }
    if kind in ("gauge", "sum"):
        value = p.WhichOneof("value")
        out["value"] = getattr(p, value) if value else None
    elif kind == "histogram":
        out.update(
            count=p.count,
            sum=p.sum if p.HasField("sum") else None,
            bucket_counts=list(p.bucket_counts),
            explicit_bounds=list(p.explicit_bounds),
            min=p.min if p.HasField("min") else None,
            max=p.max if p.HasField("max") else None,
        )
    elif kind == "exponential_histogram":
        out.update(
            count=p.count,
            sum=p.sum if p.HasField("sum") else None,
            scale=p.scale,
            zero_count=p.zero_count,
            positive={"offset": p.positive.offset, "bucket_counts": list(p.positive.bucket_counts)},
            negative={"offset": p.negative.offset, "bucket_counts": list(p.negative.bucket_counts)},
            min=p.min if p.HasField("min") else None,
            max=p.max if p.HasField("max") else None,
        )
    elif kind == "summary":
        out.update(
            count=p.count,
            sum=p.sum,
            quantile_values=[{"quantile": q.quantile, "value": q.value} for q in p.quantile_values],
        )
    return out


_MATERIALISE = {"traces": _span, "metrics": _metric, "logs": _log}


def summarise(signal: str, batches: Iterable[Batch], limit: int = 20) -> list[str]:
    """Short lines naming what arrived (``'GET /x' x3 (service svc)``), for wait errors."""
    result = Result(signal)
    result.add(Query(signal, {}), batches)
    counts: dict[str, int] = {}
    for item in result.items:
        service = result.resources[item["resource"]]["attributes"].get("service.name")
        name = item.get("name") or item.get("event_name") or str(item.get("body"))[:60]
        label = f"{name!r}" + (f" (service {service})" if service else "")
        counts[label] = counts.get(label, 0) + 1
    lines = [f"{label} x{n}" if n > 1 else label for label, n in counts.items()]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more kinds"]
    return lines
