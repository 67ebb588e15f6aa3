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


class ShellAndAttachExamplesTest(ProcessTestCase):
    """The examples ``docs/cli.rst`` and ``docs/testing.rst`` include verbatim."""

    def run_example(self, *command: str) -> str:
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "PYTHONPATH": os.pathsep.join(sys.path),
        }
        proc = self.popen(list(command), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)  # fmt: skip
        out, err = (stream.decode() for stream in proc.communicate(timeout=TIMEOUT))
        self.assertEqual(proc.returncode, 0, out + err)
        return out

    def test_cli_session(self) -> None:
        out = self.run_example("sh", str(ROOT / "examples" / "cli_session.sh"))
        self.assertRegex(out, r"trace [0-9a-f]{32}: 1 span\(s\), ")
        self.assertRegex(
            out, r"\nllm_request \(unknown_service:python, SERVER\) [\d.]+ .s at \+0 ns"
        )
        self.assertRegex(out, r"mocksup: sent [2-9] request\(s\) from run.jsonl to http://")
        self.assertEqual(out.count("mocksup: stopped"), 2)

    def test_attach_to_up(self) -> None:
        out = self.run_example(sys.executable, str(ROOT / "examples" / "attach_to_up.py"))
        lines = out.splitlines()
        self.assertEqual(lines[0], "vllm answered 200 with 5 tokens")
        self.assertRegex(lines[1], r"collector got 'llm_request' in trace [0-9a-f]{32}")
        self.assertRegex(
            lines[2], r"stop refused: mocksup up \(pid \d+ on host .+, from ready file"
        )
        self.assertEqual(lines[-1], "OK")

    def test_process_server(self) -> None:
        # The example docs/process-server.rst includes: the app finds the collector through
        # an Endpoint inside its env and sends it a span.
        out = self.run_example(sys.executable, "-W", "error", "examples/process_server.py")
        started = re.search(r"^app \(pid (\d+)\) on port \d+$", out, re.M)
        assert started is not None, out
        pid = int(started.group(1))
        self.assertIn("collector got: 'GET /work' from my-app", out)
        self.assertEqual(out.splitlines()[-1], "OK")
        self.assertFalse(psutil.pid_exists(pid))
