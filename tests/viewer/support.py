"""Helpers for the viewer's tests: a headless Chromium driven by Playwright, and telemetry
with known shapes exported by the real OpenTelemetry SDK.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or ``$MOCKSUP_CHROMIUM``),
never one Playwright downloads; without it (or without Playwright) the browser tests skip,
saying so.
"""

from __future__ import annotations

import contextlib
import os
import time
import unittest
from typing import Any, ClassVar

import psutil
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from mocksup import MockServers, start_all
from mocksup.harness import default_configs
from mocksup.otlp import MockOTLPCollector
from tests.otlp.support import Pipelines
from tests.support import assert_no_children_left, children, snapshot

__all__ = ["CHROMIUM_ARGS", "BrowserTestCase", "Shapes", "chromium", "launch"]

#: The flags every launch uses: headless, no sandbox (CI runs as root), nothing fetched.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: Milliseconds Playwright waits for what a test expects to appear.
EXPECT_MS = 20_000


def chromium() -> str:
    """The Chromium to drive; raises SkipTest (with the reason) when there is none."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise unittest.SkipTest("Playwright is not installed (pip install -e .[test])") from None
    path = os.environ.get("MOCKSUP_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        raise unittest.SkipTest(
            f"no Chromium at {path}: install Debian's chromium package (apt-get install "
            "chromium) or set MOCKSUP_CHROMIUM to a Chromium binary"
        )
    return path


def launch() -> tuple[Any, Any]:
    """Start Playwright and a headless Chromium; returns (playwright, browser)."""
    from playwright.sync_api import expect, sync_playwright

    path = chromium()
    expect.set_options(timeout=EXPECT_MS)
    driver = sync_playwright().start()
    try:
        browser = driver.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
    except BaseException:
        driver.stop()
        raise
    return driver, browser


def _in_tree(process: psutil.Process, roots: set[int]) -> bool:
    with contextlib.suppress(psutil.Error):
        return process.pid in roots or any(p.pid in roots for p in process.parents())
    return False


class BrowserTestCase(unittest.TestCase):
    """The default servers (a collector and a vLLM mock linked to its viewer), a browser,
    and a fresh page per test; the collector is cleared before each test.

    Chromium starts and ends renderer processes as it likes, so the per-test leak check
    leaves the browser's process tree out; the class check (after the browser closed and the
    servers stopped) covers everything.
    """

    servers: ClassVar[MockServers]
    collector: ClassVar[MockOTLPCollector]
    browser: ClassVar[Any]
    _browser_roots: ClassVar[set[int]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        before = snapshot()
        cls.addClassCleanup(assert_no_children_left, before, f"class {cls.__name__}")
        known = {p.pid for p in children(settle=False)}
        driver, cls.browser = launch()
        cls.addClassCleanup(driver.stop)
        cls.addClassCleanup(cls.browser.close)
        cls._browser_roots = {p.pid for p in children(settle=False)} - known
        cls.servers = start_all(default_configs())
        cls.addClassCleanup(cls.servers.stop)
        cls.collector = cls.servers.server_of(MockOTLPCollector)
        # vLLM exports its start-up spans (one request) from a thread once it serves: let
        # them land now, so that no test's clear() races them.
        cls.collector.wait_for_spans("Overall Loading", timeout=30)

    def setUp(self) -> None:
        super().setUp()
        before = snapshot()
        self.addCleanup(self._check_no_leak, before)
        self.collector.clear()
        self.context = self.browser.new_context(viewport={"width": 1400, "height": 820})
        self.addCleanup(self.context.close)
        self.context.set_default_timeout(EXPECT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.addCleanup(self._check_no_page_errors)

    def _check_no_leak(self, before: set[int]) -> None:
        others = {p.pid for p in children() if _in_tree(p, self._browser_roots)}
        assert_no_children_left(before | others, f"test {self.id()}")

    def _check_no_page_errors(self) -> None:
        self.assertEqual(self.errors, [], "the page raised errors")

    def open(self, hash_route: str = "") -> Any:
        """Open the live viewer (at ``#/<hash_route>``) and wait until it caught up."""
        from playwright.sync_api import expect

        self.page.goto(self.collector.ui_url + (f"#/{hash_route}" if hash_route else ""))
        expect(self.page.locator("#status")).to_contain_text("live")
        return self.page


class Shapes:
    """Telemetry of known shapes, exported through the SDK (OTLP/HTTP) to a collector."""

    def __init__(self, case: unittest.TestCase, collector: MockOTLPCollector, service: str):
        self.sdk = Pipelines(case, collector, "http", service=service)
        self.tracer = self.sdk.tracer
        self.base = time.time_ns() - 60_000_000_000  # a minute ago: in no one's future

    def at(self, ms: float) -> int:
        return self.base + int(ms * 1_000_000)

    def span(self, name: str, start_ms: float, end_ms: float, parent: Any = None, **kw: Any) -> Any:
        """A finished span from ``start_ms`` to ``end_ms`` (after the base), under ``parent``."""
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(name, context=context, start_time=self.at(start_ms), **kw)
        return span

    def checkout(self, offset_ms: float = 0.0) -> dict[str, Any]:
        """A trace of five spans, one of them an error; returns what it is made of."""
        o = offset_ms
        root = self.span("GET /checkout", o, o + 40, attributes={"http.route": "/checkout"})
        cart = self.span("load cart", o + 2, o + 12, root, attributes={"cart.items": 3})
        query = self.span("SELECT cart", o + 3, o + 9, cart, attributes={"db.system": "sqlite"})
        with trace.use_span(query):
            self.sdk.logger.emit(
                body="cart loaded",
                severity_text="INFO",
                severity_number=SeverityNumber.INFO,
                attributes={"cart.items": 3},
            )
        query.end(end_time=self.at(o + 9))
        cart.end(end_time=self.at(o + 12))
        pay = self.span(
            "charge card",
            o + 15,
            o + 35,
            root,
            links=[trace.Link(cart.get_span_context(), {"why": "cart"})],
        )
        pay.add_event("retry", {"attempt": 2}, timestamp=self.at(o + 20))
        pay.set_status(Status(StatusCode.ERROR, "card declined"))
        pay.end(end_time=self.at(o + 35))
        mail = self.span("send mail", o + 36, o + 39.5, root)
        mail.end(end_time=self.at(o + 39.5))
        root.end(end_time=self.at(o + 40))
        spans = {"root": root, "cart": cart, "query": query, "pay": pay, "mail": mail}
        depth = {"root": 0, "cart": 1, "query": 2, "pay": 1, "mail": 1}
        return {
            "spans": spans,
            "depth": depth,
            "trace_id": f"{root.get_span_context().trace_id:032x}",
        }

    def orphan(self, offset_ms: float = 100.0) -> dict[str, Any]:
        """A trace whose root never arrives: one span under a parent that was not exported."""
        missing = SpanContext(
            trace_id=0x5EED0000000000000000000000000001, span_id=0xDEAD00000000BEEF, is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )  # fmt: skip
        lost = self.span("late work", offset_ms, offset_ms + 5, NonRecordingSpan(missing))
        lost.end(end_time=self.at(offset_ms + 5))
        return {"span": lost, "trace_id": f"{missing.trace_id:032x}"}
