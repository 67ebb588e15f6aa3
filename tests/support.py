"""Test helpers: TestCase bases that clean up every process they start and fail when one is
left behind (by a test, by a class's servers, or by a module's), and small probes."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
import unittest
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import psutil

from mocksup import MockServerBase, _launch

if TYPE_CHECKING:
    _TestCaseBase = unittest.TestCase
else:
    # At run time the mixin derives from object so that it sits in front of either TestCase
    # kind (or mocksup.testing's) in the MRO; mypy checks it as a TestCase.
    _TestCaseBase = object

__all__ = (
    "AsyncProcessTestCase",
    "LeakCheck",
    "ProcessTestCase",
    "assert_no_children_left",
    "children",
    "has_ipv6_loopback",
    "open_fds",
    "poll_until",
    "snapshot",
    "wait_until_exited",
    "wait_until_stopped",
)

_S = TypeVar("_S", bound=MockServerBase)


def children(*, settle: bool = True) -> list[psutil.Process]:
    """Our living child processes (recursively), less mocksup's zygotes (the one serving and
    closed ones that still reap their children) and the children ``mocksup up`` prestarted.

    :param settle: first wait until the zygote has imported everything, so that no import
        under way runs during what is measured next.
    """
    if settle and not _launch.zygote.settle(60):
        raise AssertionError("the zygote did not settle within 60 s")
    helpers = _launch.zygote.pids() | _launch.prestarted.pids()
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.pid not in helpers:
                process.status()  # gone by now: left out
                found.append(process)
    return found


def snapshot(*, settle: bool = False) -> set[int]:
    """The pids of our child processes now (see :func:`children`).

    Unsettled, it does not wait for the zygote's imports; to compare two snapshots, settle
    both.
    """
    return {p.pid for p in children(settle=settle)}


def assert_no_children_left(before: set[int], what: str) -> None:
    """Fail if a child process that was not there ``before`` is still there (or a zombie);
    kill the living ones first, so that one leak does not fail every later test."""
    left: list[psutil.Process] = []
    zombies: list[psutil.Process] = []
    for process in children():
        if process.pid in before:
            continue
        try:
            zombie = process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            continue
        (zombies if zombie else left).append(process)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    if left or zombies:
        raise AssertionError(f"{what} left child processes: running {left}, zombies {zombies}")


class LeakCheck(_TestCaseBase):
    """Fails a test, or a class, that leaves a child process; put it before the TestCase.

    Each test is checked after its own cleanups; the class after its class cleanups (the
    servers a ``setUpClass`` started included). Works with :class:`unittest.TestCase`,
    :class:`unittest.IsolatedAsyncioTestCase` and :mod:`mocksup.testing`'s classes.
    """

    _class_before: ClassVar[set[int]]

    @classmethod
    def setUpClass(cls) -> None:
        # Registered before anything of the class starts, so it runs after every other
        # class cleanup (they run last in, first out).
        cls._class_before = snapshot()
        cls.addClassCleanup(cls._check_class_left_nothing)
        super().setUpClass()

    @classmethod
    def _check_class_left_nothing(cls) -> None:
        assert_no_children_left(cls._class_before, f"class {cls.__name__}")

    def setUp(self) -> None:
        before = snapshot()
        self.addCleanup(assert_no_children_left, before, f"test {self.id()}")
        super().setUp()

    def start_server(self, server: _S, **kwargs: Any) -> _S:
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
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **kwargs.pop("env", {})}
        return self.popen([sys.executable, "-c", code], env=env, **kwargs)

    def listening_socket(self, host: str = "127.0.0.1") -> socket.socket:
        """A socket listening on a free port of ``host``, closed at cleanup."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.bind((host, 0))
        sock.listen()
        self.addCleanup(sock.close)
        return sock


class ProcessTestCase(LeakCheck, unittest.TestCase):
    """A :class:`unittest.TestCase` with :class:`LeakCheck`."""


class AsyncProcessTestCase(LeakCheck, unittest.IsolatedAsyncioTestCase):
    """A :class:`unittest.IsolatedAsyncioTestCase` with :class:`LeakCheck`."""


def _kill_and_wait(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return psutil.Process().num_fds()


def wait_until_exited(pid: int, timeout: float = 10.0) -> None:
    """Wait until our child ``pid`` has exited, without reaping it (its parent's ``Popen``
    must still read the exit status). A child of our zygote may be reaped by it already."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone: it exited, and its parent (the zygote) reaped it
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not readable:
        raise AssertionError(f"pid {pid} did not exit within {timeout:g} s")


def wait_until_stopped(pid: int, timeout: float = 10.0) -> None:
    """Wait until ``pid`` is stopped by a signal (SIGSTOP is asynchronous).

    Our own child: ``waitid``. A child of our zygote: no system call waits for a stop of a
    process that is not one's child, so its state is looked at every millisecond until the
    deadline.
    """
    try:
        os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOWAIT)
        return
    except ChildProcessError:
        pass
    deadline = time.monotonic() + timeout
    while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} was not stopped within {timeout:g} s")
        select.select([], [], [], 0.001)


def cpu_seconds_over(process: psutil.Process, seconds: float = 1.0) -> float:
    """The CPU (user and system) ``process`` uses over the next ``seconds``: an interval
    measured, nothing waited for (a child spinning on a full descriptor table uses it all)."""
    before = sum(process.cpu_times()[:2])
    time.sleep(seconds)
    return sum(process.cpu_times()[:2]) - before


def half_sent_bodies(
    case: unittest.TestCase,
    address: tuple[str, int],
    path: str,
    media: str,
    *,
    count: int,
    size: int,
) -> list[socket.socket]:
    """``count`` connections, each a POST to ``path`` of a ``media`` body declaring ``size``
    bytes and sending half of them (spaces): requests that hold their bodies and wait.
    Closed at the test's end, or before by the test."""
    socks = []
    head = (
        f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Type: {media}\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    for _ in range(count):
        sock = socket.create_connection(address, 10)
        case.addCleanup(sock.close)
        sock.sendall(head + b" " * (size // 2))
        socks.append(sock)
    return socks


def poll_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail after ``timeout`` seconds, saying ``what``.

    For a state only a query shows (a server's gauge, its count of held waits): there is
    nothing to wait on, so the query is asked again after a pause that doubles from 1 ms to
    50 ms, prompt when the state comes soon and light on the server when it comes late.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what} within {timeout:g} s: it did not")
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)


def run_code(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``args`` in a fresh interpreter with this process's import path
    (and ``env`` added to the environment); what it printed, as text, and its exit code."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind ``::1``."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True
