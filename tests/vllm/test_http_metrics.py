"""prometheus-fastapi-instrumentator's families as vLLM's API server fills them.

The instrumentator observes the request's and the response's ``Content-Length`` headers (0
when one has none: a chunked request body, a streamed answer) and the time from the request
to the end of its answer; the tests send known requests and compare with what the client
sent and received.
"""

from __future__ import annotations

import http.client
import json
import time

from tests.vllm.support import Samples, ServerTestCase, raw_request, scrape, sse_events

COMPLETIONS = "/v1/completions"
JSON = {"Content-Type": "application/json"}


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How far a sample moved between two scrapes (absent before: from 0)."""
    key = (name, tuple(sorted(labels.items())))
    return after[key] - before.get(key, 0.0)


class SizesTest(ServerTestCase):
    def sizes_moved(self, before: Samples, handler: str) -> tuple[float, ...]:
        after = scrape(self.server)
        return tuple(
            moved(before, after, f"http_{kind}_size_bytes_{part}", handler=handler)
            for kind in ("request", "response")
            for part in ("count", "sum")
        )

    def test_a_request_and_its_answer_as_the_client_saw_them(self) -> None:
        body = json.dumps({"prompt": "Hello there", "max_tokens": 7}).encode()
        before = scrape(self.server)
        status, headers, data = raw_request(self.server, "POST", COMPLETIONS, body, JSON)
        self.assertEqual(status, 200)
        self.assertEqual(int(headers["content-length"]), len(data))
        self.assertEqual(self.sizes_moved(before, COMPLETIONS), (1, len(body), 1, len(data)))

    def test_a_stream_answers_without_a_length(self) -> None:
        body = json.dumps({"prompt": "Hi", "max_tokens": 5, "stream": True}).encode()
        before = scrape(self.server)
        status, headers, data = raw_request(self.server, "POST", COMPLETIONS, body, JSON)
        self.assertEqual((status, "content-length" in headers), (200, False))
        self.assertEqual(sse_events(data)[-1], "[DONE]")
        self.assertEqual(self.sizes_moved(before, COMPLETIONS), (1, len(body), 1, 0))

    def test_the_header_counts_not_the_bytes_read(self) -> None:
        # An unknown path never reads its body: the header's length is observed all the same.
        body = b'{"prompt": "nobody reads this"}'
        before = scrape(self.server)
        status, _, data = raw_request(self.server, "POST", "/v1/nothing", body, JSON)
        self.assertEqual(status, 404)
        self.assertEqual(self.sizes_moved(before, "none"), (1, len(body), 1, len(data)))
        # A chunked body has no Content-Length: 0, however long it is.
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        self.addCleanup(conn.close)
        chunks = [b'{"prompt": "in two', b' pieces", "max_tokens": 2}']
        before = scrape(self.server)
        conn.request("POST", COMPLETIONS, iter(chunks), JSON, encode_chunked=True)
        response = conn.getresponse()
        data = response.read()
        self.assertEqual(response.status, 200, data)
        self.assertEqual(self.sizes_moved(before, COMPLETIONS), (1, 0, 1, len(data)))


class DurationTest(ServerTestCase):
    def test_a_held_request_lasts_at_least_its_delay(self) -> None:
        delay = 0.3
        body = json.dumps({"prompt": "Hello", "max_tokens": 1}).encode()
        before = scrape(self.server)
        started = time.monotonic()
        status, _, _ = raw_request(
            self.server, "POST", COMPLETIONS, body, {**JSON, "X-Mocksup-TTFT": str(delay)}
        )
        elapsed = time.monotonic() - started
        after = scrape(self.server)
        self.assertEqual(status, 200)
        labels = {"handler": COMPLETIONS, "method": "POST"}
        lowr = "http_request_duration_seconds"
        self.assertEqual(moved(before, after, lowr + "_count", **labels), 1)
        seconds = moved(before, after, lowr + "_sum", **labels)
        self.assertGreaterEqual(seconds, delay)
        self.assertLessEqual(seconds, elapsed)  # the server's span of time is within ours
        # Bucketed above 0.1 s, within 0.5 s unless the machine stalled it.
        self.assertEqual(moved(before, after, lowr + "_bucket", le="0.1", **labels), 0)
        self.assertEqual(moved(before, after, lowr + "_bucket", le="+Inf", **labels), 1)
        highr = "http_request_duration_highr_seconds"
        self.assertEqual(moved(before, after, highr + "_count"), 1)
        self.assertAlmostEqual(moved(before, after, highr + "_sum"), seconds, places=9)
        self.assertEqual(moved(before, after, highr + "_bucket", le="0.25"), 0)
