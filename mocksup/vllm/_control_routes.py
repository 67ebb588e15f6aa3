"""The vLLM mock's control routes under ``/mocksup``, on :class:`mocksup.control.ControlApp`.

The framework gives them its rules (declared query parameters, an unknown one is a 400,
bounded JSON bodies, ``{"error": ...}`` answers, 404/405 from the route table); this module
only says what each route does, through :class:`~._runtime.RuntimeState`. The journal's long
poll takes ``timeout`` (seconds, at most :data:`mocksup.control.MAX_WAIT`). The parent-side
methods of :class:`~mocksup.vllm.VLLMQueries` call these routes; ``docs/vllm.rst`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from mocksup.control import ControlApp, ControlError, ControlRequest, Param, Route
from mocksup.vllm._journal import journal_body
from mocksup.vllm._runtime import RuntimeState
from mocksup.vllm.settings import ScriptRule

__all__ = ["control_app"]

Handler = Callable[[ControlRequest], Any]


def control_app(
    state: RuntimeState,
    config: dict[str, Any],
    reset_metrics: Callable[[], None],
    live: Callable[[], dict[str, int]],
    *,
    name: str,
) -> ControlApp:
    """The WSGI app of the ``/mocksup`` routes.

    :param config: the fixed settings ``GET /mocksup/config`` shows.
    :param reset_metrics: zeroes the metrics (``POST /mocksup/clear`` with
        ``{"metrics": true}``).
    :param live: the live gauges, ``{"running": n, "waiting": n}``, for ``GET /mocksup/stats``.
    :param name: the mock's name, in ``GET /mocksup/health``.
    """
    routes = _Routes(state, config, reset_metrics, live)
    return ControlApp(
        routes.table(),
        name=name,
        kind="MockVLLMServer",
        info=lambda: {"version": config.get("vllm_version")},
    )


class _Routes:
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

    def table(self) -> list[Route]:
        journal = {
            "path": Param.text("only requests to this path"),
            "count": Param.integer("wait until this many match", default=0),
            "timeout": Param.wait(default=0.0),
        }
        return [
            Route("/requests", ("GET",), self.requests, journal, "the request journal"),
            Route("/requests", ("DELETE",), self.delete_requests, doc="empty the journal"),
            Route("/clear", ("POST",), self.clear, doc='body {"metrics": bool}: reset'),
            Route("/config", ("GET",), self.show_config, doc="settings and run-time state"),
            Route("/stats", ("GET",), self.stats, doc="request counts and live gauges"),
            Route("/latency", ("GET",), lambda r: self.state.latency.model_dump()),
            Route("/latency", ("PUT",), _checked(self.put_latency), doc="change latency"),
            Route("/faults", ("GET",), lambda r: self.state.faults.model_dump()),
            Route("/faults", ("PUT",), _checked(self.put_faults), doc="change faults"),
            Route("/scripts", ("GET",), self.scripts, doc="the scripted rules"),
            Route("/scripts", ("PUT",), _checked(self.put_scripts), doc="replace the rules"),
            Route("/scripts", ("POST",), _checked(self.add_script), doc="append one rule"),
        ]

    def requests(self, request: ControlRequest) -> Any:
        args = request.args
        entries = self.state.journal.query(args["path"], args["count"], args["timeout"])
        return {
            "requests": [{**e, "body": journal_body(e["body"], e["body_size"])} for e in entries]
        }

    def delete_requests(self, request: ControlRequest) -> Any:
        self.state.journal.clear()
        return {"cleared": True}

    def clear(self, request: ControlRequest) -> Any:
        body = {} if request.body is None else request.json_object()
        metrics = body.get("metrics", False)
        if not isinstance(metrics, bool) or set(body) - {"metrics"}:
            raise ControlError(400, 'the body must be {"metrics": true or false} or empty')
        self.state.clear()
        if metrics:
            self.reset_metrics()
        return {"cleared": True, "metrics": metrics}

    def stats(self, request: ControlRequest) -> Any:
        return {
            "requests": self.state.journal.total,
            "generation_calls": self.state.calls,
            **self.live(),
        }

    def show_config(self, request: ControlRequest) -> Any:
        return {**self.config, **self.state.snapshot()}

    def put_latency(self, request: ControlRequest) -> Any:
        return self.state.set_latency(request.json_object()).model_dump()

    def put_faults(self, request: ControlRequest) -> Any:
        return self.state.set_faults(request.json_object()).model_dump()

    def scripts(self, request: ControlRequest) -> Any:
        return {"rules": [r.model_dump() for r in self.state.rules]}

    def put_scripts(self, request: ControlRequest) -> Any:
        rules = request.json_object().get("rules")
        if not isinstance(rules, list):
            raise ControlError(400, 'the body must be {"rules": [...]}')
        self.state.set_rules([ScriptRule.model_validate(r) for r in rules])
        return self.scripts(request)

    def add_script(self, request: ControlRequest) -> Any:
        self.state.add_rule(ScriptRule.model_validate(request.json_object()))
        return self.scripts(request)


def _checked(handler: Handler) -> Handler:
    # Settings are pydantic models: a value they refuse is the client's error (400, with
    # pydantic's explanation), never a 500 of the mock.
    def checked(request: ControlRequest) -> Any:
        try:
            return handler(request)
        except (ValidationError, ValueError) as error:
            raise ControlError(400, str(error)) from None

    return checked
