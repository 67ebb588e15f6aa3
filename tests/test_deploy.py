"""``examples/deploy``: the Dockerfile, the compose file and the Kubernetes manifests, checked
offline (no container runtime here): the manifests against Kubernetes' schemas
(kubernetes-validate), the compose file against the Compose specification's schema
(check-jsonschema's vendored copy), every ``MOCKSUP_*`` setting and command line through
``mocksup up``'s own parser, and the image's entry command run as a plain process."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

import mocksup
from mocksup import cli
from mocksup._cli.settings import apply_environment, default_server_configs, env_name, load_config
from tests.support import ProcessTestCase

DEPLOY = Path(__file__).resolve().parent.parent / "examples" / "deploy"


def known_variables() -> set[str]:
    """The ``MOCKSUP_*`` variables ``mocksup up`` reads."""
    _, commands = cli._parser()
    return {env_name(a.dest) for a in commands["up"]._actions if a.option_strings} - {
        "MOCKSUP_HELP"
    }


def up_settings(env: dict[str, str], args: list[str], folder: Path) -> list[str]:
    """The servers ``mocksup up ARGS`` starts with ``env``, checked as it checks them."""
    parser, commands = cli._parser()
    apply_environment(commands["up"], env)
    parsed = parser.parse_args(["up", *args])
    if parsed.config is not None:
        return [c.name for c in load_config(folder / parsed.config.name)]
    configs, _ = default_server_configs(parsed)
    return [c.name for c in configs]


def dockerfile() -> dict[str, Any]:
    """ENV, ENTRYPOINT, CMD and the HEALTHCHECK command of the Dockerfile (exec forms)."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    found: dict[str, Any] = {"env": {}}
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            found["env"].update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
        elif instruction in ("ENTRYPOINT", "CMD"):
            found[instruction] = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            found["HEALTHCHECK"] = json.loads(rest.split(" CMD ", 1)[1])
    return found


class ManifestTest(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="mocksup-deploy-"))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.folder)], check=True)

    def documents(self) -> list[dict[str, Any]]:
        text = (DEPLOY / "kubernetes" / "mocksup.yaml").read_text()
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def test_kubernetes_manifests_are_valid(self) -> None:
        version = kubernetes_validate.utils.latest_version()
        documents = self.documents()
        kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
        self.assertEqual(
            kinds,
            [("ConfigMap", "mocksup-collector"), ("Deployment", "mocksup-collector"),
             ("Service", "mocksup-collector"), ("Deployment", "mocksup-vllm"),
             ("Service", "mocksup-vllm")],
        )  # fmt: skip
        for document in documents:
            with self.subTest(document["metadata"]["name"]):
                kubernetes_validate.validate(document, version, strict=True)
        # The validator does catch a broken manifest.
        broken = {**documents[3], "spec": {**documents[3]["spec"], "replicas": "three"}}
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)

    def test_kubernetes_containers_start_what_they_say(self) -> None:
        documents = self.documents()
        (config,) = [d for d in documents if d["kind"] == "ConfigMap"]
        for name, text in config["data"].items():
            (self.folder / name).write_text(text)
        deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
        self.assertEqual(deployments["mocksup-vllm"]["spec"]["replicas"], 3)
        expected = {"mocksup-collector": ["otlp"], "mocksup-vllm": ["vllm"]}
        for name, deployment in deployments.items():
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            with self.subTest(name):
                self.assertLessEqual(set(env), known_variables())
                servers = up_settings(env, container.get("args", []), self.folder)
                self.assertEqual(servers, expected[name])
                # Probes on the routes every mock (and vLLM) answers.
                probe = container["readinessProbe"]["httpGet"]["path"]
                self.assertIn(probe, ("/mocksup/health", "/health"))

    def test_compose_file_is_valid(self) -> None:
        compose = DEPLOY / "compose.yaml"
        check = [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                 "vendor.compose-spec"]  # fmt: skip
        result = subprocess.run([*check, str(compose)], capture_output=True, text=True,
                                timeout=120, check=False)  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        # The schema does catch a broken file.
        broken = self.folder / "compose.yaml"
        broken.write_text(compose.read_text().replace("depends_on:", "depend_on:"))
        result = subprocess.run([*check, str(broken)], capture_output=True, text=True,
                                timeout=120, check=False)  # fmt: skip
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        services = yaml.safe_load(compose.read_text())["services"]
        self.assertEqual(services["vllm"]["deploy"]["replicas"], 3)
        for name, expected in (("collector", ["otlp"]), ("vllm", ["vllm"])):
            env = services[name]["environment"]
            with self.subTest(name):
                self.assertLessEqual(set(env), known_variables())
                self.assertEqual(up_settings(env, [], self.folder), expected)


class ImageEntryTest(ProcessTestCase):
    def test_the_image_command_serves_and_stops(self) -> None:
        image = dockerfile()
        self.assertEqual(image["ENTRYPOINT"][0], "mocksup")
        folder = Path(tempfile.mkdtemp(prefix="mocksup-image-"))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(folder)], check=True)
        ready_file = folder / "ready.json"
        # The image's environment, with free ports and this test's own ready file.
        env = {
            **os.environ,
            **image["env"],
            "MOCKSUP_OTLP_PORT": "0",
            "MOCKSUP_OTLP_GRPC_PORT": "0",
            "MOCKSUP_VLLM_PORT": "0",
            "MOCKSUP_READY_FILE": str(ready_file),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "PYTHONPATH": os.pathsep.join(sys.path),
        }
        proc = self.popen([*image["ENTRYPOINT"], *image["CMD"]], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        mocks = mocksup.attach(ready_file, wait=60)
        self.assertEqual(set(mocks), {"otlp", "vllm"})
        # Bound to every interface as the image says; reached on loopback here.
        self.assertEqual(mocks.ready["servers"]["otlp"]["host"], "0.0.0.0")
        self.assertTrue(mocks.collector.is_running())
        self.assertTrue(mocks.vllm.is_running())
        health = [a.replace(image["env"]["MOCKSUP_READY_FILE"], str(ready_file))
                  for a in image["HEALTHCHECK"]]  # fmt: skip
        check = subprocess.run(health, env=env, capture_output=True, text=True, timeout=60,
                               check=False)  # fmt: skip
        self.assertEqual(check.returncode, 0, check.stderr)
        # docker stop: SIGTERM, exit 0.
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn(b"Ctrl-C stops everything.\n", out)
        self.assertTrue(out.endswith(b"mocksup: stopped\n"), out)


if __name__ == "__main__":
    unittest.main()
