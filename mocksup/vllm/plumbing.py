"""Connection-level helpers of the WSGI app: journal hook, headers, reset and cut faults."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mocksup.serving import DropConnection

__all__ = ["Cut", "Journaled", "cut_body", "journal_body"]


class Cut(DropConnection):
    """Raised inside a response to end the connection without finishing the body
    (``reset=True``: with a TCP RST); the HTTP server closes it, no error page, no log."""


class Journaled:
    """Wraps a streamed body so the journal entry is written when it ends."""

    def __init__(
        self, inner: Iterable[bytes], journal: Callable[[float | None, int], None]
    ) -> None:
        self._inner = iter(inner)
        self._journal = journal
        self._first: float | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = next(self._inner)
        if self._first is None:
            self._first = time.monotonic()
        return data

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._journal(self._first, 0)


def cut_body(payload: bytes) -> Iterator[bytes]:
    """Send half of ``payload``, then drop the connection."""
    yield payload[: len(payload) // 2]
    raise Cut("body cut (injected fault)")


def journal_body(body: bytes) -> Any:
    """A request body as the journal keeps it: decoded JSON, else text, else ``None``."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
