"""MockVLLMServer: the settings, the child's ``serve()`` and the parent-side client methods."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mocksup.base import MockServerBase
from mocksup.vllm.client import VLLMQueries
from mocksup.vllm.settings import Faults, Latency, ScriptRule

if TYPE_CHECKING:
    from typing_extensions import Self

    from mocksup._context import ServeContext
    from mocksup.vllm._app import VLLMApp
    from mocksup.vllm._pipeline import ServerConfig
    from mocksup.vllm._tracing import SpanExporter

__all__ = ["MockVLLMServer"]

_log = logging.getLogger(__name__)


class MockVLLMServer(VLLMQueries, MockServerBase):
    """A mock of vLLM's OpenAI-compatible server, with vLLM's metrics and ``llm_request`` span.

    It answers ``/v1/chat/completions``, ``/v1/completions`` (streamed or not),
    ``/v1/models``, ``/v1/embeddings``, ``/tokenize``, ``/detokenize``, ``/health``, ``/ping``,
    ``/load``, ``/version`` and ``/metrics`` as vLLM does, with deterministic content, simulated
    latency and injected faults; a control API under ``/mocksup`` reads the request journal
    and changes latency, faults and scripts at run time (see ``docs/vllm.rst``).

    Parent-side methods (:meth:`requests`, :meth:`wait_for_requests`, :meth:`clear`,
    :meth:`set_latency`, ...; see :class:`~mocksup.vllm.VLLMQueries`) need a started server
    and call that control API; :class:`~mocksup.vllm.VLLMClient` has the same methods for a
    mock another process runs.
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
    journal_credentials: bool = Field(
        default=False,
        description="Keep credentials (``authorization``, API-key and cookie headers, bearer "
        "values) in the journal instead of ``[redacted]``.",
    )

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

    # -- the child side ------------------------------------------------------------------

    def serve(self, ctx: ServeContext) -> None:
        """Serve until stopped; on stop, export every pending span before returning."""
        from mocksup.serving import bind_tcp, serve_wsgi
        from mocksup.vllm._errors import uvicorn_error_page

        app, exporter = self.make_app()
        sock = bind_tcp(self.host, self.port)
        port = sock.getsockname()[1]  # serve_wsgi closes our copy of the socket
        try:
            with serve_wsgi(app, sock, request_log=self.request_log, error_page=uvicorn_error_page):
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
        from mocksup.vllm._app import VLLMApp
        from mocksup.vllm._control_routes import ControlAPI
        from mocksup.vllm._engine_metrics import EngineMetrics
        from mocksup.vllm._http_metrics import HTTPMetrics
        from mocksup.vllm._runtime import RuntimeState

        state = RuntimeState(self.latency, self.faults, self.scripts, self.seed, self.journal_limit)
        metrics = EngineMetrics(self.served_model_names[0], self.max_model_len)
        http_metrics = HTTPMetrics()
        exporter = self._exporter()

        def reset_metrics() -> None:
            metrics.reset()
            http_metrics.reset()

        def live() -> dict[str, int]:
            return {"running": metrics.running, "waiting": metrics.waiting}

        control = ControlAPI(state, self._public_settings(), reset_metrics, live)
        config = self._server_config(tracing=exporter is not None)
        app = VLLMApp(
            config, state, metrics=metrics, http_metrics=http_metrics, exporter=exporter,
            control=control,
        )  # fmt: skip
        return app, exporter

    def _exporter(self) -> SpanExporter | None:
        if not self.otlp_traces_endpoint:
            return None
        from mocksup.vllm._tracing import SpanExporter

        return SpanExporter(
            self.otlp_traces_endpoint, self.otlp_traces_protocol, self.otel_service_name
        )

    def _server_config(self, *, tracing: bool) -> ServerConfig:
        from mocksup.vllm._pipeline import ServerConfig

        keys = [self.api_key] if isinstance(self.api_key, str) else list(self.api_key or [])
        return ServerConfig(
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
            tracing=tracing,
            journal_credentials=self.journal_credentials,
        )

    def _public_settings(self) -> dict[str, Any]:
        return {
            "served_model_names": list(self.served_model_names),
            "max_model_len": self.max_model_len,
            "seed": self.seed,
            "vllm_version": self.vllm_version,
            "otlp_traces_endpoint": self.otlp_traces_endpoint,
            "otlp_traces_protocol": self.otlp_traces_protocol,
        }

    # -- the parent side (the queries are :class:`~mocksup.vllm.client.VLLMQueries`) --------

    @property
    def base_url(self) -> str:
        """The URL an OpenAI client wants: :attr:`url` + ``/v1``."""
        return self.url + "/v1"

    def endpoints(self) -> dict[str, str]:
        """``{"url": url, "openai_base_url": base_url}``."""
        return {"url": self.url, "openai_base_url": self.base_url}

    def client_env(self) -> dict[str, str]:
        """:meth:`openai_env`."""
        return self.openai_env()

    def openai_env(self) -> dict[str, str]:
        """``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` for a client of this server."""
        key = self.api_key if isinstance(self.api_key, str) else (self.api_key or ["EMPTY"])[0]
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": key}
