"""The examples run as their users run them: a script in its own process.

The Python blocks of ``README.md`` and ``docs/quickstart.rst`` run too, as written, each in a
fresh interpreter. A block that is not a whole program is marked as a fragment on the line
before it, and is not run: ``<!-- fragment -->`` before a fenced block of the README,
``.. fragment`` (a comment) before a ``code-block`` of the docs.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
from importlib import metadata
from pathlib import Path
from typing import IO

import psutil

from mocksup import _reap
from tests.support import ProcessTestCase

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90
#: How ``mocksup up --print`` and ``mocksup tail`` begin the line of vLLM's span.
_LLM_REQUEST = "span unknown_service:python 'llm_request' SERVER UNSET "


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


_FENCED = re.compile(r"^(<!-- fragment -->\n)?```python\n(.*?)^```$", re.M | re.S)
_CODE_BLOCK = re.compile(
    r"^(\.\. fragment\n\n)?\.\. code-block:: python\n\n((?:    .*\n|\n)+)", re.M
)


def python_blocks(path: Path) -> list[tuple[str, bool]]:
    """Each Python block of a Markdown or reStructuredText page, dedented, and whether it is
    a whole program (not marked as a fragment)."""
    text = path.read_text()
    if path.suffix == ".md":
        return [(code, not fragment) for fragment, code in _FENCED.findall(text)]
    return [
        ("\n".join(line[4:] for line in block.rstrip("\n").splitlines()) + "\n", not fragment)
        for fragment, block in _CODE_BLOCK.findall(text)
    ]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _read(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode()


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
        # As in a user's shell, each command's output is buffered, so it writes its lines
        # whole: the commands of a session write to the same output at once.
        env.pop("PYTHONUNBUFFERED", None)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            # A session of its own: what a failing script leaves running (a ``mocksup up``
            # in the background) ends with it, at once rather than at the timeout. Files,
            # not pipes: what is left running would hold a pipe open.
            proc = self.popen(list(command), cwd=ROOT, env=env, stdout=out, stderr=err,
                              start_new_session=True)  # fmt: skip
            self.addCleanup(_kill_group, proc.pid)
            proc.wait(TIMEOUT)
            _kill_group(proc.pid)
            text, errors = _read(out), _read(err)
        self.assertEqual(proc.returncode, 0, text + errors)
        return text

    def test_cli_session(self) -> None:
        # The commands of the session print concurrently (the two ``up --print`` in the
        # background): each item's lines come in one write, but in no fixed order among
        # the other commands' lines.
        out = self.run_example("sh", str(ROOT / "examples" / "cli_session.sh"))
        lines = out.splitlines()
        # --vllm-api-key is in the environment the app gets, --vllm-model answers it.
        self.assertIn("  export OPENAI_API_KEY=sesame", lines)
        app = re.search(r"^the app got (\d+) tokens from tiny$", out, re.M)
        assert app is not None, out
        # up --print: vLLM's start-up spans, then the app's llm_request span, one line each,
        # all after the banner; tail prints the same line.
        printed = [number for number, line in enumerate(lines) if line.startswith("span ")]
        self.assertGreater(min(printed), lines.index("Ctrl-C stops everything."), out)
        self.assertRegex(out, r"(?m)^span unknown_service:python 'Overall Loading' INTERNAL ")
        request = [line for line in lines if line.startswith(_LLM_REQUEST)]
        self.assertEqual(len(request), 2, out)
        self.assertEqual(request[0], request[1])
        ids = re.search(r" trace=([0-9a-f]{32}) span=([0-9a-f]{16}) parent=- ", request[0])
        assert ids is not None, request[0]
        trace, span = ids.groups()
        # --vllm-ttft: the time to the first token.
        ttft = re.search(r" gen_ai\.latency\.time_to_first_token=([\d.]+) ", request[0])
        assert ttft is not None, request[0]
        self.assertGreaterEqual(float(ttft.group(1)), 0.1)
        # spans --trace-id --tree: that trace, and only it.
        self.assertRegex(out, rf"(?m)^trace {trace}: 1 span\(s\), [\d.]+ .?s$")
        self.assertEqual(len(re.findall(r"(?m)^trace [0-9a-f]{32}: ", out)), 1, out)
        self.assertRegex(
            out, r"(?m)^llm_request \(unknown_service:python, SERVER\) [\d.]+ .?s at \+0 ns$"
        )
        # The trace's line of the dump, replayed into a collector that prints every field.
        self.assertRegex(
            out, r"(?m)^mocksup: sent 1 request\(s\) from trace\.jsonl to http://127\.0\.0\.1:\d+$"
        )
        self.assertEqual(lines.count("Span 'llm_request'"), 1, out)
        detailed = lines[lines.index("Span 'llm_request'") :]
        for expected in (
            f"    Trace ID       : {trace}",
            f"    ID             : {span}",
            "    Kind           : SERVER",
            "    Status code    : UNSET",
            "    Scope          : vllm.tracing.otel",
            "Attributes:",
            f"     -> gen_ai.usage.completion_tokens: {app.group(1)}",
        ):
            self.assertIn(expected, detailed[:24])
        self.assertEqual([line for line in lines if '"traces"' in line],
                         ['    "traces": 1,', '    "traces": 0,', '    "traces": 0,'])  # fmt: skip
        self.assertEqual(lines.count("mocksup: stopped"), 2)

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


class QuickStartSnippetsTest(ProcessTestCase):
    """The Python a newcomer copies first: the README's and the quick start's."""

    def test_every_whole_program_runs_as_written(self) -> None:
        for page in (ROOT / "README.md", ROOT / "docs" / "quickstart.rst"):
            programs = [code for code, whole in python_blocks(page) if whole]
            self.assertTrue(programs, f"no Python program found in {page.name}")
            for number, code in enumerate(programs, 1):
                with self.subTest(f"{page.name}, program {number}"):
                    proc = self.popen(
                        [sys.executable, "-W", "error", "-c", code],
                        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                    )
                    out, err = (s.decode() for s in proc.communicate(timeout=TIMEOUT))
                    self.assertEqual(proc.returncode, 0, f"{code}\n{out}{err}")

    def test_a_fragment_is_marked_and_left_out(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="mocksup-snippets-"))
        self.addCleanup(shutil.rmtree, folder)
        (folder / "page.md").write_text(
            "```python\nprint('whole')\n```\n\n<!-- fragment -->\n```python\nservers.stop()\n```\n"
        )
        (folder / "page.rst").write_text(
            ".. code-block:: python\n\n    print('whole')\n\n"
            ".. fragment\n\n.. code-block:: python\n\n    servers.stop()\n"
        )
        expected = [("print('whole')\n", True), ("servers.stop()\n", False)]
        self.assertEqual(python_blocks(folder / "page.md"), expected)
        self.assertEqual(python_blocks(folder / "page.rst"), expected)


class ExamplesExtraTest(unittest.TestCase):
    """``pip install '.[examples]'`` brings every package the docs' and README's examples and
    ``examples/`` import, beside mocksup and the standard library."""

    IMPORT = re.compile(
        r"^\s*(?:import|from)\s+([A-Za-z_]\w*)[\w.]*(?:\s+import\b|\s*$|\s+as\b)", re.M
    )

    def imported(self) -> dict[str, set[str]]:
        """Top-level modules by the files importing them."""
        found: dict[str, set[str]] = {}
        sources = [*sorted((ROOT / "docs").glob("*.rst")), ROOT / "README.md",
                   *sorted((ROOT / "examples").glob("*.py"))]  # fmt: skip
        for path in sources:
            text = path.read_text()
            if path.suffix == ".md":
                text = "\n".join(re.findall(r"^```python\n(.*?)^```", text, re.M | re.S))
            for module in self.IMPORT.findall(text):
                found.setdefault(module, set()).add(path.name)
        return found

    def test_the_extra_brings_every_imported_package(self) -> None:
        config = configparser.ConfigParser()
        config.read(ROOT / "setup.cfg")
        extra = config["options.extras_require"]["examples"]
        wanted = {
            re.split(r"[<>=!~;\[ ]", line.strip())[0].lower().replace("_", "-")
            for line in extra.splitlines()
            if line.strip() and not line.strip().startswith("#")
        }
        providers = metadata.packages_distributions()
        imported = self.imported()
        self.assertIn("anthropic", imported)  # the Messages API example
        for module, files in sorted(imported.items()):
            if module in sys.stdlib_module_names or module == "mocksup":
                continue
            with self.subTest(module, files=sorted(files)):
                names = {d.lower().replace("_", "-") for d in providers.get(module, [])}
                self.assertTrue(names & wanted, f"{module}: from {names or 'nothing installed'}")
