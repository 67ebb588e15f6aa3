"""MockVLLMServer: the settings, the child's ``serve()`` and the parent-side client methods."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from mocksup.base import MAX_STOP_TIMEOUT, MockServerBase
from mocksup.vllm._lora import LoRAModule
from mocksup.vllm.client import VLLMQueries
from mocksup.vllm.settings import Faults, Latency, ScriptRule

if TYPE_CHECKING:
    from typing_extensions import Self

    from mocksup._context import ServeContext
    from mocksup.serving import HTTPLimits
    from mocksup.vllm._app import VLLMApp
    from mocksup.vllm._tracing import SpanExporter

__all__ = ("VLLM_VERSION", "MockVLLMServer")

#: The vLLM release the mock imitates; its behaviour follows this version's server code.
VLLM_VERSION = "0.33.0"

_log = logging.getLogger(__name__)
#: Seconds the start waits for its start-up spans' export (one export's timeout, 1 s, and a
#: margin) before it reports ready.
_STARTUP_EXPORT_WAIT = 1.5
#: What a stop needs beyond its drain: the span flush (at most 1.2 s), the exit, the SIGKILL
#: reserve.
_STOP_AFTER_DRAIN = 2.0


class MockVLLMServer(VLLMQueries, MockServerBase):
    """A mock of vLLM 0.33.0's OpenAI-compatible server, with vLLM's metrics and spans.

    It answers ``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses`` (with
    retrieve and cancel) and ``/v1/messages`` (streamed or not),
    ``/v1/messages/count_tokens``, ``/v1/chat/completions/batch``, ``/invocations``,
    ``/v1/models``, ``/v1/embeddings``,
    ``/tokenize``, ``/detokenize``, ``/health``, ``/ping``, ``/load``, ``/version``,
    ``/metrics`` and the API docs as vLLM does (and, with ``VLLM_SERVER_DEV_MODE=1``, its
    development routes), with deterministic content, simulated latency and injected faults;
    a control API under ``/mocksup`` reads the request journal and changes latency, faults
    and scripts at run time (see ``docs/vllm.rst``). Settings that are ``vllm serve`` flags
    have the flag's name; :meth:`from_cli_args` takes a ``vllm serve`` command line.

    Default port: vLLM's 8000 when created directly; ``port=0`` picks a free one, as
    :func:`mocksup.start_all`, the pytest fixtures and ``mocksup up --vllm-port 0`` do.

    Parent-side methods (:meth:`requests`, :meth:`wait_for_requests`, :meth:`clear`,
    :meth:`set_latency`, ...; see :class:`~mocksup.vllm.VLLMQueries`) need a started server
    and call that control API; :class:`~mocksup.vllm.VLLMClient` has the same methods for a
    mock another process runs.
    """

    default_name: ClassVar[str] = "vllm"

    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind; 0 for a free one.")
    vllm_serve_args: list[str] = Field(
        default_factory=list,
        description="A ``vllm serve`` command line read into these settings (settings given "
        "by name win); see :meth:`from_cli_args`.",
    )
    model: str = Field(
        default="mock-model",
        description="``vllm serve MODEL``: the model path, the cards' ``root``, and the name "
        "served when ``served_model_name`` is not set.",
    )
    served_model_name: list[str] | None = Field(
        default=None,
        min_length=1,
        validation_alias=AliasChoices("served_model_name", "served_model_names"),
        description="``--served-model-name``: the names served (``model`` when unset); the "
        "first is the default of requests and the metrics' ``model_name``.",
    )
    max_model_len: int = Field(
        default=4096, ge=2, description="``--max-model-len``: prompt plus output tokens."
    )
    api_key: str | list[str] | None = Field(
        default=None,
        description="``--api-key``: bearer key(s) required under ``/v1``, ``/v2``, "
        "``/inference`` and ``/cohere`` (else ``$VLLM_API_KEY`` in ``env``).",
    )
    seed: int = Field(
        default=0, description="``--seed``: content (unless a request sets its own) and faults."
    )
    output_tokens: tuple[int, int] = Field(
        default=(10, 40), description="Range of the natural length of generated text, in tokens."
    )
    latency: Latency = Field(default=Latency(), description="Simulated timing.")
    faults: Faults = Field(default=Faults(), description="Injected failures.")
    scripts: list[ScriptRule] = Field(default_factory=list, description="Scripted replies.")
    max_num_seqs: int = Field(
        default=256, ge=1, description="``--max-num-seqs``: sequences run at once; more wait."
    )
    max_num_queued_reqs: int | None = Field(
        default=None,
        ge=0,
        description="``--max-num-queued-reqs``: engine requests unfinished (waiting or "
        "running, over every rank) past which a request is refused with 503.",
    )
    max_num_queued_tokens: int | None = Field(
        default=None,
        ge=0,
        description="``--max-num-queued-tokens``: prompt tokens still in prefill at which "
        "requests are refused with 503.",
    )
    otlp_traces_endpoint: str | None = Field(
        default=None,
        description="``--otlp-traces-endpoint``: where ``llm_request`` spans go.",
    )
    otlp_traces_protocol: Literal["grpc", "http/protobuf"] | None = Field(
        default=None,
        description="``grpc`` or ``http/protobuf``; else ``$OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, "
        "else ``grpc``.",
    )
    otel_service_name: str | None = Field(
        default=None,
        description="The spans' ``service.name``; else ``$OTEL_SERVICE_NAME``, else vLLM's "
        "``unknown_service:python``.",
    )
    shutdown_timeout: int = Field(
        default=0,
        ge=0,
        description="``--shutdown-timeout``: seconds a stop gives the requests in flight to "
        "finish, new connections refused meanwhile; 0 cuts them at once (vLLM's abort mode). "
        "``stop_timeout`` follows it unless given (this plus 2 s, at most 600 s); a drain "
        "that a given ``stop_timeout`` cannot fit ends 2 s before it.",
    )
    request_log: bool = Field(default=False, description="Log every request (an access log).")
    journal_viewer: str | None = Field(
        default=None,
        description="A collector's viewer URL (its ``ui`` endpoint): once serving, the mock "
        "asks it to show this mock's request journal.",
    )
    vllm_version: str = Field(
        default=VLLM_VERSION, description="The vLLM version ``/version`` and fingerprints name."
    )
    enable_request_id_headers: bool = Field(
        default=False, description="``--enable-request-id-headers``: X-Request-Id on answers."
    )
    response_role: str = Field(
        default="assistant", description="``--response-role``: the role of replies."
    )
    enable_force_include_usage: bool = Field(
        default=False, description="``--enable-force-include-usage``: usage on every stream."
    )
    enable_prompt_tokens_details: bool = Field(
        default=False,
        description="``--enable-prompt-tokens-details``: ``usage.prompt_tokens_details``.",
    )
    enable_per_request_metrics: bool = Field(
        default=False, description="``--enable-per-request-metrics``: a ``metrics`` object."
    )
    enable_server_load_tracking: bool = Field(
        default=False,
        description="``--enable-server-load-tracking``: ``/load`` counts (0 otherwise).",
    )
    enable_tokenizer_info_endpoint: bool = Field(
        default=False, description="``--enable-tokenizer-info-endpoint``: ``/tokenizer_info``."
    )
    enable_auto_tool_choice: bool = Field(
        default=False, description="``--enable-auto-tool-choice``: ``tool_choice=auto``."
    )
    tool_call_parser: str | None = Field(
        default=None,
        description="``--tool-call-parser``: needed for tool calls, as in vLLM (any name).",
    )
    tool_call_policy: Literal["mention", "always", "never"] = Field(
        default="mention",
        description='Whether ``tool_choice="auto"`` calls a tool: ``mention`` (the tools the '
        "last user message names), ``always`` (unless the last message is a tool result) "
        "or ``never``; a script rule's ``tool_calls`` win.",
    )
    return_tokens_as_token_ids: bool = Field(
        default=False,
        description="``--return-tokens-as-token-ids``: log-prob tokens as ``token_id:N``.",
    )
    root_path: str | None = Field(
        default=None, description="``--root-path``: routes also answer under this prefix."
    )
    max_logprobs: int = Field(
        default=20, ge=-1, description="``--max-logprobs``: the most log-probabilities asked."
    )
    disable_fastapi_docs: bool = Field(
        default=False, description="``--disable-fastapi-docs``: no /docs, /redoc, /openapi.json."
    )
    disable_log_stats: bool = Field(
        default=False, description="``--disable-log-stats``: engine metrics stay at 0."
    )
    enable_prefix_caching: bool = Field(
        default=True, description="``--enable-prefix-caching`` (vLLM's default: on)."
    )
    block_size: int = Field(default=16, ge=1, le=4096, description="``--block-size``, tokens.")
    num_gpu_blocks_override: int | None = Field(
        default=None, ge=1, description="``--num-gpu-blocks-override``: KV-cache blocks (8192)."
    )
    gpu_memory_utilization: float = Field(
        default=0.92, gt=0, le=1, description="``--gpu-memory-utilization`` (reported only)."
    )
    kv_cache_dtype: str = Field(default="auto", description="``--kv-cache-dtype`` (reported).")
    fingerprint_mode: Literal["full", "hash", "custom", "none"] = Field(
        default="full", description="``--fingerprint-mode`` of ``system_fingerprint``."
    )
    fingerprint_value: str | None = Field(
        default=None, description="``--fingerprint-value`` (with ``fingerprint_mode=custom``)."
    )
    enable_lora: bool = Field(
        default=False, description="``--enable-lora``: LoRA adapters can be served."
    )
    lora_modules: list[LoRAModule] | None = Field(
        default=None,
        description="``--lora-modules``: adapters served from the start, each ``name=path``, "
        "a JSON object (``name``, ``path``, ``base_model_name``) or a dict.",
    )
    max_loras: int = Field(
        default=1, ge=1, description="``--max-loras`` (reported in ``vllm:lora_requests_info``)."
    )
    max_lora_rank: int = Field(
        default=16, ge=1, description="``--max-lora-rank``: adapters of a higher rank fail."
    )
    allow_runtime_lora_updating: bool = Field(
        default=False,
        description="``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``: the load and unload routes.",
    )
    data_parallel_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description="``--data-parallel-size``: engine ranks in one server, each with its "
        '``max_num_seqs`` and KV cache, labelled ``engine="0"`` to ``N-1``.',
    )
    server_dev_mode: bool = Field(
        default=False,
        description="``VLLM_SERVER_DEV_MODE=1``: the development routes (``/sleep``, ...).",
    )
    reasoning_parser: str | None = Field(
        default=None,
        description="``--reasoning-parser``: replies carry ``reasoning`` (a name vLLM 0.33 "
        "registers, such as ``qwen3`` or ``deepseek_r1``; ``none`` is unset).",
    )
    default_chat_template_kwargs: dict[str, Any] | None = Field(
        default=None,
        description='``--default-chat-template-kwargs``: ``{"enable_thinking": false}`` '
        "turns thinking off unless a request turns it on.",
    )
    enable_responses_api_store: bool = Field(
        default=False,
        description="``VLLM_ENABLE_RESPONSES_API_STORE=1``: the Responses API keeps responses "
        "(``store``, ``previous_response_id``, ``background``, retrieve and cancel).",
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

    @model_validator(mode="before")
    @classmethod
    def _read_serve_args(cls, data: Any) -> Any:
        # A vLLM command line gives defaults; settings given by name win over it.
        if not isinstance(data, dict) or not data.get("vllm_serve_args"):
            return data
        from mocksup.vllm._cli_args import parse_serve_args

        parsed, ignored = parse_serve_args(data["vllm_serve_args"])
        named = {k for k in data if k != "vllm_serve_args"}
        if "served_model_names" in named:
            named.add("served_model_name")
        if not set(parsed) - named and len(named) > len(parsed):
            return data  # validated again (an assignment): the command line was read already
        if ignored:
            _log.info("vllm serve flags with no effect on the mock, ignored: %s", " ".join(ignored))
        return {**{k: v for k, v in parsed.items() if k not in named}, **data}

    @model_validator(mode="after")
    def _stop_fits_the_drain(self) -> Self:
        # A stop_timeout not given follows shutdown_timeout (on assignment too): the drain,
        # then the span flush and the exit. One given is kept; serve() then shortens a drain
        # it cannot fit. Set past validation, so that it stays "not given".
        if "stop_timeout" not in self.model_fields_set:
            budget = type(self).model_fields["stop_timeout"].default
            if self.shutdown_timeout:
                # Capped before the addition: vLLM takes any int, beyond a float's range too.
                budget = min(self.shutdown_timeout, MAX_STOP_TIMEOUT - _STOP_AFTER_DRAIN)
                budget += _STOP_AFTER_DRAIN
            object.__setattr__(self, "stop_timeout", budget)
        return self

    @field_validator("served_model_name", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("reasoning_parser")
    @classmethod
    def _known_parser(cls, value: str | None) -> str | None:
        # vLLM maps "none" (any case) to unset and refuses a name it has not registered.
        if value is None or value.lower() == "none" or value == "":
            return None
        from mocksup.vllm._generation.reasoning import REASONING_PARSERS

        if value not in REASONING_PARSERS:
            raise ValueError(f"reasoning_parser_name={value!r} has not been registered")
        return value

    @field_validator("lora_modules", mode="before")
    @classmethod
    def _read_lora_modules(cls, value: Any) -> Any:
        from mocksup.vllm._lora import parse_lora_modules

        return None if value is None else parse_lora_modules(value)

    @model_validator(mode="after")
    def _check_lora(self) -> Self:
        # vLLM loads --lora-modules at start-up and fails to start when one cannot load.
        names = [m.name for m in self.lora_modules or []]
        if names and not self.enable_lora:
            raise ValueError("lora_modules need enable_lora (--enable-lora), as in vLLM")
        if len(set(names)) != len(names) or set(names) & set(self.served_names):
            raise ValueError("lora_modules names must be distinct and not served model names")
        return self

    @field_validator("output_tokens")
    @classmethod
    def _check_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError("output_tokens must be (low, high) with 0 <= low <= high")
        return value

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        names = self.served_names
        if len(set(names)) != len(names):
            raise ValueError("served_model_name must be distinct names")
        return self

    @classmethod
    def from_cli_args(cls, args: Sequence[str], **settings: Any) -> Self:
        """A mock configured by a ``vllm serve`` command line, as a test hands real vLLM.

        ``args`` may start with ``vllm serve``; the model is positional or ``--model``.
        Flags the mock implements become settings of the same name (``--max-model-len``
        is ``max_model_len``); the other real vLLM 0.33 flags are accepted, logged and
        ignored; ``settings`` given here win over the command line::

            MockVLLMServer.from_cli_args(["Qwen/Qwen3-0.6B", "--max-model-len", "1024",
                                          "--dtype", "bfloat16"], port=0)

        :raises pydantic.ValidationError: a flag vLLM does not know, or a bad value.
        """
        return cls(vllm_serve_args=list(args), **settings)

    @property
    def served_names(self) -> list[str]:
        """The names served: ``served_model_name``, else ``[model]``."""
        return list(self.served_model_name or [self.model])

    @property
    def served_model_names(self) -> list[str]:
        """The names served (an older spelling of :attr:`served_names`)."""
        return self.served_names

    # -- the child side ------------------------------------------------------------------

    def serve(self, ctx: ServeContext) -> None:
        """Serve until stopped; on stop, export every pending span before returning."""
        from mocksup.serving import bind_tcp, serve_wsgi
        from mocksup.vllm._errors import uvicorn_error_page

        started_ns = time.time_ns()
        app, exporter = self.make_app()
        sock = bind_tcp(self.host, self.port)
        port = sock.getsockname()[1]  # serve_wsgi closes our copy of the socket
        try:
            with serve_wsgi(
                app,
                sock,
                request_log=self.request_log,
                limits=self.http_limits(),
                error_page=uvicorn_error_page,
                drain=max(0.0, min(self.shutdown_timeout, self.stop_timeout - _STOP_AFTER_DRAIN)),
            ):
                if exporter is not None:
                    # Exported before ready, so that a test clearing the collector once the
                    # mocks serve never sees them arrive later (bounded: a collector that
                    # refuses fails it at once, a silent one after one export's timeout).
                    exporter.startup(started_ns, time.time_ns()).wait(_STARTUP_EXPORT_WAIT)
                ctx.ready(port=port)
                if self.journal_viewer:
                    from mocksup.serving import url_host
                    from mocksup.vllm._viewer import announce_journal

                    own = f"http://{url_host(self.client_host)}:{port}"
                    announce_journal(self.journal_viewer, self.name, own)
                ctx.wait()
        finally:
            if exporter is not None:
                exporter.close()

    def http_limits(self) -> HTTPLimits:
        """The HTTP server's limits: :class:`~mocksup.serving.HTTPLimits`' defaults, but
        for the request bodies held at once: 16 at their largest (``max_request_bytes``,
        512 MiB by default). A subclass may return others."""
        from mocksup.serving import HTTPLimits

        return HTTPLimits(max_held=16 * self.max_request_bytes)

    def make_app(self) -> tuple[VLLMApp, SpanExporter | None]:
        """Build the WSGI app (and its span exporter, when tracing is on) from the settings.

        ``serve()`` runs it in the child; tests may drive it in-process. Close the exporter
        when done with it.
        """
        from mocksup.vllm._app import VLLMApp
        from mocksup.vllm._config import server_config
        from mocksup.vllm._runtime import RuntimeState

        exporter = self._exporter()
        config = server_config(self, tracing=exporter is not None)
        state = RuntimeState(
            self.latency, self.faults, self.scripts, self.seed, self.journal_limit,
            max_num_seqs=self.max_num_seqs,
        )  # fmt: skip
        return VLLMApp(config, state, exporter=exporter, settings=self._public_settings(),
                       name=self.name), exporter  # fmt: skip

    def _exporter(self) -> SpanExporter | None:
        if not self.otlp_traces_endpoint:
            return None
        from mocksup.vllm._tracing import SpanExporter

        protocol = self.otlp_traces_protocol or os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"
        )
        return SpanExporter(self.otlp_traces_endpoint, protocol, self.otel_service_name)

    def _public_settings(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "served_model_name": self.served_names,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
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
