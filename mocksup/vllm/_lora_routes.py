"""``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), answered as vLLM answers them: the success text as a
plain body with no content type, errors as vLLM's error bodies."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from mocksup.vllm._body import decode_json, validate
from mocksup.vllm._lora import Adapters, LoRAModule

if TYPE_CHECKING:
    from mocksup.vllm._config import ServerConfig
    from mocksup.vllm._exchange import Exchange

__all__ = ["LoRARoutes"]

Handler = Callable[["Exchange"], Iterable[bytes]]


class _Load(BaseModel):
    model_config = ConfigDict(extra="allow")

    lora_name: str
    lora_path: str
    load_inplace: bool = False
    is_3d_lora_weight: bool = False


class _Unload(BaseModel):
    model_config = ConfigDict(extra="allow")

    lora_name: str
    lora_int_id: int | None = Field(default=None)


class LoRARoutes:
    """The routes of :mod:`._lora_routes` (a mixin of the app)."""

    config: ServerConfig
    adapters: Adapters

    def lora_routes(self) -> dict[str, tuple[tuple[str, ...], Handler]]:
        """The routes, by path: their methods and handler (none unless runtime updating
        is allowed)."""
        if not self.config.runtime_lora_updating:
            return {}
        return {
            "/v1/load_lora_adapter": (("POST",), self._load_lora),
            "/v1/unload_lora_adapter": (("POST",), self._unload_lora),
        }

    def _load_lora(self, exchange: Exchange) -> list[bytes]:
        request = validate(_Load, decode_json(exchange.environ.get("CONTENT_TYPE", ""),
                                              exchange.body))  # fmt: skip
        module = LoRAModule(name=request.lora_name, path=request.lora_path,
                            is_3d_lora_weight=request.is_3d_lora_weight)  # fmt: skip
        text = self.adapters.load(module, inplace=request.load_inplace)
        exchange.respond(200, [])
        return [text.encode()]

    def _unload_lora(self, exchange: Exchange) -> list[bytes]:
        request = validate(_Unload, decode_json(exchange.environ.get("CONTENT_TYPE", ""),
                                                exchange.body))  # fmt: skip
        text = self.adapters.unload(request.lora_name)
        exchange.respond(200, [])
        return [text.encode()]
