"""CollectorClient: the query client of a collector another process runs, given its URL."""

from __future__ import annotations

import gc
import unittest
from unittest import mock

from mocksup.otlp import CollectorClient, MockOTLPCollector
from mocksup.otlp.client import CollectorQueries
from tests.otlp.support import CollectorTestCase, post
from tests.otlp.test_http_input import request_bytes


class ClientTest(CollectorTestCase):
    def test_queries_a_running_collector_by_url(self) -> None:
        post(self.collector, "/v1/traces", request_bytes("by-url", 2))
        client = CollectorClient(self.collector.http_endpoint)
        self.assertEqual([s.name for s in client.wait_for_spans("by-url", count=2)], ["by-url"] * 2)
        self.assertEqual(client.stats()["items"]["traces"], 2)
        client.clear()
        self.assertEqual(self.collector.spans(), [])

    def test_the_test_process_keeps_its_garbage_collector(self) -> None:
        post(self.collector, "/v1/traces", request_bytes("gc", 50))
        with mock.patch.object(gc, "disable") as disable:
            self.assertEqual(len(self.collector.spans()), 50)
            self.assertEqual(len(self.collector.wait_for_spans(count=50)), 50)
        disable.assert_not_called()


class SurfaceTest(unittest.TestCase):
    def test_filters_are_named_keywords(self) -> None:
        client = CollectorClient("http://127.0.0.1:9")
        for call in (
            lambda: client.wait_for_spans("x", servce_name="a"),  # type: ignore[call-arg]
            lambda: client.spans(nme="x"),  # type: ignore[call-arg]
            lambda: client.wait_for_logs(severity="x"),  # type: ignore[call-arg]
            lambda: client.wait_for_metrics(kind="SERVER"),  # type: ignore[call-arg]
        ):
            with self.assertRaises(TypeError):
                call()

    def test_one_implementation_for_both(self) -> None:
        for name in (
            "spans",
            "wait_for_spans",
            "metrics",
            "logs",
            "requests",
            "fail_next",
            "clear",
        ):
            self.assertIs(getattr(MockOTLPCollector, name), getattr(CollectorQueries, name))
            self.assertIs(getattr(CollectorClient, name), getattr(CollectorQueries, name))

    def test_url_needs_host_and_port(self) -> None:
        with self.assertRaises(ValueError):
            CollectorClient("http://127.0.0.1")
        self.assertEqual(CollectorClient("127.0.0.1:4318").url, "http://127.0.0.1:4318")
