"""The OTLP/gRPC receiver: generic unary handlers that take the raw request bytes.

Handlers get the serialised request (no deserializer), so it is checked once (``_proto``) and
the bytes themselves are stored. grpcio's C core does what grpc-go does in the Collector before
a handler runs: it inflates gzip, enforces the receive limit (RESOURCE_EXHAUSTED, also on the
inflated size) and, configured by :data:`SERVER_OPTIONS`, answers UNIMPLEMENTED to ``deflate``
as grpc-go does to any encoding it has no decompressor for. Such refusals never reach a
handler, so they never reach a request record; neither does ``grpc-encoding``, which the core
keeps to itself (``content_encoding`` stays empty in gRPC records).

Two Collector behaviours grpcio cannot give: the Collector also decompresses ``zstd`` and
``snappy`` messages, which grpcio's core refuses before any Python code runs (INTERNAL,
"Error parsing 'grpc-encoding' metadata"); ``docs/otlp.rst`` lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NoReturn

import grpc

from mocksup.otlp._ingest import Answer, Ingest
from mocksup.otlp._limits import LimitError, bounded, bounded_headers
from mocksup.otlp._proto import ProtoError, decode
from mocksup.otlp._signals import Signal
from mocksup.otlp._status import GRPC_CODES, encode_response, retry_info, status_body

__all__ = ("SERVER_OPTIONS", "grpc_handlers")

_SERVICES: dict[Signal, str] = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}
#: Channel arguments of the server: only identity (bit 0) and gzip (bit 2) are accepted, so a
#: ``deflate`` message is answered UNIMPLEMENTED, as grpc-go answers it.
SERVER_OPTIONS = (("grpc.compression_enabled_algorithms_bitset", 0b101),)

_Handler = Callable[[bytes, grpc.ServicerContext], bytes]


def grpc_handlers(ingest: Ingest) -> list[grpc.GenericRpcHandler]:
    """The generic handlers of the three OTLP services, for :func:`mocksup.serving.grpc_server`."""
    return [
        grpc.method_handlers_generic_handler(
            service,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    _exporter(ingest, signal, f"/{service}/Export")
                )
            },
        )
        for signal, service in _SERVICES.items()
    ]


def _exporter(ingest: Ingest, signal: Signal, path: str) -> _Handler:
    limits = ingest.limits
    always_partial = limits.mode.success_has_partial

    def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
        started = time.time()
        record = _record(context, signal, path, started, len(raw))
        try:
            envelope = decode(signal, raw, limits)
        except LimitError as error:
            _refuse(ingest, context, record, "RESOURCE_EXHAUSTED", error.message)
        except ProtoError as error:
            # grpc-go's codec failing: INTERNAL in the Collector.
            code = limits.mode.grpc_decode_error
            _refuse(ingest, context, record, code, f"grpc: error unmarshalling request: {error}")
        answer = ingest.export(signal, envelope, record)
        if answer.fault is not None and (answer.drop or answer.error):
            _fail(ingest, context, record, answer)
        _finish(ingest, record, "OK")
        return encode_response(
            signal,
            json_encoding=False,
            rejected=answer.rejected,
            message=answer.message,
            always_partial=always_partial,
        )

    return export


def _record(
    context: grpc.ServicerContext, signal: Signal, path: str, started: float, size: int
) -> dict[str, Any]:
    metadata = {
        key: value for key, value in context.invocation_metadata() if isinstance(value, str)
    }
    return {
        "transport": "grpc",
        "time": started,
        "method": "POST",
        "path": path,
        "signal": signal,
        "content_type": metadata.get("content-type", "application/grpc"),
        "content_encoding": metadata.get("grpc-encoding", ""),
        "headers": bounded_headers(metadata),
        "size": size,
        "decoded_size": size,
        "items": 0,
    }


def _refuse(
    ingest: Ingest, context: grpc.ServicerContext, record: dict[str, Any], code: str, text: str
) -> NoReturn:
    record["error"] = bounded(text)
    _finish(ingest, record, code)
    context.abort(getattr(grpc.StatusCode, code), text)
    raise AssertionError("abort() returned")


def _fail(
    ingest: Ingest, context: grpc.ServicerContext, record: dict[str, Any], answer: Answer
) -> NoReturn:
    fault = answer.fault
    assert fault is not None
    code = "UNAVAILABLE" if answer.drop else fault.grpc_status()
    text = fault.message or f"injected fault: {fault.describe()}"
    delay = None if answer.drop else fault.retry_after
    trailers: list[tuple[str, bytes]] = [
        (
            "grpc-status-details-bin",
            status_body(GRPC_CODES[code], text, json_encoding=False, retry_after=delay),
        )
    ]
    if delay is not None:
        # The Python exporter reads only this key; Go and .NET read the details.
        trailers.append(("google.rpc.retryinfo-bin", retry_info(delay)))
    record["error"] = bounded(text)
    _finish(ingest, record, "dropped" if answer.drop else code)
    context.set_trailing_metadata(tuple(trailers))
    context.abort(getattr(grpc.StatusCode, code), text)
    raise AssertionError("abort() returned")


def _finish(ingest: Ingest, record: dict[str, Any], status: str) -> None:
    record["status"] = status
    record["duration"] = time.time() - record["time"]
    ingest.store.record(record)
