"""What every mock shares, checked on both built-in ones through real processes: a typo in a
control parameter is a 400 that names it (never "match everything"), the long-poll cap is
said, one wait convention (keyword-only ``count`` and ``timeout``, a
:class:`~mocksup.WaitTimeoutError` that is an AssertionError); and the default-ports rule:
well-known ports for the classes, free ports for every fixture and helper."""

from __future__ import annotations

import http.client
import inspect
import json
import time
import unittest
from typing import Any, ClassVar
from urllib.parse import urlsplit

import mocksup
from mocksup import MockOTLPCollector, MockRedisServer, MockVLLMServer, ProcessServer
from mocksup.errors import WaitTimeoutError
from mocksup.harness import MockServers, default_configs
from mocksup.otlp import CollectorClient
from mocksup.vllm import VLLMClient
from tests.support import ProcessTestCase


def get(url: str, target: str) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


class ControlConventionTest(ProcessTestCase):
    servers: ClassVar[MockServers]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.servers = mocksup.start_all()
        cls.addClassCleanup(cls.servers.stop)

    def test_an_unknown_parameter_is_a_400_naming_it(self) -> None:
        collector, vllm = self.servers["otlp"].url, self.servers["vllm"].url
        cases = [
            (collector, "/mocksup/spans?service=x", "'service'", "service_name"),
            (collector, "/mocksup/spans?nmae=x", "'nmae'", "name"),
            (collector, "/mocksup/logs/wait?servce_name=x", "'servce_name'", "service_name"),
            (vllm, "/mocksup/requests?pth=/v1/models", "'pth'", "path"),
        ]
        for url, target, named, known in cases:
            with self.subTest(target):
                status, answer = get(url, target)
                self.assertEqual(status, 400)
                self.assertIn(f"unknown parameter {named}", answer["error"])
                self.assertIn(known, answer["error"].split("known:")[1])

    def test_a_wait_past_the_cap_is_refused_saying_so(self) -> None:
        for url, target in (
            (self.servers["otlp"].url, "/mocksup/spans/wait?timeout=9999"),
            (self.servers["vllm"].url, "/mocksup/requests?count=1&timeout=9999"),
        ):
            with self.subTest(target):
                started = time.monotonic()
                status, answer = get(url, target)
                self.assertEqual(status, 400)
                self.assertIn("the longest wait is 600 s", answer["error"])
                self.assertLess(time.monotonic() - started, 10)  # refused, not waited

    def test_one_wait_convention(self) -> None:
        collector = self.servers.server_of(MockOTLPCollector)
        vllm = self.servers.server_of(MockVLLMServer)
        waits: dict[str, tuple[Any, tuple[str, ...]]] = {
            "collector": (collector.wait_for_spans, ("never",)),
            "vllm": (vllm.wait_for_requests, ()),
        }
        for name, (wait, args) in waits.items():
            with self.subTest(name):
                parameters = inspect.signature(wait).parameters
                for keyword in ("count", "timeout"):
                    self.assertEqual(parameters[keyword].kind, inspect.Parameter.KEYWORD_ONLY)
                with self.assertRaises(WaitTimeoutError) as raised:
                    wait(*args, count=1, timeout=0.2)
                self.assertIsInstance(raised.exception, AssertionError)
                self.assertEqual((raised.exception.expected, raised.exception.timeout), (1, 0.2))
        # The clients of mocks that run elsewhere wait the same way.
        for client in (CollectorClient.wait_for_spans, VLLMClient.wait_for_requests):
            parameters = inspect.signature(client).parameters
            self.assertEqual(parameters["timeout"].kind, inspect.Parameter.KEYWORD_ONLY)


class DefaultPortsTest(unittest.TestCase):
    def test_classes_keep_their_well_known_ports(self) -> None:
        collector = MockOTLPCollector()
        self.assertEqual((collector.port, collector.grpc_port), (4318, 4317))
        self.assertEqual(MockVLLMServer().port, 8000)
        self.assertEqual(MockRedisServer().port, 0)
        self.assertEqual(ProcessServer(command=["true"]).port, 0)
        # And each class's docstring says which rule it follows.
        for cls in (MockOTLPCollector, MockVLLMServer, MockRedisServer, ProcessServer):
            self.assertIn("Default port", cls.__doc__ or "", cls.__name__)

    def test_every_fixture_and_helper_asks_for_free_ports(self) -> None:
        from mocksup import pytest_plugin

        configs = [*default_configs(), *pytest_plugin.mocksup_configs.__wrapped__()]  # type: ignore[attr-defined]
        self.assertEqual(len(configs), 4)
        for config in configs:
            model = config.create()
            ports = {k: v for k, v in model.model_dump().items() if k.endswith("port")}
            with self.subTest(config.name):
                self.assertTrue(ports)
                self.assertEqual(set(ports.values()), {0}, ports)


if __name__ == "__main__":
    unittest.main()
