"""The part of an export both transports share: faults, the store's caps, storing.

A transport decodes the request (refusing what cannot be decoded itself) into an
:class:`~mocksup.otlp._proto.Envelope`, hands it to :meth:`Ingest.export` and writes the
:class:`Answer` back in its own terms. Bad input never reaches this point, so it never touches
what was stored before.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mocksup.otlp._limits import MAX_PENDING_FAULTS, Limits
from mocksup.otlp._proto import Envelope, data_point_count
from mocksup.otlp._signals import Signal, Transport
from mocksup.otlp._store import Store

if TYPE_CHECKING:
    # Only its type: the faults arrive built (the control API validates them), and the
    # collector serves before it imports pydantic.
    from mocksup.otlp.faults import Fault

__all__ = ("Answer", "FaultBook", "Ingest")


@dataclass(frozen=True, slots=True)
class Answer:
    """How to answer an export: normally (maybe a partial success), with an error, or not."""

    fault: Fault | None = None
    rejected: int = 0
    message: str = ""

    @property
    def drop(self) -> bool:
        """Close the connection without answering."""
        return self.fault is not None and self.fault.drop

    @property
    def error(self) -> bool:
        """Answer the fault's error status."""
        return self.fault is not None and not self.fault.drop and self.fault.is_error


class Ingest:
    """Stores exports, applying the scripted faults and the store's caps.

    :param stopping: set when the collector stops, so an injected delay ends early.
    """

    def __init__(
        self, store: Store, faults: FaultBook, stopping: threading.Event, limits: Limits
    ) -> None:
        self.store = store
        self.faults = faults
        self.stopping = stopping
        self.limits = limits

    def export(self, signal: Signal, envelope: Envelope, record: dict[str, Any]) -> Answer:
        """Apply faults, store the items that fit and fill ``record``; return the answer."""
        count = envelope.count
        points = data_point_count(envelope.raw) if count and signal == "metrics" else 0
        if count and not points and signal == "metrics" and self.limits.mode.drop_pointless_metrics:
            # The Collector answers a metrics export without a data point and passes nothing
            # on (its receiver counts points, not metrics).
            count = 0
        record["items"] = count
        fault = self.faults.take(signal, record["transport"])
        if fault is not None:
            record["fault"] = fault.describe()
            if fault.delay:
                self.stopping.wait(fault.delay)
            if fault.drop or fault.is_error:
                record["items"] = 0
                return Answer(fault)
        stored, dropped = self._store(signal, envelope, count, points)
        record["items"] = stored
        if dropped:
            record["dropped"] = dropped
        if fault is not None and (fault.rejected or fault.message):
            record["rejected"] = fault.rejected
            return Answer(fault, fault.rejected, fault.message)
        return Answer(fault)

    def _store(
        self, signal: Signal, envelope: Envelope, count: int, points: int
    ) -> tuple[int, int]:
        store = self.store
        if not count:
            return 0, 0
        raw = envelope.raw
        with store.cond:
            room_items, room_bytes = store.room()
            keep = count if room_items is None else min(count, room_items)
            if room_bytes is not None and len(raw) > room_bytes:
                keep = min(keep, _fitting(envelope, room_bytes))
            if keep < count:
                # Only at a cap's edge: keep what fits, in request order, and say so.
                raw = envelope.trimmed(keep) if keep else b""
                points = data_point_count(raw) if signal == "metrics" and keep else 0
            store.add(signal, raw, keep, count - keep, points)
        return keep, count - keep


def _fitting(envelope: Envelope, room: int) -> int:
    """How many leading items of the request fit in ``room`` bytes once trimmed.

    Runs on every request once the store is full, so it stays in C: each item is costed
    at its size plus 4 bytes of framing (a tag and a length of at most 3 bytes: items are
    under 2 MiB) and the rest of the request at what is left with 2 bytes an item. Both
    err on the generous side, so the budget is never passed; at most an item is dropped
    that would just have fitted.
    """
    sizes = list(envelope.item_sizes())
    overhead = max(len(envelope.raw) - sum(sizes) - 2 * len(sizes), 0)
    if overhead >= room:
        return 0
    costs = list(itertools.accumulate(map(operator.add, sizes, itertools.repeat(4))))
    return bisect.bisect_right(costs, room - overhead)


class FaultBook:
    """The ordered, thread-safe list of pending faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[list[Any]] = []  # [fault, remaining] pairs

    def add(self, faults: list[Fault]) -> None:
        """Append faults after those already pending, all or none.

        :raises ValueError: more than :data:`MAX_PENDING_FAULTS` would then be pending.
        """
        with self._lock:
            if len(self._faults) + len(faults) > MAX_PENDING_FAULTS:
                raise ValueError(
                    f"{len(self._faults):,} faults pending and {len(faults):,} more would pass "
                    f"the {MAX_PENDING_FAULTS:,} the collector keeps; DELETE /mocksup/faults "
                    "(clear_faults) clears them"
                )
            self._faults.extend([fault, fault.count] for fault in faults)

    def pending_any(self) -> bool:
        """Whether any fault is pending (read without the lock: a hint for the fast path)."""
        return bool(self._faults)

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._faults.clear()

    def take(self, signal: Signal, transport: Transport) -> Fault | None:
        """The fault that applies to this export, counting it as used; ``None`` if none."""
        if not self._faults:  # the common case, without the lock
            return None
        with self._lock:
            for index, entry in enumerate(self._faults):
                fault: Fault = entry[0]
                if fault.signal not in (None, signal) or fault.transport not in (None, transport):
                    continue
                if entry[1] is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._faults[index]
                return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """The pending faults as JSON documents, with ``remaining`` uses."""
        with self._lock:
            return [
                {**fault.model_dump(), "remaining": remaining} for fault, remaining in self._faults
            ]
