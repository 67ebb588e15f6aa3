"""The ORCA load report vLLM adds to a non-streamed generation answer on request.

With the request header ``endpoint-load-metrics-format: TEXT`` (or ``JSON``), vLLM answers
with ``endpoint-load-metrics`` holding its ``num_requests_waiting`` and
``kv_cache_usage_perc`` gauges as they are when the answer is ready, in the format asked.
"""

from __future__ import annotations

import json
import logging

from mocksup.vllm._engine_metrics import EngineMetrics

__all__ = ["orca_header"]

_log = logging.getLogger(__name__)


def orca_header(metrics_format: str, metrics: EngineMetrics) -> list[tuple[str, str]]:
    """``[("endpoint-load-metrics", ...)]``, or nothing without a known format."""
    if not metrics_format:
        return []
    kind = metrics_format.lower()
    if kind not in ("text", "json"):
        _log.warning("`%s` format is not supported in the ORCA response header", metrics_format)
        return []
    named = [
        ("num_requests_waiting", float(metrics.waiting)),
        ("kv_cache_usage_perc", float(metrics.kv_cache_usage)),
    ]
    if kind == "text":
        value = "TEXT " + ", ".join(f"named_metrics.{name}={v}" for name, v in named)
    else:
        value = "JSON " + json.dumps({"named_metrics": dict(named)})
    return [("endpoint-load-metrics", value)]
