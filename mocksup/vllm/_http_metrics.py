"""The HTTP metrics vLLM's API server exposes through prometheus-fastapi-instrumentator.

vLLM instruments its FastAPI app with the instrumentator's defaults, leaving out ``/metrics``,
``/health``, ``/load``, ``/ping``, ``/version`` and ``/server_info``: ``http_requests_total``
(``method``, ``status`` grouped as ``2xx``, ``handler``: the route, ``none`` for an unknown
path), the request and response size summaries (the ``Content-Length`` values; 0 without one,
as for a stream), and the two latency histograms. Names, HELP texts (trailing space included),
labels and buckets are the instrumentator's.
"""

from __future__ import annotations

import bisect
import threading
import time

from mocksup.vllm._exposition import Labels, created_family, family, fmt, sample

__all__ = ["EXCLUDED", "HTTPMetrics"]

#: The handlers vLLM excludes from instrumentation.
EXCLUDED = frozenset({"/metrics", "/health", "/load", "/ping", "/version", "/server_info"})

_HIGHR = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0,
          4.5, 5.0, 7.5, 10.0, 30.0, 60.0)  # fmt: skip
_LOWR = (0.1, 0.5, 1.0)
_REQUESTS_HELP = "Total number of requests by method, status and handler."
_HIGHR_HELP = (
    "Latency with many buckets but no API specific labels. Made for more accurate "
    "percentile calculations. "
)
_LOWR_HELP = (
    "Latency with only few buckets by handler. Made to be only used if aggregation by "
    "handler is important. "
)


class HTTPMetrics:
    """Counts requests like the instrumentator; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything counted (series start again now)."""
        with self._lock:
            self._created: dict[tuple[str, ...], float] = {}
            self._total: dict[tuple[str, str, str], int] = {}
            self._in: dict[str, list[float]] = {}
            self._out: dict[str, list[float]] = {}
            self._lowr: dict[tuple[str, str], list[float]] = {}
            self._highr = [0.0] * (len(_HIGHR) + 2)  # buckets..., +Inf, sum
            self._highr_created = time.time()

    def observe(
        self, method: str, handler: str, status: int | None, seconds: float, *, size_in: int,
        size_out: int,
    ) -> None:  # fmt: skip
        """Account one finished request (``status`` ``None``: the connection was reset)."""
        if handler in EXCLUDED or status is None:
            return
        group = f"{status // 100}xx"
        with self._lock:
            key = (method, group, handler)
            if key not in self._total:
                self._total[key] = 0
                self._created.setdefault(("requests", *key), time.time())
            self._total[key] += 1
            for table, value, kind in ((self._in, size_in, "in"), (self._out, size_out, "out")):
                pair = table.get(handler)
                if pair is None:
                    pair = table[handler] = [0.0, 0.0]
                    self._created[(kind, handler)] = time.time()
                pair[0] += 1
                pair[1] += value
            lowr = self._lowr.get((method, handler))
            if lowr is None:
                lowr = self._lowr[(method, handler)] = [0.0] * (len(_LOWR) + 2)
                self._created[("lowr", method, handler)] = time.time()
            lowr[bisect.bisect_left(_LOWR, seconds)] += 1
            lowr[-1] += seconds
            self._highr[bisect.bisect_left(_HIGHR, seconds)] += 1
            self._highr[-1] += seconds

    def render(self) -> str:
        """The families in Prometheus text format."""
        out: list[str] = []
        with self._lock:
            family(out, "http_requests_total", _REQUESTS_HELP, "counter")
            series: list[tuple[Labels, float]] = []
            for (method, group, handler), count in self._total.items():
                labels = {"handler": handler, "method": method, "status": group}
                sample(out, "http_requests_total", labels, count)
                series.append((labels, self._created[("requests", method, group, handler)]))
            created_family(out, "http_requests", _REQUESTS_HELP, series)
            self._render_sizes(out)
            name = "http_request_duration_highr_seconds"
            family(out, name, _HIGHR_HELP, "histogram")
            _histogram(out, name, {}, _HIGHR, self._highr)
            created_family(out, name, _HIGHR_HELP, [({}, self._highr_created)])
            name = "http_request_duration_seconds"
            family(out, name, _LOWR_HELP, "histogram")
            series = []
            for (method, handler), row in self._lowr.items():
                labels = {"handler": handler, "method": method}
                _histogram(out, name, labels, _LOWR, row)
                series.append((labels, self._created[("lowr", method, handler)]))
            created_family(out, name, _LOWR_HELP, series)
        return "".join(out)

    def _render_sizes(self, out: list[str]) -> None:
        for name, table, what, kind in (
            ("http_request_size_bytes", self._in, "incoming requests", "in"),
            ("http_response_size_bytes", self._out, "outgoing responses", "out"),
        ):
            help_text = (
                f"Content length of {what} by handler. Only value of header is respected. "
                "Otherwise ignored. No percentile calculated. "
            )
            family(out, name, help_text, "summary")
            series: list[tuple[Labels, float]] = []
            for handler, (observed, total) in table.items():
                sample(out, name + "_count", {"handler": handler}, observed)
                sample(out, name + "_sum", {"handler": handler}, total)
                series.append(({"handler": handler}, self._created[(kind, handler)]))
            created_family(out, name, help_text, series)


def _histogram(
    out: list[str], name: str, labels: Labels, bounds: tuple[float, ...], row: list[float]
) -> None:
    # ``row``: per-bucket counts (+Inf last), then the sum.
    running = 0.0
    for bound, count in zip((*bounds, float("inf")), row[:-1], strict=True):
        running += count
        sample(out, name + "_bucket", {**labels, "le": fmt(bound)}, running)
    sample(out, name + "_count", labels, running)
    sample(out, name + "_sum", labels, row[-1])
