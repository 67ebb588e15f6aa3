"""OTLP/JSON to protobuf, fast and by the OTLP rules, not the generic proto3 JSON ones.

``google.protobuf.json_format`` is wrong for OTLP (it reads trace and span ids as base64 and
rejects unknown fields) and about 200 times slower than the binary parser. This module walks
the ``json.loads`` output once, against conversion tables built from the message descriptors,
and turns it into the keyword tree the upb constructor accepts in one C call. Both modes read:

- keys in lowerCamelCase (``startTimeUnixNano``) or in the original snake_case;
- ``traceId``, ``spanId`` and ``parentSpanId`` (spans, links, log records, exemplars) as
  case-insensitive hex; a wrong length raises :class:`OTLPJSONError` (the 400 answer);
- enums as integers or names; unknown keys ignored; booleans only as ``true``/``false``.

Where the two differ, ``"collector"`` reads as pdata's JSON iterator does and ``"spec"`` as
the proto3 JSON mapping says (see :class:`~mocksup.otlp._modes.Mode`):

=====================  =====================================  ==============================
value                  collector (pdata)                      spec (proto3 JSON)
=====================  =====================================  ==============================
``null``               ``""`` for strings, empty for messages  the field's default, always
                       and lists, a 400 for anything else
64-bit integers        decimal digits (number or string)      also ``1e3``, ``1.0``
``bytesValue``         standard base64 with padding           standard or URL-safe, padding
                                                              optional
doubles as strings     Go's ``ParseFloat`` (``"NaN"``,        ``"NaN"``, ``"Infinity"``,
                       ``"inf"``, ``"1e3"``...)               ``"-Infinity"``, numbers
=====================  =====================================  ==============================
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from mocksup.otlp._limits import bounded
from mocksup.otlp._proto import ID_SIZES, REQUEST_TYPES
from mocksup.otlp._signals import Signal

__all__ = ("OTLPJSONError", "parse_request")

_Converter = Callable[[Any], Any]
#: Per key: (field name, converter or None, what ``null`` becomes: _SKIP, _ERROR or a value).
_Table = dict[str, tuple[str, "_Converter | None", Any]]

_SKIP = object()
_ERROR = object()

_SIGNED = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_UNSIGNED = frozenset(
    {
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_FLOATS = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})
_SIGNED_TEXT = re.compile(r"[+-]?[0-9]+")
_PROTO3_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_UNSIGNED_TEXT = re.compile(r"[0-9]+")
# Go's strconv.ParseFloat: decimal or hex floats, "inf"/"infinity" with a sign, "nan".
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?)|nan",
    re.IGNORECASE,
)
_PROTO3_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class OTLPJSONError(ValueError):
    """A JSON payload that is not a valid OTLP request; ``field`` names the culprit if known."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def _show(value: Any) -> str:
    # Error messages quote the value: never a 10 MB one.
    return bounded(repr(value), 60)


class _Reader:
    """The converters of one mode; ``strict`` is pdata's reading, else proto3 JSON's."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.tables: dict[str, _Table] = {}
        self.local = threading.local()
        self.generic_any = self.message(AnyValue.DESCRIPTOR)
        self.roots = {s: self.message(c.DESCRIPTOR) for s, c in REQUEST_TYPES.items()}
        self.any_value = self._make_any_value()
        self.attributes = self._make_attributes()

    # -- scalars ------------------------------------------------------------------------

    def to_int(self, value: Any, signed: bool = True) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            pattern = _SIGNED_TEXT if signed else _UNSIGNED_TEXT
            if pattern.fullmatch(value):
                return int(value)
            if not self.strict:
                return self._proto3_int(value)
        elif isinstance(value, float) and not self.strict and value.is_integer():
            return int(value)
        raise ValueError(f"{_show(value)} is not an integer")

    def _proto3_int(self, text: str) -> int:
        # proto3 JSON takes "1e3" and "1.0" for integers; Decimal keeps every digit.
        if not _PROTO3_NUMBER.fullmatch(text):
            raise ValueError(f"{_show(text)} is not an integer")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{_show(text)} is not an integer") from None
        if not number.is_finite() or number != number.to_integral_value():
            raise ValueError(f"{_show(text)} is not an integer")
        return int(number)

    def to_float(self, value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        if isinstance(value, (int, float)):
            number = float(value)
            if not math.isfinite(number):
                # A bare number this large (1e400) or a NaN token is not JSON.
                raise ValueError(f"{_show(value)} is not a finite number")
            return number
        if isinstance(value, str):
            if not self.strict and value in _PROTO3_SPECIAL:
                return _PROTO3_SPECIAL[value]
            if (self.strict and _GO_FLOAT.fullmatch(value)) or (
                not self.strict and _GO_FLOAT.fullmatch(value) and value[-1:].isdigit()
            ):
                return self._parse_float(value)
        raise ValueError(f"{_show(value)} is not a number")

    @staticmethod
    def _parse_float(text: str) -> float:
        number = float(text)
        if math.isinf(number) and not text.lstrip("+-")[:1].isalpha():
            raise ValueError(f"{_show(text)} is out of range")  # Go: ErrRange
        return number

    @staticmethod
    def to_bool(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{_show(value)} is not a boolean")
        return value

    def to_base64(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise ValueError(f"{_show(value)} is not a base64 string")
        if self.strict:
            # Go's StdEncoding: the standard alphabet, padded; it skips CR and LF.
            return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
        text = value.replace("-", "+").replace("_", "/")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)

    # -- structure ----------------------------------------------------------------------

    def message(self, descriptor: Any) -> _Converter:
        table = self.table(descriptor)

        def convert(obj: Any) -> dict[str, Any]:
            if not isinstance(obj, dict):
                raise ValueError(f"{_show(obj)} is not an object")
            out = {}
            for key, value in obj.items():
                entry = table.get(key)
                if entry is None:
                    continue
                name, conv, null = entry
                if value is None:
                    if null is _SKIP:
                        continue
                    if null is _ERROR:
                        raise OTLPJSONError(f"{name}: null is not a valid value", name)
                    out[name] = null
                else:
                    out[name] = value if conv is None else conv(value)
            return out

        return convert

    def table(self, descriptor: Descriptor) -> _Table:
        # Built once per message type; recursion (AnyValue in ArrayValue in AnyValue) is
        # resolved lazily through the shared cache.
        table = self.tables.get(descriptor.full_name)
        if table is not None:
            return table
        table = self.tables[descriptor.full_name] = {}
        for field in descriptor.fields:
            entry = (field.name, self.converter(field), self.null_of(field))
            table[field.name] = table[field.json_name] = entry
        return table

    def null_of(self, field: FieldDescriptor) -> Any:
        if not self.strict:
            return _SKIP
        if field.is_repeated:
            return _SKIP  # pdata: null reads as an empty list
        if field.type == FieldDescriptor.TYPE_STRING:
            return ""
        if field.message_type is not None:
            return {}  # an empty message, present
        return _ERROR

    def converter(self, field: FieldDescriptor) -> _Converter | None:
        message_type = field.message_type
        if message_type is not None and message_type.name == "KeyValue" and field.is_repeated:
            return self.attributes_lazy
        if message_type is not None and message_type.name == "AnyValue":
            return self.repeated(self.any_value_lazy) if field.is_repeated else self.any_value_lazy
        conv = self.scalar(field)
        if field.is_repeated:
            return self.repeated(conv if conv is not None else _to_str)
        return conv

    def scalar(self, field: FieldDescriptor) -> _Converter | None:
        if field.message_type is not None:
            return self.lazy_message(field.message_type)
        if field.type == FieldDescriptor.TYPE_BYTES:
            size = ID_SIZES.get(field.name)
            return _hex_id(field.name, size) if size else self.to_base64
        if field.type == FieldDescriptor.TYPE_ENUM:
            return self.enum(field)
        if field.type in _SIGNED:
            return self.to_int
        if field.type in _UNSIGNED:
            return lambda value: self.to_int(value, signed=False)
        if field.type in _FLOATS:
            return self.to_float
        if field.type == FieldDescriptor.TYPE_BOOL:
            return self.to_bool
        return None  # strings pass as they are: the upb constructor refuses non-strings

    def enum(self, field: FieldDescriptor) -> _Converter:
        assert field.enum_type is not None
        by_name = {v.name: v.number for v in field.enum_type.values}

        def convert(value: Any) -> int:
            if isinstance(value, str):
                number = by_name.get(value)
                if number is None:
                    raise OTLPJSONError(
                        f"{field.name}: unknown enum value {_show(value)}", field.name
                    )
                return number
            return self.to_int(value)

        return convert

    def lazy_message(self, descriptor: Descriptor) -> _Converter:
        cell: list[_Converter] = []

        def convert(obj: Any) -> Any:
            if not cell:
                cell.append(self.message(descriptor))
            return cell[0](obj)

        return convert

    @staticmethod
    def repeated(convert: _Converter) -> _Converter:
        def convert_all(values: Any) -> list[Any]:
            if not isinstance(values, list):
                raise ValueError(f"{_show(values)} is not a list")
            return [convert(v) for v in values]

        return convert_all

    # -- attribute values: most of an OTLP payload ---------------------------------------

    def any_value_lazy(self, value: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.any_value(value)
        return result

    def attributes_lazy(self, values: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.attributes(values)
        return result

    def _make_any_value(self) -> _Converter:
        to_int, to_float, to_bool = self.to_int, self.to_float, self.to_bool
        string_null = "" if self.strict else None
        generic, local = self.generic_any, self.local

        def any_value(value: Any) -> dict[str, Any]:
            # The common one-key shapes skip the generic walk.
            if isinstance(value, dict) and len(value) == 1:
                key, item = next(iter(value.items()))
                if key in ("stringValue", "string_value"):
                    if item is None:
                        return {} if string_null is None else {"string_value": ""}
                    return {"string_value": item}
                if key in ("intValue", "int_value") and item is not None:
                    return {"int_value": to_int(item)}
                if key in ("boolValue", "bool_value") and item is not None:
                    return {"bool_value": to_bool(item)}
                if key in ("doubleValue", "double_value") and item is not None:
                    return {"double_value": to_float(item)}
            # Arrays and maps can nest: parse_request checks that such a request reads back.
            local.nested = True
            converted: dict[str, Any] = generic(value)
            return converted

        return any_value

    def _make_attributes(self) -> _Converter:
        any_value = self.any_value

        def key_value(kv: Any) -> dict[str, Any]:
            if not isinstance(kv, dict):
                raise ValueError(f"{_show(kv)} is not an object")
            value = kv.get("value")
            key = kv.get("key", "")
            if value is None:
                return {"key": key}
            return {"key": key, "value": any_value(value)}

        def attributes(values: Any) -> list[dict[str, Any]]:
            if not isinstance(values, list):
                raise ValueError(f"{_show(values)} is not a list")
            # Most attribute values are strings: handled inline, one lookup each.
            return [
                {"key": kv.get("key", ""), "value": {"string_value": text}}
                if type(kv) is dict
                and len(value := kv.get("value") or _EMPTY) == 1
                and type(text := value.get("stringValue")) is str
                else key_value(kv)
                for kv in values
            ]

        return attributes


_EMPTY: dict[str, Any] = {}


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{_show(value)} is not a string")
    return value


def _hex_id(name: str, size: int) -> _Converter:
    def convert(value: Any) -> bytes:
        text = _to_str(value)
        if not text:
            return b""
        if len(text) != 2 * size:
            raise OTLPJSONError(
                f"{name}: length mismatch: {len(text)} hex digits, expected {2 * size}", name
            )
        try:
            raw = bytes.fromhex(text)
        except ValueError as error:
            raise OTLPJSONError(f"{name}: {error}", name) from None
        if len(raw) != size:  # fromhex skips spaces: "00 11..." is not hex
            raise OTLPJSONError(f"{name}: {_show(text)} is not hex", name)
        return raw

    return convert


_READERS = {True: _Reader(strict=True), False: _Reader(strict=False)}


def parse_request(signal: Signal, document: Any, *, strict: bool = True) -> Message:
    """Build the ``Export*ServiceRequest`` of ``signal`` from a decoded OTLP/JSON document.

    :param strict: read as the Collector's pdata does (else as the proto3 JSON mapping);
        a top-level ``null`` is then an empty request.
    :raises OTLPJSONError: the document is not a valid OTLP request of that signal, or nests
        values deeper than the protobuf parser would read back (queries parse what is
        stored, so that must be refused now).
    """
    reader = _READERS[strict]
    if document is None and strict:
        document = {}
    if not isinstance(document, dict):
        raise OTLPJSONError("the request body is not a JSON object")
    root = REQUEST_TYPES[signal]
    reader.local.nested = False
    try:
        message = root(**reader.roots[signal](document))
    except OTLPJSONError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, binascii.Error) as error:
        raise OTLPJSONError(f"invalid OTLP/JSON: {bounded(str(error), 200)}") from None
    except RecursionError:
        raise OTLPJSONError("invalid OTLP/JSON: values nested too deeply") from None
    if reader.local.nested:
        try:
            root.FromString(message.SerializeToString())
        except DecodeError:
            raise OTLPJSONError("invalid OTLP/JSON: values nested too deeply") from None
    return message
