"""The client of a collector's control API: queries, waits, faults.

:class:`CollectorQueries` holds every query method once; :class:`~mocksup.MockOTLPCollector`
(the server model, which starts the child) and :class:`CollectorClient` (for a collector
another process runs, given its URL) both get them from it. Every method is a thin client of
the control API (``_api``), so what a Python test can ask, a harness in any other language can
ask over HTTP too. Filters are keyword arguments, each named: a misspelt one is a TypeError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mocksup.errors import WaitTimeoutError
from mocksup.otlp._signals import Signal, Transport
from mocksup.otlp._streams import CollectorStreams

if TYPE_CHECKING:
    from mocksup.control import ControlClient
    from mocksup.otlp.faults import Fault
    from mocksup.otlp.items import LogRecord, Span
    from mocksup.otlp.metrics import Metric
    from mocksup.otlp.records import RequestRecord, Trace

# As in _streams: the methods import what they use, so that importing the collector's class
# to validate its settings loads no client side (HTTP, the item classes, the fault model).

__all__ = ("CollectorClient", "CollectorQueries", "TelemetryTimeoutError")

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

_Attrs = Mapping[str, Any] | None


class TelemetryTimeoutError(WaitTimeoutError):
    """A collector's ``wait_for_*`` call timed out; the message lists what did arrive.

    ``signal`` says which signal was awaited (``"traces"``, ``"metrics"`` or ``"logs"``);
    the other fields are those of :class:`~mocksup.WaitTimeoutError`.
    """

    def __init__(self, message: str, *, signal: Signal | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.signal = signal

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "signal": self.signal}


class CollectorQueries(CollectorStreams):
    """The query, wait and fault methods of a collector, for any class with ``control``
    (and, from :class:`~mocksup.otlp._streams.CollectorStreams`, ``otlp_json``, ``export``,
    ``load``, ``feed`` and ``follow``)."""

    if TYPE_CHECKING:  # provided by the class that mixes this in (MockServerBase there)
        name: str

        @property
        def control(self) -> ControlClient:
            """The client of the collector's control API."""

    # -- items ----------------------------------------------------------------------------

    def spans(
        self,
        name: str | None = None,
        *,
        attributes: _Attrs = None,
        resource: _Attrs = None,
        service_name: str | None = None,
        scope: str | None = None,
        kind: str | int | None = None,
        status: str | int | None = None,
        trace_id: str | None = None,
    ) -> list[Span]:
        """The received spans that match every filter given, in arrival order.

        :param name: the span name.
        :param attributes: attributes the span must have with these values (``None`` as a
            value: just present).
        :param resource: resource attributes, likewise; ``service_name`` is a shorthand.
        :param scope: the instrumentation scope name.
        :param kind: ``"SERVER"``, ``"CLIENT"``, ``"INTERNAL"``, ``"PRODUCER"``,
            ``"CONSUMER"`` or the enum number (also one the enum does not know).
        :param status: ``"UNSET"``, ``"OK"``, ``"ERROR"`` or the number.
        :param trace_id: hex, any case.
        :raises ControlAPIError: the collector is unreachable or refused a filter.
        """
        items: list[Span] = self._query("traces", "/spans", locals())
        return items

    def metrics(
        self,
        name: str | None = None,
        *,
        attributes: _Attrs = None,
        resource: _Attrs = None,
        service_name: str | None = None,
        scope: str | None = None,
        type: str | None = None,
    ) -> list[Metric]:
        """The received metrics that match, one per metric per export, in arrival order.

        ``attributes`` filter data points: a metric matches if one of its points does, and
        it comes back with the matching points only. ``type`` is ``"gauge"``, ``"sum"``,
        ``"histogram"``, ``"exponential_histogram"`` or ``"summary"``. Other filters as in
        :meth:`spans`.
        """
        items: list[Metric] = self._query("metrics", "/metrics", locals())
        return items

    def logs(
        self,
        event_name: str | None = None,
        *,
        body: str | None = None,
        severity_text: str | None = None,
        min_severity: int | None = None,
        attributes: _Attrs = None,
        resource: _Attrs = None,
        service_name: str | None = None,
        scope: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> list[LogRecord]:
        """The received log records that match, in arrival order.

        :param event_name: the record's ``event_name``.
        :param body: the body, compared as text (non-string bodies as their JSON).
        :param min_severity: the lowest ``severity_number`` wanted.

        Other filters as in :meth:`spans`.
        """
        items: list[LogRecord] = self._query("logs", "/logs", locals())
        return items

    # -- waits ----------------------------------------------------------------------------

    def wait_for_spans(
        self,
        name: str | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
        attributes: _Attrs = None,
        resource: _Attrs = None,
        service_name: str | None = None,
        scope: str | None = None,
        kind: str | int | None = None,
        status: str | int | None = None,
        trace_id: str | None = None,
    ) -> list[Span]:
        """Wait until ``count`` spans match (those that arrived before count too).

        Takes the filters of :meth:`spans`; consumes nothing. Returns every match so far.
        The collector holds the request until then (a long poll), so it returns as soon as
        the items arrive.

        :raises TelemetryTimeoutError: fewer matched within ``timeout`` seconds; the
            message lists what did arrive.
        """
        items: list[Span] = self._wait("traces", "/spans/wait", count, timeout, locals())
        return items

    def wait_for_metrics(
        self,
        name: str | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
        attributes: _Attrs = None,
        resource: _Attrs = None,
        service_name: str | None = None,
        scope: str | None = None,
        type: str | None = None,
    ) -> list[Metric]:
        """Like :meth:`wait_for_spans`, with the filters of :meth:`metrics`."""
        items: list[Metric] = self._wait("metrics", "/metrics/wait", count, timeout, locals())
        return items

    def wait_for_logs(
        self,
        event_name: str | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
        body: str | None = None,
        severity_text: str | None = None,
        min_severity: int | None = None,
        attributes: _Attrs = None,
        resource: _Attrs = None,
        service_name: str | None = None,
        scope: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> list[LogRecord]:
        """Like :meth:`wait_for_spans`, with the filters of :meth:`logs`."""
        items: list[LogRecord] = self._wait("logs", "/logs/wait", count, timeout, locals())
        return items

    def trace(self, trace_id: str) -> Trace:
        """The spans of one trace, with roots, orphans and children
        (see :class:`~mocksup.otlp.Trace`)."""
        from mocksup.otlp.records import Trace

        return Trace.from_spans(trace_id, self.spans(trace_id=trace_id))

    def _query(self, signal: Signal, path: str, arguments: dict[str, Any]) -> Any:
        from mocksup.otlp._query import filter_params, items_from_protobuf

        data, _ = self._fetch_protobuf(path, filter_params(arguments))
        return items_from_protobuf(signal, data or b"")

    def _fetch_protobuf(
        self, path: str, params: dict[str, Any], wait: float = 0.0
    ) -> tuple[bytes | None, Any]:
        """GET a control route in its protobuf encoding: ``(body, None)`` or ``(None, JSON)``.

        The control API's JSON form of 100k spans takes seconds to encode and decode; its
        protobuf form (a bare ``TracesData`` body) is parsed in milliseconds.
        """
        content_type, payload = self.control.fetch(
            "GET", path, params={"encoding": "protobuf", **params}, wait=wait
        )
        if content_type == "application/x-protobuf":
            return payload, None
        return None, json.loads(payload)

    def _wait(
        self, signal: Signal, path: str, count: int, timeout: float, arguments: dict[str, Any]
    ) -> Any:
        from mocksup.otlp._query import filter_params, items_from_protobuf

        params = filter_params(arguments)
        params.update(count=count, timeout=timeout)
        data, doc = self._fetch_protobuf(path, params, wait=timeout)
        if data is not None:
            return items_from_protobuf(signal, data)
        wanted = {
            k: v
            for k, v in arguments.items()
            if v is not None and k not in ("self", "count", "timeout")
        }
        what = ", ".join(f"{k}={v!r}" for k, v in wanted.items()) or "no filter"
        matched = doc["count"]
        arrived = doc["arrived"]
        listing = "\n".join("    " + line for line in arrived) or "    (nothing)"
        raise TelemetryTimeoutError(
            f"collector {self.name!r}: expected {count} {signal} item(s) matching {what} "
            f"within {timeout:g} s, {matched} matched; {doc['total']} arrived:\n{listing}",
            server=self.name,
            signal=signal,
            expected=count,
            matched=matched,
            timeout=timeout,
            arrived=arrived,
        )

    # -- records and counters -------------------------------------------------------------

    def clear(self) -> None:
        """Forget every item, request record, counter and pending fault.

        Each clear starts a new generation (``stats()["generation"]``).
        """
        self.control.call("POST", "/clear")

    def requests(
        self,
        signal: Signal | None = None,
        *,
        transport: Transport | None = None,
        limit: int | None = None,
    ) -> list[RequestRecord]:
        """The records of the requests answered, oldest first (the newest ``max_requests``).

        :param signal: ``"traces"``, ``"metrics"`` or ``"logs"``.
        :param transport: ``"http"`` or ``"grpc"``.
        :param limit: only the last ``limit`` records.
        """
        from mocksup.otlp.records import RequestRecord

        doc = self.control.call(
            "GET", "/requests", params={"signal": signal, "transport": transport, "limit": limit}
        )
        return [RequestRecord.from_json(r) for r in doc["requests"]]

    def stats(self) -> dict[str, Any]:
        """Counters: requests (per transport), items stored, rejected and dropped per signal.

        See the docs' control API section for every key.
        """
        stats: dict[str, Any] = self.control.call("GET", "/stats")
        return stats

    # -- faults ---------------------------------------------------------------------------

    def add_faults(self, *faults: Fault) -> list[dict[str, Any]]:
        """Append faults to the script; returns the pending faults."""
        body = [fault.model_dump() for fault in faults]
        pending: list[dict[str, Any]] = self.control.call("POST", "/faults", body=body)["faults"]
        return pending

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int | None = 503,
        grpc_code: str | None = None,
        retry_after: float | None = None,
        signal: Signal | None = None,
        transport: Transport | None = None,
        message: str = "",
    ) -> None:
        """Answer the next ``count`` exports with an error (503 / UNAVAILABLE by default).

        ``retry_after`` sends ``Retry-After`` over HTTP and ``RetryInfo`` over gRPC.
        """
        self._add_fault(
            signal=signal,
            transport=transport,
            count=count,
            status=status if grpc_code is None or status != 503 else None,
            grpc_code=grpc_code,
            retry_after=retry_after,
            message=message,
        )

    def partial_success_next(
        self,
        rejected: int,
        message: str = "",
        *,
        count: int = 1,
        signal: Signal | None = None,
        transport: Transport | None = None,
    ) -> None:
        """Answer the next ``count`` exports with a partial success (all items are kept)."""
        self._add_fault(
            signal=signal,
            transport=transport,
            count=count,
            rejected=rejected,
            message=message or f"{rejected} item(s) rejected by mocksup",
        )

    def delay_next(
        self,
        seconds: float,
        *,
        count: int = 1,
        signal: Signal | None = None,
        transport: Transport | None = None,
    ) -> None:
        """Hold the next ``count`` exports ``seconds`` before answering them normally."""
        self._add_fault(signal=signal, transport=transport, count=count, delay=seconds)

    def drop_next(
        self, count: int = 1, *, signal: Signal | None = None, transport: Transport | None = None
    ) -> None:
        """Close the connection of the next ``count`` exports without answering."""
        self._add_fault(signal=signal, transport=transport, count=count, drop=True)

    def _add_fault(self, **fields: Any) -> None:
        from mocksup.otlp.faults import Fault

        self.add_faults(Fault(**fields))

    def faults(self) -> list[dict[str, Any]]:
        """The pending faults, each with its ``remaining`` uses."""
        pending: list[dict[str, Any]] = self.control.call("GET", "/faults")["faults"]
        return pending

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        self.control.call("DELETE", "/faults")


class CollectorClient(CollectorQueries):
    """Queries a collector that runs elsewhere (``mocksup up``, another test process).

    :param url: the collector's OTLP/HTTP URL, such as ``http://127.0.0.1:4318``.
    :param name: the collector's name, for error messages.
    :param timeout: seconds to wait for an answer beyond any wait's own timeout.
    :raises ValueError: the URL has no host or port.
    """

    def __init__(self, url: str, *, name: str = "otlp", timeout: float = 10.0) -> None:
        from urllib.parse import urlsplit

        from mocksup.control import ControlClient

        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname or not parts.port:
            raise ValueError(
                f"a collector URL needs a host and a port, such as http://127.0.0.1:4318: {url}"
            )
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.name = name
        self._control = ControlClient(self.url, name, timeout)

    @property
    def control(self) -> ControlClient:
        """The client of the collector's control API."""
        return self._control

    def __repr__(self) -> str:
        return f"<CollectorClient {self.name!r} {self.url}>"
