"""The E2E suite: an application in its own process, the vLLM mock and the OTLP collector.

The mocks start once for this module (``setUpModule``) and stop after it
(``tearDownModule``). vLLM exports its ``llm_request`` spans to the collector, whose port is
chosen at bind time: its ``otlp_traces_endpoint`` is an :class:`~mocksup.Endpoint` of the
collector, so the harness starts the collector first and vLLM once the collector serves,
and the list below stays plain data. The application (``app.py``) runs once, in
``setUpClass``, with the real environment variables a deployment would set; each test then
checks one thing it left behind. Runs under pytest and under
``python -m unittest tests.e2e.test_otel_e2e`` alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families

from mocksup import Endpoint, MockOTLPCollector, MockServerConfig, MockVLLMServer
from mocksup.testing import MockServerTestCase, start_module_servers, stop_module_servers
from tests.support import LeakCheck, assert_no_children_left, snapshot

MOCK_SERVERS = [
    MockServerConfig(
        name="otlp", server_class=MockOTLPCollector, init_kwargs={"port": 0, "grpc_port": 0}
    ),
    MockServerConfig(
        name="vllm",
        server_class=MockVLLMServer,
        # As a deployment names vLLM's service with OTEL_SERVICE_NAME (its default is the
        # SDK's "unknown_service:python").
        init_kwargs={
            "port": 0,
            "otlp_traces_endpoint": Endpoint("otlp", "otlp_grpc"),
            "env": {"OTEL_SERVICE_NAME": "vllm"},
        },
    ),
]

APP = Path(__file__).with_name("app.py")
SERVICE = "e2e-app"
APP_TIMEOUT = 60


#: Our child processes before the module's servers started: none other may be left after.
_before_module: set[int] = set()


def setUpModule() -> None:
    _before_module.update(snapshot())
    start_module_servers(MOCK_SERVERS)


def tearDownModule() -> None:
    stop_module_servers()
    assert_no_children_left(_before_module, f"module {__name__}")


def run_app(env: dict[str, str], prompt: str) -> dict[str, Any]:
    """Run the application to completion; return the JSON summary it prints.

    :raises AssertionError: it failed (its stderr is in the message).
    """
    # Nothing of the caller's own OpenTelemetry or OpenAI settings may leak into the app.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
    done = subprocess.run(
        [sys.executable, str(APP), prompt],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=APP_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"the app exited with {done.returncode}:\n{done.stderr}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def scrape(vllm: MockVLLMServer) -> dict[str, float]:
    """Every sample of vLLM's ``/metrics``, summed over labels, by sample name."""
    with urllib.request.urlopen(vllm.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


class OtelE2ETest(LeakCheck, MockServerTestCase):
    # Every test reads the one run of the app made in setUpClass: nothing is cleared between.
    clear_before_each_test = False
    app: ClassVar[dict[str, Any]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.collector.clear()
        cls.vllm.clear(metrics=True)
        env = {
            **cls.collector.exporter_env(),  # OTLP/HTTP, protobuf
            **cls.vllm.openai_env(),
            "OTEL_SERVICE_NAME": SERVICE,
        }
        cls.app = run_app(env, "What is OpenTelemetry?")

    def test_llm_request_is_a_child_of_the_app_client_span(self) -> None:
        trace_id = self.app["trace_id"]
        (client,) = self.collector.wait_for_spans(
            kind="CLIENT", service_name=SERVICE, trace_id=trace_id
        )
        (server,) = self.collector.wait_for_spans(
            "llm_request", service_name="vllm", trace_id=trace_id
        )
        self.assertEqual(client.span_id, self.app["span_id"])
        self.assertEqual(client.name, "chat mock-model")
        self.assertEqual((server.kind, server.parent_span_id), ("SERVER", client.span_id))
        trace = self.collector.trace(trace_id)
        self.assertEqual(trace.roots, (client,))
        self.assertEqual(trace.children(client), (server,))
        self.assertEqual(trace.orphans, ())

    def test_token_counts_agree_between_response_span_and_metrics(self) -> None:
        usage = self.app["usage"]
        (server,) = self.collector.wait_for_spans("llm_request", trace_id=self.app["trace_id"])
        (client,) = self.collector.wait_for_spans(kind="CLIENT", trace_id=self.app["trace_id"])
        self.assertEqual(server.attributes["gen_ai.request.id"], self.app["response_id"])
        spans = {
            "llm_request": (
                server.attributes["gen_ai.usage.prompt_tokens"],
                server.attributes["gen_ai.usage.completion_tokens"],
            ),
            "client": (
                client.attributes["gen_ai.usage.input_tokens"],
                client.attributes["gen_ai.usage.output_tokens"],
            ),
        }
        samples = scrape(self.vllm)  # counters were zeroed in setUpClass: this run only
        metrics = (samples["vllm:prompt_tokens_total"], samples["vllm:generation_tokens_total"])
        expected = (usage["prompt_tokens"], usage["completion_tokens"])
        self.assertEqual(spans, {"llm_request": expected, "client": expected})
        self.assertEqual(metrics, expected)
        self.assertEqual(samples["vllm:request_success_total"], 1)
        self.assertGreater(usage["prompt_tokens"], 0)
        self.assertGreater(usage["completion_tokens"], 0)

    def test_app_metrics_arrive(self) -> None:
        (metric,) = self.collector.wait_for_metrics(
            "gen_ai.client.token.usage", service_name=SERVICE
        )
        self.assertEqual((metric.type, metric.unit), ("histogram", "{token}"))
        self.assertEqual(metric.scope.name, "e2e.app")
        sums = {p.attributes["gen_ai.token.type"]: (p.count, p.sum) for p in metric.data_points}
        usage = self.app["usage"]
        self.assertEqual(
            sums, {"input": (1, usage["prompt_tokens"]), "output": (1, usage["completion_tokens"])}
        )

    def test_app_logs_arrive_correlated_with_the_span(self) -> None:
        (record,) = self.collector.wait_for_logs(service_name=SERVICE)
        self.assertEqual(
            (record.trace_id, record.span_id), (self.app["trace_id"], self.app["span_id"])
        )
        self.assertEqual(record.severity_text, "INFO")
        self.assertIn(self.app["response_id"], record.body)
        self.assertEqual(record.attributes["gen_ai.response.id"], self.app["response_id"])

    def test_vllm_served_one_chat_completion(self) -> None:
        (entry,) = self.vllm.requests("/v1/chat/completions")
        self.assertEqual(entry.status, 200)
        self.assertTrue(self.app["content"])


if __name__ == "__main__":
    unittest.main()
