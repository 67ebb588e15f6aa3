"""Settings under vLLM's flag names, ``MockVLLMServer.from_cli_args`` with a real ``vllm
serve`` command line, and the same through a ``mocksup up`` TOML file."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import openai
from pydantic import ValidationError

from mocksup.cli import load_config
from mocksup.vllm import MockVLLMServer
from tests.vllm.support import ServerTestCase, raw_request

#: What a test written for real vLLM hands ``vllm serve`` (vLLM's own test arguments).
VLLM_ARGS = [
    "vllm", "serve", "Qwen/Qwen3-0.6B",
    "--dtype", "bfloat16",
    "--max-model-len", "2k",
    "--enforce-eager",
    "--max-num-seqs", "128",
    "--served-model-name", "qwen", "qwen-alias",
    "--api-key", "k1", "k2",
    "--no-enable-prefix-caching",
    "-tp", "2",
    "--seed=7",
    "--enable-request-id-headers",
    "--compilation-config.mode", "3",
    "-O3",
    "--enable-lora", "--lora-modules", "a=org/a", '{"name": "b", "path": "org/b"}',
    "--enable-server-load-tracking",
]  # fmt: skip


class ParseTest(unittest.TestCase):
    def test_a_vllm_command_line_becomes_settings(self) -> None:
        with self.assertLogs("mocksup.vllm.server", "INFO") as logs:
            server = MockVLLMServer.from_cli_args(VLLM_ARGS)
        self.assertEqual(server.model, "Qwen/Qwen3-0.6B")
        self.assertEqual(server.max_model_len, 2000)
        self.assertEqual(server.max_num_seqs, 128)
        self.assertEqual(server.served_names, ["qwen", "qwen-alias"])
        self.assertEqual(server.api_key, ["k1", "k2"])
        self.assertFalse(server.enable_prefix_caching)
        self.assertEqual(server.seed, 7)
        self.assertTrue(server.enable_request_id_headers)
        self.assertTrue(server.enable_server_load_tracking)
        self.assertTrue(server.enable_lora)
        self.assertEqual([(m.name, m.path) for m in server.lora_modules or []],
                         [("a", "org/a"), ("b", "org/b")])  # fmt: skip
        (note,) = logs.output
        for flag in ("--dtype", "--enforce-eager", "--tensor-parallel-size",
                     "--compilation-config"):  # fmt: skip
            self.assertIn(flag, note)

    def test_settings_given_by_name_win_over_the_command_line(self) -> None:
        server = MockVLLMServer.from_cli_args(["m", "--max-model-len", "100"], max_model_len=50)
        self.assertEqual((server.model, server.max_model_len), ("m", 50))
        # The model positional may also be --model; "serve" alone may lead.
        server = MockVLLMServer.from_cli_args(["serve", "--model", "m2", "--port", "0"])
        self.assertEqual((server.model, server.port, server.served_names), ("m2", 0, ["m2"]))

    def test_flags_vllm_does_not_know_are_refused(self) -> None:
        for args, words in [
            (["m", "--max-model-lenn", "5"], "unknown vllm serve flag '--max-model-lenn'"),
            (["m", "--max-model-len"], "--max-model-len needs a value"),
            (["m", "--max-model-len", "many"], "--max-model-len: invalid value 'many'"),
            (["m", "-x"], "unknown vllm serve flag '-x'"),
            (["m", "n"], "two models given"),
            (["m", "--enforce-eager=1"], "--enforce-eager takes no value"),
        ]:
            with self.subTest(args=args), self.assertRaises(ValidationError) as caught:
                MockVLLMServer.from_cli_args(args)
            self.assertIn(words, str(caught.exception))

    def test_the_old_setting_name_still_works(self) -> None:
        server = MockVLLMServer(served_model_names=["a", "b"])
        self.assertEqual((server.served_names, server.served_model_names), (["a", "b"], ["a", "b"]))

    def test_a_mocksup_up_toml_file_takes_the_same_command_line(self) -> None:
        folder = Path(tempfile.mkdtemp())
        path = folder / "servers.toml"
        path.write_text(
            '[[servers]]\nname = "llm"\nserver_class = "mocksup.vllm:MockVLLMServer"\n'
            'init_kwargs = { port = 0, vllm_serve_args = ["facebook/opt-125m", '
            '"--max-model-len", "512", "--enable-force-include-usage"], '
            "enable_prompt_tokens_details = true }\n"
        )
        (config,) = load_config(path)
        server = config.create()
        assert isinstance(server, MockVLLMServer)
        self.assertEqual((server.model, server.max_model_len), ("facebook/opt-125m", 512))
        self.assertTrue(server.enable_force_include_usage and server.enable_prompt_tokens_details)


class RunningTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer.from_cli_args(
            ["facebook/opt-125m", "--served-model-name", "opt", "--api-key", "k",
             "--max-model-len", "512"], port=0,
        )  # fmt: skip

    def test_the_server_answers_as_the_command_line_says(self) -> None:
        client = openai.OpenAI(base_url=self.server.base_url, api_key="k", max_retries=0)
        self.addCleanup(client.close)
        reply = client.completions.create(model="opt", prompt="hello", max_tokens=2)
        self.assertEqual(reply.model, "opt")
        card = json.loads(
            raw_request(self.server, "GET", "/v1/models", headers={"Authorization": "Bearer k"})[2]
        )["data"][0]
        self.assertEqual(
            (card["id"], card["root"], card["max_model_len"]), ("opt", "facebook/opt-125m", 512)
        )
        self.assertEqual(raw_request(self.server, "GET", "/v1/models")[0], 401)


class EnvironmentKeyTest(ServerTestCase):
    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer(port=0, env={"VLLM_API_KEY": "from-env"})

    def test_vllm_api_key_from_the_environment(self) -> None:
        self.assertEqual(raw_request(self.server, "GET", "/v1/models")[0], 401)
        headers = {"Authorization": "Bearer from-env"}
        self.assertEqual(raw_request(self.server, "GET", "/v1/models", headers=headers)[0], 200)
