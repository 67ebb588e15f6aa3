"""The application under test: one chat completion through the ``openai`` client, traced.

It runs in its own process and knows nothing of mocksup: the standard environment variables
point it at its LLM (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``) and its telemetry backend
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_SERVICE_NAME``).
It wraps the call in a CLIENT span, propagates its context to the server in the request
headers, records the token usage as a metric and a log record, flushes everything, and
prints a JSON summary of what it did on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import openai
from opentelemetry import propagate
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

SCOPE = "e2e.app"


def exporters() -> tuple[Any, Any, Any]:
    """Span, metric and log exporters for ``OTEL_EXPORTER_OTLP_PROTOCOL``; each reads its
    endpoint from the environment."""
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc import (
            _log_exporter,
            metric_exporter,
            trace_exporter,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http import (
            _log_exporter,
            metric_exporter,
            trace_exporter,
        )
    return (
        trace_exporter.OTLPSpanExporter(),
        metric_exporter.OTLPMetricExporter(),
        _log_exporter.OTLPLogExporter(),
    )


def main() -> int:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "Say hello"
    model = os.environ.get("APP_MODEL", "mock-model")
    span_exporter, metric_exporter, log_exporter = exporters()
    resource = Resource.create()  # service.name from OTEL_SERVICE_NAME
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(metric_exporter)]
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    tracer = tracer_provider.get_tracer(SCOPE)
    token_usage = meter_provider.get_meter(SCOPE).create_histogram(
        "gen_ai.client.token.usage", unit="{token}", description="Tokens used per request."
    )
    logger = logger_provider.get_logger(SCOPE)
    client = openai.OpenAI(max_retries=0)
    try:
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "vllm",
            "gen_ai.request.model": model,
        }
        with tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)  # traceparent: the server's span becomes our child
            response = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=16,
                extra_headers=headers,
            )
            assert response.usage is not None
            usage = response.usage
            span.set_attributes(
                {
                    "gen_ai.response.id": response.id,
                    "gen_ai.response.model": response.model,
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                }
            )
            for kind, count in (
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
            ):
                token_usage.record(count, {**attributes, "gen_ai.token.type": kind})
            context = span.get_span_context()
            logger.emit(
                LogRecord(
                    trace_id=context.trace_id,
                    span_id=context.span_id,
                    trace_flags=context.trace_flags,
                    severity_number=SeverityNumber.INFO,
                    severity_text="INFO",
                    body=f"chat completion {response.id} used {usage.total_tokens} tokens",
                    attributes={"gen_ai.response.id": response.id},
                )
            )
    finally:
        client.close()
        # Shutting down flushes: spans, the metric reader's last collection, log records.
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()
    summary = {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "response_id": response.id,
        "content": response.choices[0].message.content,
        "usage": usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
