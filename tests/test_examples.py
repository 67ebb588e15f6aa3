"""The examples run as their users run them: a script in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil

from mocksup import _reap
from tests.support import ProcessTestCase

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90


def processes_marked_by(marker: str) -> list[psutil.Process]:
    """Every process whose environment says mocksup started it for ``marker``'s owner."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(_reap.OWNER_ENV) == marker:
                found.append(process)
        except psutil.Error:
            continue
    return found


class PlainHarnessTest(ProcessTestCase):
    def test_runs_checks_and_leaves_no_process(self) -> None:
        proc = self.popen(
            [sys.executable, "-W", "error", str(ROOT / "examples" / "plain_harness.py")],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # The marker its children carry, taken while it certainly runs.
        marker = _reap._marker(psutil.Process(proc.pid))
        out, err = (stream.decode() for stream in proc.communicate(timeout=TIMEOUT))
        self.assertEqual(proc.returncode, 0, out + err)
        lines = out.splitlines()
        self.assertEqual(lines[-1], "OK", out)
        self.assertIn("weather: Oslo 18.5 C", lines)
        self.assertIn("collector got: 'chat mock-model' CLIENT from plain-harness", lines)
        self.assertIn("collector got: 'llm_request' SERVER from vllm", lines)
        self.assertRegex(out, r"trace [0-9a-f]{32}: \['chat mock-model'\] -> \['llm_request'\]")
        pids = [int(pid) for pid in re.findall(r"^started \w+ \(pid (\d+)\)", out, re.M)]
        self.assertEqual(len(pids), 3, out)
        # Its servers and its warm children are gone with it.
        self.assertEqual([pid for pid in pids if psutil.pid_exists(pid)], [])
        self.assertEqual(processes_marked_by(marker), [])
