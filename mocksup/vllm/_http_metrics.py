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

from mocksup.vllm._exposition import family, fmt, histogram_lines

__all__ = ["EXCLUDED", "HTTPMetrics"]

#: The handlers vLLM excludes from instrumentation.
EXCLUDED = frozenset({"/metrics", "/health", "/load", "/ping", "/version", "/server_info"})

_HIGHR = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0,
          4.5, 5.0, 7.5, 10.0, 30.0, 60.0)  # fmt: skip
_LOWR = (0.1, 0.5, 1.0)


class HTTPMetrics:
    """Counts requests like the instrumentator; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything counted."""
        with self._lock:
            self._total: dict[tuple[str, str, str], int] = {}
            self._in: dict[str, list[float]] = {}
            self._out: dict[str, list[float]] = {}
            self._lowr: dict[tuple[str, str], list[float]] = {}
            self._highr = [0.0] * (len(_HIGHR) + 2)  # buckets..., +Inf, sum

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
            self._total[key] = self._total.get(key, 0) + 1
            for table, value in ((self._in, size_in), (self._out, size_out)):
                pair = table.setdefault(handler, [0.0, 0.0])
                pair[0] += 1
                pair[1] += value
            lowr = self._lowr.setdefault((method, handler), [0.0] * (len(_LOWR) + 2))
            lowr[bisect.bisect_left(_LOWR, seconds)] += 1
            lowr[-1] += seconds
            self._highr[bisect.bisect_left(_HIGHR, seconds)] += 1
            self._highr[-1] += seconds

    def render(self) -> str:
        """The families in Prometheus text format."""
        out: list[str] = []
        with self._lock:
            help_text = "Total number of requests by method, status and handler."
            family(out, "http_requests_total", help_text, "counter")
            for (method, group, handler), count in self._total.items():
                out.append(
                    f'http_requests_total{{method="{method}",status="{group}",'
                    f'handler="{handler}"}} {fmt(count)}\n'
                )
            self._render_sizes(out)
            name = "http_request_duration_highr_seconds"
            family(out, name, "Latency with many buckets but no API specific labels. Made for "
                   "more accurate percentile calculations. ", "histogram")  # fmt: skip
            histogram_lines(
                out, name, "", bounds=_HIGHR, counts=self._highr[:-1], total=self._highr[-1]
            )
            name = "http_request_duration_seconds"
            family(out, name, "Latency with only few buckets by handler. Made to be only used "
                   "if aggregation by handler is important. ", "histogram")  # fmt: skip
            for (method, handler), row in self._lowr.items():
                labels = f'handler="{handler}",method="{method}"'
                histogram_lines(out, name, labels, bounds=_LOWR, counts=row[:-1], total=row[-1])
        return "".join(out)

    def _render_sizes(self, out: list[str]) -> None:
        for name, table, what in (
            ("http_request_size_bytes", self._in, "incoming requests"),
            ("http_response_size_bytes", self._out, "outgoing responses"),
        ):
            help_text = (
                f"Content length of {what} by handler. Only value of header is respected. "
                "Otherwise ignored. No percentile calculated. "
            )
            family(out, name, help_text, "summary")
            for handler, (observed, total) in table.items():
                out.append(f'{name}_count{{handler="{handler}"}} {fmt(observed)}\n')
                out.append(f'{name}_sum{{handler="{handler}"}} {fmt(total)}\n')
