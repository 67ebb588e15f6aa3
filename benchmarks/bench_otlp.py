"""Benchmark MockOTLPCollector: intake rates, query time and memory, against the real child.

Run from the repository root::

    python benchmarks/bench_otlp.py                  # every scenario (about a minute)
    python benchmarks/bench_otlp.py --quick          # fewer requests per scenario
    python benchmarks/bench_otlp.py --amplification  # peak memory under hostile bodies

``--amplification`` sends, to a fresh collector per case and in both modes, the bodies that
made earlier versions balloon (issue 8), and prints each child's peak resident memory
(``VmHWM``, Linux) with the answers it gave.

Intake: OTLP/HTTP protobuf, OTLP/HTTP JSON and OTLP/gRPC; 512-span batches and 1-span
requests; 1 and 4 concurrent clients (threads keeping one connection or channel each, sending
pre-encoded bodies so the client costs little). Every run checks that the collector stored
exactly the spans sent. Then the time ``spans()`` takes over 100k stored spans (end to end:
control API query, protobuf transfer, Python objects), the time the control API's JSON
answer takes to arrive whole (``GET /mocksup/spans``, as a harness in another language asks
it) and to decode, and the child's memory per 100k spans.
Spans carry 10 string attributes (about 360 bytes each in protobuf).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc
import psutil
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from mocksup.otlp import MockOTLPCollector

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def make_request(spans: int, seed: int) -> ExportTraceServiceRequest:
    """One export of ``spans`` spans with 10 string attributes each."""
    items = []
    for i in range(spans):
        n = seed * 100_000 + i
        items.append(
            Span(
                trace_id=n.to_bytes(16, "big"),
                span_id=(n + 1).to_bytes(8, "big"),
                parent_span_id=(n + 2).to_bytes(8, "big") if i % 4 else b"",
                name=f"operation-{i % 16}",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=1_700_000_000_000_000_000 + n,
                end_time_unix_nano=1_700_000_000_001_000_000 + n,
                attributes=[
                    KeyValue(key=f"attribute.{k}", value=AnyValue(string_value=f"value-{k}-{i}"))
                    for k in range(10)
                ],
            )
        )
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value="bench"))]
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=resource,
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="bench"), spans=items)],
            )
        ]
    )


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of a request (proto3 JSON with hex ids), built off the clock."""
    doc = json_format.MessageToDict(request)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(doc).encode()


def http_client(
    collector: MockOTLPCollector, body: bytes, content_type: str, count: int, errors: list[str]
) -> None:
    conn = http.client.HTTPConnection(collector.host, collector.port, timeout=60)
    headers = {"Content-Type": content_type}
    try:
        for _ in range(count):
            conn.request("POST", "/v1/traces", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
    finally:
        conn.close()


def grpc_client(
    collector: MockOTLPCollector, body: bytes, content_type: str, count: int, errors: list[str]
) -> None:
    target = f"{collector.host}:{collector.grpc_port}"
    with grpc.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        call = channel.unary_unary(TRACE_EXPORT)
        for _ in range(count):
            try:
                call(body, timeout=60)
            except grpc.RpcError as error:
                errors.append(str(error.code()))


def run_intake(
    collector: MockOTLPCollector,
    transport: str,
    body: bytes,
    *,
    spans_per_request: int,
    clients: int,
    requests_total: int,
) -> dict[str, Any]:
    collector.clear()
    per_client = max(1, requests_total // clients)
    errors: list[str] = []
    target = grpc_client if transport == "grpc" else http_client
    content_type = "application/json" if transport == "http/json" else "application/x-protobuf"
    threads = [
        threading.Thread(target=target, args=(collector, body, content_type, per_client, errors))
        for _ in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    sent = per_client * clients * spans_per_request
    received = collector.stats()["items"]["traces"]
    return {
        "requests": per_client * clients,
        "elapsed": elapsed,
        "spans_per_s": sent / elapsed,
        "requests_per_s": per_client * clients / elapsed,
        "check": "ok"
        if received == sent and not errors
        else f"FAIL {received}/{sent} {errors[:3]}",
    }


def json_get(collector: MockOTLPCollector, target: str) -> tuple[float, int, float]:
    """GET a JSON control route as a client in any language would: seconds to the last
    byte, the body's size, and the seconds ``json.loads`` takes then (the cyclic garbage
    collector paused, as it would only slow Python down)."""
    import gc

    conn = http.client.HTTPConnection(collector.host, collector.port, timeout=300)
    started = time.perf_counter()
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        chunks = []
        while chunk := response.read1(1 << 20):
            chunks.append(chunk)
    finally:
        conn.close()
    last_byte = time.perf_counter() - started
    body = b"".join(chunks)
    gc.disable()
    try:
        started = time.perf_counter()
        json.loads(body)
        decoded = time.perf_counter() - started
    finally:
        gc.enable()
    return last_byte, len(body), decoded


def _field(number: int, payload: bytes) -> bytes:
    size, length = len(payload), bytearray()
    while size > 0x7F:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return bytes([number << 3 | 2]) + bytes(length) + payload


def _peak_rss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _post(collector: MockOTLPCollector, body: bytes, headers: dict[str, str], path: str) -> int:
    conn = http.client.HTTPConnection(collector.host, collector.port, timeout=300)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return -1  # refused before the body was sent, and the connection closed
    finally:
        conn.close()


def amplification() -> None:
    """Peak RSS of a fresh child for each hostile case, in both modes."""
    import gzip

    json_rs = gzip.compress(b'{"resourceSpans":[' + b"{}," * (22 << 20) + b"{}]}", 9)
    big_attr = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                name="big",
                                attributes=[
                                    KeyValue(
                                        key="prompt",
                                        value=AnyValue(string_value="x" * (30 << 20)),
                                    )
                                ],
                            )
                        ]
                    )
                ]
            )
        ]
    ).SerializeToString()
    big_attr_gz = gzip.compress(big_attr, 9)
    pb = "application/x-protobuf"
    cases: list[tuple[str, Any]] = [
        (
            "gzip JSON, 22M empty resourceSpans (64 MiB inflated)",
            ("http", json_rs, "application/json", {"Content-Encoding": "gzip"}, 1),
        ),
        (
            "protobuf, empty ResourceSpans filling the body limit",
            ("http-fill", b"\x0a\x00", pb, {}, 1),
        ),
        (
            "protobuf over gRPC, empty ResourceSpans filling the limit",
            ("grpc-fill", b"\x0a\x00", pb, {}, 1),
        ),
        ("protobuf, empty spans filling the body limit", ("http-spans", b"\x12\x00", pb, {}, 1)),
        (
            "60 gzip requests of one span with a 30 MiB attribute",
            ("http", big_attr_gz, pb, {"Content-Encoding": "gzip"}, 60),
        ),
        (
            "100 requests with 60 KB of headers to a 404 path",
            ("http-404", b"", pb, {f"x-h{i}": "v" * 6000 for i in range(10)}, 100),
        ),
    ]
    print(f"{'case':<58} {'mode':<9} {'answers':<22} {'peak RSS':>9} {'stored':>7} {'dropped':>7}")
    for label, (kind, body, content_type, headers, repeat) in cases:
        for compat in ("collector", "spec"):
            with MockOTLPCollector(port=0, grpc_port=0, compat=compat) as collector:
                limits = collector.limits()
                answers = _send_case(collector, (kind, body, content_type, headers, repeat), limits)
                stats = collector.stats()
                shown = ", ".join(f"{n}x {a}" for a, n in sorted(answers.items(), key=str))
                peak = _peak_rss(collector.pid or 0)
                print(
                    f"{label:<58} {compat:<9} {shown:<22} {peak:>6.0f} MiB "
                    f"{stats['items']['traces']:>7} {stats['dropped']['traces']:>7}"
                )


def _send_case(collector: MockOTLPCollector, case: Any, limits: Any) -> dict[Any, int]:
    kind, body, content_type, headers, repeat = case
    answers: dict[Any, int] = {}
    if kind in ("http-fill", "http-spans", "grpc-fill"):
        size = limits.grpc_max_message if kind == "grpc-fill" else limits.max_body_size
        if kind == "http-spans":
            scope = body * ((size - 16) // 2)
            body = _field(1, _field(2, scope))
        else:
            body = body * (size // 2)
    for _ in range(repeat):
        if kind == "grpc-fill":
            with grpc.insecure_channel(
                f"{collector.host}:{collector.grpc_port}",
                options=[("grpc.max_send_message_length", 128 << 20)],
            ) as channel:
                try:
                    channel.unary_unary(TRACE_EXPORT)(body, timeout=300)
                    answer: Any = "OK"
                except grpc.RpcError as error:
                    answer = error.code().name
        else:
            path = "/nope" if kind == "http-404" else "/v1/traces"
            answer = _post(collector, body, {"Content-Type": content_type, **headers}, path)
        answers[answer] = answers.get(answer, 0) + 1
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per scenario")
    parser.add_argument(
        "--amplification", action="store_true", help="peak memory under hostile bodies"
    )
    args = parser.parse_args()
    if args.amplification:
        amplification()
        return
    scale = 0.25 if args.quick else 1.0

    batch = make_request(512, 1)
    single = make_request(1, 2)
    bodies = {
        ("http/protobuf", 512): batch.SerializeToString(),
        ("http/json", 512): otlp_json(batch),
        ("grpc", 512): batch.SerializeToString(),
        ("http/protobuf", 1): single.SerializeToString(),
        ("http/json", 1): otlp_json(single),
        ("grpc", 1): single.SerializeToString(),
    }
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(
        f"batch: 512 spans, {len(bodies['http/protobuf', 512]):,} B protobuf, "
        f"{len(bodies['http/json', 512]):,} B JSON"
    )
    collector = MockOTLPCollector(port=0, grpc_port=0, max_items=None, max_requests=1000)
    with collector:  # intake
        print()
        print(
            f"{'transport':<14} {'spans/req':>9} {'clients':>7} {'requests':>8} "
            f"{'req/s':>8} {'spans/s':>10}  check"
        )
        for (transport, size), body in bodies.items():
            for clients in (1, 4):
                if size == 512:
                    total = int((120 if transport == "http/json" else 400) * scale)
                else:
                    total = int(3000 * scale)
                result = run_intake(
                    collector,
                    transport,
                    body,
                    spans_per_request=size,
                    clients=clients,
                    requests_total=max(total, 4),
                )
                print(
                    f"{transport:<14} {size:>9} {clients:>7} {result['requests']:>8} "
                    f"{result['requests_per_s']:>8,.0f} {result['spans_per_s']:>10,.0f}  "
                    f"{result['check']}"
                )

    # Memory and query time over 100k stored spans, on a fresh collector so the intake runs
    # freed memory does not hide the store's.
    collector = MockOTLPCollector(port=0, grpc_port=0, max_items=None)
    with collector:
        child = psutil.Process(collector.pid)
        before = child.memory_info().rss
        stored = run_intake(
            collector,
            "grpc",
            bodies["grpc", 512],
            spans_per_request=512,
            clients=2,
            requests_total=196,
        )
        count = collector.stats()["items"]["traces"]
        after = child.memory_info().rss
        print()
        print(
            f"stored {count:,} spans ({stored['check']}); child RSS {before / 2**20:.1f} MiB "
            f"-> {after / 2**20:.1f} MiB: {(after - before) / 2**20 / count * 1e5:.1f} MiB "
            "per 100k spans"
        )
        for attempt in range(3):
            started = time.perf_counter()
            spans = collector.spans()
            elapsed = time.perf_counter() - started
            print(f"spans() over {len(spans):,} stored spans: {elapsed:.2f} s (run {attempt + 1})")
            del spans
        started = time.perf_counter()
        spans = collector.spans()
        attributes = [span.attributes for span in spans]
        print(
            f"spans() and every span's attributes ({len(attributes):,} dicts): "
            f"{time.perf_counter() - started:.2f} s"
        )
        del spans, attributes
        started = time.perf_counter()
        filtered = collector.spans("operation-3")
        print(
            f"spans('operation-3') over {count:,}: {len(filtered):,} spans in "
            f"{time.perf_counter() - started:.2f} s"
        )
        started = time.perf_counter()
        waited = collector.wait_for_spans(count=count, timeout=30)
        print(
            f"wait_for_spans(count={len(waited):,}), already satisfied: "
            f"{time.perf_counter() - started:.2f} s"
        )
        del waited
        for attempt in range(3):
            last_byte, size, decoded = json_get(collector, "/mocksup/spans")
            print(
                f"control API GET /mocksup/spans, JSON ({size / 1e6:.1f} MB): last byte after "
                f"{last_byte:.2f} s, json.loads {decoded:.2f} s more (run {attempt + 1})"
            )
        print(f"child RSS after the queries: {child.memory_info().rss / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
