"""A failing test that used the collector gets an HTML report of what arrived, from the
pytest plugin and from mocksup.testing, its path printed; a passing test gets none."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import ProcessTestCase
from tests.viewer.test_report import embedded

SENDS = """
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def post_span(url, name):
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = name
    span.trace_id = bytes(range(1, 17))
    span.span_id = bytes(range(1, 9))
    post = urllib.request.Request(url + "/v1/traces", data=request.SerializeToString(),
                                  headers={"Content-Type": "application/x-protobuf"})
    urllib.request.urlopen(post, timeout=10).read()
"""

PYTEST_TESTS = (
    SENDS
    + """

def test_fails(otlp_collector):
    post_span(otlp_collector.http_endpoint, "what arrived")
    assert False, "on purpose"


def test_passes(otlp_collector):
    post_span(otlp_collector.http_endpoint, "fine")
"""
)

UNITTEST_TESTS = (
    SENDS
    + """
import unittest

from mocksup import MockOTLPCollector
from mocksup.testing import MockServerTestCase


class Checkout(MockServerTestCase):
    mock_server_configs = [MockOTLPCollector(port=0, grpc_port=None)]

    def test_fails(self):
        post_span(self.collector.http_endpoint, "what arrived")
        self.fail("on purpose")

    def test_passes(self):
        post_span(self.collector.http_endpoint, "fine")


if __name__ == "__main__":
    unittest.main()
"""
)


class FailureReportTest(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.folder = Path(tempfile.mkdtemp(prefix="mocksup-failures-"))
        # The folder is the inner pytest's rootdir, as a user's project would be, even when
        # the temporary folder lies inside this project (tox's): not this project's config.
        (self.folder / "pytest.ini").write_text("[pytest]\n")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", str(self.folder)], check=True))

    def run_python(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:  # type: ignore[override]
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env}
        environ.pop("MOCKSUP_REPORT_DIR", None)
        environ.update(env)
        return subprocess.run([sys.executable, *args], cwd=self.folder, env=environ,
                              capture_output=True, text=True, timeout=240, check=False)  # fmt: skip

    def assert_one_report(self, folder: Path, output: str) -> None:
        (report,) = folder.rglob("*.html")
        self.assertIn(str(report), output)
        # (The session's vLLM mock may add its start-up spans, exported as it started.)
        names = {item.name for item in embedded(report.read_text())["items"]}
        self.assertIn("what arrived", names)
        self.assertNotIn("fine", names)

    def test_the_pytest_plugin_writes_and_shows_the_report_of_a_failing_test(self) -> None:
        (self.folder / "test_shop.py").write_text(PYTEST_TESTS)
        reports = self.folder / "reports"
        done = self.run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py",
                               MOCKSUP_REPORT_DIR=str(reports))  # fmt: skip
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn("1 failed, 1 passed", done.stdout)
        self.assertRegex(done.stdout, r"-+ mocksup HTML report -+")
        self.assert_one_report(reports, done.stdout)
        self.assertTrue((reports / "test_shop.py_test_fails.html").exists())
        # Without MOCKSUP_REPORT_DIR: under pytest's temporary folder.
        done = self.run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py",
                               "--basetemp", str(self.folder / "tmp"))  # fmt: skip
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assert_one_report(self.folder / "tmp" / "mocksup-reports", done.stdout)

    def test_mocksup_testing_writes_and_prints_the_report_of_a_failing_test(self) -> None:
        (self.folder / "test_checkout.py").write_text(UNITTEST_TESTS)
        reports = self.folder / "reports"
        done = self.run_python("-m", "unittest", "test_checkout", MOCKSUP_REPORT_DIR=str(reports))
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertIn("FAILED (failures=1)", done.stderr)
        self.assert_one_report(reports, done.stderr)
        # The path is part of the failure's own text (and printed once as it is written).
        failure = done.stderr.split("FAIL: test_fails")[1]
        self.assertRegex(failure, re.escape(f"mocksup HTML report: {reports}") + r".*\.html")
