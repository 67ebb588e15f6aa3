"""The live feed: what arrived after a cursor, held as a long poll until something does.

Every stored request gets a sequence number (``Batch.seq``), increasing across signals and
across ``clear()``; a cursor is the number of the last request a reader has seen. A page of
the feed is the matching items of the requests after the cursor, in arrival order, whole
requests at a time (so a cursor never points inside one), with the new cursor. When nothing
matching arrived, the request is held on the store's condition until something does or its
timeout passes; the cursor still moves past the requests that did not match, so the next
page does not look at them again.
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mocksup.otlp._query import Query, select
from mocksup.otlp._signals import Signal
from mocksup.otlp._store import Batch, Store
from mocksup.otlp._values import no_gc

__all__ = ("Page", "StaleCursorError", "read_page", "stored_after")


class StaleCursorError(ValueError):
    """The cursor is past every request this collector numbered (it was restarted?)."""


@dataclass
class Page:
    """One answer of the feed: ``(signal, *Data bytes)`` frames, the cursor after them."""

    cursor: int
    generation: int
    frames: list[tuple[Signal, bytes]] = field(default_factory=list)
    count: int = 0


def read_page(
    store: Store, queries: dict[Signal, Query], after: int, limit: int, timeout: float
) -> Page:
    """The items after ``after`` that match (at least one, at most about ``limit``: requests
    are never split), waiting up to ``timeout`` seconds for one to arrive.

    :raises StaleCursorError: ``after`` is past the last request numbered.
    :raises ConnectionAbortedError: the collector is stopping.
    """
    deadline = time.monotonic() + timeout
    with store.cond:
        if after > store.seq:
            raise StaleCursorError(
                f"cursor {after} is past this collector's last request ({store.seq}): "
                "it was restarted; start again from 0"
            )
        store.waiting += 1
    try:
        while True:
            with store.cond:
                pending = stored_after(store, list(queries), after)
                generation = store.generation
                horizon = store.seq
            page = _collect(queries, pending, after, limit, generation)
            if page.count:
                return page
            # Nothing up to the horizon matched: the requests left are of other signals, or
            # were cleared. Move past them, or the wait below would never hold.
            after = max(page.cursor, horizon)
            with store.cond:
                while store.last_batch <= after and not store.closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    store.cond.wait(remaining)
                if store.closed:
                    raise ConnectionAbortedError("the collector is stopping")
                if store.last_batch <= after:
                    return Page(after, store.generation)
    finally:
        with store.cond:
            store.waiting -= 1


def stored_after(
    store: Store, signals: Sequence[Signal], after: int
) -> Iterator[tuple[int, Signal, Batch]]:
    """The stored requests of ``signals`` numbered above ``after``, in arrival order.

    Called under the store's lock, read after it: only the bounds are taken here (the
    receivers only append to these lists, and ``clear()`` replaces them).
    """
    runs = []
    for signal in signals:
        batches = store.batches[signal]
        start = bisect_right(batches, after, key=_seq)
        runs.append(_run(signal, batches, start, len(batches)))
    return heapq.merge(*runs, key=_first)


def _run(
    signal: Signal, batches: list[Batch], start: int, end: int
) -> Iterator[tuple[int, Signal, Batch]]:
    for index in range(start, end):
        batch = batches[index]
        yield batch.seq, signal, batch


def _collect(
    queries: dict[Signal, Query],
    pending: Iterable[tuple[int, Signal, Batch]],
    after: int,
    limit: int,
    generation: int,
) -> Page:
    page = Page(after, generation)
    with no_gc():
        for seq, signal, batch in pending:
            part, count = select(signal, queries[signal], batch)
            page.cursor = seq
            if count:
                page.frames.append((signal, part))
                page.count += count
                if page.count >= limit:
                    break
    return page


def _seq(batch: Batch) -> int:
    return batch.seq


def _first(entry: tuple[int, Signal, Batch]) -> int:
    return entry[0]
