"""The harness: MockServerConfig, concurrent start, stop in parallel, start_all/stop_all."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import tempfile
import threading
import time
import unittest
from pathlib import Path

import psutil
from pydantic import PrivateAttr, ValidationError

from mocksup import (
    ChildCrashedError,
    Endpoint,
    MockRedisServer,
    MockServerBase,
    MockServerConfig,
    PortInUseError,
    start_all,
    start_mock_servers_async,
    stop_all,
    stop_mock_servers,
)
from mocksup.harness import check_configs
from mocksup.testing import start_module_servers, stop_module_servers
from tests.support import AsyncProcessTestCase, ProcessTestCase, children
from tests.targets import (
    CrashBeforeReady,
    Downstream,
    IgnoresStopRequest,
    Rendezvous,
    Sleeper,
    Touch,
)

MOCK_SERVERS = [
    MockServerConfig(name="cache", server_class=MockRedisServer, init_kwargs={"port": 0}),
    MockServerConfig(name="idle", server_class=Sleeper),
]


def ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


class HarnessTest(ProcessTestCase):
    def test_seed_pattern_asyncio_run_then_stop_later(self) -> None:
        # The servers outlive the event loop that started them.
        servers = asyncio.run(start_mock_servers_async(MOCK_SERVERS))
        self.addCleanup(stop_mock_servers, servers)
        self.assertEqual(list(servers), ["cache", "idle"])
        self.assertEqual(servers["cache"].name, "cache")
        self.assertEqual(ping(servers["cache"].port), b"+PONG\r\n")
        pids = [s.pid for s in servers.values()]
        stop_mock_servers(servers)
        self.assertFalse(any(s.is_running() for s in servers.values()))
        self.assertFalse(any(psutil.pid_exists(pid or 0) for pid in pids))

    def test_servers_start_concurrently(self) -> None:
        # Each server reports ready only once all three are waiting at the barrier: a
        # harness that started them one after the other would never get past the first.
        barrier = self.listening_socket()
        configs = [
            MockServerConfig(
                name=f"s{i}",
                server_class=Rendezvous,
                init_kwargs={"barrier_port": barrier.getsockname()[1], "start_timeout": 20},
            )
            for i in range(3)
        ]

        def release() -> None:
            waiting = [barrier.accept()[0] for _ in configs]
            for conn in waiting:
                conn.sendall(b"x")
                conn.close()

        thread = threading.Thread(target=release)
        thread.start()
        servers = asyncio.run(start_mock_servers_async(configs))
        self.addCleanup(stop_mock_servers, servers)
        thread.join()
        self.assertTrue(all(s.is_running() for s in servers.values()))

    def test_one_failure_stops_the_others_and_names_the_server(self) -> None:
        before = children()
        configs = [*MOCK_SERVERS, MockServerConfig(name="broken", server_class=CrashBeforeReady)]
        with self.assertRaises(ChildCrashedError) as caught:
            asyncio.run(start_mock_servers_async(configs))
        self.assertEqual(caught.exception.server, "broken")
        self.assertIn("'broken'", str(caught.exception))
        self.assertEqual(children(), before)

    def test_invalid_config_fails_before_any_process_starts(self) -> None:
        before = children()
        configs = [
            *MOCK_SERVERS,
            MockServerConfig(name="bad", server_class=Sleeper, init_kwargs={"port": -1}),
        ]
        with self.assertRaises(ValidationError):
            asyncio.run(start_mock_servers_async(configs))
        self.assertEqual(children(), before)
        with self.assertRaises(ValidationError):
            MockServerConfig(name="", server_class=Sleeper)

    def test_duplicate_names_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            start_all([Sleeper(name="a"), MockRedisServer(name="a")])

    def test_start_all_context_manager_and_stop_all(self) -> None:
        with start_all(MOCK_SERVERS) as servers:
            self.assertEqual(ping(servers["cache"].port), b"+PONG\r\n")
        self.assertFalse(servers["cache"].is_running())
        again = start_all([Sleeper(name="x")])
        other = start_all([Sleeper(name="y")])
        stop_all()
        self.assertFalse(again["x"].is_running())
        self.assertFalse(other["y"].is_running())

    def test_server_of_and_clear(self) -> None:
        servers = start_all([Sleeper(name="a"), Sleeper(name="b"), MockRedisServer()])
        self.addCleanup(servers.stop)
        redis = servers.server_of(MockRedisServer)
        self.assertIs(redis, servers["redis"])
        with self.assertRaisesRegex(LookupError, "2 Sleeper among the mock servers"):
            servers.server_of(Sleeper)
        with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
            sock.sendall(b"SET k v\r\nSET j w\r\n")
            replies = sock.makefile("rb")
            self.assertEqual([replies.readline(), replies.readline()], [b"+OK\r\n"] * 2)
            replies.close()
        self.assertEqual(redis.stats(), {"keys": 2})
        servers.clear()  # every server's: the Redis mock forgets, the sleepers have nothing
        self.assertEqual(redis.stats(), {"keys": 0})
        self.assertEqual(redis.summary(), "0 keys")

    def test_stop_in_parallel_within_one_budget(self) -> None:
        servers = start_all([IgnoresStopRequest(name=f"s{i}", stop_timeout=1.5) for i in range(3)])
        self.addCleanup(servers.stop)
        started = time.monotonic()
        servers.stop()
        elapsed = time.monotonic() - started
        # Each stop waits for its graceful part (1.5 s less 0.25 s kept for SIGKILL) ...
        self.assertGreaterEqual(elapsed, 1.25)
        # ... and the three wait at once: every SIGTERM came before the first SIGKILL was
        # due. One after the other, each would come 1.25 s after the one before.
        asked = [
            float(re.findall(r"stop requested at (\d+\.\d+)", s.log_tail())[0])
            for s in servers.values()
        ]
        self.assertLess(max(asked) - min(asked), 1.25)
        self.assertFalse(any(s.is_running() for s in servers.values()))

    def test_port_in_use_from_the_harness_names_the_server(self) -> None:
        holder = self.listening_socket()
        configs = [
            MockServerConfig(
                name="cache",
                server_class=MockRedisServer,
                init_kwargs={"port": holder.getsockname()[1]},
            )
        ]
        with self.assertRaises(PortInUseError) as caught:
            start_all(configs)
        self.assertEqual(caught.exception.server, "cache")


class EndpointTest(ProcessTestCase):
    def test_a_server_gets_the_endpoint_of_another_started_first(self) -> None:
        configs = [
            MockServerConfig(
                name="down",
                server_class=Downstream,
                init_kwargs={"upstream": Endpoint("up", "tcp")},
            ),
            MockServerConfig(name="up", server_class=Sleeper),
        ]
        servers = asyncio.run(start_mock_servers_async(configs))
        self.addCleanup(stop_mock_servers, servers)
        self.assertEqual(list(servers), ["down", "up"])
        up, down = servers["up"], servers["down"]
        self.assertEqual(down.upstream, f"tcp://127.0.0.1:{up.port}")  # type: ignore[attr-defined]
        self.assertNotEqual(up.port, 0)

    def test_an_unknown_role_fails_before_anything_starts(self) -> None:
        before = children()
        touched = Path(tempfile.mkdtemp(prefix="mocksup-test-")) / "started"
        self.addCleanup(shutil.rmtree, touched.parent)
        configs = [
            MockServerConfig(name="up", server_class=Touch, init_kwargs={"path": str(touched)}),
            MockServerConfig(
                name="down",
                server_class=Downstream,
                init_kwargs={"upstream": Endpoint("up", "http")},
            ),
        ]
        with self.assertRaisesRegex(
            ValueError, "'down' refers to endpoint 'http' of 'up', which has tcp$"
        ):
            start_all(configs)
        # Known before any process: the server referred to never ran.
        self.assertFalse(touched.exists())
        self.assertEqual(children(), before)

    def test_bad_references_fail_before_anything_starts(self) -> None:
        before = children()
        unknown = [
            MockServerConfig(
                name="down", server_class=Downstream, init_kwargs={"upstream": Endpoint("x", "tcp")}
            )
        ]
        with self.assertRaisesRegex(ValueError, "unknown"):
            start_all(unknown)
        cycle = [
            MockServerConfig(
                name="a", server_class=Downstream, init_kwargs={"upstream": Endpoint("b", "tcp")}
            ),
            MockServerConfig(
                name="b", server_class=Downstream, init_kwargs={"upstream": Endpoint("a", "tcp")}
            ),
        ]
        with self.assertRaisesRegex(ValueError, "refer to each other"):
            start_all(cycle)
        self.assertEqual(children(), before)

    def test_check_configs_says_what_a_start_would_refuse_and_starts_nothing(self) -> None:
        before = children()
        touched = Path(tempfile.mkdtemp(prefix="mocksup-test-")) / "started"
        self.addCleanup(shutil.rmtree, touched.parent)
        up = MockServerConfig(name="up", server_class=Touch, init_kwargs={"path": str(touched)})

        def down(server: str, role: str, name: str = "down") -> MockServerConfig:
            endpoint = Endpoint(server, role)
            return MockServerConfig(
                name=name, server_class=Downstream, init_kwargs={"upstream": endpoint}
            )

        check_configs([down("up", "tcp"), up])  # in any order: the waves come from the references
        refused = {
            "named 'up'; names must be unique": [up, up],
            "'down' refers to unknown nowhere": [up, down("nowhere", "tcp")],
            "'down' refers to endpoint 'http' of 'up', which has tcp": [up, down("up", "http")],
            "refer to each other": [down("b", "tcp", "a"), down("a", "tcp", "b")],
        }
        for message, configs in refused.items():
            with self.subTest(message), self.assertRaisesRegex(ValueError, re.escape(message)):
                check_configs(iter(configs))
        bad = MockServerConfig(name="bad", server_class=Sleeper, init_kwargs={"port": -1})
        with self.assertRaises(ValidationError):
            check_configs([up, bad])
        self.assertFalse(touched.exists())
        self.assertEqual(children(), before)

    def test_a_failed_first_wave_starts_nothing_more(self) -> None:
        before = children()
        configs = [
            MockServerConfig(name="ok", server_class=Sleeper),
            MockServerConfig(name="up", server_class=CrashBeforeReady),
            MockServerConfig(
                name="down",
                server_class=Downstream,
                init_kwargs={"upstream": Endpoint("up", "url")},
            ),
        ]
        with self.assertRaises(ChildCrashedError) as caught:
            start_all(configs)
        self.assertEqual(caught.exception.server, "up")
        self.assertEqual(children(), before)


class InProcessFake(MockServerBase):
    """The seed's two-method contract, exactly as its MockRedisServer example wrote it: a
    mock that overrides ``await_start()`` and ``stop()`` itself (no child process), with
    ``stop(self)`` taking no parameters."""

    _server: socket.socket | None = PrivateAttr(None)

    async def await_start(self) -> None:  # type: ignore[override]
        self._server = socket.socket()
        self._server.bind((self.host, self.port))
        self._server.listen()
        self.port = self._server.getsockname()[1]

    def stop(self) -> None:  # type: ignore[override]
        if self._server is not None:
            self._server.close()
            self._server = None

    def is_running(self) -> bool:
        return self._server is not None


SEED_STYLE = [
    MockServerConfig(name="fake", server_class=InProcessFake),
    MockServerConfig(name="idle", server_class=Sleeper),
]


class SeedStyleTest(ProcessTestCase):
    def assert_serving(self, fake: MockServerBase) -> None:
        with socket.create_connection(("127.0.0.1", fake.port), timeout=5):
            pass

    def test_with_the_async_harness_and_a_stop_timeout(self) -> None:
        servers = asyncio.run(start_mock_servers_async(SEED_STYLE))
        self.addCleanup(stop_mock_servers, servers)
        self.assert_serving(servers["fake"])
        self.assertTrue(servers["idle"].is_running())
        stop_mock_servers(servers, timeout=1.0)  # stop() without a timeout is called so
        self.assertFalse(servers["fake"].is_running())
        self.assertFalse(servers["idle"].is_running())

    def test_with_start_all_and_the_unittest_helpers(self) -> None:
        with start_all(SEED_STYLE) as servers:
            self.assert_serving(servers["fake"])
        self.assertFalse(servers["fake"].is_running())
        servers = start_module_servers(SEED_STYLE, module="seed.style")
        self.addCleanup(stop_module_servers, "seed.style")
        self.assert_serving(servers["fake"])
        stop_module_servers("seed.style", timeout=1.0)
        self.assertFalse(servers["fake"].is_running())
        self.assertFalse(servers["idle"].is_running())
        stop_all(timeout=1.0)


class RunningLoopTest(AsyncProcessTestCase):
    async def test_start_all_inside_a_running_loop(self) -> None:
        servers = start_all([MockRedisServer()])
        self.addCleanup(servers.stop)
        self.assertEqual(ping(servers["redis"].port), b"+PONG\r\n")

    async def test_async_context_manager(self) -> None:
        async with Sleeper() as server:
            self.assertTrue(server.is_running())
        self.assertFalse(server.is_running())

    async def test_a_cancelled_start_stops_the_servers_of_its_wave_already_ready(self) -> None:
        # ``mocksup up`` cancels its start on SIGTERM: a server of the wave that was ready
        # already is stopped and reaped with the cancellation, not left for an exit hook.
        barrier = self.listening_socket()
        barrier.setblocking(False)
        idle = Sleeper(name="idle")
        held = Rendezvous(name="held", barrier_port=barrier.getsockname()[1], start_timeout=60)
        start = asyncio.ensure_future(start_mock_servers_async([idle, held]))
        loop = asyncio.get_running_loop()
        conn, _ = await asyncio.wait_for(loop.sock_accept(barrier), 30)
        self.addCleanup(conn.close)
        deadline = time.monotonic() + 30
        while not idle.is_running():  # a state only a query shows: asked again every 1 ms
            self.assertLess(time.monotonic(), deadline, "idle was not ready within 30 s")
            await asyncio.sleep(0.001)
        pid = idle.pid
        assert pid is not None
        start.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await start
        self.assertFalse(idle.is_running() or held.is_running())
        self.assertFalse(psutil.pid_exists(pid))

    async def test_sync_start_inside_a_running_loop(self) -> None:
        server = Sleeper().start()
        self.addCleanup(server.stop)
        self.assertTrue(server.is_running())


if __name__ == "__main__":
    unittest.main()
