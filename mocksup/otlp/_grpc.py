"""The OTLP/gRPC receiver: generic unary handlers that take the raw request bytes.

Handlers get the serialised request (no deserializer), so a protobuf request is parsed once
to validate and count it, and the bytes themselves are stored. grpcio inflates gzip requests
itself and enforces the receive limit (RESOURCE_EXHAUSTED above it) before a handler runs,
so such a refusal never reaches the request record.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from mocksup.otlp._ingest import Ingest
from mocksup.otlp._query import _PARSERS
from mocksup.otlp._status import GRPC_CODES, encode_response, retry_info, status_body

__all__ = ["grpc_handlers"]

_SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def grpc_handlers(ingest: Ingest) -> list[Any]:
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


def _exporter(ingest: Ingest, signal: str, path: str) -> Any:
    parse = _PARSERS[signal]

    def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
        started = time.time()
        metadata = {
            key: value for key, value in context.invocation_metadata() if isinstance(value, str)
        }
        record: dict[str, Any] = {
            "transport": "grpc",
            "time": started,
            "method": "POST",
            "path": path,
            "signal": signal,
            "content_type": metadata.get("content-type", "application/grpc"),
            "content_encoding": metadata.get("grpc-encoding", ""),
            "headers": metadata,
            "size": len(raw),
            "decoded_size": len(raw),
            "items": 0,
        }
        try:
            message = parse(raw)
        except DecodeError as error:
            record.update(status="INVALID_ARGUMENT", error=f"undecodable request: {error}")
            _finish(ingest, record, started)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, record["error"])
        answer = ingest.export(signal, message, raw, record)
        fault = answer.fault
        if fault is not None and (answer.drop or answer.error):
            code = "UNAVAILABLE" if answer.drop else fault.grpc_status()
            text = fault.message or f"injected fault: {fault.describe()}"
            trailers: list[tuple[str, bytes]] = [
                (
                    "grpc-status-details-bin",
                    status_body(
                        GRPC_CODES[code],
                        text,
                        json_encoding=False,
                        retry_after=None if answer.drop else fault.retry_after,
                    ),
                )
            ]
            if fault.retry_after is not None and not answer.drop:
                # The Python exporter reads only this key; Go and .NET read the details.
                trailers.append(("google.rpc.retryinfo-bin", retry_info(fault.retry_after)))
            record.update(status="dropped" if answer.drop else code, error=text)
            _finish(ingest, record, started)
            context.set_trailing_metadata(trailers)
            context.abort(getattr(grpc.StatusCode, code), text)
        record["status"] = "OK"
        _finish(ingest, record, started)
        return encode_response(
            signal, json_encoding=False, rejected=answer.rejected, message=answer.message
        )

    return export


def _finish(ingest: Ingest, record: dict[str, Any], started: float) -> None:
    record["duration"] = time.time() - started
    ingest.store.record(record)
