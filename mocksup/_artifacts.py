"""What a failing test leaves behind: each collector's dump, written where CI keeps artifacts.

The pytest plugin and :mod:`mocksup.testing` call :func:`write_dumps` when a test fails and
a dump folder is set (``--mocksup-dump-dir``, the ``dump_dir`` of a test class, or
``$MOCKSUP_DUMP_DIR``): every collector among the test's servers writes what it received as
OTLP JSON lines (:meth:`~mocksup.MockOTLPCollector.export`; ``mocksup replay``
sends it anywhere). Other reports (an HTML view of the same data) can call it too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from mocksup.base import MockServerBase
from mocksup.errors import MockServerError

__all__ = ("DUMP_DIR_ENV", "artifact_stem", "dump_dir", "write_dumps")

_log = logging.getLogger(__name__)
#: The environment variable naming the folder for failing tests' dumps.
DUMP_DIR_ENV = "MOCKSUP_DUMP_DIR"


def dump_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder for dumps: ``explicit`` if given, else ``$MOCKSUP_DUMP_DIR``, else none."""
    chosen = explicit if explicit is not None else os.environ.get(DUMP_DIR_ENV) or None
    return Path(chosen) if chosen is not None else None


def artifact_stem(test_id: str) -> str:
    """A file name stem for a test id (``tests/test_x.py::T::test_y[1]``): what a file
    system takes, still readable."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id).strip("._")
    return stem[-150:] or "test"


def write_dumps(servers: Iterable[MockServerBase], folder: Path, test_id: str) -> list[Path]:
    """Write each collector's dump to ``folder/<test>.<collector>.otlp.jsonl``; return the
    files written. A collector that cannot answer is logged and skipped: reporting a failure
    must never fail itself."""
    from mocksup.otlp import MockOTLPCollector

    written = []
    for server in servers:
        if not isinstance(server, MockOTLPCollector):
            continue
        path = folder / f"{artifact_stem(test_id)}.{server.name}.otlp.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            server.export(path)
        except (MockServerError, OSError) as error:
            _log.warning("could not write the dump of %s to %s: %s", server.name, path, error)
            continue
        written.append(path)
    return written
