"""Process trees: wait, kill, find a port's holder, sweep leftovers. The only psutil user.

Leftovers: every child carries ``MOCKSUP_OWNER=<pid>:<create time>`` of the process that
started it. A child whose owner no longer exists (that pid is gone, or now belongs to a
process created at another time) is a leftover of a crashed run and is killed with its
process group. Matches are exact, never by substring, and a bare pid is never signalled
without checking that it is still the same process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading

import psutil

__all__ = [
    "OWNER_ENV",
    "kill_tree",
    "owner_marker",
    "port_holder",
    "sweep_leftovers",
    "wait_exit",
]

OWNER_ENV = "MOCKSUP_OWNER"

_log = logging.getLogger("mocksup")
_sweep_lock = threading.Lock()
_swept = False


def owner_marker() -> str:
    """The marker this process puts in its children's environment."""
    return _marker(psutil.Process())


def _marker(process: psutil.Process) -> str:
    return f"{process.pid}:{process.create_time():.3f}"


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to exit and reap it; return whether it did.

    Uses a pidfd where the kernel has them, so the wakeup is immediate rather than the
    polling with growing sleeps that ``Popen.wait(timeout)`` does.
    """
    if proc.poll() is not None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        select.select([fd], [], [], max(timeout, 0.0))
    finally:
        os.close(fd)
    return proc.poll() is not None


def descendants(pid: int) -> list[psutil.Process]:
    """The living descendants of ``pid`` (empty if it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_tree(proc: subprocess.Popen[bytes], extra: list[psutil.Process] | None = None) -> None:
    """SIGKILL ``proc``, its process group and every descendant, checking identities."""
    targets = descendants(proc.pid) + list(extra or [])
    if proc.poll() is None:
        # The child leads its own session, so its group holds every descendant that did not
        # move away; killpg reaches even those psutil has not seen yet.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for target in targets:
        # psutil checks that the pid still names the same process before signalling.
        with contextlib.suppress(psutil.Error):
            target.kill()


def signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the child's process group, if the child has not been reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


def reap(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait for ``processes`` to be gone; return the ones still alive after ``timeout``."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


def port_holder(port: int) -> tuple[int | None, str | None]:
    """The pid and name of the process listening on TCP ``port``, where the OS tells."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None, None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None, None
            try:
                return conn.pid, psutil.Process(conn.pid).name()
            except psutil.Error:
                return conn.pid, None
    return None, None


def sweep_leftovers() -> int:
    """Kill the leftover children of crashed mocksup runs, once per process; return how many."""
    global _swept
    with _sweep_lock:
        if _swept:
            return 0
        _swept = True
    killed = 0
    alive_owners: dict[str, bool] = {}
    for process in psutil.process_iter(["pid"]):
        try:
            marker = process.environ().get(OWNER_ENV)
        except psutil.Error:
            continue
        if not marker:
            continue
        if marker not in alive_owners:
            alive_owners[marker] = _owner_alive(marker)
        if alive_owners[marker]:
            continue
        try:
            _log.warning(
                "killing leftover mock server %s (pid %s) of a crashed run (owner %s)",
                process.name(),
                process.pid,
                marker,
            )
            process.kill()
            killed += 1
        except psutil.Error:
            continue
    return killed


def _owner_alive(marker: str) -> bool:
    pid_text, _, created = marker.partition(":")
    try:
        owner = psutil.Process(int(pid_text))
        return _marker(owner) == f"{int(pid_text)}:{created}"
    except (psutil.Error, ValueError):
        return False
