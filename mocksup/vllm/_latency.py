"""When each token of a request is due: TTFT with its prefill, ITL, their spread, the load.

The first token comes ``ttft`` plus ``prefill_per_token`` for every prompt token the prefix
cache did not hold (a prompt's prefill, once per prompt however many choices it has) after
the request is scheduled; each further token ``itl`` after the one before. ``ttft_stddev``
and ``itl_stddev`` draw each delay from a normal distribution around its mean (kept within
30 % to 170 % of it, as llm-d's simulator bounds its draws) and ``jitter`` scales it by
1 ± U(0, jitter), both from the request's seeded generator; ``load_factor`` slows the whole
request by 1 + (load_factor - 1) x (running - 1) / (max_num_seqs - 1) for the sequences
running when it was scheduled. Deadlines are absolute, so a late wake-up never delays the
tokens after it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mocksup.vllm._engine import Job

__all__ = ["load_scale", "prefill_delay", "token_deadlines"]


def load_scale(job: Job, running: int, max_num_seqs: int) -> float:
    """How much slower the request runs for the ``running`` sequences beside it."""
    if job.load_factor <= 1 or running <= 1 or max_num_seqs <= 1:
        return 1.0
    share = min(1.0, (running - 1) / (max_num_seqs - 1))
    return 1.0 + (job.load_factor - 1.0) * share


def _drawn(mean: float, stddev: float, spread: float, rng: random.Random) -> float:
    value = mean
    if stddev and mean:
        value = min(max(rng.gauss(mean, stddev), 0.3 * mean), 1.7 * mean)
    if spread and value:
        value *= 1 + rng.uniform(-spread, spread)
    return value


def prefill_delay(job: Job, computed_tokens: int) -> float:
    """The first token's delay after scheduling: TTFT and the prefill of ``computed_tokens``."""
    first = _drawn(job.ttft, job.ttft_stddev, job.jitter, job.rng)
    return (first + job.prefill_per_token * computed_tokens) * job.scale


def token_deadlines(job: Job, steps: int, computed_tokens: int) -> list[float]:
    """The times of ``steps`` tokens, the first after the prefill of ``computed_tokens``."""
    if not job.growing:
        return [job.scheduled] * steps  # zero latency: every token is due at once
    rng, mean, stddev, spread, scale = job.rng, job.itl, job.itl_stddev, job.jitter, job.scale
    at = job.scheduled + prefill_delay(job, computed_tokens)
    out = [at]
    if not (stddev or spread) and scale == 1.0:
        out.extend(at + mean * k for k in range(1, steps))
        return out
    for _ in range(steps - 1):
        at += _drawn(mean, stddev, spread, rng) * scale
        out.append(at)
    return out
