"""The collector's serving order: OTLP/gRPC answers before the HTTP side is built."""

from __future__ import annotations

import json
import os
import threading
import unittest
import urllib.request
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from mocksup._context import ServeContext
from mocksup.otlp import MockOTLPCollector
from mocksup.otlp._http import OTLPHTTPApp
from mocksup.otlp._ingest import Ingest
from mocksup.otlp._serve import _Settings
from tests.otlp.support import grpc_call


def _one_span() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = "early"
    span.trace_id = bytes(range(1, 17))
    span.span_id = bytes(range(1, 9))
    return request.SerializeToString()


class _ExportsFirst(_Settings):
    """Plain settings whose HTTP side is built only after one gRPC export was answered."""

    answers: list[bytes | None]

    def _app(self, ingest: Ingest, ports: dict[str, Any]) -> OTLPHTTPApp:
        answer, error = grpc_call(f"127.0.0.1:{ports['grpc_port']}", _one_span())
        self.answers.append(answer if error is None else None)
        return super()._app(ingest, ports)


class ServingOrderTest(unittest.TestCase):
    def test_grpc_answers_an_export_before_the_http_side_is_built(self) -> None:
        # mocksup up's first export waits for the collector's child: gRPC serves as soon as
        # both ports are bound, the HTTP side (most of what is left to import) after it.
        server = _ExportsFirst(MockOTLPCollector(port=0, grpc_port=0).model_dump())
        server.answers = []
        status_r, status_w = os.pipe()
        self.addCleanup(os.close, status_r)
        self.addCleanup(os.close, status_w)
        ctx = ServeContext(status_w)
        serving = threading.Thread(target=server.serve, args=(ctx,))
        serving.start()
        self.addCleanup(serving.join, 10)
        self.addCleanup(ctx.request_stop, "test over")
        ready = json.loads(os.read(status_r, 4096))
        self.assertEqual(ready["event"], "ready")
        (answer,) = server.answers
        self.assertIsNotNone(answer)
        accepted = ExportTraceServiceResponse.FromString(answer or b"")
        self.assertEqual(accepted.partial_success.rejected_spans, 0)
        # Stored where the HTTP side reads it once that serves.
        url = f"http://127.0.0.1:{ready['ports']['port']}/mocksup/spans"
        with urllib.request.urlopen(url, timeout=10) as response:
            names = [span["name"] for span in json.load(response)["spans"]]
        self.assertEqual(names, ["early"])


if __name__ == "__main__":
    unittest.main()
