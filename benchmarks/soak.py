"""Soak the mocks: full-speed senders for a bounded time, then check that nothing was lost.

Run from the repository root::

    python benchmarks/soak.py                  # 20 s per phase
    python benchmarks/soak.py --seconds 60     # longer

Phase 1, the collector: N sender processes at full speed, half over OTLP/HTTP protobuf
(kept-alive connections), half over OTLP/gRPC, each sending 64-span batches. Afterwards the
spans acknowledged by the collector must equal the spans it stored plus those it counted as
dropped (its memory cap), exactly. Phase 2, the vLLM mock: M client processes send chat
completions, half streamed, with the mock exporting its ``llm_request`` spans to the
collector. Afterwards there must be no error, and the token counts must agree three ways:
the sum over the responses' ``usage``, the ``/metrics`` counters, and the spans' attributes.

Prints figures and the checks; exits 1 if a check fails. Asserts nothing else.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil

import mocksup
from mocksup.otlp import MockOTLPCollector
from mocksup.vllm import MockVLLMServer

BATCH = 64
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _batch(sender: int, number: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    attribute = resource.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", f"soak-{sender}"
    scope = resource.scope_spans.add()
    for i in range(BATCH):
        span = scope.spans.add()
        n = (sender << 40) | (number << 8) | i
        span.trace_id, span.span_id = n.to_bytes(16, "big"), n.to_bytes(8, "big")
        span.name, span.kind = f"op-{i % 8}", 2
        span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
        for key in ("http.method", "http.route", "user.id"):
            extra = span.attributes.add()
            extra.key, extra.value.string_value = key, f"{key}-{i}"
    return request.SerializeToString()


def otlp_sender(index: int, http_port: int, grpc_port: int, seconds: float, out: Any) -> None:
    """Send batches until the time is up; report (acknowledged spans, refused requests)."""
    bodies = [_batch(index, n) for n in range(16)]
    deadline = time.monotonic() + seconds
    acked = refused = sent = 0
    if index % 2:
        import grpc

        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        export = channel.unary_unary(
            TRACE_EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        while time.monotonic() < deadline:
            body = bodies[sent % len(bodies)]  # repeats are stored again: nothing dedups
            sent += 1
            try:
                export(body, timeout=30)
                acked += BATCH
            except grpc.RpcError:
                refused += 1
        channel.close()
    else:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        headers = {"Content-Type": "application/x-protobuf"}
        while time.monotonic() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            conn.request("POST", "/v1/traces", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                acked += BATCH
            else:
                refused += 1
        conn.close()
    out.put((acked, refused))


def vllm_client(index: int, port: int, seconds: float, out: Any) -> None:
    """Chat completions until the time is up; report requests, errors and token sums."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    deadline = time.monotonic() + seconds
    requests = errors = prompt = completion = 0
    while time.monotonic() < deadline:
        stream = requests % 2 == 1
        body: dict[str, Any] = {
            "model": "mock-model",
            "messages": [{"role": "user", "content": f"Tell me about soak test {requests}"}],
            "max_tokens": 32,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        data = response.read()
        requests += 1
        if response.status != 200:
            errors += 1
            continue
        if stream:
            events = [e[6:] for e in data.decode().split("\n\n") if e.startswith("data: ")]
            usage = json.loads(events[-2])["usage"] if events[-1] == "[DONE]" else None
        else:
            usage = json.loads(data)["usage"]
        if usage is None:
            errors += 1
            continue
        prompt += usage["prompt_tokens"]
        completion += usage["completion_tokens"]
    conn.close()
    out.put((requests, errors, prompt, completion))


def run(target: Any, count: int, args: tuple[Any, ...]) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [context.Process(target=target, args=(i, *args, out)) for i in range(count)]
    for process in processes:
        process.start()
    results = [out.get() for _ in processes]
    for process in processes:
        process.join()
    return results


def metric(text: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def soak_otlp(collector: MockOTLPCollector, senders: int, seconds: float) -> bool:
    assert collector.grpc_port is not None
    child = psutil.Process(collector.pid)
    collector.clear()  # the vLLM mock's start-up spans arrived before its start returned
    started = time.monotonic()
    results = run(otlp_sender, senders, (collector.port, collector.grpc_port, seconds))
    took = time.monotonic() - started
    acked = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    stats = collector.stats()
    stored, dropped = stats["items"]["traces"], stats["dropped"]["traces"]
    ok = acked == stored + dropped
    print(f"collector: {senders} senders (HTTP and gRPC) for {seconds:g} s")
    print(f"  acknowledged {acked:,} spans ({acked / took:,.0f} spans/s), refused requests "
          f"{refused}")  # fmt: skip
    print(f"  stored {stored:,} + dropped {dropped:,} = {stored + dropped:,}  "
          f"{'OK' if ok else 'MISMATCH'}")  # fmt: skip
    print(f"  child RSS {child.memory_info().rss / 2**20:,.0f} MiB")
    return ok and refused == 0


def soak_vllm(
    vllm: MockVLLMServer, collector: MockOTLPCollector, clients: int, seconds: float
) -> bool:
    collector.clear()
    results = run(vllm_client, clients, (vllm.port, seconds))
    requests = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    prompt = sum(r[2] for r in results)
    completion = sum(r[3] for r in results)
    conn = http.client.HTTPConnection("127.0.0.1", vllm.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    metrics = (
        int(metric(text, "vllm:prompt_tokens_total")),
        int(metric(text, "vllm:generation_tokens_total")),
    )
    spans = collector.wait_for_spans("llm_request", count=requests, timeout=60)
    traced = (
        sum(int(s.attributes["gen_ai.usage.prompt_tokens"]) for s in spans),
        sum(int(s.attributes["gen_ai.usage.completion_tokens"]) for s in spans),
    )
    ok = errors == 0 and (prompt, completion) == metrics == traced and len(spans) == requests
    print(f"vLLM mock: {clients} clients (half streamed) for {seconds:g} s")
    print(f"  {requests:,} requests ({requests / seconds:,.0f}/s), {errors} errors")
    print(f"  tokens (prompt, completion): responses {(prompt, completion)}, /metrics "
          f"{metrics}, spans {traced}  {'OK' if ok else 'MISMATCH'}")  # fmt: skip
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--senders", type=int, default=4, help="OTLP sender processes")
    parser.add_argument("--clients", type=int, default=4, help="vLLM client processes")
    args = parser.parse_args()
    print(f"mocksup {mocksup.__version__}; load average at start: {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")  # fmt: skip
    configs = mocksup.harness.default_configs()
    with mocksup.start_all(configs) as servers:
        collector = servers.server_of(MockOTLPCollector)
        vllm = servers.server_of(MockVLLMServer)
        ok = soak_otlp(collector, args.senders, args.seconds)
        ok = soak_vllm(vllm, collector, args.clients, args.seconds) and ok
    print("all checks passed" if ok else "A CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
