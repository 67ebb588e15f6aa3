"""The child's run-time settings: latency, faults, scripted rules and call counting.

Every method here is what one control-API route does, so the HTTP door and the Python door
(which calls the HTTP door) share one implementation. One lock guards the settings; script
rules are matched outside it (see :mod:`._matching`), so a slow pattern never holds it.
"""

from __future__ import annotations

import hashlib
import random
import threading
from typing import Any

from mocksup.vllm._journal import Journal
from mocksup.vllm._matching import matches
from mocksup.vllm._slots import Slots
from mocksup.vllm.settings import FaultKind, Faults, Latency, ScriptReply, ScriptRule

__all__ = ["Admission", "RuntimeState"]


class Admission:
    """What :meth:`RuntimeState.admit` decided for one generation request."""

    __slots__ = ("call", "fault", "faults", "latency", "reply")

    def __init__(
        self,
        call: int,
        reply: ScriptReply | None,
        fault: FaultKind | None,
        faults: Faults,
        latency: Latency,
    ) -> None:
        self.call = call
        self.reply = reply
        self.fault = fault
        self.faults = faults
        self.latency = latency


class RuntimeState:
    """Latency, faults, scripted rules and call counting of one running mock."""

    def __init__(
        self,
        latency: Latency,
        faults: Faults,
        rules: list[ScriptRule],
        seed: int,
        journal: int,
        *,
        max_num_seqs: int = 256,
    ) -> None:
        self._lock = threading.Lock()
        self.max_num_seqs = max_num_seqs
        self.latency = latency
        self.slots = Slots(latency.max_num_seqs or max_num_seqs)
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
            self.slots.resize(self.latency.max_num_seqs or self.max_num_seqs)
            return self.latency

    def set_faults(self, update: dict[str, Any]) -> Faults:
        """Merge ``update`` into the fault settings; ``first`` counts from now on."""
        with self._lock:
            self.faults = Faults.model_validate({**self.faults.model_dump(), **update})
            self._first_left = self.faults.first
            return self.faults

    def set_rules(self, rules: list[ScriptRule]) -> None:
        """Replace the scripted rules (their patterns were compiled when validated)."""
        with self._lock:
            self.rules = list(rules)
            self._uses = [0] * len(rules)

    def add_rule(self, rule: ScriptRule) -> None:
        """Append one rule."""
        with self._lock:
            self.rules = [*self.rules, rule]
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
        self, model: str, text: str, headers: dict[str, str], forced: FaultKind | None
    ) -> Admission:
        """Number a generation request, pick its rule and decide whether it fails."""
        with self._lock:
            self.calls += 1
            call = self.calls
            rules = self.rules
            fault: FaultKind | None = forced
            if fault is None and self._first_left > 0:
                self._first_left -= 1
                fault = self.faults.kind
            elif (
                fault is None
                and self.faults.rate > 0
                and self._fault_rng.random() < self.faults.rate
            ):
                fault = self.faults.kind
            faults, latency = self.faults, self.latency
        reply = self._pick_rule(rules, model, text, headers, call)
        return Admission(call, reply, fault, faults, latency)

    def _pick_rule(
        self, rules: list[ScriptRule], model: str, text: str, headers: dict[str, str], call: int
    ) -> ScriptReply | None:
        # Matched outside the lock; a rule's use is claimed under it, so ``times`` holds
        # even when two requests match it at once (the loser tries the next rule).
        for i, rule in enumerate(rules):
            if rule.times is not None and not self._has_uses_left(rules, i):
                continue
            if not matches(rule, model, text, headers, call):
                continue
            with self._lock:
                if self.rules is not rules:
                    return None  # replaced meanwhile: the new rules start from the next call
                if rule.times is None or self._uses[i] < rule.times:
                    self._uses[i] += 1
                    return rule.reply
        return None

    def _has_uses_left(self, rules: list[ScriptRule], i: int) -> bool:
        with self._lock:
            return self.rules is not rules or self._uses[i] < (rules[i].times or 0)

    def jitter_rng(self, request_key: str) -> random.Random:
        """A generator for one request's latency jitter, reproducible from the seed."""
        digest = hashlib.sha256(f"{self._seed}\x00{request_key}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))
