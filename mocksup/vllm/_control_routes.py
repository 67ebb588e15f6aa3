"""The control API under ``/mocksup``: journal, clear, latency, faults, scripts.

Every route answers JSON; a bad body answers 400 ``{"error": "..."}``. The parent-side
methods of :class:`~mocksup.vllm.MockVLLMServer` call these routes through
:class:`~mocksup._control.ControlClient`. See ``docs/vllm.rst`` for every route and shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from mocksup._control import PREFIX
from mocksup.vllm._encoding import dumps
from mocksup.vllm._journal import journal_body
from mocksup.vllm._runtime import RuntimeState
from mocksup.vllm.settings import ScriptRule

__all__ = ["ControlAPI"]

#: The longest a journal long poll may hold a request.
MAX_WAIT = 60.0


class _BadRequest(Exception):
    pass


class ControlAPI:
    """WSGI handler of the ``/mocksup`` routes.

    :param reset_metrics: zeroes the metrics (``POST /mocksup/clear`` with
        ``{"metrics": true}``).
    :param live: the live gauges, ``{"running": n, "waiting": n}``, for ``GET /mocksup/stats``.
    """

    def __init__(
        self,
        state: RuntimeState,
        config: dict[str, Any],
        reset_metrics: Callable[[], None],
        live: Callable[[], dict[str, int]],
    ) -> None:
        self.state = state
        self.config = config
        self.reset_metrics = reset_metrics
        self.live = live
        self._routes: dict[tuple[str, str], Callable[[dict[str, Any], Any], Any]] = {
            ("GET", "/requests"): self._requests,
            ("DELETE", "/requests"): self._delete_requests,
            ("POST", "/clear"): self._clear,
            ("GET", "/config"): self._config,
            ("GET", "/stats"): self._stats,
            ("GET", "/latency"): lambda q, b: self.state.latency.model_dump(),
            ("PUT", "/latency"): lambda q, b: self.state.set_latency(_object(b)).model_dump(),
            ("GET", "/faults"): lambda q, b: self.state.faults.model_dump(),
            ("PUT", "/faults"): lambda q, b: self.state.set_faults(_object(b)).model_dump(),
            ("GET", "/scripts"): self._scripts,
            ("PUT", "/scripts"): self._put_scripts,
            ("POST", "/scripts"): self._add_script,
        }

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"][len(PREFIX) :]
        handler = self._routes.get((method, path))
        status, result = "200 OK", None
        if handler is None:
            known = any(p == path for _, p in self._routes)
            status = "405 Method Not Allowed" if known else "404 Not Found"
            result = {"error": f"no control route {method} {PREFIX}{path}"}
        else:
            try:
                query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
                length = int(environ.get("CONTENT_LENGTH") or 0)
                raw = environ["wsgi.input"].read(length) if length else b""
                body = json.loads(raw) if raw else None
                result = handler(query, body)
            except (ValueError, RecursionError, ValidationError, _BadRequest) as error:
                status, result = "400 Bad Request", {"error": str(error)}
        payload = dumps(result)
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    def _requests(self, query: dict[str, str], body: Any) -> Any:
        wait = min(float(query.get("wait", 0)), MAX_WAIT)
        count = int(query.get("count", 0))
        entries = self.state.journal.query(query.get("path"), count, wait)
        return {
            "requests": [{**e, "body": journal_body(e["body"], e["body_size"])} for e in entries]
        }

    def _delete_requests(self, query: dict[str, str], body: Any) -> Any:
        self.state.journal.clear()
        return {"cleared": True}

    def _clear(self, query: dict[str, str], body: Any) -> Any:
        self.state.clear()
        metrics = bool(isinstance(body, dict) and body.get("metrics"))
        if metrics:
            self.reset_metrics()
        return {"cleared": True, "metrics": metrics}

    def _stats(self, query: dict[str, str], body: Any) -> Any:
        return {
            "requests": self.state.journal.total,
            "generation_calls": self.state.calls,
            **self.live(),
        }

    def _config(self, query: dict[str, str], body: Any) -> Any:
        return {**self.config, **self.state.snapshot()}

    def _scripts(self, query: dict[str, str], body: Any) -> Any:
        return {"rules": [r.model_dump() for r in self.state.rules]}

    def _put_scripts(self, query: dict[str, str], body: Any) -> Any:
        rules = _object(body).get("rules")
        if not isinstance(rules, list):
            raise _BadRequest('the body must be {"rules": [...]}')
        self.state.set_rules([ScriptRule.model_validate(r) for r in rules])
        return self._scripts(query, None)

    def _add_script(self, query: dict[str, str], body: Any) -> Any:
        self.state.add_rule(ScriptRule.model_validate(_object(body)))
        return self._scripts(query, None)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body
