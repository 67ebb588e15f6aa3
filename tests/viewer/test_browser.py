"""The web viewer in a real browser (headless Chromium, driven by Playwright) against a live
collector that received real SDK exports, and a report opened from a file with no server."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import openai
from playwright.sync_api import expect

from mocksup import MockVLLMServer
from tests.viewer.support import BrowserTestCase, Shapes

SHOTS_ENV = "MOCKSUP_SCREENSHOT_DIR"


class ViewerTest(BrowserTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.shop = Shapes(self, self.collector, "shop")

    def exported(self, count: int) -> None:
        self.collector.wait_for_spans(count=count, timeout=20)

    def test_the_trace_list_shows_the_exported_traces_newest_first(self) -> None:
        first = self.shop.checkout(0)
        second = self.shop.checkout(100)
        self.exported(10)
        page = self.open()
        rows = page.locator(".trace-row")
        expect(rows).to_have_count(2)
        expect(page.locator("#trace-count")).to_have_text("2 traces")
        # Newest first: the second checkout started 100 ms after the first.
        self.assertEqual(
            [rows.nth(i).get_attribute("data-trace-id") for i in range(2)],
            [second["trace_id"], first["trace_id"]],
        )
        row = rows.nth(0)
        expect(row.locator(".root-name")).to_have_text("GET /checkout")
        expect(row.locator(".span-count")).to_have_text("5")
        expect(row.locator(".duration")).to_have_text("40.0 ms")
        expect(row.locator(".service")).to_have_text("shop")
        expect(row.locator(".error-mark")).to_have_text("1 error")

    def test_a_trace_draws_every_span_nested_with_its_duration(self) -> None:
        made = self.shop.checkout()
        orphan = self.shop.orphan()
        self.exported(6)
        page = self.open()
        page.locator(f'.trace-row[data-trace-id="{made["trace_id"]}"]').click()
        rows = page.locator(".span-row")
        expect(rows).to_have_count(5)
        lane = page.locator(".axis .wf-lane").bounding_box()
        total_ns = 40_000_000
        for key, span in made["spans"].items():
            context = span.get_span_context()
            row = page.locator(f'.span-row[data-span-id="{context.span_id:016x}"]')
            duration = span.end_time - span.start_time
            self.assertEqual(row.get_attribute("data-depth"), str(made["depth"][key]), key)
            self.assertEqual(row.get_attribute("data-duration-ns"), str(duration), key)
            # The bar spans its share of the trace's time axis, at its offset.
            bar = row.locator(".bar").bounding_box()
            self.assertAlmostEqual(bar["width"], lane["width"] * duration / total_ns, delta=2.5)
            offset = span.start_time - made["spans"]["root"].start_time
            self.assertAlmostEqual(
                bar["x"] - lane["x"], lane["width"] * offset / total_ns, delta=2.5
            )
        # Children come right after their parent, siblings by start time.
        self.assertEqual(
            rows.locator(".span-name").all_text_contents(),
            ["GET /checkout", "load cart", "SELECT cart", "charge card", "send mail"],
        )
        expect(page.locator(".span-row.error .span-name")).to_have_text("charge card")
        # The trace whose root never arrived: its span is shown, marked an orphan.
        page.goto(self.collector.ui_url + f"#/trace/{orphan['trace_id']}")
        expect(page.locator(".span-row")).to_have_count(1)
        expect(page.locator(".span-row .orphan-mark")).to_have_attribute(
            "title", "parent dead00000000beef did not arrive"
        )

    def test_a_selected_span_shows_attributes_resource_scope_events_links_status(self) -> None:
        made = self.shop.checkout()
        self.exported(5)
        pay = made["spans"]["pay"].get_span_context()
        cart = made["spans"]["cart"].get_span_context()
        page = self.open(f"trace/{made['trace_id']}")
        page.locator(f'.span-row[data-span-id="{pay.span_id:016x}"]').click()
        detail = page.locator("#span-detail")
        expect(detail.locator("h3")).to_have_text("charge card")
        expect(detail.locator(".span-fields")).to_contain_text("ERROR: card declined")
        expect(detail.locator(".resource")).to_contain_text("service.nameshop")
        expect(detail.locator(".scope")).to_contain_text("tests.otlp")
        expect(detail.locator(".event")).to_contain_text("+20.0 ms retry")
        expect(detail.locator(".event")).to_contain_text("attempt2")
        link = detail.locator(".link a")
        expect(link).to_have_text(f"{made['trace_id']} / {cart.span_id:016x}")
        # The attributes of another span.
        query = made["spans"]["query"].get_span_context()
        page.locator(f'.span-row[data-span-id="{query.span_id:016x}"]').click()
        expect(detail.locator(".span-attributes")).to_have_text("db.systemsqlite")

    def test_a_log_links_to_its_span_and_shows_next_to_it(self) -> None:
        made = self.shop.checkout()
        self.exported(5)
        self.collector.wait_for_logs(timeout=20)
        page = self.open("logs")
        rows = page.locator(".log-row")
        expect(rows).to_have_count(1)
        expect(rows.locator(".log-body")).to_have_text("cart loaded")
        expect(rows.locator(".sev")).to_have_text("INFO")
        rows.locator(".span-link").click()
        query = made["spans"]["query"].get_span_context()
        expect(page).to_have_url(
            f"{self.collector.ui_url}#/trace/{made['trace_id']}/{query.span_id:016x}"
        )
        expect(page.locator(".span-row.selected .span-name")).to_have_text("SELECT cart")
        expect(page.locator(".span-row.selected .logs")).to_have_text("1 log")
        expect(page.locator("#span-detail .span-log")).to_contain_text("cart loaded")
        # The log filters: a text that matches nothing, then a severity above INFO.
        page.goto(self.collector.ui_url + "#/logs")
        page.fill("#log-filters [name=text]", "no such text")
        expect(page.locator("#log-count")).to_have_text("0 of 1 log")
        page.fill("#log-filters [name=text]", "loaded")
        page.select_option("#log-filters [name=severity]", "13")
        expect(page.locator("#log-count")).to_have_text("0 of 1 log")

    def test_metric_charts_have_one_point_per_data_point(self) -> None:
        meter = self.shop.sdk.meter
        hits = meter.create_counter("hits")
        sizes = meter.create_histogram("size", unit="By")
        for flush in range(4):
            hits.add(flush + 1, {"route": "/a"})
            if flush < 2:
                hits.add(1, {"route": "/b"})
            sizes.record(10 * flush)
            self.shop.sdk.flush_metrics()
        self.collector.wait_for_metrics("hits", count=4, timeout=20)
        page = self.open("metrics")
        card = page.locator('.metric[data-metric="hits"]')
        # Cumulative: each flush repeats every series so far: /a 4 times, /b 4 times (the
        # SDK keeps reporting a series once seen).
        points = self.collector.metrics("hits")
        total = sum(len(m.data_points) for m in points)
        expect(card.locator("circle.point")).to_have_count(total)
        expect(card.locator(".point-count")).to_have_text(f" · {total} points")
        expect(card.locator("polyline.series")).to_have_count(2)
        page.fill("#metric-filters [name=attr]", "route=/a")
        expect(card.locator("circle.point")).to_have_count(4)
        page.fill("#metric-filters [name=attr]", "")
        # The histogram: a bar per bucket of its latest point, each titled with its count.
        latest = self.collector.metrics("size")[-1].data_points[-1].extra
        bounds, counts = latest["explicit_bounds"], latest["bucket_counts"]
        titles = [f"≤ {b:g}: {c}" for b, c in zip(bounds, counts, strict=False)]
        titles.append(f"> {bounds[-1]:g}: {counts[-1]}")
        bars = page.locator('.metric[data-metric="size"] rect.bucket title')
        expect(bars).to_have_text(titles)

    def test_new_data_appears_without_a_reload(self) -> None:
        self.shop.checkout(0)
        self.exported(5)
        page = self.open()
        expect(page.locator(".trace-row")).to_have_count(1)
        page.evaluate("window.loadedOnce = true")
        later = self.shop.checkout(200)
        expect(page.locator(".trace-row")).to_have_count(2)
        expect(page.locator(".trace-row").first).to_have_attribute(
            "data-trace-id", later["trace_id"]
        )
        self.assertTrue(page.evaluate("window.loadedOnce === true"), "the page was reloaded")
        # A clear() starts a new generation: the viewer forgets what it showed.
        self.collector.clear()
        self.shop.orphan()
        expect(page.locator(".trace-row")).to_have_count(1)
        expect(page.locator(".trace-row .orphan")).to_have_text("no root")

    def test_the_trace_list_filters(self) -> None:
        self.shop.checkout(0)
        other = Shapes(self, self.collector, "billing")
        span = other.span("invoice", 50, 60, attributes={"tenant": "acme"})
        span.end(end_time=other.at(60))
        self.exported(6)
        page = self.open()
        count = page.locator("#trace-count")
        expect(count).to_have_text("2 traces")
        page.select_option("#trace-filters [name=service]", "billing")
        expect(count).to_have_text("1 of 2 traces")
        expect(page.locator(".trace-row .root-name")).to_have_text("invoice")
        page.select_option("#trace-filters [name=service]", "")
        page.fill("#trace-filters [name=attr]", "tenant=acme")
        expect(page.locator(".trace-row .root-name")).to_have_text("invoice")
        page.fill("#trace-filters [name=attr]", "cart.items=3")
        expect(page.locator(".trace-row .root-name")).to_have_text("GET /checkout")
        page.fill("#trace-filters [name=attr]", "")
        page.fill("#trace-filters [name=name]", "select")
        expect(page.locator(".trace-row .root-name")).to_have_text("GET /checkout")
        page.fill("#trace-filters [name=name]", "")
        page.check("#trace-filters [name=errors]")
        expect(page.locator(".trace-row .root-name")).to_have_text("GET /checkout")
        page.uncheck("#trace-filters [name=errors]")
        # Time: from a moment between the two traces' starts (local time, to the second).
        between = page.evaluate(
            "(ms) => { const d = new Date(ms); d.setMilliseconds(0);"
            " const p = (n) => String(n).padStart(2, '0');"
            " return `${d.getFullYear()}-${p(d.getMonth()+1)}-${p(d.getDate())}T"
            "${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`; }",
            (other.at(50) // 1_000_000) + 1000,
        )
        page.fill("#trace-filters [name=from]", between)
        expect(count).to_have_text("0 of 2 traces")
        page.fill("#trace-filters [name=from]", "")
        page.fill("#trace-filters [name=to]", between)
        expect(count).to_have_text("2 traces")

    def test_the_vllm_journal_links_each_request_to_its_llm_request_span(self) -> None:
        vllm = self.servers.server_of(MockVLLMServer)
        vllm.clear()
        client = openai.OpenAI(base_url=vllm.base_url, api_key="x")
        self.addCleanup(client.close)
        model = vllm.served_model_names[0]
        with self.shop.tracer.start_as_current_span("ask model") as parent:
            parent_id = f"{parent.get_span_context().span_id:016x}"
            trace_id = f"{parent.get_span_context().trace_id:032x}"
            traceparent = f"00-{trace_id}-{parent_id}-01"
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}],
                extra_headers={"traceparent": traceparent},
            )  # fmt: skip
        (span,) = self.collector.wait_for_spans("llm_request", timeout=20)
        page = self.open("requests")
        row = page.locator(".request-row")
        expect(row).to_have_count(1)
        expect(row.locator(".req-path")).to_have_text("POST /v1/chat/completions")
        expect(row.locator(".req-status")).to_have_text("200")
        usage = reply.usage
        assert usage is not None
        expect(row.locator(".req-tokens")).to_have_text(
            f"{usage.prompt_tokens} → {usage.completion_tokens}"
        )
        row.locator(".span-link").click()
        expect(page).to_have_url(f"{self.collector.ui_url}#/trace/{trace_id}/{span.span_id}")
        expect(page.locator(".span-row.selected .span-name")).to_have_text("llm_request")
        expect(page.locator(".span-row.selected")).to_have_attribute("data-depth", "1")

    def test_screenshots_of_each_view(self) -> None:
        # The docs' pictures: MOCKSUP_SCREENSHOT_DIR=docs/_static/viewer writes them there.
        made = self.shop.checkout()
        for flush in range(5):
            self.shop.sdk.meter.create_counter("requests").add(flush + 2, {"route": "/checkout"})
            self.shop.sdk.meter.create_histogram("latency", unit="ms").record(12.5 * (flush + 1))
            self.shop.sdk.flush_metrics()
        self.shop.orphan()
        vllm = self.servers.server_of(MockVLLMServer)
        vllm.clear()
        client = openai.OpenAI(base_url=vllm.base_url, api_key="x")
        self.addCleanup(client.close)
        for question in ("hi", "what is in my cart?"):
            with self.shop.tracer.start_as_current_span("ask model") as parent:
                context = parent.get_span_context()
                traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
                client.chat.completions.create(
                    model=vllm.served_model_names[0], extra_headers={"traceparent": traceparent},
                    messages=[{"role": "user", "content": question}],
                )  # fmt: skip
        self.collector.wait_for_spans("llm_request", count=2, timeout=20)
        self.exported(10)
        folder = Path(os.environ.get(SHOTS_ENV) or tempfile.mkdtemp(prefix="mocksup-shots-"))
        folder.mkdir(parents=True, exist_ok=True)
        pay = made["spans"]["pay"].get_span_context()
        views = {
            "traces": "traces",
            "trace": f"trace/{made['trace_id']}/{pay.span_id:016x}",
            "logs": "logs",
            "metrics": "metrics",
            "requests": "requests",
        }
        for name, route in views.items():
            page = self.open(route)
            page.locator(".view:not([hidden])").first.wait_for()
            path = folder / f"viewer-{name}.png"
            page.screenshot(path=str(path))
            self.assertGreater(path.stat().st_size, 10_000, path)


class ReportTest(BrowserTestCase):
    def test_the_report_opens_from_a_file_with_no_server(self) -> None:
        shop = Shapes(self, self.collector, "shop")
        made = shop.checkout()
        shop.sdk.meter.create_counter("hits").add(1)
        shop.sdk.flush_metrics()
        self.collector.wait_for_spans(count=5, timeout=20)
        self.collector.wait_for_metrics("hits", timeout=20)
        folder = Path(tempfile.mkdtemp(prefix="mocksup-report-"))
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", str(folder)], check=True))
        dump = folder / "run.jsonl"
        self.collector.export(dump)
        command = [
            sys.executable,
            "-m",
            "mocksup",
            "report",
            str(dump),
            "-o",
            str(folder / "r.html"),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"wrote {folder / 'r.html'}", done.stdout)
        # No network at all: any request the page tried would be counted here and refused.
        tried: list[str] = []

        def refuse(route: Any) -> None:
            tried.append(route.request.url)
            route.abort()

        self.context.route("http://**/*", refuse)
        self.context.route("https://**/*", refuse)
        page = self.page
        page.goto((folder / "r.html").as_uri())
        expect(page.locator(".trace-row")).to_have_count(1)
        expect(page.locator("#title")).to_have_text("run.jsonl")
        page.locator(".trace-row").click()
        expect(page.locator(".span-row")).to_have_count(5)
        page.goto((folder / "r.html").as_uri() + "#/logs")
        expect(page.locator(".log-row .log-body")).to_have_text("cart loaded")
        page.goto((folder / "r.html").as_uri() + "#/metrics")
        expect(page.locator('.metric[data-metric="hits"] circle.point')).to_have_count(1)
        self.assertEqual(tried, [])
        self.assertEqual(page.evaluate("window.mocksupViewer.store.spanCount"), 5)
        self.assertIn(
            made["trace_id"], page.evaluate("[...window.mocksupViewer.store.traces.keys()]")
        )
