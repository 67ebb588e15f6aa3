"""The Prometheus text exposition every metric set of the mock writes, as vLLM's client does.

vLLM serves its default ``prometheus_client`` registry, so the text follows that library's
``generate_latest``: labels sorted by name, values written as Go writes floats
(``2.818048e+07``), a counter ``x`` exposed as ``x_total``, and, after each counter,
histogram and summary, a ``x_created`` gauge family with the Unix time each series started.
Written by hand rather than with ``prometheus_client``, to keep the runtime dependencies
small; the tests parse the output with ``prometheus_client``'s parser.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping

__all__ = ["Histogram", "Labels", "created_family", "escape", "family", "fmt", "sample"]

#: A series' labels by name (written sorted by name).
Labels = Mapping[str, str]


def fmt(value: float) -> str:
    """A sample value as ``prometheus_client`` writes it (Go's float formatting)."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    # Go switches to an exponent sooner than Python: 28180480.0 is 2.818048e+07.
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def escape(value: str) -> str:
    """A label value with backslash, newline and quote escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_text(labels: Labels) -> str:
    """``{a="1",b="2"}`` with names sorted, or ``""`` without labels."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items())) + "}"


def sample(out: list[str], name: str, labels: Labels, value: float) -> None:
    """Append one sample line."""
    out.append(f"{name}{label_text(labels)} {fmt(value)}\n")


def family(out: list[str], name: str, help_text: str, kind: str) -> None:
    """Append a family's ``# HELP`` and ``# TYPE`` lines."""
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")


def created_family(
    out: list[str], name: str, help_text: str, series: list[tuple[Labels, float]]
) -> None:
    """Append the ``<name>_created`` gauge family of a counter, histogram or summary
    (``name`` without ``_total``), one sample per series."""
    if not series:
        return
    family(out, name + "_created", help_text, "gauge")
    for labels, created in series:
        sample(out, name + "_created", labels, created)


class Histogram:
    """Bucket counts (the last one ``+Inf``), the sum of observations, the start time."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...], created: float) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = created

    def observe(self, value: float, times: int = 1) -> None:
        """Count ``value`` (``times`` times)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.sum += value * times

    def lines(self, out: list[str], name: str, labels: Labels) -> None:
        """Append the cumulative ``_bucket`` series, ``_count`` and ``_sum``."""
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            sample(out, name + "_bucket", {**labels, "le": fmt(bound)}, running)
        sample(out, name + "_count", labels, running)
        sample(out, name + "_sum", labels, self.sum)
