"""What the collector received: compact batches per signal, the request log, the counters.

Every accepted request is kept as the serialised ``Export*ServiceRequest`` bytes (decompressed,
and for OTLP/JSON re-encoded as protobuf): about 0.4 KiB a span against 1.5 KiB for a parsed
upb message or 2 KiB for Python objects. Queries parse and materialise on demand.

One :class:`threading.Condition` guards everything and is notified on every change, so the
control API's waits are long polls on it, not client-side polling loops.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from mocksup.otlp._signals import all_scopes, items_of

__all__ = ["SIGNALS", "Batch", "Store", "count_items", "data_points", "trim"]

#: The signals the collector receives, in the order routes and counters list them.
SIGNALS = ("traces", "metrics", "logs")


@dataclass(frozen=True, slots=True)
class Batch:
    """The accepted items of one request: ``raw`` is a serialised ``Export*ServiceRequest``."""

    seq: int
    raw: bytes
    count: int
    received: float


def count_items(signal: str, message: Message) -> int:
    """Spans, metrics or log records in a request."""
    return sum(len(items_of(signal, scope)) for scope in all_scopes(signal, message))


def data_points(message: Any) -> int:
    """Data points in a metrics request (what partial success counts for metrics)."""
    total = 0
    for scope in all_scopes("metrics", message):
        for metric in scope.metrics:
            kind = metric.WhichOneof("data")
            if kind is not None:
                total += len(getattr(metric, kind).data_points)
    return total


def trim(signal: str, message: Message, keep: int) -> None:
    """Drop every item of ``message`` past the first ``keep`` (in request order), in place."""
    for scope in all_scopes(signal, message):
        items = items_of(signal, scope)
        if keep >= len(items):
            keep -= len(items)
        else:
            del items[keep:]
            keep = 0


class Store:
    """The collector's memory; every method is thread-safe.

    :param max_items: cap on stored items, all signals together (``None``: no cap). Items past
        it are not stored and are counted in ``dropped`` (never a silent loss).
    :param max_requests: how many request records to keep (the oldest go first, counted).
    """

    def __init__(self, max_items: int | None, max_requests: int) -> None:
        self.cond = threading.Condition()
        self.max_items = max_items
        self.closed = False
        self.generation = 0
        self.batches: dict[str, list[Batch]] = {signal: [] for signal in SIGNALS}
        self.requests: deque[dict[str, Any]] = deque(maxlen=max_requests)
        self._seq = 0
        self._request_seq = 0
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.items: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.rejected_items: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.requests_forgotten = 0

    def total_items(self) -> int:
        """Items stored now, all signals together."""
        return sum(self.items.values())

    def room(self) -> int | None:
        """How many more items fit under the cap (``None``: no cap)."""
        if self.max_items is None:
            return None
        with self.cond:
            return max(0, self.max_items - self.total_items())

    def add(self, signal: str, raw: bytes, count: int, dropped: int = 0) -> None:
        """Keep one accepted request's items (already trimmed to the cap by the caller)."""
        with self.cond:
            self._seq += 1
            if count:
                self.batches[signal].append(Batch(self._seq, raw, count, time.time()))
                self.items[signal] += count
            if dropped:
                self.dropped[signal] += dropped
            self.cond.notify_all()

    def record(self, entry: dict[str, Any]) -> None:
        """Log one request attempt and count it."""
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
            self.cond.notify_all()

    def clear(self) -> int:
        """Forget every item, request record and counter; return the new generation."""
        with self.cond:
            self.generation += 1
            self.batches = {signal: [] for signal in SIGNALS}
            self.requests.clear()
            self._reset_counters()
            self.cond.notify_all()
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
                "rejected_items": {s: self.rejected_items[s] for s in SIGNALS},
                "dropped": {s: self.dropped[s] for s in SIGNALS},
                "stored_items": self.total_items(),
                "max_items": self.max_items,
                "requests_forgotten": self.requests_forgotten,
            }
