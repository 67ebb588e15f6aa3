"""How a selection of stored items is written out: the control API's answers, streamed.

A selection is a sequence of serialised ``TracesData``/``MetricsData``/``LogsData`` messages
(whole stored requests, or the matching part of each: ``_query.select``). The writers here
turn it into

- the control API's document (:func:`document_chunks`): resources and scopes listed once
  each (by content) and referred to by index;
- one OTLP/JSON ``*Data`` document (:func:`otlp_document_chunks`);
- OTLP JSON lines, one ``*Data`` object per stored request (:func:`json_lines`): the file
  exporter's format, what ``/mocksup/export`` streams;
- the live feed's frames (:func:`feed_protobuf`, :func:`feed_json`).

Each writer is a generator that parses one message at a time and yields its text as bytes,
so an answer over 100k spans never holds more than one request's worth of objects, and the
first bytes leave before the last request is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from mocksup.otlp._encode import (
    DUMPS,
    OTLPJSON,
    item_columns,
    log_documents,
    metric_documents,
    span_documents,
)
from mocksup.otlp._query import ITEM_KEYS
from mocksup.otlp._signals import FIELDS, SIGNALS, Signal, resources_of, scopes_of
from mocksup.otlp._values import no_gc
from mocksup.otlp.items import Resource, Scope

__all__ = (
    "FEED_FIELDS",
    "document_chunks",
    "feed_json",
    "feed_protobuf",
    "json_lines",
    "otlp_document_chunks",
)

_PARSERS: dict[str, Any] = {
    "traces": TracesData.FromString,
    "metrics": MetricsData.FromString,
    "logs": LogsData.FromString,
}
#: The protobuf field number of each signal's frames in a feed answer (see ``feed_protobuf``).
FEED_FIELDS: dict[Signal, int] = {signal: number for number, signal in enumerate(SIGNALS, 1)}
_OTLP = OTLPJSON()


class _Index:
    """Resources and scopes of a document, each listed once (by content), with its index."""

    def __init__(self) -> None:
        self.resources: dict[tuple[bytes, str], int] = {}
        self.scopes: dict[tuple[bytes, str], int] = {}
        self.resource_docs: list[str] = []
        self.scope_docs: list[str] = []

    def resource(self, top: Any) -> int:
        key = (top.resource.SerializeToString(), top.schema_url)
        found = self.resources.get(key)
        if found is None:
            found = self.resources[key] = len(self.resource_docs)
            resource = Resource.from_protobuf(top.resource, top.schema_url)
            self.resource_docs.append(DUMPS(resource.to_json()))
        return found

    def scope(self, group: Any) -> int:
        key = (group.scope.SerializeToString(), group.schema_url)
        found = self.scopes.get(key)
        if found is None:
            found = self.scopes[key] = len(self.scope_docs)
            scope = Scope.from_protobuf(group.scope, group.schema_url)
            self.scope_docs.append(DUMPS(scope.to_json()))
        return found


def document_chunks(
    signal: Signal, parts: Iterable[bytes], head: dict[str, Any]
) -> Iterator[bytes]:
    """The control API's document of a selection: ``head``'s keys, the items, then
    ``"resources"``, ``"scopes"`` and ``"count"`` (known only at the end)."""
    index = _Index()
    count = 0
    yield (_open(head) + f'"{ITEM_KEYS[signal]}":[').encode()
    separator = ""
    for part in parts:
        with no_gc():
            texts = _items_text(signal, part, index)
        if texts:
            count += len(texts)
            yield (separator + ",".join(texts)).encode()
            separator = ","
    yield (
        f'],"resources":[{",".join(index.resource_docs)}],'
        f'"scopes":[{",".join(index.scope_docs)}],"count":{count}}}'
    ).encode()


def _items_text(signal: Signal, part: bytes, index: _Index) -> list[str]:
    message = _PARSERS[signal](part)
    texts: list[str] = []
    columns = item_columns(signal, part, message) if signal in _COLUMNAR else None
    for i, top in enumerate(resources_of(signal, message)):
        r = index.resource(top)
        for j, group in enumerate(scopes_of(signal, top)):
            s = index.scope(group)
            column = None if columns is None else columns.resources[i].scopes[j]
            texts.extend(_DOCUMENTS[signal](group, column, r, s))
    return texts


#: Each signal's writer of the documents of one scope (from the protobuf, not via items).
_DOCUMENTS = {"traces": span_documents, "metrics": metric_documents, "logs": log_documents}
#: The signals whose items' attributes are read as columns (see ``item_columns``).
_COLUMNAR = frozenset({"traces", "logs"})


def otlp_json(signal: Signal, part: bytes) -> str:
    """One serialised ``*Data`` message as its OTLP/JSON object."""
    with no_gc():
        return _OTLP.message(_PARSERS[signal](part))


def otlp_document_chunks(signal: Signal, parts: Iterable[bytes]) -> Iterator[bytes]:
    """A selection as one OTLP/JSON ``TracesData``/``MetricsData``/``LogsData`` document."""
    key = FIELDS[signal][0]
    camel = key.split("_")[0] + "".join(word.capitalize() for word in key.split("_")[1:])
    yield f'{{"{camel}":['.encode()
    separator = ""
    for part in parts:
        with no_gc():
            texts = [_OTLP.message(top) for top in resources_of(signal, _PARSERS[signal](part))]
        if texts:
            yield (separator + ",".join(texts)).encode()
            separator = ","
    yield b"]}"


def json_lines(frames: Iterable[tuple[Signal, bytes]]) -> Iterator[bytes]:
    """OTLP JSON lines: one ``*Data`` object per ``(signal, message)`` frame, UTF-8."""
    for signal, part in frames:
        yield (otlp_json(signal, part) + "\n").encode()


def feed_protobuf(frames: Iterable[tuple[Signal, bytes]], cursor: int, generation: int) -> bytes:
    """A feed page as protobuf: each ``*Data`` message a length-delimited field whose number
    names its signal (:data:`FEED_FIELDS`), in arrival order, then the cursor (field 4) and
    the generation (field 5) as varints. That is the wire form of::

        message FeedPage {
          repeated TracesData traces = 1; repeated MetricsData metrics = 2;
          repeated LogsData logs = 3; uint64 cursor = 4; uint64 generation = 5;
        }

    (read in wire order to keep the signals interleaved as they arrived).
    """
    out = bytearray()
    for signal, part in frames:
        out.append(FEED_FIELDS[signal] << 3 | 2)
        _varint(out, len(part))
        out += part
    out.append(4 << 3)
    _varint(out, cursor)
    out.append(5 << 3)
    _varint(out, generation)
    return bytes(out)


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def feed_json(frames: Iterable[tuple[Signal, bytes]], head: dict[str, Any]) -> bytes:
    """Feed frames as JSON: ``head``'s keys and ``"data"``, the OTLP/JSON ``*Data`` objects
    in arrival order (each line of an export, in one list)."""
    texts = [otlp_json(signal, part) for signal, part in frames]
    return (_open(head) + '"data":[' + ",".join(texts) + "]}").encode()


def _open(head: dict[str, Any]) -> str:
    """The start of a JSON object with ``head``'s keys, ready for one more key."""
    return DUMPS(head)[:-1] + "," if head else "{"
