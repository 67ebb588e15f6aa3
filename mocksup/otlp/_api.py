"""The collector's control API: JSON routes under ``/mocksup`` on its HTTP port.

Every query of the Python client is a call to one of these routes, so a harness in any
language has the same powers. Waits are long polls: the request is held on the store's
condition variable until enough matching items arrived or its deadline passed.
Routes are documented in ``docs/otlp.rst``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError
from werkzeug.wrappers import Request

from mocksup.control import PREFIX
from mocksup.otlp._ingest import FaultBook
from mocksup.otlp._query import Query, Result, json_document, summarise
from mocksup.otlp._store import Store
from mocksup.otlp.faults import Fault
from mocksup.otlp.records import Trace, exporter_env, trace_tree

__all__ = ("ControlAPI",)

#: The longest a wait may hold a request, whatever its ``timeout`` says.
MAX_WAIT = 600.0
_ROUTE_SIGNALS = {"spans": "traces", "metrics": "metrics", "logs": "logs"}


class _Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlAPI:
    """The WSGI app behind ``/mocksup``.

    :param ports: filled by the collector once bound: ``host``, ``port``, ``grpc_port``.
    """

    def __init__(self, store: Store, faults: FaultBook, ports: dict[str, Any]) -> None:
        self.store = store
        self.faults = faults
        self.ports = ports

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        path = request.path[len(PREFIX) :].strip("/")
        status = 200
        try:
            answer = self._route(request.method, path.split("/") if path else [], request)
        except _Error as error:
            status, answer = error.status, {"error": str(error)}
        except (ValueError, ValidationError) as error:
            status, answer = 400, {"error": str(error)}
        if isinstance(answer, _Protobuf):
            headers = [
                ("Content-Type", "application/x-protobuf"),
                ("Content-Length", str(len(answer.data))),
                ("X-Mocksup-Count", str(answer.count)),
                ("X-Mocksup-Generation", str(answer.generation)),
            ]
            start_response("200 OK", headers)
            return [answer.data]
        # allow_nan=False: NaN and infinities are spelled as OTLP/JSON spells them (strings).
        body = json.dumps(answer, allow_nan=False).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _route(self, method: str, parts: list[str], request: Request) -> Any:
        head = parts[0] if parts else ""
        if head == "health" and method == "GET":
            return {"status": "ok", **self.ports}
        if head in _ROUTE_SIGNALS and len(parts) == 1 and method == "GET":
            return self.items(_ROUTE_SIGNALS[head], request.args)
        if head in _ROUTE_SIGNALS and parts[1:] == ["wait"] and method == "GET":
            return self.wait(_ROUTE_SIGNALS[head], request.args)
        if head == "traces" and len(parts) == 2 and method == "GET":
            return self.trace(parts[1])
        if head == "requests" and len(parts) == 1 and method == "GET":
            return self.requests(request.args)
        if head == "stats" and method == "GET":
            return self.store.stats()
        if head == "clear" and method == "POST":
            self.faults.clear()
            return {"generation": self.store.clear()}
        if head == "faults" and len(parts) == 1:
            return self.fault_route(method, request)
        if head == "env" and method == "GET":
            protocol = request.args.get("protocol", "http/protobuf")
            return exporter_env(self._endpoint(protocol), protocol)
        raise _Error(404, f"no control route {method} {request.path}; see the otlp docs")

    def _endpoint(self, protocol: str) -> str:
        host = self.ports["host"]
        host = f"[{host}]" if ":" in host else host
        if protocol == "grpc":
            if self.ports.get("grpc_port") is None:
                raise _Error(400, "gRPC is switched off on this collector")
            return f"http://{host}:{self.ports['grpc_port']}"
        return f"http://{host}:{self.ports['port']}"

    def items(self, signal: str, args: Any) -> dict[str, Any] | _Protobuf:
        """``GET /mocksup/{spans,metrics,logs}``: the stored items matching the filters."""
        query = Query(signal, _params(args))
        with self.store.cond:
            batches = list(self.store.batches[signal])
            generation = self.store.generation
        result = Result(signal)
        result.add(query, batches)
        return _answer(result, args, {"generation": generation})

    def wait(self, signal: str, args: Any) -> dict[str, Any] | _Protobuf:
        """``GET /mocksup/{spans,metrics,logs}/wait``: hold until ``count`` items match."""
        query = Query(signal, _params(args))
        count = int(args.get("count", 1))
        timeout = min(float(args.get("timeout", 10.0)), MAX_WAIT)
        store = self.store
        with store.cond:
            store.waiting += 1
        try:
            return self._hold(signal, query, count, time.monotonic() + timeout, args)
        finally:
            with store.cond:
                store.waiting -= 1

    def _hold(
        self, signal: str, query: Query, count: int, deadline: float, args: Any
    ) -> dict[str, Any] | _Protobuf:
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
            # Materialise outside the lock: receivers keep storing meanwhile.
            result.add(query, batches)
            if result.count >= count:
                return _answer(result, args, {"matched": True, "generation": generation})
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
                raise _Error(503, "the collector is stopping")
            if expired and store.generation == generation and len(arrived) == seen:
                return self._timed_out(signal, result, arrived, generation, args)

    @staticmethod
    def _timed_out(
        signal: str, result: Result, arrived: list[Any], generation: int, args: Any
    ) -> dict[str, Any]:
        # Always JSON, whatever the encoding asked: the caller needs the listing of what
        # arrived for its error message, not the few items that matched.
        timed_out = {
            "matched": False,
            "generation": generation,
            "count": result.count,
            "total": sum(batch.count for batch in arrived),
            "arrived": summarise(signal, arrived),
        }
        if args.get("encoding", "json") == "json":
            timed_out.update(result.document())
        return timed_out

    def trace(self, trace_id: str) -> dict[str, Any]:
        """``GET /mocksup/traces/<trace_id>``: its spans and their tree."""
        try:
            raw = bytes.fromhex(trace_id)
        except ValueError:
            raise _Error(400, f"trace id {trace_id!r} is not hex") from None
        if len(raw) != 16:
            raise _Error(400, f"trace id {trace_id!r} is not 32 hex digits")
        result = Result("traces")
        with self.store.cond:
            batches = list(self.store.batches["traces"])
        result.add(Query("traces", {"trace_id": trace_id}), batches)
        spans = Trace.from_spans(trace_id, result.items()).spans
        return {**json_document("traces", list(spans)), **trace_tree(spans)}

    def requests(self, args: Any) -> dict[str, Any]:
        """``GET /mocksup/requests``: the request records, oldest first."""
        signal = args.get("signal")
        transport = args.get("transport")
        with self.store.cond:
            records = [
                r
                for r in self.store.requests
                if (signal is None or r.get("signal") == signal)
                and (transport is None or r["transport"] == transport)
            ]
            forgotten = self.store.requests_forgotten
        limit = args.get("limit")
        if limit is not None:
            records = records[-int(limit) :] if int(limit) else []
        return {"requests": records, "forgotten": forgotten}

    def fault_route(self, method: str, request: Request) -> Any:
        """``GET``/``POST``/``DELETE /mocksup/faults``: list, append, clear."""
        if method == "POST":
            document = json.loads(request.get_data() or b"null")
            documents = document if isinstance(document, list) else [document]
            self.faults.add([Fault.model_validate(d) for d in documents])
        elif method == "DELETE":
            self.faults.clear()
        elif method != "GET":
            raise _Error(405, f"method {method} not allowed on /faults")
        return {"faults": self.faults.pending()}


class _Protobuf:
    """An answer sent as a bare protobuf body; the counts travel in headers."""

    def __init__(self, data: bytes, count: int, generation: int) -> None:
        self.data = data
        self.count = count
        self.generation = generation


def _answer(result: Result, args: Any, meta: dict[str, Any]) -> dict[str, Any] | _Protobuf:
    """The selection in the encoding asked for: ``json`` (default) or ``protobuf``.

    ``protobuf`` answers a ``TracesData``/``MetricsData``/``LogsData`` body: for 100k spans
    that is 36 MB parsed in milliseconds, where the JSON form takes seconds to encode and
    decode.
    """
    encoding = args.get("encoding", "json")
    if encoding == "protobuf":
        return _Protobuf(result.protobuf(), result.count, meta["generation"])
    if encoding != "json":
        raise ValueError(f"unknown encoding {encoding!r}; use json or protobuf")
    return {"count": result.count, **meta, **result.document()}


def _params(args: Any) -> dict[str, Any]:
    if not hasattr(args, "getlist"):  # a plain dict from inside this module
        return dict(args)
    params: dict[str, Any] = {key: args.get(key) for key in args}
    params["attr"] = args.getlist("attr")
    params["resource"] = args.getlist("resource")
    return params
