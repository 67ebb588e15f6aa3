"""A harness that is neither pytest nor unittest: a plain asyncio program.

It starts three mocks concurrently: the OTLP collector, the vLLM mock (exporting its
``llm_request`` spans to the collector) and a weather API defined right here, in the script.
Then it plays a small LLM application: it asks the weather API, asks the model about it
inside a traced CLIENT span, exports that span with the OpenTelemetry SDK, and checks what
the collector received. It prints each step and exits 0 when every check holds.

Run it from the repository root::

    python examples/plain_harness.py

It needs mocksup with its ``test`` extras (``openai``, ``opentelemetry-sdk`` and the OTLP
exporter).
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import Iterable
from typing import Any, ClassVar

import openai
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from mocksup import (
    Endpoint,
    MockOTLPCollector,
    MockServerBase,
    MockServerConfig,
    MockVLLMServer,
    ServeContext,
    start_mock_servers_async,
    stop_mock_servers,
)


class MockWeatherServer(MockServerBase):
    """A tiny weather API: ``GET /weather?city=X`` answers a fixed temperature.

    Defined in the script itself: the child process imports this file under another name
    (as multiprocessing does), so the code under ``if __name__ == "__main__"`` does not run
    there.
    """

    default_name: ClassVar[str] = "weather"
    temperature_c: float = 21.0

    def serve(self, ctx: ServeContext) -> None:
        from urllib.parse import parse_qs

        from mocksup.serving import bind_tcp, serve_wsgi

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            city = parse_qs(environ.get("QUERY_STRING", "")).get("city", ["?"])[0]
            body = json.dumps({"city": city, "temperature_c": self.temperature_c}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]

        sock = bind_tcp(self.host, self.port)
        port = sock.getsockname()[1]
        with serve_wsgi(app, sock):
            ctx.ready(port=port)
            ctx.wait()


MOCK_SERVERS = [
    MockServerConfig(
        name="otlp", server_class=MockOTLPCollector, init_kwargs={"port": 0, "grpc_port": 0}
    ),
    MockServerConfig(
        name="vllm",
        server_class=MockVLLMServer,
        init_kwargs={
            "port": 0,
            "otlp_traces_endpoint": Endpoint("otlp", "otlp_grpc"),
            "otel_service_name": "vllm",  # as OTEL_SERVICE_NAME=vllm names a real vLLM's spans
        },
    ),
    MockServerConfig(
        name="weather", server_class=MockWeatherServer, init_kwargs={"temperature_c": 18.5}
    ),
]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


async def play(servers: dict[str, MockServerBase]) -> list[str]:
    """Act as the application under test; return the checks that failed."""
    collector, vllm, weather = servers["otlp"], servers["vllm"], servers["weather"]
    assert isinstance(collector, MockOTLPCollector) and isinstance(vllm, MockVLLMServer)
    failures: list[str] = []

    report = await asyncio.to_thread(get_json, f"http://127.0.0.1:{weather.port}/weather?city=Oslo")
    print(f"weather: {report['city']} {report['temperature_c']} C")

    provider = TracerProvider(resource=Resource.create({"service.name": "plain-harness"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.http_endpoint + "/v1/traces"))
    )
    tracer = provider.get_tracer("plain-harness")
    async with openai.AsyncOpenAI(base_url=vllm.base_url, api_key="EMPTY") as client:
        with tracer.start_as_current_span("chat mock-model", kind=SpanKind.CLIENT) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            reply = await client.chat.completions.create(
                model="mock-model",
                messages=[{"role": "user", "content": f"Is {report['temperature_c']} C warm?"}],
                max_tokens=12,
                extra_headers=headers,
            )
            trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    assert reply.usage is not None
    print(f"chat: {reply.choices[0].message.content!r} ({reply.usage.total_tokens} tokens)")

    spans = await asyncio.to_thread(collector.wait_for_spans, trace_id=trace_id, count=2)
    for item in spans:
        print(f"collector got: {item.name!r} {item.kind} from {item.service_name}")
    trace = await asyncio.to_thread(collector.trace, trace_id)
    roots = [s.name for s in trace.roots]
    children = [s.name for root in trace.roots for s in trace.children(root)]
    print(f"trace {trace_id}: {roots} -> {children}")
    if roots != ["chat mock-model"] or children != ["llm_request"]:
        failures.append("llm_request is not the child of the harness's span")
    tokens = [s.attributes["gen_ai.usage.completion_tokens"] for s in trace.find("llm_request")]
    if tokens != [reply.usage.completion_tokens]:
        failures.append(f"llm_request says {tokens} completion tokens, the reply {reply.usage}")
    return failures


async def main() -> int:
    servers = await start_mock_servers_async(MOCK_SERVERS)
    try:
        for name, server in servers.items():
            print(f"started {name} (pid {server.pid}) on port {server.port}")
        failures = await play(servers)
    finally:
        # Stopping blocks while the children exit (well under a second): off the loop.
        await asyncio.to_thread(stop_mock_servers, servers)
    for failure in failures:
        print(f"FAILED: {failure}")
    print("OK" if not failures else "FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
