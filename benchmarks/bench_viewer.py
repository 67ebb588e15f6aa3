"""Benchmark the web viewer in headless Chromium with real volumes.

Run from the repository root (needs Playwright and a Chromium; ``MOCKSUP_CHROMIUM`` names
one other than ``/usr/bin/chromium``)::

    python benchmarks/bench_viewer.py              # 10,000 traces and a 2,000-span trace
    python benchmarks/bench_viewer.py --rounds 1   # quicker

A collector receives 10,000 traces of 4 spans (5 attributes each) and one trace of 2,000
spans over OTLP/HTTP protobuf. Each round opens a fresh page and measures, in the page's own
clock (``performance.now()``, from navigation start):

- ``load``: the live viewer fetched the feed (protobuf), decoded it and drew the trace list
  with every trace counted;
- ``list``: one redraw of the list (filter, sort and draw of the rows in view) after a
  filter change;
- ``trace``: opening the 2,000-span trace: the waterfall built (every row in the DOM) and
  painted (to the next frame);
- ``report``: the same data as a self-contained report opened from ``file://``, list drawn.

Then ingest with the viewer following live versus without: the wall time to send 100
requests of 500 spans, with a page open on the viewer and without.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from mocksup.otlp import MockOTLPCollector
from mocksup.otlp.report import collector_frames, write_report

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip
BASE_NS = 1_760_000_000_000_000_000


def span(trace: int, index: int, parent: int | None, start_us: int, dur_us: int) -> Span:
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=(trace * 4096 + index + 1).to_bytes(8, "big"),
        parent_span_id=b"" if parent is None else (trace * 4096 + parent + 1).to_bytes(8, "big"),
        name=f"operation-{index % 7}" if parent is not None else f"GET /route/{trace % 50}",
        kind=Span.SPAN_KIND_SERVER if parent is None else Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=BASE_NS + trace * 10_000_000 + start_us * 1000,
        end_time_unix_nano=BASE_NS + trace * 10_000_000 + (start_us + dur_us) * 1000,
        attributes=[KeyValue(key=f"attr.{k}", value=AnyValue(string_value=f"v{k}-{index}"))
                    for k in range(5)],
    )  # fmt: skip


def request(spans: list[Span], service: str) -> bytes:
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]
    )
    scope = ScopeSpans(scope=InstrumentationScope(name="bench"), spans=spans)
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])]
    ).SerializeToString()


def bodies(traces: int, big: int) -> list[bytes]:
    out = []
    for first in range(0, traces, 500):
        spans = []
        for t in range(first + 1, min(traces, first + 500) + 1):
            spans += [span(t, 0, None, 0, 4000), span(t, 1, 0, 100, 1500),
                      span(t, 2, 1, 200, 800), span(t, 3, 0, 2000, 1900)]  # fmt: skip
        out.append(request(spans, f"service-{first // 500 % 4}"))
    # The big trace: a root, 40 children, each with 49 grandchildren (2,000 spans).
    trace = traces + 1
    spans = [span(trace, 0, None, 0, 900_000)]
    for child in range(40):
        index = 1 + child * 50
        spans.append(span(trace, index, 0, child * 20_000, 19_000))
        spans += [
            span(trace, index + g, index, child * 20_000 + g * 300, 250) for g in range(1, 50)
        ]
    out.append(request(spans[:big], "big"))
    return out


def collector_cpu(collector: MockOTLPCollector) -> float:
    """CPU seconds the collector's process used so far."""
    assert collector.pid is not None
    times = psutil.Process(collector.pid).cpu_times()
    return float(times.user + times.system)


def send(collector: MockOTLPCollector, payloads: list[bytes]) -> float:
    conn = http.client.HTTPConnection(collector.host, collector.port, timeout=60)
    started = time.perf_counter()
    for body in payloads:
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200, answer.status
    conn.close()
    return time.perf_counter() - started


def until_counted(page: Any, traces: int) -> float:
    page.wait_for_function(
        "(n) => document.getElementById('trace-count').textContent === `${n} traces`",
        arg=traces, polling=100, timeout=120_000,
    )  # fmt: skip
    # When the list was drawn with every trace (not when this poll noticed it).
    return float(page.evaluate("window.mocksupViewer.timings.listDrawnAt"))


def round_of(
    browser: Any, collector: MockOTLPCollector, report: Path, traces: int
) -> dict[str, float]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(collector.ui_url)
    figures = {"load": until_counted(page, traces)}
    page.fill("#trace-filters [name=name]", "/route/7")
    page.wait_for_function(
        "() => document.getElementById('trace-count').textContent.includes(' of ')"
    )
    figures["list"] = page.evaluate("window.mocksupViewer.timings.list")
    big = f"{traces:032x}"
    figures["trace"] = page.evaluate(
        """(id) => new Promise((done) => {
            const started = performance.now();
            location.hash = `#/trace/${id}`;
            requestAnimationFrame(() => setTimeout(() => done(performance.now() - started)));
        })""",
        big,
    )
    rows = page.locator(".span-row").count()
    assert rows == 2000, rows
    figures["trace_build"] = page.evaluate("window.mocksupViewer.timings.trace")
    page.close()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(report.as_uri())
    figures["report"] = until_counted(page, traces)
    page.close()
    return figures


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--traces", type=int, default=10_000)
    options = parser.parse_args()
    chromium = os.environ.get("MOCKSUP_CHROMIUM", "/usr/bin/chromium")
    collector = MockOTLPCollector(port=0, grpc_port=None)
    collector.start()
    folder = Path(tempfile.mkdtemp(prefix="mocksup-bench-viewer-"))
    try:
        payloads = bodies(options.traces - 1, 2000)
        send(collector, payloads)
        stats = collector.stats()["items"]
        print(f"{options.traces} traces, {stats['traces']} spans stored")
        report = write_report(folder / "report.html", collector_frames(collector))
        print(f"report: {report.stat().st_size / 1e6:.1f} MB")
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=ARGS)
            rounds = [
                round_of(browser, collector, report, options.traces) for _ in range(options.rounds)
            ]
            for key in rounds[0]:
                values = [r[key] for r in rounds]
                print(f"{key:12} median {statistics.median(values):7.0f} ms   "
                      f"({', '.join(f'{v:.0f}' for v in values)})")  # fmt: skip
            ingest(browser, collector)
            browser.close()
    finally:
        collector.stop()


def ingest(browser: Any, collector: MockOTLPCollector) -> None:
    """Sending with and without a viewer following live: the wall time of 100 requests."""
    load = [request([span(900_000 + r * 500 + i, 0, None, 0, 10) for i in range(500)], "load")
            for r in range(100)]  # fmt: skip
    results: dict[str, list[float]] = {"without viewer": [], "with viewer": []}
    cpu: dict[str, list[float]] = {"without viewer": [], "with viewer": []}
    for _ in range(3):
        collector.clear()
        before = collector_cpu(collector)
        results["without viewer"].append(send(collector, load))
        cpu["without viewer"].append(collector_cpu(collector) - before)
        collector.clear()
        page = browser.new_page()
        page.goto(collector.ui_url)
        page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('live')"
        )
        before = collector_cpu(collector)
        results["with viewer"].append(send(collector, load))
        page.wait_for_function(
            "() => document.getElementById('trace-count').textContent === '50000 traces'",
            timeout=120_000,
        )  # fmt: skip
        # The collector's whole cost: the ingest, and serving the viewer all of it once.
        cpu["with viewer"].append(collector_cpu(collector) - before)
        page.close()
    for key, values in results.items():
        median = statistics.median(values)
        print(f"ingest {key:15} median {median * 1000:6.0f} ms for 50,000 spans "
              f"({50_000 / median:,.0f} spans/s); collector CPU "
              f"{statistics.median(cpu[key]) * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
