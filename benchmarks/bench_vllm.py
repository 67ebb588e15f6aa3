"""Benchmark MockVLLMServer: throughput at zero latency, idle memory, TTFT/ITL accuracy.

Run from the repository root: ``python benchmarks/bench_vllm.py``. Clients are separate
processes using http.client, each on one kept-alive connection as real clients are (plus a
row with a new connection per request), so the figures measure the mock, not the GIL of the
benchmark. Prints tables; asserts nothing.
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
STREAM = {"model": "mock-model", "prompt": "Say hello", "max_tokens": 1000, "ignore_eos": True,
          "stream": True}  # fmt: skip
HEADERS = {"Content-Type": "application/json"}


def _send(conn: http.client.HTTPConnection, body: bytes) -> bytes:
    conn.request("POST", "/v1/completions", body=body, headers=HEADERS)
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
    *, port: int, stream: bool, keep_alive: bool, seconds: float, start_at: float, queue: object
) -> None:
    body = json.dumps(STREAM if stream else NON_STREAM).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.time() < start_at:
        time.sleep(0.001)  # benchmark start barrier across processes, not synchronisation
    deadline = time.monotonic() + seconds
    requests = chunks = 0
    while time.monotonic() < deadline:
        data = _send(conn, body) if keep_alive else _post(port, body)
        requests += 1
        if stream:
            chunks += data.count(b"data: ") - 1  # minus [DONE]
    conn.close()
    queue.put((requests, chunks))  # type: ignore[attr-defined]


def throughput(
    port: int, clients: int, stream: bool, seconds: float, keep_alive: bool = True
) -> tuple[float, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    args = parser.parse_args()
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
