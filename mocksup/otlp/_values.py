"""Decoding OTLP values: ``AnyValue`` to Python, Python to the control API's JSON.

Shared by the item views (parent and child) and the query code (child).
"""

from __future__ import annotations

import base64
import gc
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = (
    "KINDS",
    "STATUS_CODES",
    "attributes_of",
    "enum_name",
    "json_float",
    "jsonable",
    "jsonable_attrs",
    "no_gc",
    "to_python",
)

#: Span kinds and status codes by number, as items and the control API spell them.
KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")


def enum_name(number: int, names: tuple[str, ...]) -> str | int:
    """The name of a known enum value; an unknown one stays its number, as the proto keeps it."""
    return names[number] if 0 <= number < len(names) else number


def json_float(value: Any) -> Any:
    """A float as OTLP/JSON (proto3 JSON) spells it: NaN and infinities as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


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
    """A Python attribute value as JSON: bytes become ``{"$bytes": "<base64>"}``, NaN and
    infinities ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return json_float(value)


def jsonable_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as JSON (see :func:`jsonable`); plain ones are copied as they are."""
    for value in attrs.values():
        if isinstance(value, (bytes, list, dict, float)):
            return {k: jsonable(v) for k, v in attrs.items()}
    return dict(attrs)


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects (child only).

    Decoding a 512-span OTLP/JSON request or building 100k items creates objects by the
    hundred thousand, which triggers collections that walk the whole heap again and again:
    measured, they make ``json.loads`` and the conversion 40 % slower. These objects hold no
    cycles, so reference counting frees them all the same. Threads may overlap: the first
    to enter pauses the collector, the last to leave restores what it found (a collector
    the application switched off stays off). Only the collector's child uses it: the
    client in the test's own process never switches the test's collector off.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()
