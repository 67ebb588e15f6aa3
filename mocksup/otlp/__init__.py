"""MockOTLPCollector: an OTLP/HTTP and OTLP/gRPC receiver in a child process, for tests.

The collector accepts what real OpenTelemetry exporters send (traces, metrics and logs;
protobuf and OTLP/JSON; the Collector's compressions), answers as the OpenTelemetry Collector
does (or as the specification says, ``compat="spec"``), keeps what it received compactly, and
answers queries, waits and fault scripts through a control API on its HTTP port that the
Python methods call (:class:`CollectorClient` does the same for a collector another process
runs).
"""

from __future__ import annotations

from mocksup.otlp.client import CollectorClient, TelemetryTimeoutError
from mocksup.otlp.collector import CORSConfig, MockOTLPCollector
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
from mocksup.otlp.records import RequestRecord, Trace

__all__ = (
    "CORSConfig",
    "CollectorClient",
    "DataPoint",
    "Fault",
    "LogRecord",
    "Metric",
    "MockOTLPCollector",
    "RequestRecord",
    "Resource",
    "Scope",
    "Span",
    "SpanEvent",
    "SpanLink",
    "TelemetryTimeoutError",
    "Trace",
)
