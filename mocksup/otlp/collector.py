"""MockOTLPCollector: the settings, the child's ``serve()``, and the parent's query client.

The child serves OTLP/HTTP and the control API on ``port`` and OTLP/gRPC on ``grpc_port``.
Every query method below is a thin client of the control API (see ``_api``), so what a
Python test can ask, a harness in any other language can ask over HTTP too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from mocksup._context import ServeContext
from mocksup._control import ControlClient
from mocksup.base import MockServerBase
from mocksup.errors import WaitTimeoutError
from mocksup.otlp._query import items_from_protobuf
from mocksup.otlp.faults import Fault, Signal, Transport
from mocksup.otlp.items import LogRecord, Span
from mocksup.otlp.metrics import Metric
from mocksup.otlp.records import RequestRecord, Trace, exporter_env
from mocksup.serving import GRPC_MAX_MESSAGE, url_host

__all__ = ["MockOTLPCollector", "TelemetryTimeoutError"]

_MIB = 1024 * 1024


class TelemetryTimeoutError(WaitTimeoutError):
    """A collector's ``wait_for_*`` call timed out; the message lists what did arrive.

    ``signal`` says which signal was awaited (``"traces"``, ``"metrics"`` or ``"logs"``);
    the other fields are those of :class:`~mocksup.WaitTimeoutError`.
    """

    def __init__(self, message: str, *, signal: str = "", **fields: Any) -> None:
        super().__init__(message, **fields)
        self.signal = signal

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "signal": self.signal}


class MockOTLPCollector(MockServerBase):
    """An OTLP/HTTP and OTLP/gRPC receiver for traces, metrics and logs that tests query.

    ``grpc_port=None`` switches gRPC off; ``0`` (for either port) picks a free one.
    Every exported item is kept until :meth:`clear` (or the ``max_items`` cap, past which
    items are counted as dropped in :meth:`stats`, never lost silently).
    """

    default_name: ClassVar[str] = "otlp"

    port: int = Field(4318, ge=0, le=65535, description="OTLP/HTTP and control API port.")
    grpc_port: int | None = Field(
        4317, ge=0, le=65535, description="OTLP/gRPC port; None switches gRPC off."
    )
    max_body_size: int = Field(
        64 * _MIB, gt=0, description="HTTP body limit in bytes, after decompression (413)."
    )
    grpc_max_message: int = Field(
        GRPC_MAX_MESSAGE, gt=0, description="gRPC receive limit (RESOURCE_EXHAUSTED above)."
    )
    max_items: int | None = Field(
        1_000_000, ge=0, description="Items kept, all signals together; None for no cap."
    )
    max_requests: int = Field(10_000, ge=0, description="Request records kept (newest).")
    grpc_workers: int = Field(16, gt=0, description="gRPC handler threads.")

    # -- the child side ------------------------------------------------------------------

    def serve(self, ctx: ServeContext) -> None:
        """Serve OTLP/HTTP, the control API and OTLP/gRPC until the stop request."""
        from mocksup.otlp._api import ControlAPI
        from mocksup.otlp._http import OTLPHTTPApp
        from mocksup.otlp._ingest import Ingest
        from mocksup.otlp._store import Store
        from mocksup.otlp.faults import FaultBook
        from mocksup.serving import bind_tcp, grpc_server, serve_wsgi

        store = Store(self.max_items, self.max_requests)
        faults = FaultBook()
        stopping = threading.Event()
        ingest = Ingest(store, faults, stopping)
        ports: dict[str, Any] = {"name": self.name, "host": self.host}
        app = OTLPHTTPApp(ingest, ControlAPI(store, faults, ports), self.max_body_size)
        sock = bind_tcp(self.host, self.port)
        grpc = None
        try:
            if self.grpc_port is not None:
                from mocksup.otlp._grpc import grpc_handlers

                grpc, ports["grpc_port"] = grpc_server(
                    self.host,
                    self.grpc_port,
                    max_workers=self.grpc_workers,
                    max_message=self.grpc_max_message,
                    handlers=grpc_handlers(ingest),
                )
        except BaseException:
            sock.close()
            raise
        ports["port"] = sock.getsockname()[1]
        with serve_wsgi(app, sock):
            try:
                if grpc is not None:
                    grpc.start()
                # Both ports serve now: only then may the parent send.
                ctx.ready(**{k: ports[k] for k in ("port", "grpc_port") if k in ports})
                ctx.wait()
            finally:
                # Wake long polls and end injected delays, so in-flight requests finish
                # within the stop budget instead of running out their timeouts.
                stopping.set()
                store.close()
                if grpc is not None:
                    grpc.stop(0.5).wait()

    # -- the parent side: endpoints --------------------------------------------------------

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base URL (:attr:`url`); signals post to ``/v1/...``."""
        return self.url

    @property
    def grpc_endpoint(self) -> str | None:
        """The OTLP/gRPC endpoint (``http://127.0.0.1:4317``), ``None`` with gRPC off."""
        if self.grpc_port is None:
            return None
        return f"http://{url_host(self.host)}:{self.grpc_port}"

    def exporter_env(self, protocol: str = "http/protobuf") -> dict[str, str]:
        """The environment that points an OpenTelemetry SDK at this collector.

        :param protocol: ``"http/protobuf"``, ``"http/json"`` or ``"grpc"``.
        :raises ValueError: an unknown protocol, or ``"grpc"`` with gRPC off.
        """
        if protocol == "grpc":
            if self.grpc_endpoint is None:
                raise ValueError(f"collector {self.name!r} has gRPC switched off")
            return exporter_env(self.grpc_endpoint, protocol)
        return exporter_env(self.http_endpoint, protocol)

    def endpoints(self) -> dict[str, str]:
        urls = {"otlp_http": self.http_endpoint}
        if self.grpc_endpoint is not None:
            urls["otlp_grpc"] = self.grpc_endpoint
        return urls

    def client_env(self) -> dict[str, str]:
        return self.exporter_env()

    def summary(self) -> str:
        """One line on what arrived, for ``mocksup up``'s live display."""
        stats = self.stats()
        items = stats["items"]
        return (
            f"{items['traces']} spans, {items['metrics']} metric points, {items['logs']} logs "
            f"in {stats['requests']} requests ({stats['rejected_requests']} rejected)"
        )

    @property
    def control(self) -> ControlClient:
        """The client of this collector's control API."""
        return ControlClient(self.http_endpoint, self.name)

    # -- the parent side: queries ----------------------------------------------------------

    def spans(
        self,
        name: str | None = None,
        *,
        attributes: Mapping[str, Any] | None = None,
        resource: Mapping[str, Any] | None = None,
        service_name: str | None = None,
        scope: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        trace_id: str | None = None,
    ) -> list[Span]:
        """The received spans that match every filter given, in arrival order.

        :param name: the span name.
        :param attributes: attributes the span must have with these values (``None`` as a
            value: just present).
        :param resource: resource attributes, likewise; ``service_name`` is a shorthand.
        :param scope: the instrumentation scope name.
        :param kind: ``"SERVER"``, ``"CLIENT"``, ``"INTERNAL"``, ``"PRODUCER"``,
            ``"CONSUMER"`` (or the enum number).
        :param status: ``"UNSET"``, ``"OK"`` or ``"ERROR"``.
        :param trace_id: hex, any case.
        :raises ControlAPIError: the collector is unreachable or refused a filter.
        """
        items: list[Span] = self._query("traces", "/spans", _filters(locals()))
        return items

    def metrics(
        self,
        name: str | None = None,
        *,
        attributes: Mapping[str, Any] | None = None,
        resource: Mapping[str, Any] | None = None,
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
        items: list[Metric] = self._query("metrics", "/metrics", _filters(locals()))
        return items

    def logs(
        self,
        event_name: str | None = None,
        *,
        body: str | None = None,
        severity_text: str | None = None,
        min_severity: int | None = None,
        attributes: Mapping[str, Any] | None = None,
        resource: Mapping[str, Any] | None = None,
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
        items: list[LogRecord] = self._query("logs", "/logs", _filters(locals()))
        return items

    def wait_for_spans(
        self, name: str | None = None, *, count: int = 1, timeout: float = 10.0, **filters: Any
    ) -> list[Span]:
        """Wait until ``count`` spans match (those that arrived before count too).

        Takes the filters of :meth:`spans`; consumes nothing. Returns every match so far.

        :raises TelemetryTimeoutError: fewer matched within ``timeout`` seconds; the
            message lists what did arrive.
        """
        items: list[Span] = self._wait(
            "traces", "/spans/wait", count, timeout, {"name": name, **filters}
        )
        return items

    def wait_for_metrics(
        self, name: str | None = None, *, count: int = 1, timeout: float = 10.0, **filters: Any
    ) -> list[Metric]:
        """Like :meth:`wait_for_spans`, with the filters of :meth:`metrics`."""
        items: list[Metric] = self._wait(
            "metrics", "/metrics/wait", count, timeout, {"name": name, **filters}
        )
        return items

    def wait_for_logs(
        self,
        event_name: str | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
        **filters: Any,
    ) -> list[LogRecord]:
        """Like :meth:`wait_for_spans`, with the filters of :meth:`logs`."""
        items: list[LogRecord] = self._wait(
            "logs", "/logs/wait", count, timeout, {"event_name": event_name, **filters}
        )
        return items

    def _query(self, signal: str, path: str, params: dict[str, Any]) -> Any:
        data, _ = self._fetch_protobuf(path, params)
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
        self, signal: str, path: str, count: int, timeout: float, filters: dict[str, Any]
    ) -> Any:
        params = _filters(filters)
        params.update(count=count, timeout=timeout)
        data, doc = self._fetch_protobuf(path, params, wait=timeout)
        if data is not None:
            return items_from_protobuf(signal, data)
        wanted = {k: v for k, v in filters.items() if v is not None}
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

    def trace(self, trace_id: str) -> Trace:
        """The spans of one trace, with roots, orphans and children (see :class:`Trace`)."""
        return Trace.from_spans(trace_id, self.spans(trace_id=trace_id))

    def clear(self) -> None:
        """Forget every item, request record, counter and pending fault.

        Each clear starts a new generation (``stats()["generation"]``).
        """
        self.control.call("POST", "/clear")

    def requests(
        self, signal: str | None = None, *, transport: str | None = None, limit: int | None = None
    ) -> list[RequestRecord]:
        """The records of the requests answered, oldest first (the newest ``max_requests``).

        :param signal: ``"traces"``, ``"metrics"`` or ``"logs"``.
        :param transport: ``"http"`` or ``"grpc"``.
        :param limit: only the last ``limit`` records.
        """
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

    # -- the parent side: faults -----------------------------------------------------------

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
        self.add_faults(
            Fault(
                signal=signal,
                transport=transport,
                count=count,
                status=status if grpc_code is None or status != 503 else None,
                grpc_code=grpc_code,
                retry_after=retry_after,
                message=message,
            )
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
        self.add_faults(
            Fault(
                signal=signal,
                transport=transport,
                count=count,
                rejected=rejected,
                message=message or f"{rejected} item(s) rejected by mocksup",
            )
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
        self.add_faults(Fault(signal=signal, transport=transport, count=count, delay=seconds))

    def drop_next(
        self, count: int = 1, *, signal: Signal | None = None, transport: Transport | None = None
    ) -> None:
        """Close the connection of the next ``count`` exports without answering (HTTP)."""
        self.add_faults(Fault(signal=signal, transport=transport, count=count, drop=True))

    def faults(self) -> list[dict[str, Any]]:
        """The pending faults, each with its ``remaining`` uses."""
        pending: list[dict[str, Any]] = self.control.call("GET", "/faults")["faults"]
        return pending

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        self.control.call("DELETE", "/faults")


def _filters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the query methods' keyword arguments into control API parameters."""
    params: dict[str, Any] = {}
    for key, value in values.items():
        if key == "self" or value is None:
            continue
        if key in ("attributes", "resource"):
            params["attr" if key == "attributes" else "resource"] = [
                k if v is None else f"{k}={json.dumps(v)}" for k, v in value.items()
            ]
        elif key == "event_name":
            params["name"] = value
        else:
            params[key] = value
    return params
