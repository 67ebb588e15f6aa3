"""``mocksup report``: a dump becomes one self-contained HTML page with the data embedded
(read back here by decoding what the page embeds; the browser tests open it)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from opentelemetry._logs import SeverityNumber

from mocksup.otlp._query import items_from_protobuf
from mocksup.otlp._streams import parse_feed_page
from mocksup.otlp.report import collector_frames, dump_frames, render_report
from tests.otlp.support import CollectorTestCase, Pipelines

WARN = SeverityNumber.WARN


def embedded(html: str) -> dict[str, Any]:
    """The report's boot document, and its data decoded into items."""
    boot: dict[str, Any] = json.loads(re.search(r'id="boot">(.*?)</script>', html, re.S)[1])  # type: ignore[index]
    items = []
    frames, _, _ = parse_feed_page(base64.b64decode(boot["data"]))
    for signal, frame in frames:
        items.extend(items_from_protobuf(signal, frame))
    boot["items"] = items
    return boot


class ReportCommandTest(CollectorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.folder = Path(tempfile.mkdtemp(prefix="mocksup-report-"))
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", str(self.folder)], check=True))

    def mocksup(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mocksup", *args], capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip

    def send(self) -> None:
        sdk = Pipelines(self, self.collector, "http", service="shop")
        with sdk.tracer.start_as_current_span("parent"), sdk.tracer.start_as_current_span("child"):
            sdk.logger.emit(
                body="inside", severity_text="WARN", severity_number=SeverityNumber.WARN
            )
        sdk.meter.create_counter("hits").add(2, {"route": "/a"})
        sdk.flush_metrics()
        self.collector.wait_for_spans(count=2, timeout=20)

    def test_a_dump_becomes_a_page_holding_every_item(self) -> None:
        self.send()
        dump = self.folder / "run.jsonl"
        self.collector.export(dump)
        journal = self.folder / "vllm.json"
        entry = {"index": 0, "method": "POST", "path": "/v1/completions", "status": 200,
                 "start": 1.0, "first_byte": 0.1, "duration": 0.2, "body": {"model": "m"},
                 "headers": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
                             "authorization": "[redacted]"}}  # fmt: skip
        journal.write_text(json.dumps({"requests": [entry]}))
        done = self.mocksup("report", str(dump), "--journal", f"vllm={journal}")
        self.assertEqual(done.returncode, 0, done.stderr)
        output = self.folder / "run.jsonl.html"
        self.assertEqual(done.stdout, f"mocksup: wrote {output} (4 requests)\n")
        boot = embedded(output.read_text())
        self.assertEqual((boot["mode"], boot["title"]), ("report", "run.jsonl"))
        self.assertEqual(
            sorted(
                (type(i).__name__, getattr(i, "name", None) or str(i.body)) for i in boot["items"]
            ),
            [("LogRecord", "inside"), ("Metric", "hits"), ("Span", "child"), ("Span", "parent")],
        )
        # Field for field what the collector holds (the spans in arrival order).
        by_kind: dict[str, list[Any]] = {}
        for item in boot["items"]:
            by_kind.setdefault(type(item).__name__, []).append(item)
        self.assertEqual(by_kind["Span"], self.collector.spans())
        self.assertEqual(by_kind["LogRecord"], self.collector.logs())
        self.assertEqual(by_kind["Metric"], self.collector.metrics())
        (shown,) = boot["journals"]["vllm"]
        self.assertEqual(shown["traceparent"], entry["headers"]["traceparent"])  # type: ignore[index]
        self.assertEqual(shown["model"], "m")
        self.assertNotIn("headers", shown)
        # -o, --title; the page loads nothing from anywhere.
        done = self.mocksup(
            "report", str(dump), "-o", str(self.folder / "x.html"), "--title", "</script>"
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        html = (self.folder / "x.html").read_text()
        self.assertEqual(html.count("</script>"), 2)  # the page's own two
        self.assertEqual(embedded(html)["title"], "</script>")
        self.assertIsNone(re.search(r"""(src|href)=["']?(https?:)?//""", html))

    def test_bad_input_is_one_line_and_exit_2(self) -> None:
        bad = self.folder / "bad.jsonl"
        spans = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}
        bad.write_text('{"resourceSpans": []}\n' + json.dumps(spans) + "\n")
        cases = {
            ("report", str(self.folder / "none.jsonl")): "No such file or directory",
            ("report", str(bad)): "dump line 2 is not valid OTLP/JSON",
            ("report", str(bad), "--journal", "x"): "--journal takes NAME=FILE, not 'x'",
            ("report", str(bad), "--journal", f"x={bad}"): "cannot read a journal",
        }
        for args, message in cases.items():
            done = self.mocksup(*args)
            self.assertEqual(done.returncode, 2, args)
            self.assertEqual(len(done.stderr.splitlines()), 1, done.stderr)
            self.assertIn(message, done.stderr)
            self.assertTrue(done.stderr.startswith("mocksup: error: "), done.stderr)
        self.assertFalse((self.folder / "bad.jsonl.html").exists())

    def test_a_running_collector_and_a_dump_give_the_same_report_data(self) -> None:
        self.send()
        dump = self.folder / "run.jsonl"
        self.collector.export(dump)
        live = embedded(render_report(collector_frames(self.collector)))["items"]
        from_dump = embedded(render_report(dump_frames(dump)))["items"]
        self.assertEqual(live, from_dump)
        self.assertEqual(len(live), 4)
        self.collector.clear()
        self.assertEqual(embedded(render_report(collector_frames(self.collector)))["items"], [])
