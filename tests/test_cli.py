"""``mocksup up`` and friends: ``up`` runs as a real command in a subprocess; the queries and
the usage errors also run in-process through :func:`mocksup.cli.main`, against a real
collector, which is quicker and shows the same code at work."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, get_args
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

from mocksup import MockOTLPCollector, cli
from mocksup._cli import entry
from mocksup._cli.live import Follower
from mocksup.otlp.dump import signal_of
from mocksup.serving import url_host
from mocksup.vllm import FaultKind, VLLMClient
from mocksup.vllm._startup_spans import STARTUP_SPANS
from tests.support import ProcessTestCase, has_ipv6_loopback, run_code

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


def post_span(
    endpoint: str,
    name: str,
    service: str = "svc",
    number: int = 1,
    attributes: dict[str, int] | None = None,
    *,
    trace: bytes = bytes(range(1, 17)),
    parent: bytes = b"",
) -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add()
    _service(spans.resource, service)
    span = spans.scope_spans.add().spans.add()
    span.name = name
    span.trace_id = trace
    span.span_id = bytes(range(number, number + 8))
    span.parent_span_id = parent
    span.kind = span.SPAN_KIND_INTERNAL
    span.start_time_unix_nano = 1_000_000_000 + number
    span.end_time_unix_nano = span.start_time_unix_nano + 1_000_000
    for key, value in (attributes or {}).items():
        span.attributes.add(key=key).value.int_value = value
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

    def mocksup(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``python -m mocksup ARGS`` with its stdout and stderr piped, and SIGINT
        as a terminal's Ctrl-C finds it (see :func:`sigint_as_a_terminals`)."""
        env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(sys.path)}
        with sigint_as_a_terminals():
            proc = subprocess.Popen(
                [sys.executable, "-m", "mocksup", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        self.addCleanup(_end, proc)
        return proc

    def run_mocksup(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(sys.path)}
        return subprocess.run(
            [sys.executable, "-m", "mocksup", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def python(self, script: str, *args: str) -> subprocess.Popen[str]:
        """Start ``python -c SCRIPT ARGS`` with this process's import path, its stdout and
        stderr piped (ended at cleanup)."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.addCleanup(_end, proc)
        return proc

    def up_printing_a_child(self, script: str) -> tuple[subprocess.Popen[str], psutil.Process]:
        """:meth:`python` with ``up --servers otlp`` on free ports, for a ``script`` that
        prints the pid of a child first: the process, and that child."""
        proc = self.python(script, "up", "--servers", "otlp", *FREE_PORTS[:4])
        assert proc.stdout is not None
        return proc, psutil.Process(int(proc.stdout.readline()))

    def stop(self, proc: subprocess.Popen[str]) -> None:
        """SIGTERM ``proc``, and check that it exits 0."""
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0, err)

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


@contextlib.contextmanager
def sigint_as_a_terminals() -> Iterator[None]:
    """Within: the programs started get SIGINT's default action. A suite run as a
    background job of a script has SIGINT ignored, which children inherit (Python then
    installs no handler for it), and a SIGINT a test sends would do nothing; a handler of
    ours is reset to the default by the exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie has ended: it only waits to be reaped)."""
    try:
        # is_running() first: it tells a reused pid from the process that had it.
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _maps_pydantic(pid: int) -> bool:
    """Whether process ``pid`` has loaded pydantic's compiled core."""
    return "_pydantic_core" in Path(f"/proc/{pid}/maps").read_text()


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
        self.assertEqual(servers["otlp"]["url"], otlp)
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
        (resource,) = json.loads(spans.stdout)["resourceSpans"]
        (span,) = resource["scopeSpans"][0]["spans"]
        self.assertEqual((span["name"], span["kind"]), ("llm_request", 2))

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(out, "")
        _, alive = psutil.wait_procs(
            [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=2
        )
        self.assertEqual(alive, [])

    def test_its_processes_are_its_servers_named_and_all_end_promptly_on_sigterm(self) -> None:
        proc = self.mocksup("up", *FREE_PORTS, "--json")
        ready: dict[str, Any] = json.loads(self.read_until(proc, "{")[-1])
        pids = {name: entry["pid"] for name, entry in ready["servers"].items()}
        up = psutil.Process(proc.pid)
        # No zygote, no idle child: what runs under ``up`` is its servers (and what they
        # started), each its child, each named for its mock.
        tree = up.children(recursive=True)
        self.assertEqual({child.pid for child in up.children()}, set(pids.values()))
        for name, kind in (("otlp", "MockOTLPCollector"), ("vllm", "MockVLLMServer")):
            child = psutil.Process(pids[name])
            self.assertEqual(" ".join(child.cmdline()), f"mocksup {name} ({kind})")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - signalled
        self.assertEqual(proc.returncode, 0, err)
        # Every process that ran under it was stopped and reaped before it exited: none is
        # left to end on its own when its lifeline closes.
        self.assertEqual([p for p in tree if _running(p)], [])
        # Under 100 ms on an idle machine; the bound is generous for a busy one, yet under
        # the graceful part of a stop (1.75 s of the 2 s stop_timeout), so a server that has
        # to be killed, or any wait on the way out, fails it.
        self.assertLess(took, 1.5)

    @unittest.skipUnless(sys.platform.startswith("linux"), "reads /proc/PID/maps")
    def test_the_collector_serves_before_it_loads_pydantic(self) -> None:
        # Its child gets plain settings and imports only what serves them: pydantic (its
        # compiled core, seen in the child's memory map) is loaded by the first request
        # that needs it, a fault, and not by ingest, queries or the wait for the ready line.
        proc = self.mocksup("up", "--servers", "otlp", *FREE_PORTS[:4], "--json")
        ready: dict[str, Any] = json.loads(self.read_until(proc, "{")[-1])
        entry = ready["servers"]["otlp"]
        otlp = entry["endpoints"]["otlp_http"]
        post_span(otlp, "first")
        with urllib.request.urlopen(otlp + "/mocksup/spans", timeout=10) as response:
            names = [span["name"] for span in json.load(response)["spans"]]
        self.assertEqual(names, ["first"])
        self.assertFalse(_maps_pydantic(entry["pid"]))
        fault = json.dumps({"status": 503}).encode()
        post = urllib.request.Request(
            otlp + "/mocksup/faults", data=fault, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=10) as response:
            self.assertEqual(json.load(response)["faults"][0]["status"], 503)
        self.assertTrue(_maps_pydantic(entry["pid"]))

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
        self.assertEqual(ready["hostname"], socket.gethostname())
        post_span(otlp, "from-the-test")
        # Metric points are data points: one gauge with three of them is three.
        post_gauge(otlp, "queue.depth", "svc", [1.0, 2.0, 3.0])
        # The vLLM mock traces to the collector, so its start-up spans are there too.
        self.read_until(proc, f"otlp: {1 + len(STARTUP_SPANS)} spans, 3 metric points")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0)
        self.assertIn("mocksup: stopped", out)
        self.assertFalse(ready_file.exists())
        self.assertIn("ready", (logs / "otlp.log").read_text())

    def test_status_line_fits_an_80_column_terminal(self) -> None:
        main, child = pty.openpty()
        self.addCleanup(os.close, main)
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mocksup", "up", *FREE_PORTS],
            stdin=subprocess.DEVNULL,
            stdout=child,
            stderr=child,
            env=env,
        )
        os.close(child)
        self.addCleanup(_end_pty, proc)
        screen = _read_pty_until(main, lambda text: text.count("\r\x1b[K[") >= 3)
        refreshes = [part.split("\r")[0] for part in screen.split("\r\x1b[K")[1:]]
        self.assertGreaterEqual(len(refreshes), 3, screen)
        for line in refreshes:
            self.assertLessEqual(len(line), 79, line)
            self.assertNotIn("\n", line)
        # The full line is longer: it was cut to fit, not short by luck.
        self.assertTrue(refreshes[-1].endswith("…"), refreshes[-1])

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

    def test_options_from_the_environment(self) -> None:
        ready_file = self.folder / "ready.json"
        proc = self.mocksup(
            "up",
            env={
                "MOCKSUP_SERVERS": "otlp",
                "MOCKSUP_OTLP_PORT": "0",
                "MOCKSUP_OTLP_GRPC_PORT": "0",
                "MOCKSUP_READY_FILE": str(ready_file),
                "MOCKSUP_JSON": "1",
                "MOCKSUP_HOST": "127.0.0.1",
            },
        )
        line = json.loads(self.read_until(proc, "{")[-1])
        self.assertEqual(list(line["servers"]), ["otlp"])
        self.assertEqual(json.loads(ready_file.read_text())["servers"], line["servers"])
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(10), 0)
        # The command line wins over the environment.
        code, _, err = run_main("up", "--servers", "nope", env={"MOCKSUP_SERVERS": "otlp"})
        self.assertEqual(code, 2)
        self.assertIn("--servers takes otlp and/or vllm, not nope", err)

    def test_vllm_settings_on_the_command_line(self) -> None:
        proc = self.mocksup(
            "up", "--servers", "vllm", "--vllm-port", "0", "--json",
            "--vllm-model", "tiny", "--vllm-api-key", "sesame", "--vllm-max-model-len", "64",
            "--vllm-ttft", "0.3", "--vllm-fault", "rate_limit", "--vllm-fault-first", "1",
            "--vllm-args", "ignored-model --max-num-seqs 3 --dtype bfloat16",
        )  # fmt: skip
        ready = json.loads(self.read_until(proc, "{")[-1])
        self.assertEqual(ready["env"]["OPENAI_API_KEY"], "sesame")
        base = ready["env"]["OPENAI_BASE_URL"]
        client = openai.OpenAI(base_url=base, api_key="sesame", max_retries=0)
        self.addCleanup(client.close)
        with self.assertRaises(openai.RateLimitError):  # the first request fails
            client.completions.create(model="tiny", prompt="hi", max_tokens=2)
        started = time.monotonic()
        client.completions.create(model="tiny", prompt="hi", max_tokens=2)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)  # the time to first token
        with self.assertRaises(openai.BadRequestError) as raised:  # 64 tokens at most
            client.completions.create(model="tiny", prompt="hi " * 80, max_tokens=2)
        self.assertIn("64", str(raised.exception))
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
        settings = VLLMClient(ready["servers"]["vllm"]["url"]).runtime_config()
        # --vllm-model wins over the model of --vllm-args; its other flags are read.
        self.assertEqual((settings["model"], settings["max_num_seqs"]), ("tiny", 3))

    def test_print_and_dump_everything_that_arrived(self) -> None:
        dump = self.folder / "run.jsonl"
        proc = self.mocksup("up", "--servers", "otlp", *FREE_PORTS, "--print", "--dump", str(dump),
                            "--ready-file", str(self.folder / "ready.json"))  # fmt: skip
        banner = "".join(self.read_until(proc, "Ctrl-C stops everything."))
        url = banner.split("otlp_http ")[1].split()[0]
        post_span(url, "first", "shop")
        self.assertIn("span shop 'first' ", self.read_until(proc, "'first'")[-1])
        post_log(url, "disk almost full", "shop", "WARN")
        self.assertIn("log shop WARN disk almost full", self.read_until(proc, "disk")[-1])
        # What a clear() forgets stays in the dump; what arrives just before the stop too.
        run_main("stats", "--url", url)
        urllib.request.urlopen(urllib.request.Request(url + "/mocksup/clear", method="POST"))
        post_gauge(url, "queue.depth", "shop", [4.0])
        post_span(url, "last", "shop", 2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("metric shop 'queue.depth' gauge", out)
        self.assertIn("'last'", out)
        lines = [json.loads(line) for line in dump.read_text().splitlines()]
        self.assertEqual(
            [signal_of(line) for line in lines], ["traces", "logs", "metrics", "traces"]
        )
        names = [
            span["name"]
            for line in lines
            for resource in line.get("resourceSpans", [])
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]
        self.assertEqual(names, ["first", "last"])

    def test_json_with_print_is_the_ready_line_then_the_items(self) -> None:
        # vLLM's start-up spans reach the collector before ``up`` is ready: they come after
        # the JSON line, which stays the first line, whole, for a harness that reads it.
        proc = self.mocksup("up", *FREE_PORTS, "--json", "--print")
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        self.assertEqual(list(ready["servers"]), ["otlp", "vllm"])
        self.assertRegex(proc.stdout.readline(), r"^span \S+ '\w[^']*' INTERNAL ")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(10), 0)

    def test_print_follows_once_the_banner_is_out(self) -> None:
        # vLLM's start-up spans are in the collector before ``up`` is ready: a follower that
        # ran while the banner is printed would print them amid its lines. ``up`` runs here
        # with its banner function wrapped to say which followers run when it is called.
        code = (
            "import sys, threading\n"
            "from mocksup import cli\n"
            "banner = cli._print_banner\n"
            "def said(*args):\n"
            "    names = [t.name for t in threading.enumerate() if 'follow' in t.name]\n"
            "    print('following:', names)\n"
            "    banner(*args)\n"
            "cli._print_banner = said\n"
            "sys.exit(cli.main(sys.argv[1:]))\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, "-c", code, "up", *FREE_PORTS, "--print"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)  # fmt: skip
        self.addCleanup(_end, proc)
        self.assertEqual(self.read_until(proc, "following:"), ["following: []\n"])
        self.read_until(proc, "Ctrl-C stops everything.")
        self.assertRegex(self.read_until(proc, "span ")[-1], r"^span \S+ '\w[^']*' INTERNAL ")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(10), 0)

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

    def test_host_binds_the_config_servers_that_set_none(self) -> None:
        config = self.folder / "servers.toml"
        config.write_text(
            '[[servers]]\nname = "cache"\nserver_class = "mocksup:MockRedisServer"\n'
            '[[servers]]\nname = "pinned"\nserver_class = "mocksup:MockRedisServer"\n'
            'init_kwargs = { host = "127.0.0.1" }\n'
        )
        proc = self.mocksup("up", "--config", str(config), "--host", "127.0.0.2", "--json")
        servers = json.loads(self.read_until(proc, "{")[-1])["servers"]
        bound = {name: ("127.0.0.2" if name == "cache" else "127.0.0.1") for name in servers}
        for name, host in bound.items():
            with self.subTest(name):
                port = servers[name]["ports"]["port"]
                self.assertEqual(servers[name]["host"], host)
                socket.create_connection((host, port), timeout=5).close()
                other = "127.0.0.1" if host == "127.0.0.2" else "127.0.0.2"
                with self.assertRaises(ConnectionRefusedError):
                    socket.create_connection((other, port), timeout=5).close()


class StartCancelTest(CLITestCase):
    def test_a_signal_during_the_start_stops_it_at_once(self) -> None:
        # The rendezvous server is mid-start (bound, not ready) once it connects to the
        # barrier, which never lets it go: only cancelling the start ends the command before
        # the server's 60 s start timeout. The collector next to it may be ready or not.
        for signum in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=signum.name):
                barrier = self.listening_socket()
                barrier.settimeout(30)
                config = self.folder / "servers.toml"
                config.write_text(
                    '[[servers]]\nname = "otlp"\nserver_class = "mocksup.otlp:MockOTLPCollector"\n'
                    "init_kwargs = { port = 0, grpc_port = 0 }\n"
                    '[[servers]]\nname = "held"\nserver_class = "tests.targets:Rendezvous"\n'
                    f"init_kwargs = {{ barrier_port = {barrier.getsockname()[1]}, "
                    "start_timeout = 60 }\n"
                )
                proc = self.mocksup("up", "--config", str(config))
                held, _ = barrier.accept()
                self.addCleanup(held.close)
                tree = psutil.Process(proc.pid).children(recursive=True)
                signalled = time.monotonic()
                proc.send_signal(signum)
                try:
                    out, err = proc.communicate(timeout=15)
                except subprocess.TimeoutExpired:
                    self.fail(f"still starting 15 s after {signum.name}")
                took = time.monotonic() - signalled
                self.assertEqual(proc.returncode, 0, err)
                self.assertEqual((out, err), ("mocksup: stopped\n", ""))
                self.assertEqual([p for p in tree if _running(p)], [])
                # Tens of milliseconds on an idle machine; generous for a busy one, and far
                # below the 60 s the start would otherwise have gone on for.
                self.assertLess(took, 5.0)

    def test_a_signal_while_the_command_imports_ends_it_there(self) -> None:
        # The collector serves before the command has imported pydantic and the harness:
        # a SIGTERM then (the test makes that stretch 30 s) must not wait for them. The
        # command ends where it is, kills the child that served nobody, exits 0.
        script = (
            "import sys, time\n"
            "from mocksup import _launch, cli\n"
            "hand_over_settings = _launch.Prestarted.hand_over_settings\n"
            "def spy(self, body, log_dir):\n"
            "    handed = hand_over_settings(self, body, log_dir)\n"
            "    print(self._early[body.name][1].proc.pid, flush=True)\n"
            "    return handed\n"
            "_launch.Prestarted.hand_over_settings = spy\n"
            "def imports_for_ever(args):\n"
            "    time.sleep(30)\n"
            "cli.default_server_configs = imports_for_ever\n"
            "sys.exit(cli.main(sys.argv[1:]))\n"
        )
        proc, child = self.up_printing_a_child(script)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("still running 15 s after SIGTERM")
        took = time.monotonic() - signalled
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual((out, err), ("mocksup: stopped\n", ""))
        self.assertFalse(_running(child))
        # Milliseconds: the kill and reap of the child; far below the 30 s stretch.
        self.assertLess(took, 5.0)

    def test_a_signal_landing_in_a_callback_still_ends_it_quietly(self) -> None:
        # Python runs a signal's handler between bytecodes, inside a callback too (the
        # import system's lock weakrefs have them), and drops what a callback raises: the
        # stop must not be lost, nor its traceback printed, nor the start begin.
        script = (
            "import signal, sys, weakref\n"
            "from mocksup import cli\n"
            "hand_over = cli._hand_over_collector\n"
            "class Gone:\n"
            "    pass\n"
            "def signalled_in_a_callback(args):\n"
            "    def callback(ref):\n"
            "        signal.raise_signal(signal.SIGTERM)  # its handler runs in here\n"
            "    gone = Gone()\n"
            "    ref = weakref.ref(gone, callback)\n"
            "    del gone\n"
            "    return hand_over(args)\n"
            "cli._hand_over_collector = signalled_in_a_callback\n"
            "start = cli._start\n"
            "def spy(*args):\n"
            "    print('the start began', flush=True)\n"
            "    return start(*args)\n"
            "cli._start = spy\n"
            "sys.exit(cli.main(sys.argv[1:]))\n"
        )
        proc = self.python(script, "up", "--servers", "otlp", *FREE_PORTS[:4])
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual((out, err), ("mocksup: stopped\n", ""))

    def test_children_no_start_adopted_end_at_once_even_mid_import(self) -> None:
        # A signal that comes after ``up`` sent the collector its settings but before the
        # start adopted its child ends the command through discard(): the child, still
        # importing its HTTP side then, must not be waited for. Here its import never ends.
        from mocksup import _launch

        prestarted = _launch.Prestarted()
        self.addCleanup(prestarted.discard)
        root = str(Path(__file__).resolve().parent.parent)
        with mock.patch.dict(os.environ, {"PYTHONPATH": os.pathsep.join([root, *sys.path])}):
            prestarted.launch(["tests.hang_on_import"])
        (pid,) = prestarted.pids()
        started = time.monotonic()
        prestarted.discard()
        took = time.monotonic() - started
        self.assertFalse(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie")
        # SIGKILL and reap: milliseconds. Asked to stop, it would have been killed only
        # after discard()'s 2 s wait.
        self.assertLess(took, 1.5)

    def test_up_in_process_puts_back_the_signal_handlers_it_found(self) -> None:
        # main() may run inside a program (these tests do): its handlers, which turn a
        # signal into a stop, are installed for the command's run only.
        before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
        code, _, err = run_main("up", "--servers", "nothing")
        self.assertEqual(code, 2, err)
        self.assertEqual({signum: signal.getsignal(signum) for signum in before}, before)


class HandOverTest(CLITestCase):
    def test_the_collector_gets_its_settings_before_up_imports_asyncio(self) -> None:
        # ``up`` sends each server that refers to no other to the child launched for it
        # as soon as it is validated: before the harness's start machinery (asyncio, the
        # supervisor) is imported; the start then adopts that very child.
        script = (
            "import json, sys\n"
            "from mocksup import _launch, cli\n"
            "hand_over = _launch.Prestarted.hand_over\n"
            "def spy(self, server):\n"
            "    loaded = [m for m in ('asyncio', 'mocksup._process') if m in sys.modules]\n"
            "    handed = hand_over(self, server)\n"
            "    pid = self._handed[id(server)][1].proc.pid if handed else None\n"
            "    print(json.dumps({'loaded': loaded, 'pid': pid}), file=sys.stderr, flush=True)\n"
            "    return handed\n"
            "_launch.Prestarted.hand_over = spy\n"
            "sys.exit(cli.main(sys.argv[1:]))\n"
        )
        args = ["up", "--servers", "otlp", *FREE_PORTS[:4], "--json"]
        proc = self.python(script, *args)
        ready = json.loads(self.read_until(proc, "{")[-1])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0, err)
        (handed,) = [json.loads(line) for line in err.splitlines()]
        self.assertEqual(handed["loaded"], [])
        self.assertEqual(handed["pid"], ready["servers"]["otlp"]["pid"])

    def _up_with_spy(
        self, prelude: str, *args: str
    ) -> tuple[subprocess.Popen[str], dict[str, Any], dict[str, Any]]:
        """``up ARGS --json``, ``prelude`` run first, with a spy on the early hand-over of
        the collector: the process (serving), its ready document, and what the spy saw
        (what was imported then, the child that took the settings)."""
        script = (
            "import json, sys\n"
            "from mocksup import _launch, cli\n"
            f"{prelude}\n"
            "hand_over_settings = _launch.Prestarted.hand_over_settings\n"
            "def spy(self, body, log_dir):\n"
            "    loaded = [m for m in ('pydantic', 'mocksup.base') if m in sys.modules]\n"
            "    handed = hand_over_settings(self, body, log_dir)\n"
            "    pid = self._early[body.name][1].proc.pid if handed else None\n"
            "    print(json.dumps({'loaded': loaded, 'pid': pid}), flush=True)\n"
            "    return handed\n"
            "_launch.Prestarted.hand_over_settings = spy\n"
            "sys.exit(cli.main(sys.argv[1:]))\n"
        )
        proc = self.python(script, *args, "--json")
        lines = self.read_until(proc, '"servers"')
        spied = [json.loads(line) for line in lines[:-1]]
        self.assertEqual(len(spied), 1, lines)
        return proc, json.loads(lines[-1]), spied[0]

    def test_the_collector_serves_before_up_imports_pydantic(self) -> None:
        # The default collector's settings are known without the model: its child gets
        # them before pydantic is imported, and the start claims that very child.
        proc, ready, spied = self._up_with_spy("", "up", "--servers", "otlp", *FREE_PORTS[:4])
        self.stop(proc)
        self.assertEqual(spied, {"loaded": [], "pid": ready["servers"]["otlp"]["pid"]})

    def test_settings_other_than_the_models_cost_the_child_not_the_settings(self) -> None:
        # Were the settings sent early stale, the start would find them other than the
        # model's: it ends that child and starts the collector with the model's.
        prelude = "from mocksup._cli import settings\nsettings.COLLECTOR_SETTINGS['max_items'] = 7"
        proc, ready, spied = self._up_with_spy(prelude, "up", "--servers", "otlp", *FREE_PORTS[:4])
        otlp = ready["servers"]["otlp"]
        try:
            with urllib.request.urlopen(otlp["url"] + "/mocksup/stats", timeout=10) as answer:
                stats = json.load(answer)
            early_gone = not psutil.pid_exists(spied["pid"]) or (
                psutil.Process(spied["pid"]).status() == psutil.STATUS_ZOMBIE
            )
        finally:
            self.stop(proc)
        self.assertIsNotNone(spied["pid"])
        self.assertNotEqual(spied["pid"], otlp["pid"])
        self.assertTrue(early_gone)
        self.assertEqual(stats["max_items"], 1_000_000)


class EntryTest(CLITestCase):
    """The collector's child of ``up`` is launched before the command is imported."""

    def _launches(self, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any], list[Any]]:
        """The ``mocksup`` entry point run with ``up ARGS --json`` and a spy on the launch
        of children: the process (serving), its ready document, the launches in order."""
        script = (
            "import json, sys\n"
            "from mocksup import _launch\n"
            "launch = _launch.Prestarted.launch\n"
            "def spy(self, modules):\n"
            "    launch(self, modules)\n"
            "    pid = self._idle[-1][0].proc.pid\n"
            "    cli = 'mocksup.cli' in sys.modules\n"
            "    print(json.dumps({'cli': cli, 'modules': modules, 'pid': pid}), flush=True)\n"
            "_launch.Prestarted.launch = spy\n"
            "from mocksup._cli import entry\n"
            "sys.exit(entry.main())\n"
        )
        proc = self.python(script, *args, "--json")
        lines = self.read_until(proc, '"servers"')
        return proc, json.loads(lines[-1]), [json.loads(line) for line in lines[:-1]]

    def test_the_collectors_child_is_launched_first_and_serves(self) -> None:
        proc, ready, launches = self._launches("up", "--servers", "otlp", *FREE_PORTS[:4])
        self.stop(proc)
        modules = entry.DEFAULT_MODULES["otlp"]
        otlp = ready["servers"]["otlp"]["pid"]
        self.assertEqual(launches, [{"cli": False, "modules": modules, "pid": otlp}])

    def test_a_wrong_guess_costs_a_child_that_the_start_ends(self) -> None:
        # "--serv" is --servers to the parser, not to the guess: the collector's child is
        # launched for nothing, the vLLM mock's by the start; the first is gone once ready.
        proc, ready, launches = self._launches("up", "--serv", "vllm", "--vllm-port", "0")
        try:
            early_running = _running(psutil.Process(launches[0]["pid"]))
        except psutil.NoSuchProcess:
            early_running = False
        finally:
            self.stop(proc)
        self.assertEqual(list(ready["servers"]), ["vllm"])
        self.assertEqual(
            [(launch["cli"], launch["modules"]) for launch in launches],
            [(False, entry.DEFAULT_MODULES["otlp"]), (True, entry.DEFAULT_MODULES["vllm"])],
        )
        self.assertEqual(ready["servers"]["vllm"]["pid"], launches[1]["pid"])
        self.assertFalse(early_running)

    def test_a_signal_before_the_command_is_imported_leaves_no_child(self) -> None:
        # The collector's child is launched before the command installs its signal
        # handlers: a SIGTERM then ends the command at once, and the child, which sees its
        # lifeline close once its imports are done, ends too.
        script = (
            "import os, signal, sys\n"
            "from mocksup import _launch\n"
            "launch = _launch.Prestarted.launch\n"
            "def spy(self, modules):\n"
            "    launch(self, modules)\n"
            "    print(self._idle[-1][0].proc.pid, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "_launch.Prestarted.launch = spy\n"
            "from mocksup._cli import entry\n"
            "sys.exit(entry.main())\n"
        )
        proc, child = self.up_printing_a_child(script)
        self.assertEqual(proc.wait(10), -signal.SIGTERM)
        # About 0.1 s (the rest of its imports); generous for a busy machine.
        deadline = time.monotonic() + 5.0
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse(_running(child))

    def test_an_early_launch_that_fails_is_left_to_the_start(self) -> None:
        # Out of processes for a moment, say: the command goes on, and its start launches
        # the collector's child as it would have without the early launch.
        script = (
            "import sys\n"
            "from mocksup import _launch\n"
            "launch = _launch.launch\n"
            "calls = []\n"
            "def failing_once(*args, **kwargs):\n"
            "    calls.append(1)\n"
            "    if len(calls) == 1:\n"
            "        raise BlockingIOError(11, 'Resource temporarily unavailable')\n"
            "    return launch(*args, **kwargs)\n"
            "_launch.launch = failing_once\n"
            "from mocksup._cli import entry\n"
            "sys.exit(entry.main())\n"
        )
        args = ["up", "--servers", "otlp", *FREE_PORTS[:4], "--json"]
        proc = self.python(script, *args)
        ready = json.loads(self.read_until(proc, '"servers"')[-1])
        self.stop(proc)
        self.assertEqual(list(ready["servers"]), ["otlp"])

    def test_the_guess_reads_the_plain_cases_only(self) -> None:
        cases: list[tuple[list[str], dict[str, str], bool]] = [
            (["up"], {}, True),
            (["up", "--servers", "otlp"], {}, True),
            (["up", "--servers=vllm,otlp"], {}, True),
            (["up", "--servers", "vllm"], {}, False),
            (["up", "--servers", "otlp", "--servers", "vllm"], {}, False),  # the last wins
            (["up"], {"MOCKSUP_SERVERS": "vllm"}, False),
            (["up", "--servers", "otlp"], {"MOCKSUP_SERVERS": "vllm"}, True),
            (["up", "--config", "servers.toml"], {}, False),
            (["up", "--config=servers.toml"], {}, False),
            (["up"], {"MOCKSUP_CONFIG": "servers.toml"}, False),
            (["up", "--help"], {}, False),
            (["up", "--servers"], {}, False),
            (["spans"], {}, False),
            ([], {}, False),
        ]
        for argv, environ, wanted in cases:
            with self.subTest(argv=argv, environ=environ):
                self.assertIs(entry.collector_wanted(argv, environ), wanted)


class EarlyCollectorTest(unittest.TestCase):
    """The settings ``up`` sends its collector before it imports pydantic are the model's."""

    def early_and_model(self, *argv: str, env: dict[str, str] | None = None) -> tuple[Any, Any]:
        from mocksup._cli.settings import apply_environment, default_server_configs, early_collector

        parser, commands = cli._parser()
        apply_environment(commands["up"], env or {})
        args = parser.parse_args(["up", *argv])
        configs, _ = default_server_configs(args)
        (model,) = [config.create() for config in configs if config.name == "otlp"]
        return early_collector(args), model

    def test_the_options_that_apply_give_the_models_settings(self) -> None:
        cases: list[tuple[list[str], dict[str, str]]] = [
            ([], {}),
            (["--servers", "otlp"], {}),
            (["--servers", "otlp,"], {}),  # blanks are no servers, here as in the start
            (["--servers", "vllm, otlp", "--vllm-max-model-len", "128"], {}),
            (["--host", "127.0.0.2", "--otlp-port", "0", "--otlp-grpc-port", "5317"], {}),
            (["--otlp-compat", "spec", "--log-dir", "logs"], {}),
            ([], {"MOCKSUP_OTLP_PORT": "4999", "MOCKSUP_OTLP_COMPAT": "spec"}),
        ]
        for argv, env in cases:
            with self.subTest(argv=argv, env=env):
                early, model = self.early_and_model(*argv, env=env)
                self.assertIsNotNone(early)
                self.assertEqual(vars(early)["settings"], model.model_dump())
                self.assertTrue(early.is_of(model))

    def test_none_where_the_model_must_judge_first(self) -> None:
        from mocksup._cli.settings import early_collector

        parser, _ = cli._parser()
        for argv in (
            ["--config", "servers.toml"],
            ["--start-timeout", "5"],
            ["--servers", "vllm"],
            ["--servers", "otlp,redis"],
            ["--servers", "otlp", "--vllm-max-model-len", "128"],
            ["--host", "192.0.2.1"],  # TEST-NET-1: no address of this machine
        ):
            with self.subTest(argv=argv):
                self.assertIsNone(early_collector(parser.parse_args(["up", *argv])))


class SignalInsideWaitTest(unittest.TestCase):
    def test_a_stop_signal_while_the_main_thread_holds_the_events_lock_is_not_lost(
        self,
    ) -> None:
        # ``up`` waits for its stop request in Event.wait(), whose own lock the main thread
        # holds between two of its checks: a signal handled there must neither wait for that
        # lock (the command would hang) nor be lost.
        for signum in ("SIGTERM", "SIGINT"):
            with self.subTest(signum):
                script = (
                    "import signal\n"
                    "from mocksup.cli import _StopRequest\n"
                    "stop = _StopRequest()\n"
                    "with stop.event._cond:  # threading.Event's own lock\n"
                    f"    signal.raise_signal(signal.{signum})  # handled before it returns\n"
                    "print(stop.requested(), stop.event.wait(10), flush=True)\n"
                )
                done = run_code(script)
                self.assertEqual(done.stdout, "True True\n", done.stderr)


class WarmModulesTest(unittest.TestCase):
    def test_the_collector_child_serves_grpc_with_nothing_left_to_import(self) -> None:
        # ``up``'s collector child imports its warm list while the parent builds the
        # servers; given its settings, it must serve OTLP/gRPC at once: nothing of weight
        # left to import before (the list is complete), and no pydantic (the settings come
        # plain). Its HTTP side (werkzeug, the control API) is built once gRPC serves.
        script = (
            "import json, os, sys, threading\n"
            "from mocksup import cli\n"
            "from mocksup._cli import entry\n"
            "from mocksup._context import ServeContext\n"
            "for name in entry.DEFAULT_MODULES['otlp']:\n"
            "    __import__(name)\n"
            "warm = set(sys.modules)\n"
            "from mocksup.otlp import _serve\n"
            "build_http_side = _serve.CollectorServing._app\n"
            "at_grpc = []\n"
            "def spy(self, *args):\n"
            "    at_grpc.extend(sorted(set(sys.modules) - warm))\n"
            "    return build_http_side(self, *args)\n"
            "_serve.CollectorServing._app = spy\n"
            "status_r, status_w = os.pipe()\n"
            "ctx = ServeContext(status_w)\n"
            "settings = json.loads(sys.argv[1])\n"
            "served = threading.Thread(target=_serve.serve_settings, args=(settings, ctx))\n"
            "served.start()\n"
            "ready = json.loads(os.read(status_r, 4096))\n"
            "new = sorted(set(sys.modules) - warm)\n"
            "ctx.request_stop('done')\n"
            "served.join()\n"
            "print(json.dumps({'ready': ready, 'at_grpc': at_grpc, 'new': new}))\n"
        )
        settings = MockOTLPCollector(port=0, grpc_port=0).model_dump()
        done = run_code(script, json.dumps(settings))
        self.assertEqual(done.returncode, 0, done.stderr)
        result = json.loads(done.stdout)
        self.assertEqual(result["ready"]["event"], "ready")
        self.assertEqual(set(result["ready"]["ports"]), {"port", "grpc_port"})
        heavy = ("mocksup", "pydantic", "pydantic_core", "grpc", "werkzeug", "google")
        self.assertEqual([m for m in result["at_grpc"] if m.split(".")[0] in heavy], [])
        # Then the HTTP side, and still no pydantic, grpc or protobuf.
        self.assertIn("werkzeug.routing", result["new"])
        gone = ("pydantic", "pydantic_core", "grpc", "google")
        self.assertEqual([m for m in result["new"] if m.split(".")[0] in gone], [])

    def test_validating_the_collector_loads_neither_its_query_nor_its_serving_side(
        self,
    ) -> None:
        # What ``up`` pays for before it sends the collector its settings: the class and
        # its validation. The query, wait and fault methods load their modules when called,
        # the HTTP server (``mocksup.serving``) is the child's.
        loaded = _loaded_after(
            "from mocksup.otlp.collector import MockOTLPCollector\n"
            "MockOTLPCollector(port=0, grpc_port=0).model_dump()\n",
            (*_QUERY_SIDE, "mocksup.serving"),
        )
        self.assertEqual(loaded, [])

    def test_the_collector_childs_warm_modules_load_none_of_its_query_side(self) -> None:
        # The child launched for the collector imports these before its settings arrive;
        # the item classes (and what renders them) are no part of serving.
        loaded = _loaded_after(
            "from mocksup._cli import entry\n"
            "for name in entry.DEFAULT_MODULES['otlp']:\n"
            "    __import__(name)\n",
            _QUERY_SIDE,
        )
        self.assertEqual(loaded, [])


#: The collector's query side: what its methods (and render()) use, and serving does not.
_QUERY_SIDE = (
    "mocksup.control",
    "mocksup.otlp._query",
    "mocksup.otlp.faults",
    "mocksup.otlp.items",
    "mocksup.otlp.metrics",
    "mocksup.otlp.records",
    "http.client",
)


def _loaded_after(code: str, modules: Sequence[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded once it has run ``code``."""
    done = run_code(
        f"import sys\n{code}print([m for m in {list(modules)!r} if m in sys.modules])\n"
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr)
    loaded: list[str] = json.loads(done.stdout.replace("'", '"'))
    return loaded


def _read_pty_until(fd: int, done: Callable[[str], bool], timeout: float = 30.0) -> str:
    """What a terminal shows until ``done(text)`` (fails at the deadline)."""
    deadline = time.monotonic() + timeout
    text = ""
    while not done(text):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not seen within {timeout} s: {text!r}")
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            text += os.read(fd, 65536).decode(errors="replace")
    return text


def _end_pty(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


#: The script of :meth:`QueryTest.assert_interrupted`.
FINALIZER_SCRIPT = """
import signal, socket, sys, time
from mocksup._cli.errors import interrupts_kept

# Ctrl-C's default, whatever this test was started with (it may be ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)

class Dropped:
    def __del__(self):
        {finalizer}

quiet, waiting = socket.socketpair()
waiting.settimeout(float(sys.argv[1]))
with interrupts_kept():
    try:
        {before}
        waiting.recv(1)  # the next long poll
        print("waited it out")
    except KeyboardInterrupt:
        print("interrupted")
"""


class QueryTest(CLITestCase):
    """``spans``, ``metrics``, ``logs``, ``stats`` and ``tail`` against one collector ``up``
    runs."""

    up: ClassVar[subprocess.Popen[str]]
    url: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # No warm children: they would start during a test, grandchildren of this process
        # that the leak check would count against it.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MOCKSUP_WARM_CHILDREN": "0"}
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
            post_span(cls.url, name, service, number, {"http.status_code": number * 100})
        post_span(cls.url, "other", "a", 9, trace=bytes(range(2, 18)), parent=bytes(range(1, 9)))
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
        everything = ["first", "second", "third", "other"]
        self.assertEqual(self.names(self.query("spans")), everything)
        code, out, err = run_main("spans", "--limit", "2", "--url", self.url)
        self.assertEqual(code, 0)
        self.assertEqual(self.names(out.splitlines()), ["third", "other"])
        # The limit is never silent.
        self.assertEqual(err, "mocksup: showing the last 2 of 4 spans (--limit 0 shows all)\n")
        self.assertEqual(self.names(self.query("spans", "--limit", "0")), everything)
        self.assertEqual(
            self.names(self.query("spans", "--service", "a")), ["first", "third", "other"]
        )
        self.assertEqual(self.names(self.query("spans", "--name", "second")), ["second"])

    def test_trace_id_and_attribute_filters(self) -> None:
        other = bytes(range(2, 18)).hex()
        self.assertEqual(self.names(self.query("spans", "--trace-id", other)), ["other"])
        # A value that parses as JSON is that value (an integer here), else text.
        self.assertEqual(self.names(self.query("spans", "-a", "http.status_code=200")), ["second"])
        self.assertEqual(self.names(self.query("spans", "-a", 'http.status_code="200"')), [])
        self.assertEqual(self.names(self.query("spans", "--attr", "http.status_code")),
                         ["first", "second", "third"])  # fmt: skip
        self.assertEqual(self.query("metrics", "-a", "core=1"), [])
        self.assertEqual(self.query("logs", "--trace-id", other), [])

    def test_json_is_otlp_json(self) -> None:
        (line,) = self.query("spans", "--json", "--service", "b")
        document = json.loads(line)
        (resource,) = document["resourceSpans"]
        self.assertIn(
            {"key": "service.name", "value": {"stringValue": "b"}},
            resource["resource"]["attributes"],
        )
        (span,) = resource["scopeSpans"][0]["spans"]
        self.assertEqual(span["traceId"], bytes(range(1, 17)).hex())
        self.assertEqual(
            span["attributes"], [{"key": "http.status_code", "value": {"intValue": "200"}}]
        )
        # --limit keeps the last items; the resources and scopes left empty go.
        code, out, err = run_main("spans", "--json", "--limit", "1", "--url", self.url)
        self.assertEqual(code, 0)
        (resource,) = json.loads(out)["resourceSpans"]
        self.assertEqual([s["name"] for s in resource["scopeSpans"][0]["spans"]], ["other"])
        self.assertIn("last 1 of 4 spans", err)
        (metrics,) = self.query("metrics", "--json")
        points = json.loads(metrics)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
        self.assertEqual(len(points["gauge"]["dataPoints"]), 2)
        (logs,) = self.query("logs", "--json")
        record = json.loads(logs)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
        self.assertEqual(record["body"], {"stringValue": "disk almost full"})

    def test_tree(self) -> None:
        lines = self.query("spans", "--tree", "--trace-id", bytes(range(2, 18)).hex())
        self.assertEqual(lines[0], f"trace {bytes(range(2, 18)).hex()}: 1 span(s), 1.0 ms")
        self.assertEqual(lines[1], f"(parent {bytes(range(1, 9)).hex()} did not arrive)")
        self.assertEqual(lines[2], "└── other (a, INTERNAL) 1.0 ms at +0 ns")
        self.assertEqual(len(self.query("spans", "--tree")), 1 + 3 + 1 + 3)  # two traces

    def test_metrics_and_logs(self) -> None:
        self.assertEqual(
            self.query("metrics"), ["metric a 'queue.depth' gauge 2 point(s): 1.0, 2.0"]
        )
        self.assertEqual(self.query("metrics", "--service", "b"), [])
        self.assertEqual(self.query("logs"), ["log b WARN disk almost full"])
        self.assertEqual(self.query("logs", "--service", "a"), [])
        detailed = self.query("logs", "--verbosity", "detailed")
        self.assertEqual(detailed[0], "LogRecord")
        self.assertIn("    Body           : 'disk almost full'", detailed)

    def test_collector_url_from_the_environment(self) -> None:
        env = {"MOCKSUP_COLLECTOR_URL": self.url}
        stats = json.loads("\n".join(self.query("stats", env=env)))
        self.assertEqual(stats["items"], {"traces": 4, "metrics": 1, "logs": 1})
        self.assertEqual(stats["metric_points"], 2)
        self.assertEqual(len(self.query("spans", env=env)), 4)

    def test_tail_prints_items_as_they_arrive(self) -> None:
        tail = self.mocksup("tail", "--url", self.url, "--from-start", "--signal", "logs",
                            "--timeout", "60")  # fmt: skip
        # What the collector held, first; then what arrives while tail runs.
        self.assertEqual(self.read_until(tail, "disk"), ["log b WARN disk almost full\n"])
        post_log(self.url, "cooling down", "tail-test", "INFO")
        self.assertEqual(self.read_until(tail, "cooling"), ["log tail-test INFO cooling down\n"])
        tail.send_signal(signal.SIGINT)
        try:
            code = tail.wait(10)
        except subprocess.TimeoutExpired:
            tail.kill()
            self.fail(f"tail went on after SIGINT; it said: {tail.communicate()[1][-2000:]}")
        self.assertEqual(code, 0)
        # --timeout ends it on its own.
        code, out, _ = run_main("tail", "--url", self.url, "--timeout", "0.2")
        self.assertEqual((code, out), (0, ""))

    def assert_interrupted(self, finalizer: str, *before_the_read: str) -> None:
        """A script: Ctrl-C's default handler, a finalizer that runs ``finalizer`` as an
        object is dropped, then ``before_the_read`` and a read of 20 s, all within
        ``interrupts_kept()``: the read must end with the KeyboardInterrupt, well before."""
        script = FINALIZER_SCRIPT.format(
            finalizer=finalizer, before="\n        ".join(["Dropped()", *before_the_read])
        )
        started = time.monotonic()
        done = run_code(script, "20")
        self.assertEqual(done.stdout, "interrupted\n", done.stderr)
        self.assertLess(time.monotonic() - started, 10)

    def test_a_ctrl_c_that_lands_in_a_finalizer_still_ends_the_command(self) -> None:
        # The stimulus, made certain: the handler runs while a dropped object's finalizer
        # does (tail drops an http.client response between two polls), then the command
        # waits for its next answer. Python only reports an exception raised there.
        self.assert_interrupted("signal.raise_signal(signal.SIGINT)")

    def test_a_ctrl_c_lost_in_a_finalizer_is_sent_until_it_is_handled(self) -> None:
        # A SIGINT sent again can land just before the poll's blocking read: its handler
        # then runs only once the read returns. Here the first ones are lost outright
        # (ignored while the finalizer's interrupt is being sent again); a later one must
        # still end the read.
        self.assert_interrupted(
            "raise KeyboardInterrupt  # as the handler raises it in a finalizer",
            "handler = signal.signal(signal.SIGINT, signal.SIG_IGN)",
            "time.sleep(0.2)  # what is sent meanwhile is lost",
            "signal.signal(signal.SIGINT, handler)",
        )

    def test_a_handler_the_command_sets_itself_ends_the_resends(self) -> None:
        # ``up`` sets its own SIGINT handler, which never tells interrupts_kept() it ran:
        # a Ctrl-C lost before that is sent again once, not every 50 ms to the end.
        script = (
            "import signal, time\n"
            "from mocksup._cli.errors import interrupts_kept\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "received = []\n"
            "class Dropped:\n"
            "    def __del__(self):\n"
            "        raise KeyboardInterrupt\n"
            "with interrupts_kept():\n"
            "    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))\n"
            "    Dropped()\n"
            "    time.sleep(0.5)  # ten resend periods\n"
            "print(len(received))\n"
        )
        done = run_code(script)
        self.assertEqual(done.stdout, "1\n", done.stderr)

    def test_stats_into_a_closed_pipe(self) -> None:
        # mocksup stats | head: the reader is gone before the command writes.
        read, write = os.pipe()
        os.close(read)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run(
            [sys.executable, "-m", "mocksup", "stats", "--url", self.url],
            stdout=write, stderr=subprocess.PIPE, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        os.close(write)
        self.assertEqual((proc.returncode, proc.stderr), (141, ""))


class ToolsTest(CLITestCase):
    """``replay``, ``env`` and ``health``."""

    def test_replay_a_dump_into_another_collector(self) -> None:
        source = self.start_server(MockOTLPCollector(port=0, grpc_port=None))
        target = self.start_server(MockOTLPCollector(port=0, grpc_port=None))
        post_span(source.url, "checkout", "shop")
        post_log(source.url, "paid", "shop", "INFO")
        dump = self.folder / "run.jsonl"
        source.export(dump)
        code, out, err = run_main("replay", str(dump), "--to", target.url)
        self.assertEqual(code, 0, err)
        self.assertEqual(out, f"mocksup: sent 2 request(s) from {dump} to {target.url}\n")
        self.assertEqual([s.name for s in target.spans()], ["checkout"])
        self.assertEqual([r.body for r in target.logs()], ["paid"])
        # $MOCKSUP_COLLECTOR_URL is where it goes by default.
        run_main("replay", str(dump), env={"MOCKSUP_COLLECTOR_URL": target.url})
        self.assertEqual(len(target.spans()), 2)
        # A line that is no dump line: exit 1, naming the line; the lines before it went.
        dump.write_text(dump.read_text() + "{}\n")
        code, _, err = run_main("replay", str(dump), "--to", target.url)
        self.assertEqual(code, 1)
        self.assertIn("dump line 3 is not a TracesData, MetricsData or LogsData", err)
        self.assertEqual(len(target.spans()), 3)
        code, _, err = run_main("replay", str(self.folder / "missing.jsonl"), "--to", target.url)
        self.assertEqual((code, err.count("\n")), (2, 1))

    def test_env_waits_for_the_ready_file(self) -> None:
        ready_file = self.folder / "ready.json"
        proc = self.mocksup("up", "--servers", "otlp", *FREE_PORTS, "--quiet",
                            "--ready-file", str(ready_file))  # fmt: skip
        script = f'eval "$({sys.executable} -m mocksup env {ready_file})" && env'
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                               timeout=60, check=True)  # fmt: skip
        variables = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
        ready = json.loads(ready_file.read_text())
        url = ready["servers"]["otlp"]["endpoints"]["otlp_http"]
        self.assertEqual(variables["MOCKSUP_COLLECTOR_URL"], url)
        self.assertEqual(variables["MOCKSUP_OTLP_URL"], url)
        self.assertEqual(variables["OTEL_EXPORTER_OTLP_ENDPOINT"], url)
        code, out, _ = run_main("health", "--ready-file", str(ready_file), url)
        self.assertEqual(code, 0)
        self.assertEqual([json.loads(line)["status"] for line in out.splitlines()], ["ok", "ok"])
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        self.assertEqual(run_main("health", url)[0], 1)
        code, _, err = run_main("env", str(ready_file), "--wait", "0")
        self.assertEqual(code, 1)
        self.assertIn("no ready file", err)


def answers_as(url: str) -> str:
    """The mode a collector at ``url`` answers in, told by two cheap answers that differ
    (the table in docs/otlp.rst): ``"collector"`` answers a success with ``partial_success``
    set (``0a 00``) and an unknown path with Go's plain text; ``"spec"`` with an empty
    message and a ``google.rpc.Status``."""
    empty = ExportTraceServiceRequest().SerializeToString()
    post = urllib.request.Request(
        url + "/v1/traces", data=empty, headers={"Content-Type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(post, timeout=10) as response:
        success = response.read()
    missing = urllib.request.Request(url + "/v1/nowhere", data=b"", method="POST")
    try:
        urllib.request.urlopen(missing, timeout=10).close()
        media = "no 404"
    except urllib.error.HTTPError as error:
        media = error.headers.get("Content-Type", "")
        error.close()
    if success == b"\x0a\x00" and media.startswith("text/plain"):
        return "collector"
    if success == b"" and not media.startswith("text/plain"):
        return "spec"
    return f"neither: success {success!r}, 404 as {media!r}"


class CompatTest(CLITestCase):
    def ready(self, proc: subprocess.Popen[str]) -> str:
        line = json.loads(self.read_until(proc, "{")[-1])
        url: str = line["servers"]["otlp"]["url"]
        return url

    def test_option_variable_and_file_each_set_the_mode(self) -> None:
        config = self.folder / "servers.toml"
        config.write_text(
            '[[servers]]\nname = "otlp"\nserver_class = "mocksup.otlp:MockOTLPCollector"\n'
            'init_kwargs = { port = 0, grpc_port = 0, compat = "spec" }\n'
        )
        otlp = ["up", "--servers", "otlp", "--otlp-port", "0", "--otlp-grpc-port", "0", "--json"]
        # All four start at once: they take as long as one.
        procs = {
            "option": self.mocksup(*otlp, "--otlp-compat", "spec"),
            "variable": self.mocksup(*otlp, env={"MOCKSUP_OTLP_COMPAT": "spec"}),
            "file": self.mocksup("up", "--config", str(config), "--json"),
            # The command line wins over the variable.
            "option over variable": self.mocksup(
                *otlp, "--otlp-compat", "collector", env={"MOCKSUP_OTLP_COMPAT": "spec"}
            ),
        }
        modes = {how: answers_as(self.ready(proc)) for how, proc in procs.items()}
        self.assertEqual(
            modes,
            {
                "option": "spec",
                "variable": "spec",
                "file": "spec",
                "option over variable": "collector",
            },
        )

    def test_the_choices_are_the_collector_s_modes(self) -> None:
        from typing import get_args

        from mocksup._cli.settings import COMPAT_MODES
        from mocksup.otlp._modes import MODES, Compat

        self.assertEqual(set(COMPAT_MODES), set(get_args(Compat)))
        self.assertEqual(set(COMPAT_MODES), set(MODES))


class BadInputTest(CLITestCase):
    def assert_usage_error(self, result: tuple[int, str, str], text: str) -> None:
        code, _, err = result
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(text, err)

    def test_a_log_folder_that_is_a_file_is_one_line_not_a_traceback(self) -> None:
        # Through the collector's early hand-over (which opens the log first) and the
        # start: whichever meets it, one line and exit 1.
        taken = Path(tempfile.mkdtemp(prefix="mocksup-test-")) / "logs"
        self.addCleanup(shutil.rmtree, taken.parent)
        taken.write_text("a file where the folder would go")
        done = self.run_mocksup("up", "--servers", "otlp", *FREE_PORTS[:4], "--log-dir", str(taken))
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
        self.assertIn("cannot create the log file", done.stderr)

    def test_bad_options(self) -> None:
        # One through a real process: exit code and stderr reach the caller as they are.
        real = self.run_mocksup("up", "--bogus")
        self.assert_usage_error((real.returncode, real.stdout, real.stderr), "unrecognized")
        # The advice names the command's own help.
        self.assertIn("(see mocksup up --help)", real.stderr)
        self.assert_usage_error(run_main("up", "--otlp-port", "70000"), "out of range")
        self.assert_usage_error(run_main("up", "--servers", "redis"), "--servers")
        self.assert_usage_error(run_main("spans", "--limit", "x"), "invalid int value")
        self.assert_usage_error(run_main("spans", "--json", "--tree"), "not allowed with")
        self.assert_usage_error(run_main(), "required")
        self.assert_usage_error(
            run_main("up", env={"MOCKSUP_OTLP_PORT": "many"}), "$MOCKSUP_OTLP_PORT"
        )
        self.assert_usage_error(run_main("up", env={"MOCKSUP_QUIET": "maybe"}), "$MOCKSUP_QUIET")
        self.assert_usage_error(
            run_main("up", "--vllm-max-model-len", "1"),
            "--vllm-max-model-len: Input should be greater than or equal to 2",
        )
        self.assert_usage_error(
            run_main("up", "--vllm-args", "m --bogus-flag"), "--vllm-args: Value error"
        )
        self.assert_usage_error(
            run_main("up", "--servers", "otlp", "--vllm-model", "m"), "need the vllm server"
        )
        self.assert_usage_error(run_main("up", "--otlp-compat", "strict"), "invalid choice")
        # The last replica's port would be 65536: said as such, not as a bad --vllm-port.
        self.assert_usage_error(
            run_main("up", "--vllm-port", "65535", "--vllm-replicas", "2"),
            "--vllm-replicas: 2 vLLM replicas from port 65535 need ports up to 65536",
        )
        self.assert_usage_error(
            run_main("up", env={"MOCKSUP_OTLP_COMPAT": "strict"}),
            "$MOCKSUP_OTLP_COMPAT: 'strict' is not one of collector, spec",
        )
        self.assert_usage_error(
            run_main("up", "--servers", "vllm", "--otlp-compat", "spec"), "needs the otlp server"
        )
        config = self.folder / "servers.toml"
        config.write_text('[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\n')
        self.assert_usage_error(
            run_main("up", "--config", str(config), "--otlp-compat", "spec"),
            "set compat in",
        )

    def test_a_host_that_cannot_be_bound(self) -> None:
        for host in ("999.1.1.1", "no-such-host.invalid"):
            with self.subTest(host):
                real = self.run_mocksup("up", "--host", host, *FREE_PORTS)
                self.assert_usage_error(
                    (real.returncode, real.stdout, real.stderr),
                    f"--host '{host}': not an address of this machine",
                )
        self.assert_usage_error(run_main("up", env={"MOCKSUP_HOST": "999.1.1.1"}), "--host")

    def test_bad_config_files(self) -> None:
        config = self.folder / "bad.toml"
        cases = {
            "[[servers]\n": "not valid TOML",
            "x = 1\n": "[[servers]]",
            '[[servers]]\nname = "a"\nserver_class = "nowhere:Nothing"\n': "cannot import",
            '[[servers]]\nname = "a"\nserver_class = "pathlib:Path"\n': "not a MockServerBase",
            '[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\n'
            "init_kwargs = { port = 70000 }\n": (
                "bad.toml: server 'a': port: Input should be less than or equal"
            ),
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
            '[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\n'
            'init_kwargs = { host = "999.1.1.1" }\n': "server 'a': host '999.1.1.1'",
        }
        for text, expected in cases.items():
            with self.subTest(expected):
                config.write_text(text)
                self.assert_usage_error(run_main("up", "--config", str(config)), expected)
        self.assert_usage_error(
            run_main("up", "--config", str(self.folder / "missing.toml")), "cannot read"
        )
        config.write_text('[[servers]]\nname = "a"\nserver_class = "mocksup:MockRedisServer"\n')
        # What only the default servers take is an error with a file, not silently dropped.
        # In a real process: were it dropped, the command would serve until its timeout.
        for options, env, expected in [
            (["--vllm-model", "m"], {}, "--vllm-model sets a default server; with --config, "
                                        f"set it in {config}'s init_kwargs"),
            (["--otlp-port", "5000"], {}, "--otlp-port sets a default server"),
            (["--otlp-grpc-port", "0"], {}, "--otlp-grpc-port sets a default server"),
            ([], {"MOCKSUP_VLLM_PORT": "0"}, "--vllm-port sets a default server"),
            (["--vllm-replicas", "2"], {}, "--vllm-replicas sets a default server"),
            (["--servers", "otlp"], {}, "--servers chooses among the default servers; with "
                                        f"--config, {config} lists the servers"),
        ]:  # fmt: skip
            with self.subTest(options or env):
                real = self.run_mocksup("up", "--config", str(config), *options, env=env)
                self.assert_usage_error((real.returncode, real.stdout, real.stderr), expected)
        self.assert_usage_error(
            run_main("up", "--config", str(config), "--host", "999.1.1.1"),
            "--host '999.1.1.1': not an address of this machine",
        )

    def test_port_in_use_is_said_in_the_command_line_s_terms(self) -> None:
        holder = self.listening_socket()
        port = str(holder.getsockname()[1])
        result = self.run_mocksup(
            "up", "--servers", "otlp", "--otlp-port", "0", "--otlp-grpc-port", port
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"port {port} on 127.0.0.1 is in use", result.stderr)
        self.assertIn("choose another port with --otlp-grpc-port (0: a free port)", result.stderr)
        self.assertNotIn("port=0", result.stderr)
        config = self.folder / "servers.toml"
        config.write_text(
            '[[servers]]\nname = "cache"\nserver_class = "mocksup:MockRedisServer"\n'
            f"init_kwargs = {{ port = {port} }}\n"
        )
        result = self.run_mocksup("up", "--config", str(config))
        self.assertEqual(result.returncode, 1)
        self.assertIn(
            f"choose another port with port in server 'cache''s init_kwargs in {config}",
            result.stderr,
        )

    def test_a_server_not_ready_in_time_is_said_in_the_command_line_s_terms(self) -> None:
        # A command that says how far it got, then never prints the line that means ready.
        # 2 s: time enough for the shell to say it on a loaded machine (0.5 s was not).
        server = (
            '[[servers]]\nname = "app"\nserver_class = "mocksup:ProcessServer"\n'
            'init_kwargs = { command = ["sh", "-c", "echo loading the model; exec sleep 60"], '
            'ready_pattern = "^ready$"%s }\n'
        )
        config = self.folder / "servers.toml"
        head = r"mocksup: mock server 'app' \(pid \d+\) was not ready within 2 s and was killed; "
        cases = [
            # The file sets no start_timeout: --start-timeout is that server's, and named.
            ("", ["--start-timeout", "2"], "--start-timeout"),
            # The file sets it: the advice points there.
            (
                ", start_timeout = 2",
                [],
                f"start_timeout in server 'app''s init_kwargs in {config}",
            ),
        ]
        for setting, options, where in cases:
            with self.subTest(where):
                config.write_text(server % setting)
                result = self.run_mocksup("up", "--config", str(config), *options)
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertRegex(
                    result.stderr.splitlines()[0],
                    f"^{head}see its output below for how far it got "
                    rf"\(raise {re.escape(where)} only if it shows slow progress\)$",
                )
                self.assertIn("\n    loading the model\n", result.stderr)
        # A bad --start-timeout is the option's error, not the file's.
        config.write_text(server % "")
        code, _, err = run_main("up", "--config", str(config), "--start-timeout", "0")
        self.assertEqual((code, err), (2, "mocksup: error: --start-timeout: Input should be "
                                          "greater than 0\n"))  # fmt: skip

    def test_no_collector_to_ask(self) -> None:
        sock = self.listening_socket()
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        for command in ("stats", "spans", "metrics", "logs", "tail"):
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


class FollowerTest(unittest.TestCase):
    """``--print`` and ``--dump`` read the rest themselves at stop, without duplicates."""

    def test_finish_reads_what_the_thread_has_not_yet(self) -> None:
        pages = {0: (["a"], 1), 1: (["b", "c"], 3), 3: ([], 3)}
        held = threading.Event()
        release = threading.Event()
        emitted: list[str] = []
        first = threading.Event()

        def fetch(cursor: int, timeout: float) -> tuple[list[str], int]:
            if timeout > 0 and cursor == 1:  # the thread's next long poll: held
                held.set()
                release.wait(30)
            return pages[cursor]

        def emit(items: Sequence[str]) -> None:
            emitted.extend(items)
            first.set()

        follower = Follower(fetch, emit, "otlp")
        follower.start()
        self.assertTrue(first.wait(30) and held.wait(30))
        follower.finish()
        self.assertEqual(emitted, ["a", "b", "c"])
        release.set()  # the held poll answers now: what it brings was read already
        follower.thread.join(30)
        self.assertFalse(follower.thread.is_alive())
        self.assertEqual(emitted, ["a", "b", "c"])


class DocumentedTest(unittest.TestCase):
    def test_every_option_of_up_and_its_variable_is_in_the_docs(self) -> None:
        text = (Path(__file__).resolve().parent.parent / "docs" / "cli.rst").read_text()
        rows = {line.split("``")[1].split()[0]: line for line in text.splitlines()
                if line.startswith("``--") and "  ``MOCKSUP_" in line}  # fmt: skip
        _, commands = cli._parser()
        options = [a for a in commands["up"]._actions if a.option_strings and a.dest != "help"]
        self.assertEqual(len(options), len(rows))
        for action in options:
            option = action.option_strings[-1]
            with self.subTest(option):
                self.assertIn(option, rows)
                self.assertIn(f"``MOCKSUP_{action.dest.upper()}``", rows[option])

    def test_the_fault_option_lists_the_fault_kinds_without_loading_the_mock(self) -> None:
        # The options are set up before ``up`` launches its children, so the kinds come from
        # the mock's Literal only when the help is shown.
        code = (
            "import os, sys\n"
            "from mocksup import cli\n"
            "from mocksup._cli.settings import apply_environment\n"
            "_, commands = cli._parser()\n"
            "apply_environment(commands['up'], os.environ)\n"
            "print([m for m in ('pydantic', 'mocksup.vllm') if m in sys.modules])\n"
            "print(commands['up'].format_help())\n"
        )
        out = run_code(code, env={"COLUMNS": "200"})
        self.assertEqual(out.returncode, 0, out.stderr)
        loaded, help_text = out.stdout.split("\n", 1)
        self.assertEqual(loaded, "[]")
        line = next(line for line in help_text.splitlines() if "--vllm-fault KIND  " in line)
        listed = line.partition("does: ")[2].partition(" (unavailable)")[0]
        self.assertEqual(listed.replace(" or ", ", ").split(", "), list(get_args(FaultKind)))


if __name__ == "__main__":
    unittest.main()
