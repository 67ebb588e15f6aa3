"""``/openapi.json``, ``/docs`` and ``/redoc``: the API documentation FastAPI serves for vLLM.

vLLM builds its app with FastAPI's defaults (title ``FastAPI``, version ``0.1.0``; with
``--root-path`` a ``servers`` entry naming it) unless ``--disable-fastapi-docs``. The mock
lists the routes it serves with FastAPI's summaries and operation ids; the request and
response schemas of vLLM's pydantic models are not reproduced (``docs/vllm.rst`` lists this
difference). The two HTML pages load Swagger UI and ReDoc from a CDN, as FastAPI's do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["HIDDEN", "oauth2_redirect_page", "redoc_page", "schema", "swagger_page"]

#: Routes FastAPI leaves out of the schema (the documentation itself).
HIDDEN = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

#: The handler function names behind vLLM's routes: FastAPI derives summaries from them.
_HANDLERS = {
    "/v1/chat/completions": "create_chat_completion",
    "/v1/chat/completions/batch": "create_batch_chat_completion",
    "/v1/completions": "create_completion",
    "/v1/models": "show_available_models",
    "/v1/embeddings": "create_embedding",
    "/health": "health",
    "/ping": "ping",
    "/load": "get_server_load_metrics",
    "/version": "show_version",
    "/metrics": "metrics",
    "/tokenize": "tokenize",
    "/detokenize": "detokenize",
    "/tokenizer_info": "get_tokenizer_info",
    "/invocations": "invocations",
    "/v1/responses": "create_responses",
    "/v1/responses/{response_id}": "retrieve_responses",
    "/v1/responses/{response_id}/cancel": "cancel_responses",
    "/v1/messages": "create_messages",
    "/v1/messages/count_tokens": "count_tokens",
}


def schema(routes: Iterable[tuple[str, tuple[str, ...]]], root_path: str) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (path and methods)."""
    paths: dict[str, Any] = {}
    for path, methods in routes:
        handler = _HANDLERS.get(path) or path.strip("/").replace("/", "_") or "root"
        operations = {}
        for method in methods:
            if method == "HEAD":
                continue
            slug = re.sub(r"\W", "_", path)  # FastAPI's unique id: every non-word char
            operations[method.lower()] = {
                "summary": handler.replace("_", " ").title(),
                "operationId": f"{handler}{slug}_{method.lower()}",
                "responses": {
                    "200": {
                        "description": "Successful Response",
                        "content": {"application/json": {"schema": {}}},
                    }
                },
            }
        paths[path] = operations
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "FastAPI", "version": "0.1.0"},
        "paths": paths,
    }
    if root_path:
        document["servers"] = [{"url": root_path}]
    return document


def swagger_page(root_path: str) -> bytes:
    """The ``/docs`` page: Swagger UI on this server's ``/openapi.json``."""
    return _page(
        "FastAPI - Swagger UI",
        '<link type="text/css" rel="stylesheet" '
        'href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">',
        '<div id="swagger-ui"></div>\n'
        '<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js">'
        "</script>\n"
        f"<script>SwaggerUIBundle({{url: '{root_path}/openapi.json', dom_id: '#swagger-ui',"
        f" oauth2RedirectUrl: window.location.origin + '{root_path}/docs/oauth2-redirect'}})"
        "</script>",
    )


def redoc_page(root_path: str) -> bytes:
    """The ``/redoc`` page: ReDoc on this server's ``/openapi.json``."""
    return _page(
        "FastAPI - ReDoc",
        "",
        f'<redoc spec-url="{root_path}/openapi.json"></redoc>\n'
        '<script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js">'
        "</script>",
    )


def oauth2_redirect_page() -> bytes:
    """Swagger UI's OAuth2 redirect target (unused without OAuth2, served all the same)."""
    return _page("Swagger UI: OAuth2 Redirect", "", "<p>OAuth2 redirect.</p>")


def _page(title: str, head: str, body: str) -> bytes:
    return (
        f"<!DOCTYPE html>\n<html>\n<head>\n<title>{title}</title>\n{head}\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    ).encode()
