"""What ``mocksup up`` shows and keeps while it runs: the status line, ``--print``, ``--dump``.

The status line is rewritten in place on a terminal, cut to the terminal's width so it never
wraps (a wrapped line would leave a new line behind at every refresh); into a file or a pipe
it becomes a plain line each time it changes.

``--print`` and ``--dump`` follow each collector's live feed (a long poll, so an item is
shown or written about as soon as the collector stores it). At stop, :meth:`Follower.finish`
reads what is left before the collectors stop, so nothing that arrived is missed; the dump
is flushed to disk then (on SIGTERM as on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

from mocksup.errors import MockServerError

if TYPE_CHECKING:
    from mocksup.base import MockServerBase

__all__ = ("Follower", "StatusLine", "dump_follower", "fit", "print_follower", "summary")

_T = TypeVar("_T")
#: Seconds one long poll of a follower is held (the collector answers as soon as items come).
_POLL = 30.0


def fit(line: str, width: int) -> str:
    """``line`` cut to ``width`` characters, ending in ``…`` when cut."""
    if width <= 0:
        return ""
    return line if len(line) <= width else line[: width - 1] + "…"


class StatusLine:
    """One line of status: rewritten in place on a terminal, a new line when it changes
    otherwise."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.last = ""

    def show(self, line: str) -> None:
        """Show ``line`` after the time of day."""
        stamped = time.strftime("[%H:%M:%S] ") + line
        if self.tty:
            # One column short of the width: some terminals wrap on the last column.
            width = shutil.get_terminal_size().columns - 1
            self.out.write("\r\x1b[K" + fit(stamped, width))
            self.out.flush()
        elif line != self.last:
            self.out.write(stamped + "\n")
            self.out.flush()
        self.last = line

    def end(self) -> None:
        """Leave the line (on a terminal, the next output starts on a line of its own)."""
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()


def summary(servers: dict[str, MockServerBase]) -> str:
    """One line on what each server received, from the servers' ``summary()``."""
    parts = []
    for name, server in servers.items():
        try:
            line = server.summary()
        except MockServerError:
            line = "not answering"
        if line:
            parts.append(f"{name}: {line}")
    return " | ".join(parts) or "running"


class Follower(Generic[_T]):
    """Reads a collector's feed in a thread and hands each page's items to ``emit``.

    :param fetch: ``fetch(cursor, timeout)`` returns ``(items, next cursor)``, holding the
        request up to ``timeout`` seconds while nothing arrived.
    :param emit: called with each non-empty page, under the follower's lock.
    :param name: the collector's name, for the message if it stops answering.
    """

    def __init__(
        self,
        fetch: Callable[[int, float], tuple[Sequence[_T], int]],
        emit: Callable[[Sequence[_T]], None],
        name: str,
    ) -> None:
        self.fetch = fetch
        self.emit = emit
        self.name = name
        self.cursor = 0
        self.closed = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"mocksup-follow-{name}")
        # A daemon: at stop, finish() reads what is left itself rather than waiting for a
        # long poll to end; the collector's stop then ends that poll.
        self.thread.daemon = True

    def start(self) -> None:
        """Start following."""
        self.thread.start()

    def _run(self) -> None:
        while True:
            cursor = self.cursor
            try:
                items, after = self.fetch(cursor, _POLL)
            except MockServerError as error:
                with self.lock:
                    if not self.closed:
                        print(f"mocksup: stopped following {self.name}: {error}", file=sys.stderr)
                    return
            with self.lock:
                if self.closed or cursor != self.cursor:
                    return
                if items:
                    self.emit(items)
                self.cursor = after

    def finish(self) -> None:
        """Hand over what arrived and was not read yet, then stop following (before the
        collector stops)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                while True:
                    items, self.cursor = self.fetch(self.cursor, 0.0)
                    if not items:
                        return
                    self.emit(items)
            except MockServerError as error:
                print(f"mocksup: could not read the last of {self.name}: {error}", file=sys.stderr)


def print_follower(collector: Any, verbosity: str, prefix: str = "") -> Follower[Any]:
    """A follower that prints each item as it arrives (``mocksup up --print``)."""
    from mocksup.otlp import render

    def fetch(cursor: int, timeout: float) -> tuple[Sequence[Any], int]:
        page = collector.feed(cursor, timeout=timeout)
        return page.items, page.cursor

    def emit(items: Sequence[Any]) -> None:
        # One write for the page: another follower's thread (one per collector), or an
        # unbuffered stdout, never splits an item's lines or cuts one from its newline.
        lines = (prefix + render(item, verbosity) + "\n" for item in items)  # type: ignore[arg-type]
        sys.stdout.write("".join(lines))
        sys.stdout.flush()

    return Follower(fetch, emit, collector.name)


def dump_follower(collector: Any, out: IO[str]) -> Follower[Any]:
    """A follower that writes each stored request as one OTLP JSON line (``--dump``)."""

    def fetch(cursor: int, timeout: float) -> tuple[Sequence[Any], int]:
        params = {"after": cursor, "timeout": timeout, "encoding": "otlp-json"}
        page = collector.control.call("GET", "/feed", params=params, wait=timeout)
        return page["data"], int(page["cursor"])

    def emit(documents: Sequence[Any]) -> None:
        for document in documents:
            out.write(json.dumps(document, separators=(",", ":")) + "\n")
        out.flush()

    return Follower(fetch, emit, collector.name)


def close_dump(out: IO[str]) -> None:
    """Flush a dump to disk and close it."""
    out.flush()
    with contextlib.suppress(OSError):  # a pipe or a character device: nothing to sync
        os.fsync(out.fileno())
    out.close()
