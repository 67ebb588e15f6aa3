"""The collector's child side: its servers built from its settings, without pydantic.

:class:`CollectorServing` holds what :meth:`MockOTLPCollector.serve
<mocksup.otlp.MockOTLPCollector.serve>` does; the collector mixes it in. A child given the
collector's settings as a plain dict (its ``model_dump()``, validated in the parent) serves
them through :func:`serve_settings` with the same code, importing neither pydantic nor the
collector's class, nor anything the servers do not use before they serve (the queries load
their item classes, the faults route pydantic, on first use): most of a fresh child's start
is imports, and ``mocksup up``'s first export waits for them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mocksup._context import ServeContext
from mocksup.otlp._limits import Limits
from mocksup.otlp._modes import MODES, Compat

if TYPE_CHECKING:
    # The servers' pieces, imported where they are built.
    from mocksup._h2.server import H2Server
    from mocksup.otlp._http import OTLPHTTPApp
    from mocksup.otlp._ingest import Ingest
    from mocksup.serving import HTTPLimits

__all__ = ("CollectorServing", "serve_settings")

#: Seconds a stopping collector gives the requests in flight on each transport to be
#: answered (a fifth of ``stop_timeout`` when that is less).
DRAIN = 0.5


@dataclass
class _Parts:
    ingest: Ingest
    app: OTLPHTTPApp
    ports: dict[str, Any]


class CollectorServing:
    """The collector's ``serve()`` and its pieces, for any class with its settings as
    attributes (:class:`~mocksup.otlp.MockOTLPCollector`, or plain settings)."""

    if TYPE_CHECKING:  # provided by the class that mixes this in (its fields there)
        name: str
        host: str
        port: int
        grpc_port: int | None
        compat: Compat
        max_body_size: int | None
        grpc_max_message: int | None
        max_request_objects: int
        max_items: int | None
        max_stored_bytes: int | None
        max_requests: int
        journal_credentials: bool
        grpc_workers: int
        max_connections: int
        stop_timeout: float
        cors: Any  # a CORSConfig, or its dump
        journals: dict[str, str]

    def limits(self) -> Limits:
        """The limits in force, this mode's defaults filled in."""
        mode = MODES[self.compat]
        return Limits(
            mode=mode,
            max_body_size=self.max_body_size or mode.max_body_size,
            grpc_max_message=self.grpc_max_message or mode.grpc_max_message,
            max_request_objects=self.max_request_objects,
            max_stored_bytes=self.max_stored_bytes,
            max_items=self.max_items,
            max_requests=self.max_requests,
        )

    def serve(self, ctx: ServeContext) -> None:
        """Serve OTLP/gRPC, then OTLP/HTTP and the control API, until the stop request.

        gRPC serves as soon as it can: an export that arrives while the HTTP side is built
        (its imports are most of what is left of a start) is answered at once. Ready, which
        lets the parent go on, waits for both ports.
        """
        from mocksup.serving import bind_tcp, serve_wsgi

        ingest, ports = self._ingest()
        sock = bind_tcp(self.host, self.port)
        grpc = None
        try:
            ports["port"] = sock.getsockname()[1]
            grpc = self._grpc_server(ingest, ports)
            if grpc is not None:
                grpc.start()
            app = self._app(ingest, ports)
        except BaseException:
            sock.close()
            if grpc is not None:
                grpc.shutdown()
            raise
        # On stop, the answers owed (a held wait's 503, an upload's) are sent before the
        # exit: each transport gets up to DRAIN, a fifth of the stop budget at most, so that
        # both fit within it before the parent's SIGKILL.
        grace = min(DRAIN, self.stop_timeout / 5)
        with serve_wsgi(app, sock, limits=self.http_limits(), drain=grace):
            try:
                # Both ports serve now: only then may the parent send.
                ctx.ready(**{k: ports[k] for k in ("port", "grpc_port") if k in ports})
                ctx.wait()
            finally:
                # Wake long polls and end injected delays, so in-flight requests finish
                # within the stop budget instead of running out their timeouts.
                ingest.stopping.set()
                ingest.store.close()
                if grpc is not None:
                    grpc.shutdown(grace)

    def http_limits(self) -> HTTPLimits:
        """The HTTP server's limits: ``max_connections``; in ``"collector"`` mode an
        HTTP/1.1 request without ``Host`` is refused with 400, as Go's net/http does; the
        bodies held at once, 25 at their largest (500 MiB by default)."""
        from mocksup.serving import HTTPLimits

        return HTTPLimits(
            max_connections=self.max_connections,
            require_host=MODES[self.compat].require_host,
            max_held=25 * self.limits().max_body_size,
        )

    def _parts(self) -> _Parts:
        """The child's pieces, wired (the tests drive the HTTP app in-process with them)."""
        ingest, ports = self._ingest()
        return _Parts(ingest, self._app(ingest, ports), ports)

    def _ingest(self) -> tuple[Ingest, dict[str, Any]]:
        """The store and the ingest both transports use, and the ports the control API
        reports (filled in as they are bound)."""
        from mocksup.otlp._ingest import FaultBook, Ingest
        from mocksup.otlp._store import Store

        limits = self.limits()
        store = Store(
            limits.max_items,
            limits.max_requests,
            limits.max_stored_bytes,
            keep_credentials=self.journal_credentials,
        )
        ingest = Ingest(store, FaultBook(), threading.Event(), limits)
        return ingest, {"name": self.name, "host": self.host}

    def _app(self, ingest: Ingest, ports: dict[str, Any]) -> OTLPHTTPApp:
        """The HTTP side: OTLP/HTTP, the control API and the viewer, on ``ingest``."""
        from mocksup.otlp._api import control_app
        from mocksup.otlp._cors import CORSPolicy
        from mocksup.otlp._http import OTLPHTTPApp
        from mocksup.otlp._ui import Journals

        # A CORSConfig on the model, its dump in plain settings.
        settings = self.cors
        if settings is not None and not isinstance(settings, dict):
            settings = settings.model_dump()
        cors = None
        if settings is not None and settings["allowed_origins"]:
            cors = CORSPolicy(**settings)
        control = control_app(
            ingest.store, ingest.faults, lambda: dict(ports), Journals(self.journals)
        )
        return OTLPHTTPApp(ingest, control, cors)

    def _grpc_server(self, ingest: Ingest, ports: dict[str, Any]) -> H2Server | None:
        if self.grpc_port is None:
            return None
        from mocksup._h2.grpc import GRPCHandler
        from mocksup._h2.server import H2Limits, H2Server
        from mocksup.otlp._grpc import decoders, grpc_methods
        from mocksup.serving import bind_tcp

        methods = grpc_methods(ingest, self.grpc_workers)
        handler = GRPCHandler(methods, ingest.limits.grpc_max_message, decoders())
        sock = bind_tcp(self.host, self.grpc_port)
        # What the calls in progress may hold, all connections together: 128 messages at
        # their largest (512 MiB by default); a call holds up to two before it is refused.
        held = 128 * (5 + ingest.limits.grpc_max_message)
        limits = H2Limits(max_connections=self.max_connections, max_held=held)
        server = H2Server(sock, handler, limits)
        handler.server = server
        ports["grpc_port"] = server.port
        return server


class _Settings(CollectorServing):
    """The collector's settings as attributes, from its ``model_dump()``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.__dict__.update(settings)


def serve_settings(settings: dict[str, Any], ctx: ServeContext) -> None:
    """Serve a collector from its validated settings (``MockOTLPCollector.model_dump()``)."""
    _Settings(settings).serve(ctx)
