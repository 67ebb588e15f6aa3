"""Start and stop several mock servers together.

``MockServerConfig`` names a server, its class and its settings;
:func:`start_mock_servers_async` starts a list of them concurrently and returns once every one
serves; :func:`stop_mock_servers` stops them in parallel. :func:`start_all` is the one-call
sync entry point (with no event loop or from inside a running one), and :func:`stop_all`
stops whatever it started.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mocksup.base import MockServerBase, run_sync

__all__ = [
    "MockServerConfig",
    "MockServers",
    "default_configs",
    "start_all",
    "start_mock_servers_async",
    "stop_all",
    "stop_mock_servers",
]

_log = logging.getLogger("mocksup")


class MockServerConfig(BaseModel):
    """One server to start: its name, its class and the keyword arguments for the class.

    :param name: unique name of the server in the mapping the harness returns.
    :param server_class: a :class:`MockServerBase` subclass.
    :param init_kwargs: settings passed to ``server_class`` (``name`` is added).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str = Field(min_length=1)
    server_class: type[MockServerBase]
    init_kwargs: dict[str, Any] = Field(default_factory=dict)

    def create(self) -> MockServerBase:
        """Build the server model; settings are validated here, before any process starts."""
        kwargs = dict(self.init_kwargs)
        if "name" in self.server_class.model_fields:
            kwargs.setdefault("name", self.name)
        return self.server_class(**kwargs)


ConfigLike = MockServerConfig | MockServerBase


def _create_all(configs: Iterable[ConfigLike]) -> dict[str, MockServerBase]:
    servers: dict[str, MockServerBase] = {}
    for config in configs:
        if isinstance(config, MockServerConfig):
            name, server = config.name, config.create()
        else:
            name, server = config.name, config
        if name in servers:
            raise ValueError(f"two mock servers are named {name!r}; names must be unique")
        servers[name] = server
    return servers


async def start_mock_servers_async(configs: Iterable[ConfigLike]) -> dict[str, MockServerBase]:
    """Start every server concurrently; return ``{name: server}`` once all of them serve.

    Every configuration is validated before any process starts. If one server fails, the
    ones already started are stopped and its error is raised (it names the server); the
    failures of any others are attached as notes.

    :raises MockServerError: a server failed to start.
    """
    servers = _create_all(configs)
    results = await asyncio.gather(
        *(server.await_start() for server in servers.values()), return_exceptions=True
    )
    failures = [
        (name, result)
        for name, result in zip(servers, results, strict=True)
        if isinstance(result, BaseException)
    ]
    if not failures:
        return servers
    started = [
        server for server, result in zip(servers.values(), results, strict=True) if result is None
    ]
    await asyncio.get_running_loop().run_in_executor(None, stop_mock_servers, started)
    first = failures[0][1]
    for name, other in failures[1:]:
        _add_note(first, f"{name!r} failed too: {str(other).splitlines()[0]}")
    raise first


def _add_note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # Python 3.10
        error.__notes__ = [*getattr(error, "__notes__", []), note]  # type: ignore[attr-defined]


def stop_mock_servers(
    servers: Mapping[str, MockServerBase] | Iterable[MockServerBase],
    timeout: float | None = None,
) -> None:
    """Stop every server in parallel; idempotent.

    :param timeout: each server's stop budget; its ``stop_timeout`` by default.
    :raises MockServerError: a server could not be stopped (the others still were).
    """
    items = list(servers.values() if isinstance(servers, Mapping) else servers)
    if not items:
        return
    if len(items) == 1:
        items[0].stop(timeout)
        return
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="mocksup-stop") as pool:
        futures = [pool.submit(server.stop, timeout) for server in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]


class MockServers(Mapping[str, MockServerBase]):
    """The running servers by name, as :func:`start_all` returns them.

    A read-only mapping with :meth:`stop`; as a context manager it stops them on exit.
    """

    def __init__(self, servers: dict[str, MockServerBase]) -> None:
        self._servers = servers

    def __getitem__(self, name: str) -> MockServerBase:
        return self._servers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._servers)

    def __len__(self) -> int:
        return len(self._servers)

    def stop(self, timeout: float | None = None) -> None:
        """Stop every server in parallel (see :func:`stop_mock_servers`)."""
        with _started_lock:
            if self in _started:
                _started.remove(self)
        stop_mock_servers(self._servers, timeout)

    def __enter__(self) -> MockServers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MockServers({list(self._servers.values())!r})"


_started: list[MockServers] = []
_started_lock = threading.Lock()


def default_configs() -> list[MockServerConfig]:
    """The servers :func:`start_all` starts when given none: the OTLP collector and vLLM,
    each on a free port."""
    from mocksup.otlp import MockOTLPCollector
    from mocksup.vllm import MockVLLMServer

    return [
        MockServerConfig(
            name="otlp", server_class=MockOTLPCollector, init_kwargs={"port": 0, "grpc_port": 0}
        ),
        MockServerConfig(name="vllm", server_class=MockVLLMServer, init_kwargs={"port": 0}),
    ]


def start_all(configs: Iterable[ConfigLike] | None = None) -> MockServers:
    """Start the servers concurrently and return them once all serve; sync.

    Works with no event loop and from inside a running one. The result is a mapping by
    name with ``.stop()``, usable as a context manager; :func:`stop_all` stops everything
    this function started.

    :param configs: ``MockServerConfig`` entries or server models; by default the OTLP
        collector (``"otlp"``) and the vLLM mock (``"vllm"``) on free ports.
    :raises MockServerError: a server failed to start (the others were stopped).
    """
    chosen = list(default_configs() if configs is None else configs)
    servers = MockServers(run_sync(lambda: start_mock_servers_async(chosen)))
    with _started_lock:
        _started.append(servers)
    return servers


def stop_all(timeout: float | None = None) -> None:
    """Stop every server that :func:`start_all` started and that is still running."""
    with _started_lock:
        groups = list(_started)
    for group in groups:
        group.stop(timeout)
