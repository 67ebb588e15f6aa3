"""JSON out of stored protobuf: OTLP/JSON and the control API's documents, text built directly.

The collector keeps what arrived as serialised requests, so every JSON answer starts from
protobuf messages. Building a dictionary per item and handing the lot to ``json.dumps`` costs
about ten Python objects an attribute; here each message becomes its JSON text in one pass:
strings go through the C string encoder of :mod:`json`, numbers through ``%d``, and the keys
and templates are fixed strings. Two forms are written:

- **OTLP/JSON** (:class:`OTLPJSON`), as the specification and the Collector's file exporter
  write it: lowerCamelCase keys, trace and span ids as hex, other bytes as base64, enums as
  integers, 64-bit integers as decimal strings, NaN and infinities as ``"NaN"``,
  ``"Infinity"``, ``"-Infinity"``, fields at their default value left out. It is driven by
  the message descriptors, so every field of every signal (and any field a newer
  ``opentelemetry-proto`` adds) is written, with a shortcut for string attributes, which are
  most of a payload.
- **The control API's documents** (:func:`span_document`, :func:`log_document`,
  :func:`metric_document`): the same keys and values as the items' ``to_json``
  (:meth:`~mocksup.otlp.items.Span.to_json` and the others), without building the items.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Iterator
from itertools import islice, repeat
from json.encoder import encode_basestring as _text
from operator import attrgetter
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldDescriptorProto

from mocksup.otlp._proto import ID_SIZES
from mocksup.otlp._signals import Signal
from mocksup.otlp._values import KINDS, STATUS_CODES, jsonable, to_python
from mocksup.otlp.metrics import Metric

__all__ = (
    "DUMPS",
    "OTLPJSON",
    "item_columns",
    "log_document",
    "log_documents",
    "metric_document",
    "metric_documents",
    "number_json",
    "span_document",
    "span_documents",
    "value_document",
)

_Encoder = Callable[[Any], str]

_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_SINT64,
    }
)
_INT32 = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_ENUM,  # OTLP/JSON: enums are integers, never names
    }
)
_FLOATS = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})
_NON_FINITE = {math.inf: '"Infinity"', -math.inf: '"-Infinity"'}


def number_json(value: float) -> str:
    """A float as OTLP/JSON writes it (the shortest text that reads back the same)."""
    if math.isfinite(value):
        return float.__repr__(value)
    return '"NaN"' if math.isnan(value) else _NON_FINITE[value]


def _int64(value: int) -> str:
    return f'"{value}"'


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _base64(value: bytes) -> str:
    return f'"{base64.b64encode(value).decode("ascii")}"'


def _hex(value: bytes) -> str:
    return f'"{value.hex()}"'


class OTLPJSON:
    """OTLP/JSON text of any OTLP message (see the module docstring); one per process."""

    def __init__(self) -> None:
        self._fields: dict[FieldDescriptor, Callable[[Any], str]] = {}

    def message(self, message: Any) -> str:
        """The message as an OTLP/JSON object."""
        fields = self._fields
        parts = []
        for field, value in message.ListFields():
            write = fields.get(field)
            if write is None:
                write = fields[field] = self._field(field)
            parts.append(write(value))
        return "{" + ",".join(parts) + "}"

    def _field(self, field: FieldDescriptor) -> Callable[[Any], str]:
        key = f"{_text(field.json_name)}:"
        message = field.message_type
        if message is not None and message.name == "KeyValue" and field.is_repeated:
            return lambda value: key + "[" + self.attributes(value) + "]"
        if message is not None and message.name == "AnyValue" and not field.is_repeated:
            return lambda value: key + self.any_value(value)
        encode = self._scalar(field)
        if field.is_repeated:
            return lambda values: key + "[" + ",".join(map(encode, values)) + "]"
        return lambda value: key + encode(value)

    def _scalar(self, field: FieldDescriptor) -> _Encoder:
        kind = field.type
        if field.message_type is not None:
            return self.message
        if kind == FieldDescriptor.TYPE_STRING:
            return _text
        if kind == FieldDescriptor.TYPE_BYTES:
            return _hex if field.name in ID_SIZES else _base64
        if kind in _INT64:
            return _int64
        if kind in _INT32:
            return str
        if kind in _FLOATS:
            return number_json
        return _bool

    def attributes(self, kvs: Any) -> str:
        """A ``KeyValue`` list's items, without the brackets."""
        parts = []
        for kv in kvs:
            value = kv.value
            text = value.string_value
            if text or value.WhichOneof("value") == "string_value":
                # Most values are strings: one template, no walk of the value.
                parts.append(f'{{"key":{_text(kv.key)},"value":{{"stringValue":{_text(text)}}}}}')
            elif kv.HasField("value"):
                parts.append(f'{{"key":{_text(kv.key)},"value":{self.any_value(value)}}}')
            else:
                parts.append(f'{{"key":{_text(kv.key)}}}')
        return ",".join(parts)

    def any_value(self, value: Any) -> str:
        """An ``AnyValue`` (an empty one is ``{}``)."""
        return self.message(value)


#: JSON text of a value made of dicts, lists, strings and finite numbers, compact.
DUMPS = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def value_document(value: Any) -> str:
    """An ``AnyValue`` as the control API's JSON (see :func:`~mocksup.otlp._values.jsonable`)."""
    return DUMPS(jsonable(to_python(value)))


_KIND_TEXT = tuple(f'"{name}"' for name in KINDS)
_STATUS_TEXT = tuple(f'"{name}"' for name in STATUS_CODES)
_KEYS: dict[str, str] = {}
#: Attribute keys are few and repeat: their encoded form is kept, up to this many, each up
#: to this long (hostile keys must not make the caches below hold the bodies they came in).
_MAX_KEYS = 4096
_MAX_KEPT_KEY = 256


def _enum_text(number: int, names: tuple[str, ...]) -> str:
    return names[number] if 0 <= number < len(names) else str(number)


def _key(key: str) -> str:
    text = _KEYS.get(key)
    if text is None:
        text = _text(key) + ":"
        if len(key) <= _MAX_KEPT_KEY:
            if len(_KEYS) >= _MAX_KEYS:
                _KEYS.clear()  # hostile unique keys must not grow it without bound
            _KEYS[key] = text
    return text


def attributes_document(kvs: Any) -> str:
    """A ``KeyValue`` list as the control API's attribute object, without the braces."""
    parts = []
    for kv in kvs:
        value = kv.value
        text = value.string_value
        if text or value.WhichOneof("value") == "string_value":
            parts.append(_key(kv.key) + _text(text))
        else:
            parts.append(_key(kv.key) + value_document(value))
    return ",".join(parts)


_SPAN = (
    '{"trace_id":"%s","span_id":"%s","parent_span_id":"%s","trace_state":%s,"flags":%d,'
    '"name":%s,"kind":%s,"start_time_unix_nano":%d,"end_time_unix_nano":%d,'
    '"attributes":{%s},"events":[%s],"links":[%s],"status":{"code":%s,"message":%s},'
    '"dropped_attributes_count":%d,"resource":%d,"scope":%d}'
)


def span_document(span: Any, resource: int, scope: int) -> str:
    """A protobuf ``Span`` as the control API's span document (``Span.to_json`` plus the
    indexes of its resource and scope)."""
    status = span.status
    return _SPAN % (
        span.trace_id.hex(),
        span.span_id.hex(),
        span.parent_span_id.hex(),
        _text(span.trace_state),
        span.flags,
        _text(span.name),
        _enum_text(span.kind, _KIND_TEXT),
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        attributes_document(span.attributes),
        _events_document(span.events),
        _links_document(span.links),
        _enum_text(status.code, _STATUS_TEXT),
        _text(status.message),
        span.dropped_attributes_count,
        resource,
        scope,
    )


_GET = {
    name: attrgetter(name)
    for name in (
        "trace_id", "span_id", "parent_span_id", "trace_state", "flags", "name", "kind",
        "start_time_unix_nano", "end_time_unix_nano", "attributes", "events", "links",
        "status.code", "status.message", "dropped_attributes_count",
    )
}  # fmt: skip


def span_documents(group: Any, columns: Any, resource: int, scope: int) -> list[str]:
    """The span documents of one ``ScopeSpans``; ``columns`` is its entry in the
    :func:`item_columns` message (``None``: span by span).

    Every field is read for all spans at once (``map`` over ``attrgetter``), so no Python
    code runs per span or per attribute; the attributes come from the columns (see
    :func:`_attribute_columns`).
    """
    spans = list(group.spans)
    get = _GET
    counts = list(map(len, map(get["attributes"], spans)))
    kinds = list(map(get["kind"], spans))
    codes = list(map(get["status.code"], spans))
    found = None if columns is None else _attribute_columns(_SPAN, columns, counts)
    if (
        found is None
        or (spans and not (min(kinds) >= 0 and max(kinds) < len(KINDS)))
        or (spans and not (min(codes) >= 0 and max(codes) < len(STATUS_CODES)))
    ):
        return [span_document(span, resource, scope) for span in spans]
    template, attributes = found
    return list(
        map(
            template.__mod__,
            zip(
                map(bytes.hex, map(get["trace_id"], spans)),
                map(bytes.hex, map(get["span_id"], spans)),
                map(bytes.hex, map(get["parent_span_id"], spans)),
                map(_text, map(get["trace_state"], spans)),
                map(get["flags"], spans),
                map(_text, map(get["name"], spans)),
                map(_KIND_TEXT.__getitem__, kinds),
                map(get["start_time_unix_nano"], spans),
                map(get["end_time_unix_nano"], spans),
                *attributes,
                map(_events_document, map(get["events"], spans)),
                map(_links_document, map(get["links"], spans)),
                map(_STATUS_TEXT.__getitem__, codes),
                map(_text, map(get["status.message"], spans)),
                map(get["dropped_attributes_count"], spans),
                repeat(resource),
                repeat(scope),
            ),
        )
    )


_LOG = (
    '{"time_unix_nano":%d,"observed_time_unix_nano":%d,"severity_number":%d,'
    '"severity_text":%s,"body":%s,"attributes":{%s},"trace_id":"%s","span_id":"%s",'
    '"flags":%d,"event_name":%s,"resource":%d,"scope":%d}'
)


def log_document(record: Any, resource: int, scope: int) -> str:
    """A protobuf ``LogRecord`` as the control API's log document
    (``LogRecord.to_json`` plus the indexes of its resource and scope)."""
    return _LOG % (
        record.time_unix_nano,
        record.observed_time_unix_nano,
        record.severity_number,
        _text(record.severity_text),
        value_document(record.body),
        attributes_document(record.attributes),
        record.trace_id.hex(),
        record.span_id.hex(),
        record.flags,
        _text(record.event_name),
        resource,
        scope,
    )


_LOG_GET = {
    name: attrgetter(name)
    for name in (
        "time_unix_nano", "observed_time_unix_nano", "severity_number", "severity_text",
        "body", "attributes", "trace_id", "span_id", "flags", "event_name",
    )
}  # fmt: skip


def log_documents(group: Any, columns: Any, resource: int, scope: int) -> list[str]:
    """The log documents of one ``ScopeLogs``, as :func:`span_documents` writes spans; the
    bodies come from the columns too when every record's body is a string."""
    records = list(group.log_records)
    get = _LOG_GET
    counts = list(map(len, map(get["attributes"], records)))
    found = None if columns is None else _attribute_columns(_LOG, columns, counts)
    if found is None:
        return [log_document(record, resource, scope) for record in records]
    template, attributes = found
    strings = columns.items.body.string_value
    # As many strings as records (no field is sent twice: see item_columns): all are strings.
    if len(strings) == len(records):
        bodies = map(_text, strings)
    else:
        bodies = map(value_document, map(get["body"], records))
    return list(
        map(
            template.__mod__,
            zip(
                map(get["time_unix_nano"], records),
                map(get["observed_time_unix_nano"], records),
                map(get["severity_number"], records),
                map(_text, map(get["severity_text"], records)),
                bodies,
                *attributes,
                map(bytes.hex, map(get["trace_id"], records)),
                map(bytes.hex, map(get["span_id"], records)),
                map(get["flags"], records),
                map(_text, map(get["event_name"], records)),
                repeat(resource),
                repeat(scope),
            ),
        )
    )


_METRIC = (
    '{"name":%s,"description":%s,"unit":%s,"type":%s,"aggregation_temporality":%d,'
    '"is_monotonic":%s,"data_points":[%s],"metadata":{%s},"resource":%d,"scope":%d}'
)
_NUMBER_POINT = (
    '{"attributes":{%s},"start_time_unix_nano":%d,"time_unix_nano":%d,"value":%s,'
    '"count":null,"sum":null}'
)
#: A metric view's resource and scope, which its document does not read.
_NO_CONTEXT: tuple[Any, Any] = (None, None)


def metric_documents(group: Any, columns: Any, resource: int, scope: int) -> list[str]:
    """The metric documents of one ``ScopeMetrics`` (``columns`` is not used: metrics are
    few, their points many)."""
    return [metric_document(metric, resource, scope) for metric in group.metrics]


def metric_document(metric: Any, resource: int, scope: int) -> str:
    """A protobuf ``Metric`` as the control API's metric document (``Metric.to_json`` plus
    the indexes of its resource and scope); the points of gauges and sums are written
    directly, the others through :class:`~mocksup.otlp.metrics.DataPoint`."""
    view = Metric(metric, *_NO_CONTEXT)
    kind = view.type
    if kind in ("gauge", "sum"):
        points = ",".join(map(_number_point, getattr(metric, kind).data_points))
    else:
        points = ",".join(DUMPS(point.to_json()) for point in view.data_points)
    return _METRIC % (
        _text(view.name),
        _text(view.description),
        _text(view.unit),
        "null" if kind is None else f'"{kind}"',
        view.aggregation_temporality,
        "true" if view.is_monotonic else "false",
        points,
        attributes_document(metric.metadata),
        resource,
        scope,
    )


def _number_point(point: Any) -> str:
    which = point.WhichOneof("value")
    if which == "as_double":
        value = number_json(point.as_double)
    else:
        value = "null" if which is None else str(point.as_int)
    return _NUMBER_POINT % (
        attributes_document(point.attributes),
        point.start_time_unix_nano,
        point.time_unix_nano,
        value,
    )


def _attribute_columns(
    base: str, columns: Any, counts: list[int]
) -> tuple[str, list[Iterable[str]]] | None:
    """The template and the attribute texts of a scope's items, ``counts`` attributes each,
    from its columns; ``None`` when the columns do not pair up.

    When every item has the same keys in the same order (items of one kind, as a load test
    or one instrumented route makes them), the keys are written into the template and each
    value fills a slot of it: one ``%`` an item, no string made per attribute. Otherwise one
    attribute object (without braces) per item.
    """
    keys, texts = columns.items.attributes.key, columns.items.attributes.value.string_value
    if not sum(counts) == len(keys) == len(texts):
        return None
    keys = list(keys)  # each read of a upb string field makes a new str: read them once
    width = counts[0] if counts else 0
    first = keys[:width]
    if counts.count(width) == len(counts) and keys == first * len(counts):
        values = list(map(_text, texts))
        return _uniform_template(base, tuple(first)), [values[i::width] for i in range(width)]
    return base, [_attribute_objects(keys, texts, counts)]


_TEMPLATES: dict[tuple[str, tuple[str, ...]], str] = {}
#: Templates with their keys written in, kept for the key sequences seen: up to this many,
#: of keys up to this many characters in all.
_MAX_TEMPLATES = 256
_MAX_KEPT_KEYS = 4096


def _uniform_template(base: str, keys: tuple[str, ...]) -> str:
    """``base`` with these attribute keys written in, a ``%s`` for each value."""
    template = _TEMPLATES.get((base, keys))
    if template is None:
        head, tail = base.split('"attributes":{%s}')
        pairs = ",".join(_text(key).replace("%", "%%") + ":%s" for key in keys)
        template = f'{head}"attributes":{{{pairs}}}{tail}'
        if sum(map(len, keys)) <= _MAX_KEPT_KEYS:
            if len(_TEMPLATES) >= _MAX_TEMPLATES:
                _TEMPLATES.clear()  # hostile key sequences must not grow it without bound
            _TEMPLATES[base, keys] = template
    return template


def _attribute_objects(keys: list[str], texts: Any, counts: list[int]) -> Iterator[str]:
    """Each item's attribute object (without braces) from the columns of its scope."""
    prefixes = {key: _text(key) + ":" for key in set(keys)}
    pairs = iter(list(map(str.__add__, map(prefixes.__getitem__, keys), map(_text, texts))))
    return map(",".join, map(islice, repeat(pairs), counts))


def item_columns(signal: Signal, raw: bytes, message: Any) -> Any:
    """The attributes (and log bodies) of a serialised ``TracesData`` or ``LogsData`` as
    columns, or ``None``.

    Reading attributes one ``KeyValue`` at a time costs about a microsecond each, most of an
    item's document. Parsed with a schema in which a scope's items are one message and an
    item's ``attributes`` is one message (so the parser merges every entry into them), whose
    ``key`` and value's ``string_value`` are repeated, the keys and string values of all
    the items of a scope come out as two lists, in C (log bodies likewise). They pair up
    exactly when both have as many entries as the items have attributes, provided no field
    was sent twice: that holds when ``raw`` is what the parsed ``message`` serialises to (as
    every SDK and the Collector write it); otherwise ``None``, and the attributes are read
    one by one.
    """
    if message.SerializeToString() != raw:
        return None
    return _COLUMNS[signal].FromString(raw)


def _columns_class(signal: Signal) -> Any:
    name = f"mocksup_columns_{signal}"
    proto = descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", package=name, syntax="proto3")
    repeated, optional = FieldDescriptorProto.LABEL_REPEATED, FieldDescriptorProto.LABEL_OPTIONAL
    string, message = FieldDescriptorProto.TYPE_STRING, FieldDescriptorProto.TYPE_MESSAGE
    attributes, body = {"traces": (9, None), "logs": (6, 5)}[signal]
    # Only the path to the attributes (and log bodies): every other field stays unknown.
    for entry_name, fields in {
        "Data": [("resources", 1, repeated, "Resource")],
        "Resource": [("scopes", 2, repeated, "Scope")],
        "Scope": [("items", 2, optional, "Item")],
        "Item": [("attributes", attributes, optional, "Attributes")]
        + ([("body", body, optional, "Value")] if body else []),
        "Attributes": [("key", 1, repeated, ""), ("value", 2, optional, "Value")],
        "Value": [("string_value", 1, repeated, "")],
    }.items():
        entry = proto.message_type.add(name=entry_name)
        for field, number, label, kind in fields:
            added = entry.field.add(
                name=field, number=number, label=label, type=message if kind else string
            )
            if kind:
                added.type_name = f".{name}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{name}.Data"))


_COLUMNS = {signal: _columns_class(signal) for signal in ("traces", "logs")}


def _events_document(events: Any) -> str:
    return ",".join(map(_event_document, events)) if events else ""


def _links_document(links: Any) -> str:
    return ",".join(map(_link_document, links)) if links else ""


def _event_document(event: Any) -> str:
    return (
        f'{{"name":{_text(event.name)},"time_unix_nano":{event.time_unix_nano},'
        f'"attributes":{{{attributes_document(event.attributes)}}}}}'
    )


def _link_document(link: Any) -> str:
    return (
        f'{{"trace_id":"{link.trace_id.hex()}","span_id":"{link.span_id.hex()}",'
        f'"trace_state":{_text(link.trace_state)},'
        f'"attributes":{{{attributes_document(link.attributes)}}}}}'
    )
