"""The collector's two ways of answering: the OpenTelemetry Collector's, or the specification's.

Where the OTLP specification leaves room, the OpenTelemetry Collector (v0.159, its
``otlpreceiver`` with ``confighttp``, ``configgrpc`` and ``pdata``) answers its own way, and
that is what most exporters meet in production. :class:`Mode` lists every such choice once, so
the receivers ask a flag instead of comparing mode names; ``docs/otlp.rst`` has the same table
for people. Choices the specification settles (wrong-length ids, ``boolValue: 1``, the
encodings refused, ``//v1/traces``) are not here: both modes answer them the Collector's way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ("COLLECTOR", "MODES", "SPEC", "Compat", "Mode")

Compat = Literal["collector", "spec"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Mode:
    """One column of the table of differences (see the module docstring)."""

    name: Compat
    #: Default HTTP body limit, after decompression too.
    max_body_size: int
    #: Default gRPC receive limit (grpc-go's 4 MiB for the Collector).
    grpc_max_message: int
    #: HTTP status past the body limit: 400 (Go's MaxBytesReader) or the specification's 413.
    oversize_status: int
    #: 404/405/415 as Go's plain text instead of a ``google.rpc.Status``.
    plain_text_errors: bool
    #: A 400's ``Status`` names the bad field in a ``BadRequest`` detail (the specification's
    #: SHOULD; the Collector sends none).
    bad_request_details: bool
    #: ``Export*ServiceResponse`` always carries ``partial_success`` (``0a 00``, ``{}``).
    success_has_partial: bool
    #: ``Retry-After`` only on 429/503, in whole seconds rounded down (else: any status, up).
    retry_after_floor: bool
    #: A metrics export without a data point is answered and not kept.
    drop_pointless_metrics: bool
    #: gRPC code for an undecodable request (grpc-go's INTERNAL, or INVALID_ARGUMENT).
    grpc_decode_error: str
    #: ``Content-Encoding`` is checked first, before path, method and content type (it is
    #: confighttp's outer middleware) and compared as sent (no case folding, no ``x-gzip``).
    encoding_first: bool
    #: ``Content-Type`` parsed as Go's ``mime.ParseMediaType`` (a bad parameter is a 415).
    strict_media_type: bool
    #: OTLP/JSON read as pdata's iterator reads it (see ``_json``): ``null`` only for strings,
    #: messages and lists, integers without fraction or exponent, standard padded base64,
    #: the first JSON value of the body (what follows is ignored; an empty body is a 400).
    pdata_json: bool
    #: An HTTP/1.1 request without ``Host`` is refused with 400 (Go's net/http: "missing
    #: required Host header").
    require_host: bool


COLLECTOR = Mode(
    name="collector",
    max_body_size=20 * _MIB,
    grpc_max_message=4 * _MIB,
    oversize_status=400,
    plain_text_errors=True,
    bad_request_details=False,
    success_has_partial=True,
    retry_after_floor=True,
    drop_pointless_metrics=True,
    grpc_decode_error="INTERNAL",
    encoding_first=True,
    strict_media_type=True,
    pdata_json=True,
    require_host=True,
)

SPEC = Mode(
    name="spec",
    max_body_size=64 * _MIB,
    grpc_max_message=64 * _MIB,
    oversize_status=413,
    plain_text_errors=False,
    bad_request_details=True,
    success_has_partial=False,
    retry_after_floor=False,
    drop_pointless_metrics=False,
    grpc_decode_error="INVALID_ARGUMENT",
    encoding_first=False,
    strict_media_type=False,
    pdata_json=False,
    require_host=False,
)

MODES: dict[str, Mode] = {"collector": COLLECTOR, "spec": SPEC}
