"""The warm pool: children that imported their modules before they are given a server."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from unittest import mock

from mocksup import _launch
from tests.support import ProcessTestCase
from tests.targets import EnvEcho, Sleeper


class WarmPoolTest(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        if _launch.pool.size == 0:
            self.skipTest("MOCKSUP_WARM_CHILDREN=0 turns the warm pool off")
        _launch.pool.refill()
        _launch.pool.settle()

    def test_a_start_takes_a_warm_child_and_the_pool_refills(self) -> None:
        warm = _launch.pool.pids()
        self.assertEqual(len(warm), _launch.pool.size)
        server = self.start_server(Sleeper())
        self.assertIn(server.pid, warm)
        _launch.pool.settle()
        self.assertEqual(len(_launch.pool.pids()), _launch.pool.size)
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


if __name__ == "__main__":
    unittest.main()
