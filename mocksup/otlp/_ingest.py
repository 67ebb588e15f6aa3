"""The part of an export both transports share: faults, the memory cap, storing.

A transport decodes the request into an ``Export*ServiceRequest`` (rejecting what cannot be
decoded itself), hands it to :meth:`Ingest.export` and writes the :class:`Answer` back in its
own terms. Bad input never reaches this point, so it never touches what was stored before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from mocksup.otlp._store import Store, count_items, trim
from mocksup.otlp.faults import Fault, FaultBook

__all__ = ["Answer", "Ingest"]


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
    """Stores exports, applying the scripted faults and the memory cap.

    :param stopping: set when the collector stops, so an injected delay ends early.
    """

    def __init__(self, store: Store, faults: FaultBook, stopping: threading.Event) -> None:
        self.store = store
        self.faults = faults
        self.stopping = stopping

    def export(
        self, signal: str, message: Message, raw: bytes | None, record: dict[str, Any]
    ) -> Answer:
        """Apply faults, store the items that fit and fill ``record``; return the answer.

        :param raw: the serialised ``message`` when the transport has it (protobuf
            requests), to store without re-encoding.
        """
        count = count_items(signal, message)
        record["items"] = count
        fault = self.faults.take(signal, record["transport"])
        if fault is not None:
            record["fault"] = fault.describe()
            if fault.delay:
                self.stopping.wait(fault.delay)
            if fault.drop or fault.is_error:
                record["items"] = 0
                return Answer(fault)
        stored, dropped = self._store(signal, message, raw, count)
        record["items"] = stored
        if dropped:
            record["dropped"] = dropped
        if fault is not None and (fault.rejected or fault.message):
            record["rejected"] = fault.rejected
            return Answer(fault, fault.rejected, fault.message)
        return Answer(fault)

    def _store(
        self, signal: str, message: Message, raw: bytes | None, count: int
    ) -> tuple[int, int]:
        store = self.store
        if raw is None:
            raw = message.SerializeToString()
        with store.cond:
            room = store.room()
            keep = count if room is None else min(count, room)
            if keep < count:
                # Only at the cap's edge: keep what fits, in request order, and say so.
                trim(signal, message, keep)
                raw = message.SerializeToString()
            store.add(signal, raw, keep, count - keep)
        return keep, count - keep
