"""One generation request from its validated body to the bytes of its answer, for any surface.

A :class:`Surface` says what differs between ``/v1/chat/completions`` and ``/v1/completions``
(and, later, ``/v1/responses`` and ``/v1/messages``): its request model, id prefix, body and
chunk writer. :class:`Generation` does the rest in stages: admission (script rule, fault),
planning, the per-request timing, then the engine, streamed or whole.
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
from mocksup.vllm._encoding import dumps
from mocksup.vllm._engine import Engine, Job
from mocksup.vllm._errors import APIError, VLLMValidationError, rule_error
from mocksup.vllm._exchange import JSON, Exchange, Headers
from mocksup.vllm._faults import EARLY, cut_body, fail_early
from mocksup.vllm._ids import random_hex
from mocksup.vllm._plan import Plan, Settings, plan_request
from mocksup.vllm._runtime import Admission, RuntimeState
from mocksup.vllm._sampling import GenerationRequest
from mocksup.vllm._stream import ChunkWriter
from mocksup.vllm._tracing import TraceContext, parse_traceparent
from mocksup.vllm.settings import FAULT_KINDS, MAX_DELAY, FaultKind

__all__ = ["Generation", "ServerConfig", "Surface"]

_log = logging.getLogger(__name__)

_SSE: Headers = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
]
#: Stands in for a jitter generator when there is no jitter (seeding one costs a few µs).
_NO_JITTER = random.Random(0)


@dataclass(frozen=True)
class ServerConfig:
    """The fixed settings the app needs (copied from the server model in the child)."""

    models: list[str]
    max_model_len: int
    api_keys: list[str]
    seed: int
    output_tokens: tuple[int, int]
    version: str
    request_id_headers: bool
    role: str
    max_request_bytes: int
    embedding_dim: int
    tracing: bool
    journal_credentials: bool


@dataclass(frozen=True)
class Surface:
    """What one generation route is: its request model, ids, body and chunks."""

    request_model: type[GenerationRequest]
    id_prefix: str
    #: Engine request ids ``<id>-<prompt index>`` (completions) rather than ``<id>``.
    per_prompt_ids: bool
    #: The non-streamed body: ``(plan, request_id, created, model, role)``.
    body: Callable[[Plan, str, int, str, str], dict[str, Any]]
    chunks: type[ChunkWriter]


class Generation:
    """Serves the generation routes on one engine."""

    def __init__(self, config: ServerConfig, state: RuntimeState, engine: Engine) -> None:
        self.config = config
        self.state = state
        self.engine = engine
        self.load = 0  # generation requests in flight, for /load
        self._load_lock = threading.Lock()
        self._warned_trace = False
        self._plan_settings = Settings(config.max_model_len, config.seed, config.output_tokens)

    def handle(self, surface: Surface, exchange: Exchange) -> Iterable[bytes]:
        """Answer one request of ``surface``."""
        arrival, arrival_ns = time.monotonic(), time.time_ns()
        data = decode_json(exchange.environ.get("CONTENT_TYPE", ""), exchange.body)
        request = validate(surface.request_model, data)
        model = self.check_model(request.model)
        headers = exchange.request_headers()
        forced = headers.get("x-mocksup-fault")
        if forced is not None and forced not in FAULT_KINDS:
            raise APIError(400, f"X-Mocksup-Fault must be one of {sorted(FAULT_KINDS)}")
        fault = cast("FaultKind | None", forced)
        ttft = _seconds(headers, "x-mocksup-ttft")
        itl = _seconds(headers, "x-mocksup-itl")
        try:
            request.check_sampling()
            admission = self.state.admit(model, request.match_text(), headers, fault)
            if admission.reply is not None and admission.reply.error_status is not None:
                raise APIError(admission.reply.error_status, admission.reply.error_message)
            if admission.fault is not None and admission.fault in EARLY:
                fail_early(exchange.environ, admission.fault, admission.faults.retry_after)
            header_id = exchange.environ.get("HTTP_X_REQUEST_ID")
            request_id = surface.id_prefix + (header_id or random_hex())
            plan = plan_request(
                request, request_id, self._plan_settings, admission.reply,
                per_prompt_ids=surface.per_prompt_ids,
            )  # fmt: skip
        except VLLMValidationError as error:
            raise rule_error(error) from None
        job = self._job(
            request=request, plan=plan, admission=admission, exchange=exchange,
            arrival=(arrival, arrival_ns), overrides=(ttft, itl),
        )  # fmt: skip
        return self._run(surface, exchange, request, job, ids=(model, request_id, header_id))

    def check_model(self, model: Any) -> str:
        """The served name a request names (the first when it names none).

        :raises APIError: vLLM's 404 for a name not served.
        """
        if model is None:
            return self.config.models[0]
        if model not in self.config.models:
            raise APIError(404, f"The model `{model}` does not exist.", param="model")
        return str(model)

    def _job(
        self,
        *,
        request: GenerationRequest,
        plan: Plan,
        admission: Admission,
        exchange: Exchange,
        arrival: tuple[float, int],
        overrides: tuple[float | None, float | None],
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
            rng=self.state.jitter_rng(f"{admission.call}") if latency.jitter else _NO_JITTER,
            fault=admission.fault,
            faults=admission.faults,
            parent=self._parent(exchange.environ),
            n=request.choices,
            temperature=request.temperature,
            top_p=request.top_p,
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
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
        ids: tuple[str, str, str | None],
    ) -> Iterable[bytes]:
        model, request_id, header_id = ids
        created = int(time.time())
        echo: Headers = (
            [("X-Request-Id", header_id)] if header_id and self.config.request_id_headers else []
        )
        if request.stream:
            options = request.stream_options
            job.writer = surface.chunks(
                job.plan, request_id, created, model, role=self.config.role,
                continuous_usage=bool(
                    options and options.include_usage and options.continuous_usage_stats
                ),
            )  # fmt: skip
            exchange.respond(200, [*_SSE, *echo])
            return self._counted(self.engine.stream(job))
        with self._in_flight():
            self.engine.run_blocking(job)
        payload = dumps(surface.body(job.plan, request_id, created, model, self.config.role))
        if job.fault == "stream_cut":
            exchange.respond(200, [*JSON, ("Content-Length", str(len(payload))), *echo])
            return cut_body(payload)
        exchange.respond(200, [*JSON, *echo])
        return [payload]

    def _counted(self, inner: Iterator[bytes]) -> Iterator[bytes]:
        with self._in_flight():
            yield from inner

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        with self._load_lock:
            self.load += 1
        try:
            yield
        finally:
            with self._load_lock:
                self.load -= 1


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
