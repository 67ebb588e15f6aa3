"""Test helpers: a TestCase base that cleans up every process it starts, and tiny targets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import unittest
from typing import Any, TypeVar

import psutil

from mocksup import MockServerBase, _launch

S = TypeVar("S", bound=MockServerBase)

#: Every test's budget: a hung child fails one test, never the run (see tox.ini / conftest).
TEST_TIMEOUT = 60


class ProcessTestCase(unittest.TestCase):
    """Registers cleanup the moment it creates a process; fails a test that leaves one."""

    def setUp(self) -> None:
        super().setUp()
        self._before = {p.pid for p in psutil.Process().children(recursive=True)}
        self.addCleanup(self._check_no_children_left)

    def _check_no_children_left(self) -> None:
        new = [p for p in children() if p.pid not in self._before]
        left = [p for p in new if p.status() != psutil.STATUS_ZOMBIE]
        zombies = [p for p in new if p.status() == psutil.STATUS_ZOMBIE]
        for p in left:
            p.kill()
        self.assertEqual(left, [], "the test left child processes running")
        self.assertEqual(zombies, [], "the test left zombie processes")

    def start_server(self, server: S, **kwargs: Any) -> S:
        """Start ``server`` and register its stop."""
        self.addCleanup(server.stop)
        server.start(**kwargs)
        return server

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a helper process and register its kill and reap."""
        proc = subprocess.Popen(args, **kwargs)
        self.addCleanup(_kill_and_wait, proc)
        return proc

    def run_python(self, code: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Run ``code`` in a fresh interpreter with this test's import path."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        return self.popen([sys.executable, "-c", code], env=env, **kwargs)

    def listening_socket(self) -> socket.socket:
        """A socket listening on a free loopback port, closed at cleanup."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        self.addCleanup(sock.close)
        return sock


def _kill_and_wait(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()


def children() -> list[psutil.Process]:
    """Our child processes (recursively), less the idle warm children mocksup keeps."""
    _launch.pool.settle()
    warm = _launch.pool.pids()
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in warm]


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return psutil.Process().num_fds()
