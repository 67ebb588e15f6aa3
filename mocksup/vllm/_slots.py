"""The engine's admission: ``max_num_seqs`` slots taken in arrival order, and its pause.

vLLM's scheduler runs at most ``max_num_seqs`` sequences; the rest wait, first come first
served. A paused engine (``/pause?mode=keep``, or sleeping) admits nothing until it resumes,
so requests accepted meanwhile wait in the same queue.
"""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["Slots"]


class Slots:
    """At most ``limit`` sequences run at once; the rest wait in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._held = False
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def acquire(self, count: int, timeout: float) -> None:
        """Take ``count`` slots (capped at the limit), waiting in FIFO order.

        :raises TimeoutError: they were not free within ``timeout`` seconds.
        """
        with self._cond:
            wanted = min(count, self.limit)
            if not self._queue and not self._held and self._running + wanted <= self.limit:
                self._running += wanted  # nobody waits and there is room: the common case
                return
            ticket = object()
            deadline = time.monotonic() + timeout
            self._queue.append(ticket)
            try:
                while True:
                    wanted = min(count, self.limit)
                    free = self._running + wanted <= self.limit and not self._held
                    if self._queue[0] is ticket and free:
                        self._running += wanted
                        return
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no slot free within {timeout} s")
                    self._cond.wait(remaining)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, count: int) -> None:
        """Give back what :meth:`acquire` took for ``count``."""
        with self._cond:
            self._running -= min(count, self.limit)
            if self._queue:  # every waiter holds a ticket in the queue
                self._cond.notify_all()

    def resize(self, limit: int) -> None:
        """Change the limit; waiting requests are re-examined."""
        with self._cond:
            self.limit = limit
            self._cond.notify_all()

    def hold(self, held: bool) -> None:
        """Stop admitting (``True``) or admit again (``False``)."""
        with self._cond:
            self._held = held
            self._cond.notify_all()
