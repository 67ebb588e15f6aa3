"""The answers an OTLP receiver writes: ``google.rpc.Status`` bodies, ``RetryInfo``, responses.

``google.rpc.Status``, ``BadRequest`` and ``RetryInfo`` are encoded by hand (a few varints)
rather than through ``googleapis-common-protos``, which mocksup does not otherwise need; the
tests decode them with the real generated classes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Annotations only: the faults module imports this one.
    from mocksup.otlp._signals import Signal

__all__ = (
    "GRPC_CODES",
    "encode_response",
    "grpc_code_for_http",
    "http_status_for_grpc",
    "retry_info",
    "status_body",
)

#: gRPC status codes by name (``grpc.StatusCode`` without importing grpc in the parent).
GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

# The OpenTelemetry Collector's mappings (internal/statusutil and internal/errors).
_HTTP_TO_GRPC = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "UNAVAILABLE",
}
_GRPC_TO_HTTP = {
    "CANCELLED": 503,
    "DEADLINE_EXCEEDED": 503,
    "ABORTED": 503,
    "OUT_OF_RANGE": 503,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 503,
    "RESOURCE_EXHAUSTED": 429,
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "UNIMPLEMENTED": 404,
}

_TYPE_PREFIX = "type.googleapis.com/google.rpc."


def grpc_code_for_http(status: int) -> str:
    """The gRPC code name the collector answers for an HTTP status (``UNKNOWN`` if none)."""
    return _HTTP_TO_GRPC.get(status, "UNKNOWN")


def http_status_for_grpc(code: str) -> int:
    """The HTTP status the collector answers for a gRPC code name (500 if none)."""
    return _GRPC_TO_HTTP.get(code, 500)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value & 0xFFFFFFFFFFFFFFFF) if value else b""


def _duration(seconds: float) -> bytes:
    whole = int(seconds)
    nanos = round((seconds - whole) * 1e9)
    return _int_field(1, whole) + _int_field(2, nanos)


def retry_info(seconds: float) -> bytes:
    """A serialised ``google.rpc.RetryInfo`` whose ``retry_delay`` is ``seconds``."""
    return _field(1, _duration(seconds))


def _any(type_name: str, value: bytes) -> bytes:
    return _field(1, (_TYPE_PREFIX + type_name).encode()) + _field(2, value)


def _bad_request(field: str, description: str) -> bytes:
    violation = _field(1, field.encode()) + _field(2, description.encode())
    return _field(1, violation)


def status_body(
    code: int,
    message: str,
    *,
    json_encoding: bool,
    bad_field: str | None = None,
    retry_after: float | None = None,
) -> bytes:
    """A ``google.rpc.Status`` body, protobuf or JSON.

    :param code: the gRPC code number the status carries.
    :param bad_field: adds a ``BadRequest`` detail naming this field (``""`` for the body).
    :param retry_after: adds a ``RetryInfo`` detail with this delay in seconds.
    """
    if json_encoding:
        details: list[dict[str, object]] = []
        if bad_field is not None:
            details.append(
                {
                    "@type": _TYPE_PREFIX + "BadRequest",
                    "fieldViolations": [{"field": bad_field, "description": message}],
                }
            )
        if retry_after is not None:
            details.append({"@type": _TYPE_PREFIX + "RetryInfo", "retryDelay": f"{retry_after}s"})
        doc: dict[str, object] = {"code": code, "message": message}
        if details:
            doc["details"] = details
        return json.dumps(doc).encode()
    body = _int_field(1, code) + _field(2, message.encode())
    if bad_field is not None:
        body += _field(3, _any("BadRequest", _bad_request(bad_field, message)))
    if retry_after is not None:
        body += _field(3, _any("RetryInfo", retry_info(retry_after)))
    return body


#: The partial-success field names per signal: (proto field, JSON key).
_REJECTED = {
    "traces": "rejectedSpans",
    "metrics": "rejectedDataPoints",
    "logs": "rejectedLogRecords",
}


def encode_response(
    signal: Signal,
    *,
    json_encoding: bool,
    rejected: int = 0,
    message: str = "",
    always_partial: bool = False,
) -> bytes:
    """An ``Export*ServiceResponse``; ``partial_success`` set when there is one.

    Every signal's partial-success message has the count as field 1 (int64) and the message
    as field 2, and sits in field 1 of the response, so one encoder serves all three.

    :param always_partial: send an empty ``partial_success`` on full success too, as the
        Collector's pdata does (``0a 00``, ``{"partialSuccess":{}}``).
    """
    partial = bool(rejected or message)
    if json_encoding:
        if not partial:
            return b'{"partialSuccess":{}}' if always_partial else b"{}"
        inner: dict[str, object] = {}
        if rejected:
            # int64 is a decimal string in OTLP/JSON.
            inner[_REJECTED[signal]] = str(rejected)
        if message:
            inner["errorMessage"] = message
        return json.dumps({"partialSuccess": inner}).encode()
    if not partial:
        return b"\x0a\x00" if always_partial else b""
    return _field(1, _int_field(1, rejected) + (_field(2, message.encode()) if message else b""))
