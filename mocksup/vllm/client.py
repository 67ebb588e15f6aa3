"""The parent-side client of a vLLM mock: the journal, waits and run-time changes.

:class:`VLLMQueries` holds every query and steering method once, over the mock's HTTP control
API; :class:`~mocksup.vllm.MockVLLMServer` has them (on the server it started), and
:class:`VLLMClient` has them for a mock another process runs, given its URL::

    from mocksup.vllm import VLLMClient

    client = VLLMClient("http://127.0.0.1:8000")
    client.wait_for_requests(count=2, path="/v1/chat/completions")
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mocksup.control import MAX_WAIT, ControlClient
from mocksup.errors import WaitTimeoutError
from mocksup.vllm.settings import Faults, Latency, ScriptRule

__all__ = ("JournalEntry", "VLLMClient", "VLLMQueries")

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One request the mock served (control routes excepted), as its journal keeps it.

    ``headers`` have lower-case names, credentials redacted unless the server was started
    with ``journal_credentials=True``. ``body`` is the decoded JSON, else text (a body cut
    to the journal's 64 KiB ends in a ``...[truncated: N bytes in all]`` marker), else
    ``None``; ``body_size`` is its size in bytes as received. ``status`` is ``None`` for a
    connection the mock reset or cut, or whose client went away; ``client_disconnected``
    says the client closed its connection while its request ran (the request was aborted,
    as vLLM aborts it). ``start`` is Unix time; ``first_byte`` and ``duration`` are seconds
    since arrival on the server's clock.
    """

    index: int
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    body_size: int
    status: int | None
    start: float
    first_byte: float
    duration: float
    client_disconnected: bool = False

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JournalEntry:
        """Build an entry from its control API document."""
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in doc.items() if key in names})


class VLLMQueries:
    """The control-API methods of a vLLM mock; needs ``control`` and ``name``."""

    if TYPE_CHECKING:  # provided by the class that mixes this in (MockServerBase there)
        name: str

        @property
        def control(self) -> ControlClient:
            """A client of the mock's control API."""

    def requests(self, path: str | None = None) -> list[JournalEntry]:
        """The journal: served requests, oldest first (``GET /mocksup/requests``).

        :param path: only requests to this path, such as ``/v1/chat/completions``.
        :raises ControlAPIError: the server could not be reached.
        """
        result = self.control.call("GET", "/requests", params={"path": path})
        return [JournalEntry.from_json(doc) for doc in result["requests"]]

    def wait_for_requests(
        self, *, count: int = 1, path: str | None = None, timeout: float = 10.0
    ) -> list[JournalEntry]:
        """Wait (on the server) until ``count`` requests match, and return them all.

        :raises WaitTimeoutError: fewer came within ``timeout`` seconds; its message lists
            what did arrive.
        """
        deadline = time.monotonic() + timeout
        while True:
            # The server holds one poll at most MAX_WAIT seconds: wait longer in turns.
            left = max(deadline - time.monotonic(), 0.0)
            poll = min(left, MAX_WAIT)
            params = {"path": path, "count": count, "timeout": poll}
            result = self.control.call("GET", "/requests", params=params, wait=poll)
            if len(result["requests"]) >= count or poll >= left:
                break
        entries = [JournalEntry.from_json(doc) for doc in result["requests"]]
        if len(entries) >= count:
            return entries
        everything = self.requests() if path is not None else entries
        arrived = _arrivals(everything)
        listing = "\n".join("    " + line for line in arrived) or "    (nothing)"
        raise WaitTimeoutError(
            f"vLLM mock {self.name!r}: expected {count} request(s) to {path or 'any path'} "
            f"within {timeout:g} s, {len(entries)} matched; {len(everything)} arrived:\n"
            f"{listing}",
            server=self.name,
            expected=count,
            matched=len(entries),
            timeout=timeout,
            arrived=arrived,
        )

    def clear(self, metrics: bool = False) -> None:
        """Empty the journal and restart call numbers, rule counts and ``faults.first``.

        :param metrics: also zero the metric counters and histograms.
        """
        self.control.call("POST", "/clear", body={"metrics": metrics})

    def clear_requests(self) -> None:
        """Empty the journal only (``DELETE /mocksup/requests``)."""
        self.control.call("DELETE", "/requests")

    def set_latency(self, **changes: Any) -> Latency:
        """Change latency settings at run time (fields of :class:`Latency`); returns them all."""
        return Latency.model_validate(self.control.call("PUT", "/latency", body=changes))

    def set_faults(self, **changes: Any) -> Faults:
        """Change fault settings at run time (fields of :class:`Faults`); returns them all."""
        return Faults.model_validate(self.control.call("PUT", "/faults", body=changes))

    def set_scripts(self, rules: list[ScriptRule]) -> None:
        """Replace the scripted rules."""
        body = {"rules": [r.model_dump() for r in rules]}
        self.control.call("PUT", "/scripts", body=body)

    def add_script(self, rule: ScriptRule) -> None:
        """Append one scripted rule (it applies after the existing ones)."""
        self.control.call("POST", "/scripts", body=rule.model_dump())

    def stats(self) -> dict[str, Any]:
        """``{"requests", "generation_calls", "running", "waiting"}`` (``GET /mocksup/stats``).

        ``requests`` counts since start, ``generation_calls`` since start or the last
        :meth:`clear`; ``running`` and ``waiting`` are the live gauges.
        """
        result: dict[str, Any] = self.control.call("GET", "/stats")
        return result

    def summary(self) -> str:
        """One line on what the server received, for ``mocksup up``'s live display."""
        s = self.stats()
        return (
            f"{s['requests']} requests, {s['generation_calls']} generations, "
            f"{s['running']} running, {s['waiting']} waiting"
        )

    def runtime_config(self) -> dict[str, Any]:
        """The running server's settings, latency, faults, rules and call count."""
        result: dict[str, Any] = self.control.call("GET", "/config")
        return result


def _arrivals(entries: list[JournalEntry]) -> list[str]:
    # One line per (method, path, status), with its count, in order of first arrival.
    counts: dict[tuple[str, str, int | None], int] = {}
    for e in entries:
        key = (e.method, e.path, e.status)
        counts[key] = counts.get(key, 0) + 1
    return [f"{n} x {m} {p} -> {s}" for (m, p, s), n in counts.items()]


class VLLMClient(VLLMQueries):
    """Queries and steers a vLLM mock that another process runs.

    :param url: the mock's root URL, such as ``http://127.0.0.1:8000``.
    :param name: the name used in error messages.
    """

    def __init__(self, url: str, name: str = "vllm") -> None:
        self.url = url.rstrip("/")
        self.name = name

    @property
    def control(self) -> ControlClient:
        """A client of the mock's control API."""
        return ControlClient(self.url, self.name)
