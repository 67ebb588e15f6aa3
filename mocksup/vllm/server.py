"""MockVLLMServer: the settings, the child's ``serve()`` and the parent-side client methods."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from mocksup._control import ControlClient
from mocksup.base import MockServerBase
from mocksup.vllm.settings import Faults, Latency, ScriptRule

if TYPE_CHECKING:
    from typing_extensions import Self

    from mocksup._context import ServeContext
    from mocksup.vllm.app import VLLMApp
    from mocksup.vllm.tracing import SpanExporter

__all__ = ["MockVLLMServer"]

_log = logging.getLogger(__name__)


class MockVLLMServer(MockServerBase):
    """A mock of vLLM's OpenAI-compatible server, with vLLM's metrics and ``llm_request`` span.

    It answers ``/v1/chat/completions``, ``/v1/completions`` (streamed or not),
    ``/v1/models``, ``/v1/embeddings``, ``/tokenize``, ``/detokenize``, ``/health``, ``/ping``,
    ``/load``, ``/version`` and ``/metrics`` as vLLM does, with deterministic content, simulated
    latency and injected faults; a control API under ``/mocksup`` reads the request journal
    and changes latency, faults and scripts at run time (see ``docs/vllm.rst``).

    Parent-side methods (:meth:`requests`, :meth:`clear`, :meth:`set_latency`, ...) need a
    started server and call that control API.
    """

    default_name: ClassVar[str] = "vllm"

    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind; 0 for a free one.")
    served_model_names: list[str] = Field(
        default_factory=lambda: ["mock-model"],
        min_length=1,
        description="Model names served (``--served-model-name``); the first is the base, "
        "the default of requests and the metrics' ``model_name``.",
    )
    max_model_len: int = Field(default=4096, ge=2, description="Context length (prompt + output).")
    api_key: str | list[str] | None = Field(
        default=None,
        description="Bearer key(s) required on all but the open routes (``--api-key``).",
    )
    seed: int = Field(
        default=0, description="Seed of content (unless a request sets its own) and faults."
    )
    output_tokens: tuple[int, int] = Field(
        default=(10, 40), description="Range of the natural length of generated text, in tokens."
    )
    latency: Latency = Field(default=Latency(), description="Simulated timing.")
    faults: Faults = Field(default=Faults(), description="Injected failures.")
    scripts: list[ScriptRule] = Field(default_factory=list, description="Scripted replies.")
    otlp_traces_endpoint: str | None = Field(
        default=None,
        description="Where to export ``llm_request`` spans (``--otlp-traces-endpoint``).",
    )
    otlp_traces_protocol: Literal["grpc", "http/protobuf"] = Field(
        default="grpc",
        description="``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``: ``grpc`` or ``http/protobuf``.",
    )
    otel_service_name: str = Field(default="vllm", description="The spans' ``service.name``.")
    request_log: bool = Field(default=False, description="Log every request (an access log).")
    vllm_version: str = Field(default="0.32.0", description="What ``/version`` answers.")
    enable_request_id_headers: bool = Field(
        default=False,
        description="Echo ``X-Request-Id`` in responses (``--enable-request-id-headers``).",
    )
    response_role: str = Field(
        default="assistant", description="The role of replies (``--response-role``)."
    )
    embedding_dim: int = Field(
        default=384, ge=1, le=65536, description="Length of embedding vectors."
    )
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    journal_limit: int = Field(default=10_000, ge=1, description="Requests kept in the journal.")

    _client: ControlClient | None = PrivateAttr(None)

    @field_validator("output_tokens")
    @classmethod
    def _check_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError("output_tokens must be (low, high) with 0 <= low <= high")
        return value

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        if len(set(self.served_model_names)) != len(self.served_model_names):
            raise ValueError("served_model_names must be distinct")
        return self

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private["_client"] = None
        state["__pydantic_private__"] = private
        return state

    # -- the child side ------------------------------------------------------------------

    def serve(self, ctx: ServeContext) -> None:
        """Serve until stopped; on stop, export every pending span before returning."""
        from mocksup.serving import bind_tcp, serve_wsgi

        app, exporter = self.make_app()
        sock = bind_tcp(self.host, self.port)
        port = sock.getsockname()[1]  # serve_wsgi closes our copy of the socket
        try:
            with serve_wsgi(app, sock, request_log=self.request_log):
                ctx.ready(port=port)
                ctx.wait()
        finally:
            if exporter is not None:
                exporter.close()

    def make_app(self) -> tuple[VLLMApp, SpanExporter | None]:
        """Build the WSGI app (and its span exporter, when tracing is on) from the settings.

        ``serve()`` runs it in the child; tests may drive it in-process. Close the exporter
        when done with it.
        """
        from mocksup.vllm.app import AppConfig, VLLMApp
        from mocksup.vllm.control import ControlAPI
        from mocksup.vllm.http_metrics import HTTPMetrics
        from mocksup.vllm.metrics import Metrics
        from mocksup.vllm.state import RuntimeState

        keys = [self.api_key] if isinstance(self.api_key, str) else list(self.api_key or [])
        state = RuntimeState(self.latency, self.faults, self.scripts, self.seed, self.journal_limit)
        metrics = Metrics(self.served_model_names[0], self.max_model_len)
        exporter = None
        if self.otlp_traces_endpoint:
            from mocksup.vllm.tracing import SpanExporter

            exporter = SpanExporter(
                self.otlp_traces_endpoint, self.otlp_traces_protocol, self.otel_service_name
            )
        config = AppConfig(
            models=list(self.served_model_names),
            max_model_len=self.max_model_len,
            api_keys=keys,
            seed=self.seed,
            output_tokens=self.output_tokens,
            version=self.vllm_version,
            request_id_headers=self.enable_request_id_headers,
            role=self.response_role,
            max_request_bytes=self.max_request_bytes,
            embedding_dim=self.embedding_dim,
            tracing=exporter is not None,
        )
        public = {
            "served_model_names": list(self.served_model_names),
            "max_model_len": self.max_model_len,
            "seed": self.seed,
            "vllm_version": self.vllm_version,
            "otlp_traces_endpoint": self.otlp_traces_endpoint,
            "otlp_traces_protocol": self.otlp_traces_protocol,
        }
        http_metrics = HTTPMetrics()

        def reset_metrics() -> None:
            metrics.reset()
            http_metrics.reset()

        def live() -> dict[str, int]:
            return {"running": metrics.running, "waiting": metrics.waiting}

        control = ControlAPI(state, public, reset_metrics, live)
        app = VLLMApp(
            config,
            state,
            metrics=metrics,
            http_metrics=http_metrics,
            exporter=exporter,
            control=control,
        )
        return app, exporter

    # -- the parent side -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL an OpenAI client wants: :attr:`url` + ``/v1``."""
        return self.url + "/v1"

    def endpoints(self) -> dict[str, str]:
        return {"url": self.url, "openai_base_url": self.base_url}

    def client_env(self) -> dict[str, str]:
        return self.openai_env()

    def openai_env(self) -> dict[str, str]:
        """``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` for a client of this server."""
        key = self.api_key if isinstance(self.api_key, str) else (self.api_key or ["EMPTY"])[0]
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": key}

    @property
    def control(self) -> ControlClient:
        """The client of this server's control API."""
        if self._client is None or self._client.base_url != self.url:
            self._client = ControlClient(self.url, self.name)
        return self._client

    def requests(
        self, path: str | None = None, count: int = 0, timeout: float = 0.0
    ) -> list[dict[str, Any]]:
        """The journal: served requests, oldest first (``GET /mocksup/requests``).

        :param path: only requests to this path, such as ``/v1/chat/completions``.
        :param count: wait until at least this many match ...
        :param timeout: ... for at most this many seconds (then return what there is).
        :raises ControlAPIError: the server could not be reached.
        """
        params = {"path": path, "count": count or None, "wait": timeout or None}
        result = self.control.call("GET", "/requests", params=params, wait=timeout)
        entries: list[dict[str, Any]] = result["requests"]
        return entries

    def wait_for_requests(
        self, count: int, path: str | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Like :meth:`requests`, but raise :class:`TimeoutError` if fewer than ``count`` came."""
        entries = self.requests(path, count, timeout)
        if len(entries) < count:
            raise TimeoutError(
                f"{self.name}: {len(entries)} of {count} requests to {path or 'any path'} "
                f"after {timeout} s"
            )
        return entries

    def clear(self, metrics: bool = False) -> None:
        """Empty the journal and restart call numbers, rule counts and ``faults.first``.

        :param metrics: also zero the metric counters and histograms.
        """
        self.control.call("POST", "/clear", body={"metrics": metrics})

    def set_latency(self, **changes: Any) -> Latency:
        """Change latency settings at run time (fields of :class:`Latency`); returns them all."""
        return Latency.model_validate(self.control.call("PUT", "/latency", body=changes))

    def set_faults(self, **changes: Any) -> Faults:
        """Change fault settings at run time (fields of :class:`Faults`); returns them all."""
        return Faults.model_validate(self.control.call("PUT", "/faults", body=changes))

    def set_scripts(self, rules: list[ScriptRule]) -> None:
        """Replace the scripted rules."""
        body = {"rules": [r.model_dump() for r in rules]}
        self.control.call("PUT", "/scripts", body=body)

    def add_script(self, rule: ScriptRule) -> None:
        """Append one scripted rule (it applies after the existing ones)."""
        self.control.call("POST", "/scripts", body=rule.model_dump())

    def stats(self) -> dict[str, int]:
        """``{"requests", "generation_calls", "running", "waiting"}`` (``GET /mocksup/stats``).

        ``requests`` counts since start, ``generation_calls`` since start or the last
        :meth:`clear`; ``running`` and ``waiting`` are the live gauges.
        """
        result: dict[str, int] = self.control.call("GET", "/stats")
        return result

    def summary(self) -> str:
        """One line on what the server received, for ``mocksup up``'s live display."""
        s = self.stats()
        return (
            f"{s['requests']} requests, {s['generation_calls']} generations, "
            f"{s['running']} running, {s['waiting']} waiting"
        )

    def runtime_config(self) -> dict[str, Any]:
        """The running server's settings, latency, faults, rules and call count."""
        result: dict[str, Any] = self.control.call("GET", "/config")
        return result
