"""Runs one generation request through simulated engine time: queue, TTFT, ITL, faults.

Token times are absolute deadlines from the moment the request is scheduled
(``first = scheduled + ttft``, ``t[k] = t[k-1] + itl``), so oversleeping one token never
delays the next and TTFT/ITL stay accurate. The waits are the simulated latency itself, not
synchronisation; they watch the client's connection (``mocksup.wait_disconnect``) so a
request whose client went away is aborted at once, as vLLM's ``with_cancellation`` aborts
it, and they notice an engine paused with ``mode=abort``. With no delay due, consecutive
events are written together (the events on the wire stay the same), which keeps
zero-latency streams cheap.

Every engine request (a prompt and choice pair) ends in exactly one record: metrics always
(unless ``disable_log_stats``), and a span when tracing is on and it was not aborted (vLLM
emits none for an aborted request).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mocksup.vllm._engine_metrics import EngineMetrics, Finished
from mocksup.vllm._errors import APIError
from mocksup.vllm._faults import ClientGone, Cut
from mocksup.vllm._kv_cache import KVCache
from mocksup.vllm._latency import load_scale, prefill_delay, token_deadlines
from mocksup.vllm._limits import QUEUE_TIMEOUT
from mocksup.vllm._lora import Adapters
from mocksup.vllm._plan import Choice, Plan
from mocksup.vllm._prefix_cache import PrefixCache
from mocksup.vllm._slots import Slots
from mocksup.vllm._stream import ChunkWriter
from mocksup.vllm._tracing import SpanExporter, SpanInput, TraceContext, build_span
from mocksup.vllm.settings import FaultKind, Faults

__all__ = ["Engine", "Job"]

#: Bytes gathered before a write when no delay separates events.
_COALESCE = 65536
#: Faults that end a stream after ``after_tokens`` tokens.
_MID_STREAM = frozenset({"stream_error", "stream_cut"})
#: Longest single wait between two looks at the pause state, in seconds.
_LOOK = 0.25

#: Waits up to the given seconds; ``True`` at once when the client closed its connection.
Waiter = Callable[[float], bool]


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
    temperature: float | None
    top_p: float | None
    n: int = 1
    include_usage: bool = False
    wait: Waiter | None = None
    times: list[float] = field(default_factory=list)
    scheduled: float = 0.0
    epoch: int = 0
    #: The latency model's other knobs (:mod:`._latency`).
    prefill_per_token: float = 0.0
    ttft_stddev: float = 0.0
    itl_stddev: float = 0.0
    load_factor: float = 1.0
    #: Set when scheduled: the token deadlines, the load's slowdown, the KV blocks held,
    #: whether they grow token by token (with latency), and preemptions.
    deadlines: list[float] = field(default_factory=list)
    scale: float = 1.0
    blocks: int = 0
    growing: bool = False
    preempted: bool = False
    preemptions: int = 0
    #: The LoRA adapter the request names (``None``: a base model).
    lora: str | None = None
    #: Per prompt: sequences not finished yet, and the most tokens one generated.
    groups: dict[int, list[int]] = field(default_factory=dict)


class Engine:
    """Schedules jobs on the slots and accounts them in metrics and spans."""

    def __init__(
        self,
        slots: Slots,
        metrics: EngineMetrics,
        exporter: SpanExporter | None,
        cache: PrefixCache,
    ) -> None:
        #: The data-parallel ranks, this engine first: it hands each request to the least
        #: busy (the others hold only themselves).
        self.ranks: list[Engine] = [self]
        self._turn = 0
        #: Requests handed to this rank and not finished (counted from the hand-over, so a
        #: burst spreads evenly before any of it is admitted).
        self.assigned = 0
        self.slots = slots
        self.metrics = metrics
        self.exporter = exporter
        self.cache = cache
        slots.blocks = cache.capacity
        metrics.slots = slots
        self.kv = KVCache(slots, metrics, cache.block_size)
        #: The LoRA adapters, whose requests in flight ``vllm:lora_requests_info`` shows.
        self.adapters: Adapters | None = None
        #: Raised by a pause in ``abort`` mode: running requests with an older one abort.
        self.epoch = 0
        self._lock = threading.Lock()

    def abort_running(self) -> None:
        """Abort every request running now, at its next wait (``/pause``, ``/sleep``)."""
        for rank in self.ranks:
            with rank._lock:
                rank.epoch += 1

    def add_rank(self, engine: Engine) -> None:
        """Serve with another data-parallel rank: its metrics render with this engine's,
        its admission and prefix cache pause, resize and reset with this one's."""
        self.ranks.append(engine)
        self.metrics.ranks.append(engine.metrics)
        self.slots.followers.append(engine.slots)
        self.cache.followers.append(engine.cache)
        engine.adapters = self.adapters

    def _pick(self) -> Engine:
        # As vLLM's data-parallel client: the rank with the fewest requests in flight, the
        # search starting one rank further each time (round-robin when idle).
        ranks = self.ranks
        if len(ranks) == 1:
            return self
        with self._lock:
            self._turn = (self._turn + 1) % len(ranks)
            order = ranks[self._turn :] + ranks[: self._turn]
            rank = min(order, key=lambda r: r.assigned)
            rank.assigned += 1
        return rank

    def _done(self, rank: Engine) -> None:
        with self._lock:
            rank.assigned -= 1

    def _admit(self, job: Job) -> None:
        count = len(job.plan.choices)
        self.metrics.queued()
        growing = job.growing = bool(job.ttft or job.itl or job.prefill_per_token)
        blocks = self.kv.first_blocks(job)
        try:
            self.slots.acquire(count, QUEUE_TIMEOUT, blocks)
        except TimeoutError:
            self.metrics.left_queue()
            raise APIError(
                503, f"The request waited {QUEUE_TIMEOUT:g} s for a slot (max_num_seqs)."
            ) from None
        except BaseException:
            self.metrics.left_queue()
            raise
        job.blocks = blocks
        if growing:
            self.kv.running(job)
        if self.adapters is not None and self.adapters.enabled:
            self.adapters.started(job.lora)
        job.scheduled = time.monotonic()
        job.epoch = self.epoch
        size = self.cache.block_size
        computed: dict[int, int] = {}
        for c in job.plan.choices:
            c.cached_tokens, c.block_hashes = self.cache.admit(c.prompt_ids)
            if self.cache.enabled:
                self.metrics.record_cache_query(c.prompt_tokens, c.cached_tokens)
                full = c.prompt_tokens // size * size
                c.created_cache_tokens = max(0, full - c.cached_tokens)
            computed.setdefault(c.prompt_index, c.prompt_tokens - c.cached_tokens)
            group = job.groups.setdefault(c.prompt_index, [0, 0])
            group[0] += 1
        self.metrics.admitted()
        if job.growing:
            job.scale = load_scale(job, self.metrics.running, self.slots.limit)
        steps = max((len(c.tokens) for c in job.plan.choices), default=0)
        job.deadlines = token_deadlines(job, max(steps, 1), sum(computed.values()))

    def _release(self, job: Job) -> None:
        if self.adapters is not None and self.adapters.enabled:
            self.adapters.finished(job.lora)
        if job.preempted:
            self.metrics.left_queue()  # aborted while it waited to resume
            return
        self.kv.finished(job)
        self.metrics.released()

    def _reach(self, job: Job, k: int) -> bool:
        """Wait until token ``k`` is due, through preemptions and the KV blocks it needs;
        ``False`` when the request must abort (see :meth:`_wait`)."""
        while True:
            if not self._wait(job, job.deadlines[k]):
                return False
            if not job.preempted:
                self.kv.grow(job, k + 1)
            if not job.preempted:
                return True
            # Preempted: back in the queue, then its prompt and output are computed again.
            self.kv.resume(job, k)
            due = time.monotonic() + prefill_delay(job, self.kv.recompute_tokens(job, k))
            shift = due - job.deadlines[k]
            if shift > 0:
                job.deadlines[k:] = [at + shift for at in job.deadlines[k:]]

    def _wait(self, job: Job, deadline: float) -> bool:
        """Wait until ``deadline``; ``False`` when the request must abort meanwhile (its
        client left, or the engine was paused with ``mode=abort``)."""
        while True:
            if job.epoch != self.epoch:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            step = min(remaining, _LOOK)
            if job.wait is None:
                time.sleep(step)
            elif job.wait(step):
                raise ClientGone("the client closed its connection")

    def run_blocking(self, job: Job) -> None:
        """A non-streamed request: wait out its whole generation (or until its fault).

        :raises ClientGone: the client left; the request was aborted.
        """
        if len(self.ranks) > 1:
            rank = self._pick()
            try:
                rank._run_blocking(job)
            finally:
                self._done(rank)
            return
        self._run_blocking(job)

    def _run_blocking(self, job: Job) -> None:
        self._admit(job)
        try:
            deadlines = job.deadlines
            if job.fault == "stream_error":
                upto = min(job.faults.after_tokens, len(deadlines) - 1)
                self._run_until(job, deadlines, upto)
                self._finish_all(job, deadlines, "error", upto=job.faults.after_tokens)
                raise APIError(500, "Internal server error while generating (injected fault).")
            self._run_until(job, deadlines, len(deadlines) - 1)
            job.times = deadlines
            self._finish_all(job, deadlines, None)
        finally:
            self._release(job)

    def _run_until(self, job: Job, deadlines: list[float], last: int) -> None:
        # Waits token by token while someone may abort it or its KV blocks grow, in one go
        # otherwise.
        if deadlines[last] <= time.monotonic() and job.epoch == self.epoch:
            return  # all due already (zero latency): nothing to wait for
        token_by_token = job.wait is not None or job.growing
        marks = range(last + 1) if token_by_token else range(last, last + 1)
        for k in marks:
            try:
                running = self._reach(job, k) if job.growing else self._wait(job, deadlines[k])
            except ClientGone:
                reached = k if token_by_token else 0
                self._finish_all(job, deadlines, "abort", upto=reached)
                raise
            if not running:
                # Paused with mode=abort: the output so far, with finish_reason "abort".
                self._finish_all(job, deadlines, "abort", upto=k)
                for c in job.plan.choices:
                    c.cut(min(k, len(c.tokens)))
                    c.finish_reason, c.stop_reason = "abort", None
                return

    def stream(self, job: Job) -> Iterator[bytes]:
        """A streamed request: yields SSE bytes at the simulated token times."""
        if len(self.ranks) > 1:
            rank = self._pick()
            try:
                yield from rank._stream(job)
            finally:
                self._done(rank)
            return
        yield from self._stream(job)

    def _stream(self, job: Job) -> Iterator[bytes]:
        self._admit(job)
        progress = _Progress(len(job.plan.choices))
        try:
            yield from self._tokens(job, progress)
            yield from self._ending(job, progress)
        finally:
            # A client that went away lands here (GeneratorExit, or ClientGone from a
            # wait): abort what is left.
            self._finish_rest(job, progress.done, progress.times, "abort")
            self._release(job)

    def _tokens(self, job: Job, progress: _Progress) -> Iterator[bytes]:
        # Events that are due are gathered and written together; a wait flushes them first.
        writer = job.writer
        assert writer is not None
        choices, done, times = job.plan.choices, progress.done, progress.times
        steps = max(max((len(c.tokens) for c in choices), default=0), 1)
        deadlines = job.deadlines
        if not (self._reach(job, 0) if job.growing else self._wait(job, deadlines[0])):
            self._aborted(job, progress)
            return
        progress.add(writer.role_chunks())
        cut_at = job.faults.after_tokens if job.fault in _MID_STREAM else steps
        for k in range(min(steps, cut_at)):
            if k and (job.growing or deadlines[k] > time.monotonic()):
                if progress.pending and deadlines[k] > time.monotonic():
                    yield progress.take()
                if not (self._reach(job, k) if job.growing else self._wait(job, deadlines[k])):
                    self._aborted(job, progress)
                    return
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

    def _aborted(self, job: Job, progress: _Progress) -> None:
        # Paused with mode=abort: every unfinished choice ends with finish_reason "abort"
        # (the stream then ends as usual).
        writer = job.writer
        assert writer is not None
        for position in range(len(job.plan.choices)):
            if not progress.done[position]:
                progress.add([writer.abort_finish(position)])
        self._finish_rest(job, progress.done, progress.times, "abort")
        for c in job.plan.choices:
            c.cut(c.generated)
        job.fault = None

    def _ending(self, job: Job, progress: _Progress) -> Iterator[bytes]:
        writer = job.writer
        assert writer is not None
        if job.fault == "stream_error":
            error = APIError(500, "Internal server error while generating (injected fault).")
            self._finish_rest(job, progress.done, progress.times, "error")
            progress.add([writer.error_chunk(error.body()), writer.end])
            yield progress.take()
            return
        if job.fault == "stream_cut":
            if progress.pending:
                yield progress.take()
            self._finish_rest(job, progress.done, progress.times, "abort")
            raise Cut("stream cut (injected fault)")
        if job.include_usage:
            progress.pending.append(writer.usage_chunk())
        progress.pending.append(writer.end)
        yield progress.take()

    def _finish_all(self, job: Job, times: list[float], reason: str | None, upto: int = 0) -> None:
        for c in job.plan.choices:
            if not c.recorded:
                self._finish(job, c, times[:upto] if reason else times, reason)

    def _finish_rest(self, job: Job, done: list[bool], times: list[float], reason: str) -> None:
        for position, c in enumerate(job.plan.choices):
            if not done[position]:
                done[position] = True
                self._finish(job, c, times, reason)

    def _finish(self, job: Job, c: Choice, times: list[float], reason: str | None) -> None:
        """Account one engine request. ``reason`` overrides (error/abort) the planned one."""
        end = time.monotonic()
        c.recorded = True
        generated = len(c.tokens) if reason is None else min(len(c.tokens), len(times))
        c.generated = generated
        own = times[: max(generated, 1)] if times else [end]
        first, last = own[0], own[-1]
        finish = reason or c.finish_reason
        if finish == "tool_calls":
            finish = "stop"  # the engine stopped; "tool_calls" is the API's renaming
        if first == last:  # every token at once (zero latency): no listcomp per token
            itls = [0.0] * (generated - 1) if generated > 1 else []
        else:
            itls = [b - a for a, b in itertools.pairwise(own)] if generated > 1 else []
        record = Finished(
            prompt_tokens=c.prompt_tokens,
            generation_tokens=generated,
            max_tokens_param=c.max_tokens,
            finish_reason=finish,
            queue=job.scheduled - job.arrival,
            ttft=first - job.arrival,
            prefill=first - job.scheduled,
            decode=last - first,
            inference=last - job.scheduled,
            e2e=end - job.arrival,
            itls=itls,
            cached_tokens=c.cached_tokens,
            preemptions=job.preemptions,
        )
        c.timing = record
        self.metrics.record(record)
        self.cache.finish(c.block_hashes, c.prompt_ids, c.tokens[:generated])
        group = job.groups.get(c.prompt_index)
        if group is not None:
            group[0] -= 1
            group[1] = max(group[1], generated)
            if group[0] == 0:
                self.metrics.record_request(job.n, group[1])
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
