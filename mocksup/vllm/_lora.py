"""LoRA adapters: ``--lora-modules``, the runtime load and unload routes, requests by adapter
name, and the ``vllm:lora_requests_info`` gauge, as vLLM 0.33 serves them.

An adapter is a name served beside the base model names: ``/v1/models`` lists it after them
(``root`` its path, ``parent`` its base model, no ``max_model_len``), a request naming it is
answered under its name, and the metrics keep the base model's ``model_name`` (vLLM labels
engine metrics with the first served name only). ``POST /v1/load_lora_adapter`` and
``/v1/unload_lora_adapter`` exist only with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` (else 404,
as vLLM attaches no such routes) and answer with vLLM's text and errors. The mock loads no
weights: a local path (absolute, ``./``, ``../``, ``~``) must hold an
``adapter_config.json`` (else vLLM's 404 "No adapter found"), which is read for what vLLM
refuses (bad JSON, a rank past ``max_lora_rank``, DoRA: 500); any other path is taken as a
Hugging Face repository name, which vLLM would download.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from mocksup.vllm._errors import APIError

__all__ = ["Adapters", "LoRAModule", "parse_lora_modules"]

_NOT_FOUND = "Loading lora {name} failed: No adapter found for {path}"


class LoRAModule(BaseModel):
    """One ``--lora-modules`` entry (vLLM's ``LoRAModulePath``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str
    base_model_name: str | None = None
    is_3d_lora_weight: bool = False


def parse_lora_modules(values: Any) -> Any:
    """``--lora-modules`` values as vLLM reads them: ``name=path``, or a JSON object per
    value; dicts and :class:`LoRAModule` pass through.

    :raises ValueError: a value that is neither (vLLM's parser error).
    """
    if values is None or isinstance(values, (str, dict, LoRAModule)):
        values = [] if values is None else [values]
    out: list[Any] = []
    for item in values:
        if item in (None, ""):
            continue
        if not isinstance(item, str):
            out.append(item)
        elif "=" in item and "," not in item:
            name, path = item.split("=", 1)
            out.append({"name": name, "path": path})
        else:
            try:
                out.append(json.loads(item))
            except ValueError:
                raise ValueError(f"Invalid JSON format for --lora-modules: {item}") from None
    return out


class Adapters:
    """The loaded adapters and the LoRA requests in flight (thread-safe).

    :param bases: the served base model names (the first is an adapter's default parent).
    :param enabled: ``--enable-lora``.
    """

    def __init__(
        self, bases: list[str], *, max_lora_rank: int, max_loras: int, enabled: bool = True
    ) -> None:
        self.bases = bases
        #: ``--enable-lora``: without it every load fails in the engine (500).
        self.enabled = enabled
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self._adapters: dict[str, LoRAModule] = {}
        self._in_flight: dict[str, int] = {}
        #: ``vllm:lora_requests_info`` series: (waiting, running) adapter lists -> time set.
        self.series: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self._adapters

    def cards(self) -> list[LoRAModule]:
        """The adapters in load order."""
        with self._lock:
            return list(self._adapters.values())

    def load(self, module: LoRAModule, *, inplace: bool = False) -> str:
        """Load (or with ``inplace``, reload) an adapter; vLLM's success text.

        :raises APIError: vLLM's 400, 404 or 500 for the request.
        """
        name, path = module.name, module.path
        if not name or not path:
            raise APIError(400, "Both 'lora_name' and 'lora_path' must be provided.",
                           type="InvalidUserInput")  # fmt: skip
        if name in self.bases:
            raise APIError(400, f"The lora adapter '{name}' conflicts with a served base model.",
                           type="InvalidUserInput")  # fmt: skip
        if not inplace and name in self._adapters:
            raise APIError(
                400,
                f"The lora adapter '{name}' has already been loaded. If you want to load the "
                "adapter in place, set 'load_inplace' to True.",
                type="InvalidUserInput",
            )
        if not self.enabled:
            raise APIError(500, "LoRA is not enabled. Use --enable-lora to enable LoRA.")
        self._check_files(module)
        base = module.base_model_name if module.base_model_name in self.bases else None
        with self._lock:
            self._adapters[name] = module.model_copy(update={"base_model_name": base})
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, name: str) -> str:
        """Unload an adapter; vLLM's success text.

        :raises APIError: vLLM's 400 without a name, 404 for an unknown one.
        """
        if not name:
            raise APIError(400, "'lora_name' needs to be provided to unload a LoRA adapter.",
                           type="InvalidUserInput")  # fmt: skip
        with self._lock:
            if name not in self._adapters:
                raise APIError(404, f"The lora adapter '{name}' cannot be found.")
            del self._adapters[name]
        return f"Success: LoRA adapter '{name}' removed successfully."

    def _check_files(self, module: LoRAModule) -> None:
        path = os.path.expanduser(module.path)
        local = (
            os.path.isabs(path)
            or module.path.startswith(("./", "../", "~"))
            or (os.path.exists(path))
        )
        if not local:
            return  # a repository name: vLLM would download it
        config_path = os.path.join(path, "adapter_config.json")
        if not os.path.isfile(config_path):
            raise APIError(404, _NOT_FOUND.format(name=module.name, path=module.path))
        try:
            with open(config_path, encoding="utf-8") as file:
                config = json.load(file)
        except (OSError, ValueError) as error:
            raise APIError(500, str(error)) from None
        problems = []
        if isinstance(config, dict) and config.get("use_dora"):
            problems.append("vLLM does not yet support DoRA.")
        rank = config.get("r", 8) if isinstance(config, dict) else 8
        if isinstance(rank, int) and rank > self.max_lora_rank:
            problems.append(f"LoRA rank {rank} is greater than max_lora_rank "
                            f"{self.max_lora_rank}.")  # fmt: skip
        if problems:
            raise APIError(500, " ".join(problems))

    # -- requests in flight, for vllm:lora_requests_info ---------------------------------

    def started(self, name: str | None) -> None:
        """A request of adapter ``name`` (``None``: the base model) was scheduled."""
        if name is not None:
            with self._lock:
                self._in_flight[name] = self._in_flight.get(name, 0) + 1
        self._record()

    def finished(self, name: str | None) -> None:
        """A request of adapter ``name`` ended."""
        if name is not None:
            with self._lock:
                left = self._in_flight.get(name, 0) - 1
                if left > 0:
                    self._in_flight[name] = left
                else:
                    self._in_flight.pop(name, None)
        self._record()

    def _record(self) -> None:
        # vLLM sets the gauge at each step to the time, labelled with the adapters that have
        # requests in flight (its waiting and running lists hold the same names).
        with self._lock:
            names = ",".join(self._in_flight)
            self.series[(names, names)] = time.time()

    def labels(self) -> Iterable[tuple[dict[str, str], float]]:
        """The gauge's series: labels and value."""
        with self._lock:
            series = list(self.series.items())
        for (waiting, running), when in series:
            labels = {"max_lora": str(self.max_loras), "waiting_lora_adapters": waiting,
                      "running_lora_adapters": running}  # fmt: skip
            yield labels, when
