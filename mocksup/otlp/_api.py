"""The collector's control API: its routes under ``/mocksup`` on the HTTP port.

Every query of the Python client is a call to one of these routes, so a harness in any
language has the same powers. The routes are a :class:`mocksup.control.ControlApp` table, so
every parameter is declared (an unknown one is a 400 that names it: a typo never turns a
filter into "match everything") and the long polls take the one ``timeout`` parameter. Waits
and the feed are long polls: the request is held on the store's condition variable until
enough matching items arrived or its deadline passed. Item answers are streamed (see
``_answers``). Routes are documented in ``docs/otlp.rst``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from mocksup.control import ControlApp, ControlError, ControlRequest, Param, Raw, Route
from mocksup.otlp import _answers
from mocksup.otlp._feed import StaleCursorError, read_page, stored_after
from mocksup.otlp._ingest import FaultBook
from mocksup.otlp._query import Query, Result, json_document, select, summarise
from mocksup.otlp._signals import SIGNALS, Signal
from mocksup.otlp._store import Batch, Store
from mocksup.otlp._ui import Journals, ui_routes
from mocksup.otlp.records import Trace, exporter_env, trace_tree

__all__ = ("ENCODINGS", "control_app")

_ROUTE_SIGNALS: dict[str, Signal] = {"spans": "traces", "metrics": "metrics", "logs": "logs"}
#: The encodings of item answers: the control API's document, OTLP/JSON, protobuf.
ENCODINGS = ("json", "otlp-json", "protobuf")
_JSON = "application/json"
_PROTOBUF = "application/x-protobuf"
_JSON_LINES = "application/x-ndjson"


def _many(choices: tuple[str, ...], doc: str) -> Param:
    one = Param.choice(*choices)
    return Param(one.parse, f"{doc}: {', '.join(choices)}; repeatable", many=True, default=[],
                 kind=one.kind)  # fmt: skip


#: Filters every signal has.
COMMON_FILTERS = {
    "name": Param.text("span name, metric name or log event_name"),
    "attr": Param.texts("key=value (the value read as JSON when it parses) or key; repeatable"),
    "resource": Param.texts("a resource attribute, as attr; repeatable"),
    "service_name": Param.text("the resource's service.name"),
    "scope": Param.text("the instrumentation scope name"),
}
FILTERS = {
    "traces": {
        **COMMON_FILTERS,
        "kind": Param.text("SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER or a number"),
        "status": Param.text("UNSET, OK, ERROR or a number"),
        "trace_id": Param.text("32 hex digits"),
    },
    "metrics": {
        **COMMON_FILTERS,
        "type": Param.choice("gauge", "sum", "histogram", "exponential_histogram", "summary"),
    },
    "logs": {
        **COMMON_FILTERS,
        "trace_id": Param.text("32 hex digits"),
        "span_id": Param.text("16 hex digits"),
        "body": Param.text("the body as text (others as their JSON)"),
        "severity_text": Param.text("the severity text"),
        "min_severity": Param.integer("the lowest severity_number", high=1 << 31),
    },
}
_ENCODING = Param.choice(*ENCODINGS, default="json")


def control_app(
    store: Store,
    faults: FaultBook,
    info: Callable[[], dict[str, Any]],
    journals: Journals | None = None,
) -> ControlApp:
    """The control API's WSGI app, the viewer's routes included; ``info`` gives the ports
    for ``/mocksup/health``, ``journals`` the request journals the viewer shows."""
    api = _Handlers(store, faults, info)
    routes = [
        Route("/stats", ("GET",), api.stats, doc="counters"),
        Route("/clear", ("POST",), api.clear, doc="forget items, records, counters, faults"),
        Route("/requests", ("GET",), api.requests, {
            "signal": Param.choice(*SIGNALS), "transport": Param.choice("http", "grpc"),
            "limit": Param.integer("only the last n records"),
        }, doc="the request records, oldest first"),
        Route("/traces/<trace_id>", ("GET",), api.trace, doc="one trace's spans and tree"),
        Route("/faults", ("GET", "POST", "DELETE"), api.faults_route,
              doc="list, append (a fault object or a list), clear the scripted faults"),
        Route("/env", ("GET",), api.env, {
            "protocol": Param.choice("http/protobuf", "http/json", "grpc", default="http/protobuf")
        }, doc="the environment for an OpenTelemetry SDK"),
        Route("/feed", ("GET",), api.feed, {
            **COMMON_FILTERS, "signal": _many(SIGNALS, "signals (default: all)"),
            "after": Param.integer("the cursor of the last page read (0: from the start)",
                                   default=0),
            "limit": Param.integer("items per page, about", low=1, default=10_000),
            "encoding": Param.choice("otlp-json", "protobuf", default="otlp-json"),
            "timeout": Param.wait(),
        }, doc="the items after a cursor, held until some arrive"),
        Route("/export", ("GET",), api.export, {
            **COMMON_FILTERS, "signal": _many(SIGNALS, "signals (default: all)"),
        }, doc="everything received as OTLP JSON lines (the file exporter's format)"),
    ]  # fmt: skip
    for route, signal in _ROUTE_SIGNALS.items():
        filters = {**FILTERS[signal], "encoding": _ENCODING}
        routes.append(
            Route(f"/{route}", ("GET",), api.items(signal), filters, doc=f"the stored {route}")
        )
        waits = {**filters, "count": Param.integer(default=1), "timeout": Param.wait()}
        routes.append(
            Route(f"/{route}/wait", ("GET",), api.wait(signal), waits, doc=f"wait for {route}")
        )
    routes.extend(ui_routes(journals or Journals({})))
    return ControlApp(routes, name=str(info().get("name", "otlp")), kind="MockOTLPCollector",
                      info=lambda: {k: v for k, v in info().items() if k != "name"})  # fmt: skip


def _query(signal: Signal, args: dict[str, Any]) -> Query:
    try:
        return Query(signal, args)
    except ValueError as error:
        raise ControlError(400, str(error)) from None


class _Handlers:
    def __init__(self, store: Store, faults: FaultBook, info: Callable[[], dict[str, Any]]):
        self.store = store
        self.faults = faults
        self.info = info

    def items(self, signal: Signal) -> Callable[[ControlRequest], Any]:
        """``GET /mocksup/{spans,metrics,logs}``: the stored items matching the filters."""

        def handle(request: ControlRequest) -> Any:
            query = _query(signal, request.args)
            with self.store.cond:
                batches = list(self.store.batches[signal])
                generation = self.store.generation
            head = {"generation": generation}
            encoding = request.args["encoding"]
            if encoding == "protobuf":
                result = Result(signal)
                result.add(query, batches)
                return _answer(signal, result, encoding, head)
            return _answer(signal, _selected(signal, query, batches), encoding, head)

        return handle

    def wait(self, signal: Signal) -> Callable[[ControlRequest], Any]:
        """``GET /mocksup/{spans,metrics,logs}/wait``: hold until ``count`` items match."""

        def handle(request: ControlRequest) -> Any:
            args = request.args
            query = _query(signal, args)
            deadline = time.monotonic() + args["timeout"]
            store = self.store
            with store.cond:
                store.waiting += 1
            try:
                return self._hold(signal, query, args["count"], deadline, args["encoding"])
            finally:
                with store.cond:
                    store.waiting -= 1

        return handle

    def _hold(
        self, signal: Signal, query: Query, count: int, deadline: float, encoding: str
    ) -> Any:
        store = self.store
        result = Result(signal)
        seen = 0
        generation = -1
        while True:
            with store.cond:
                if store.generation != generation:
                    # A clear() started a new test: forget what matched before it.
                    generation, seen, result = store.generation, 0, Result(signal)
                batches = store.batches[signal][seen:]
                seen += len(batches)
            # Select outside the lock: receivers keep storing meanwhile.
            result.add(query, batches)
            if result.count >= count:
                head = {"matched": True, "generation": generation}
                return _answer(signal, result, encoding, head)
            with store.cond:
                while (
                    store.generation == generation
                    and len(store.batches[signal]) == seen
                    and not store.closed
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    store.cond.wait(remaining)
                expired = time.monotonic() >= deadline or store.closed
                arrived = list(store.batches[signal]) if expired else []
            if store.closed:
                raise ControlError(503, "the collector is stopping")
            if expired and store.generation == generation and len(arrived) == seen:
                return _timed_out(signal, result, arrived, generation, encoding)

    def feed(self, request: ControlRequest) -> Any:
        """``GET /mocksup/feed``: the items after the cursor ``after``, as they arrive."""
        args = request.args
        signals = args["signal"] or SIGNALS
        queries = {signal: _query(signal, args) for signal in signals}
        try:
            page = read_page(self.store, queries, args["after"], args["limit"],
                             args["timeout"])  # fmt: skip
        except StaleCursorError as error:
            raise ControlError(400, f"parameter 'after': {error}") from None
        except ConnectionAbortedError:
            raise ControlError(503, "the collector is stopping") from None
        if args["encoding"] == "protobuf":
            headers = [
                *_headers(page.count, page.generation),
                ("X-Mocksup-Cursor", str(page.cursor)),
            ]
            body = _answers.feed_protobuf(page.frames, page.cursor, page.generation)
            return Raw(_PROTOBUF, body, headers)
        head = {"cursor": page.cursor, "generation": page.generation, "count": page.count}
        return Raw(_JSON, _answers.feed_json(page.frames, head))

    def export(self, request: ControlRequest) -> Any:
        """``GET /mocksup/export``: everything received, as OTLP JSON lines, streamed."""
        signals = request.args["signal"] or SIGNALS
        queries = {signal: _query(signal, request.args) for signal in signals}
        with self.store.cond:
            # What is stored now, merged in arrival order as it is read (no copy).
            stored = stored_after(self.store, signals, 0)
        frames = (
            (signal, part)
            for _, signal, batch in stored
            for part, count in (select(signal, queries[signal], batch),)
            if count
        )
        return Raw(_JSON_LINES, _answers.json_lines(frames))

    def trace(self, request: ControlRequest) -> Any:
        """``GET /mocksup/traces/<trace_id>``: its spans and their tree."""
        trace_id = request.values["trace_id"]
        query = _query("traces", {"trace_id": trace_id})
        if query.trace_id is None:
            raise ControlError(400, "a trace id is 32 hex digits")
        result = Result("traces")
        with self.store.cond:
            batches = list(self.store.batches["traces"])
        result.add(query, batches)
        spans = Trace.from_spans(trace_id, result.items()).spans
        return {**json_document("traces", list(spans)), **trace_tree(spans)}

    def requests(self, request: ControlRequest) -> Any:
        """``GET /mocksup/requests``: the request records, oldest first."""
        signal, transport, limit = (request.args[k] for k in ("signal", "transport", "limit"))
        with self.store.cond:
            records = [
                r
                for r in self.store.requests
                if (signal is None or r.get("signal") == signal)
                and (transport is None or r["transport"] == transport)
            ]
            forgotten = self.store.requests_forgotten
        if limit is not None:
            records = records[-limit:] if limit else []
        return {"requests": records, "forgotten": forgotten}

    def stats(self, request: ControlRequest) -> Any:
        """``GET /mocksup/stats``: the counters."""
        return self.store.stats()

    def clear(self, request: ControlRequest) -> Any:
        """``POST /mocksup/clear``: forget items, records, counters and faults."""
        if request.body not in (None, {}):
            # Nothing to choose: a body ({"signal": ...}, vLLM's {"metrics": ...}) would
            # be ignored while everything is forgotten; say so instead.
            raise ControlError(400, "POST /mocksup/clear takes no body: it forgets everything")
        self.faults.clear()
        return {"generation": self.store.clear()}

    def faults_route(self, request: ControlRequest) -> Any:
        """``GET``/``POST``/``DELETE /mocksup/faults``: list, append, clear."""
        if request.method == "POST":
            # Here, not at the top: the collector serves before it imports pydantic.
            from mocksup.otlp.faults import Fault

            body = request.body
            documents = body if isinstance(body, list) else [body]
            try:
                self.faults.add([Fault.model_validate(d) for d in documents])
            except ValueError as error:  # pydantic's ValidationError, or too many pending
                raise ControlError(400, str(error)) from None
        elif request.method == "DELETE":
            self.faults.clear()
        return {"faults": self.faults.pending()}

    def env(self, request: ControlRequest) -> Any:
        """``GET /mocksup/env``: the exporter environment for ``protocol``."""
        protocol = request.args["protocol"]
        info = self.info()
        host = info["host"]
        host = f"[{host}]" if ":" in host else host
        if protocol == "grpc":
            if info.get("grpc_port") is None:
                raise ControlError(400, "parameter 'protocol' is grpc, but gRPC is switched "
                                   "off on this collector (grpc_port=None)")  # fmt: skip
            return exporter_env(f"http://{host}:{info['grpc_port']}", protocol)
        return exporter_env(f"http://{host}:{info['port']}", protocol)


def _selected(signal: Signal, query: Query, batches: list[Batch]) -> Iterator[bytes]:
    """The selection of ``batches``, one message per batch, computed as it is read."""
    for batch in batches:
        part, count = select(signal, query, batch)
        if count:
            yield part


def _headers(count: int, generation: int) -> list[tuple[str, str]]:
    return [("X-Mocksup-Count", str(count)), ("X-Mocksup-Generation", str(generation))]


def _answer(
    signal: Signal, selection: Result | Iterator[bytes], encoding: str, head: dict[str, Any]
) -> Raw:
    """A selection in the encoding asked for (see ``ENCODINGS``).

    ``protobuf`` answers a bare ``TracesData``/``MetricsData``/``LogsData`` body (the count
    and generation in headers): for 100k spans that is 36 MB parsed in milliseconds. The
    JSON forms are streamed, each stored request selected as it is written.
    """
    if isinstance(selection, Result):
        if encoding == "protobuf":
            headers = _headers(selection.count, head["generation"])
            return Raw(_PROTOBUF, selection.protobuf(), headers)
        parts: Any = selection.parts
    else:
        parts = selection
    if encoding == "otlp-json":
        return Raw(_JSON, _answers.otlp_document_chunks(signal, parts))
    return Raw(_JSON, _answers.document_chunks(signal, parts, head))


def _timed_out(
    signal: Signal, result: Result, arrived: list[Batch], generation: int, encoding: str
) -> Any:
    # Always JSON, whatever the encoding asked: the caller needs the listing of what
    # arrived for its error message, not the few items that matched.
    timed_out = {
        "matched": False,
        "generation": generation,
        "count": result.count,
        "total": sum(batch.count for batch in arrived),
        "arrived": summarise(signal, arrived),
    }
    if encoding == "json":
        del timed_out["count"]  # the document ends with it
        return Raw(_JSON, _answers.document_chunks(signal, result.parts, timed_out))
    return timed_out
