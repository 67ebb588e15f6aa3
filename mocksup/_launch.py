"""Launching children: the exec itself, and the warm pool of children waiting for a server.

A child costs an interpreter start plus the imports of grpc, werkzeug, pydantic and the
protobuf modules: most of its start time. The warm pool keeps a few children that have done
all of that and block on their lifeline, waiting for a server; a start takes one and only
sends it the server, so a suite that starts and stops mocks per test pays the imports once.
Pool children are ordinary direct children (no fork server, no relayed exit codes): the same
handle, the same stop, the same lifeline. ``MOCKSUP_WARM_CHILDREN`` sets the pool's size
(default 2; 0 turns it off). The pool fills after the first start, in the background.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from mocksup import _reap

__all__ = (
    "DEFAULT_SIZE",
    "MAX_SIZE",
    "Launched",
    "WarmPool",
    "child_env",
    "launch",
    "pool",
    "size_from_env",
)

_log = logging.getLogger(__name__)
_owner: dict[str, str] | None = None
_owner_lock = threading.Lock()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child: ours, the server's extras, the owner markers."""
    global _owner
    with _owner_lock:
        if _owner is None:
            _owner = _reap.owner_env()
    return {**os.environ, **extra, **_owner, "PYTHONUNBUFFERED": "1"}


@dataclass
class Launched:
    """A started child and the parent's ends of its two pipes."""

    proc: subprocess.Popen[bytes]
    lifeline: int
    status: int

    def send(self, payload: bytes) -> None:
        """Write the server payload; a few KiB, inside the pipe buffer, so it never blocks.

        :raises BrokenPipeError: the child is gone.
        """
        view = memoryview(payload)
        while view:
            view = view[os.write(self.lifeline, view) :]

    def discard(self) -> None:
        """Close our pipe ends (the child sees EOF and exits) and reap it."""
        for fd in (self.lifeline, self.status):
            with contextlib.suppress(OSError):
                os.close(fd)
        if not _reap.wait_exit(self.proc, 2.0):
            _reap.kill_tree(self.proc)
            if not _reap.wait_exit(self.proc, 2.0):
                _log.error("warm child %s could not be reaped, even after SIGKILL", self.proc.pid)


def launch(env: dict[str, str], output: IO[bytes] | int, *, warm: bool = False) -> Launched:
    """Exec ``python -m mocksup._child`` with its lifeline and status pipes.

    An exec through ``subprocess`` (vfork/posix_spawn), never a bare fork and never
    ``preexec_fn``: safe when this process has loaded gRPC. Its own session, so terminal
    signals do not reach it and its group can be signalled as a whole.
    """
    lifeline_r, lifeline_w = os.pipe()
    status_r, status_w = os.pipe()
    args = [sys.executable, "-m", "mocksup._child", str(lifeline_r), str(status_w)]
    try:
        proc = subprocess.Popen(
            [*args, "--warm"] if warm else args,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            pass_fds=(lifeline_r, status_w),
            start_new_session=True,
            env=env,
        )
    except BaseException:
        for fd in (lifeline_r, lifeline_w, status_r, status_w):
            os.close(fd)
        raise
    os.close(lifeline_r)
    os.close(status_w)
    return Launched(proc, lifeline_w, status_r)


#: Seconds a warm child may take over its imports before it is given up.
_WARM_TIMEOUT = 60.0


def _await_warm(launched: Launched) -> bool:
    """Read the child's "warm" line: it has imported everything and waits for a server."""
    data = b""
    while b"\n" not in data:
        readable, _, _ = select.select([launched.status], [], [], _WARM_TIMEOUT)
        chunk = os.read(launched.status, 4096) if readable else b""
        if not chunk:
            return False
        data += chunk
    return bool(json.loads(data.partition(b"\n")[0]).get("event") == "warm")


class WarmPool:
    """Children that have imported mocksup's dependencies and wait for their server."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[Launched] = []
        self._lock = threading.Lock()
        self._filler: threading.Thread | None = None

    def take(self) -> Launched | None:
        """An idle warm child, or ``None`` when there is none."""
        with self._lock:
            while self._idle:
                launched = self._idle.pop(0)
                if launched.proc.poll() is None:
                    return launched
                launched.discard()
        return None

    def refill(self) -> None:
        """Top the pool up in the background, one child at a time (at most one core busy)."""
        if self.size <= 0:
            return
        with self._lock:
            if self._filler is not None and self._filler.is_alive():
                return
            self._filler = threading.Thread(target=self._fill, name="mocksup-warm", daemon=True)
            self._filler.start()

    def _fill(self) -> None:
        while True:
            with self._lock:
                if len(self._idle) >= self.size:
                    return
            try:
                launched = launch(child_env({}), subprocess.DEVNULL, warm=True)
            except OSError as error:
                _log.warning("cannot start a warm child (%s); starts stay cold", error)
                return
            if not _await_warm(launched):
                launched.discard()
                return  # cannot preload here; starts stay cold
            with self._lock:
                self._idle.append(launched)

    def settle(self, timeout: float = _WARM_TIMEOUT) -> bool:
        """Wait up to ``timeout`` seconds until a refill under way is done (for tests and
        benchmarks); return whether it is."""
        filler = self._filler
        if filler is not None:
            filler.join(timeout)
            return not filler.is_alive()
        return True

    def pids(self) -> set[int]:
        """The pids of the idle warm children."""
        with self._lock:
            return {launched.proc.pid for launched in self._idle}

    def close(self) -> None:
        """End every idle child: each sees its lifeline close and exits."""
        self.settle(5)
        with self._lock:
            idle, self._idle = self._idle, []
        for launched in idle:
            launched.discard()


#: How many warm children the pool keeps unless ``MOCKSUP_WARM_CHILDREN`` says otherwise.
DEFAULT_SIZE = 2
#: The most ``MOCKSUP_WARM_CHILDREN`` may ask for: each idle child holds an interpreter.
MAX_SIZE = 32


def size_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """The pool size ``MOCKSUP_WARM_CHILDREN`` asks for; a bad value is logged, not fatal."""
    text = environ.get("MOCKSUP_WARM_CHILDREN")
    if text is None:
        return DEFAULT_SIZE
    try:
        size = int(text)
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_SIZE:
        _log.warning(
            "MOCKSUP_WARM_CHILDREN=%r is not a number from 0 to %d; using %d",
            text,
            MAX_SIZE,
            DEFAULT_SIZE,
        )
        return DEFAULT_SIZE
    return size


pool = WarmPool(size_from_env())
atexit.register(pool.close)
