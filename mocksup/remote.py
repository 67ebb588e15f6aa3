"""Mocks another process runs: :func:`mocksup.attach` returns handles to them.

``mocksup up`` may run in another process, a container or on another host (docker compose,
Kubernetes). :func:`~mocksup.attach` takes its ready file (``mocksup up --ready-file``, or the line
``--json`` prints) or one mock's URL and returns the same typed handles a test gets for the
mocks it starts: a :class:`~mocksup.otlp.CollectorClient` for a collector, a
:class:`~mocksup.vllm.VLLMClient` for a vLLM mock, and a :class:`RemoteMock` (``clear``,
``stats``, ``health`` through the standard control routes) for any other mock. Which one is
read from the ready file's ``class`` field, or from ``GET /mocksup/health``.

The handles query and steer; they do not own the processes, so ``stop()`` is refused with a
:class:`NotOwnedError` that says where the mocks are stopped.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from mocksup.control import ControlClient
from mocksup.errors import MockServerError
from mocksup.otlp.client import CollectorClient
from mocksup.vllm.client import VLLMClient

__all__ = (
    "AttachedCollector",
    "AttachedServers",
    "AttachedVLLM",
    "Handle",
    "NotOwnedError",
    "RemoteMock",
    "attach",
    "read_ready_file",
)

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

_H = TypeVar("_H")
#: Seconds between two looks for a ready file that is not there yet.
_READY_POLL = 0.02


class NotOwnedError(MockServerError):
    """A handle from :func:`mocksup.attach` was asked to stop a mock that another process runs.

    ``where`` says who runs it (``mocksup up`` with its pid and host, or the mock's URL).
    """

    def __init__(self, message: str, *, server: str | None = None, where: str = "") -> None:
        super().__init__(message, server=server)
        self.where = where

    def _fields(self) -> dict[str, object]:
        return {"server": self.server, "where": self.where}


class _Attached:
    """What every attached handle adds: where it runs, ``health()``, and a refused ``stop()``."""

    name: str
    url: str
    control: ControlClient
    #: Who runs the mock, for :class:`NotOwnedError` (set by :func:`attach`).
    where: str = ""
    #: The mock's endpoints and environment, from the ready file (empty for a URL).
    entry: Mapping[str, Any] = {}

    def health(self) -> dict[str, Any]:
        """``GET /mocksup/health``: ``{"status": "ok", "name", "class", ...}``.

        :raises ControlAPIError: the mock does not answer.
        """
        answer: dict[str, Any] = self.control.call("GET", "/health")
        return answer

    def is_running(self) -> bool:
        """Whether the mock answers its health route."""
        try:
            return self.health().get("status") == "ok"
        except MockServerError:
            return False

    def endpoints(self) -> dict[str, str]:
        """Where clients reach the mock, by role (from the ready file; else ``{"url": url}``)."""
        return dict(self.entry.get("endpoints") or {"url": self.url})

    def stop(self, timeout: float | None = None) -> None:
        """Refused: the mock belongs to the process that started it.

        :raises NotOwnedError: always, naming where to stop it.
        """
        raise NotOwnedError(
            f"mock server {self.name!r} was attached, not started here: {self.where}",
            server=self.name,
            where=self.where,
        )


class RemoteMock(_Attached):
    """A mock of any class another process runs, through the standard control routes.

    :param url: its HTTP root (its control API lives under ``url + "/mocksup"``).
    :param name: its name, for error messages.
    :param timeout: seconds to wait for each answer.
    """

    def __init__(self, url: str, *, name: str = "mock", timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.name = name
        self.control = ControlClient(self.url, name, timeout)

    def clear(self) -> None:
        """``POST /mocksup/clear``: forget what the mock recorded."""
        self.control.call("POST", "/clear")

    def stats(self) -> dict[str, Any]:
        """``GET /mocksup/stats``: the mock's counters."""
        stats: dict[str, Any] = self.control.call("GET", "/stats")
        return stats

    def __repr__(self) -> str:
        return f"<RemoteMock {self.name!r} {self.url}>"


class AttachedCollector(_Attached, CollectorClient):
    """A :class:`~mocksup.otlp.CollectorClient` for an attached collector."""


class AttachedVLLM(_Attached, VLLMClient):
    """A :class:`~mocksup.vllm.VLLMClient` for an attached vLLM mock."""

    def __init__(self, url: str, name: str = "vllm", timeout: float = 10.0) -> None:
        super().__init__(url, name)
        self._timeout = timeout

    @property
    def control(self) -> ControlClient:  # type: ignore[override]
        """A client of the mock's control API."""
        return ControlClient(self.url, self.name, self._timeout)

    @property
    def base_url(self) -> str:
        """The URL an OpenAI client wants: ``url + "/v1"``."""
        return self.url + "/v1"


#: What :func:`mocksup.attach` returns for one mock.
Handle = AttachedCollector | AttachedVLLM | RemoteMock


class AttachedServers(Mapping[str, Handle]):
    """The mocks :func:`mocksup.attach` found, by name; ``collector`` and ``vllm`` are the only ones
    of their kind, typed.

    ``ready`` is the ready document they came from (``{}`` for a URL); ``where`` who runs
    them.
    """

    def __init__(self, handles: dict[str, Handle], ready: Mapping[str, Any], where: str) -> None:
        self._handles = handles
        self.ready = ready
        self.where = where

    def __getitem__(self, name: str) -> Handle:
        return self._handles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handles)

    def __len__(self) -> int:
        return len(self._handles)

    def server_of(self, kind: type[_H]) -> _H:
        """The only handle that is a ``kind`` (:class:`~mocksup.otlp.CollectorClient`,
        :class:`~mocksup.vllm.VLLMClient`, :class:`RemoteMock`).

        :raises LookupError: there is none, or more than one (then look it up by name).
        """
        found = [h for h in self._handles.values() if isinstance(h, kind)]
        if len(found) != 1:
            raise LookupError(
                f"{'no' if not found else len(found)} {kind.__name__} among the attached "
                f"mocks ({', '.join(self._handles) or 'none'}); look it up by name"
            )
        return found[0]

    @property
    def collector(self) -> AttachedCollector:
        """The only collector."""
        return self.server_of(AttachedCollector)

    @property
    def vllm(self) -> AttachedVLLM:
        """The only vLLM mock."""
        return self.server_of(AttachedVLLM)

    @property
    def env(self) -> dict[str, str]:
        """The environment for a system under test, from the ready file."""
        return dict(self.ready.get("env") or {})

    def clear(self) -> None:
        """``clear()`` every mock that has a control API."""
        for handle in self._handles.values():
            handle.clear()

    def stop(self, timeout: float | None = None) -> None:
        """Refused, as each handle's ``stop()`` is.

        :raises NotOwnedError: always.
        """
        raise NotOwnedError(
            f"these mocks were attached, not started here: {self.where}", where=self.where
        )

    def __repr__(self) -> str:
        return f"AttachedServers({list(self._handles.values())!r})"


def read_ready_file(path: str | os.PathLike[str], wait: float = 0.0) -> dict[str, Any]:
    """The document ``mocksup up --ready-file`` wrote, waiting up to ``wait`` seconds for
    the file to appear (``mocksup up`` writes it once every mock serves).

    :raises FileNotFoundError: it is not there (after ``wait`` seconds).
    :raises ValueError: it is not a ready document.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            text = Path(path).read_text()
            break
        except FileNotFoundError:
            # No portable way to be told a file appeared: look again until the deadline.
            if time.monotonic() >= deadline:
                raise FileNotFoundError(
                    f"no ready file {os.fspath(path)!r}"
                    + (f" after {wait:g} s" if wait else "")
                    + ": is mocksup up --ready-file running, and ready?"
                ) from None
            time.sleep(_READY_POLL)
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{os.fspath(path)!r} is not a ready file: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("servers"), dict):
        raise ValueError(f"{os.fspath(path)!r} is not a ready file: no 'servers' object")
    return document


def attach(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    host: str | None = None,
    wait: float = 0.0,
    timeout: float = 10.0,
) -> AttachedServers:
    """Handles to mocks another process runs (``mocksup up``, here or elsewhere).

    :param source: the path of ``mocksup up``'s ready file, the ready document itself (the
        line ``mocksup up --json`` prints, decoded), or one mock's URL
        (``http://host:4318`` for a collector: its OTLP/HTTP URL; a vLLM mock's root URL).
    :param host: reach the mocks at this host instead of the one in the ready file (a file
        written inside a container or on another machine).
    :param wait: seconds to wait for the ready file to appear.
    :param timeout: seconds each call waits for an answer (beyond a wait's own timeout).
    :raises FileNotFoundError: no ready file there.
    :raises ValueError: the source is no ready file or URL.
    :raises ControlAPIError: the mock at the URL does not answer ``GET /mocksup/health``.
    """
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return _attach_url(source, host, timeout)
    if isinstance(source, Mapping):
        ready: Mapping[str, Any] = source
        label = "the ready document"
    else:
        ready = read_ready_file(source, wait)
        label = f"ready file {os.fspath(source)!r}"
    owner = f"mocksup up (pid {ready.get('pid')}"
    if ready.get("hostname"):
        owner += f" on host {ready['hostname']}"
    where = (
        f"{owner}, from {label}) runs it; stop that process (Ctrl-C, or kill -TERM "
        f"{ready.get('pid')}), or the container or workload that runs it"
    )
    handles: dict[str, Handle] = {}
    for name, entry in ready["servers"].items():
        url = _move(_root_url(entry), host)
        handle = _handle(_kind_of(str(entry.get("class", ""))), url, name, timeout)
        handle.where = where
        handle.entry = {
            **entry,
            "endpoints": {k: _move(v, host) for k, v in (entry.get("endpoints") or {}).items()},
        }
        handles[name] = handle
    return AttachedServers(handles, ready, where)


def _attach_url(url: str, host: str | None, timeout: float) -> AttachedServers:
    parts = urlsplit(_move(url, host))
    if not parts.hostname or not parts.port:
        raise ValueError(
            f"a mock's URL needs a host and a port, such as http://127.0.0.1:4318: {url!r}"
        )
    root = f"{parts.scheme}://{parts.netloc}"
    health = RemoteMock(root, timeout=timeout).health()
    name = str(health.get("name") or "mock")
    where = (
        f"the mock at {root} runs in another process; stop it where it was started (the "
        "mocksup up that runs it, its container or workload)"
    )
    handle = _handle(_kind_of(str(health.get("class", ""))), root, name, timeout)
    handle.where = where
    return AttachedServers({name: handle}, {}, where)


def _root_url(entry: Mapping[str, Any]) -> str:
    """A server's HTTP root: its ``url``, else its OTLP/HTTP or first endpoint."""
    endpoints = entry.get("endpoints") or {}
    url = entry.get("url") or endpoints.get("url") or endpoints.get("otlp_http")
    if not url:
        url = next(iter(endpoints.values()), None)
    if not url:
        raise ValueError(f"the ready file gives no URL for {entry!r}")
    return str(url)


def _move(url: str, host: str | None) -> str:
    """``url`` with its host replaced by ``host`` (if given) and a wildcard address by
    loopback (a server bound to ``0.0.0.0`` is reached on this machine at 127.0.0.1)."""
    parts = urlsplit(url)
    name = parts.hostname or ""
    target = host or {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(name, name)
    if target == name or not parts.port:
        return url
    shown = f"[{target}]" if ":" in target else target
    return urlunsplit(parts._replace(netloc=f"{shown}:{parts.port}"))


def _kind_of(spec: str) -> str:
    """``"collector"``, ``"vllm"`` or ``""`` for a class spec (``module:Class``) or name."""
    from mocksup.otlp import MockOTLPCollector
    from mocksup.vllm import MockVLLMServer

    module_name, _, class_name = spec.rpartition(":")
    cls: Any = None
    if module_name:
        try:
            cls = getattr(importlib.import_module(module_name), class_name, None)
        except ImportError:  # a class this process cannot import: known by name or generic
            cls = None
    if isinstance(cls, type):
        if issubclass(cls, MockOTLPCollector):
            return "collector"
        if issubclass(cls, MockVLLMServer):
            return "vllm"
        return ""
    name = class_name or spec
    return {"MockOTLPCollector": "collector", "MockVLLMServer": "vllm"}.get(name, "")


def _handle(kind: str, url: str, name: str, timeout: float) -> Handle:
    if kind == "collector":
        return AttachedCollector(url, name=name, timeout=timeout)
    if kind == "vllm":
        return AttachedVLLM(url, name, timeout)
    return RemoteMock(url, name=name, timeout=timeout)
