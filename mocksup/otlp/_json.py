"""OTLP/JSON to protobuf, fast and by the OTLP rules, not the generic proto3 JSON ones.

``google.protobuf.json_format`` is wrong for OTLP (it reads trace and span ids as base64 and
rejects unknown fields) and about 200 times slower than the binary parser. This module walks
the ``json.loads`` output once, against conversion tables built from the message descriptors,
and turns it into the keyword tree the upb constructor accepts in one C call:

- keys in lowerCamelCase (``startTimeUnixNano``) or in the original snake_case;
- ``traceId``, ``spanId`` and ``parentSpanId`` (spans, links, log records, exemplars) as
  case-insensitive hex; a wrong length raises :class:`OTLPJSONError` (the 400 answer); other
  ``bytes`` (``bytesValue``) as base64;
- enums as integers, their names accepted;
- 64-bit integers as decimal strings or numbers; doubles also as ``"NaN"``, ``"Infinity"``;
- unknown keys ignored, ``null`` treated as absent.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["OTLPJSONError", "parse_request"]

_Converter = Callable[[Any], Any]
_Table = dict[str, tuple[str, "_Converter | None"]]

#: The ``bytes`` fields OTLP/JSON writes as hex, with the length each must decode to.
_ID_LENGTHS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}

_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})


class OTLPJSONError(ValueError):
    """A JSON payload that is not a valid OTLP request; ``field`` names the culprit if known."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def _to_int(value: Any) -> int:
    # bool is an int subclass, but true is not a number in JSON.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not a boolean")
    return value


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _to_base64(value: Any) -> bytes:
    return base64.b64decode(_to_str(value), validate=False)


def _hex_id(name: str, size: int) -> _Converter:
    def convert(value: Any) -> bytes:
        try:
            raw = bytes.fromhex(_to_str(value))
        except ValueError as error:
            raise OTLPJSONError(f"{name}: {error}", name) from None
        if raw and len(raw) != size:
            raise OTLPJSONError(
                f"{name}: length mismatch: {len(raw)} bytes, expected {size} "
                f"({2 * size} hex digits)",
                name,
            )
        return raw

    return convert


def _enum(field: FieldDescriptor) -> _Converter:
    assert field.enum_type is not None
    by_name = {v.name: v.number for v in field.enum_type.values}

    def convert(value: Any) -> int:
        if isinstance(value, str):
            number = by_name.get(value)
            if number is None:
                raise OTLPJSONError(f"{field.name}: unknown enum value {value!r}", field.name)
            return number
        return _to_int(value)

    return convert


def _repeated(convert: _Converter) -> _Converter:
    def convert_all(values: Any) -> list[Any]:
        if not isinstance(values, list):
            raise ValueError(f"{values!r} is not a list")
        return [convert(v) for v in values]

    return convert_all


_tables: dict[str, _Table] = {}
#: Per thread: whether the request being converted holds array or map values.
_local = threading.local()


def _message(descriptor: Descriptor) -> _Converter:
    table = _table(descriptor)

    def convert(obj: Any) -> dict[str, Any]:
        out = {}
        for key, value in obj.items():
            entry = table.get(key)
            if entry is None or value is None:
                continue
            name, conv = entry
            out[name] = value if conv is None else conv(value)
        return out

    return convert


def _table(descriptor: Descriptor) -> _Table:
    # Tables are built once per message type; recursion (AnyValue inside ArrayValue inside
    # AnyValue) is resolved lazily through the shared cache.
    table = _tables.get(descriptor.full_name)
    if table is not None:
        return table
    table = _tables[descriptor.full_name] = {}
    for field in descriptor.fields:
        conv = _field_converter(field)
        table[field.name] = table[field.json_name] = (field.name, conv)
    return table


def _field_converter(field: FieldDescriptor) -> _Converter | None:
    conv: _Converter | None
    message_type = field.message_type
    if message_type is not None and message_type.name == "KeyValue" and field.is_repeated:
        return _attributes
    if message_type is not None and message_type.name == "AnyValue":
        return _repeated(_any_value) if field.is_repeated else _any_value
    if message_type is not None:
        conv = _lazy_message(message_type)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        size = _ID_LENGTHS.get(field.name)
        conv = _hex_id(field.name, size) if size else _to_base64
    elif field.type == FieldDescriptor.TYPE_ENUM:
        conv = _enum(field)
    elif field.type in _INT_TYPES:
        conv = _to_int
    elif field.type in _FLOAT_TYPES:
        conv = _to_float
    elif field.type == FieldDescriptor.TYPE_BOOL:
        conv = _to_bool
    else:
        # Strings pass as they are: the upb constructor rejects a non-string itself.
        conv = None
    if field.is_repeated:
        return _repeated(conv) if conv is not None else _repeated(_to_str)
    return conv


def _lazy_message(descriptor: Descriptor) -> _Converter:
    cell: list[_Converter] = []

    def convert(obj: Any) -> Any:
        if not cell:
            cell.append(_message(descriptor))
        return cell[0](obj)

    return convert


_SCALAR_VALUES = {
    "stringValue": "string_value",
    "string_value": "string_value",
    "boolValue": "bool_value",
    "bool_value": "bool_value",
    "doubleValue": "double_value",
    "double_value": "double_value",
}
_INT_VALUES = frozenset({"intValue", "int_value"})


def _any_value(value: Any) -> dict[str, Any]:
    # Attribute values dominate OTLP payloads: the common one-key shapes skip the generic walk.
    if len(value) == 1:
        key, item = next(iter(value.items()))
        name = _SCALAR_VALUES.get(key)
        if name is not None:
            return {name: item} if name != "double_value" else {name: _to_float(item)}
        if key in _INT_VALUES:
            return {"int_value": _to_int(item)}
    # Arrays and maps can nest: parse_request checks that such a request reads back.
    _local.nested = True
    generic: dict[str, Any] = _generic_any(value)
    return generic


def _attributes(values: Any) -> list[dict[str, Any]]:
    if not isinstance(values, list):
        raise ValueError(f"{values!r} is not a list")
    # Most attribute values are strings: the comprehension handles them inline, one lookup
    # each, and sends anything else through the general converter.
    return [
        {"key": kv.get("key", ""), "value": {"string_value": text}}
        if len(value := kv.get("value") or _EMPTY) == 1
        and (text := value.get("stringValue")) is not None
        else _key_value(kv)
        for kv in values
    ]


_EMPTY: dict[str, Any] = {}


def _key_value(kv: Any) -> dict[str, Any]:
    value = kv.get("value")
    if value is None:
        return {"key": kv.get("key", "")}
    return {"key": kv.get("key", ""), "value": _any_value(value)}


_ROOTS: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
_generic_any: _Converter = _message(AnyValue.DESCRIPTOR)
_root_converters = {
    signal: _message(cls.DESCRIPTOR)  # type: ignore[arg-type]
    for signal, cls in _ROOTS.items()
}


def parse_request(signal: str, document: Any) -> Message:
    """Build the ``Export*ServiceRequest`` of ``signal`` from a decoded OTLP/JSON document.

    :raises OTLPJSONError: the document is not a valid OTLP request of that signal, or nests
        values deeper than the protobuf parser would read back (queries parse what is
        stored, so that must be refused now).
    """
    if not isinstance(document, dict):
        raise OTLPJSONError("the request body is not a JSON object")
    root = _ROOTS[signal]
    _local.nested = False
    try:
        message = root(**_root_converters[signal](document))
    except OTLPJSONError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, binascii.Error) as error:
        raise OTLPJSONError(f"invalid OTLP/JSON: {error}") from None
    except RecursionError:
        raise OTLPJSONError("invalid OTLP/JSON: values nested too deeply") from None
    if _local.nested:
        try:
            root.FromString(message.SerializeToString())
        except DecodeError:
            raise OTLPJSONError("invalid OTLP/JSON: values nested too deeply") from None
    return message
