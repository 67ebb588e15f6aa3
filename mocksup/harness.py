"""Start and stop several mock servers together.

``MockServerConfig`` names a server, its class and its settings;
:func:`start_mock_servers_async` starts a list of them concurrently and returns once every one
serves; :func:`stop_mock_servers` stops them in parallel. :func:`start_all` is the one-call
sync entry point (with no event loop or from inside a running one), and :func:`stop_all`
stops whatever it started.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mocksup._sync import run_sync
from mocksup.base import MAX_STOP_TIMEOUT, MockServerBase, check_name, check_seconds

__all__ = (
    "ConfigLike",
    "Endpoint",
    "MockServerConfig",
    "MockServers",
    "check_configs",
    "default_configs",
    "start_all",
    "start_mock_servers_async",
    "start_vllm_fleet",
    "stop_all",
    "stop_mock_servers",
    "vllm_fleet_configs",
)

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

_log = logging.getLogger(__name__)
_S = TypeVar("_S", bound=MockServerBase)


@dataclass(frozen=True)
class Endpoint:
    """A setting that is another server's endpoint, known only once that server serves.

    ``MockServerConfig(name="vllm", server_class=MockVLLMServer,
    init_kwargs={"otlp_traces_endpoint": Endpoint("otlp", "otlp_grpc")})`` makes vLLM export
    its spans to the collector named ``"otlp"``, whatever port it binds. The harness starts
    the server referred to first; ``role`` is a key of its :meth:`MockServerBase.endpoints`.
    An endpoint may also be a value inside a setting's dict, list or tuple (a
    :class:`~mocksup.ProcessServer`'s ``env`` or ``command``, say).
    """

    server: str
    role: str

    #: What stands in for the endpoint while the settings are validated up front.
    PLACEHOLDER: ClassVar[str] = "http://127.0.0.1:1"


class MockServerConfig(BaseModel):
    """One server to start: its name, its class and the keyword arguments for the class.

    :param name: unique name of the server in the mapping the harness returns.
    :param server_class: a :class:`MockServerBase` subclass.
    :param init_kwargs: settings passed to ``server_class`` (``name`` is added); a value, or
        a value inside a dict, list or tuple, may be an :class:`Endpoint` of another server.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str = Field(min_length=1)
    server_class: type[MockServerBase]
    #: Settings, validated by ``server_class`` itself (so typed loosely here).
    init_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return check_name(name)

    def depends_on(self) -> set[str]:
        """The names of the servers whose endpoints this one's settings refer to."""
        return {e.server for e in _endpoints(self.init_kwargs)}

    def create(self, running: Mapping[str, MockServerBase] | None = None) -> MockServerBase:
        """Build the server model; settings are validated here.

        :param running: the servers already serving, to resolve :class:`Endpoint` settings;
            without it each one is validated with a placeholder.
        """
        kwargs: dict[str, Any] = {
            key: _resolve(value, running, self.name) for key, value in self.init_kwargs.items()
        }
        if "name" in self.server_class.model_fields:
            kwargs.setdefault("name", self.name)
        return self.server_class(**kwargs)


def _endpoints(value: object) -> list[Endpoint]:
    """Every :class:`Endpoint` in ``value``, looking into dicts, lists and tuples."""
    if isinstance(value, Endpoint):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [e for item in value for e in _endpoints(item)]
    return []


def _resolve(value: object, running: Mapping[str, MockServerBase] | None, name: str) -> object:
    if isinstance(value, dict):
        return {k: _resolve(v, running, name) for k, v in value.items()}
    if isinstance(value, list | tuple):
        resolved = [_resolve(v, running, name) for v in value]
        return tuple(resolved) if isinstance(value, tuple) else resolved
    if not isinstance(value, Endpoint):
        return value
    if running is None:
        return Endpoint.PLACEHOLDER
    endpoints = running[value.server].endpoints()
    _check_role(name, value, endpoints)
    return endpoints[value.role]


def _check_role(name: str, endpoint: Endpoint, endpoints: Mapping[str, str]) -> None:
    if endpoint.role not in endpoints:
        raise ValueError(
            f"mock server {name!r} refers to endpoint {endpoint.role!r} of "
            f"{endpoint.server!r}, which has {', '.join(sorted(endpoints)) or 'none'}"
        )


#: What the harness starts: a configuration, or a server model built already.
ConfigLike = MockServerConfig | MockServerBase


def _name(config: ConfigLike) -> str:
    return config.name


def _plan(configs: Sequence[ConfigLike]) -> list[list[ConfigLike]]:
    """Check every configuration, then group them in waves: each wave starts concurrently,
    after the servers its settings refer to. No process starts before this passes."""
    names = [_name(c) for c in configs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two mock servers are named {name!r}; names must be unique")
    # Every setting validated (endpoints as placeholders), then every reference checked
    # against the roles the server referred to will have: all before any process starts.
    models = {_name(c): c.create() if isinstance(c, MockServerConfig) else c for c in configs}
    for config in configs:
        if isinstance(config, MockServerConfig):
            missing = config.depends_on() - set(names)
            if missing:
                raise ValueError(
                    f"mock server {config.name!r} refers to unknown {', '.join(sorted(missing))}"
                )
            for endpoint in _endpoints(config.init_kwargs):
                _check_role(config.name, endpoint, models[endpoint.server].endpoints())
    waves: list[list[ConfigLike]] = []
    done: set[str] = set()
    pending = list(configs)
    while pending:
        wave = [c for c in pending if not isinstance(c, MockServerConfig) or c.depends_on() <= done]
        if not wave:
            raise ValueError(f"mock servers {[_name(c) for c in pending]} refer to each other")
        waves.append(wave)
        done.update(_name(c) for c in wave)
        pending = [c for c in pending if c not in wave]
    return waves


def check_configs(configs: Iterable[ConfigLike]) -> None:
    """Check servers as the harness does before it starts any, and start none: names
    unique, settings valid, each :class:`Endpoint` naming a server of the list and one of
    that server's roles, no two servers referring to each other.

    :raises ValueError: a name given twice, an unknown server or role, a cycle.
    :raises pydantic.ValidationError: invalid settings.
    """
    _plan(list(configs))


async def start_mock_servers_async(configs: Iterable[ConfigLike]) -> dict[str, MockServerBase]:
    """Start every server concurrently; return ``{name: server}`` once all of them serve.

    Every configuration is validated before any process starts. Servers whose settings
    refer to another's :class:`Endpoint` start once that one serves; all others at once. If
    one server fails, the ones already started are stopped and its error is raised (it
    names the server); the failures of any others are attached as notes.

    :raises MockServerError: a server failed to start.
    :raises pydantic.ValidationError: invalid settings (nothing was started).
    """
    # Here, not at the top: ``mocksup up`` builds its servers with this module before it
    # hands the first of them to their children, and asyncio is not needed for that.
    import asyncio

    entries = list(configs)
    running: dict[str, MockServerBase] = {}
    try:
        for wave in _plan(entries):
            servers = {
                _name(c): c.create(running) if isinstance(c, MockServerConfig) else c for c in wave
            }
            await _start_wave(servers)
            running.update(servers)
    except BaseException:
        await asyncio.get_running_loop().run_in_executor(None, stop_mock_servers, running)
        raise
    return {_name(c): running[_name(c)] for c in entries}


async def _start_wave(servers: dict[str, MockServerBase]) -> None:
    import asyncio

    try:
        results = await asyncio.gather(
            *(server.await_start() for server in servers.values()), return_exceptions=True
        )
    except asyncio.CancelledError:
        # Cancelled (``mocksup up`` on SIGTERM): the starts under way killed their children;
        # the servers of this wave that were ready already are stopped here.
        started = [server for server in servers.values() if server.is_running()]
        await asyncio.get_running_loop().run_in_executor(None, stop_mock_servers, started)
        raise
    failures = [
        (name, result)
        for name, result in zip(servers, results, strict=True)
        if isinstance(result, BaseException)
    ]
    if not failures:
        return
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

    :param timeout: each server's stop budget; its ``stop_timeout`` by default. A server
        whose own ``stop()`` takes no ``timeout`` is stopped its own way.
    :raises MockServerError: a server could not be stopped (the others still were).
    :raises ValueError: ``timeout`` is not a number of seconds above 0.
    """
    if timeout is not None:
        check_seconds(timeout, "timeout", MAX_STOP_TIMEOUT)
    items = list(servers.values() if isinstance(servers, Mapping) else servers)
    if len(items) <= 1:
        for server in items:
            _stop(server, timeout)
        return
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="mocksup-stop") as pool:
        futures = [pool.submit(_stop, server, timeout) for server in items]
    for future in futures:
        future.result()  # the first failure, once every stop has run


def _stop(server: MockServerBase, timeout: float | None) -> None:
    """``server.stop()``, passing ``timeout`` only when there is one and it is taken.

    A subclass may override ``stop()`` without parameters (the two-method contract).
    """
    if timeout is None or not _takes_timeout(server.stop):
        server.stop()
    else:
        server.stop(timeout=timeout)


def _takes_timeout(stop: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(stop).parameters
    except (TypeError, ValueError):
        return False
    return "timeout" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


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

    def server_of(self, kind: type[_S]) -> _S:
        """The only server that is a ``kind`` (a :class:`MockServerBase` subclass).

        :raises LookupError: there is none, or more than one (then look it up by name).
        """
        found = [server for server in self._servers.values() if isinstance(server, kind)]
        if len(found) != 1:
            raise LookupError(
                f"{'no' if not found else len(found)} {kind.__name__} among the mock servers "
                f"({', '.join(self._servers) or 'none'}); look it up by name"
            )
        return found[0]

    def clear(self) -> None:
        """Call ``clear()`` on every server (between tests)."""
        for server in self._servers.values():
            server.clear()

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


def default_configs(
    *,
    host: str = "127.0.0.1",
    otlp_port: int = 0,
    otlp_grpc_port: int = 0,
    vllm_port: int = 0,
    log_dir: str | os.PathLike[str] | None = None,
    servers: Iterable[str] = ("otlp", "vllm"),
    vllm_replicas: int = 1,
) -> list[MockServerConfig]:
    """The default servers: the OTLP collector ``"otlp"`` and the vLLM mock ``"vllm"``, on
    free ports; with both, vLLM exports its ``llm_request`` spans to the collector (gRPC) and
    the collector's viewer shows vLLM's request journal (``journal_viewer``). With
    ``vllm_replicas`` above 1, replicas ``vllm-0``... on ``vllm_port`` and the ports after it
    (each on a free port when ``vllm_port`` is 0).

    :raises ValueError: the replicas' ports would run past 65535."""
    chosen = set(servers)
    common: dict[str, object] = {"host": host, "log_dir": log_dir}
    configs = []
    # Each mock's module only when it is chosen: ``mocksup up --servers otlp`` should not
    # wait for the vLLM mock's imports.
    if "otlp" in chosen:
        from mocksup.otlp import MockOTLPCollector

        otlp = {**common, "port": otlp_port, "grpc_port": otlp_grpc_port}
        configs.append(
            MockServerConfig(name="otlp", server_class=MockOTLPCollector, init_kwargs=otlp)
        )
    if "vllm" in chosen:
        from mocksup.vllm import MockVLLMServer

        vllm: dict[str, object] = {**common, "port": vllm_port}
        if "otlp" in chosen:
            vllm["otlp_traces_endpoint"] = Endpoint("otlp", "otlp_grpc")
            vllm["journal_viewer"] = Endpoint("otlp", "ui")
        if vllm_replicas == 1:
            configs.append(
                MockServerConfig(name="vllm", server_class=MockVLLMServer, init_kwargs=vllm)
            )
        else:
            if vllm_port and vllm_port + vllm_replicas - 1 > 65535:
                raise ValueError(
                    f"{vllm_replicas} vLLM replicas from port {vllm_port} need ports up to "
                    f"{vllm_port + vllm_replicas - 1}, past 65535: start them lower (or on "
                    "free ports, with port 0)"
                )
            ports = [{"port": vllm_port + i if vllm_port else 0} for i in range(vllm_replicas)]
            settings: dict[str, Any] = dict(vllm)
            configs += vllm_fleet_configs(vllm_replicas, profiles=ports, **settings)
    return configs


def vllm_fleet_configs(
    replicas: int,
    *,
    name: str = "vllm",
    profiles: Sequence[Mapping[str, Any]] = (),
    **settings: Any,
) -> list[MockServerConfig]:
    """``replicas`` vLLM mocks, ``<name>-0`` to ``<name>-<N-1>``, each in its own process
    on a free port (``port=0`` unless ``settings`` name one) with its own ``/metrics``.

    :param profiles: settings that differ between replicas (``latency``, ``faults``,
        ``seed``...): replica ``i`` takes ``profiles[i % len(profiles)]`` over ``settings``.
    :param settings: what every replica has (``MockVLLMServer`` settings; an
        :class:`Endpoint` works too).
    :raises ValueError: ``replicas`` is not 1 to 256.
    """
    from mocksup.vllm import MockVLLMServer

    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 256:
        raise ValueError(f"replicas must be a whole number from 1 to 256, not {replicas!r}")
    return [
        MockServerConfig(
            name=f"{name}-{i}",
            server_class=MockVLLMServer,
            init_kwargs={
                "port": 0,
                **settings,
                **(profiles[i % len(profiles)] if profiles else {}),
            },
        )
        for i in range(replicas)
    ]


def start_vllm_fleet(
    replicas: int, *, profiles: Sequence[Mapping[str, Any]] = (), **settings: Any
) -> MockServers:
    """Start ``replicas`` vLLM mocks concurrently (see
    :func:`~mocksup.harness.vllm_fleet_configs`) and return them once all serve, as
    :func:`start_all` does: a mapping by name, with ``.stop()``, a context manager. For a
    router or gateway under test: ``[s.base_url for s in fleet.values()]``.

    :raises MockServerError: a replica failed to start (the others were stopped).
    """
    return start_all(vllm_fleet_configs(replicas, profiles=profiles, **settings))


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
