"""CORS as the Collector's ``cors:`` settings configure it (rs/cors semantics), in-process."""

from __future__ import annotations

import unittest

from tests.otlp.support import in_process
from tests.otlp.test_compat import send
from tests.otlp.test_http_input import request_bytes

CORS = {
    "allowed_origins": ["https://app.example.com", "http://*.test"],
    "allowed_headers": ["Content-Type", "X-Tenant"],
    "exposed_headers": ["x-trace"],
    "max_age": 600,
}


def preflight(client: object, origin: str, method: str = "POST", headers: str | None = None):  # type: ignore[no-untyped-def]
    extra = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        extra["Access-Control-Request-Headers"] = headers
    return send(client, method="OPTIONS", content_type=None, **extra)  # type: ignore[arg-type]


class CORSTest(unittest.TestCase):
    def setUp(self) -> None:
        self.client, self.ingest = in_process(cors=CORS)

    def test_preflight_of_an_allowed_origin(self) -> None:
        response = preflight(
            self.client, "https://app.example.com", headers="content-type,x-tenant"
        )
        self.assertEqual(response.status_code, 204)
        headers = response.headers
        self.assertEqual(headers["Access-Control-Allow-Origin"], "https://app.example.com")
        self.assertEqual(headers["Access-Control-Allow-Methods"], "POST")
        self.assertEqual(headers["Access-Control-Allow-Headers"], "content-type,x-tenant")
        self.assertEqual(headers["Access-Control-Allow-Credentials"], "true")
        self.assertEqual(headers["Access-Control-Max-Age"], "600")
        self.assertIn("Access-Control-Request-Method", headers["Vary"])
        # Answered by CORS alone: no request reached the receiver.
        self.assertEqual(self.ingest.store.stats()["requests"], 0)

    def test_wildcard_origins(self) -> None:
        for origin, allowed in (
            ("http://shop.test", True),
            ("http://a.b.test", True),
            ("HTTP://SHOP.TEST", True),  # origins compare without case
            ("https://shop.test", False),
            ("http://test", False),
            ("https://evil.example.com", False),
        ):
            with self.subTest(origin):
                response = preflight(self.client, origin)
                self.assertEqual(response.status_code, 204)
                self.assertEqual("Access-Control-Allow-Origin" in response.headers, allowed)

    def test_preflight_refusals_still_answer_204_without_permission(self) -> None:
        for label, method, headers in (
            ("method", "PUT", None),
            ("header not allowed", "POST", "x-other"),
            ("headers not sorted", "POST", "x-tenant,content-type"),
        ):
            with self.subTest(label):
                response = preflight(self.client, "https://app.example.com", method, headers)
                self.assertEqual(response.status_code, 204)
                self.assertNotIn("Access-Control-Allow-Origin", response.headers)

    def test_actual_requests(self) -> None:
        response = send(self.client, request_bytes(), Origin="http://shop.test")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "http://shop.test")
        self.assertEqual(response.headers["Access-Control-Expose-Headers"], "X-Trace")
        self.assertEqual(response.headers["Vary"], "Origin")
        # Errors carry them too (the browser must be able to read the Status).
        response = send(self.client, b"x", content_type="text/plain", Origin="http://shop.test")
        self.assertEqual(response.status_code, 415)
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "http://shop.test")
        response = send(self.client, request_bytes(), Origin="https://evil.example.com")
        self.assertNotIn("Access-Control-Allow-Origin", response.headers)

    def test_defaults_and_any_origin(self) -> None:
        client, _ = in_process(cors={"allowed_origins": ["*"]})
        response = preflight(client, "https://anything.example", headers="content-type")
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "*")
        response = preflight(client, "https://anything.example", headers="x-tenant")
        self.assertNotIn("Access-Control-Allow-Origin", response.headers)  # not a default
        # Without allowed origins there is no CORS at all (the Collector's default).
        plain, _ = in_process(cors={"allowed_headers": ["X-Tenant"]})
        response = preflight(plain, "https://app.example.com")
        self.assertEqual(response.status_code, 405)
        self.assertNotIn("Vary", response.headers)
