"""The Responses API's store: responses by id, the chat messages they were asked with, and
the events of background streams.

vLLM keeps them only with ``VLLM_ENABLE_RESPONSES_API_STORE=1`` (otherwise ``store`` is
silently off), in dictionaries that grow without bound. The mock keeps at most
:data:`~._limits.MAX_STORED_RESPONSES` responses and about
:data:`~._limits.MAX_STORED_BYTES` of them, forgetting the oldest first (a forgotten id
answers 404, as an id never stored). All methods are thread-safe: the HTTP server's threads
and the background generations share one store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mocksup.vllm._encoding import dumps
from mocksup.vllm._limits import MAX_STORED_BYTES, MAX_STORED_RESPONSES

__all__ = ["EventLog", "ResponseStore", "StoredResponse"]


class EventLog:
    """The events of a background stream so far, for the readers that follow it."""

    def __init__(self) -> None:
        self._events: list[bytes] = []
        self._closed = False
        self._changed = threading.Condition()

    def append(self, event: bytes) -> None:
        """Add one event and wake the readers."""
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def close(self) -> None:
        """No more events will come."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def size(self) -> int:
        """Bytes of the events kept."""
        with self._changed:
            return sum(map(len, self._events))

    def follow(self, start: int = 0) -> Iterator[bytes]:
        """The events from number ``start`` on, as they come, until the log closes."""
        position = start
        while True:
            with self._changed:
                # Woken by every append and by close; the generation behind the log always
                # ends (its latency is bounded), and close() is called when it does.
                while len(self._events) <= position and not self._closed:
                    self._changed.wait()
                fresh = self._events[position:]
                closed = self._closed
            position += len(fresh)
            if fresh:
                yield b"".join(fresh)
            if closed and position >= len(self._events):
                return


@dataclass
class StoredResponse:
    """One stored response: its ``response`` object and the chat messages of its input."""

    body: dict[str, Any] | None
    messages: list[dict[str, Any]]
    #: Bytes it takes, roughly: its messages' and its body's JSON.
    size: int = 0
    message_size: int = 0
    #: A background response's cancellation (set: abort its generation).
    cancelled: threading.Event | None = None
    #: A background stream's events.
    events: EventLog | None = None


class ResponseStore:
    """Responses by id, bounded by count and by size (oldest forgotten first)."""

    def __init__(self, limit: int = MAX_STORED_RESPONSES, max_bytes: int = MAX_STORED_BYTES):
        self._limit = limit
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keep_messages(self, response_id: str, messages: list[dict[str, Any]]) -> StoredResponse:
        """Keep the input messages of a response being generated (vLLM stores them first)."""
        size = len(dumps(messages))
        entry = StoredResponse(None, messages, size, size)
        with self._lock:
            old = self._entries.pop(response_id, None)
            if old is not None:
                self._bytes -= old.size
            self._add(response_id, entry)
        return entry

    def finish(self, response_id: str, body: dict[str, Any]) -> None:
        """Store the final response, unless it was cancelled meanwhile (it stays so)."""
        size = len(dumps(body))
        with self._lock:
            entry = self._entries.get(response_id)
            if (
                entry is not None
                and entry.body is not None
                and (entry.body.get("status") == "cancelled")
            ):
                return
            if entry is None:
                entry = StoredResponse(None, [])
            else:
                del self._entries[response_id]
                self._bytes -= entry.size
            entry.body = body
            entry.size = entry.message_size + size
            self._add(response_id, entry)

    def queue(
        self,
        response_id: str,
        body: dict[str, Any],
        cancelled: threading.Event,
        events: EventLog | None,
    ) -> None:
        """Store a background response as it starts (``queued``)."""
        size = len(dumps(body))
        with self._lock:
            entry = self._entries.pop(response_id, None) or StoredResponse(None, [])
            self._bytes -= entry.size
            entry.body, entry.cancelled, entry.events = body, cancelled, events
            entry.size = entry.message_size + size
            self._add(response_id, entry)

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response (``None``: unknown, forgotten, or not finished yet)."""
        with self._lock:
            entry = self._entries.get(response_id)
        return entry if entry is not None and entry.body is not None else None

    def cancel(self, response_id: str) -> dict[str, Any] | str | None:
        """Mark a background response cancelled and abort its generation.

        :returns: the response (now ``cancelled``); ``None`` for an unknown id; ``"sync"``
            for one that is not queued or in progress (vLLM refuses to cancel it).
        """
        with self._lock:
            entry = self._entries.get(response_id)
            if entry is None or entry.body is None:
                return None
            if entry.body.get("status") not in ("queued", "in_progress"):
                return "sync"
            entry.body = {**entry.body, "status": "cancelled"}
        if entry.cancelled is not None:
            entry.cancelled.set()
        return entry.body

    def _add(self, response_id: str, entry: StoredResponse) -> None:
        # Called with the lock held, the id not in the store.
        self._entries[response_id] = entry
        self._bytes += entry.size
        while self._entries and (len(self._entries) > self._limit or self._bytes > self._max_bytes):
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size
