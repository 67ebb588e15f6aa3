"""HTML reports: what a collector received, as one self-contained page.

A report is the web viewer's page (:mod:`mocksup.otlp._ui`) with the telemetry embedded:
the trace list, waterfalls, logs, metric charts and, when given, vLLM request journals, all
working from ``file://`` with no server and no network. Its data is the feed's protobuf form
(base64 in a JSON block), which the page's own decoder reads, so a report and the live viewer
share every line of their code. :func:`dump_frames` reads a dump (the OTLP JSON lines
``export()`` writes), :func:`collector_frames` a running collector;
:func:`write_report` writes the page. ``mocksup report DUMP -o report.html`` is the command,
and the pytest plugin and :mod:`mocksup.testing` write one for each failing test that used
the collector.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mocksup.otlp._answers import feed_protobuf
from mocksup.otlp._signals import Signal
from mocksup.otlp._streams import parse_feed_page
from mocksup.otlp._ui import journal_view, page
from mocksup.otlp.dump import _protobuf, _Source, read_dump

if TYPE_CHECKING:
    from mocksup.base import MockServerBase
    from mocksup.otlp.client import CollectorQueries

__all__ = (
    "REPORT_DIR_ENV",
    "Frame",
    "collector_frames",
    "dump_frames",
    "journal_entries",
    "read_journal",
    "render_report",
    "report_path",
    "write_report",
    "write_test_report",
)

#: One stored request: its signal and its ``TracesData``/``MetricsData``/``LogsData`` bytes.
Frame = tuple[Signal, bytes]
#: The environment variable naming the folder where test reports are written.
REPORT_DIR_ENV = "MOCKSUP_REPORT_DIR"
#: Items per feed page read from a collector.
_PAGE = 50_000


def dump_frames(source: _Source) -> Iterator[Frame]:
    """The ``(signal, *Data protobuf)`` frames of a dump, one per line, in order.

    :raises ReplayError: a line is not JSON, or not OTLP/JSON of one of the three signals.
    """
    for number, signal, document in read_dump(source):
        yield signal, _protobuf(number, signal, document)


def collector_frames(collector: CollectorQueries) -> list[Frame]:
    """Everything a collector holds now, as frames, read from its feed (protobuf pages).

    :raises ControlAPIError: the collector is unreachable or answered an error.
    """
    frames: list[Frame] = []
    cursor = 0
    while True:
        params = {"after": cursor, "timeout": 0, "limit": _PAGE, "encoding": "protobuf"}
        _, payload = collector.control.fetch("GET", "/feed", params=params)
        page, cursor, _ = parse_feed_page(payload)
        frames.extend(page)
        if not page:
            return frames


def journal_entries(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Journal entries (``GET /mocksup/requests`` documents) as a report keeps them."""
    return [journal_view(dict(entry)) for entry in entries]


def render_report(
    frames: Iterable[Frame],
    *,
    title: str = "mocksup report",
    journals: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> str:
    """The report's HTML: the viewer with ``frames`` (and ``journals``: mock name → journal
    entries) embedded."""
    data = feed_protobuf(frames, 0, 0)
    boot = {
        "mode": "report",
        "title": title,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": base64.b64encode(data).decode("ascii"),
        "journals": {name: journal_entries(entries) for name, entries in (journals or {}).items()},
    }
    text, _ = page(boot, title)
    return text


def write_report(
    path: str | os.PathLike[str],
    frames: Iterable[Frame],
    *,
    title: str = "mocksup report",
    journals: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Path:
    """Write :func:`render_report`'s page to ``path`` (its folder is created); return it."""
    target = Path(path)
    text = render_report(frames, title=title, journals=journals)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)  # never half a report where a CI job picks it up
    return target


def report_path(directory: str | os.PathLike[str], test_id: str) -> Path:
    """Where the report of the test ``test_id`` goes in ``directory`` (a safe file name)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id).strip("._")[:180] or "test"
    return Path(directory) / f"{stem}.html"


def write_test_report(
    servers: Iterable[MockServerBase], test_id: str, directory: str | os.PathLike[str]
) -> list[Path]:
    """Write the report of a failing test: one per collector among ``servers`` (with the
    journals of the vLLM mocks among them); return the paths written. A server that cannot
    be read is left out: a report never hides the test's own failure."""
    from mocksup.errors import MockServerError
    from mocksup.otlp.collector import MockOTLPCollector

    chosen = list(servers)
    collectors = [s for s in chosen if isinstance(s, MockOTLPCollector)]
    journals: dict[str, list[Any]] = {}
    for server in chosen:
        if type(server).__name__ == "MockVLLMServer" and server.is_running():
            try:
                journals[server.name] = server.control.call("GET", "/requests")["requests"]
            except MockServerError:
                continue
    written = []
    for collector in collectors:
        suffix = "" if len(collectors) == 1 else f"-{collector.name}"
        target = report_path(directory, test_id + suffix)
        try:
            frames = collector_frames(collector)
        except MockServerError:
            continue
        title = f"{test_id} ({collector.name})"
        written.append(write_report(target, frames, title=title, journals=journals))
    return written


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A saved journal: a ``GET /mocksup/requests`` answer, or its list of entries.

    :raises ValueError: the file is not JSON of that shape.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read a journal: {error}") from None
    entries = document.get("requests") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f'{path}: not a journal (a list of entries, or {{"requests": [...]}})')
    return entries
