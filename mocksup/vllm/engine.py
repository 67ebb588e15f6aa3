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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mocksup.vllm.generate import Choice, Plan
from mocksup.vllm.metrics import BLOCK_SIZE, Finished, Metrics
from mocksup.vllm.plumbing import Cut
from mocksup.vllm.protocol import APIError
from mocksup.vllm.settings import FaultKind, Faults
from mocksup.vllm.state import Slots
from mocksup.vllm.tracing import SpanExporter, SpanInput, TraceContext, build_span
from mocksup.vllm.wire import DONE, ChunkWriter

__all__ = ["Engine", "Job"]

#: Bytes gathered before a write when no delay separates events.
_COALESCE = 65536


@dataclass
class Job:
    """One generation request, validated and planned, about to run."""

    plan: Plan
    writer: ChunkWriter | None
    body: bytes
    arrival: float
    arrival_ns: int
    ttft: float
    itl: float
    jitter: float
    rng: random.Random
    fault: FaultKind | None
    faults: Faults
    parent: TraceContext | None
    sampling: dict[str, Any]
    include_usage: bool = False
    times: list[float] = field(default_factory=list)
    scheduled: float = 0.0


class Engine:
    """Schedules jobs on the slots and accounts them in metrics and spans."""

    def __init__(self, slots: Slots, metrics: Metrics, exporter: SpanExporter | None) -> None:
        self.slots = slots
        self.metrics = metrics
        self.exporter = exporter

    def _admit(self, job: Job) -> int:
        count = len(job.plan.choices)
        blocks = sum(-(-(c.prompt_tokens + len(c.tokens)) // BLOCK_SIZE) for c in job.plan.choices)
        self.metrics.queued()
        try:
            self.slots.acquire(count)
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
        assert job.writer is not None
        writer = job.writer
        choices = job.plan.choices
        blocks = self._admit(job)
        steps = max((len(c.tokens) for c in choices), default=0)
        deadlines = self._deadlines(job, max(steps, 1))
        times: list[float] = []
        done = [False] * len(choices)
        pending: list[bytes] = []
        size = 0
        try:
            _sleep_until(deadlines[0])
            pending.extend(writer.role_chunks())
            for k in range(max(steps, 1)):
                if k:
                    at = deadlines[k]
                    if at > time.monotonic():
                        if pending:
                            yield b"".join(pending)
                            pending, size = [], 0
                        _sleep_until(at)
                if job.fault in ("stream_error", "stream_cut") and k >= job.faults.after_tokens:
                    break
                times.append(time.monotonic())
                for position, c in enumerate(choices):
                    if done[position]:
                        continue
                    if not c.tokens:
                        event = writer.empty_finish(position)
                    else:
                        event = writer.token(position, k)
                    if event:
                        pending.append(event)
                        size += len(event)
                    if k >= len(c.tokens) - 1:
                        done[position] = True
                        self._finish(job, c, times, None)
                if size >= _COALESCE:
                    yield b"".join(pending)
                    pending, size = [], 0
            if job.fault == "stream_error":
                error = APIError(500, "Internal server error while generating (injected fault).")
                self._finish_rest(job, done, times, "error")
                pending += [writer.error_chunk(error.body()), DONE]
                yield b"".join(pending)
                return
            if job.fault == "stream_cut":
                if pending:
                    yield b"".join(pending)
                self._finish_rest(job, done, times, "abort")
                raise Cut("stream cut (injected fault)")
            if job.include_usage:
                pending.append(writer.usage_chunk())
            pending.append(DONE)
            yield b"".join(pending)
        finally:
            # A client that went away lands here through GeneratorExit: abort what is left.
            self._finish_rest(job, done, times, "abort")
            self._release(job, blocks)

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
            n=int(job.sampling.get("n") or 1),
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
                        temperature=job.sampling.get("temperature"),
                        top_p=job.sampling.get("top_p"),
                        max_tokens=c.max_tokens,
                    )
                )
            )


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
