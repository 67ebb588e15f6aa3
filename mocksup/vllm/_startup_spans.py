"""The spans vLLM's instrumented start-up functions export when tracing is on.

vLLM decorates its loading steps with ``@instrument(span_name=...)``; once its tracer is set
up (in the API server, then in the engine-core and worker processes, each with its own
resource naming ``vllm.process_kind`` and ``vllm.process_name``), each step exports a span
with ``code.*`` attributes, the processes' spans joined into one trace through the
``traceparent`` vLLM hands its child processes. The mock exports the same tree, with vLLM's
names, scopes and nesting, spread over its own start-up time (it loads no model, so the
timings are its own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from mocksup.vllm._tracing import kv, resource

__all__ = ["STARTUP_SPANS", "startup_request"]


@dataclass(frozen=True)
class _Step:
    name: str
    #: The instrumented function's module (the scope) and qualified name.
    module: str
    function: str
    line: int
    #: "api_server", "engine_core" or "worker".
    process: str
    #: Index of the parent step (-1: the root).
    parent: int
    #: Start and end, as fractions of the start-up interval.
    span: tuple[float, float]


#: vLLM 0.33's instrumented start-up steps, in the order they run.
STARTUP_SPANS: tuple[_Step, ...] = (
    _Step("Overall Loading", "vllm.v1.engine.core_client", "EngineCoreClient.make_async_mp_client",
          139, "api_server", -1, (0.0, 1.0)),
    _Step("AsyncMPClient init", "vllm.v1.engine.core_client", "AsyncMPClient.__init__", 1152,
          "api_server", 0, (0.02, 0.98)),
    _Step("EngineCoreProc init", "vllm.v1.engine.core", "EngineCoreProc.__init__", 1171,
          "engine_core", 1, (0.05, 0.95)),
    _Step("Executor init", "vllm.v1.executor.abstract", "Executor.__init__", 105,
          "engine_core", 2, (0.08, 0.6)),
    _Step("Worker init", "vllm.v1.worker.worker_base", "WorkerWrapperBase.init_worker", 272,
          "worker", 3, (0.1, 0.58)),
    _Step("Init device", "vllm.v1.worker.gpu_worker", "Worker.init_device", 448,
          "worker", 4, (0.12, 0.2)),
    _Step("Load model", "vllm.model_executor.model_loader.base_loader",
          "BaseModelLoader.load_model", 62, "worker", 4, (0.22, 0.56)),
    _Step("Initialize model", "vllm.model_executor.model_loader.utils", "initialize_model", 73,
          "worker", 6, (0.23, 0.3)),
    _Step("Load weights", "vllm.model_executor.model_loader.default_loader",
          "DefaultModelLoader.load_weights", 489, "worker", 6, (0.31, 0.55)),
    _Step("Prepare model", "vllm.v1.engine.core", "EngineCore._initialize_kv_caches", 250,
          "engine_core", 2, (0.62, 0.93)),
    _Step("Allocate KV cache", "vllm.v1.worker.gpu_worker", "Worker.initialize_from_config",
          865, "worker", 9, (0.64, 0.75)),
    _Step("Warmup (GPU)", "vllm.v1.worker.gpu_worker", "Worker.compile_or_warm_up_model", 932,
          "worker", 9, (0.76, 0.92)),
)  # fmt: skip

_PROCESSES = {
    "engine_core": ("vllm.engine_core", "EngineCore"),
    "worker": ("vllm.worker", "Worker_0"),
}


def startup_request(
    api_server: Resource, service_name: str | None, start_ns: int, end_ns: int
) -> ExportTraceServiceRequest:
    """One export request holding every start-up span, one resource per process."""
    trace_id = os.urandom(16)
    span_ids = [os.urandom(8) for _ in STARTUP_SPANS]
    length = max(end_ns - start_ns, len(STARTUP_SPANS))
    by_process: dict[str, dict[str, list[Span]]] = {}
    for i, step in enumerate(STARTUP_SPANS):
        attributes = [
            kv("code.function", step.function),
            kv("code.namespace", step.module),
            kv("code.filepath", step.module.replace(".", "/") + ".py"),
            kv("code.lineno", str(step.line)),
        ]
        span = Span(
            trace_id=trace_id,
            span_id=span_ids[i],
            parent_span_id=span_ids[step.parent] if step.parent >= 0 else b"",
            # A span whose parent came from another process has a remote parent.
            flags=0x100 | (0x200 if _remote(step) else 0),
            name=step.name,
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=start_ns + int(step.span[0] * length),
            end_time_unix_nano=start_ns + int(step.span[1] * length),
            attributes=attributes,
        )
        by_process.setdefault(step.process, {}).setdefault(step.module, []).append(span)
    resource_spans = []
    for process, scopes in by_process.items():
        if process == "api_server":
            own = api_server
        else:
            module, name = _PROCESSES[process]
            own = _worker_resource(service_name, module, process, name)
        resource_spans.append(
            ResourceSpans(
                resource=own,
                scope_spans=[
                    ScopeSpans(scope=InstrumentationScope(name=module), spans=spans)
                    for module, spans in scopes.items()
                ],
            )
        )
    return ExportTraceServiceRequest(resource_spans=resource_spans)


def _remote(step: _Step) -> bool:
    return step.parent >= 0 and STARTUP_SPANS[step.parent].process != step.process


def _worker_resource(service_name: str | None, module: str, kind: str, name: str) -> Resource:
    own = resource(
        service_name,
        {
            "vllm.instrumenting_module_name": module,
            "vllm.process_kind": kind,
            "vllm.process_name": name,
        },
    )
    return own
