"""vLLM's development routes, served with ``VLLM_SERVER_DEV_MODE=1`` (``server_dev_mode``).

``/sleep``, ``/wake_up``, ``/is_sleeping``, ``/release_kv_cache_memory``, ``/pause``,
``/resume``, ``/is_paused``, ``/reset_prefix_cache``, ``/reset_mm_cache``,
``/reset_encoder_cache``, ``/server_info`` and ``/get_world_size``, with vLLM's query
parameters (checked as FastAPI checks them: a bad one is vLLM's 400 naming ``query.<name>``)
and answers. Their effects are real for the mock: see :mod:`._pause`. A mixin of
:class:`~._app.VLLMApp`.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mocksup.vllm._encoding import dumps
from mocksup.vllm._errors import from_validation_error
from mocksup.vllm._exchange import JSON, Exchange

if TYPE_CHECKING:
    from mocksup.vllm._config import ServerConfig
    from mocksup.vllm._engine import Engine
    from mocksup.vllm._engine_metrics import EngineMetrics
    from mocksup.vllm._pause import PauseState

__all__ = ["DevRoutes"]

Handler = Callable[[Exchange], Iterable[bytes]]
Q = TypeVar("Q", bound=BaseModel)

_Mode = Literal["abort", "wait", "keep"]


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _SleepQuery(_Query):
    level: int = Field(1, ge=0, le=2)
    mode: _Mode = "abort"


class _PauseQuery(_Query):
    mode: _Mode = "abort"
    clear_cache: bool = True


class _ResetQuery(_Query):
    reset_running_requests: bool = False
    reset_external: bool = False


class _InfoQuery(_Query):
    config_format: Literal["text", "json"] = "text"


class _WorldQuery(_Query):
    include_dp: bool = True


class DevRoutes:
    """The routes of :mod:`._dev_routes` (a mixin of the app)."""

    config: ServerConfig
    engine: Engine
    metrics: EngineMetrics
    pause: PauseState

    def dev_routes(self) -> dict[str, tuple[tuple[str, ...], Handler]]:
        """The routes, by path: their methods and handler."""
        post, get = ("POST",), ("GET",)
        return {
            "/sleep": (post, self._sleep),
            "/wake_up": (post, self._wake_up),
            "/is_sleeping": (get, self._is_sleeping),
            "/release_kv_cache_memory": (post, self._release_kv_cache),
            "/pause": (post, self._pause),
            "/resume": (post, self._resume),
            "/is_paused": (get, self._is_paused),
            "/reset_prefix_cache": (post, self._reset_prefix_cache),
            "/reset_mm_cache": (post, self._reset_other_cache),
            "/reset_encoder_cache": (post, self._reset_other_cache),
            "/server_info": (get, self._server_info),
            "/get_world_size": (get, self._world_size),
        }

    def _sleep(self, exchange: Exchange) -> list[bytes]:
        query = _query(exchange, _SleepQuery)
        started = time.perf_counter()
        self.pause.sleep(query.level, query.mode)
        self.metrics.operation("sleep", time.perf_counter() - started)
        return _answer(exchange, {"status": "sleeping", "level": query.level})

    def _wake_up(self, exchange: Exchange) -> list[bytes]:
        tags = [v for k, v in _pairs(exchange) if k == "tags"] or None
        started = time.perf_counter()
        fully_awake = self.pause.wake_up(tags)
        self.metrics.operation("wake", time.perf_counter() - started)
        return _answer(exchange, {"status": "awake" if fully_awake else "sleeping", "tags": tags})

    def _is_sleeping(self, exchange: Exchange) -> list[bytes]:
        return _answer(exchange, {"is_sleeping": self.pause.is_sleeping()})

    def _release_kv_cache(self, exchange: Exchange) -> list[bytes]:
        started = time.perf_counter()
        self.pause.sleep_kv_cache()
        self.metrics.operation("release_kv_cache_memory", time.perf_counter() - started)
        return _answer(exchange, {"status": "kv_cache_released"})

    def _pause(self, exchange: Exchange) -> list[bytes]:
        query = _query(exchange, _PauseQuery)
        self.pause.pause(query.mode)
        return _answer(exchange, {"status": "paused"})

    def _resume(self, exchange: Exchange) -> list[bytes]:
        self.pause.resume()
        return _answer(exchange, {"status": "resumed"})

    def _is_paused(self, exchange: Exchange) -> list[bytes]:
        return _answer(exchange, {"is_paused": self.pause.is_paused()})

    def _reset_prefix_cache(self, exchange: Exchange) -> list[bytes]:
        query = _query(exchange, _ResetQuery)
        # vLLM cannot drop blocks running requests hold, unless told to reset them too.
        success = query.reset_running_requests or self.metrics.in_flight[0] == 0
        if success:
            self.engine.cache.reset()
        return _answer(exchange, {"success": success})

    def _reset_other_cache(self, exchange: Exchange) -> list[bytes]:
        exchange.respond(200, [])
        return [b""]

    def _server_info(self, exchange: Exchange) -> list[bytes]:
        query = _query(exchange, _InfoQuery)
        config = {k: v for k, v in vars(self.config).items() if k != "api_keys"}
        vllm_config: Any = config
        if query.config_format == "text":
            vllm_config = ", ".join(f"{k}={v!r}" for k, v in config.items())
        env = {k: v for k, v in os.environ.items() if k.startswith("VLLM_") and "KEY" not in k}
        system = {
            "os": platform.platform(),
            "python_version": platform.python_version(),
            "python_platform": platform.platform(),
            "vllm_version": self.config.version,
            "is_cuda_available": False,
        }
        return _answer(
            exchange, {"vllm_config": vllm_config, "vllm_env": env, "system_env": system}
        )

    def _world_size(self, exchange: Exchange) -> list[bytes]:
        query = _query(exchange, _WorldQuery)
        ranks = self.config.data_parallel_size if query.include_dp else 1
        return _answer(exchange, {"world_size": ranks})


def _pairs(exchange: Exchange) -> list[tuple[str, str]]:
    return parse_qsl(exchange.environ.get("QUERY_STRING", ""), keep_blank_values=True)


def _query(exchange: Exchange, model: type[Q]) -> Q:
    # FastAPI takes the last value of a repeated parameter and validates strings.
    values = dict(_pairs(exchange))
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise from_validation_error(error, where="query") from None


def _answer(exchange: Exchange, body: dict[str, Any]) -> list[bytes]:
    exchange.respond(200, JSON)
    return [dumps(body)]
