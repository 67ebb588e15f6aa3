"""Benchmark MockVLLMServer: throughput at zero latency, idle memory, TTFT/ITL accuracy,
structured output, and how long a fleet of replicas takes to start.

Run from the repository root: ``python benchmarks/bench_vllm.py`` (``--only non-streamed``:
completions, chat and chat with a JSON schema; ``--only fleet``: 1 and 8 replicas started).
Clients are separate processes using http.client, each on one kept-alive connection as real
clients are (plus a row with a new connection per request), so the figures measure the mock,
not the GIL of the benchmark. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil

from mocksup.vllm import MockVLLMServer

NON_STREAM = {"model": "mock-model", "prompt": "Say hello", "max_tokens": 16}
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 16}  # fmt: skip
#: A schema of the kind apps extract with: nested object, array, enum, formats, bounds.
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "format": "email"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4},
        "address": {"type": "object", "properties": {"city": {"type": "string"},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["city"]},
    },
    "required": ["name", "age", "role"],
}  # fmt: skip
STRUCTURED = {**CHAT, "max_tokens": 200,
              "response_format": {"type": "json_schema",
                                  "json_schema": {"name": "person", "schema": SCHEMA}}}  # fmt: skip
BODIES = {"completions": ("/v1/completions", NON_STREAM), "chat": ("/v1/chat/completions", CHAT),
          "structured": ("/v1/chat/completions", STRUCTURED)}  # fmt: skip
STREAM = {"model": "mock-model", "prompt": "Say hello", "max_tokens": 1000, "ignore_eos": True,
          "stream": True}  # fmt: skip
HEADERS = {"Content-Type": "application/json"}


def _send(conn: http.client.HTTPConnection, body: bytes, path: str = "/v1/completions") -> bytes:
    conn.request("POST", path, body=body, headers=HEADERS)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return data


def _post(port: int, body: bytes) -> bytes:
    """One request on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        return _send(conn, body)
    finally:
        conn.close()


class PerEventServer(MockVLLMServer):
    """The mock with coalescing off: every SSE event is its own write (benchmark only)."""

    def serve(self, ctx: Any) -> None:
        from mocksup.vllm import _engine

        _engine._COALESCE = 0
        super().serve(ctx)


def _client(
    *, port: int, stream: bool, keep_alive: bool, seconds: float, start_at: float, queue: object,
    kind: str = "completions",
) -> None:  # fmt: skip
    path, plain = BODIES[kind]
    body = json.dumps(STREAM if stream else plain).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.time() < start_at:
        time.sleep(0.001)  # benchmark start barrier across processes, not synchronisation
    deadline = time.monotonic() + seconds
    requests = chunks = 0
    while time.monotonic() < deadline:
        data = _send(conn, body, path) if keep_alive else _post(port, body)
        requests += 1
        if stream:
            chunks += data.count(b"data: ") - 1  # minus [DONE]
    conn.close()
    queue.put((requests, chunks))  # type: ignore[attr-defined]


def throughput(
    port: int, clients: int, stream: bool, seconds: float, keep_alive: bool = True,
    *, kind: str = "completions",
) -> tuple[float, float]:  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 1.0
    procs = [
        ctx.Process(
            target=_client,
            kwargs={
                "port": port,
                "stream": stream,
                "keep_alive": keep_alive,
                "seconds": seconds,
                "start_at": start_at,
                "queue": queue,
                "kind": kind,
            },
        )
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    requests = sum(r for r, _ in results)
    chunks = sum(c for _, c in results)
    return requests / seconds, chunks / seconds


def accuracy(port: int, ttft: float, itl: float, tokens: int, runs: int) -> dict[str, float]:
    body = json.dumps({**STREAM, "max_tokens": tokens}).encode()
    headers = {**HEADERS, "X-Mocksup-TTFT": str(ttft), "X-Mocksup-ITL": str(itl)}
    ttfts, itls = [], []
    for _ in range(runs):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start = time.monotonic()
        conn.request("POST", "/v1/completions", body=body, headers=headers)
        response = conn.getresponse()
        arrivals = []
        while True:
            line = response.fp.readline()  # chunked framing: size line, data line, ...
            if not line:
                break
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic())
            if line.startswith(b"data: [DONE]"):
                break
        conn.close()
        ttfts.append(arrivals[0] - start)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        itls.extend(gaps)
    return {
        "ttft_mean": statistics.fmean(ttfts),
        "itl_mean": statistics.fmean(itls),
        "itl_p50": statistics.median(itls),
        "itl_p99": sorted(itls)[int(len(itls) * 0.99) - 1],
    }


def fleet_start(replicas: int) -> float:
    """Seconds from asking for ``replicas`` mocks to all of them serving (then stopped)."""
    from mocksup import start_vllm_fleet

    started = time.monotonic()
    fleet = start_vllm_fleet(replicas)
    elapsed = time.monotonic() - started
    fleet.stop()
    return elapsed


def fleets(runs: int) -> None:
    """Start 1 and 8 replicas in turn, ``runs`` times each, and print the times."""
    times: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(runs):
        for replicas, seconds in times.items():
            seconds.append(fleet_start(replicas))
    print(f"{'replicas':>8}{'start s, best':>15}{'median':>9}{'worst':>8}")
    for replicas, seconds in times.items():
        print(f"{replicas:>8}{min(seconds):>15.2f}{statistics.median(seconds):>9.2f}"
              f"{max(seconds):>8.2f}")  # fmt: skip


def non_streamed(seconds: float) -> None:
    """Requests/s of plain completions, plain chat and chat with a JSON schema."""
    with MockVLLMServer(port=0) as server:
        _post(server.port, json.dumps(NON_STREAM).encode())  # warm up imports
        print(f"{'non-streamed':<26}{'clients':>8}{'requests/s':>12}")
        for kind in BODIES:
            for clients in (1, 8):
                rps, _ = throughput(server.port, clients, False, seconds, kind=kind)
                print(f"{kind:<26}{clients:>8}{rps:>12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    parser.add_argument(
        "--only", choices=("non-streamed", "fleet"), help="one part: the non-streamed kinds "
        "(completions, chat, structured output) or the start of 1 and 8 replicas",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="fleet starts of each size")
    args = parser.parse_args()
    if args.only == "non-streamed":
        non_streamed(args.seconds)
        return
    if args.only == "fleet":
        fleets(args.runs)
        return
    server = MockVLLMServer(port=0)
    with server:
        assert server.pid is not None
        child = psutil.Process(server.pid)
        _post(server.port, json.dumps(NON_STREAM).encode())  # warm up imports
        idle = child.memory_info().rss / 2**20
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"child idle RSS after start: {idle:.1f} MiB\n")
        print(f"{'mode':<26}{'clients':>8}{'requests/s':>12}{'chunks/s':>12}")
        per_event = PerEventServer(port=0, name="vllm-per-event").start()
        try:
            modes = (
                ("non-streaming", server, False, True),
                ("non-streaming, new conn.", server, False, False),
                ("streaming", server, True, True),
                ("streaming, write per event", per_event, True, True),
            )
            for mode, target, stream, keep_alive in modes:
                for clients in (1, 8):
                    rps, cps = throughput(target.port, clients, stream, args.seconds, keep_alive)
                    print(f"{mode:<26}{clients:>8}{rps:>12,.0f}{cps:>12,.0f}")
        finally:
            per_event.stop()
        rss = child.memory_info().rss / 2**20
        print(f"\nchild RSS after the runs: {rss:.1f} MiB\n")
        print(f"{'TTFT ms':>8}{'ITL ms':>8}{'TTFT mean':>11}{'err':>7}{'ITL mean':>10}{'err':>7}"
              f"{'ITL p50':>9}{'ITL p99':>9}")  # fmt: skip
        for ttft, itl in ((0.05, 0.01), (0.1, 0.02), (0.02, 0.005), (0.2, 0.05)):
            r = accuracy(server.port, ttft, itl, tokens=50, runs=5)
            print(
                f"{ttft * 1e3:>8.0f}{itl * 1e3:>8.0f}{r['ttft_mean'] * 1e3:>11.2f}"
                f"{(r['ttft_mean'] / ttft - 1) * 100:>6.1f}%{r['itl_mean'] * 1e3:>10.3f}"
                f"{(r['itl_mean'] / itl - 1) * 100:>6.1f}%{r['itl_p50'] * 1e3:>9.3f}"
                f"{r['itl_p99'] * 1e3:>9.3f}"
            )


if __name__ == "__main__":
    main()
