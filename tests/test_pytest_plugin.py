"""The pytest plugin, loaded through its entry point by a real pytest run in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from importlib.metadata import entry_points
from pathlib import Path

from tests.support import ProcessTestCase

USES_FIXTURES = """
import json
import os
import urllib.request

import openai
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def post_span(collector, name):
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = name
    span.trace_id = bytes(range(16))
    span.span_id = bytes(range(8))
    post = urllib.request.Request(
        collector.http_endpoint + "/v1/traces",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    urllib.request.urlopen(post, timeout=10).read()


def test_collector_receives(otlp_collector):
    post_span(otlp_collector, "first")
    assert [s.name for s in otlp_collector.spans()] == ["first"]


def test_collector_is_cleared_before_each_test(otlp_collector):
    assert otlp_collector.spans() == []


def test_vllm_with_openai(vllm_server, otlp_collector):
    client = openai.OpenAI(base_url=vllm_server.base_url, api_key="x")
    reply = client.chat.completions.create(
        model=vllm_server.served_model_names[0], messages=[{"role": "user", "content": "hi"}]
    )
    client.close()
    assert reply.usage.completion_tokens > 0
    # vLLM exports its llm_request span to the session's collector.
    (span,) = otlp_collector.wait_for_spans("llm_request", timeout=20)
    assert span.attributes["gen_ai.usage.completion_tokens"] == reply.usage.completion_tokens


def test_default_servers(mocksup_servers):
    assert set(mocksup_servers) == {"otlp", "vllm"}


def test_fails_and_shows_logs(otlp_collector):
    assert False, "on purpose"
"""

XDIST_TEST = """
import json
import os

import pytest


@pytest.mark.parametrize("i", range(8))
def test_record_ports(mocksup_servers, i):
    path = os.environ["PORTS_FILE"] + "." + os.environ["PYTEST_XDIST_WORKER"]
    with open(path, "a") as ports:
        ports.write(json.dumps({n: s.port for n, s in mocksup_servers.items()}) + "\\n")
"""

CUSTOM_CONFTEST = """
import pytest
from mocksup import MockRedisServer, MockServerConfig
from tests.test_harness import InProcessFake


@pytest.fixture(scope="session")
def mocksup_configs():
    return [
        MockServerConfig(name="cache", server_class=MockRedisServer),
        # The seed's two-method contract: await_start() and a stop() without parameters.
        MockServerConfig(name="fake", server_class=InProcessFake),
    ]
"""

CUSTOM_TEST = """
import socket


def send(server, data):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(data)
        return sock.recv(16)


def test_custom_servers_a(mock_servers):
    assert send(mock_servers["cache"], b"SET k v\\r\\n") == b"+OK\\r\\n"
    assert mock_servers["fake"].is_running()


def test_custom_servers_b_start_cleared(mock_servers):
    assert send(mock_servers["cache"], b"DBSIZE\\r\\n") == b":0\\r\\n"


def test_missing_default_server_is_explained(otlp_collector):
    pass
"""


class PytestPluginTest(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        registered = [e.value for e in entry_points(group="pytest11") if e.name == "mocksup"]
        # The plugin reaches pytest only through the entry point of the installed package.
        self.assertEqual(registered, ["mocksup.pytest_plugin"], "pip install mocksup first")
        self.folder = Path(tempfile.mkdtemp(prefix="mocksup-plugin-"))
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", str(self.folder)], check=True))

    def pytest(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)}
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
            cwd=self.folder,
            env=environ,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def test_default_fixtures_logs_of_failures_and_xdist(self) -> None:
        # One session under xdist: the default fixtures, a failing test's report, and each
        # worker's own servers.
        (self.folder / "test_it.py").write_text(USES_FIXTURES)
        # First in the run, so that both workers get some of them.
        (self.folder / "test_0_ports.py").write_text(XDIST_TEST)
        ports = self.folder / "ports"
        result = self.pytest("-n", "2", PORTS_FILE=str(ports))
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("1 failed, 12 passed", result.stdout)
        self.assertIn("FAILED test_it.py::test_fails_and_shows_logs", result.stdout)
        self.assertIn("mocksup otlp log", result.stdout)
        self.assertIn("mocksup vllm log", result.stdout)
        seen = {}
        for worker in ("gw0", "gw1"):
            lines = Path(f"{ports}.{worker}").read_text().splitlines()
            self.assertEqual(len(set(lines)), 1, "one set of servers per worker session")
            seen[worker] = json.loads(lines[0])
        self.assertTrue(set(seen["gw0"].values()).isdisjoint(seen["gw1"].values()))

    def test_custom_servers_from_conftest(self) -> None:
        (self.folder / "conftest.py").write_text(CUSTOM_CONFTEST)
        (self.folder / "test_custom.py").write_text(CUSTOM_TEST)
        result = self.pytest()
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("2 passed, 1 error", result.stdout)
        self.assertIn(
            "needs one MockOTLPCollector among the session's servers (cache, fake)", result.stdout
        )


if __name__ == "__main__":
    unittest.main()
