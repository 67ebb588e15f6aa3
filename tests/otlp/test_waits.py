"""Waits are long polls: a wait held before its data arrives returns as soon as it does.

Each test holds a wait with a long timeout, makes sure the collector holds it, then sends
the data and measures the time to the answer: well under the timeout, or the collector is
not waking its waiters (the time would be the whole timeout).
"""

from __future__ import annotations

from tests.otlp.support import CollectorTestCase, Pipelines

TIMEOUT = 30.0
PROMPT = 5.0  # generous for a loaded machine; a missed wake-up costs the whole TIMEOUT


class LongPollTest(CollectorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.sdk = Pipelines(self, self.collector, "http", service="late")

    def test_wait_for_spans(self) -> None:
        def send() -> None:
            with self.sdk.tracer.start_as_current_span("late-span"):
                pass

        spans, elapsed = self.held(
            lambda: self.collector.wait_for_spans("late-span", timeout=TIMEOUT), send
        )
        self.assertEqual([s.name for s in spans], ["late-span"])
        self.assertLess(elapsed, PROMPT)

    def test_wait_for_metrics(self) -> None:
        def send() -> None:
            self.sdk.meter.create_counter("late-counter").add(1)
            self.sdk.flush_metrics()

        metrics, elapsed = self.held(
            lambda: self.collector.wait_for_metrics("late-counter", timeout=TIMEOUT), send
        )
        self.assertEqual([m.name for m in metrics], ["late-counter"])
        self.assertLess(elapsed, PROMPT)

    def test_wait_for_logs(self) -> None:
        def send() -> None:
            self.sdk.logger.emit(body="late", event_name="late-log")

        logs, elapsed = self.held(
            lambda: self.collector.wait_for_logs("late-log", timeout=TIMEOUT), send
        )
        self.assertEqual([r.event_name for r in logs], ["late-log"])
        self.assertLess(elapsed, PROMPT)

    def test_a_wait_restarts_after_clear(self) -> None:
        with self.sdk.tracer.start_as_current_span("before"):
            pass

        def send() -> None:
            self.collector.clear()
            for name in ("after-1", "after-2"):
                with self.sdk.tracer.start_as_current_span(name):
                    pass

        # Two spans wanted; one arrived before the clear and must not count.
        spans, elapsed = self.held(
            lambda: self.collector.wait_for_spans(count=2, timeout=TIMEOUT), send
        )
        self.assertEqual([s.name for s in spans], ["after-1", "after-2"])
        self.assertLess(elapsed, PROMPT)
