"""``mocksup.attach``: typed handles to the mocks a ``mocksup up`` in another process runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any, ClassVar

import openai

import mocksup
from mocksup.otlp import CollectorClient, TelemetryTimeoutError
from mocksup.remote import AttachedServers, NotOwnedError, RemoteMock
from mocksup.vllm import VLLMClient
from tests.support import ProcessTestCase
from tests.test_cli import FREE_PORTS, post_span


class AttachTest(ProcessTestCase):
    up: ClassVar[subprocess.Popen[str]]
    ready_file: ClassVar[Path]
    mocks: ClassVar[AttachedServers]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        folder = Path(tempfile.mkdtemp(prefix="mocksup-attach-"))
        cls.addClassCleanup(subprocess.run, ["rm", "-rf", str(folder)], check=True)
        cls.ready_file = folder / "ready.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MOCKSUP_WARM_CHILDREN": "0"}
        cls.up = subprocess.Popen(
            [sys.executable, "-m", "mocksup", "up", *FREE_PORTS, "--quiet",
             "--ready-file", str(cls.ready_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        cls.addClassCleanup(_stop, cls.up)
        # Attached as soon as the file appears: up writes it once every mock serves.
        cls.mocks = mocksup.attach(cls.ready_file, wait=60)

    def setUp(self) -> None:
        super().setUp()
        self.mocks.clear()

    def test_typed_handles_from_the_ready_file(self) -> None:
        self.assertEqual(set(self.mocks), {"otlp", "vllm"})
        collector, vllm = self.mocks.collector, self.mocks.vllm
        self.assertIsInstance(collector, CollectorClient)
        self.assertIsInstance(vllm, VLLMClient)
        self.assertIs(self.mocks["otlp"], collector)
        client = openai.OpenAI(base_url=vllm.base_url, api_key="x")
        self.addCleanup(client.close)
        client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "Hello"}], max_tokens=3
        )
        (entry,) = vllm.wait_for_requests(count=1, path="/v1/chat/completions")
        self.assertEqual(entry.status, 200)
        (span,) = collector.wait_for_spans("llm_request", timeout=20)
        self.assertEqual(span.attributes["gen_ai.usage.completion_tokens"], 3)
        self.assertEqual(self.mocks.env["OPENAI_BASE_URL"], vllm.base_url)
        self.assertEqual(collector.endpoints(), json.loads(self.ready_file.read_text())[
            "servers"]["otlp"]["endpoints"])  # fmt: skip
        # A wait that times out says so as a test failure, with what did arrive.
        with self.assertRaises(TelemetryTimeoutError):
            collector.wait_for_spans("never", timeout=0.2)

    def test_clear_and_health(self) -> None:
        collector = self.mocks.collector
        post_span(collector.url, "before")
        self.mocks.clear()
        self.assertEqual(collector.spans(), [])
        self.assertEqual(collector.health()["class"], "MockOTLPCollector")
        self.assertEqual(self.mocks.vllm.health()["status"], "ok")
        self.assertTrue(self.mocks.vllm.is_running())

    def test_stop_is_refused_naming_who_runs_them(self) -> None:
        for stop in (self.mocks.stop, self.mocks.collector.stop, self.mocks.vllm.stop):
            with self.subTest(stop), self.assertRaises(NotOwnedError) as raised:
                stop()
            self.assertIn(f"mocksup up (pid {self.up.pid} on host", str(raised.exception))
            self.assertIn(f"kill -TERM {self.up.pid}", str(raised.exception))
        self.assertIsNone(self.up.poll())
        self.assertTrue(self.mocks.collector.is_running())

    def test_attach_by_url(self) -> None:
        for name, kind in (("otlp", CollectorClient), ("vllm", VLLMClient)):
            with self.subTest(name):
                url = self.mocks[name].url
                (handle,) = mocksup.attach(url).values()
                self.assertIsInstance(handle, kind)
                self.assertEqual(handle.name, name)
                with self.assertRaises(NotOwnedError) as raised:
                    handle.stop()
                self.assertIn(f"the mock at {url} runs in another process", str(raised.exception))
        post_span(self.mocks.collector.url, "by-url")
        self.assertEqual(
            [s.name for s in mocksup.attach(self.mocks.collector.url).collector.spans()],
            ["by-url"],
        )

    def test_any_other_mock_gets_the_standard_routes(self) -> None:
        ready: dict[str, Any] = json.loads(self.ready_file.read_text())
        # A class this process cannot import, served where the collector is.
        ready["servers"] = {"custom": {**ready["servers"]["otlp"], "class": "elsewhere:Custom"}}
        handle = mocksup.attach(ready).server_of(RemoteMock)
        post_span(handle.url, "seen")
        self.assertEqual(handle.stats()["items"]["traces"], 1)
        handle.clear()
        self.assertEqual(handle.stats()["items"]["traces"], 0)
        self.assertEqual(handle.health()["name"], "otlp")
        with self.assertRaises(NotOwnedError):
            handle.stop()

    def test_another_host_and_wildcard_addresses(self) -> None:
        ready: dict[str, Any] = json.loads(self.ready_file.read_text())
        port = ready["servers"]["otlp"]["ports"]["port"]
        # Written inside a container bound to every interface: reached on loopback here.
        entry = ready["servers"]["otlp"]
        entry["url"] = f"http://0.0.0.0:{port}"
        entry["endpoints"] = {"otlp_http": f"http://0.0.0.0:{port}"}
        self.assertEqual(mocksup.attach(ready).collector.url, f"http://127.0.0.1:{port}")
        moved = mocksup.attach(ready, host="mocks.internal")
        self.assertEqual(moved.collector.url, f"http://mocks.internal:{port}")
        self.assertEqual(
            moved.collector.endpoints(), {"otlp_http": f"http://mocks.internal:{port}"}
        )

    def test_bad_sources(self) -> None:
        with self.assertRaisesRegex(FileNotFoundError, "is mocksup up --ready-file running"):
            mocksup.attach(self.ready_file.with_name("missing.json"))
        not_ready = self.ready_file.with_name("other.json")
        not_ready.write_text("{}")
        with self.assertRaisesRegex(ValueError, "no 'servers' object"):
            mocksup.attach(not_ready)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


if __name__ == "__main__":
    unittest.main()
