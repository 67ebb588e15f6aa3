"""What a failing test shows and leaves: the user's own line, not mocksup's frames; and the
collectors' dumps as artifacts, from the pytest plugin and from :mod:`mocksup.testing`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from mocksup.otlp.dump import read_dump
from tests.support import ProcessTestCase

FAILING = """
import socket
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mocksup import MockOTLPCollector


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


def test_wait_for_spans(otlp_collector):
    post_span(otlp_collector, "arrived")
    otlp_collector.wait_for_spans("awaited", timeout=0.1)  # THE USER'S LINE


def test_wait_for_requests(vllm_server):
    vllm_server.wait_for_requests(count=1, timeout=0.1)  # THE USER'S LINE


def test_bad_filter(otlp_collector):
    otlp_collector.spans(kind="SIDEWAYS")  # THE USER'S LINE


def test_port_in_use():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    MockOTLPCollector(port=holder.getsockname()[1], grpc_port=None).start()  # THE USER'S LINE


def test_passes(otlp_collector):
    post_span(otlp_collector, "kept out of the dumps")
"""

UNITTEST_MODULE = """
import unittest
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mocksup import MockOTLPCollector
from mocksup.testing import MockServerTestCase


class Checkout(MockServerTestCase):
    mock_server_configs = (MockOTLPCollector(port=0, grpc_port=None),)

    def post(self, name):
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.name = name
        span.trace_id = bytes(range(16))
        span.span_id = bytes(range(8))
        urllib.request.urlopen(urllib.request.Request(
            self.collector.url + "/v1/traces", data=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"}), timeout=10).read()

    def test_a_fails(self):
        self.post("checkout")
        self.assertEqual(len(self.collector.spans()), 2)

    def test_b_passes(self):
        self.post("fine")

    def test_c_subtest_fails(self):
        self.post("in a subtest")
        with self.subTest("one"):
            self.fail("on purpose")
"""


class FailureReportTest(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.folder = Path(tempfile.mkdtemp(prefix="mocksup-reports-"))
        # The folder is the inner pytest's rootdir, as a user's project would be, even when
        # the temporary folder lies inside this project (tox's): not this project's config.
        (self.folder / "pytest.ini").write_text("[pytest]\n")
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.folder)], check=True)

    def run_in_folder(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)}
        environ.pop("MOCKSUP_DUMP_DIR", None)
        environ.update(env)
        return subprocess.run(
            [sys.executable, *args], cwd=self.folder, env=environ, capture_output=True,
            text=True, timeout=240, check=False,
        )  # fmt: skip

    def test_pytest_shows_the_user_s_line_and_writes_dumps(self) -> None:
        (self.folder / "test_failing.py").write_text(FAILING)
        dumps = self.folder / "dumps"
        result = self.run_in_folder(
            "-m", "pytest", "-p", "no:cacheprovider", "-q", "--mocksup-dump-dir", str(dumps)
        )
        out = result.stdout
        self.assertIn("4 failed, 1 passed", out, out + result.stderr)
        sections = out.split("\n____")[1:]
        self.assertEqual(len(sections), 4, out)
        for section in sections:
            report = section.split("---------- mocksup")[0]
            with self.subTest(section.splitlines()[0]):
                # The user's line is there and is the last frame; no frame of mocksup's own
                # modules, nor of asyncio's machinery, above the error.
                self.assertIn("# THE USER'S LINE", report)
                self.assertNotRegex(report, r"mocksup/[\w/]+\.py:\d+")
                self.assertNotIn("asyncio", report)
                self.assertNotIn("During handling", report)
                self.assertLess(len(report.splitlines()), 30, report)
        self.assertIn("expected 1 traces item(s) matching name='awaited'", out)
        self.assertIn("E           'arrived'\n", out)
        self.assertIn("is in use by", out)
        # Each failing test that used the collector left its dump, named in its report.
        files = sorted(p.name for p in dumps.iterdir())
        self.assertEqual(
            files,
            [
                "test_failing.py_test_bad_filter.otlp.otlp.jsonl",
                "test_failing.py_test_wait_for_requests.otlp.otlp.jsonl",
                "test_failing.py_test_wait_for_spans.otlp.otlp.jsonl",
            ],
        )
        self.assertRegex(out, rf"-- mocksup dumps -+\n{dumps}/test_failing.py_test_wait_for_spans")
        spans = [
            span["name"]
            for _, _, doc in read_dump(dumps / files[2])
            for resource in doc["resourceSpans"]
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]
        # (vLLM's start-up spans may come in after the fixture's clear, before or after ours.)
        self.assertIn("arrived", spans)
        self.assertNotIn("kept out of the dumps", spans)

    def test_no_dump_folder_no_dumps(self) -> None:
        (self.folder / "test_failing.py").write_text(FAILING)
        result = self.run_in_folder("-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", "spans")
        self.assertIn("1 failed", result.stdout)
        self.assertNotIn("mocksup dumps", result.stdout)
        self.assertEqual(
            sorted(p.name for p in self.folder.iterdir()), ["pytest.ini", "test_failing.py"]
        )

    def test_unittest_classes_write_dumps_under_both_runners(self) -> None:
        (self.folder / "test_checkout.py").write_text(UNITTEST_MODULE)
        runners = (
            ["-m", "unittest", "-v", "test_checkout"],
            ["-m", "pytest", "-p", "no:cacheprovider", "-q", "test_checkout.py"],
        )
        for runner in runners:
            dumps = self.folder / runner[1]
            with self.subTest(runner[1]):
                result = self.run_in_folder(*runner, MOCKSUP_DUMP_DIR=str(dumps))
                self.assertNotEqual(result.returncode, 0)
                files = sorted(p.name for p in dumps.iterdir())
                self.assertEqual(len(files), 2, result.stdout + result.stderr)
                self.assertIn("test_a_fails.otlp.otlp.jsonl", files[0])
                self.assertIn("test_c_subtest_fails.otlp.otlp.jsonl", files[1])
                lines = [json.dumps(doc) for _, _, doc in read_dump(dumps / files[0])]
                self.assertEqual(len(lines), 1)
                self.assertIn('"name":"checkout"', lines[0].replace(" ", ""))


if __name__ == "__main__":
    unittest.main()
