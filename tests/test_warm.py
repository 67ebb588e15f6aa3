"""The warm pool: children that imported their modules before they are given a server.

Both settings are tested whatever ``MOCKSUP_WARM_CHILDREN`` the suite runs with: each test
sets the pool's size itself and puts it back afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import unittest
from unittest import mock

import psutil

from mocksup import _launch
from tests.support import ProcessTestCase
from tests.targets import EnvEcho, Sleeper


def is_warm(pid: int | None) -> bool:
    """Whether ``pid`` was started as a warm child (its command line says so)."""
    return "--warm" in psutil.Process(pid).cmdline()


class PoolSizeMixin(ProcessTestCase):
    size: int

    def setUp(self) -> None:
        super().setUp()
        saved = _launch.pool.size
        _launch.pool.close()
        _launch.pool.size = self.size
        self.addCleanup(setattr, _launch.pool, "size", saved)
        self.addCleanup(_launch.pool.close)
        _launch.pool.refill()
        self.assertTrue(_launch.pool.settle(60))


class WarmPoolTest(PoolSizeMixin):
    size = 2

    def test_a_start_takes_a_warm_child_and_the_pool_refills(self) -> None:
        warm = _launch.pool.pids()
        self.assertEqual(len(warm), 2)
        server = self.start_server(Sleeper())
        self.assertIn(server.pid, warm)
        self.assertTrue(is_warm(server.pid))
        self.assertTrue(_launch.pool.settle(60))
        self.assertEqual(len(_launch.pool.pids()), 2)
        self.assertNotIn(server.pid, _launch.pool.pids())

    def test_a_warm_child_takes_the_environment_and_folder_of_its_start(self) -> None:
        warm = _launch.pool.pids()
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        with mock.patch.dict(os.environ, {"MOCKSUP_TEST_VALUE": "late"}):
            previous = os.getcwd()
            os.chdir(folder)
            self.addCleanup(os.chdir, previous)
            server = self.start_server(EnvEcho())
        self.assertIn(server.pid, warm)
        self.assertIn(f"value: late cwd: {os.path.realpath(folder)}", server.log_tail())
        assert server.log_path is not None
        self.assertIn("value: late", server.log_path.read_text())

    def test_a_server_with_its_own_environment_starts_cold(self) -> None:
        warm = _launch.pool.pids()
        server = self.start_server(EnvEcho(env={"MOCKSUP_TEST_VALUE": "own"}))
        self.assertNotIn(server.pid, warm)
        self.assertFalse(is_warm(server.pid))
        self.assertIn("value: own", server.log_tail())

    def test_a_dead_warm_child_is_passed_over(self) -> None:
        # Killed from outside, a warm child may still look alive when a start takes it:
        # the start notices it never took its server and starts afresh.
        killed = _launch.pool.pids()
        for pid in killed:
            os.kill(pid, 9)
        server = self.start_server(Sleeper())
        self.assertTrue(server.is_running())
        self.assertNotIn(server.pid, killed)


class NoWarmPoolTest(PoolSizeMixin):
    size = 0

    def test_every_start_launches_a_child_and_none_waits(self) -> None:
        self.assertEqual(_launch.pool.pids(), set())
        for _ in range(2):
            server = self.start_server(Sleeper())
            self.assertFalse(is_warm(server.pid))
            self.assertTrue(_launch.pool.settle(60))
            self.assertEqual(_launch.pool.pids(), set())
            server.stop()


MEASURE = """
import json, psutil
from mocksup import _launch
from tests.targets import Sleeper
with Sleeper() as server:
    cold = "--warm" not in psutil.Process(server.pid).cmdline()
    _launch.pool.settle(60)
    print(json.dumps({"size": _launch.pool.size, "idle": len(_launch.pool.pids()), "cold": cold}))
"""


class EnvironmentTest(ProcessTestCase):
    def run_with(self, value: str) -> dict[str, object]:
        proc = self.run_python(
            MEASURE,
            env={"MOCKSUP_WARM_CHILDREN": value},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        result: dict[str, object] = json.loads(out)
        return result

    def test_the_variable_sets_the_pool_in_a_fresh_process(self) -> None:
        self.assertEqual(self.run_with("0"), {"size": 0, "idle": 0, "cold": True})
        self.assertEqual(self.run_with("1"), {"size": 1, "idle": 1, "cold": True})

    def test_values_are_read_and_bad_ones_said(self) -> None:
        self.assertEqual(_launch.size_from_env({}), _launch.DEFAULT_SIZE)
        self.assertEqual(_launch.size_from_env({"MOCKSUP_WARM_CHILDREN": "0"}), 0)
        self.assertEqual(_launch.size_from_env({"MOCKSUP_WARM_CHILDREN": " 3 "}), 3)
        for bad in ("x", "-1", "33", ""):
            with self.subTest(bad), self.assertLogs("mocksup._launch", logging.WARNING) as logs:
                self.assertEqual(_launch.size_from_env({"MOCKSUP_WARM_CHILDREN": bad}), 2)
            self.assertIn(
                f"MOCKSUP_WARM_CHILDREN={bad!r} is not a number from 0 to 32", logs.output[0]
            )


if __name__ == "__main__":
    unittest.main()
