"""The WSGI application: vLLM's routes, its auth and error rules, and the request journal.

Plain WSGI on ``environ`` (no request/response objects) keeps the per-request cost low.
Generation requests go through :mod:`~mocksup.vllm.engine`; the control API under
``/mocksup`` is in :mod:`~mocksup.vllm.control`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mocksup._control import PREFIX
from mocksup.serving import request_headers, status_line
from mocksup.vllm import utility
from mocksup.vllm.engine import Engine, Job
from mocksup.vllm.generate import last_user_text, plan_request
from mocksup.vllm.http_metrics import HTTPMetrics
from mocksup.vllm.metrics import Metrics
from mocksup.vllm.plumbing import Cut, Journaled, cut_body
from mocksup.vllm.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    json_object,
    parse_request,
)
from mocksup.vllm.settings import FaultKind
from mocksup.vllm.state import RuntimeState
from mocksup.vllm.tracing import SpanExporter, parse_traceparent
from mocksup.vllm.wire import ChunkWriter, chat_body, completion_body, dumps

__all__ = ["AppConfig", "VLLMApp"]

_log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]

_JSON = [("Content-Type", "application/json")]
_SSE = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: vLLM's auth middleware leaves these open (and OPTIONS everywhere).
_OPEN_PATHS = frozenset({"/health", "/ping", "/load", "/version", "/metrics"})
#: Stands in for a jitter generator when there is no jitter (seeding one costs a few µs).
_NO_JITTER = random.Random(0)
_FAULT_KINDS = frozenset(
    {"rate_limit", "unavailable", "server_error", "stream_error", "stream_cut", "reset"}
)


class AppConfig:
    """The fixed settings the app needs (copied from the server model in the child)."""

    def __init__(self, **values: Any) -> None:
        self.models: list[str] = values["models"]
        self.max_model_len: int = values["max_model_len"]
        self.api_keys: list[str] = values["api_keys"]
        self.seed: int = values["seed"]
        self.output_tokens: tuple[int, int] = values["output_tokens"]
        self.version: str = values["version"]
        self.request_id_headers: bool = values["request_id_headers"]
        self.role: str = values["role"]
        self.max_request_bytes: int = values["max_request_bytes"]
        self.embedding_dim: int = values["embedding_dim"]
        self.tracing: bool = values["tracing"]


class VLLMApp:
    """The WSGI callable of the mock."""

    def __init__(
        self,
        config: AppConfig,
        state: RuntimeState,
        *,
        metrics: Metrics,
        http_metrics: HTTPMetrics,
        exporter: SpanExporter | None,
        control: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
    ) -> None:
        self.config = config
        self.state = state
        self.metrics = metrics
        self.http_metrics = http_metrics
        self.engine = Engine(state.slots, metrics, exporter)
        self._control = control
        self._key_digests = [hashlib.sha256(k.encode()).digest() for k in config.api_keys]
        self._load = 0
        self._load_lock = threading.Lock()
        self._warned_trace = False
        created = int(time.time())
        self._models_body = dumps(
            {
                "object": "list",
                "data": [
                    utility.model_card(m, config.models[0], config.max_model_len, created)
                    for m in config.models
                ],
            }
        )
        self._routes: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
            "/v1/chat/completions": (("POST",), self._chat),
            "/v1/completions": (("POST",), self._completions),
            "/v1/models": (("GET",), self._models),
            "/v1/embeddings": (("POST",), self._embeddings),
            "/health": (("GET",), self._health),
            "/ping": (("GET", "POST"), self._health),
            "/load": (("GET",), self._server_load),
            "/version": (("GET",), self._version),
            "/metrics": (("GET",), self._metrics),
            "/tokenize": (("POST",), self._tokenize),
            "/detokenize": (("POST",), self._detokenize),
        }

    # -- entry -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO") or "/"
        if path.startswith(PREFIX):
            return self._control(environ, start_response)
        started = time.monotonic()
        wall = time.time()
        method: str = environ["REQUEST_METHOD"]
        box: dict[str, Any] = {"status": 500, "headers": _JSON, "body": b""}

        def journal(first_byte: float | None, sent: int) -> None:
            end = time.monotonic()
            body: bytes = box["body"]
            self.http_metrics.observe(
                method,
                path if path in self._routes else "none",
                box["status"],
                end - started,
                size_in=len(body),
                size_out=sent,
            )
            self.state.journal.add(
                {
                    "method": method,
                    "path": path,
                    "query": environ.get("QUERY_STRING", ""),
                    "headers": environ.get("mocksup.headers") or request_headers(environ),
                    # Raw bytes: decoded only when someone reads the journal.
                    "body": body,
                    "status": box["status"],
                    "start": wall,
                    "first_byte": (first_byte or end) - started,
                    "duration": end - started,
                }
            )

        def respond(status: int, headers: Headers) -> None:
            # Only noted here: start_response is called once the body is known, so a whole
            # body gets its Content-Length (as FastAPI's JSONResponse sends it).
            box["status"], box["headers"] = status, headers

        try:
            result = self._dispatch(environ, method, path, box, respond)
        except APIError as error:
            respond(error.status, [*_JSON, *error.headers])
            result = [dumps(error.body())]
        except Cut:
            box["status"] = None
            journal(None, 0)
            raise
        except Exception:
            # A bug of the mock: answer as vLLM answers an engine error, and keep serving.
            _log.exception("%s %s failed", method, path)
            respond(500, _JSON)
            result = [dumps(APIError(500, "Internal server error.").body())]
        status: int = box["status"]
        headers: Headers = box["headers"]
        if isinstance(result, list):
            size = sum(map(len, result))
            start_response(status_line(status), [*headers, ("Content-Length", str(size))])
            journal(None, size)
            return result
        start_response(status_line(status), headers)
        return Journaled(result, journal)

    def _dispatch(
        self,
        environ: dict[str, Any],
        method: str,
        path: str,
        box: dict[str, Any],
        respond: Callable[[int, Headers], None],
    ) -> Iterable[bytes]:
        guarded = self._key_digests and path not in _OPEN_PATHS and method != "OPTIONS"
        if guarded and not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            respond(401, _JSON)
            return [b'{"error":"Unauthorized"}']
        route = self._routes.get(path)
        if route is None:
            respond(404, _JSON)
            return [b'{"detail":"Not Found"}']
        methods, handler = route
        if method not in methods:
            respond(405, [*_JSON, ("Allow", ", ".join(methods))])
            return [b'{"detail":"Method Not Allowed"}']
        if method == "POST":
            box["body"] = self._read_body(environ)
        result: Iterable[bytes] = handler(environ, box["body"], respond)
        return result

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(token.strip().encode()).digest()
        # Constant-time and over every key, as vLLM's middleware compares them.
        return any([hmac.compare_digest(digest, d) for d in self._key_digests])

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise APIError(400, "Invalid Content-Length header.") from None
        if length > self.config.max_request_bytes:
            raise APIError(
                413,
                f"Request body of {length} bytes exceeds the limit of "
                f"{self.config.max_request_bytes} bytes.",
            )
        stream = environ["wsgi.input"]
        if length:
            data: bytes = stream.read(length)
            return data
        if environ.get("wsgi.input_terminated"):
            data = stream.read(self.config.max_request_bytes + 1)
            if len(data) > self.config.max_request_bytes:
                raise APIError(413, "Request body exceeds the size limit.")
            return data
        return b""

    # -- utility routes ----------------------------------------------------------------------

    def _health(self, environ: dict[str, Any], body: bytes, respond: Any) -> list[bytes]:
        respond(200, [])
        return [b""]

    def _server_load(self, environ: dict[str, Any], body: bytes, respond: Any) -> list[bytes]:
        respond(200, _JSON)
        return [dumps({"server_load": self._load})]

    def _version(self, environ: dict[str, Any], body: bytes, respond: Any) -> list[bytes]:
        respond(200, _JSON)
        return [dumps({"version": self.config.version})]

    def _metrics(self, environ: dict[str, Any], body: bytes, respond: Any) -> list[bytes]:
        respond(200, [("Content-Type", _METRICS_TYPE)])
        return [self.metrics.render() + self.http_metrics.render().encode()]

    def _models(self, environ: dict[str, Any], body: bytes, respond: Any) -> list[bytes]:
        respond(200, _JSON)
        return [self._models_body]

    def _check_model(self, model: Any) -> str:
        if model is None:
            return self.config.models[0]
        if model not in self.config.models:
            raise APIError(404, f"The model `{model}` does not exist.", param="model")
        return str(model)

    def _json(self, environ: dict[str, Any], body: bytes) -> dict[str, Any]:
        return json_object(environ.get("CONTENT_TYPE", ""), body)

    def _tokenize(self, environ: dict[str, Any], body: bytes, respond: Any) -> list[bytes]:
        data = self._json(environ, body)
        self._check_model(data.get("model"))
        result = utility.tokenize(data, self.config.max_model_len)
        respond(200, _JSON)
        return [dumps(result)]

    def _detokenize(self, environ: dict[str, Any], body: bytes, respond: Any) -> list[bytes]:
        data = self._json(environ, body)
        self._check_model(data.get("model"))
        result = utility.detokenize(data)
        respond(200, _JSON)
        return [dumps(result)]

    def _embeddings(self, environ: dict[str, Any], body: bytes, respond: Any) -> list[bytes]:
        data = self._json(environ, body)
        model = self._check_model(data.get("model"))
        result = utility.embeddings(data, model, self.config.embedding_dim)
        respond(200, _JSON)
        return [dumps(result)]

    # -- generation --------------------------------------------------------------------------

    def _chat(self, environ: dict[str, Any], body: bytes, respond: Any) -> Iterable[bytes]:
        request = parse_request(ChatRequest, body, environ.get("CONTENT_TYPE", ""))
        return self._generate(
            environ, request, "chatcmpl-", last_user_text(request.messages), respond
        )

    def _completions(self, environ: dict[str, Any], body: bytes, respond: Any) -> Iterable[bytes]:
        request = parse_request(CompletionRequest, body, environ.get("CONTENT_TYPE", ""))
        prompt = request.prompt
        text = (
            prompt
            if isinstance(prompt, str)
            else " ".join(p for p in prompt or [] if isinstance(p, str))
        )
        return self._generate(environ, request, "cmpl-", text, respond)

    def _generate(
        self,
        environ: dict[str, Any],
        request: ChatRequest | CompletionRequest,
        prefix: str,
        text: str,
        respond: Callable[[int, Headers], None],
    ) -> Iterable[bytes]:
        arrival = time.monotonic()
        arrival_ns = time.time_ns()
        model = self._check_model(request.model)
        header_id = environ.get("HTTP_X_REQUEST_ID")
        request_id = prefix + (header_id or utility.random_hex())
        headers = environ["mocksup.headers"] = request_headers(environ)
        forced = headers.get("x-mocksup-fault")
        if forced is not None and forced not in _FAULT_KINDS:
            raise APIError(400, f"X-Mocksup-Fault must be one of {sorted(_FAULT_KINDS)}")
        call, reply, fault, faults, latency = self.state.admit(model, text, headers, forced)
        if reply is not None and reply.error_status is not None:
            raise APIError(reply.error_status, reply.error_message)
        if fault in ("rate_limit", "unavailable", "server_error", "reset"):
            self._fail_early(environ, fault, faults.retry_after)
        plan = plan_request(
            request,
            request_id=request_id,
            served_model=model,
            max_model_len=self.config.max_model_len,
            seed=self.config.seed,
            length_range=self.config.output_tokens,
            reply=reply,
        )
        parent = None
        if self.config.tracing:
            parent = parse_traceparent(
                environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE")
            )
        elif "HTTP_TRACEPARENT" in environ and not self._warned_trace:
            self._warned_trace = True
            _log.warning("Received a request with trace context but tracing is disabled")
        created = int(time.time())
        is_chat = isinstance(request, ChatRequest)
        writer = None
        options = request.stream_options
        if request.stream:
            writer = ChunkWriter(
                plan,
                request_id,
                created,
                model,
                chat=is_chat,
                continuous_usage=bool(
                    options and options.include_usage and options.continuous_usage_stats
                ),
                role=self.config.role,
            )
        job = Job(
            plan=plan,
            writer=writer,
            body=b"",
            arrival=arrival,
            arrival_ns=arrival_ns,
            ttft=_seconds(headers.get("x-mocksup-ttft"), latency.ttft),
            itl=_seconds(headers.get("x-mocksup-itl"), latency.itl),
            jitter=latency.jitter,
            rng=self.state.jitter_rng(f"{call}") if latency.jitter else _NO_JITTER,
            fault=fault,
            faults=faults,
            parent=parent,
            sampling={"temperature": request.temperature, "top_p": request.top_p, "n": request.n},
            include_usage=bool(options and options.include_usage),
        )
        extra: Headers = (
            [("X-Request-Id", header_id)] if header_id and self.config.request_id_headers else []
        )
        if writer is not None:
            respond(200, [*_SSE, *extra])
            return self._counted(self.engine.stream(job))
        with self._in_flight():
            self.engine.run_blocking(job)
        if is_chat:
            payload = dumps(chat_body(plan, request_id, created, model, self.config.role))
        else:
            payload = dumps(completion_body(plan, request_id, created, model))
        if fault == "stream_cut":
            respond(200, [*_JSON, ("Content-Length", str(len(payload))), *extra])
            return cut_body(payload)
        respond(200, [*_JSON, *extra])
        return [payload]

    def _fail_early(self, environ: dict[str, Any], fault: FaultKind, retry_after: int) -> None:
        if fault == "reset":
            raise Cut("connection reset (injected fault)", reset=True)
        if fault == "server_error":
            raise APIError(500, "Internal server error (injected fault).")
        status = 429 if fault == "rate_limit" else 503
        message = (
            "Too many requests (injected fault)." if status == 429
            else "The server is temporarily unavailable (injected fault)."
        )  # fmt: skip
        raise APIError(status, message, headers=[("Retry-After", str(retry_after))])

    def _in_flight(self) -> _LoadCounter:
        return _LoadCounter(self)

    def _counted(self, inner: Iterator[bytes]) -> Iterator[bytes]:
        with self._in_flight():
            yield from inner


class _LoadCounter:
    __slots__ = ("app",)

    def __init__(self, app: VLLMApp) -> None:
        self.app = app

    def __enter__(self) -> None:
        with self.app._load_lock:
            self.app._load += 1

    def __exit__(self, *exc: object) -> None:
        with self.app._load_lock:
            self.app._load -= 1


def _seconds(header: str | None, default: float) -> float:
    if header is None:
        return default
    try:
        value = float(header)
    except ValueError:
        raise APIError(400, f"Latency override {header!r} is not a number of seconds.") from None
    if value < 0:
        raise APIError(400, "Latency overrides must not be negative.")
    return value
