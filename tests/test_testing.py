"""mocksup.testing: servers per module and per class, references, accessors, clearing."""

from __future__ import annotations

import asyncio
import json
import socket
import unittest
import urllib.parse
import urllib.request
from typing import ClassVar

import openai
import psutil

from mocksup import (
    Endpoint,
    MockOTLPCollector,
    MockRedisServer,
    MockServerBase,
    MockServerConfig,
    MockVLLMServer,
    ServeContext,
)
from mocksup.serving import bind_tcp
from mocksup.testing import (
    AsyncMockServerTestCase,
    MockServerTestCase,
    start_module_servers,
    stop_module_servers,
)
from tests.support import LeakCheck, ProcessTestCase, assert_no_children_left, snapshot


class PeerPing(MockServerBase):
    """Refuses to become ready unless the Redis mock at ``peer_url`` already answers PING."""

    default_name: ClassVar[str] = "peer"
    peer_url: str

    def serve(self, ctx: ServeContext) -> None:
        url = urllib.parse.urlsplit(self.peer_url)
        with socket.create_connection((url.hostname, url.port or 0), timeout=5) as peer:
            peer.sendall(b"PING\r\n")
            if peer.recv(64) != b"+PONG\r\n":
                raise RuntimeError(f"{self.peer_url} did not answer PING")
        sock = bind_tcp(self.host, self.port)
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        sock.close()


MOCK_SERVERS = [
    # Listed first but started second: it needs the cache's real port.
    MockServerConfig(
        name="peer", server_class=PeerPing, init_kwargs={"peer_url": Endpoint("cache", "url")}
    ),
    MockServerConfig(name="cache", server_class=MockRedisServer, init_kwargs={"port": 0}),
]


_before_module: set[int] = set()


def setUpModule() -> None:
    _before_module.update(snapshot())
    start_module_servers(MOCK_SERVERS)


def tearDownModule() -> None:
    stop_module_servers()
    assert_no_children_left(_before_module, f"module {__name__}")


def ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


def post_span(collector: MockOTLPCollector, name: str) -> None:
    """Export one span as OTLP/JSON, as any SDK could."""
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": name,
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    request = urllib.request.Request(
        collector.http_endpoint + "/v1/traces",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


class ModuleServersTest(LeakCheck, MockServerTestCase):
    seen_in_setup_class: ClassVar[list[str]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # The accessors work on the class too, before any test runs.
        cls.seen_in_setup_class = list(cls.servers)

    def test_servers_by_name_in_list_order(self) -> None:
        self.assertEqual(list(self.servers), ["peer", "cache"])
        self.assertEqual(self.seen_in_setup_class, ["peer", "cache"])
        self.assertEqual(ping(self.servers["cache"].port), b"+PONG\r\n")

    def test_endpoint_resolved_once_the_other_server_serves(self) -> None:
        peer, cache = self.servers["peer"], self.servers["cache"]
        assert isinstance(peer, PeerPing)
        self.assertNotEqual(cache.port, 0)
        self.assertEqual(peer.peer_url, f"redis://127.0.0.1:{cache.port}")
        self.assertTrue(peer.is_running())

    def test_typed_lookup(self) -> None:
        self.assertIs(self.server_of(MockRedisServer), self.servers["cache"])
        with self.assertRaisesRegex(LookupError, "no MockOTLPCollector"):
            self.collector  # noqa: B018
        with self.assertRaisesRegex(LookupError, "no MockVLLMServer"):
            self.vllm  # noqa: B018


class AsyncModuleServersTest(LeakCheck, AsyncMockServerTestCase):
    async def test_same_servers_from_an_async_test(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.servers["cache"].port)
        writer.write(b"PING\r\n")
        await writer.drain()
        self.assertEqual(await reader.readline(), b"+PONG\r\n")
        writer.close()
        await writer.wait_closed()


class ClassServersClearedTest(LeakCheck, MockServerTestCase):
    mock_server_configs = (MockOTLPCollector(port=0, grpc_port=None),)

    def test_class_servers_replace_the_module_ones(self) -> None:
        self.assertEqual(list(self.servers), ["otlp"])
        self.assertIs(self.collector, self.servers["otlp"])

    def test_each_test_starts_empty_a(self) -> None:
        post_span(self.collector, "a")
        self.assertEqual([s.name for s in self.collector.spans()], ["a"])

    def test_each_test_starts_empty_b(self) -> None:
        post_span(self.collector, "b")
        self.assertEqual([s.name for s in self.collector.spans()], ["b"])


class AsyncClassServersKeptTest(LeakCheck, AsyncMockServerTestCase):
    mock_server_configs = (
        MockServerConfig(name="llm", server_class=MockVLLMServer, init_kwargs={"port": 0}),
    )
    clear_before_each_test = False

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        with openai.OpenAI(base_url=cls.vllm.base_url, api_key="x", max_retries=0) as client:
            client.models.list()

    async def test_journal_kept_between_tests(self) -> None:
        async with openai.AsyncOpenAI(
            base_url=self.vllm.base_url, api_key="x", max_retries=0
        ) as client:
            reply = await client.chat.completions.create(
                model="mock-model", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
        self.assertEqual(reply.usage and reply.usage.completion_tokens, 3)
        paths = [entry.path for entry in self.vllm.requests()]
        # The request of setUpClass is still there: nothing was cleared.
        self.assertEqual(paths, ["/v1/models", "/v1/chat/completions"])


class ModuleServersHelpersTest(ProcessTestCase):
    def test_module_servers_stop_idempotently(self) -> None:
        servers = start_module_servers([MockRedisServer(name="r")], module="some.module")
        self.addCleanup(stop_module_servers, "some.module")
        with self.assertRaisesRegex(RuntimeError, "running already"):
            start_module_servers([MockRedisServer(name="r")], module="some.module")
        pid = servers["r"].pid
        stop_module_servers("some.module")
        stop_module_servers("some.module")
        self.assertFalse(psutil.pid_exists(pid or 0))


if __name__ == "__main__":
    unittest.main()
