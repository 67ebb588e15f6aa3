"""The live feed: pages after a cursor, held as a long poll, and follow() as items arrive."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

from mocksup import ControlAPIError
from mocksup.otlp import LogRecord, Metric, Span
from tests.otlp.support import CollectorTestCase, Pipelines, post
from tests.otlp.test_http_input import request_bytes

TIMEOUT = 30.0
PROMPT = 5.0  # generous on a loaded machine; a missed wake-up costs the whole TIMEOUT


class FeedTest(CollectorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.sdk = Pipelines(self, self.collector, "http", service="fed")

    def send_all_signals(self) -> None:
        with self.sdk.tracer.start_as_current_span("first"):
            pass
        self.sdk.logger.emit(body="second", event_name="second")
        self.sdk.meter.create_counter("third").add(1)
        self.sdk.flush_metrics()
        with self.sdk.tracer.start_as_current_span("fourth"):
            pass

    def test_pages_come_in_arrival_order_and_the_cursor_moves_on(self) -> None:
        self.send_all_signals()
        page = self.collector.feed(0, timeout=0)
        self.assertEqual(
            [(type(i).__name__, i.name if not isinstance(i, LogRecord) else i.event_name)
             for i in page.items],
            [("Span", "first"), ("LogRecord", "second"), ("Metric", "third"), ("Span", "fourth")],
        )  # fmt: skip
        self.assertEqual(page.cursor, self.collector.stats()["cursor"])
        self.assertEqual(page.generation, self.collector.stats()["generation"])
        again = self.collector.feed(page.cursor, timeout=0)
        self.assertEqual((again.items, again.cursor), ((), page.cursor))
        # Pages of at most about ``limit`` items (requests are never split).
        firsts = self.collector.feed(0, timeout=0, limit=1)
        self.assertEqual([i.name for i in firsts.items if isinstance(i, Span)], ["first"])
        rest = self.collector.feed(firsts.cursor, timeout=0)
        self.assertEqual(len(rest.items), 3)

    def test_filters_and_signals(self) -> None:
        self.send_all_signals()
        post(self.collector, "/v1/traces", request_bytes("other service"))
        page = self.collector.feed(0, timeout=0, signals=["logs", "metrics"])
        self.assertEqual([type(i) for i in page.items], [LogRecord, Metric])
        page = self.collector.feed(0, timeout=0, service_name="fed", signals=["traces"])
        self.assertEqual([i.name for i in page.items if isinstance(i, Span)], ["first", "fourth"])
        # The cursor moved past the request that did not match: it is not read again.
        self.assertEqual(page.cursor, self.collector.stats()["cursor"])

    def test_a_held_page_returns_as_soon_as_an_item_arrives(self) -> None:
        cursor = self.collector.stats()["cursor"]

        def send() -> None:
            with self.sdk.tracer.start_as_current_span("late"):
                pass

        page, elapsed = self.held(lambda: self.collector.feed(cursor, timeout=TIMEOUT), send)
        self.assertEqual([i.name for i in page.items if isinstance(i, Span)], ["late"])
        self.assertLess(elapsed, PROMPT)

    def test_follow_yields_items_as_they_arrive(self) -> None:
        with self.sdk.tracer.start_as_current_span("before"):
            pass

        def first_new() -> Any:
            for item in self.collector.follow(from_start=False, timeout=TIMEOUT):
                return item
            return None

        def send() -> None:
            self.sdk.logger.emit(body="now", event_name="now")

        item, elapsed = self.held(first_new, send)
        self.assertIsInstance(item, LogRecord)
        self.assertEqual(item.event_name, "now")
        self.assertLess(elapsed, PROMPT)
        names = [getattr(i, "name", "") for i in self.collector.follow(timeout=0)]
        self.assertEqual(names[0], "before")  # from_start=True begins with what is stored

    def test_follow_ends_at_its_timeout(self) -> None:
        started = time.monotonic()
        self.assertEqual(list(self.collector.follow(from_start=False, timeout=0.3)), [])
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

    def test_a_cursor_from_another_run_is_refused(self) -> None:
        with self.assertRaises(ControlAPIError) as caught:
            self.collector.feed(self.collector.stats()["cursor"] + 1, timeout=0)
        self.assertEqual(caught.exception.status, 400)
        self.assertIn("start again from 0", str(caught.exception))

    def test_clear_keeps_cursors_valid_and_changes_the_generation(self) -> None:
        post(self.collector, "/v1/traces", request_bytes("old"))
        page = self.collector.feed(0, timeout=0)
        self.collector.clear()
        post(self.collector, "/v1/traces", request_bytes("new"))
        after = self.collector.feed(page.cursor, timeout=0)
        self.assertEqual([i.name for i in after.items if isinstance(i, Span)], ["new"])
        self.assertEqual(after.generation, page.generation + 1)

    def test_a_page_with_nothing_to_show_answers_at_its_timeout(self) -> None:
        # Requests of other signals, or cleared ones, lie between the cursor and the last
        # request: the page moves past them and is held only as long as asked.
        post(self.collector, "/v1/traces", request_bytes("span"))
        for wait in (0.0, 0.3):
            started = time.monotonic()
            page = self.collector.feed(0, timeout=wait, signals=["logs"])
            self.assertEqual((page.items, page.cursor), ((), self.collector.stats()["cursor"]))
            self.assertGreaterEqual(time.monotonic() - started, wait)
            self.assertLess(time.monotonic() - started, wait + PROMPT)
        self.collector.clear()
        started = time.monotonic()
        page = self.collector.feed(0, timeout=0)
        self.assertEqual((page.items, page.cursor), ((), self.collector.stats()["cursor"]))
        self.assertLess(time.monotonic() - started, PROMPT)

    def test_json_pages_hold_otlp_json_documents(self) -> None:
        self.send_all_signals()
        conn = http.client.HTTPConnection(self.collector.host, self.collector.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/mocksup/feed?after=0&timeout=0")
        response = conn.getresponse()
        page = json.loads(response.read())
        self.assertEqual(response.status, 200)
        self.assertEqual(page["cursor"], self.collector.stats()["cursor"])
        self.assertEqual(page["count"], 4)
        self.assertEqual(
            [next(iter(doc)) for doc in page["data"]],
            ["resourceSpans", "resourceLogs", "resourceMetrics", "resourceSpans"],
        )
        span = page["data"][0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        self.assertEqual((span["name"], span["kind"]), ("first", 1))
