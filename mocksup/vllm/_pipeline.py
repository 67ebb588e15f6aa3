"""One generation request from its validated body to the bytes of its answer, for any surface.

A :class:`Surface` says what differs between ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/chat/completions/batch`` (and, later, ``/v1/responses`` and ``/v1/messages``): its
request model, id prefix, body and chunk writer. :class:`Generation` does the rest in stages:
validation as vLLM orders it (the queue limits of :mod:`._queue_limits` among it), admission
(script rule, fault), planning, the per-request timing, then the engine, streamed or whole.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from mocksup.vllm._body import decode_json, validate
from mocksup.vllm._chat import BodyOptions, ChatRequest, hides_reasoning
from mocksup.vllm._checks import check_sampling
from mocksup.vllm._config import ServerConfig
from mocksup.vllm._encoding import dumps
from mocksup.vllm._engine import Engine, Job
from mocksup.vllm._errors import APIError, VLLMValidationError, rule_error
from mocksup.vllm._exchange import JSON, Exchange, Headers
from mocksup.vllm._faults import EARLY, ClientGone, cut_body, fail_early
from mocksup.vllm._ids import random_hex
from mocksup.vllm._lora import Adapters
from mocksup.vllm._orca import orca_header
from mocksup.vllm._pause import PAUSED_MESSAGE, PauseState
from mocksup.vllm._plan import Plan, Settings, plan_request
from mocksup.vllm._queue_limits import QueueLimits
from mocksup.vllm._runtime import Admission, RuntimeState
from mocksup.vllm._sampling import GenerationRequest
from mocksup.vllm._stream import ChunkWriter, StreamSettings
from mocksup.vllm._tracing import TraceContext, parse_traceparent
from mocksup.vllm.settings import FAULT_KINDS, MAX_DELAY, FaultKind

__all__ = ["Generation", "Surface"]

_log = logging.getLogger(__name__)

_SSE: Headers = [("Content-Type", "text/event-stream; charset=utf-8")]
#: Stands in for a jitter generator when there is no jitter (seeding one costs a few µs).
_NO_JITTER = random.Random(0)


@dataclass(frozen=True)
class Surface:
    """What one generation route is: its request model, ids, body and chunks."""

    request_model: type[GenerationRequest]
    id_prefix: str
    #: Engine request ids ``<id><sep><prompt index>``; ``""``: one id for the request.
    per_prompt_ids: str
    #: The non-streamed body: ``(plan, created, options)``.
    body: Callable[[Plan, int, BodyOptions], dict[str, Any]]
    chunks: Callable[..., ChunkWriter] | None
    #: ``X-Request-Id`` names the request (the Responses API ignores the header).
    header_ids: bool = True


class Generation:
    """Serves the generation routes on one engine."""

    def __init__(
        self, config: ServerConfig, state: RuntimeState, engine: Engine, pause: PauseState
    ) -> None:
        self.config = config
        self.state = state
        self.engine = engine
        self.pause = pause
        self.load = 0  # generation requests in flight, for /load (with load tracking)
        #: LoRA adapters served beside the base model names (set by the app).
        self.adapters: Adapters | None = None
        self._load_lock = threading.Lock()
        #: ``--max-num-queued-reqs`` and ``--max-num-queued-tokens``, over every rank.
        self.limits = QueueLimits(
            config.max_num_queued_reqs, config.max_num_queued_tokens, engine.metrics
        )
        self._warned_trace = False
        self._plan_settings = Settings(
            config.max_model_len, config.seed, config.output_tokens, config.role,
            config.tokens_as_token_ids, config.reasoning_parser,
            config.default_chat_template_kwargs, config.tool_call_policy,
        )  # fmt: skip

    def handle(
        self, surface: Surface, exchange: Exchange, request: GenerationRequest | None = None
    ) -> Iterable[bytes]:
        """Answer one request of ``surface`` (``request``: already read from the body, as
        the surfaces that translate another API into a chat request do)."""
        arrival, arrival_ns = time.monotonic(), time.time_ns()
        if request is None:
            data = decode_json(exchange.environ.get("CONTENT_TYPE", ""), exchange.body)
            request = validate(surface.request_model, data, self.config.validation_context)
        model = self.check_model(request.model)
        headers = exchange.request_headers()
        fault = _forced_fault(headers)
        overrides = (_seconds(headers, "x-mocksup-ttft"), _seconds(headers, "x-mocksup-itl"))
        try:
            # vLLM's preflight: the queue limits, after the model and before the prompt.
            self.limits.check(request.choices)
            self._check_tools(request)
            check_sampling(request, self.config.max_logprobs, self.config.max_n_sequences)
            admission = self.state.admit(model, request.match_text(), headers, fault)
            if admission.reply is not None and admission.reply.error_status is not None:
                raise APIError(admission.reply.error_status, admission.reply.error_message)
            if admission.fault is not None and admission.fault in EARLY:
                fail_early(exchange.environ, admission.fault, admission.faults.retry_after)
            header = exchange.environ.get("HTTP_X_REQUEST_ID") if surface.header_ids else None
            suffix = header or request.request_id
            request_id = surface.id_prefix + (suffix or random_hex())
            plan = plan_request(
                request, request_id, self._plan_settings, admission.reply,
                per_prompt_ids=surface.per_prompt_ids,
            )  # fmt: skip
        except VLLMValidationError as error:
            raise rule_error(error) from None
        job = self._job(
            request=request, plan=plan, admission=admission, exchange=exchange,
            arrival=(arrival, arrival_ns), overrides=overrides, model=model,
        )  # fmt: skip
        place = self.limits.enter(job)
        ids = (model, request_id)
        if place is None:
            return self._run(surface, exchange, request, job, ids=ids)
        return place.hold(lambda: self._run(surface, exchange, request, job, ids=ids))

    def check_model(self, model: Any) -> str:
        """The served name a request names (the first when it names none).

        :raises APIError: vLLM's 404 for a name not served.
        """
        if model is None or model == "":
            return self.config.models[0]
        if model in self.config.models:
            return str(model)
        if self.adapters is not None and model in self.adapters:
            return str(model)
        if model not in self.config.models:
            raise APIError(
                404,
                f"The model `{model}` does not exist. Valid aliases: "
                f"{', '.join(self.config.models)}.",
                param="model",
            )
        return str(model)

    def _check_tools(self, request: GenerationRequest) -> None:
        # vLLM parses tool calls only with --tool-call-parser (and "auto" only with
        # --enable-auto-tool-choice too); without one it refuses to promise a call.
        if not isinstance(request, ChatRequest):
            return
        choice = request.tool_choice
        if choice in (None, "none"):
            return
        config = self.config
        if config.tool_call_parser is None:
            if choice == "auto" and not config.auto_tool_choice:
                raise APIError(
                    400,
                    '"auto" tool choice requires --enable-auto-tool-choice and '
                    "--tool-call-parser to be set",
                )
            if choice != "auto":
                name = (
                    f'function "{choice["function"]["name"]}"'
                    if isinstance(choice, dict)
                    else f'"{choice}"'
                )
                raise APIError(400, f"tool_choice={name} requires --tool-call-parser to be set")
        if choice == "auto" and not config.auto_tool_choice:
            request.tool_choice = "none"  # parsed as plain content, as vLLM does

    def _job(
        self,
        *,
        request: GenerationRequest,
        plan: Plan,
        admission: Admission,
        exchange: Exchange,
        arrival: tuple[float, int],
        overrides: tuple[float | None, float | None],
        model: str = "",
    ) -> Job:
        latency = admission.latency
        ttft, itl = overrides
        return Job(
            plan=plan,
            writer=None,
            arrival=arrival[0],
            arrival_ns=arrival[1],
            ttft=latency.ttft if ttft is None else ttft,
            itl=latency.itl if itl is None else itl,
            jitter=latency.jitter,
            rng=self.state.jitter_rng(f"{admission.call}")
            if latency.jitter or latency.ttft_stddev or latency.itl_stddev
            else _NO_JITTER,
            prefill_per_token=latency.prefill_per_token,
            ttft_stddev=latency.ttft_stddev,
            itl_stddev=latency.itl_stddev,
            load_factor=latency.load_factor,
            fault=admission.fault,
            faults=admission.faults,
            parent=self._parent(exchange.environ),
            n=request.choices,
            temperature=request.temperature,
            top_p=request.top_p,
            wait=exchange.environ.get("mocksup.wait_disconnect"),
            lora=None if model in self.config.models or self.adapters is None else model,
        )

    def _parent(self, environ: dict[str, Any]) -> TraceContext | None:
        if self.config.tracing:
            return parse_traceparent(
                environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE")
            )
        if "HTTP_TRACEPARENT" in environ and not self._warned_trace:
            self._warned_trace = True
            _log.warning("Received a request with trace context but tracing is disabled")
        return None

    def _run(
        self,
        surface: Surface,
        exchange: Exchange,
        request: GenerationRequest,
        job: Job,
        *,
        ids: tuple[str, str],
    ) -> Iterable[bytes]:
        model, request_id = ids
        created = int(time.time())
        config = self.config
        if request.stream and surface.chunks is not None:
            job.writer = surface.chunks(
                job.plan, request_id, created, model, self._stream_settings(request)
            )
            job.include_usage = job.writer.settings.include_usage
            exchange.respond(200, _SSE)
            if self.pause.rejects_new():
                return [job.writer.error_chunk(_paused_chunk()), job.writer.end]
            return self._streamed(exchange, job)
        if self.pause.rejects_new():
            raise APIError(503, PAUSED_MESSAGE, type="ServiceUnavailableError")
        with self._in_flight():
            try:
                self.engine.run_blocking(job)
            except ClientGone:
                exchange.disconnected = True
                raise
        options = BodyOptions(
            request, request_id, model, role=_reply_role(request, config.role),
            fingerprint=config.fingerprint, prompt_details=config.prompt_tokens_details,
            metrics=config.per_request_metrics,
        )  # fmt: skip
        options.reasoning = config.reasoning_parser is not None
        payload = dumps(surface.body(job.plan, created, options))
        orca = orca_header(
            exchange.environ.get("HTTP_ENDPOINT_LOAD_METRICS_FORMAT", ""), self.engine.metrics
        )
        if job.fault == "stream_cut":
            exchange.respond(200, [*JSON, ("Content-Length", str(len(payload))), *orca])
            return cut_body(payload)
        exchange.respond(200, [*JSON, *orca])
        return [payload]

    def _stream_settings(self, request: GenerationRequest) -> StreamSettings:
        config = self.config
        options = request.stream_options
        if config.force_include_usage:
            include, continuous = True, True
        elif options:
            include = bool(options.include_usage)
            continuous = include and bool(options.continuous_usage_stats)
        else:
            include = continuous = False
        return StreamSettings(
            role=_reply_role(request, config.role),
            include_usage=include,
            continuous_usage=continuous,
            fingerprint=config.fingerprint,
            return_token_ids=bool(request.return_token_ids),
            prompt_details=config.prompt_tokens_details,
            request_metrics=config.per_request_metrics,
            reasoning=config.reasoning_parser is not None,
            hide_reasoning=hides_reasoning(request, config.reasoning_parser is not None),
        )

    def _streamed(self, exchange: Exchange, job: Job) -> Iterator[bytes]:
        with self._in_flight():
            try:
                opening = job.writer.opening() if job.writer is not None else b""
                if opening:
                    yield opening
                yield from self.engine.stream(job)
            except ClientGone:
                exchange.disconnected = True
                raise

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        if not self.config.server_load_tracking:
            yield
            return
        with self._load_lock:
            self.load += 1
        try:
            yield
        finally:
            with self._load_lock:
                self.load -= 1


def _reply_role(request: GenerationRequest, response_role: str) -> str:
    # Chat surfaces answer as --response-role, or as the last message without a generation
    # prompt; completions have no role.
    reply_role = getattr(request, "reply_role", None)
    return str(reply_role(response_role)) if reply_role is not None else response_role


def _paused_chunk() -> dict[str, Any]:
    # A stream rejected by a paused engine: vLLM's stream generator reports the engine's
    # retryable error in an error frame, typed as an internal error, with its 503 code.
    return {"error": {"message": PAUSED_MESSAGE, "type": "InternalServerError", "param": None,
                      "code": 503}}  # fmt: skip


def _forced_fault(headers: dict[str, str]) -> FaultKind | None:
    forced = headers.get("x-mocksup-fault")
    if forced is not None and forced not in FAULT_KINDS:
        raise APIError(400, f"X-Mocksup-Fault must be one of {sorted(FAULT_KINDS)}")
    return cast("FaultKind | None", forced)


def _seconds(headers: dict[str, str], name: str) -> float | None:
    # Per-request latency overrides: finite, non-negative, within the settings' bound.
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise APIError(400, f"{name}: {raw!r} is not a number of seconds.") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_DELAY:
        raise APIError(400, f"{name}: {raw!r} must be a number of seconds in [0, {MAX_DELAY}].")
    return value
