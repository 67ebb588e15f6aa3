"""MockOTLPCollector: an OTLP/HTTP and OTLP/gRPC receiver in a child process, for tests.

The collector accepts what real OpenTelemetry exporters send (traces, metrics and logs;
protobuf and OTLP/JSON; the Collector's compressions), answers as the OpenTelemetry Collector
does (or as the specification says, ``compat="spec"``), keeps what it received compactly, and
answers queries, waits, a live feed and fault scripts through a control API on its HTTP
port that the Python methods call (:class:`CollectorClient` does the same for a collector
another process runs). What arrived can be had as OTLP/JSON, written out as a dump (OTLP JSON
lines) that :func:`replay` sends to any OTLP endpoint, and rendered as text
(:func:`render`, :func:`render_trace`).
"""

from __future__ import annotations

from mocksup.otlp.client import CollectorClient, TelemetryTimeoutError
from mocksup.otlp.collector import CORSConfig, MockOTLPCollector
from mocksup.otlp.dump import ReplayError, replay
from mocksup.otlp.faults import Fault
from mocksup.otlp.items import (
    LogRecord,
    Resource,
    Scope,
    Span,
    SpanEvent,
    SpanLink,
)
from mocksup.otlp.metrics import DataPoint, Metric
from mocksup.otlp.records import FeedPage, RequestRecord, Trace
from mocksup.otlp.render import render, render_trace

__all__ = (
    "CORSConfig",
    "CollectorClient",
    "DataPoint",
    "Fault",
    "FeedPage",
    "LogRecord",
    "Metric",
    "MockOTLPCollector",
    "ReplayError",
    "RequestRecord",
    "Resource",
    "Scope",
    "Span",
    "SpanEvent",
    "SpanLink",
    "TelemetryTimeoutError",
    "Trace",
    "render",
    "render_trace",
    "replay",
)
