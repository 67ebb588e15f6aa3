"""The WSGI application: vLLM's routes, its middleware rules, and the request journal.

Plain WSGI on ``environ`` (no request/response objects) keeps the per-request cost low. Each
route is a handler taking an :class:`~._exchange.Exchange`; generation routes go through
:mod:`._pipeline` (one per surface, sharing one engine; the Responses and Messages APIs in
:mod:`._responses_routes` and :mod:`._messages_routes`), the utility routes are
:mod:`._utility_routes`, the development ones (``VLLM_SERVER_DEV_MODE``)
:mod:`._dev_routes`, and the control API under ``/mocksup`` is :mod:`._control_routes`.
What vLLM's middleware does for every route happens here: ``--root-path`` (routes answer
with and without it), the API key (only under ``/v1``, ``/v2``, ``/inference`` and
``/cohere``), ``X-Request-Id`` on every answer (``--enable-request-id-headers``), and the
HTTP metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from mocksup.control import PREFIX
from mocksup.serving import status_line
from mocksup.vllm._chat import ChatChunks, ChatRequest, chat_body
from mocksup.vllm._completions import CompletionChunks, CompletionRequest, completion_body
from mocksup.vllm._config import ServerConfig
from mocksup.vllm._control_routes import control_app
from mocksup.vllm._dev_routes import DevRoutes
from mocksup.vllm._encoding import dumps
from mocksup.vllm._engine import Engine
from mocksup.vllm._engine_metrics import EngineMetrics
from mocksup.vllm._errors import APIError, VLLMValidationError, rule_error
from mocksup.vllm._exchange import JSON, Exchange, Journaled, StartResponse
from mocksup.vllm._faults import Cut
from mocksup.vllm._http_metrics import HTTPMetrics
from mocksup.vllm._ids import uuid4_hex
from mocksup.vllm._journal import redact
from mocksup.vllm._lora import Adapters
from mocksup.vllm._lora_routes import LoRARoutes
from mocksup.vllm._messages_routes import MessagesRoutes
from mocksup.vllm._pause import PauseState
from mocksup.vllm._pipeline import Generation, Surface
from mocksup.vllm._prefix_cache import PrefixCache
from mocksup.vllm._response_store import ResponseStore
from mocksup.vllm._responses_routes import ResponsesRoutes
from mocksup.vllm._runtime import RuntimeState
from mocksup.vllm._slots import Slots
from mocksup.vllm._tracing import SpanExporter
from mocksup.vllm._utility_routes import UtilityRoutes

__all__ = ["VLLMApp"]

_log = logging.getLogger(__name__)

Handler = Callable[[Exchange], Iterable[bytes]]

#: vLLM's auth middleware guards paths starting with these (and never OPTIONS).
_GUARDED = ("/v1", "/v2", "/inference", "/cohere")
#: ``/v1/responses/{response_id}`` and ``.../cancel`` (FastAPI's path parameter: a segment).
_RESPONSE_PATH = re.compile(r"^/v1/responses/([^/]+)(/cancel)?$")
#: Exceptions vLLM's fallback handlers answer 400 with their text.
_CLIENT_ERRORS = (ValueError, TypeError, OverflowError)

CHAT = Surface(ChatRequest, "chatcmpl-", "", chat_body, ChatChunks)
COMPLETIONS = Surface(CompletionRequest, "cmpl-", "-", completion_body, CompletionChunks)


def _adapters(config: ServerConfig) -> Adapters:
    # --lora-modules load at start, as vLLM's init_static_loras (a failure stops the start).
    adapters = Adapters(config.models, max_lora_rank=config.max_lora_rank,
                        max_loras=config.max_loras, enabled=config.enable_lora)  # fmt: skip
    for module in config.lora_modules:
        adapters.load(module)
    return adapters


class VLLMApp(UtilityRoutes, DevRoutes, ResponsesRoutes, MessagesRoutes, LoRARoutes):
    """The WSGI callable of the mock.

    :param settings: the settings ``GET /mocksup/config`` shows.
    :param name: the mock's name, in ``GET /mocksup/health``.
    """

    def __init__(
        self,
        config: ServerConfig,
        state: RuntimeState,
        *,
        exporter: SpanExporter | None,
        settings: dict[str, Any],
        name: str = "vllm",
    ) -> None:
        self.config = config
        self.state = state
        self.metrics = EngineMetrics(config)
        self.http_metrics = HTTPMetrics()
        cache = PrefixCache(config.block_size, config.gpu_blocks, enabled=config.prefix_caching)
        self.engine = Engine(state.slots, self.metrics, exporter, cache)
        self.pause = PauseState(self.engine)
        self.generation = Generation(config, state, self.engine, self.pause)
        self.adapters = _adapters(config)
        self.generation.adapters = self.engine.adapters = self.adapters
        for rank in range(1, config.data_parallel_size):
            self.engine.add_rank(Engine(
                Slots(state.slots.limit), EngineMetrics(config, rank), exporter,
                PrefixCache(config.block_size, config.gpu_blocks, enabled=config.prefix_caching),
            ))  # fmt: skip
        if config.enable_lora:
            self.metrics.adapters = self.adapters
        self._control = control_app(state, settings, self._reset_metrics, self._live, name=name)
        self._key_digests = [hashlib.sha256(k.encode()).digest() for k in config.api_keys]
        self.responses = ResponseStore()
        self._routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/v1/chat/completions": (("POST",), self._chat),
            "/v1/completions": (("POST",), self._completions),
            **self.responses_routes(),
            **self.messages_routes(),
            **self.utility_routes(),
            **self.lora_routes(),
        }
        if config.dev_mode:
            self._routes.update(self.dev_routes())

    def _reset_metrics(self) -> None:
        self.metrics.reset()
        self.http_metrics.reset()

    def _live(self) -> dict[str, int]:
        running, waiting = self.metrics.in_flight
        return {"running": running, "waiting": waiting}

    # -- entry -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = self._route_of(environ.get("PATH_INFO") or "/", environ)
        if route.startswith(PREFIX):
            return self._control({**environ, "PATH_INFO": route}, start_response)
        exchange = Exchange(environ)
        exchange.route = route
        try:
            result = self._dispatch(exchange)
        except Cut:
            exchange.status = None
            self._record(exchange, None, 0)
            raise
        except Exception as error:
            result = self._error_answer(exchange, error)
        if self.config.request_id_headers:
            incoming = environ.get("HTTP_X_REQUEST_ID")
            exchange.headers = [*exchange.headers, ("X-Request-Id", incoming or uuid4_hex())]
        if isinstance(result, list):
            size = sum(map(len, result))
            start_response(
                status_line(exchange.status or 500),
                [*exchange.headers, ("Content-Length", str(size))],
            )
            self._record(exchange, None, size)
            return result
        start_response(status_line(exchange.status or 500), exchange.headers)
        return Journaled(result, exchange, self._record)

    def _route_of(self, path: str, environ: dict[str, Any]) -> str:
        # --root-path: the routes answer under the prefix as well as without it.
        root = self.config.root_path
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root) :] or "/"
        # A path with a parameter is known by its template (the handler label vLLM's HTTP
        # metrics use); the parameter goes to the handler through the environ.
        found = _RESPONSE_PATH.match(path) if path.startswith("/v1/responses/") else None
        if found is not None:
            environ["mocksup.path_params"] = {"response_id": found[1]}
            return "/v1/responses/{response_id}" + (found[2] or "")
        return path

    def _error_answer(self, exchange: Exchange, error: Exception) -> list[bytes]:
        if isinstance(error, VLLMValidationError):
            error = rule_error(error)
        elif not isinstance(error, APIError) and isinstance(error, _CLIENT_ERRORS):
            # vLLM answers a ValueError/TypeError/OverflowError from its handlers as a client
            # error with the exception's text (a prompt that is not valid Unicode, say).
            _log.debug("%s %s: %s", exchange.method, exchange.path, error)
            error = APIError(400, str(error))
        elif not isinstance(error, APIError):
            # A bug of the mock: answer as vLLM answers an engine error, and keep serving.
            _log.error("%s %s failed", exchange.method, exchange.path, exc_info=error)
            error = APIError(500, "Internal server error.")
        exchange.respond(error.status, [*JSON, *error.headers])
        return [dumps(error.body())]

    def _record(self, exchange: Exchange, first_byte: float | None, sent: int) -> None:
        end = time.monotonic()
        handler = exchange.route if exchange.route in self._routes else "none"
        # A request whose client left is answered, unheard, with an empty 200 by vLLM's
        # cancellation wrapper: the HTTP metrics count that.
        status = 200 if exchange.disconnected else exchange.status
        self.http_metrics.observe(
            exchange.method,
            handler,
            status,
            end - exchange.started,
            size_in=_declared_length(exchange.environ),
            size_out=sent,
        )
        entry = exchange.entry(first_byte, end)
        entry["headers"] = redact(entry["headers"], self.config.journal_credentials)
        self.state.journal.add(entry, exchange.body)

    def _dispatch(self, exchange: Exchange) -> Iterable[bytes]:
        method, route = exchange.method, exchange.route
        guarded = self._key_digests and route.startswith(_GUARDED) and method != "OPTIONS"
        if guarded and not self._authorized(exchange.environ.get("HTTP_AUTHORIZATION", "")):
            exchange.respond(401, JSON)
            return [b'{"error":"Unauthorized"}']
        found = self._routes.get(route)
        if found is None:
            exchange.respond(404, JSON)
            return [b'{"detail":"Not Found"}']
        methods, handler = found
        if method not in methods:
            exchange.respond(405, [*JSON, ("Allow", ", ".join(methods))])
            return [b'{"detail":"Method Not Allowed"}']
        if method in ("POST", "PUT"):
            exchange.body = self.read_body(exchange)
        return handler(exchange)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        # Constant-time and over every key, as vLLM's middleware compares them.
        return any([hmac.compare_digest(digest, d) for d in self._key_digests])

    # -- generation routes -------------------------------------------------------------------

    def _chat(self, exchange: Exchange) -> Iterable[bytes]:
        return self.generation.handle(CHAT, exchange)

    def _completions(self, exchange: Exchange) -> Iterable[bytes]:
        return self.generation.handle(COMPLETIONS, exchange)


def _declared_length(environ: dict[str, Any]) -> int:
    # The instrumentator observes the request's Content-Length header, not the bytes read:
    # 0 without one (a chunked body), the full value for a body never read (a 401 or 404).
    value = environ.get("CONTENT_LENGTH") or "0"
    try:
        return int(value.partition(",")[0])
    except ValueError:
        return 0
