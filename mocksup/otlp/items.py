"""The items a test gets back from the collector: spans and log records, with their context.

:class:`Span`, :class:`LogRecord` and :class:`~mocksup.otlp.metrics.Metric` are read-only
views over the received protobuf message: ids come out as lowercase hex strings (``""`` when
absent), attribute values as plain Python values (``str``, ``int``, ``float``, ``bool``,
``bytes``, ``list``, ``dict``, ``None`` for an empty value), and every item holds the
:class:`Resource` and :class:`Scope` it arrived with (shared by the items of one request).

Why views and not eagerly built dataclasses: a query over 100k spans must take well under a
second, and building 100k attribute dictionaries (or encoding and decoding them as JSON) alone
takes several. A view decodes a field when it is read (attributes once, then cached), so
``spans()`` costs a protobuf parse plus one small object per span. The same classes produce
the control API's JSON documents (:meth:`Span.to_json`), so there is one conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mocksup.otlp._values import (
    KINDS,
    STATUS_CODES,
    attributes_of,
    enum_name,
    jsonable,
    jsonable_attrs,
    to_python,
)

__all__ = (
    "LogRecord",
    "Resource",
    "Scope",
    "Span",
    "SpanEvent",
    "SpanLink",
)


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
        return {"attributes": jsonable_attrs(self.attributes), "schema_url": self.schema_url}


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
            "attributes": jsonable_attrs(self.attributes),
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
    if not _MESSAGE_TYPES:
        _register()
    message = _MESSAGE_TYPES[cls.__name__]()
    message.ParseFromString(data)
    return cls(message, resource, scope)


class Span(_View):
    """One received span.

    ``kind`` is ``"INTERNAL"``, ``"SERVER"``, ``"CLIENT"``, ``"PRODUCER"``, ``"CONSUMER"`` or
    ``"UNSPECIFIED"``; ``status_code`` is ``"UNSET"``, ``"OK"`` or ``"ERROR"``. A value the
    enum does not know (``-1``, ``7``) stays the number sent, as the protobuf keeps it.
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
    def kind(self) -> str | int:
        """The span kind's name (its number if the enum does not know it)."""
        return enum_name(int(self._pb.kind), KINDS)

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
    def status_code(self) -> str | int:
        """``"UNSET"``, ``"OK"`` or ``"ERROR"`` (the number if the enum does not know it)."""
        return enum_name(int(self._pb.status.code), STATUS_CODES)

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
            "attributes": jsonable_attrs(self.attributes),
            "events": [
                {
                    "name": e.name,
                    "time_unix_nano": e.time_unix_nano,
                    "attributes": jsonable_attrs(e.attributes),
                }
                for e in self.events
            ],
            "links": [
                {
                    "trace_id": k.trace_id,
                    "span_id": k.span_id,
                    "trace_state": k.trace_state,
                    "attributes": jsonable_attrs(k.attributes),
                }
                for k in self.links
            ],
            "status": {"code": self.status_code, "message": self.status_message},
            "dropped_attributes_count": self.dropped_attributes_count,
        }


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
            "attributes": jsonable_attrs(self.attributes),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "flags": self.flags,
            "event_name": self.event_name,
        }


_MESSAGE_TYPES: dict[str, Any] = {}


def _register() -> None:
    # On first use (an item unpickled), not at import: the collector's child imports this
    # module before it serves, and the protobuf classes are for the parent's side.
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric as PbMetric
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    _MESSAGE_TYPES.update(Span=PbSpan, Metric=PbMetric, LogRecord=PbLogRecord)
