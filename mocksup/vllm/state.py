"""The child's mutable state: run-time settings, scripted rules, faults, journal, slots.

Every method here is what one control-API route does, so the HTTP door and the Python door
(which calls the HTTP door) share one implementation. All of it is guarded by one lock;
waits (the journal long poll, a queued request's slot) use conditions with deadlines.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections import deque
from typing import Any

from mocksup.vllm.settings import FaultKind, Faults, Latency, ScriptReply, ScriptRule

__all__ = ["Journal", "RuntimeState", "Slots"]


class Journal:
    """The requests served, oldest first, bounded to ``limit`` entries."""

    def __init__(self, limit: int) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._changed = threading.Condition()
        self._next = 0

    def add(self, entry: dict[str, Any]) -> None:
        """Record one finished request."""
        with self._changed:
            entry["index"] = self._next
            self._next += 1
            self._entries.append(entry)
            self._changed.notify_all()

    @property
    def total(self) -> int:
        """Requests recorded since start (cleared ones included)."""
        return self._next

    def clear(self) -> None:
        """Forget every entry."""
        with self._changed:
            self._entries.clear()

    def query(
        self, path: str | None = None, count: int = 0, wait: float = 0.0
    ) -> list[dict[str, Any]]:
        """Entries (whose path is ``path``, when given); waits up to ``wait`` s for ``count``."""
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                found = [e for e in self._entries if path is None or e["path"] == path]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    return found
                self._changed.wait(remaining)


class Slots:
    """At most ``limit`` sequences run at once; the rest wait in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def acquire(self, count: int) -> None:
        """Take ``count`` slots (capped at the limit), waiting for them in FIFO order."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while True:
                    wanted = min(count, self.limit)
                    if self._queue[0] is ticket and self._running + wanted <= self.limit:
                        self._running += wanted
                        return
                    self._cond.wait()
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, count: int) -> None:
        """Give back what :meth:`acquire` took for ``count``."""
        with self._cond:
            self._running -= min(count, self.limit)
            self._cond.notify_all()

    def resize(self, limit: int) -> None:
        """Change the limit; waiting requests are re-examined."""
        with self._cond:
            self.limit = limit
            self._cond.notify_all()


class RuntimeState:
    """Latency, faults, scripted rules and call counting of one running mock."""

    def __init__(
        self, latency: Latency, faults: Faults, rules: list[ScriptRule], seed: int, journal: int
    ) -> None:
        self._lock = threading.Lock()
        self.latency = latency
        self.slots = Slots(latency.max_num_seqs)
        self.journal = Journal(journal)
        self._seed = seed
        self.faults = faults
        self._fault_rng = random.Random(seed)
        self._first_left = faults.first
        self.rules: list[ScriptRule] = []
        self._uses: list[int] = []
        self.calls = 0
        self.set_rules(rules)

    # -- control-API operations --------------------------------------------------------------

    def set_latency(self, update: dict[str, Any]) -> Latency:
        """Merge ``update`` into the latency settings; return the new ones."""
        with self._lock:
            self.latency = Latency.model_validate({**self.latency.model_dump(), **update})
            self.slots.resize(self.latency.max_num_seqs)
            return self.latency

    def set_faults(self, update: dict[str, Any]) -> Faults:
        """Merge ``update`` into the fault settings; ``first`` counts from now on."""
        with self._lock:
            self.faults = Faults.model_validate({**self.faults.model_dump(), **update})
            self._first_left = self.faults.first
            return self.faults

    def set_rules(self, rules: list[ScriptRule]) -> None:
        """Replace the scripted rules (their regexes are compiled now, so errors show here)."""
        for rule in rules:
            if rule.regex is not None:
                re.compile(rule.regex)
        with self._lock:
            self.rules = list(rules)
            self._uses = [0] * len(rules)

    def add_rule(self, rule: ScriptRule) -> None:
        """Append one rule."""
        if rule.regex is not None:
            re.compile(rule.regex)
        with self._lock:
            self.rules.append(rule)
            self._uses.append(0)

    def clear(self) -> None:
        """Empty the journal, restart call numbering and rule use counts, re-seed faults."""
        self.journal.clear()
        with self._lock:
            self.calls = 0
            self._uses = [0] * len(self.rules)
            self._fault_rng = random.Random(self._seed)
            self._first_left = self.faults.first

    def snapshot(self) -> dict[str, Any]:
        """Current settings, as the control API shows them."""
        with self._lock:
            return {
                "latency": self.latency.model_dump(),
                "faults": self.faults.model_dump(),
                "rules": [r.model_dump() for r in self.rules],
                "calls": self.calls,
            }

    # -- per request ---------------------------------------------------------------------------

    def admit(
        self, model: str, text: str, headers: dict[str, str], forced: str | None
    ) -> tuple[int, ScriptReply | None, FaultKind | None, Faults, Latency]:
        """Number a generation request; pick its rule and decide whether it fails.

        Returns the call number, the reply of the first matching rule, the fault kind (or
        ``None``), and the fault and latency settings that apply to it.
        """
        with self._lock:
            self.calls += 1
            call = self.calls
            reply = None
            for i, rule in enumerate(self.rules):
                if rule.times is not None and self._uses[i] >= rule.times:
                    continue
                if _matches(rule, model, text, headers, call):
                    self._uses[i] += 1
                    reply = rule.reply
                    break
            fault: FaultKind | None = None
            if forced is not None:
                fault = forced  # type: ignore[assignment]
            elif self._first_left > 0:
                self._first_left -= 1
                fault = self.faults.kind
            elif self.faults.rate > 0 and self._fault_rng.random() < self.faults.rate:
                fault = self.faults.kind
            return call, reply, fault, self.faults, self.latency

    def jitter_rng(self, request_key: str) -> random.Random:
        """A generator for one request's latency jitter, reproducible from the seed."""
        digest = hashlib.sha256(f"{self._seed}\x00{request_key}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))


def _matches(rule: ScriptRule, model: str, text: str, headers: dict[str, str], call: int) -> bool:
    if rule.model is not None and rule.model != model:
        return False
    if rule.contains is not None and rule.contains not in text:
        return False
    if rule.regex is not None and re.search(rule.regex, text) is None:
        return False
    if rule.call is not None and rule.call != call:
        return False
    if rule.header is not None:
        name, _, value = rule.header.partition(":")
        if headers.get(name.strip().lower()) != value.strip():
            return False
    return True
