"""``mocksup up`` and friends: ``up`` runs as a real command in a subprocess; the queries and
the usage errors also run in-process through :func:`mocksup.cli.main`, against a real
collector, which is quicker and shows the same code at work."""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.request
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import openai
import psutil
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from mocksup import cli
from mocksup.serving import url_host
from mocksup.vllm._startup_spans import STARTUP_SPANS
from tests.support import ProcessTestCase, has_ipv6_loopback

FREE_PORTS = ["--otlp-port", "0", "--otlp-grpc-port", "0", "--vllm-port", "0"]


def _service(resource: Resource, name: str) -> None:
    resource.attributes.add(key="service.name").value.string_value = name


def _post(endpoint: str, path: str, request: Message) -> None:
    post = urllib.request.Request(
        endpoint + path,
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(post, timeout=10) as response:
        response.read()


def post_span(endpoint: str, name: str, service: str = "svc", number: int = 1) -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add()
    _service(spans.resource, service)
    span = spans.scope_spans.add().spans.add()
    span.name = name
    span.trace_id = bytes(range(1, 17))
    span.span_id = bytes(range(number, number + 8))
    _post(endpoint, "/v1/traces", request)


def post_gauge(endpoint: str, name: str, service: str, values: list[float]) -> None:
    request = ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add()
    _service(metrics.resource, service)
    metric = metrics.scope_metrics.add().metrics.add()
    metric.name = name
    for value in values:
        metric.gauge.data_points.add().as_double = value
    _post(endpoint, "/v1/metrics", request)


def post_log(endpoint: str, body: str, service: str, severity: str) -> None:
    request = ExportLogsServiceRequest()
    logs = request.resource_logs.add()
    _service(logs.resource, service)
    record = logs.scope_logs.add().log_records.add()
    record.body.string_value = body
    record.severity_text = severity
    _post(endpoint, "/v1/logs", request)


def run_main(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``mocksup ARGS`` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, env or {}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = cli.main(list(args))
        except SystemExit as exit:  # argparse's way out
            code = int(exit.code or 0)
    return code, out.getvalue(), err.getvalue()


class CLITestCase(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.folder = Path(tempfile.mkdtemp(prefix="mocksup-cli-"))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.folder)], check=True)

    def mocksup(self, *args: str) -> subprocess.Popen[str]:
        """Start ``python -m mocksup ARGS`` with its stdout and stderr piped."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mocksup", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.addCleanup(_end, proc)
        return proc

    def run_mocksup(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        return subprocess.run(
            [sys.executable, "-m", "mocksup", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def read_until(self, proc: subprocess.Popen[str], text: str) -> list[str]:
        """Lines of stdout up to the first one containing ``text`` (fails at EOF)."""
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if text in line:
                return lines
        assert proc.stderr is not None
        self.fail(f"no line with {text!r} before EOF: {lines} {proc.stderr.read()}")


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


class UpTest(CLITestCase):
    def test_json_ready_line_then_sigterm_stops_everything(self) -> None:
        proc = self.mocksup("up", *FREE_PORTS, "--json")
        ready: dict[str, Any] = json.loads(self.read_until(proc, "{")[-1])
        servers = ready["servers"]
        self.assertEqual(set(servers), {"otlp", "vllm"})
        pids = [entry["pid"] for entry in servers.values()]
        self.assertTrue(all(psutil.pid_exists(pid) for pid in pids))
        self.assertNotEqual(servers["otlp"]["ports"]["grpc_port"], 0)
        otlp = servers["otlp"]["endpoints"]["otlp_http"]
        self.assertEqual(ready["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"], otlp)
        self.assertEqual(
            ready["env"]["OPENAI_BASE_URL"], servers["vllm"]["endpoints"]["openai_base_url"]
        )
        # vLLM exports its spans to the collector started next to it.
        client = openai.OpenAI(base_url=ready["env"]["OPENAI_BASE_URL"], api_key="x")
        self.addCleanup(client.close)
        client.completions.create(model="mock-model", prompt="hello", max_tokens=3)
        spans = self.run_mocksup("spans", "--url", otlp, "--name", "llm_request", "--json")
        self.assertEqual(spans.returncode, 0, spans.stderr)
        self.assertEqual(json.loads(spans.stdout.splitlines()[0])["name"], "llm_request")

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(out, "")
        _, alive = psutil.wait_procs(
            [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=2
        )
        self.assertEqual(alive, [])

    def test_banner_ready_file_summary_and_ctrl_c(self) -> None:
        ready_file = self.folder / "ready.json"
        logs = self.folder / "logs"
        proc = self.mocksup(
            "up", *FREE_PORTS, "--ready-file", str(ready_file), "--log-dir", str(logs)
        )
        banner = "".join(self.read_until(proc, "Ctrl-C stops everything."))
        ready = json.loads(ready_file.read_text())
        otlp = ready["servers"]["otlp"]["endpoints"]["otlp_http"]
        self.assertIn(f"export OTEL_EXPORTER_OTLP_ENDPOINT={otlp}", banner)
        self.assertIn("export OPENAI_BASE_URL=", banner)
        self.assertEqual(ready["servers"]["otlp"]["log"], str(logs / "otlp.log"))
        post_span(otlp, "from-the-test")
        # The vLLM mock traces to the collector, so its start-up spans are there too.
        self.read_until(proc, f"otlp: {1 + len(STARTUP_SPANS)} spans")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0)
        self.assertIn("mocksup: stopped", out)
        self.assertFalse(ready_file.exists())
        self.assertIn("ready", (logs / "otlp.log").read_text())

    def test_host_and_quiet(self) -> None:
        host = "::1" if has_ipv6_loopback() else "127.0.0.1"
        proc = self.mocksup("up", "--servers", "otlp", "--host", host, "--quiet", *FREE_PORTS)
        banner = "".join(self.read_until(proc, "Ctrl-C stops everything."))
        self.assertIn(f"otlp_http http://{url_host(host)}:", banner)
        url = banner.split("otlp_http ")[1].split()[0]
        post_span(url, "over-the-host")
        code, out, _ = run_main("spans", "--url", url)
        self.assertEqual((code, len(out.splitlines())), (0, 1))
        # Quiet: no summary line in a second and a half (the summary comes once a second).
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 1.5)
        self.assertEqual(readable, [])
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        self.assertEqual((proc.returncode, out), (0, "mocksup: stopped\n"))

    def test_config_file_with_an_endpoint_reference(self) -> None:
        config = self.folder / "servers.toml"
        config.write_text(
            """
[[servers]]
name = "collector"
server_class = "mocksup.otlp:MockOTLPCollector"
init_kwargs = { port = 0, grpc_port = 0 }

[[servers]]
name = "llm"
server_class = "mocksup.vllm.MockVLLMServer"
init_kwargs = { port = 0, otlp_traces_endpoint = { endpoint = "collector:otlp_grpc" } }

[[servers]]
name = "cache"
server_class = "mocksup:MockRedisServer"
"""
        )
        proc = self.mocksup("up", "--config", str(config), "--json")
        ready = json.loads(self.read_until(proc, "{")[-1])
        self.assertEqual(list(ready["servers"]), ["collector", "llm", "cache"])
        self.assertEqual(ready["env"]["REDIS_URL"], ready["servers"]["cache"]["endpoints"]["url"])


class QueryTest(CLITestCase):
    """``spans``, ``metrics``, ``logs`` and ``stats`` against one collector ``up`` runs."""

    up: ClassVar[subprocess.Popen[str]]
    url: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        cls.up = subprocess.Popen(
            [sys.executable, "-m", "mocksup", "up", "--servers", "otlp", "--json", *FREE_PORTS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        cls.addClassCleanup(_end, cls.up)
        assert cls.up.stdout is not None
        ready = json.loads(cls.up.stdout.readline())
        cls.url = ready["servers"]["otlp"]["endpoints"]["otlp_http"]
        for number, (name, service) in enumerate(
            [("first", "a"), ("second", "b"), ("third", "a")], 1
        ):
            post_span(cls.url, name, service, number)
        post_gauge(cls.url, "queue.depth", "a", [1.0, 2.0])
        post_log(cls.url, "disk almost full", "b", "WARN")

    def query(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        url = [] if env else ["--url", self.url]
        code, out, err = run_main(*args, *url, env=env)
        self.assertEqual(code, 0, err)
        return out.splitlines()

    def names(self, lines: list[str]) -> list[str]:
        return [line.split("'")[1] for line in lines]

    def test_spans_limit_and_service(self) -> None:
        self.assertEqual(self.names(self.query("spans")), ["first", "second", "third"])
        self.assertEqual(self.names(self.query("spans", "--limit", "2")), ["second", "third"])
        self.assertEqual(
            self.names(self.query("spans", "--limit", "0")), ["first", "second", "third"]
        )
        self.assertEqual(self.names(self.query("spans", "--service", "a")), ["first", "third"])
        self.assertEqual(self.names(self.query("spans", "--name", "second")), ["second"])
        (line,) = self.query("spans", "--name", "third", "--json")
        self.assertEqual(json.loads(line)["name"], "third")

    def test_metrics(self) -> None:
        self.assertEqual(self.query("metrics"), ["a 'queue.depth' gauge 2 point(s)"])
        self.assertEqual(self.query("metrics", "--service", "b"), [])

    def test_logs(self) -> None:
        self.assertEqual(self.query("logs"), ["b WARN 'disk almost full'"])
        self.assertEqual(self.query("logs", "--service", "a"), [])

    def test_collector_url_from_the_environment(self) -> None:
        env = {"MOCKSUP_COLLECTOR_URL": self.url}
        stats = json.loads("\n".join(self.query("stats", env=env)))
        self.assertEqual(stats["items"], {"traces": 3, "metrics": 1, "logs": 1})
        self.assertEqual(len(self.query("spans", env=env)), 3)


class BadInputTest(CLITestCase):
    def assert_usage_error(self, result: tuple[int, str, str], text: str) -> None:
        code, _, err = result
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(text, err)

    def test_bad_options(self) -> None:
        # One through a real process: exit code and stderr reach the caller as they are.
        real = self.run_mocksup("up", "--bogus")
        self.assert_usage_error((real.returncode, real.stdout, real.stderr), "unrecognized")
        self.assert_usage_error(run_main("up", "--otlp-port", "70000"), "out of range")
        self.assert_usage_error(run_main("up", "--servers", "redis"), "--servers")
        self.assert_usage_error(run_main("spans", "--limit", "x"), "invalid int value")
        self.assert_usage_error(run_main(), "required")

    def test_bad_config_files(self) -> None:
        config = self.folder / "bad.toml"
        cases = {
            "[[servers]\n": "not valid TOML",
            "x = 1\n": "[[servers]]",
            '[[servers]]\nname = "a"\nserver_class = "nowhere:Nothing"\n': "cannot import",
            '[[servers]]\nname = "a"\nserver_class = "pathlib:Path"\n': "not a MockServerBase",
            '[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\n'
            "init_kwargs = { port = 70000 }\n": "port: Input should be less than or equal",
            '[[servers]]\nname = "../a"\nserver_class = "mocksup:MockRedisServer"\n': (
                "not a valid server name"
            ),
            '[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\ncolour = 1\n': (
                "unknown key"
            ),
            '[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\n'
            '[[servers]]\nname = "b"\nserver_class = "mocksup:MockRedisServer"\n'
            'init_kwargs = { host = { endpoint = "a:nope" } }\n': (
                "refers to endpoint 'nope' of 'a', which has url"
            ),
        }
        for text, expected in cases.items():
            with self.subTest(expected):
                config.write_text(text)
                self.assert_usage_error(run_main("up", "--config", str(config)), expected)
        self.assert_usage_error(
            run_main("up", "--config", str(self.folder / "missing.toml")), "cannot read"
        )

    def test_port_in_use_exits_1_with_the_error(self) -> None:
        holder = self.listening_socket()
        port = str(holder.getsockname()[1])
        result = self.run_mocksup(
            "up", "--servers", "otlp", "--otlp-port", port, "--otlp-grpc-port", "0"
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"port {port} on 127.0.0.1 is in use", result.stderr)

    def test_no_collector_to_ask(self) -> None:
        sock = self.listening_socket()
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        for command in ("stats", "spans", "metrics", "logs"):
            with self.subTest(command):
                code, _, err = run_main(command, "--url", f"http://127.0.0.1:{port}")
                self.assertEqual(code, 1)
                self.assertIn("did not answer", err)

    def test_version_and_console_script(self) -> None:
        script = Path(sys.executable).parent / "mocksup"
        result = subprocess.run(
            [str(script), "--version"], capture_output=True, text=True, check=False, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"^mocksup \d+\.\d+")


if __name__ == "__main__":
    unittest.main()
