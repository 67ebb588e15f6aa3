"""Supervise a program of your own next to the mocks: ProcessServer.

``python examples/process_server.py`` starts the OTLP collector and, as a second process
supervised like a mock, the small app below (``python examples/process_server.py app``). The
app learns the collector's address from its environment (``OTEL_EXPORTER_OTLP_ENDPOINT``,
filled in by the harness once the collector serves), answers ``/healthz`` and, for each
``GET /work``, sends a span to the collector over OTLP/HTTP (JSON, no SDK needed). The script
calls the app, waits for its span and prints what arrived; everything stops on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mocksup import Endpoint, MockServerConfig, ProcessServer, start_all
from mocksup.otlp import MockOTLPCollector


def export_span(name: str) -> None:
    """Send one span to the collector named by ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    now = time.time_ns()
    span = {
        "traceId": secrets.token_hex(16),
        "spanId": secrets.token_hex(8),
        "name": name,
        "kind": 2,
        "startTimeUnixNano": str(now - 1_000_000),
        "endTimeUnixNano": str(now),
    }
    service = {"key": "service.name", "value": {"stringValue": "my-app"}}
    body = {"resourceSpans": [{"resource": {"attributes": [service]},
                               "scopeSpans": [{"spans": [span]}]}]}  # fmt: skip
    request = urllib.request.Request(
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/v1/traces",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).read()


class App(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/work":
            export_span("GET /work")
        status = 200 if self.path in ("/healthz", "/work") else 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the supervisor keeps the app's output in its log


def app(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), App).serve_forever()


def main() -> None:
    servers = start_all([
        MockServerConfig(name="otlp", server_class=MockOTLPCollector,
                         init_kwargs={"port": 0, "grpc_port": 0}),
        MockServerConfig(name="app", server_class=ProcessServer, init_kwargs={
            "command": [sys.executable, __file__, "app", "--port", "{port}"],
            "ready_url_path": "/healthz",
            "env": {"OTEL_EXPORTER_OTLP_ENDPOINT": Endpoint("otlp", "otlp_http")},
        }),
    ])  # fmt: skip
    with servers:
        collector, my_app = servers["otlp"], servers["app"]
        assert isinstance(collector, MockOTLPCollector)
        urllib.request.urlopen(f"http://127.0.0.1:{my_app.port}/work", timeout=10).read()
        (span,) = collector.wait_for_spans("GET /work", timeout=10)
        print(f"app (pid {my_app.pid}) on port {my_app.port}")
        print(f"collector got: {span.name!r} from {span.resource.attributes['service.name']}")
    print("OK")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", nargs="?", choices=("app",), help="run the app itself")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app(args.port) if args.mode == "app" else main()
