"""The KV cache's blocks while requests run: growth token by token, preemption when full.

A running request holds ``ceil(tokens / block_size)`` blocks per sequence. With simulated
latency it takes the blocks of its prompt and first token when scheduled and one more each
time a sequence's tokens cross a block boundary, so ``vllm:kv_cache_usage_perc`` follows the
tokens held; at zero latency (nothing to observe in between) it takes its final blocks at
once. When a block is needed and the cache is full, vLLM's scheduler preempts the request
scheduled last (recompute mode): it frees its blocks, goes back to the front of the waiting
queue, and, once blocks are free again, recomputes its prompt and the tokens it generated
(a prefill of them all) before it goes on. :class:`KVCache` does the same with the
engine's :class:`~._slots.Slots`, counting ``vllm:num_preemptions_total`` and each
request's preemptions. A request alone in the engine is never preempted: it may overflow a
cache too small for it (vLLM would refuse to start with such a cache).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from mocksup.vllm._errors import APIError
from mocksup.vllm._limits import QUEUE_TIMEOUT

if TYPE_CHECKING:
    from mocksup.vllm._engine import Job
    from mocksup.vllm._engine_metrics import EngineMetrics
    from mocksup.vllm._slots import Slots

__all__ = ["KVCache"]


class KVCache:
    """Blocks per running job, growth, and preemption of the job scheduled last."""

    def __init__(self, slots: Slots, metrics: EngineMetrics, block_size: int) -> None:
        self.slots = slots
        self.metrics = metrics
        self.block_size = block_size
        self._running: list[Job] = []
        self._lock = threading.Lock()

    def blocks_at(self, job: Job, generated: int) -> int:
        """Blocks ``job``'s sequences hold once each generated ``generated`` tokens."""
        size = self.block_size
        total = 0
        for c in job.plan.choices:
            total -= -(c.prompt_tokens + min(generated, len(c.tokens))) // size
        return total

    def first_blocks(self, job: Job) -> int:
        """What ``job`` takes when scheduled: its final blocks, or with latency its prompt's
        and its first token's."""
        if job.growing:
            return self.blocks_at(job, 1)
        size = self.block_size
        total = 0
        for c in job.plan.choices:
            total -= -(c.prompt_tokens + len(c.tokens)) // size
        return total

    def running(self, job: Job) -> None:
        """``job``, whose blocks grow, was scheduled (holding ``job.blocks``). Only such a job
        can preempt or be preempted: the others are not tracked."""
        with self._lock:
            self._running.append(job)

    def finished(self, job: Job) -> None:
        """``job`` ended; its slots and blocks go back."""
        if job.growing:
            with self._lock:
                if job in self._running:
                    self._running.remove(job)
        self.slots.release(len(job.plan.choices), job.blocks)
        job.blocks = 0

    def grow(self, job: Job, generated: int) -> None:
        """Take the blocks ``job`` needs for ``generated`` tokens, preempting the request
        scheduled last while the cache is full (``job`` itself, possibly)."""
        extra = self.blocks_at(job, generated) - job.blocks
        while extra > 0 and not job.preempted:
            if self.slots.grow(extra):
                job.blocks += extra
                return
            with self._lock:
                victims = [j for j in self._running if j.blocks and not j.preempted]
                victim = victims[-1] if len(victims) > 1 else None
                if victim is not None:
                    self._preempt(victim)
            if victim is None:
                self.slots.grow(extra, force=True)
                job.blocks += extra
                return

    def _preempt(self, victim: Job) -> None:
        # Under the lock: the victim stops at its next wait and resumes from the queue.
        victim.preempted = True
        self._running.remove(victim)
        count = len(victim.plan.choices)
        self.slots.release(count, victim.blocks)
        victim.blocks = 0
        self.metrics.preempted(count)

    def resume(self, job: Job, generated: int) -> float:
        """Schedule a preempted ``job`` again (first in the queue); returns when it is
        running again, the tokens it must recompute (its prompts and ``generated``).

        :raises APIError: 503 when no room came within the queue's time limit.
        """
        blocks = self.blocks_at(job, generated + 1)
        try:
            self.slots.acquire(len(job.plan.choices), QUEUE_TIMEOUT, blocks, front=True)
        except TimeoutError:
            raise APIError(
                503, f"The request waited {QUEUE_TIMEOUT:g} s for a slot (max_num_seqs)."
            ) from None
        job.blocks = blocks
        job.preempted = False
        job.preemptions += 1
        with self._lock:
            self._running.append(job)
        self.metrics.resumed(len(job.plan.choices))
        return time.monotonic()

    def recompute_tokens(self, job: Job, generated: int) -> int:
        """The tokens a resumed ``job`` prefills again."""
        return sum(c.prompt_tokens + min(generated, len(c.tokens)) for c in job.plan.choices)
