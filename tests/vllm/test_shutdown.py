"""vLLM's ``--shutdown-timeout``: a stop lets the requests in flight finish for that long, new
connections refused, and ``0`` (vLLM's default, its abort mode) cuts them at once."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import openai
from pydantic import ValidationError

from mocksup.otlp import MockOTLPCollector
from mocksup.vllm import Latency, MockVLLMServer
from tests.support import ProcessTestCase
from tests.vllm.support import running, transport_errors, until


def refuses_connections(server: MockVLLMServer) -> bool:
    try:
        socket.create_connection((server.host, server.port), timeout=5).close()
    except (ConnectionRefusedError, ConnectionResetError):
        # Reset during connect(): the listening socket closed while this connection was in
        # its queue, never accepted (a stress run saw it, the drain's first moment).
        return True
    return False


class ShutdownTimeoutTest(ProcessTestCase):
    def start(self, **settings: Any) -> MockVLLMServer:
        server = MockVLLMServer(port=0, **settings)
        self.addCleanup(server.stop)
        server.start()
        return server

    def stream(self, server: MockVLLMServer, tokens: int) -> Any:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        self.addCleanup(client.close)
        return client.completions.create(
            model=server.served_names[0],
            prompt="drain me",
            max_tokens=tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )

    def stop_in_background(self, server: MockVLLMServer) -> threading.Thread:
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        self.addCleanup(stopping.join, 30)
        return stopping

    def test_a_stream_in_flight_finishes_while_new_connections_are_refused(self) -> None:
        collector = MockOTLPCollector(port=0, grpc_port=0)
        self.addCleanup(collector.stop)
        collector.start()
        server = self.start(
            shutdown_timeout=10,
            latency=Latency(itl=0.05),
            otlp_traces_endpoint=collector.grpc_endpoint,
        )
        collector.clear()  # the start-up spans
        with self.assertNoLogs("mocksup", "WARNING"):
            chunks = iter(self.stream(server, tokens=30))  # 1.5 s of tokens
            first = next(chunks)
            started = time.monotonic()
            stopping = self.stop_in_background(server)
            until(lambda: refuses_connections(server))
            rest = list(chunks)
            stopping.join(15)
        self.assertFalse(stopping.is_alive())
        texts = [first, *rest]
        self.assertEqual(texts[-1].usage.completion_tokens, 30)
        self.assertEqual(
            [c.choices[0].finish_reason for c in texts if c.choices and c.choices[0].finish_reason],
            ["length"],
        )
        # The stop ended with the stream (1.45 s of it was left at most), not at the timeout.
        self.assertLess(time.monotonic() - started, 8.0)
        # stop() returned: the drained request's span is in already.
        (span,) = collector.spans("llm_request")
        self.assertEqual(span.attributes["gen_ai.usage.completion_tokens"], 30)

    def test_by_default_a_stop_cuts_a_stream_in_flight(self) -> None:
        server = self.start(latency=Latency(itl=0.05))
        self.assertEqual(server.shutdown_timeout, 0)
        chunks = iter(self.stream(server, tokens=30))
        next(chunks)
        started = time.monotonic()
        server.stop()
        self.assertLess(time.monotonic() - started, 1.0)
        with self.assertRaises(transport_errors()):
            list(chunks)

    def slow_request(self, server: MockVLLMServer) -> socket.socket:
        """A request that would take 30 s, running; its socket."""
        sock = socket.create_connection((server.host, server.port), timeout=10)
        self.addCleanup(sock.close)
        body = b'{"prompt": "slow", "max_tokens": 5}'
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Mocksup-TTFT: 30\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        until(lambda: running(server) >= 1)
        return sock

    def test_the_drain_ends_at_the_timeout_and_cuts_what_is_left(self) -> None:
        server = self.start(shutdown_timeout=1)
        sock = self.slow_request(server)
        started = time.monotonic()
        with self.assertNoLogs("mocksup", "WARNING"):  # no SIGKILL: the stop budget fits
            server.stop()
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 2.5)
        self.assertEqual(sock.recv(4096), b"")  # cut, with no answer

    def test_the_stop_budget_follows_the_drain_unless_given(self) -> None:
        self.assertEqual(MockVLLMServer(shutdown_timeout=30).stop_timeout, 32)
        self.assertEqual(MockVLLMServer(shutdown_timeout=30, stop_timeout=60).stop_timeout, 60)
        self.assertEqual(MockVLLMServer().stop_timeout, 2)
        server = MockVLLMServer()
        server.shutdown_timeout = 5  # on assignment too, until stop_timeout is given
        self.assertEqual(server.stop_timeout, 7)
        server.shutdown_timeout = 0
        self.assertEqual(server.stop_timeout, 2)
        server.stop_timeout = 4
        server.shutdown_timeout = 9
        self.assertEqual(server.stop_timeout, 4)
        with self.assertRaises(ValidationError):
            MockVLLMServer(shutdown_timeout=-1)
        # vLLM takes any drain; a stop takes at most 600 s, so that is the budget.
        self.assertEqual(MockVLLMServer(shutdown_timeout=3600).stop_timeout, 600)
        self.assertEqual(MockVLLMServer(shutdown_timeout=10**400).stop_timeout, 600)
        self.assertEqual(MockVLLMServer(shutdown_timeout=598).stop_timeout, 600)
        # What the child is sent keeps the budget: its drain fits.
        sent = MockVLLMServer.model_validate(MockVLLMServer(shutdown_timeout=5).model_dump())
        self.assertEqual((sent.shutdown_timeout, sent.stop_timeout), (5, 7))

    def test_a_drain_a_given_stop_timeout_cannot_fit_is_shortened(self) -> None:
        # 30 s asked, 3.5 s of stop given: the drain ends 2 s before the stop's end, so the
        # stop needs no SIGKILL.
        server = self.start(shutdown_timeout=30, stop_timeout=3.5)
        sock = self.slow_request(server)
        started = time.monotonic()
        with self.assertNoLogs("mocksup", "WARNING"):
            server.stop()
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 1.4)
        self.assertLess(elapsed, 3.5)
        self.assertEqual(sock.recv(4096), b"")

    def test_the_vllm_flag_sets_it(self) -> None:
        with self.assertNoLogs("mocksup", "INFO"):  # not among the flags ignored
            server = MockVLLMServer.from_cli_args(["facebook/opt-125m", "--shutdown-timeout", "7"])
        self.assertEqual((server.shutdown_timeout, server.stop_timeout), (7, 9))
