"""The OTLP/gRPC receiver: the three ``Export`` methods on mocksup's own HTTP/2 server.

The methods get the serialised request, inflated and bounded by :mod:`mocksup._h2.grpc`,
which answers as grpc-go does in the Collector before a handler runs: unknown methods,
encodings without a decompressor (UNIMPLEMENTED), messages past the receive limit
(RESOURCE_EXHAUSTED, also on the inflated size). The Collector's decompressors are gzip,
zstd and snappy; zstd and snappy need mocksup's optional codecs (``mocksup[codecs]``).

Exports run on the server's loop; while faults are pending they run on a worker thread
instead (at most ``workers`` at once), so an injected delay never holds other calls.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mocksup._h2.grpc import Call, Reply, Unary
from mocksup.otlp._codecs import CodecError, have_codecs
from mocksup.otlp._codecs import decode as decode_body
from mocksup.otlp._ingest import Answer, Ingest
from mocksup.otlp._limits import LimitError, bounded, bounded_headers
from mocksup.otlp._proto import ProtoError, decode
from mocksup.otlp._signals import Signal
from mocksup.otlp._status import GRPC_CODES, encode_response, retry_info, status_body

__all__ = ("decoders", "grpc_methods")

_SERVICES: dict[Signal, str] = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def decoders() -> dict[str, Any]:
    """The ``grpc-encoding`` decompressors, the Collector's: gzip, and zstd and snappy with
    the optional codecs."""

    def codec(name: str) -> Any:
        # gRPC's snappy is the framed (stream) format only, unlike HTTP's auto-detection.
        body_encoding = "x-snappy-framed" if name == "snappy" else name

        def inflate(data: bytes, limit: int) -> bytes:
            try:
                return decode_body(data, body_encoding, limit)
            except CodecError as error:
                if error.kind == "too_large":
                    return b"\0" * (limit + 1)  # past the limit: refused as too large
                raise ValueError(error.message) from None

        return inflate

    names = ["gzip", *(["zstd", "snappy"] if have_codecs() else [])]
    return {name: codec(name) for name in names}


def grpc_methods(ingest: Ingest, workers: int) -> dict[str, Unary]:
    """The ``Export`` method of each OTLP service, for :class:`mocksup._h2.grpc.GRPCHandler`."""
    slots = threading.BoundedSemaphore(workers)
    return {
        f"/{service}/Export": _exporter(ingest, signal, f"/{service}/Export", slots)
        for signal, service in _SERVICES.items()
    }


def _exporter(ingest: Ingest, signal: Signal, path: str, slots: threading.Semaphore) -> Unary:
    limits = ingest.limits
    always_partial = limits.mode.success_has_partial

    def export(call: Call) -> Reply:
        record = _record(call, signal, path)
        try:
            envelope = decode(signal, call.message, limits)
        except LimitError as error:
            return _refuse(ingest, record, "RESOURCE_EXHAUSTED", error.message)
        except ProtoError as error:
            # grpc-go's codec failing: INTERNAL in the Collector.
            code = limits.mode.grpc_decode_error
            return _refuse(ingest, record, code, f"grpc: error unmarshalling request: {error}")
        answer = ingest.export(signal, envelope, record)
        if answer.fault is not None and (answer.drop or answer.error):
            return _fail(ingest, record, answer)
        _finish(ingest, record, "OK")
        return Reply(
            encode_response(
                signal,
                json_encoding=False,
                rejected=answer.rejected,
                message=answer.message,
                always_partial=always_partial,
            )
        )

    def serve(call: Call) -> Reply | None:
        if not ingest.faults.pending_any():
            return export(call)

        # A fault may delay this export: off the loop, so other calls go on.
        def work() -> None:
            with slots:
                call.finish(export(call))

        threading.Thread(target=work, name="mocksup-grpc-export", daemon=True).start()
        return None

    return serve


def _record(call: Call, signal: Signal, path: str) -> dict[str, Any]:
    metadata = call.metadata
    size = len(call.message)
    return {
        "transport": "grpc",
        "time": time.time(),
        "method": "POST",
        "path": path,
        "signal": signal,
        "content_type": metadata.get("content-type", "application/grpc"),
        "content_encoding": call.encoding,
        "headers": bounded_headers(metadata),
        "size": size,
        "decoded_size": size,
        "items": 0,
    }


def _refuse(ingest: Ingest, record: dict[str, Any], code: str, text: str) -> Reply:
    record["error"] = bounded(text)
    _finish(ingest, record, code)
    return Reply(code=code, message=text)


def _fail(ingest: Ingest, record: dict[str, Any], answer: Answer) -> Reply:
    fault = answer.fault
    assert fault is not None
    if answer.drop:
        _finish(ingest, record, "dropped")
        return Reply(drop=True)
    code = fault.grpc_status()
    text = fault.message or f"injected fault: {fault.describe()}"
    delay = fault.retry_after
    trailers: list[tuple[str, bytes | str]] = [
        (
            "grpc-status-details-bin",
            status_body(GRPC_CODES[code], text, json_encoding=False, retry_after=delay),
        )
    ]
    if delay is not None:
        # The Python exporter reads only this key; Go and .NET read the details.
        trailers.append(("google.rpc.retryinfo-bin", retry_info(delay)))
    record["error"] = bounded(text)
    _finish(ingest, record, code)
    return Reply(code=code, message=text, trailers=trailers)


def _finish(ingest: Ingest, record: dict[str, Any], status: str) -> None:
    record["status"] = status
    record["duration"] = time.time() - record["time"]
    ingest.store.record(record)
