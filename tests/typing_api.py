"""The public API's types, pinned: mypy checks this file (``tox -e type``); nothing runs it.

Each line is a use a user's typed code makes of mocksup. A change that breaks one here
breaks theirs: change it only on purpose, with a line in CHANGES.md.
"""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar

import grpc
from typing_extensions import assert_type

import mocksup
from mocksup import (
    ChildCrashedError,
    ChildSuspendedError,
    ControlAPIError,
    Endpoint,
    MockOTLPCollector,
    MockRedisServer,
    MockServerBase,
    MockServerConfig,
    MockServerError,
    MockServers,
    MockVLLMServer,
    PortInUseError,
    ReadyError,
    ServeContext,
    ServeError,
    StartupTimeoutError,
    StopError,
    WaitTimeoutError,
    start_all,
    start_mock_servers_async,
    stop_all,
    stop_mock_servers,
)
from mocksup.harness import ConfigLike, check_configs
from mocksup.serving import bind_tcp, grpc_server
from mocksup.testing import (
    AsyncMockServerTestCase,
    MockServersMixin,
    MockServerTestCase,
    module_servers,
    start_module_servers,
    stop_module_servers,
)


class MyMock(MockServerBase):
    """A user's mock: settings as fields, one ``serve()``."""

    default_name: ClassVar[str] = "mine"
    greeting: str = "hello"

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        ctx.ready(port=sock.getsockname()[1])
        assert_type(ctx.is_ready, bool)
        assert_type(ctx.should_stop(), bool)
        assert_type(ctx.wait(0.5), bool)
        assert_type(ctx.wait(), bool)
        sock.close()


def a_grpc_server(handlers: list[grpc.GenericRpcHandler]) -> None:
    server, port = grpc_server("::1", 0, handlers=handlers, options=[("grpc.max_pings", 2)])
    assert_type(server, grpc.Server)
    assert_type(port, int)
    server.start()
    server.stop(None).wait()


class QuotaError(MockServerError):
    """A user's error with a field of its own, crossing the pipe with it."""

    def __init__(self, message: str, *, server: str | None = None, quota: int = 0) -> None:
        super().__init__(message, server=server)
        self.quota = quota

    def _fields(self) -> dict[str, object]:
        return {**super()._fields(), "quota": self.quota}


def a_server() -> None:
    mock = MyMock(
        name="mine",
        host="::1",
        port=0,
        start_timeout=5.0,
        stop_timeout=1.0,
        log_dir=Path("logs"),
        env={"A": "b"},
        greeting="hi",
    )
    assert_type(mock.start(), MyMock)
    assert_type(mock.start(timeout=3), MyMock)
    assert_type(mock.stop(), None)
    assert_type(mock.stop(timeout=1.0), None)
    assert_type(mock.is_running(), bool)
    assert_type(mock.check_running(), None)
    assert_type(mock.pid, int | None)
    assert_type(mock.log_path, Path | None)
    assert_type(mock.log_tail(), str)
    assert_type(mock.log_tail(10), str)
    assert_type(mock.url, str)
    assert_type(mock.endpoints(), dict[str, str])
    assert_type(mock.client_env(), dict[str, str])
    assert_type(mock.clear(), None)
    assert_type(mock.stats(), dict[str, Any])
    assert_type(mock.summary(), str)
    starting: Coroutine[Any, Any, None] = mock.await_start()
    starting.close()
    with MyMock() as started:
        assert_type(started, MyMock)


async def in_a_coroutine() -> None:
    async with MockRedisServer(max_value_size=1024, max_connections=8) as redis:
        assert_type(redis, MockRedisServer)
        assert_type(redis.stats(), dict[str, object])
    servers = await start_mock_servers_async([MockRedisServer(), MyMock()])
    assert_type(servers, dict[str, MockServerBase])
    await asyncio.to_thread(stop_mock_servers, servers)


def the_harness() -> None:
    configs: list[ConfigLike] = [
        MockServerConfig(name="otlp", server_class=MockOTLPCollector, init_kwargs={"port": 0}),
        MockServerConfig(
            name="vllm",
            server_class=MockVLLMServer,
            init_kwargs={"otlp_traces_endpoint": Endpoint("otlp", "otlp_grpc")},
        ),
        MyMock(name="mine"),
    ]
    assert_type(MockServerConfig(name="x", server_class=MyMock).depends_on(), set[str])
    assert_type(check_configs(configs), None)
    servers = start_all(configs)
    assert_type(servers, MockServers)
    assert_type(servers["otlp"], MockServerBase)
    assert_type(servers.server_of(MyMock), MyMock)
    assert_type(servers.server_of(MockOTLPCollector), MockOTLPCollector)
    assert_type(servers.clear(), None)
    assert_type(servers.stop(timeout=2.0), None)
    assert_type(stop_mock_servers(servers, timeout=None), None)
    assert_type(stop_mock_servers([MyMock()]), None)
    assert_type(stop_all(), None)
    with start_all() as default:
        assert_type(default, MockServers)
    assert_type(mocksup.__version__, str)


def the_errors(error: MockServerError) -> None:
    assert_type(error.server, str | None)
    assert_type(error.message, str)
    if isinstance(error, ChildCrashedError):
        assert_type(error.returncode, int | None)
        assert_type(error.pid, int | None)
        assert_type(error.output_tail, str)
        assert_type(error.log_path, str | None)
        assert_type(error.ready, bool)
    if isinstance(error, (ChildSuspendedError, StopError)):
        assert_type(error.pid, int | None)
    if isinstance(error, StartupTimeoutError):
        assert_type(error.timeout, float)
    if isinstance(error, ReadyError):
        assert_type(error.field, str)
        assert_type(error.port, object)
    if isinstance(error, ServeError):
        assert_type(error.error_type, str)
        assert_type(error.traceback, str)
    if isinstance(error, PortInUseError):
        assert_type(error.port, int)
        assert_type(error.holder_pid, int | None)
        assert_type(error.holder_name, str | None)
    if isinstance(error, ControlAPIError):
        assert_type(error.status, int | None)
        assert_type(error.url, str)
    if isinstance(error, WaitTimeoutError):
        assert_type(error.expected, int)
        assert_type(error.arrived, list[str])
    failure: AssertionError = WaitTimeoutError("late", expected=1, timeout=2.0)
    own: MockServerError = QuotaError("none left", quota=3)
    assert_type(
        ChildCrashedError.from_exit(
            server="s", pid=1, returncode=-9, output_tail="", log_path=None
        ),
        ChildCrashedError,
    )
    del failure, own


class UsesTheHelpers(MockServerTestCase):
    mock_server_configs = (MockRedisServer(),)
    clear_before_each_test = False

    def test_it(self) -> None:
        assert_type(self.servers, MockServers)
        assert_type(self.collector, MockOTLPCollector)
        assert_type(self.vllm, MockVLLMServer)
        assert_type(self.server_of(MockRedisServer), MockRedisServer)


class UsesTheAsyncHelpers(AsyncMockServerTestCase):
    async def test_it(self) -> None:
        assert_type(self.servers, MockServers)


class MixedIn(MockServersMixin, unittest.TestCase):
    pass


def module_helpers() -> None:
    assert_type(start_module_servers([MyMock()], module="m"), MockServers)
    assert_type(module_servers("m"), MockServers)
    assert_type(stop_module_servers("m", timeout=1.0), None)


def attached_mocks() -> None:
    from mocksup.otlp import CollectorClient, Span
    from mocksup.remote import AttachedServers, NotOwnedError, RemoteMock
    from mocksup.vllm import JournalEntry, VLLMClient

    mocks = mocksup.attach("ready.json", host="mocks.internal", wait=30.0)
    assert_type(mocks, AttachedServers)
    collector: CollectorClient = mocks.collector
    vllm: VLLMClient = mocks.vllm
    assert_type(collector.wait_for_spans("llm_request", count=1, timeout=10.0), list[Span])
    assert_type(vllm.wait_for_requests(count=1, timeout=10.0), list[JournalEntry])
    assert_type(mocks.server_of(RemoteMock).stats(), dict[str, Any])
    assert_type(mocks.env, dict[str, str])
    assert_type(mocksup.attach("http://127.0.0.1:4318").collector.health(), dict[str, Any])
    try:
        mocks.stop()
    except NotOwnedError as error:
        assert_type(error.where, str)
