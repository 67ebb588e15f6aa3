"""The examples of ``docs/vllm.rst`` run as their readers run them: each in its own process.

A code block whose first line is ``# example: <name>`` is an example to keep runnable; its
``assert`` statements say what it shows.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import ProcessTestCase

DOC = Path(__file__).resolve().parents[2] / "docs" / "vllm.rst"
_BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", re.M)
TIMEOUT = 90


def examples() -> dict[str, str]:
    """The marked examples of the page, by name, dedented."""
    found = {}
    for block in _BLOCK.findall(DOC.read_text()):
        code = "\n".join(line[4:] for line in block.splitlines())
        first = code.lstrip().splitlines()[0]
        if first.startswith("# example: "):
            found[first[len("# example: ") :]] = code
    return found


class DocExamplesTest(ProcessTestCase):
    def test_the_page_has_its_examples(self) -> None:
        self.assertTrue({"responses", "messages", "reasoning", "structured-outputs",
                         "tool-calls", "lora", "fleet", "latency"} <= set(examples()))  # fmt: skip

    def test_examples_run(self) -> None:
        for name, code in examples().items():
            with self.subTest(name):
                proc = self.run_python(code, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                out, err = (s.decode() for s in proc.communicate(timeout=TIMEOUT))
                self.assertEqual(proc.returncode, 0, f"{name}:\n{out}{err}")
