"""Process trees: wait, kill, find a port's holder, sweep leftovers. The only psutil user.

Leftovers: every child carries ``MOCKSUP_OWNER=<pid>:<create time>`` of the process that
started it, and ``MOCKSUP_OWNER_NS`` naming that process's PID namespace. A child whose owner
no longer exists (that pid is gone, or now belongs to a process created at another time) is
a leftover of a crashed run and is killed. A pid means something only in its own PID
namespace: a container on the same host numbers its processes from 1, so its markers name
pids of our namespace that are someone else. A marker is therefore judged only when it was
written in our namespace and the marked process lives in ours too; anything that cannot be
proven dead here (a marker without a namespace included) is left alone. Matches are exact,
never by substring, and a bare pid is never signalled without checking that it is still the
same process. (The namespace has a variable of its own so that the owner marker keeps the
form every version of mocksup reads.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Protocol

import psutil

__all__ = (
    "NAMESPACE_ENV",
    "OWNER_ENV",
    "Proc",
    "descendants",
    "end_descendants",
    "is_suspended",
    "kill_descendants",
    "kill_tree",
    "listening_ports",
    "owner_env",
    "owner_marker",
    "pid_namespace",
    "port_holder",
    "reap",
    "signal_group",
    "sweep_leftovers",
    "swept",
    "wait_exit",
)

OWNER_ENV = "MOCKSUP_OWNER"
NAMESPACE_ENV = "MOCKSUP_OWNER_NS"

_log = logging.getLogger(__name__)
_sweep_lock = threading.Lock()
_swept = False


class Proc(Protocol):
    """A child process handle: ``subprocess.Popen``, or a child the zygote forked."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def pid_namespace(pid: int) -> str | None:
    """An identity of the PID namespace ``pid`` lives in, or ``None`` when it cannot be read.

    On Linux, the inode of ``/proc/PID/ns/pid``; elsewhere there are no PID namespaces and
    every process shares one.
    """
    if not sys.platform.startswith("linux"):
        return "host"
    try:
        return str(os.stat(f"/proc/{pid}/ns/pid").st_ino)
    except OSError:
        return None


def owner_marker() -> str:
    """The marker this process puts in its children's environment."""
    return _marker(psutil.Process())


def owner_env() -> dict[str, str]:
    """The variables that mark this process's children: the owner and its namespace."""
    namespace = pid_namespace(os.getpid())
    marks = {OWNER_ENV: owner_marker()}
    if namespace is not None:
        marks[NAMESPACE_ENV] = namespace
    return marks


def _marker(process: psutil.Process) -> str:
    return f"{process.pid}:{process.create_time():.3f}"


def wait_exit(proc: Proc, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to exit and reap it; return whether it did.

    Uses a pidfd where the kernel has them, so the wakeup is immediate rather than the
    polling with growing sleeps that ``Popen.wait(timeout)`` does.
    """
    if proc.poll() is not None:
        return True
    if not isinstance(proc, subprocess.Popen):
        # A forked child: its handle waits on its own pidfd and exit pipe.
        try:
            proc.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return False
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


def kill_tree(proc: Proc, extra: list[psutil.Process] | None = None) -> None:
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


def signal_group(proc: Proc, signum: int) -> None:
    """Send ``signum`` to the child's process group, if the child has not been reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


def _living(process: psutil.Process) -> bool:
    # A zombie has exited: only its parent's wait is missing, which may never come (an init
    # that does not reap, in a container), so it counts as gone.
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reap(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait for ``processes`` to be gone; return the ones still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if _living(p)]
    while alive:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # Short slices: psutil waits for a non-child until it disappears, which a zombie
        # never does, so zombies are looked for between slices.
        _, alive = psutil.wait_procs(alive, timeout=min(left, 0.1))
        alive = [p for p in alive if _living(p)]
    return alive


def end_descendants(grace: float) -> int:
    """End this process's descendants: SIGTERM, up to ``grace`` seconds, then SIGKILL.

    Those that left our process group (``start_new_session=True``) included. Returns how
    many had to be killed.
    """
    targets = descendants(os.getpid())
    for target in targets:
        with contextlib.suppress(psutil.Error):
            target.terminate()
    stubborn = reap(targets, grace)
    kill_descendants(stubborn)
    return len(stubborn)


def kill_descendants(extra: list[psutil.Process] | None = None) -> None:
    """SIGKILL every descendant of this process (and ``extra``)."""
    for target in descendants(os.getpid()) + list(extra or []):
        with contextlib.suppress(psutil.Error):
            target.kill()


def is_suspended(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (SIGSTOP, SIGTSTP) or a tracer."""
    try:
        status = psutil.Process(pid).status()
    except psutil.Error:
        return False
    return status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def listening_ports(pid: int) -> set[int] | None:
    """The ports ``pid`` and its descendants serve on (TCP listening, UDP bound), or
    ``None`` when the operating system does not let us look."""
    try:
        tree = [psutil.Process(pid), *descendants(pid)]
    except psutil.NoSuchProcess:
        return set()
    except psutil.Error:
        return None
    ports: set[int] = set()
    for process in tree:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            return None
        for conn in connections:
            serving = conn.status == psutil.CONN_LISTEN or conn.type == socket.SOCK_DGRAM
            if serving and conn.laddr:
                ports.add(conn.laddr.port)
    return ports


def port_holder(port: int, host: str | None = None) -> tuple[int | None, str | None]:
    """The pid and name of the process listening on TCP ``port``, where the OS tells.

    With ``host``, only a socket that conflicts with binding there counts: one on that
    address or on a wildcard address (another process may listen on the same port number on
    another address, and is not the one in the way).

    A listening socket can be shared by inheritance (a child holds it between its fork and
    its exec, say), and the system names one holder only: the one named is followed up its
    ancestors that hold the port too, to the one that opened it.
    """
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None, None
    pid = next((c.pid for c in connections if _in_the_way(c, port, host)), None)
    if pid is None:
        return None, None
    try:
        holder = psutil.Process(pid)
        while (parent := holder.parent()) is not None and _listens(parent, port, host):
            holder = parent
        return holder.pid, holder.name()
    except psutil.Error:
        return pid, None


def _in_the_way(conn: Any, port: int, host: str | None) -> bool:
    if conn.status != psutil.CONN_LISTEN or getattr(conn.laddr, "port", None) != port:
        return False
    if host is None or host in ("0.0.0.0", "::") or not _is_address(host):
        return True  # a wildcard bind conflicts with every address; a name, we do not know
    return getattr(conn.laddr, "ip", None) in (host, "0.0.0.0", "::")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _listens(process: psutil.Process, port: int, host: str | None) -> bool:
    try:
        connections = process.net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(_in_the_way(c, port, host) for c in connections)


def swept() -> bool:
    """Whether this process has swept the leftovers already (or is sweeping them)."""
    return _swept


def sweep_leftovers() -> int:
    """Kill the leftover children of crashed mocksup runs, once per process; return how many.

    The first start in a process calls it (see :meth:`mocksup.MockServerBase.await_start`).
    """
    global _swept
    with _sweep_lock:
        if _swept:
            return 0
        _swept = True
    ours = pid_namespace(os.getpid())
    if ours is None:
        _log.debug("cannot tell our PID namespace; no leftovers swept")
        return 0
    killed = 0
    verdicts: dict[str, bool] = {}
    for process in psutil.process_iter():
        try:
            environ = process.environ()
        except psutil.Error:
            continue
        marker = environ.get(OWNER_ENV)
        if not marker or environ.get(NAMESPACE_ENV) != ours:
            continue  # not ours, or written in another namespace (or by an older version)
        if marker not in verdicts:
            verdicts[marker] = _owner_gone(marker)
        if not verdicts[marker] or pid_namespace(process.pid) != ours:
            continue
        try:
            name = process.name()
            process.kill()
        except psutil.Error:
            continue
        _log.warning(
            "killed leftover mock server %s (pid %s) of a crashed run (owner %s)",
            name,
            process.pid,
            marker,
        )
        killed += 1
    return killed


def _owner_gone(marker: str) -> bool:
    """Whether the owner ``marker`` (written in our namespace) names is provably gone."""
    fields = marker.split(":")
    if len(fields) != 2 or not fields[0].isdigit():
        return False  # a marker we cannot read: not ours to judge
    try:
        owner = psutil.Process(int(fields[0]))
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    try:
        return _marker(owner) != marker
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
