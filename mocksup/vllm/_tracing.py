"""The ``llm_request`` span vLLM emits, built from OTLP protobufs and exported in batches.

vLLM (``OutputProcessor.do_tracing``) emits one span per finished request: name
``llm_request``, kind SERVER, start at arrival, parent taken from the incoming W3C
``traceparent`` (``tracestate`` kept; an unsampled parent means no span, as the SDK's
parent-based sampler decides), and its own ``gen_ai.*`` attributes. This module builds
exactly that span with ``opentelemetry-proto`` messages, as vLLM's OpenTelemetry SDK encodes
it (scope ``vllm.tracing.otel``, the SDK's resource, span flags saying whether the parent is
remote), and sends it from one background thread, over gRPC (``TraceService/Export``,
vLLM's default) or HTTP/protobuf, without the SDK. At start it also exports the spans vLLM's
instrumented start-up functions make (:mod:`._startup_spans`). :meth:`SpanExporter.close`
drains the queue, so a graceful stop loses no span.
"""

from __future__ import annotations

import http.client
import logging
import os
import queue
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from mocksup.vllm._engine_metrics import Finished

__all__ = [
    "SpanExporter",
    "SpanInput",
    "TraceContext",
    "build_span",
    "kv",
    "parse_traceparent",
    "resource",
]

_log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#: Spans per export request; vLLM's BatchSpanProcessor default.
_BATCH = 512
#: Spans waiting for export at most; more are dropped and counted (BatchSpanProcessor's default).
_MAX_QUEUE = 2048
#: Seconds one export may take; stop() must finish within the child's hard-exit budget.
_EXPORT_TIMEOUT = 1.0
#: The scope of the ``llm_request`` span: the module of vLLM's ``instrument_manual``.
SCOPE = "vllm.tracing.otel"
#: The OTLP span flags the SDK writes: "has is-remote", and "is remote" for a remote parent.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200


@dataclass(frozen=True)
class TraceContext:
    """The parent a W3C ``traceparent`` names, plus the ``tracestate`` to keep."""

    trace_id: bytes
    span_id: bytes
    sampled: bool
    state: str = ""


def parse_traceparent(
    traceparent: str | None, tracestate: str | None = None
) -> TraceContext | None:
    """Parse a W3C ``traceparent`` header; ``None`` when absent or invalid (a new root).

    Follows the W3C rules the OpenTelemetry propagator applies: version ``ff`` and all-zero ids
    are invalid; version 00 takes no trailing fields.
    """
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if match is None:
        return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_hex == "0" * 32 or span_hex == "0" * 16:
        return None
    return TraceContext(
        bytes.fromhex(trace_hex),
        bytes.fromhex(span_hex),
        bool(int(flags, 16) & 1),
        (tracestate or "").strip(),
    )


@dataclass
class SpanInput:
    """What one finished engine request contributes to its span: its metrics record (the
    same token counts and latencies) plus what only the span carries."""

    request_id: str
    parent: TraceContext | None
    start_ns: int
    finished: Finished
    temperature: float | None
    top_p: float | None
    max_tokens: int | None


def kv(key: str, value: Any) -> KeyValue:
    """An OTLP attribute of the value's type."""
    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = AnyValue(double_value=value)
    else:
        any_value = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=any_value)


def build_span(data: SpanInput) -> Span | None:
    """The ``llm_request`` span of one request, with vLLM's attributes, in vLLM's order and
    types; ``None`` when the parent is not sampled (the SDK records nothing then)."""
    done = data.finished
    parent = data.parent
    if parent is not None and not parent.sampled:
        return None
    attributes = [
        kv("gen_ai.latency.time_to_first_token", float(done.ttft)),
        kv("gen_ai.latency.e2e", float(done.e2e)),
        kv("gen_ai.latency.time_in_queue", float(done.queue)),
        kv("gen_ai.usage.prompt_tokens", done.prompt_tokens),
        kv("gen_ai.usage.completion_tokens", done.generation_tokens),
        kv("gen_ai.latency.time_in_model_prefill", float(done.prefill)),
        kv("gen_ai.latency.time_in_model_decode", float(done.decode)),
        kv("gen_ai.latency.time_in_model_inference", float(done.inference)),
        kv("gen_ai.request.id", data.request_id),
    ]
    # vLLM sets the sampling parameters only when truthy (temperature 0.0 is left out); each
    # sequence is an engine request of its own, so n is 1 even when the request asked more.
    if data.top_p:
        attributes.append(kv("gen_ai.request.top_p", float(data.top_p)))
    if data.max_tokens:
        attributes.append(kv("gen_ai.request.max_tokens", int(data.max_tokens)))
    if data.temperature:
        attributes.append(kv("gen_ai.request.temperature", float(data.temperature)))
    attributes.append(kv("gen_ai.request.n", 1))
    return Span(
        trace_id=parent.trace_id if parent else os.urandom(16),
        span_id=os.urandom(8),
        parent_span_id=parent.span_id if parent else b"",
        trace_state=parent.state if parent else "",
        flags=_HAS_IS_REMOTE | (_IS_REMOTE if parent else 0),
        name="llm_request",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=data.start_ns,
        end_time_unix_nano=data.start_ns + int(done.e2e * 1e9),
        attributes=attributes,
    )


def resource(service_name: str | None, extra: dict[str, str] | None = None) -> Resource:
    """The resource vLLM's tracer provider has: the SDK's (``telemetry.sdk.*``, a
    ``service.instance.id``, ``$OTEL_RESOURCE_ATTRIBUTES``, ``$OTEL_SERVICE_NAME``), then
    vLLM's own attributes, then the SDK's default ``service.name``."""
    try:
        sdk_version = metadata.version("opentelemetry-proto")
    except metadata.PackageNotFoundError:
        sdk_version = "1.27.0"
    attributes: dict[str, str] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "service.instance.id": str(uuid.uuid4()),
    }
    for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, eq, value = item.partition("=")
        if eq and key.strip():
            attributes[key.strip()] = value.strip()
    name = service_name or os.environ.get("OTEL_SERVICE_NAME")
    if name:
        attributes["service.name"] = name
    attributes["vllm.instrumenting_module_name"] = "vllm.llm_engine"
    attributes["vllm.process_id"] = str(os.getpid())
    attributes.update(extra or {})
    attributes.setdefault("service.name", "unknown_service:python")
    return Resource(attributes=[kv(k, v) for k, v in attributes.items()])


class SpanExporter:
    """Exports spans from a background thread, batching what queued up meanwhile.

    :param endpoint: the OTLP endpoint: ``host:port`` or ``http://host:port`` for gRPC; for
        ``http/protobuf`` a URL whose path defaults to ``/v1/traces``.
    :param protocol: ``grpc`` or ``http/protobuf``, as ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``.
    :param service_name: the resource's ``service.name`` (``None``: as the SDK decides).
    """

    def __init__(self, endpoint: str, protocol: str, service_name: str | None) -> None:
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"Unsupported OTLP protocol '{protocol}' is configured")
        self._queue: queue.SimpleQueue[Span | tuple[bytes, threading.Event] | None] = (
            queue.SimpleQueue()
        )
        self.service_name = service_name
        self._resource = resource(service_name)
        self._scope = InstrumentationScope(name=SCOPE)
        self._send = (
            self._grpc_sender(endpoint) if protocol == "grpc" else self._http_sender(endpoint)
        )
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="vllm-span-exporter", daemon=True)
        self._thread.start()

    def submit(self, span: Span | None) -> None:
        """Queue one span for export (never blocks; drops it when the queue is full)."""
        if span is None:
            return
        if self._queue.qsize() >= _MAX_QUEUE:
            self.dropped += 1
            if self.dropped == 1:
                _log.warning("span queue full (%d): dropping spans", _MAX_QUEUE)
            return
        self._queue.put(span)

    def startup(self, start_ns: int, end_ns: int) -> threading.Event:
        """Export the start-up spans vLLM's instrumented functions make, over the mock's
        own start-up (``start_ns`` to ``end_ns``); the event is set once the export is done
        (or failed)."""
        from mocksup.vllm._startup_spans import startup_request

        request = startup_request(self._resource, self.service_name, start_ns, end_ns)
        done = threading.Event()
        self._queue.put((request.SerializeToString(), done))  # sent by the thread, in order
        return done

    def close(self, timeout: float = 1.2) -> None:
        """Export everything queued, then stop the thread (waits at most ``timeout``)."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning("span exporter did not drain in %.1f s; spans may be lost", timeout)

    def _run(self) -> None:
        closing = False
        while not closing:
            item = self._queue.get()
            batch: list[Span] = []
            while True:
                if item is None:
                    closing = True
                elif isinstance(item, tuple):
                    self._export_raw(*item)  # a whole request (the start-up spans)
                else:
                    batch.append(item)
                if closing or len(batch) >= _BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._export(batch)

    def _export_raw(self, payload: bytes, done: threading.Event) -> None:
        try:
            # Not waiting for a collector that refuses: the mock's ready waits for this.
            self._send(payload, False)
        except Exception as error:
            _log.warning("could not export the start-up spans: %s", error)
        finally:
            done.set()

    def _export(self, batch: list[Span]) -> None:
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=self._resource,
                    scope_spans=[ScopeSpans(scope=self._scope, spans=batch)],
                )
            ]
        )
        try:
            self._send(request.SerializeToString(), True)
        except Exception as error:
            self.failed += len(batch)
            _log.warning("could not export %d span(s): %s", len(batch), error)
        else:
            self.exported += len(batch)

    @staticmethod
    def _grpc_sender(endpoint: str) -> Callable[[bytes, bool], None]:
        import grpc

        parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        target = parts.netloc or endpoint
        channel = grpc.insecure_channel(target)
        export: grpc.UnaryUnaryMultiCallable[bytes, ExportTraceServiceResponse]
        export = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

        def send(payload: bytes, patient: bool) -> None:
            # ``patient``: retry the connection until the timeout, as the SDK's exporter does.
            export(payload, timeout=_EXPORT_TIMEOUT, wait_for_ready=patient)

        return send

    @staticmethod
    def _http_sender(endpoint: str) -> Callable[[bytes, bool], None]:
        parts = urlsplit(endpoint if "://" in endpoint else "http://" + endpoint)
        host, port = parts.hostname or "127.0.0.1", parts.port or 4318
        path = parts.path if parts.path not in ("", "/") else "/v1/traces"
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )

        def send(payload: bytes, patient: bool) -> None:
            # A refused connection fails at once over HTTP whether ``patient`` or not.
            conn = connection_class(host, port, timeout=_EXPORT_TIMEOUT)
            try:
                conn.request(
                    "POST", path, body=payload, headers={"Content-Type": "application/x-protobuf"}
                )
                response = conn.getresponse()
                response.read()
                if response.status >= 300:
                    raise OSError(f"HTTP {response.status} from {endpoint}")
            finally:
                conn.close()

        return send
