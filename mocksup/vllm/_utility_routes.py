"""vLLM's routes beside generation: models, health, load, version, metrics, tokenizer,
embeddings, the batch chat route, SageMaker's ``/invocations`` and the API docs.

A mixin of :class:`~._app.VLLMApp`: each handler takes an :class:`~._exchange.Exchange` and
answers as vLLM 0.33's router for the same path does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mocksup.vllm import _embeddings, _openapi, _tokenize
from mocksup.vllm._batch import BatchChatRequest
from mocksup.vllm._body import decode_json, read_body, validate
from mocksup.vllm._chat import chat_body
from mocksup.vllm._encoding import dumps
from mocksup.vllm._errors import APIError
from mocksup.vllm._exchange import JSON, Exchange
from mocksup.vllm._ids import random_hex
from mocksup.vllm._models import models_body
from mocksup.vllm._pipeline import Surface
from mocksup.vllm._process_metrics import render_process_metrics

if TYPE_CHECKING:
    from mocksup.vllm._config import ServerConfig
    from mocksup.vllm._engine_metrics import EngineMetrics
    from mocksup.vllm._http_metrics import HTTPMetrics
    from mocksup.vllm._pipeline import Generation

__all__ = ["BATCH", "UtilityRoutes"]

Handler = Callable[[Exchange], Iterable[bytes]]

#: prometheus_client's latest text format, which vLLM's ``/metrics`` declares.
_METRICS_TYPE = "text/plain; version=1.0.0; charset=utf-8"
_HTML = [("Content-Type", "text/html; charset=utf-8")]

BATCH = Surface(BatchChatRequest, "chatcmpl-", "_", chat_body, None)


class UtilityRoutes:
    """The routes of :mod:`._utility_routes` (a mixin of the app)."""

    config: ServerConfig
    generation: Generation
    metrics: EngineMetrics
    http_metrics: HTTPMetrics

    def utility_routes(self) -> dict[str, tuple[tuple[str, ...], Handler]]:
        """The routes, by path: their methods and handler."""
        get, head = ("GET",), ("GET", "HEAD")
        routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/v1/chat/completions/batch": (("POST",), self._batch),
            "/invocations": (("POST",), self._invocations),
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
        if self.config.tokenizer_info_endpoint:
            routes["/tokenizer_info"] = (get, self._tokenizer_info)
        if self.config.docs:
            routes.update(
                {
                    "/openapi.json": (head, self._openapi),
                    "/docs": (head, self._docs),
                    "/docs/oauth2-redirect": (head, self._oauth2_redirect),
                    "/redoc": (head, self._redoc),
                }
            )
        return routes

    def read_body(self, exchange: Exchange) -> bytes:
        """The request body, bounded by ``max_request_bytes``."""
        return read_body(exchange.environ, self.config.max_request_bytes)

    def _json(self, exchange: Exchange) -> Any:
        return decode_json(exchange.environ.get("CONTENT_TYPE", ""), exchange.body)

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
        text = (
            render_process_metrics()
            + self.metrics.render()
            + self.http_metrics.render()
            + self.metrics.render_late()
        )
        return [text.encode()]

    def _models(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, JSON)
        config = self.config
        adapters = (
            [
                (m.name, m.path, m.base_model_name or config.models[0])
                for m in self.generation.adapters.cards()
            ]
            if self.generation.adapters
            else []
        )
        return [dumps(models_body(config.models, config.model, config.max_model_len,
                                  int(time.time()), adapters))]  # fmt: skip

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

    def _tokenizer_info(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, JSON)
        return [dumps(_tokenize.tokenizer_info(self.config.max_model_len))]

    def _embeddings(self, exchange: Exchange) -> list[bytes]:
        request = validate(_embeddings.EmbeddingRequest, self._json(exchange))
        model = self.generation.check_model(request.model)
        result = _embeddings.embeddings(
            request, model, self.config.embedding_dim, request_id=random_hex()
        )
        exchange.respond(200, JSON)
        return [dumps(result)]

    def _batch(self, exchange: Exchange) -> Iterable[bytes]:
        return self.generation.handle(BATCH, exchange)

    def _invocations(self, exchange: Exchange) -> Iterable[bytes]:
        # SageMaker: the first request type the body validates as serves it.
        from mocksup.vllm._app import CHAT, COMPLETIONS

        data = self._json(exchange)
        for surface in (CHAT, COMPLETIONS):
            try:
                surface.request_model.model_validate(data, context=self.config.validation_context)
            except (ValidationError, ValueError):
                continue
            return self.generation.handle(surface, exchange)
        names = ["ChatCompletionRequest", "CompletionRequest"]
        raise APIError(400, f"Cannot find suitable handler for request. Expected one of: {names}")

    def _openapi(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, JSON)
        return [dumps(_openapi.schema(list(self.utility_paths()), self.config.root_path))]

    def utility_paths(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        """Every served path and its methods (for the OpenAPI document)."""
        routes: dict[str, tuple[tuple[str, ...], Handler]] = getattr(self, "_routes", {})
        for path, (methods, _) in routes.items():
            if path not in _openapi.HIDDEN:
                yield path, methods

    def _docs(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, _HTML)
        return [_openapi.swagger_page(self.config.root_path)]

    def _oauth2_redirect(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, _HTML)
        return [_openapi.oauth2_redirect_page()]

    def _redoc(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, _HTML)
        return [_openapi.redoc_page(self.config.root_path)]
