"""vLLM's queue limits: ``--max-num-queued-reqs`` and ``--max-num-queued-tokens``.

vLLM's API server refuses a request with 503 before it starts answering (so a stream gets a
real 503 status too) when admitting it would pass either limit, and counts the refusal in
``vllm:admission_rejections_total{reason}``: ``max_num_queued_reqs`` caps the engine
requests unfinished (waiting or running; ``n`` choices are ``n`` of them), refusing one when
the unfinished ones plus its own would pass the cap; ``max_num_queued_tokens`` caps the
prompt tokens of the engine requests still in prefill (their whole prompt, cached or not,
until their first token), refusing any request once that backlog reached the cap. Both hold
over every data-parallel rank, as vLLM enforces them in its API server.

As vLLM checks twice, once when the request comes in (before its prompt is rendered: a full
server answers 503 before a too-long prompt's 400) and once as its engine requests are
added, :meth:`QueueLimits.check` is the first look and :meth:`QueueLimits.enter` the second,
which also holds the request's place until :meth:`Place.release`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from mocksup.vllm._errors import APIError

if TYPE_CHECKING:
    from mocksup.vllm._engine import Job
    from mocksup.vllm._engine_metrics import EngineMetrics

__all__ = ["Place", "QueueLimits", "Releasing"]

_BUSY = (
    "The engine is currently busy and cannot accept new requests. Please try again later "
    "or on a different instance."
)
_BACKLOG = (
    "The engine has reached its prefill token backlog limit. Please try again later or on "
    "a different instance."
)


class Place:
    """A request's place in the queue limits: its engine requests and their prompt tokens,
    counted as queued until the job's first token is due."""

    __slots__ = ("_limits", "count", "job", "released", "tokens")

    def __init__(self, limits: QueueLimits, job: Job) -> None:
        self._limits = limits
        self.job = job
        self.count = len(job.plan.choices)
        self.tokens = sum(c.prompt_tokens for c in job.plan.choices)
        self.released = False

    def in_prefill(self, now: float) -> bool:
        """Whether the request has not produced its first token yet (its first deadline is
        set once it is scheduled)."""
        deadlines = self.job.deadlines
        return not deadlines or deadlines[0] > now

    def hold(self, run: Callable[[], Iterable[bytes]]) -> Iterable[bytes]:
        """``run()``'s answer, the place given back once the engine is done with it: at once
        for a whole body or an error, when a streamed one ends or is closed."""
        try:
            body = run()
        except BaseException:
            self.release()
            raise
        if isinstance(body, list):
            self.release()
            return body
        return Releasing(body, self.release)

    def release(self) -> None:
        """Give the place back (the request finished or failed); only the first call counts."""
        self._limits.leave(self)


class QueueLimits:
    """The two limits of one API server; free when neither is set.

    :param max_reqs: ``--max-num-queued-reqs`` (``None``: no limit).
    :param max_tokens: ``--max-num-queued-tokens`` (``None``: no limit).
    :param metrics: where refusals are counted (``None``: ``--disable-log-stats``).
    """

    def __init__(
        self, max_reqs: int | None, max_tokens: int | None, metrics: EngineMetrics | None
    ) -> None:
        self.max_reqs = max_reqs
        self.max_tokens = max_tokens
        self.enabled = max_reqs is not None or max_tokens is not None
        self._metrics = metrics
        self._lock = threading.Lock()
        self._places: set[Place] = set()
        #: Engine requests unfinished, over every place held.
        self.requests = 0

    def check(self, count: int) -> None:
        """vLLM's first look, for a request of ``count`` choices.

        :raises APIError: 503 when it would pass a limit (the refusal is counted).
        """
        if self.enabled:
            with self._lock:
                self._refuse_past_limits(count)

    def enter(self, job: Job) -> Place | None:
        """Hold a place for ``job``'s engine requests (``None`` without limits).

        :raises APIError: 503 when they would pass a limit (the refusal is counted).
        """
        if not self.enabled:
            return None
        with self._lock:
            self._refuse_past_limits(len(job.plan.choices))
            place = Place(self, job)
            self._places.add(place)
            self.requests += place.count
        return place

    def leave(self, place: Place) -> None:
        """Give ``place`` back (once)."""
        with self._lock:
            if place.released:
                return
            place.released = True
            self._places.discard(place)
            self.requests -= place.count

    def _refuse_past_limits(self, count: int) -> None:
        # Called with the lock held; vLLM checks the request count first.
        if self.max_reqs is not None and self.requests + count > self.max_reqs:
            self._refuse("max_num_queued_reqs", _BUSY)
        if self.max_tokens is not None:
            now = time.monotonic()
            backlog = sum(p.tokens for p in self._places if p.in_prefill(now))
            if backlog >= self.max_tokens:
                self._refuse("max_num_queued_tokens", _BACKLOG)

    def _refuse(self, reason: str, message: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected(reason)
        # vLLM's GracefulHTTPError: the status's phrase as the type, no param.
        raise APIError(503, message, type="Service Unavailable")


class Releasing:
    """A streamed body that gives its place back once it ended, failed or was closed: the
    HTTP server closes every body (even one never started, which a generator's ``finally``
    would miss), while a wrapper that only iterates it (a background response, another
    generator) sees its end."""

    def __init__(self, body: Iterable[bytes], release: Callable[[], None]) -> None:
        self._body: Iterator[bytes] = iter(body)
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._body)
        except BaseException:
            self._release()  # StopIteration included: the body ended
            raise

    def close(self) -> None:
        """Close the body, then give the place back."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._release()
