"""The engine's pause and sleep states, behind vLLM's development routes.

``/pause`` (and ``/sleep``, which pauses first) decides what happens to requests: ``abort``
ends the running ones with finish reason ``abort`` and, like ``wait`` (which lets them
finish), refuses new ones with vLLM's retryable 503 until ``/resume``; ``keep`` accepts new
ones and holds them in the waiting queue. A sleeping engine (level 1 or 2) also has its
weights and KV cache "released" (the prefix cache is emptied) until ``/wake_up`` brings
them back, all at once or by tag; ``vllm:engine_sleep_state`` follows, as in vLLM.
"""

from __future__ import annotations

import threading
from typing import Literal

from mocksup.vllm._engine import Engine

__all__ = ["PAUSED_MESSAGE", "PauseMode", "PauseState"]

PauseMode = Literal["abort", "wait", "keep"]

#: vLLM's engine-core message for a request refused while paused.
PAUSED_MESSAGE = "Generation is paused. Please retry after it resumes."

_EXECUTOR_TAGS = frozenset({"weights", "kv_cache"})


class PauseState:
    """Whether the engine is paused or asleep; thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self.mode: PauseMode | None = None
        #: What the "executor" still has released (level 1 and 2 sleep).
        self._asleep: set[str] = set()

    def rejects_new(self) -> bool:
        """Whether a new generation request is refused now."""
        return self.mode in ("abort", "wait")

    def is_paused(self) -> bool:
        """Whether the scheduler is paused."""
        return self.mode is not None

    def is_sleeping(self) -> bool:
        """vLLM's ``is_sleeping``: paused, or with weights or KV cache released."""
        return self.mode is not None or bool(self._asleep)

    def pause(self, mode: PauseMode) -> None:
        """Pause generation: ``abort``, ``wait`` or ``keep`` what runs and what comes."""
        with self._lock:
            self.mode = mode
            self.engine.slots.hold(mode == "keep")
            if mode == "abort":
                self.engine.abort_running()

    def resume(self) -> None:
        """Resume generation; requests held by ``keep`` start."""
        with self._lock:
            self.mode = None
            self.engine.slots.hold(False)

    def sleep(self, level: int, mode: PauseMode) -> None:
        """Pause, then release the weights and KV cache (level 1 and 2)."""
        self.pause(mode)
        with self._lock:
            if level >= 1:
                self.engine.cache.reset()
                self._asleep = set(_EXECUTOR_TAGS)
            self.engine.metrics.sleep_level = level

    def sleep_kv_cache(self) -> None:
        """Release the KV cache only (``/release_kv_cache_memory``)."""
        with self._lock:
            self.engine.cache.reset()
            self._asleep.add("kv_cache")
            self.engine.metrics.sleep_level = 0

    def wake_up(self, tags: list[str] | None) -> bool:
        """Bring back what ``tags`` name (everything for ``None``); return whether the
        engine is fully awake (and then resumed)."""
        with self._lock:
            if tags is None:
                self._asleep.clear()
            else:
                self._asleep -= set(tags)
            fully_awake = not self._asleep
        if fully_awake:
            self.resume()
            self.engine.metrics.sleep_level = None
        return fully_awake
