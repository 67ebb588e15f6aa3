"""The engine's admission: ``max_num_seqs`` slots and the KV cache's blocks, taken in arrival
order, and its pause.

vLLM's scheduler runs at most ``max_num_seqs`` sequences, and only while the KV cache has
blocks for them; the rest wait, first come first served (a preempted request goes back to
the front). A paused engine (``/pause?mode=keep``, or sleeping) admits nothing until it
resumes, so requests accepted meanwhile wait in the same queue. Blocks are counted here, in
one place, for admission, growth and the ``vllm:kv_cache_usage_perc`` gauge.
"""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["Slots"]


class Slots:
    """At most ``limit`` sequences and ``blocks`` KV blocks at once; the rest wait in order.

    :param blocks: the KV cache's blocks (``None``: never a constraint).
    """

    def __init__(self, limit: int, blocks: int | None = None) -> None:
        self.limit = limit
        self.blocks = blocks
        #: KV blocks the running sequences hold.
        self.used_blocks = 0
        self._running = 0
        self._held = False
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        #: The other data-parallel ranks' admissions: they resize and hold with this one.
        self.followers: list[Slots] = []

    def _fits(self, wanted: int, blocks: int) -> bool:
        # Blocks never keep a request out of an idle engine (it could never run otherwise).
        room = self.blocks is None or self.used_blocks + blocks <= self.blocks
        return self._running + wanted <= self.limit and (room or self._running == 0)

    def acquire(self, count: int, timeout: float, blocks: int = 0, *, front: bool = False) -> None:
        """Take ``count`` slots (capped at the limit) and ``blocks`` blocks, waiting in order
        (``front``: ahead of every waiting request, as a preempted one resumes).

        :raises TimeoutError: they were not free within ``timeout`` seconds.
        """
        with self._cond:
            wanted = min(count, self.limit)
            room = self.blocks is None or self.used_blocks + blocks <= self.blocks
            if (
                not self._queue
                and not self._held
                and self._running + wanted <= self.limit
                and (room or not self._running)
            ):
                self._running += wanted  # nobody waits and there is room: the common case
                self.used_blocks += blocks
                return
            ticket = object()
            deadline = time.monotonic() + timeout
            if front:
                self._queue.appendleft(ticket)
            else:
                self._queue.append(ticket)
            try:
                while True:
                    wanted = min(count, self.limit)
                    if self._queue[0] is ticket and not self._held and self._fits(wanted, blocks):
                        self._running += wanted
                        self.used_blocks += blocks
                        return
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no slot free within {timeout} s")
                    self._cond.wait(remaining)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, count: int, blocks: int = 0) -> None:
        """Give back what :meth:`acquire` took for ``count`` (and ``blocks`` blocks)."""
        with self._cond:
            self._running -= min(count, self.limit)
            self.used_blocks -= blocks
            if self._queue:  # every waiter holds a ticket in the queue
                self._cond.notify_all()

    def grow(self, blocks: int, *, force: bool = False) -> bool:
        """Take ``blocks`` more blocks for a running sequence; ``False`` when the cache is
        full (unless ``force``: the only running request may overflow it)."""
        with self._cond:
            if not force and self.blocks is not None and self.used_blocks + blocks > self.blocks:
                return False
            self.used_blocks += blocks
            return True

    def resize(self, limit: int) -> None:
        """Change the limit; waiting requests are re-examined."""
        with self._cond:
            self.limit = limit
            self._cond.notify_all()
        for follower in self.followers:
            follower.resize(limit)

    def hold(self, held: bool) -> None:
        """Stop admitting (``True``) or admit again (``False``)."""
        with self._cond:
            self._held = held
            self._cond.notify_all()
        for follower in self.followers:
            follower.hold(held)
