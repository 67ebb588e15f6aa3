"""Runs one generation request through simulated engine time: queue, TTFT, ITL, faults.

Token times are absolute deadlines from the moment the request is scheduled
(``first = scheduled + ttft``, ``t[k] = t[k-1] + itl``), so oversleeping one token never
delays the next and TTFT/ITL stay accurate. ``time.sleep`` here is the simulated latency
itself, not synchronisation. With no delay due, consecutive events are written together
(the events on the wire stay the same), which keeps zero-latency streams cheap.

Every engine request (a prompt and choice pair) ends in exactly one record: metrics always,
and a span when tracing is on and it finished (not when the client went away, which vLLM
aborts without a span).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from mocksup.vllm._engine_metrics import BLOCK_SIZE, EngineMetrics, Finished
from mocksup.vllm._errors import APIError
from mocksup.vllm._faults import Cut
from mocksup.vllm._limits import QUEUE_TIMEOUT
from mocksup.vllm._plan import Choice, Plan
from mocksup.vllm._stream import DONE, ChunkWriter
from mocksup.vllm._tracing import SpanExporter, SpanInput, TraceContext, build_span
from mocksup.vllm.settings import FaultKind, Faults

__all__ = ["Engine", "Job", "Slots"]

#: Bytes gathered before a write when no delay separates events.
_COALESCE = 65536
#: Faults that end a stream after ``after_tokens`` tokens.
_MID_STREAM = frozenset({"stream_error", "stream_cut"})


class _Progress:
    """A stream's state while it runs: token times, finished choices, unwritten events."""

    __slots__ = ("done", "pending", "size", "times")

    def __init__(self, choices: int) -> None:
        self.times: list[float] = []
        self.done = [False] * choices
        self.pending: list[bytes] = []
        self.size = 0

    def add(self, events: list[bytes]) -> None:
        self.pending.extend(events)

    def take(self) -> bytes:
        data = b"".join(self.pending)
        self.pending, self.size = [], 0
        return data


class Slots:
    """At most ``limit`` sequences run at once; the rest wait in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def acquire(self, count: int, timeout: float) -> None:
        """Take ``count`` slots (capped at the limit), waiting in FIFO order.

        :raises TimeoutError: they were not free within ``timeout`` seconds.
        """
        ticket = object()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._queue.append(ticket)
            try:
                while True:
                    wanted = min(count, self.limit)
                    if self._queue[0] is ticket and self._running + wanted <= self.limit:
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
            self._cond.notify_all()

    def resize(self, limit: int) -> None:
        """Change the limit; waiting requests are re-examined."""
        with self._cond:
            self.limit = limit
            self._cond.notify_all()


@dataclass
class Job:
    """One generation request, validated and planned, about to run."""

    plan: Plan
    writer: ChunkWriter | None
    arrival: float
    arrival_ns: int
    ttft: float
    itl: float
    jitter: float
    rng: random.Random
    fault: FaultKind | None
    faults: Faults
    parent: TraceContext | None
    #: The sampling parameters the span reports.
    n: int
    temperature: float | None
    top_p: float | None
    include_usage: bool = False
    times: list[float] = field(default_factory=list)
    scheduled: float = 0.0


class Engine:
    """Schedules jobs on the slots and accounts them in metrics and spans."""

    def __init__(self, slots: Slots, metrics: EngineMetrics, exporter: SpanExporter | None) -> None:
        self.slots = slots
        self.metrics = metrics
        self.exporter = exporter

    def _admit(self, job: Job) -> int:
        count = len(job.plan.choices)
        blocks = sum(-(-(c.prompt_tokens + len(c.tokens)) // BLOCK_SIZE) for c in job.plan.choices)
        self.metrics.queued()
        try:
            self.slots.acquire(count, QUEUE_TIMEOUT)
        except TimeoutError:
            self.metrics.left_queue()
            raise APIError(
                503, f"The request waited {QUEUE_TIMEOUT:g} s for a slot (max_num_seqs)."
            ) from None
        except BaseException:
            self.metrics.left_queue()
            raise
        self.metrics.admitted(blocks)
        job.scheduled = time.monotonic()
        return blocks

    def _release(self, job: Job, blocks: int) -> None:
        self.slots.release(len(job.plan.choices))
        self.metrics.released(blocks)

    def _deadlines(self, job: Job, steps: int) -> list[float]:
        spread = job.jitter
        rng = job.rng

        def scaled(value: float) -> float:
            return value * (1 + rng.uniform(-spread, spread)) if spread and value else value

        at = job.scheduled + scaled(job.ttft)
        out = [at]
        for _ in range(steps - 1):
            at += scaled(job.itl)
            out.append(at)
        return out

    def run_blocking(self, job: Job) -> None:
        """A non-streamed request: wait out its whole generation (or until its fault)."""
        blocks = self._admit(job)
        try:
            steps = max((len(c.tokens) for c in job.plan.choices), default=0)
            deadlines = self._deadlines(job, max(steps, 1))
            if job.fault == "stream_error":
                at = deadlines[min(job.faults.after_tokens, len(deadlines) - 1)]
                _sleep_until(at)
                self._finish_all(job, deadlines, "error", upto=job.faults.after_tokens)
                raise APIError(500, "Internal server error while generating (injected fault).")
            _sleep_until(deadlines[-1])
            job.times = deadlines
            self._finish_all(job, deadlines, None)
        finally:
            self._release(job, blocks)

    def stream(self, job: Job) -> Iterator[bytes]:
        """A streamed request: yields SSE bytes at the simulated token times."""
        blocks = self._admit(job)
        progress = _Progress(len(job.plan.choices))
        try:
            yield from self._tokens(job, progress)
            yield from self._ending(job, progress)
        finally:
            # A client that went away lands here through GeneratorExit: abort what is left.
            self._finish_rest(job, progress.done, progress.times, "abort")
            self._release(job, blocks)

    def _tokens(self, job: Job, progress: _Progress) -> Iterator[bytes]:
        # Events that are due are gathered and written together; a wait flushes them first.
        writer = job.writer
        assert writer is not None
        choices, done, times = job.plan.choices, progress.done, progress.times
        steps = max(max((len(c.tokens) for c in choices), default=0), 1)
        deadlines = self._deadlines(job, steps)
        _sleep_until(deadlines[0])
        progress.add(writer.role_chunks())
        cut_at = job.faults.after_tokens if job.fault in _MID_STREAM else steps
        for k in range(min(steps, cut_at)):
            if k and deadlines[k] > time.monotonic():
                if progress.pending:
                    yield progress.take()
                _sleep_until(deadlines[k])
            times.append(time.monotonic())
            for position, c in enumerate(choices):
                if done[position]:
                    continue
                event = writer.token(position, k) if c.tokens else writer.empty_finish(position)
                if event:
                    progress.pending.append(event)
                    progress.size += len(event)
                if k >= len(c.tokens) - 1:
                    done[position] = True
                    self._finish(job, c, times, None)
            if progress.size >= _COALESCE:
                yield progress.take()

    def _ending(self, job: Job, progress: _Progress) -> Iterator[bytes]:
        writer = job.writer
        assert writer is not None
        if job.fault == "stream_error":
            error = APIError(500, "Internal server error while generating (injected fault).")
            self._finish_rest(job, progress.done, progress.times, "error")
            progress.add([writer.error_chunk(error.body()), DONE])
            yield progress.take()
            return
        if job.fault == "stream_cut":
            if progress.pending:
                yield progress.take()
            self._finish_rest(job, progress.done, progress.times, "abort")
            raise Cut("stream cut (injected fault)")
        if job.include_usage:
            progress.pending.append(writer.usage_chunk())
        progress.pending.append(DONE)
        yield progress.take()

    def _finish_all(self, job: Job, times: list[float], reason: str | None, upto: int = 0) -> None:
        for c in job.plan.choices:
            self._finish(job, c, times[:upto] if reason else times, reason)

    def _finish_rest(self, job: Job, done: list[bool], times: list[float], reason: str) -> None:
        for position, c in enumerate(job.plan.choices):
            if not done[position]:
                done[position] = True
                self._finish(job, c, times, reason)

    def _finish(self, job: Job, c: Choice, times: list[float], reason: str | None) -> None:
        """Account one engine request. ``reason`` overrides (error/abort) the planned one."""
        end = time.monotonic()
        generated = len(c.tokens) if reason is None else min(len(c.tokens), len(times))
        own = times[: max(generated, 1)] if times else [end]
        first, last = own[0], own[-1]
        finish = reason or c.finish_reason
        if finish == "tool_calls":
            finish = "stop"  # the engine stopped; "tool_calls" is the API's renaming
        itls = [b - a for a, b in itertools.pairwise(own)] if generated > 1 else []
        record = Finished(
            prompt_tokens=c.prompt_tokens,
            generation_tokens=generated,
            max_tokens_param=job.plan.max_tokens_param,
            n=job.n,
            finish_reason=finish,
            queue=job.scheduled - job.arrival,
            ttft=first - job.arrival,
            prefill=first - job.scheduled,
            decode=last - first,
            inference=last - job.scheduled,
            e2e=end - job.arrival,
            itls=itls,
        )
        self.metrics.record(record)
        if self.exporter is not None and reason != "abort":
            self.exporter.submit(
                build_span(
                    SpanInput(
                        request_id=c.request_id,
                        parent=job.parent,
                        start_ns=job.arrival_ns,
                        finished=record,
                        temperature=job.temperature,
                        top_p=job.top_p,
                        max_tokens=c.max_tokens,
                    )
                )
            )


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
