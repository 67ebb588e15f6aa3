"""The request journal: what each served request looked like, bounded and credential-free.

Entries keep at most :data:`~._limits.JOURNAL_BODY_BYTES` of a body and
:data:`~._limits.JOURNAL_HEADER_BYTES` of each header (the rest cut and marked), never the
body of a request refused for its size, and, unless told otherwise, no credentials:
``authorization``, ``proxy-authorization``, API-key and cookie headers, and any value that
looks like a bearer or basic credential, read ``[redacted]`` (the rule every mock's records
share: :func:`mocksup.serving.is_credential`). Bodies are decoded only when someone reads
the journal.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from typing import Any

from mocksup.serving import REDACTED, is_credential
from mocksup.vllm._limits import JOURNAL_BODY_BYTES, JOURNAL_HEADER_BYTES

__all__ = ["Journal", "journal_body", "redact"]

#: Headers kept per entry; a request with more is recorded with the first ones.
_MAX_HEADERS = 100


def redact(headers: dict[str, str], keep_credentials: bool) -> dict[str, str]:
    """The headers as the journal keeps them: bounded, and credentials hidden unless kept."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if len(kept) >= _MAX_HEADERS:
            break
        shown = value
        if not keep_credentials and is_credential(name, value):
            shown = REDACTED
        elif len(value) > JOURNAL_HEADER_BYTES:
            shown = f"{value[:JOURNAL_HEADER_BYTES]}...[{len(value) - JOURNAL_HEADER_BYTES} more]"
        kept[name] = shown
    return kept


def journal_body(raw: bytes, size: int) -> Any:
    """A body as the journal shows it: decoded JSON, else text, else ``None``.

    A body cut to the journal's limit is shown as text ending in a marker; JSON holding
    NaN or infinities (which Python's parser accepts) is shown as text too, so the journal
    stays strict JSON.
    """
    if not size:
        return None
    if size > len(raw):
        text = raw.decode("utf-8", "replace")
        return f"{text}...[truncated: {size} bytes in all]"
    try:
        return json.loads(raw, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace")


def _refuse(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


class Journal:
    """The requests served, oldest first, bounded to ``limit`` entries."""

    def __init__(self, limit: int) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._changed = threading.Condition()
        self._next = 0

    def add(self, entry: dict[str, Any], body: bytes) -> None:
        """Record one finished request (its body cut to the journal's limit)."""
        entry["body_size"] = len(body)
        entry["body"] = body[:JOURNAL_BODY_BYTES]
        with self._changed:
            entry["index"] = self._next
            self._next += 1
            self._entries.append(entry)
            self._changed.notify_all()

    @property
    def total(self) -> int:
        """Requests recorded since start (cleared ones included)."""
        return self._next

    def clear(self) -> None:
        """Forget every entry."""
        with self._changed:
            self._entries.clear()

    def query(
        self, path: str | None = None, count: int = 0, wait: float = 0.0
    ) -> list[dict[str, Any]]:
        """Entries (whose path is ``path``, when given); waits up to ``wait`` s for ``count``.

        :raises ValueError: ``wait`` is not a finite number of seconds.
        """
        if not math.isfinite(wait) or wait < 0:
            raise ValueError(f"wait must be a finite number of seconds >= 0, not {wait}")
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                found = [e for e in self._entries if path is None or e["path"] == path]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    return found
                self._changed.wait(remaining)
