"""Helpers of the vLLM mock's end-to-end tests."""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mocksup.vllm import MockVLLMServer
from tests.support import ProcessTestCase, poll_until


class ServerTestCase(ProcessTestCase):
    """Starts one mock per class (its cleanup registered first) and an ``openai`` client;
    fails a test, or the class, that leaves a child process."""

    server: MockVLLMServer
    client: openai.OpenAI

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0)

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = cls.make_server()
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        key = cls.server.openai_env()["OPENAI_API_KEY"]
        cls.client = openai.OpenAI(base_url=cls.server.base_url, api_key=key, max_retries=0)
        cls.addClassCleanup(cls.client.close)


#: A sample by name and its labels other than ``model_name`` and ``engine``.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_families(server: MockVLLMServer) -> dict[str, Metric]:
    """``GET /metrics`` parsed by prometheus_client, by family name."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape(server: MockVLLMServer) -> Samples:
    """Every sample of ``/metrics``, keyed by name and labels (less model and engine)."""
    samples = {}
    for family in metric_families(server).values():
        for s in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in s.labels.items() if k not in ("model_name", "engine"))
            )
            samples[(s.name, labels)] = float(s.value)
    return samples


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail after ``timeout`` seconds. For states only a
    query shows, such as a gauge (asked again with a growing pause: :func:`poll_until`)."""
    poll_until(condition, "the condition was to hold", timeout)


def raw_request(
    server: MockVLLMServer, method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """Any request with http.client; returns status, headers (lower-case) and the body."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def raw_post(
    server: MockVLLMServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST JSON with http.client; returns status, headers (lower-case) and the raw body."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def sse_events(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking vLLM's framing on the way."""
    text = raw.decode()
    assert text.endswith("\n\n"), "every event ends with a blank line"
    events = text[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: "), f"only data lines: {event!r}"
        assert "\n" not in event, f"one line per event: {event!r}"
    return [e[len("data: ") :] for e in events]


def running(server: MockVLLMServer) -> float:
    """``vllm:num_requests_running`` now."""
    return scrape(server)[("vllm:num_requests_running", ())]


def hold(
    case: ProcessTestCase, server: MockVLLMServer, body: Any, headers: dict[str, str],
    path: str = "/v1/completions",
) -> http.client.HTTPConnection:  # fmt: skip
    """Send a request the mock keeps in flight (its ``X-Mocksup-*`` latency headers hold it)
    without reading the answer; closing the returned connection makes the mock abort it
    (closed at the test's end at the latest). Its journal entry is written once the mock
    let go of it."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    case.addCleanup(conn.close)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **headers})
    return conn


def transport_errors() -> tuple[type[BaseException], ...]:
    """What the ``openai`` client raises for a body cut short: ``APIConnectionError``, or,
    in openai versions on httpx, httpx's own error while a stream is read."""
    errors: list[type[BaseException]] = [openai.APIConnectionError]
    try:
        import httpx
    except ImportError:
        pass
    else:
        errors.append(httpx.TransportError)
    return tuple(errors)
