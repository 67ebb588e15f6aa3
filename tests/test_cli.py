"""``mocksup up`` and friends, run as real commands in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.request
from pathlib import Path
from typing import Any

import openai
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import ProcessTestCase

FREE_PORTS = ["--otlp-port", "0", "--otlp-grpc-port", "0", "--vllm-port", "0"]


def post_span(endpoint: str, name: str) -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = name
    span.trace_id = bytes(range(1, 17))
    span.span_id = bytes(range(1, 9))
    post = urllib.request.Request(
        endpoint + "/v1/traces",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(post, timeout=10) as response:
        response.read()


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
        self.read_until(proc, "otlp: 1 spans")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0)
        self.assertIn("mocksup: stopped", out)
        self.assertFalse(ready_file.exists())
        self.assertIn("ready", (logs / "otlp.log").read_text())

    def test_stats_and_spans_of_a_running_collector(self) -> None:
        proc = self.mocksup("up", *FREE_PORTS, "--servers", "otlp", "--json")
        ready = json.loads(self.read_until(proc, "{")[-1])
        self.assertEqual(set(ready["servers"]), {"otlp"})
        otlp = ready["servers"]["otlp"]["endpoints"]["otlp_http"]
        post_span(otlp, "listed")
        spans = self.run_mocksup("spans", "--url", otlp)
        self.assertEqual(spans.returncode, 0, spans.stderr)
        self.assertIn(
            "0102030405060708090a0b0c0d0e0f10 0102030405060708 parent=- - 'listed'", spans.stdout
        )
        stats = self.run_mocksup("stats", "--url", otlp)
        self.assertEqual(json.loads(stats.stdout)["items"]["traces"], 1)

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


class BadInputTest(CLITestCase):
    def assert_usage_error(self, result: subprocess.CompletedProcess[str], text: str) -> None:
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertIn(text, result.stderr)

    def test_bad_options(self) -> None:
        self.assert_usage_error(self.run_mocksup("up", "--bogus"), "unrecognized arguments")
        self.assert_usage_error(self.run_mocksup("up", "--otlp-port", "70000"), "out of range")
        self.assert_usage_error(self.run_mocksup("up", "--servers", "redis"), "--servers")
        self.assert_usage_error(self.run_mocksup(), "required")

    def test_bad_config_files(self) -> None:
        config = self.folder / "bad.toml"
        cases = {
            "[[servers]\n": "not valid TOML",
            "x = 1\n": "[[servers]]",
            '[[servers]]\nname = "a"\nserver_class = "nowhere:Nothing"\n': "cannot import",
            '[[servers]]\nname = "a"\nserver_class = "pathlib:Path"\n': "not a MockServerBase",
            '[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\n'
            "init_kwargs = { port = 70000 }\n": "port: Input should be less than or equal",
            '[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\ncolour = 1\n': (
                "unknown key"
            ),
        }
        for text, expected in cases.items():
            with self.subTest(expected):
                config.write_text(text)
                self.assert_usage_error(self.run_mocksup("up", "--config", str(config)), expected)
        self.assert_usage_error(
            self.run_mocksup("up", "--config", str(self.folder / "missing.toml")), "cannot read"
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
        result = self.run_mocksup("stats", "--url", f"http://127.0.0.1:{port}")
        self.assertEqual(result.returncode, 1)
        self.assertIn("did not answer", result.stderr)

    def test_version_and_console_script(self) -> None:
        script = Path(sys.executable).parent / "mocksup"
        result = subprocess.run(
            [str(script), "--version"], capture_output=True, text=True, check=False, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"^mocksup \d+\.\d+")


if __name__ == "__main__":
    unittest.main()
