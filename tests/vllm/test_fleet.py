"""A fleet (issue 14, item 7): replicas started together, each its own process, port and
``/metrics``, with profiles of their own; and one server reporting data-parallel ranks
``engine="0"`` to ``"N-1"`` as ``--data-parallel-size`` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import openai

from mocksup import start_vllm_fleet
from mocksup.harness import default_configs, vllm_fleet_configs
from mocksup.vllm import MockVLLMServer
from tests.support import ProcessTestCase
from tests.vllm.support import ServerTestCase, metric_families, raw_post, scrape, until


def by_engine(server: MockVLLMServer, name: str) -> dict[str, float]:
    """The samples of one family by their ``engine`` label."""
    family = metric_families(server)[name]
    return {s.labels["engine"]: s.value for s in family.samples if s.name == name}


class DataParallelTest(ServerTestCase):
    """``data_parallel_size=3``: three ranks, each with its own ``max_num_seqs``."""

    @classmethod
    def make_server(cls) -> MockVLLMServer:
        return MockVLLMServer.from_cli_args(
            ["m", "-dp", "3", "--max-num-seqs", "2"],
            port=0,
            latency={"itl": 0.02},
        )

    def stream(self) -> None:
        body = {"prompt": "go", "max_tokens": 30, "ignore_eos": True, "stream": True}
        raw_post(self.server, "/v1/completions", body)

    def test_every_engine_family_has_one_series_per_rank(self) -> None:
        families = metric_families(self.server)
        for name, family in families.items():
            if not name.startswith("vllm:") or name.startswith("vllm:admission_rejections"):
                continue
            engines = {s.labels.get("engine") for s in family.samples}
            self.assertEqual(engines, {"0", "1", "2"}, name)
        info = [s for s in families["vllm:cache_config_info"].samples]
        self.assertEqual([s.labels["engine"] for s in info], ["0", "1", "2"])

    def test_requests_spread_over_the_ranks_and_each_admits_its_own(self) -> None:
        self.server.clear(metrics=True)
        threads = [threading.Thread(target=self.stream) for _ in range(6)]
        for thread in threads:
            thread.start()
        # Six streams over three ranks of two slots: two run on each, none waits.
        until(
            lambda: by_engine(self.server, "vllm:num_requests_running") == {"0": 2, "1": 2, "2": 2}
        )
        self.assertEqual(set(by_engine(self.server, "vllm:num_requests_waiting").values()), {0})
        for thread in threads:
            thread.join()
        samples = scrape(self.server)
        done = metric_families(self.server)["vllm:request_success"]
        finished = {
            s.labels["engine"]: s.value
            for s in done.samples
            if s.labels["finished_reason"] == "length" and s.name.endswith("_total")
        }
        self.assertEqual(finished, {"0": 2, "1": 2, "2": 2})
        self.assertEqual(samples[("vllm:num_requests_running", ())], 0)

    def test_a_run_time_max_num_seqs_applies_to_every_rank(self) -> None:
        self.server.set_latency(max_num_seqs=1)
        self.addCleanup(self.server.set_latency, max_num_seqs=None)
        threads = [threading.Thread(target=self.stream) for _ in range(6)]
        for thread in threads:
            thread.start()
        until(
            lambda: by_engine(self.server, "vllm:num_requests_waiting") == {"0": 1, "1": 1, "2": 1}
        )
        self.assertEqual(
            by_engine(self.server, "vllm:num_requests_running"), {"0": 1, "1": 1, "2": 1}
        )
        self.assertEqual((self.server.stats()["running"], self.server.stats()["waiting"]), (3, 3))
        for thread in threads:
            thread.join()


class FleetTest(ProcessTestCase):
    """Replicas started together, each a process of its own with its own profile."""

    def test_a_fleet_of_replicas_with_profiles(self) -> None:
        profiles = [{"latency": {"ttft": 0.0}}, {"faults": {"kind": "rate_limit", "first": 1}}]
        started = time.monotonic()
        with start_vllm_fleet(3, profiles=profiles, served_model_name="fleet-model") as fleet:
            elapsed = time.monotonic() - started
            self.assertEqual(list(fleet), ["vllm-0", "vllm-1", "vllm-2"])
            servers = list(fleet.values())
            assert all(isinstance(s, MockVLLMServer) for s in servers)
            self.assertEqual(len({s.port for s in servers}), 3)
            self.assertEqual(len({s.pid for s in servers}), 3)
            outcomes = []
            for server in servers:
                client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)  # type: ignore[attr-defined]
                with client:
                    try:
                        client.completions.create(model="fleet-model", prompt="hi", max_tokens=2)
                        outcomes.append("ok")
                    except openai.RateLimitError:
                        outcomes.append("429")
            # Replica 1 has the fault profile; each replica counts only its own traffic.
            self.assertEqual(outcomes, ["ok", "429", "ok"])
            counts = [
                scrape(s)[("vllm:request_success_total", (("finished_reason", "length"),))]
                for s in servers
            ]  # type: ignore[arg-type]
            self.assertEqual(counts, [1, 0, 1])
        self.assertLess(elapsed, 60)
        self.assertFalse(any(s.is_running() for s in servers))

    def test_configs_and_their_validation(self) -> None:
        configs = vllm_fleet_configs(2, name="rep", profiles=[{"seed": 1}, {"seed": 2}], port=0)
        self.assertEqual(
            [(c.name, c.init_kwargs["seed"]) for c in configs], [("rep-0", 1), ("rep-1", 2)]
        )
        for bad in (0, 257, True, 1.5):
            with self.subTest(replicas=bad), self.assertRaises(ValueError):
                vllm_fleet_configs(bad)  # type: ignore[arg-type]
        names = [c.name for c in default_configs(vllm_port=9000, vllm_replicas=3)]
        self.assertEqual(names, ["otlp", "vllm-0", "vllm-1", "vllm-2"])
        ports = [c.init_kwargs["port"] for c in default_configs(vllm_port=9000, vllm_replicas=3)]
        self.assertEqual(ports[1:], [9000, 9001, 9002])
        self.assertEqual([c.name for c in default_configs()], ["otlp", "vllm"])


class UpReplicasTest(ProcessTestCase):
    """``mocksup up --vllm-replicas N``: N mocks, each its own process and port."""

    def test_up_with_replicas(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mocksup",
                "up",
                "--servers",
                "vllm",
                "--vllm-port",
                "0",
                "--vllm-replicas",
                "3",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.addCleanup(proc.communicate, timeout=30)
        self.addCleanup(lambda: proc.kill() if proc.poll() is None else None)
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        servers = ready["servers"]
        self.assertEqual(list(servers), ["vllm-0", "vllm-1", "vllm-2"])
        self.assertEqual(len({s["pid"] for s in servers.values()}), 3)
        for entry in servers.values():
            url = entry["endpoints"]["url"] + "/health"
            with urllib.request.urlopen(url, timeout=10) as response:
                self.assertEqual(response.status, 200)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=30), 0)
