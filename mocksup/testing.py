"""unittest helpers: servers started once per module or class, and accessors per server.

A test module lists its servers and starts them once::

    MOCK_SERVERS = [
        MockServerConfig(name="otlp", server_class=MockOTLPCollector,
                         init_kwargs={"port": 0, "grpc_port": 0}),
        MockServerConfig(name="vllm", server_class=MockVLLMServer,
                         init_kwargs={"port": 0,
                                      "otlp_traces_endpoint": ref("otlp", "grpc_endpoint")}),
    ]

    def setUpModule() -> None:
        start_module_servers(MOCK_SERVERS)

    def tearDownModule() -> None:
        stop_module_servers()

    class ChatTest(MockServerTestCase):
        def test_chat(self) -> None:
            self.vllm.base_url, self.collector.wait_for_spans("llm_request"), ...

A :func:`ref` in ``init_kwargs`` names an attribute of another server that is known only once
that server runs (its real port); the servers it refers to start first. Starting goes through
:func:`mocksup.start_mock_servers_async`, like every other way in.
"""

from __future__ import annotations

import sys
import unittest
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from mocksup.base import MockServerBase, run_sync
from mocksup.harness import (
    MockServerConfig,
    MockServers,
    start_mock_servers_async,
    stop_mock_servers,
)

if TYPE_CHECKING:
    from mocksup.otlp import MockOTLPCollector
    from mocksup.vllm import MockVLLMServer

    _TestCaseBase = unittest.TestCase
else:
    # At run time the mixin derives from object so that it sits in front of either
    # TestCase kind in the MRO; mypy checks it as a TestCase so ``super()`` calls type-check.
    _TestCaseBase = object

__all__ = [
    "AsyncMockServerTestCase",
    "MockServerTestCase",
    "MockServersMixin",
    "ServerRef",
    "module_servers",
    "ref",
    "start_module_servers",
    "start_servers",
    "start_servers_async",
    "stop_module_servers",
]

S = TypeVar("S", bound=MockServerBase)
ConfigLike = MockServerConfig | MockServerBase


@dataclass(frozen=True)
class ServerRef:
    """A value of ``init_kwargs`` taken from another server once that one serves.

    :param server: the name of the other server in the same list.
    :param attribute: a dotted attribute path on it, such as ``"grpc_endpoint"`` or ``"port"``.
    """

    server: str
    attribute: str

    def resolve(self, servers: Mapping[str, MockServerBase]) -> Any:
        """The attribute's value on the running server ``servers[self.server]``."""
        value: Any = servers[self.server]
        for part in self.attribute.split("."):
            value = getattr(value, part)
        return value


def ref(server: str, attribute: str) -> ServerRef:
    """Refer to ``attribute`` of the server named ``server`` (see :class:`ServerRef`)."""
    return ServerRef(server, attribute)


def _refs(config: ConfigLike) -> set[str]:
    if isinstance(config, MockServerBase):
        return set()
    return {v.server for v in config.init_kwargs.values() if isinstance(v, ServerRef)}


def _waves(configs: Sequence[ConfigLike]) -> list[list[ConfigLike]]:
    """Group the configs so each group refers only to servers of earlier groups.

    :raises ValueError: a duplicate name, a reference to no server in the list, a cycle.
    """
    names = [c.name for c in configs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"two mock servers are named {twice[0]!r}; names must be unique")
    for config in configs:
        unknown = _refs(config) - set(names)
        if unknown:
            raise ValueError(
                f"mock server {config.name!r} refers to {sorted(unknown)}, which is not in "
                f"the list ({names})"
            )
    waves: list[list[ConfigLike]] = []
    done: set[str] = set()
    left = list(configs)
    while left:
        wave = [c for c in left if _refs(c) <= done]
        if not wave:
            raise ValueError(
                f"mock servers {[c.name for c in left]} refer to each other in a cycle"
            )
        waves.append(wave)
        done.update(c.name for c in wave)
        left = [c for c in left if c not in wave]
    return waves


def _resolve(config: ConfigLike, started: Mapping[str, MockServerBase]) -> ConfigLike:
    if isinstance(config, MockServerBase) or not _refs(config):
        return config
    kwargs = {
        key: value.resolve(started) if isinstance(value, ServerRef) else value
        for key, value in config.init_kwargs.items()
    }
    return config.model_copy(update={"init_kwargs": kwargs})


async def start_servers_async(configs: Iterable[ConfigLike]) -> dict[str, MockServerBase]:
    """Start the servers and return ``{name: server}`` once all serve, honouring :func:`ref`.

    Servers that refer to none start first, concurrently; then those that refer only to
    started ones, and so on. If one fails, every server already started is stopped.

    :raises ValueError: an unknown name or a cycle in the references (nothing started).
    :raises MockServerError: a server failed to start.
    """
    import asyncio

    ordered = list(configs)
    waves = _waves(ordered)
    started: dict[str, MockServerBase] = {}
    try:
        for wave in waves:
            started.update(await start_mock_servers_async([_resolve(c, started) for c in wave]))
    except BaseException:
        await asyncio.get_running_loop().run_in_executor(None, stop_mock_servers, started)
        raise
    # In the order given, so iterating the mapping follows the list.
    return {config.name: started[config.name] for config in ordered}


def start_servers(configs: Iterable[ConfigLike]) -> MockServers:
    """Start the servers (see :func:`start_servers_async`); sync, with or without a running
    event loop. Stop them with the result's ``stop()`` (or use it as a context manager).
    """
    chosen = list(configs)
    return MockServers(run_sync(lambda: start_servers_async(chosen)))


# -- once per module -----------------------------------------------------------------------

_by_module: dict[str, MockServers] = {}


def _caller_module() -> str:
    # Two frames up: the caller of the public helper, i.e. setUpModule's module.
    return str(sys._getframe(2).f_globals.get("__name__", "__main__"))


def start_module_servers(
    configs: Iterable[ConfigLike], *, module: str | None = None
) -> MockServers:
    """Start the servers of a test module; call it from ``setUpModule``.

    They are registered for :func:`stop_module_servers` and, through
    :func:`unittest.addModuleCleanup`, stopped after the module under ``python -m unittest``
    even when ``setUpModule`` fails later on. pytest does not run unittest's module
    cleanups, so call :func:`stop_module_servers` from ``tearDownModule`` as well (a second
    stop does nothing). Test classes of the module (:class:`MockServersMixin`) find them.

    :param module: the module's ``__name__``; the calling module by default.
    :raises ValueError: see :func:`start_servers_async`.
    :raises MockServerError: a server failed to start (the others were stopped).
    :raises RuntimeError: the module's servers are running already.
    """
    name = module or _caller_module()
    if name in _by_module:
        raise RuntimeError(f"the mock servers of {name} are running already")
    servers = start_servers(configs)
    _by_module[name] = servers
    unittest.addModuleCleanup(_stop_module, name)
    return servers


def stop_module_servers(module: str | None = None, timeout: float | None = None) -> None:
    """Stop the servers :func:`start_module_servers` started for ``module``; idempotent.

    :param module: the module's ``__name__``; the calling module by default.
    :param timeout: each server's stop budget; its ``stop_timeout`` by default.
    """
    _stop_module(module or _caller_module(), timeout)


def _stop_module(name: str, timeout: float | None = None) -> None:
    servers = _by_module.pop(name, None)
    if servers is not None:
        servers.stop(timeout)


def module_servers(module: str) -> MockServers:
    """The servers started for ``module`` by :func:`start_module_servers`.

    :raises LookupError: none are running for it.
    """
    try:
        return _by_module[module]
    except KeyError:
        raise LookupError(
            f"no mock servers run for {module}: call start_module_servers(...) in its "
            "setUpModule, or set mock_server_configs on the test class"
        ) from None


# -- accessors on test classes ---------------------------------------------------------------


class _ServerOf(Generic[S]):
    """The one server of a class among a test class's servers, on the class and its tests."""

    def __init__(self, module: str, class_name: str) -> None:
        self._module = module
        self._class_name = class_name

    def __get__(self, obj: object | None, owner: type[Any]) -> S:
        import importlib

        kind: type[S] = getattr(importlib.import_module(self._module), self._class_name)
        return _servers_of(owner).server_of(kind)


class _ServersOf:
    """The servers of a test class by name, on the class and its tests."""

    def __get__(self, obj: object | None, owner: type[Any]) -> MockServers:
        return _servers_of(owner)


class _Servers(MockServers):
    """A test class's servers, with a lookup by class."""

    def server_of(self, kind: type[S]) -> S:
        """The only server that is a ``kind``.

        :raises LookupError: there is none, or more than one (then use its name).
        """
        found = [s for s in self.values() if isinstance(s, kind)]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise LookupError(
                f"{what} {kind.__name__} among the mock servers {list(self)}; "
                "look it up by name in self.servers"
            )
        return found[0]


def _servers_of(cls: type[Any]) -> _Servers:
    own: MockServers | None = getattr(cls, "_mocksup_class_servers", None)
    servers = own if own is not None else module_servers(cls.__module__)
    return _Servers(dict(servers))


class MockServersMixin(_TestCaseBase):
    """Accessors for a test class's mock servers; put it before the TestCase class.

    The servers are the class's own when ``mock_server_configs`` is set (started once in
    ``setUpClass``, stopped by a class cleanup), else its module's (see
    :func:`start_module_servers`). ``servers`` maps names to servers; ``collector`` and
    ``vllm`` are the only :class:`~mocksup.MockOTLPCollector` and
    :class:`~mocksup.MockVLLMServer`; all three work on the class (in ``setUpClass``) and on
    its tests. Works with :class:`unittest.TestCase` and
    :class:`unittest.IsolatedAsyncioTestCase` alike.
    """

    #: Servers of this class alone, started in ``setUpClass``; empty: the module's.
    mock_server_configs: ClassVar[Sequence[ConfigLike]] = ()
    #: Call ``clear()`` on every server that has it before each test (the collector forgets
    #: its items, vLLM its journal; vLLM's metric counters keep counting).
    clear_before_each_test: ClassVar[bool] = True
    _mocksup_class_servers: ClassVar[MockServers | None] = None

    #: The servers by name: ``self.servers["otlp"]`` (``cls.servers`` in ``setUpClass``).
    servers: ClassVar[_ServersOf] = _ServersOf()
    #: The only :class:`~mocksup.MockOTLPCollector`.
    collector: ClassVar[_ServerOf[MockOTLPCollector]] = _ServerOf(
        "mocksup.otlp", "MockOTLPCollector"
    )
    #: The only :class:`~mocksup.MockVLLMServer`.
    vllm: ClassVar[_ServerOf[MockVLLMServer]] = _ServerOf("mocksup.vllm", "MockVLLMServer")

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if cls.mock_server_configs:
            servers = start_servers(cls.mock_server_configs)
            cls.addClassCleanup(cls._stop_class_servers)
            cls._mocksup_class_servers = servers

    @classmethod
    def _stop_class_servers(cls) -> None:
        servers, cls._mocksup_class_servers = cls._mocksup_class_servers, None
        if servers is not None:
            servers.stop()

    def setUp(self) -> None:
        super().setUp()
        if self.clear_before_each_test:
            for server in self.servers.values():
                clear = getattr(server, "clear", None)
                if callable(clear):
                    clear()

    @classmethod
    def server_of(cls, kind: type[S]) -> S:
        """The only server that is a ``kind`` (a :class:`MockServerBase` subclass).

        :raises LookupError: there is none, or more than one (then look it up by name).
        """
        return _servers_of(cls).server_of(kind)


class MockServerTestCase(MockServersMixin, unittest.TestCase):
    """A :class:`unittest.TestCase` with :class:`MockServersMixin`'s accessors."""


class AsyncMockServerTestCase(MockServersMixin, unittest.IsolatedAsyncioTestCase):
    """A :class:`unittest.IsolatedAsyncioTestCase` with :class:`MockServersMixin`'s accessors."""
