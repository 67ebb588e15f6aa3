"""The WSGI application: vLLM's routes, its auth and error rules, and the request journal.

Plain WSGI on ``environ`` (no request/response objects) keeps the per-request cost low. Each
route is a handler taking an :class:`~._exchange.Exchange`; generation routes go through
:mod:`._pipeline` (one per surface, sharing one engine), the utility routes are answered
here from their modules, and the control API under ``/mocksup`` is
:mod:`._control_routes`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from mocksup._control import PREFIX
from mocksup.serving import status_line
from mocksup.vllm import _embeddings, _tokenize
from mocksup.vllm._body import decode_json, read_body, validate
from mocksup.vllm._chat import ChatChunks, ChatRequest, chat_body
from mocksup.vllm._completions import CompletionChunks, CompletionRequest, completion_body
from mocksup.vllm._encoding import dumps
from mocksup.vllm._engine import Engine
from mocksup.vllm._engine_metrics import EngineMetrics
from mocksup.vllm._errors import APIError, VLLMValidationError, rule_error
from mocksup.vllm._exchange import JSON, Exchange, Journaled, StartResponse, WSGIApp
from mocksup.vllm._faults import Cut
from mocksup.vllm._http_metrics import HTTPMetrics
from mocksup.vllm._ids import random_hex
from mocksup.vllm._journal import redact
from mocksup.vllm._models import models_body
from mocksup.vllm._pipeline import Generation, ServerConfig, Surface
from mocksup.vllm._runtime import RuntimeState
from mocksup.vllm._tracing import SpanExporter

__all__ = ["VLLMApp"]

_log = logging.getLogger(__name__)

Handler = Callable[[Exchange], Iterable[bytes]]

_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: vLLM's auth middleware leaves these open (and OPTIONS everywhere).
_OPEN_PATHS = frozenset({"/health", "/ping", "/load", "/version", "/metrics"})
#: Exceptions vLLM's fallback handlers answer 400 with their text.
_CLIENT_ERRORS = (ValueError, TypeError, OverflowError)

CHAT = Surface(ChatRequest, "chatcmpl-", False, chat_body, ChatChunks)
COMPLETIONS = Surface(CompletionRequest, "cmpl-", True, completion_body, CompletionChunks)


class VLLMApp:
    """The WSGI callable of the mock."""

    def __init__(
        self,
        config: ServerConfig,
        state: RuntimeState,
        *,
        metrics: EngineMetrics,
        http_metrics: HTTPMetrics,
        exporter: SpanExporter | None,
        control: WSGIApp,
    ) -> None:
        self.config = config
        self.state = state
        self.metrics = metrics
        self.http_metrics = http_metrics
        self.engine = Engine(state.slots, metrics, exporter)
        self.generation = Generation(config, state, self.engine)
        self._control = control
        self._key_digests = [hashlib.sha256(k.encode()).digest() for k in config.api_keys]
        self._models_body = dumps(
            models_body(config.models, config.max_model_len, int(time.time()))
        )
        get, head = ("GET", "HEAD"), ("GET", "HEAD")
        self._routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/v1/chat/completions": (("POST",), self._chat),
            "/v1/completions": (("POST",), self._completions),
            "/v1/models": (get, self._models),
            "/v1/embeddings": (("POST",), self._embeddings),
            # vLLM's health and metrics routes answer HEAD like GET (the server drops the body).
            "/health": (head, self._health),
            "/ping": (("GET", "POST"), self._health),
            "/load": (get, self._server_load),
            "/version": (get, self._version),
            "/metrics": (head, self._metrics),
            "/tokenize": (("POST",), self._tokenize),
            "/detokenize": (("POST",), self._detokenize),
        }

    # -- entry -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO") or "/"
        if path.startswith(PREFIX):
            return self._control(environ, start_response)
        exchange = Exchange(environ)
        try:
            result = self._dispatch(exchange)
        except Cut:
            exchange.status = None
            self._record(exchange, None, 0)
            raise
        except Exception as error:
            result = self._error_answer(exchange, error)
        if isinstance(result, list):
            size = sum(map(len, result))
            start_response(
                status_line(exchange.status or 500),
                [*exchange.headers, ("Content-Length", str(size))],
            )
            self._record(exchange, None, size)
            return result
        start_response(status_line(exchange.status or 500), exchange.headers)
        return Journaled(result, lambda first, sent: self._record(exchange, first, sent))

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
        handler = exchange.path if exchange.path in self._routes else "none"
        self.http_metrics.observe(
            exchange.method,
            handler,
            exchange.status,
            end - exchange.started,
            size_in=len(exchange.body),
            size_out=sent,
        )
        entry = exchange.entry(first_byte, end)
        entry["headers"] = redact(entry["headers"], self.config.journal_credentials)
        self.state.journal.add(entry, exchange.body)

    def _dispatch(self, exchange: Exchange) -> Iterable[bytes]:
        method, path = exchange.method, exchange.path
        guarded = self._key_digests and path not in _OPEN_PATHS and method != "OPTIONS"
        if guarded and not self._authorized(exchange.environ.get("HTTP_AUTHORIZATION", "")):
            exchange.respond(401, JSON)
            return [b'{"error":"Unauthorized"}']
        route = self._routes.get(path)
        if route is None:
            exchange.respond(404, JSON)
            return [b'{"detail":"Not Found"}']
        methods, handler = route
        if method not in methods:
            exchange.respond(405, [*JSON, ("Allow", ", ".join(methods))])
            return [b'{"detail":"Method Not Allowed"}']
        if method == "POST":
            exchange.body = read_body(exchange.environ, self.config.max_request_bytes)
        return handler(exchange)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        # Constant-time and over every key, as vLLM's middleware compares them.
        return any([hmac.compare_digest(digest, d) for d in self._key_digests])

    # -- routes ------------------------------------------------------------------------------

    def _chat(self, exchange: Exchange) -> Iterable[bytes]:
        return self.generation.handle(CHAT, exchange)

    def _completions(self, exchange: Exchange) -> Iterable[bytes]:
        return self.generation.handle(COMPLETIONS, exchange)

    def _health(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, [])
        return [b""]

    def _server_load(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, JSON)
        return [dumps({"server_load": self.generation.load})]

    def _version(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, JSON)
        return [dumps({"version": self.config.version})]

    def _metrics(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, [("Content-Type", _METRICS_TYPE)])
        return [self.metrics.render() + self.http_metrics.render().encode()]

    def _models(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, JSON)
        return [self._models_body]

    def _json(self, exchange: Exchange) -> Any:
        return decode_json(exchange.environ.get("CONTENT_TYPE", ""), exchange.body)

    def _tokenize(self, exchange: Exchange) -> list[bytes]:
        request = _tokenize.parse_tokenize(self._json(exchange))
        self.generation.check_model(request.model)
        result = _tokenize.tokenize(request, self.config.max_model_len)
        exchange.respond(200, JSON)
        return [dumps(result)]

    def _detokenize(self, exchange: Exchange) -> list[bytes]:
        request = validate(_tokenize.DetokenizeRequest, self._json(exchange))
        self.generation.check_model(request.model)
        exchange.respond(200, JSON)
        return [dumps(_tokenize.detokenize(request))]

    def _embeddings(self, exchange: Exchange) -> list[bytes]:
        request = validate(_embeddings.EmbeddingRequest, self._json(exchange))
        model = self.generation.check_model(request.model)
        result = _embeddings.embeddings(
            request, model, self.config.embedding_dim, request_id=random_hex()
        )
        exchange.respond(200, JSON)
        return [dumps(result)]
