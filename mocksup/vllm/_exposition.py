"""The Prometheus text exposition (format 0.0.4) both metric sets of the mock write.

Written by hand rather than with ``prometheus_client``, to keep the runtime dependencies
small; the tests parse the output with ``prometheus_client``'s parser.
"""

from __future__ import annotations

import bisect
import math

__all__ = ["Histogram", "escape", "family", "fmt", "histogram_lines"]


def fmt(value: float) -> str:
    """A sample value as ``prometheus_client`` writes it (``floatToGoString``)."""
    if value == math.inf:
        return "+Inf"
    return repr(float(value))


def escape(value: str) -> str:
    """A label value with backslash, newline and quote escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def family(out: list[str], name: str, help_text: str, kind: str) -> None:
    """Append a family's ``# HELP`` and ``# TYPE`` lines."""
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")


class Histogram:
    """Bucket counts (the last one ``+Inf``) and the sum of observations."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Count ``value`` (``times`` times)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.sum += value * times

    def lines(self, out: list[str], name: str, labels: str) -> None:
        """Append the cumulative ``_bucket`` series, ``_count`` and ``_sum``."""
        histogram_lines(out, name, labels, bounds=self.bounds, counts=self.counts, total=self.sum)


def histogram_lines(
    out: list[str],
    name: str,
    labels: str,
    *,
    bounds: tuple[float, ...],
    counts: list[int] | list[float],
    total: float,
) -> None:
    """Append a histogram's samples from per-bucket ``counts`` (``+Inf`` last)."""
    running = 0.0
    sep = "," if labels else ""
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        running += count
        out.append(f'{name}_bucket{{{labels}{sep}le="{fmt(bound)}"}} {fmt(running)}\n')
    braces = f"{{{labels}}}" if labels else ""
    out.append(f"{name}_count{braces} {fmt(running)}\n{name}_sum{braces} {fmt(total)}\n")
