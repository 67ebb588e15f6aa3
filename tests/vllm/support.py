"""Helpers of the vLLM mock's end-to-end tests."""

from __future__ import annotations

import http.client
import json
import unittest
from typing import Any

import openai

from mocksup.vllm import MockVLLMServer


class ServerTestCase(unittest.TestCase):
    """Starts one mock per class (its cleanup registered first) and an ``openai`` client."""

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
