"""What the collector received: compact batches per signal, the request log, the counters.

Every accepted request is kept as the serialised ``Export*ServiceRequest`` bytes (decompressed,
and for OTLP/JSON re-encoded as protobuf): about 0.4 KiB a span against 1.5 KiB for a parsed
upb message or 2 KiB for Python objects. Queries parse and materialise on demand. Two caps
bound it, items and bytes (``max_items``, ``max_stored_bytes``); past them items are counted
as dropped, never lost silently.

One :class:`threading.Condition` guards everything. It is notified when items arrive and when
the collector stops: the control API's waits are long polls on it, not client-side polling
loops. (A ``clear()`` needs no notification: a waiter notices the new generation on its next
wake-up, which only new items or its deadline bring, whatever the clear did.)
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from mocksup.otlp._signals import SIGNALS, Signal
from mocksup.serving import redact_credentials

__all__ = ("Batch", "Store")


@dataclass(frozen=True, slots=True)
class Batch:
    """The accepted items of one request: ``raw`` is a serialised ``Export*ServiceRequest``."""

    seq: int
    raw: bytes
    count: int
    received: float


class Store:
    """The collector's memory; every method is thread-safe.

    :param max_items: cap on stored items, all signals together (``None``: no cap). Items past
        it are not stored and are counted in ``dropped`` (never a silent loss).
    :param max_requests: how many request records to keep (the oldest go first, counted).
    :param max_stored_bytes: cap on the bytes of the stored batches (``None``: no cap).
    :param keep_credentials: keep credentials in the request records' headers; by default
        they read ``[redacted]`` (:func:`mocksup.serving.redact_credentials`).
    """

    def __init__(
        self,
        max_items: int | None,
        max_requests: int,
        max_stored_bytes: int | None = None,
        *,
        keep_credentials: bool = False,
    ) -> None:
        self.cond = threading.Condition()
        self.keep_credentials = keep_credentials
        self.max_items = max_items
        self.max_stored_bytes = max_stored_bytes
        self.closed = False
        #: Long polls held now (the control API's waits), for stats and tests.
        self.waiting = 0
        self.generation = 0
        self.batches: dict[Signal, list[Batch]] = {signal: [] for signal in SIGNALS}
        self.requests: deque[dict[str, Any]] = deque(maxlen=max_requests)
        #: The number of the last request stored or refused by the caps (the feed's cursors).
        self.seq = 0
        #: The number of the newest stored batch, of any signal.
        self.last_batch = 0
        self._request_seq = 0
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.items: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.rejected_items: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.requests_forgotten = 0
        self.stored_bytes = 0
        self.points = 0

    def total_items(self) -> int:
        """Items stored now, all signals together."""
        return sum(self.items.values())

    def room(self) -> tuple[int | None, int | None]:
        """How many more items and bytes fit under the caps (``None``: no cap)."""
        with self.cond:
            items = None if self.max_items is None else max(0, self.max_items - self.total_items())
            if self.max_stored_bytes is None:
                return items, None
            return items, max(0, self.max_stored_bytes - self.stored_bytes)

    def add(
        self, signal: Signal, raw: bytes, count: int, dropped: int = 0, points: int = 0
    ) -> None:
        """Keep one accepted request's items (already trimmed to the cap by the caller);
        ``points`` counts the data points of the metrics kept."""
        with self.cond:
            self.seq += 1
            if count:
                self.batches[signal].append(Batch(self.seq, raw, count, time.time()))
                self.last_batch = self.seq
                self.items[signal] += count
                self.stored_bytes += len(raw)
                self.points += points
            if dropped:
                self.dropped[signal] += dropped
            self.cond.notify_all()

    def record(self, entry: dict[str, Any]) -> None:
        """Log one request attempt and count it (its credentials redacted unless kept)."""
        if not self.keep_credentials:
            # Here, where every transport's records pass: none can keep a credential.
            entry["headers"] = redact_credentials(entry.get("headers") or {})
        with self.cond:
            self._request_seq += 1
            entry["id"] = self._request_seq
            if len(self.requests) == self.requests.maxlen:
                self.requests_forgotten += 1
            self.requests.append(entry)
            self.counters["requests"] += 1
            self.counters[f"requests_{entry['transport']}"] += 1
            self.counters["bytes"] += entry.get("size") or 0
            status = entry.get("status")
            self.statuses[str(status)] += 1
            if status not in (200, "OK"):
                self.counters["rejected_requests"] += 1
            if entry.get("fault"):
                self.counters["faults_applied"] += 1
            rejected = entry.get("rejected") or 0
            if rejected and entry.get("signal"):
                self.rejected_items[entry["signal"]] += rejected

    def clear(self) -> int:
        """Forget every item, request record and counter; return the new generation."""
        with self.cond:
            self.generation += 1
            self.batches = {signal: [] for signal in SIGNALS}
            self.requests.clear()
            self._reset_counters()
            return self.generation

    def close(self) -> None:
        """Wake every waiter for good: the collector is stopping."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def stats(self) -> dict[str, Any]:
        """The counters as the control API reports them."""
        with self.cond:
            return {
                "generation": self.generation,
                "requests": self.counters["requests"],
                "requests_http": self.counters["requests_http"],
                "requests_grpc": self.counters["requests_grpc"],
                "rejected_requests": self.counters["rejected_requests"],
                "faults_applied": self.counters["faults_applied"],
                "bytes": self.counters["bytes"],
                "statuses": dict(self.statuses),
                "items": {s: self.items[s] for s in SIGNALS},
                "metric_points": self.points,
                "rejected_items": {s: self.rejected_items[s] for s in SIGNALS},
                "dropped": {s: self.dropped[s] for s in SIGNALS},
                "stored_items": self.total_items(),
                "max_items": self.max_items,
                "stored_bytes": self.stored_bytes,
                "max_stored_bytes": self.max_stored_bytes,
                "requests_forgotten": self.requests_forgotten,
                "waiting": self.waiting,
                "cursor": self.seq,
            }
