"""OTLP protobuf requests: checked as the Collector's pdata checks them, without building them.

The collector stores a request's bytes as they came, so it only has to know that they are a
valid request, how many items they hold, and whether the Collector would refuse them. Parsing
them into messages would cost a Python-level walk for every check and up to 90 bytes of memory
per byte on the wire (20 MiB of empty spans make 1.8 GiB). So three cheaper views are used:

- **The validator** (:func:`check`): the OTLP schema with every message field made singular, so
  the parser merges all spans into one span, all attributes into one attribute, and so on. It
  reads every byte (wire format, UTF-8, nesting) in C and allocates almost nothing, and the
  merged messages hold every id (ids are declared repeated) and every unknown field. From
  them: ids of the wrong length (pdata: ``unmarshal: invalid TraceID length``), known fields
  sent with the wrong wire type (``proto: wrong wireType``), and invalid UTF-8, which the
  Collector accepts unchecked: such a request is kept with the bad bytes replaced by U+FFFD,
  so that queries can read it.
- **The envelope** (:class:`Envelope`): resources, scopes and items as opaque byte strings, to
  count, trim at the store's limits and move the pre-2022 layout (field 1000,
  ``instrumentation_library_spans``) into the current field, as pdata does.
- **A message count** for bodies too large to be safe by their size alone: a walk of the wire
  format that counts the messages a real parse would build (``max_request_objects``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldDescriptorProto
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from mocksup.otlp._limits import Limits
from mocksup.otlp._signals import Signal

__all__ = ("ID_SIZES", "REQUEST_TYPES", "Envelope", "ProtoError", "data_point_count", "decode")

#: The real request classes, by signal.
REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}
#: The ``bytes`` fields pdata reads as trace and span ids, with the length each must have.
ID_SIZES = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
#: The pre-2022 field of every ``Resource*`` message that held the scopes.
_DEPRECATED_SCOPES = 1000
_F = FieldDescriptorProto
_BYTES = FieldDescriptor.TYPE_BYTES


class ProtoError(ValueError):
    """A protobuf request the Collector would refuse; ``field`` names the culprit if known."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


# -- the cloned schemas ------------------------------------------------------------------------


def _clone(prefix: str, edit: Callable[[Any], None]) -> dict[str, type[Message]]:
    """The request classes of a copy of the OTLP schema, each message edited by ``edit``."""
    pool = descriptor_pool.DescriptorPool()
    done: set[str] = set()

    def add(file: Any) -> None:
        if file.name in done:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        proto.name = prefix + proto.name
        proto.package = prefix + proto.package
        proto.dependency[:] = [prefix + name for name in proto.dependency]
        proto.ClearField("service")
        proto.ClearField("options")
        stack = list(proto.message_type)
        while stack:
            message = stack.pop()
            stack.extend(message.nested_type)
            for field in message.field:
                if field.type_name.startswith("."):
                    field.type_name = "." + prefix + field.type_name[1:]
            edit(message)
        pool.Add(proto)
        done.add(file.name)

    classes = {}
    for signal, cls in REQUEST_TYPES.items():
        add(cls.DESCRIPTOR.file)
        found = pool.FindMessageTypeByName(prefix + cls.DESCRIPTOR.full_name)
        classes[signal] = message_factory.GetMessageClass(found)
    return classes


def _merging(strings: int) -> Callable[[Any], None]:
    def edit(message: Any) -> None:
        message.ClearField("oneof_decl")
        for field in message.field:
            field.ClearField("oneof_index")
            field.ClearField("proto3_optional")
            if field.type == _F.TYPE_MESSAGE:
                field.label = _F.LABEL_OPTIONAL  # occurrences merge into one message
            elif field.type == _F.TYPE_BYTES and field.name in ID_SIZES:
                field.label = _F.LABEL_REPEATED  # every occurrence kept, to check its length
            elif field.type == _F.TYPE_STRING:
                field.type = strings
        scopes = next((f for f in message.field if f.number == 2), None)
        if message.name.startswith("Resource") and scopes and scopes.type == _F.TYPE_MESSAGE:
            message.field.add(
                name="deprecated_scopes",
                number=_DEPRECATED_SCOPES,
                type=_F.TYPE_MESSAGE,
                label=_F.LABEL_OPTIONAL,
                type_name=scopes.type_name,
            )

    return edit


def _bytes_strings(message: Any) -> None:
    for field in message.field:
        if field.type == _F.TYPE_STRING:
            field.type = _F.TYPE_BYTES


_VALIDATORS = _clone("mocksup_check.", _merging(_F.TYPE_STRING))
#: The same with strings as bytes: a request only these accept has invalid UTF-8.
_LENIENT_VALIDATORS = _clone("mocksup_lenient.", _merging(_F.TYPE_BYTES))
#: The real layout with strings as bytes, to read such a request and repair it.
_BYTES_REQUESTS = _clone("mocksup_bytes.", _bytes_strings)


# -- checking a request ----------------------------------------------------------------------


def decode(signal: Signal, raw: bytes, limits: Limits) -> Envelope:
    """Check a serialised ``Export*ServiceRequest`` as pdata would, and open its envelope.

    The envelope's ``raw`` is what to keep: the bytes as sent, unless the request used the
    pre-2022 layout (moved to the current one) or held invalid UTF-8 (replaced by U+FFFD).

    :raises ProtoError: the Collector would refuse the request.
    :raises LimitError: it holds more than ``max_request_objects`` messages.
    """
    if len(raw) > 2 * limits.max_request_objects:
        # Below that, the body is too short to hold that many messages (2 bytes at least).
        _count_messages(signal, raw, limits)
    classes = _VALIDATORS
    try:
        merged = classes[signal].FromString(raw)
    except DecodeError:
        classes = _LENIENT_VALIDATORS
        try:
            merged = classes[signal].FromString(raw)
        except DecodeError:
            raise ProtoError("proto: cannot parse invalid wire-format data") from None
    # Any unknown field anywhere shows as a size that shrinks when unknown fields go.
    size = merged.ByteSize()
    merged.DiscardUnknownFields()
    if merged.ByteSize() != size:
        # Fields of a newer OTLP (fine), or known ones with the wrong wire type (refused).
        # Only now is the merged tree walked, on a fresh parse.
        for message in _messages(classes[signal].FromString(raw)):
            _check_wire_types(message)
    _check_ids(signal, merged)
    envelope = Envelope(raw, limits)
    if classes is _LENIENT_VALIDATORS:
        envelope = Envelope(_repair_utf8(signal, envelope.raw), limits)
    return envelope


def _messages(message: Message) -> Iterator[Message]:
    yield message
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from _messages(value)


def _check_ids(signal: Signal, merged: Message) -> None:
    """Refuse ids of the wrong length (the merged messages hold every id sent).

    Deepest first, each message holding ids is stripped of every other field and serialised:
    its ids come out in field order, each as tag, length, bytes. When all have their size,
    every tag and length byte sits at a fixed stride, which two slices check at C speed (a
    bytes object per id would cost a fifth of the parse); anything else, empty ids included,
    is checked id by id. Unknown fields were discarded before.
    """
    top: Any = getattr(merged, _TOP[signal])
    for name, tree in _ID_TREES[signal]:
        if name == "deprecated_scopes" and not top.HasField(name):
            continue
        _check_tree(getattr(top, name), tree)


def _check_tree(node: Any, tree: _IdTree) -> None:
    children, fields, others = tree
    for name, child in children:
        _check_tree(getattr(node, name), child)  # an unset message reads as an empty one
    if not fields:
        return
    if sum(len(getattr(node, name)) for name, _, _ in fields) <= _FEW_IDS:
        _check_each_id(node, fields)  # a small request: checking each is cheaper
        return
    for name in others:
        node.ClearField(name)
    if not _all_full_size(node, fields):
        _check_each_id(node, fields)


_FEW_IDS = 48


def _all_full_size(node: Any, fields: tuple[tuple[str, int, int], ...]) -> bool:
    data = node.SerializeToString()
    pos = 0
    for name, tag, size in fields:
        count = len(getattr(node, name))
        end = pos + (size + 2) * count
        stride = size + 2
        if (
            data[pos:end:stride] != bytes([tag]) * count
            or data[pos + 1 : end : stride] != bytes([size]) * count
        ):
            return False
        pos = end
    return pos == len(data)


def _check_each_id(node: Any, fields: tuple[tuple[str, int, int], ...]) -> None:
    for name, _, size in fields:
        values = getattr(node, name)
        if values and not set(map(len, values)) <= {0, size}:
            kind = "TraceID" if size == 16 else "SpanID"
            raise ProtoError(f"unmarshal: invalid {kind} length", name)


def _check_wire_types(message: Message) -> None:
    known = message.DESCRIPTOR.fields_by_number
    unknown: Any = UnknownFieldSet(message)
    for field in unknown:
        if field.field_number in known:
            name = known[field.field_number].name
            camel = "".join(part.capitalize() for part in name.split("_"))
            raise ProtoError(f"proto: wrong wireType = {field.wire_type} for field {camel}", name)


#: Where ids are below one message: (field, subtree) pairs to descend into, its own id
#: fields (name, tag byte, size) in field order, and the fields to clear to check them.
_IdTree = tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, int, int], ...], tuple[str, ...]]


def _id_tree(node: Any, seen: frozenset[str] = frozenset()) -> _IdTree | None:
    """The id tree below ``node``, ``None`` when no ids are below it."""
    if node.full_name in seen or node.name == "AnyValue":
        return None  # attribute values hold no ids, and nest without end
    children = []
    for field in node.fields:
        if field.message_type is not None:
            child = _id_tree(field.message_type, seen | {node.full_name})
            if child is not None:
                children.append((field.name, child))
    ids = sorted(
        (f for f in node.fields if f.name in ID_SIZES and f.type == _BYTES),
        key=lambda f: f.number,  # the order they are serialised in
    )
    if not ids and not children:
        return None
    fields = tuple((f.name, f.number << 3 | 2, ID_SIZES[f.name]) for f in ids)
    others = tuple(f.name for f in node.fields if f not in ids)
    return tuple(children), fields, others


def _top_trees(cls: Any) -> tuple[tuple[str, _IdTree], ...]:
    # Below the request's one (merged) resource entry: its scopes, current and pre-2022.
    top = cls.DESCRIPTOR.fields[0].message_type
    tree = _id_tree(top)
    assert tree is not None
    return tree[0]


_ID_TREES = {signal: _top_trees(cls) for signal, cls in _VALIDATORS.items()}
_TOP = {"traces": "resource_spans", "metrics": "resource_metrics", "logs": "resource_logs"}


# -- invalid UTF-8 ---------------------------------------------------------------------------


def _repair_utf8(signal: Signal, raw: bytes) -> bytes:
    lenient = _BYTES_REQUESTS[signal].FromString(raw)
    target = REQUEST_TYPES[signal]()
    _copy_replacing(lenient, target)
    repaired: bytes = target.SerializeToString()
    return repaired


def _copy_replacing(source: Message, target: Message) -> None:
    """Copy a strings-as-bytes message into the real one, bad UTF-8 becoming U+FFFD."""
    by_name = target.DESCRIPTOR.fields_by_name
    for field, value in source.ListFields():
        name = field.name
        is_string = by_name[name].type == FieldDescriptor.TYPE_STRING
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if repeated:
                container = getattr(target, name)
                for item in value:
                    _copy_replacing(item, container.add())
            else:
                _copy_replacing(value, getattr(target, name))
        elif is_string and repeated:
            getattr(target, name).extend(v.decode("utf-8", "replace") for v in value)
        elif is_string:
            setattr(target, name, value.decode("utf-8", "replace"))
        elif repeated:
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)


# -- counting messages -----------------------------------------------------------------------


def _schema_table(descriptor: Any, memo: dict[str, dict[int, Any]]) -> dict[int, Any]:
    """Field number -> the table of its message type, for every message field (recursive)."""
    table = memo.get(descriptor.full_name)
    if table is not None:
        return table
    table = memo[descriptor.full_name] = {}
    for field in descriptor.fields:
        if field.message_type is not None:
            table[field.number] = _schema_table(field.message_type, memo)
    if descriptor.name.startswith("Resource") and 2 in table:
        table[_DEPRECATED_SCOPES] = table[2]
    return table


_TABLES: dict[str, dict[int, Any]] = {}
_SCHEMAS = {s: _schema_table(cls.DESCRIPTOR, _TABLES) for s, cls in REQUEST_TYPES.items()}


def _count_messages(signal: Signal, raw: bytes, limits: Limits) -> None:
    """Count the messages a parse of ``raw`` would build; stop past the limit.

    The walk skips strings and scalars by their length, so it costs per field, not per
    byte. Malformed data ends the walk early: the validator refuses it next.
    """
    limit = limits.max_request_objects
    count = 0
    # Depth first, so the stack holds the open messages (bounded by the nesting), never the
    # pending siblings (a million empty spans would be a million entries).
    stack: list[tuple[int, int, dict[int, Any]]] = []
    pos, end, table = 0, len(raw), _SCHEMAS[signal]
    try:
        while True:
            while pos < end:
                tag, pos = _varint(raw, pos)
                wire = tag & 7
                if wire == 0:
                    _, pos = _varint(raw, pos)
                elif wire in (1, 5):
                    pos += 8 if wire == 1 else 4
                elif wire != 2:
                    return  # groups or garbage: the validator refuses it next
                else:
                    size, pos = _varint(raw, pos)
                    child = table.get(tag >> 3)
                    if child is None:
                        pos += size
                        continue
                    count += 1
                    if count > limit:
                        raise limits.too_complex(count, "protobuf messages")
                    if len(stack) > _MAX_DEPTH:
                        return  # deeper than any parser reads: refused next
                    stack.append((pos + size, end, table))
                    end, table = pos + size, child
            if not stack:
                return
            pos, end, table = stack.pop()
    except IndexError:
        return


#: Deeper than the protobuf runtime parses (100): the walk can stop, the parse refuses it.
_MAX_DEPTH = 128


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


# -- the envelope ----------------------------------------------------------------------------


def _envelope_class() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(
        name="mocksup_envelope.proto", package="mocksup_envelope", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, str]) -> None:
        # Every signal nests the same way: resource 1, scopes 2, schema_url 3 (and 1000),
        # then scope 1, items 2, schema_url 3. The items stay opaque bytes.
        entry = proto.message_type.add(name=name)
        for field_name, number, kind in fields:
            field = entry.field.add(name=field_name, number=number)
            field.label = _F.LABEL_REPEATED if kind.startswith("*") else _F.LABEL_OPTIONAL
            type_name = kind.lstrip("*")
            if type_name == "bytes":
                field.type = _F.TYPE_BYTES
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".mocksup_envelope.{type_name}"

    message("Request", ("resources", 1, "*Resource"))
    message(
        "Resource",
        ("resource", 1, "bytes"),
        ("scopes", 2, "*Scope"),
        ("schema_url", 3, "bytes"),
        ("deprecated_scopes", _DEPRECATED_SCOPES, "*Scope"),
    )
    message("Scope", ("scope", 1, "bytes"), ("items", 2, "*bytes"), ("schema_url", 3, "bytes"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mocksup_envelope.Request"))


_Request = _envelope_class()


class Envelope:
    """A request's resources, scopes and items (as byte strings): counted, trimmed, migrated.

    One parse, one object per resource and scope: a request too large to be safe by its size
    alone had its messages counted before (``max_request_objects``).

    :param raw: a valid serialised request (checked by :func:`decode` or built here).
    :raises LimitError: more resources, scopes and items than ``max_request_objects``.
    """

    def __init__(self, raw: bytes, limits: Limits) -> None:
        self.raw = raw
        self.request: Any = _Request.FromString(raw)
        count = 0
        migrated = False
        for resource in self.request.resources:
            if resource.deprecated_scopes:
                # pdata: the old field counts only when the new one is empty; either way
                # it is not kept.
                if not resource.scopes:
                    resource.scopes.extend(resource.deprecated_scopes)
                del resource.deprecated_scopes[:]
                migrated = True
            for scope in resource.scopes:
                count += len(scope.items)
        self.count = count
        total = len(self.request.resources) + count
        if total > limits.max_request_objects:
            raise limits.too_complex(total, "resources, scopes and items")
        if migrated:
            self.raw = self.request.SerializeToString()

    def trimmed(self, keep: int) -> bytes:
        """The request with only its first ``keep`` items (in order)."""
        for resource in self.request.resources:
            for scope in resource.scopes:
                if keep >= len(scope.items):
                    keep -= len(scope.items)
                else:
                    del scope.items[keep:]
                    keep = 0
        data: bytes = self.request.SerializeToString()
        return data

    def item_sizes(self) -> Iterator[int]:
        """The serialised size of every item, in order."""
        for resource in self.request.resources:
            for scope in resource.scopes:
                yield from map(len, scope.items)


def data_point_count(raw: bytes) -> int:
    """Data points in a serialised metrics request (what the Collector counts)."""
    message: Any = _POINTS.FromString(raw)
    metric = message.resource_metrics.scope_metrics.metrics
    return sum(
        len(getattr(metric, kind).data_points)
        for kind in ("gauge", "sum", "histogram", "exponential_histogram", "summary")
    )


def _points_class() -> type[Message]:
    def edit(message: Any) -> None:
        # Merge everything down to the data points, which stay opaque (counted, not read).
        message.ClearField("oneof_decl")
        for field in message.field:
            field.ClearField("oneof_index")
            field.ClearField("proto3_optional")
            if field.name == "data_points":
                field.type = _F.TYPE_BYTES
                field.ClearField("type_name")
            elif field.type == _F.TYPE_MESSAGE:
                field.label = _F.LABEL_OPTIONAL

    return _clone("mocksup_points.", edit)["metrics"]


_POINTS = _points_class()
