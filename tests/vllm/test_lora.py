"""LoRA adapters and several served names (issue 14, item 6): ``--lora-modules``, the runtime
load/unload routes with vLLM's answers, adapters in ``/v1/models``, requests by adapter name,
``vllm:lora_requests_info`` and the base ``model_name`` label, and the span of a LoRA
request."""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import openai
import pydantic

from mocksup.otlp import MockOTLPCollector
from mocksup.vllm import MockVLLMServer
from tests.support import ProcessTestCase
from tests.vllm.support import ServerTestCase, metric_families, raw_post, raw_request

USER = [{"role": "user", "content": "Hello"}]


def adapter_dir(root: str, name: str, config: Any) -> str:
    """A directory holding an ``adapter_config.json`` (text written as given)."""
    path = os.path.join(root, name)
    os.makedirs(path)
    with open(os.path.join(path, "adapter_config.json"), "w", encoding="utf-8") as file:
        file.write(config if isinstance(config, str) else json.dumps(config))
    return path


class LoRATest(ServerTestCase):
    """A base model with two names and two static adapters; runtime updating allowed."""

    folder: str

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        cls.folder = tempfile.mkdtemp(prefix="lora-")
        cls.addClassCleanup(__import__("shutil").rmtree, cls.folder)
        local = adapter_dir(cls.folder, "sql", {"r": 8, "lora_alpha": 16})
        return MockVLLMServer.from_cli_args(
            [
                "org/base-7b",
                "--served-model-name",
                "base",
                "alias",
                "--enable-lora",
                "--lora-modules",
                f"sql={local}",
                json.dumps({"name": "chat", "path": "org/chat-lora", "base_model_name": "alias"}),
                "--max-loras",
                "2",
                "--max-lora-rank",
                "32",
            ],
            port=0,
            env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"},
        )

    def load(self, name: str, path: str, **extra: Any) -> str:
        return self.client.post(
            "/load_lora_adapter", cast_to=str, body={"lora_name": name, "lora_path": path, **extra}
        )

    def test_adapters_are_listed_with_their_lineage(self) -> None:
        cards = {m.id: m for m in self.client.models.list().data}
        self.assertEqual(list(cards)[:4], ["base", "alias", "sql", "chat"])
        self.assertEqual((cards["base"].root, cards["base"].parent), ("org/base-7b", None))
        self.assertEqual(cards["alias"].model_extra["max_model_len"], 4096)
        self.assertEqual(
            (cards["sql"].root, cards["sql"].parent), (os.path.join(self.folder, "sql"), "base")
        )
        self.assertEqual((cards["chat"].root, cards["chat"].parent), ("org/chat-lora", "alias"))
        self.assertIsNone(cards["chat"].model_extra["max_model_len"])

    def test_requests_by_adapter_or_alias_keep_the_base_model_name_label(self) -> None:
        for name in ("sql", "alias"):
            reply = self.client.chat.completions.create(model=name, messages=USER)  # type: ignore[arg-type]
            self.assertEqual(reply.model, name)
        labels = {
            s.labels["model_name"]
            for f in metric_families(self.server).values()
            if f.name.startswith("vllm:")
            for s in f.samples
            if "model_name" in s.labels
        }
        self.assertEqual(labels, {"base"})

    def test_lora_requests_info_shows_the_adapters_in_flight(self) -> None:
        before = time.time()
        self.client.completions.create(model="chat", prompt="hi", max_tokens=3)
        family = metric_families(self.server)["vllm:lora_requests_info"]
        self.assertEqual(family.type, "gauge")
        series = {
            (
                s.labels["running_lora_adapters"],
                s.labels["waiting_lora_adapters"],
                s.labels["max_lora"],
            ): s.value
            for s in family.samples
        }
        self.assertIn(("chat", "chat", "2"), series)
        self.assertIn(("", "", "2"), series)
        self.assertGreaterEqual(series[("chat", "chat", "2")], before - 1)
        self.assertTrue(
            all(
                set(s.labels) == {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}
                for s in family.samples
            )
        )

    def test_runtime_load_and_unload_as_vllm_answers(self) -> None:
        good = adapter_dir(self.folder, "good", {"r": 16})
        self.assertEqual(
            self.load("late", good), "Success: LoRA adapter 'late' added successfully."
        )
        status, headers, _ = raw_post(
            self.server, "/v1/load_lora_adapter", {"lora_name": "late2", "lora_path": good}
        )
        self.assertEqual((status, headers.get("content-type")), (200, None))
        self.assertIn("late", [m.id for m in self.client.models.list().data])
        reply = self.client.completions.create(model="late", prompt="x", max_tokens=2)
        self.assertEqual(reply.model, "late")
        with self.assertRaisesRegex(openai.BadRequestError, "already been loaded"):
            self.load("late", good)
        self.assertIn("success", self.load("late", good, load_inplace=True).lower())
        with self.assertRaisesRegex(openai.BadRequestError, "conflicts with a served base"):
            self.load("alias", good)
        unloaded = self.client.post("/unload_lora_adapter", cast_to=str, body={"lora_name": "late"})
        self.assertEqual(unloaded, "Success: LoRA adapter 'late' removed successfully.")
        with self.assertRaisesRegex(openai.NotFoundError, "The model `late` does not exist"):
            self.client.completions.create(model="late", prompt="x", max_tokens=2)
        with self.assertRaisesRegex(openai.NotFoundError, "'late' cannot be found"):
            self.client.post("/unload_lora_adapter", cast_to=str, body={"lora_name": "late"})

    def test_adapters_that_cannot_load(self) -> None:
        with self.assertRaisesRegex(
            openai.NotFoundError, "Loading lora nothing failed: No adapter found for /not/an/"
        ):
            self.load("nothing", "/not/an/adapter")
        with self.assertRaises(openai.InternalServerError):
            self.load("broken", adapter_dir(self.folder, "broken", "this is not json"))
        with self.assertRaisesRegex(openai.InternalServerError, "greater than max_lora_rank 32"):
            self.load("big", adapter_dir(self.folder, "big", {"r": 64}))
        with self.assertRaisesRegex(openai.InternalServerError, "does not yet support DoRA"):
            self.load("dora", adapter_dir(self.folder, "dora", {"r": 8, "use_dora": True}))
        status, _, data = raw_post(self.server, "/v1/load_lora_adapter", {"lora_name": "x"})
        self.assertEqual((status, json.loads(data)["error"]["param"]), (400, "body.lora_path"))
        # Nothing above took an adapter; the served ones still answer.
        self.assertNotIn("big", [m.id for m in self.client.models.list().data])
        self.client.completions.create(model="sql", prompt="x", max_tokens=2)


class WithoutRuntimeUpdatingTest(ServerTestCase):
    """No ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``: no routes; no ``--enable-lora``: no gauge."""

    def test_routes_and_gauge_are_absent(self) -> None:
        status, _, data = raw_post(
            self.server, "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "org/a"}
        )
        self.assertEqual((status, json.loads(data)), (404, {"detail": "Not Found"}))
        self.assertNotIn("vllm:lora_requests_info", metric_families(self.server))
        not_enabled = MockVLLMServer(port=0, env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"})
        with not_enabled:
            status, _, data = raw_post(
                not_enabled, "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "org/a"}
            )
        self.assertEqual(status, 500)
        self.assertIn("Use --enable-lora", json.loads(data)["error"]["message"])

    def test_settings_vllm_would_not_start_with(self) -> None:
        for settings in (
            {"lora_modules": ["a=org/a"]},
            {"enable_lora": True, "lora_modules": ["a=org/a", "a=org/b"]},
            {"enable_lora": True, "lora_modules": ["mock-model=org/a"]},
            {"enable_lora": True, "lora_modules": ["{not json"]},
        ):
            with self.subTest(settings=settings), self.assertRaises(pydantic.ValidationError):
                MockVLLMServer(**settings)
        status, _, _ = raw_request(self.server, "GET", "/v1/models")
        self.assertEqual(status, 200)


class LoRASpanTest(ProcessTestCase):
    """vLLM 0.33 sets no LoRA attribute on ``llm_request``: an adapter's span is a base one's."""

    def test_the_span_of_a_lora_request(self) -> None:
        with (
            MockOTLPCollector(port=0, grpc_port=0) as collector,
            MockVLLMServer(
                port=0,
                enable_lora=True,
                lora_modules=["tuned=org/tuned"],
                otlp_traces_endpoint=collector.grpc_endpoint,
            ) as server,
        ):
            client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            with client:
                lora = client.completions.create(model="tuned", prompt="hi", max_tokens=2)
                base = client.completions.create(model="mock-model", prompt="hi", max_tokens=2)
            spans = {
                s.attributes["gen_ai.request.id"]: s
                for s in collector.wait_for_spans("llm_request", count=2)
            }
        lora_span, base_span = spans[lora.id + "-0"], spans[base.id + "-0"]
        self.assertEqual(set(lora_span.attributes), set(base_span.attributes))
        self.assertFalse([key for key in lora_span.attributes if "lora" in key])
        self.assertFalse(
            {"gen_ai.request.model", "gen_ai.response.model"} & set(lora_span.attributes)
        )
