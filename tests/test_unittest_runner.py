"""The plain-unittest way in: ``python -m unittest`` runs the E2E suite and module cleanups.

tox runs the suite with pytest, so these tests run plain unittest in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tests.support import ProcessTestCase

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90

# Module a starts a server and has no tearDownModule: only unittest's module cleanup, which
# start_module_servers registered, can stop it before module b runs.
MODULE_A = """
import unittest
from mocksup import MockRedisServer
from mocksup.testing import MockServerTestCase, start_module_servers

PIDS = []

def setUpModule():
    servers = start_module_servers([MockRedisServer(name="cache")])
    PIDS.append(servers["cache"].pid)

class A(MockServerTestCase):
    def test_running(self):
        self.assertTrue(self.servers["cache"].is_running())
"""

MODULE_B = """
import unittest
import psutil
import cleanup_a

class B(unittest.TestCase):
    def test_module_a_servers_were_stopped(self):
        (pid,) = cleanup_a.PIDS
        self.assertFalse(psutil.pid_exists(pid))
"""


class UnittestRunnerTest(ProcessTestCase):
    def unittest_main(self, *args: str, cwd: Path, path: list[str]) -> tuple[int, str]:
        """Run ``python -m unittest -v ARGS``; return its exit code and its output."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        proc = self.popen(
            [sys.executable, "-W", "error", "-m", "unittest", "-v", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, out.decode()

    def test_e2e_suite_and_module_cleanups_under_plain_unittest(self) -> None:
        # One run: the E2E suite, then module a (servers stopped only by the module cleanup
        # start_module_servers registered) and module b, which checks they were.
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        folder = Path(tmp.name)
        (folder / "cleanup_a.py").write_text(textwrap.dedent(MODULE_A))
        (folder / "cleanup_b.py").write_text(textwrap.dedent(MODULE_B))
        code, out = self.unittest_main(
            "tests.e2e.test_otel_e2e",
            "cleanup_a",
            "cleanup_b",
            cwd=ROOT,
            path=[str(folder), *sys.path],
        )
        self.assertEqual(code, 0, out)
        self.assertIn("Ran 7 tests", out)
        self.assertEqual(out.count(" ... ok"), 7, out)
        self.assertIn("test_module_a_servers_were_stopped (cleanup_b.B", out)
        self.assertTrue(out.rstrip().endswith("OK"), out)
