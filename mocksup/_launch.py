"""Launching children: the exec, the zygote that forks them, the children ``up`` starts early.

A child costs an interpreter start plus the imports of pydantic, grpc, werkzeug and the
protobuf modules: most of its start. The *zygote* (:mod:`mocksup._zygote`) pays for them
once per parent and forks a child per start, so that every start pattern is fast: one right
after another, eight at once, one per test. The zygote starts with the first start and
lives as long as the parent; ``MOCKSUP_ZYGOTE=0`` turns it off (every child is then exec'd,
as it is where there is no ``fork`` or no pidfd, and for a server with an ``env`` of its
own, whose imports must see that environment).

An exec'd child is ``python -m mocksup._child``, through ``subprocess`` (vfork/posix_spawn),
never a fork of this process and never ``preexec_fn``: safe when this process has loaded
gRPC. ``mocksup up`` launches its children as its very first step (*prestarted*, importing
their mock's modules while the command imports its own), and hands each its server as soon
as it has built and checked it, before it imports the start's machinery; the start adopts
the child. It keeps no idle process.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mocksup import _reap
from mocksup._fork import Zygote, enabled_from_env

if TYPE_CHECKING:
    from mocksup import _payload
    from mocksup.base import MockServerBase

__all__ = (
    "Launched",
    "Prestarted",
    "child_env",
    "launch",
    "prestarted",
    "write_ahead",
    "zygote",
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


class Launched:
    """A started child and the parent's ends of its two pipes."""

    def __init__(self, proc: _reap.Proc, lifeline: int, status: int) -> None:
        self.proc = proc
        self.lifeline = lifeline
        self.status = status

    def send(self, payload: bytes) -> None:
        """Write the server payload; a few KiB, inside the pipe buffer, so it never blocks.

        :raises BrokenPipeError: the child is gone.
        """
        view = memoryview(payload)
        while view:
            view = view[os.write(self.lifeline, view) :]

    def discard(self) -> None:
        """End the child at once (SIGKILL to its tree), close our pipe ends, reap it.

        Only for a child no start holds: one waiting for its server, or sent one that no
        start adopted, has served nobody. Killed as a cancelled start kills the children
        still starting: asked to stop, one busy with its imports would end only once they
        were done (a signal during ``up``'s start waited that long for the collector's
        HTTP side).
        """
        if self.proc.poll() is None:  # not reaped: its pid is still its own
            _reap.kill_tree(self.proc)
        for fd in (self.lifeline, self.status):
            with contextlib.suppress(OSError):
                os.close(fd)
        if not _reap.wait_exit(self.proc, 2.0):
            _log.error("child %s could not be reaped, even after SIGKILL", self.proc.pid)


def write_ahead(fd: int, data: bytes) -> bytes:
    """Write what fits of ``data`` into the pipe ``fd`` without blocking; return the rest."""
    os.set_blocking(fd, False)
    try:
        written = os.write(fd, data)
    except BlockingIOError:
        written = 0
    finally:
        os.set_blocking(fd, True)
    return data[written:]


def launch(
    env: dict[str, str], output: IO[bytes] | int, *, warm: list[str] | None = None
) -> Launched:
    """Exec ``python -m mocksup._child`` with its lifeline and status pipes.

    An exec through ``subprocess`` (vfork/posix_spawn), never a bare fork and never
    ``preexec_fn``: safe when this process has loaded gRPC. Its own session, so terminal
    signals do not reach it and its group can be signalled as a whole. ``warm``: the
    modules it imports before it waits for its server.
    """
    from mocksup._payload import exec_env

    lifeline_r, lifeline_w = os.pipe()
    status_r, status_w = os.pipe()
    args = [sys.executable, "-m", "mocksup._child", str(lifeline_r), str(status_w)]
    try:
        proc = subprocess.Popen(
            args if warm is None else [*args, "--warm", *warm],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            pass_fds=(lifeline_r, status_w),
            start_new_session=True,
            env=exec_env(env),
        )
    except BaseException:
        for fd in (lifeline_r, lifeline_w, status_r, status_w):
            os.close(fd)
        raise
    os.close(lifeline_r)
    os.close(status_w)
    return Launched(proc, lifeline_w, status_r)


class Prestarted:
    """Children exec'd before their servers are known; each is taken once, never replaced.

    A child is taken either by the start of a server (:meth:`take`, which then sends the
    server), or earlier by :meth:`hand_over`, which sends it a server built already, before
    the harness is there to start it: the child serves while this process imports the
    rest of what it needs, and the start adopts it (:meth:`adopt`). Earlier still,
    :meth:`hand_over_settings` sends a server known only by its settings, before pydantic
    is imported; :meth:`hand_over` then claims that child for the model whose settings
    they are, and discards it for any other.
    """

    def __init__(self) -> None:
        self._idle: list[tuple[Launched, list[str]]] = []  # with the modules each warms
        self._early: dict[str, tuple[_payload.Settings, Launched, Path]] = {}
        self._handed: dict[int, tuple[MockServerBase, Launched, Path]] = {}
        self._lock = threading.Lock()

    def launch(self, modules: list[str]) -> None:
        """Exec one child that imports ``modules`` and then waits for its server."""
        launched = launch(child_env({}), subprocess.DEVNULL, warm=modules)
        with self._lock:
            self._idle.append((launched, modules))

    def launch_missing(self, wanted: list[list[str]]) -> None:
        """:meth:`launch` a child for each list of modules, but for those launched already
        (and not taken)."""
        with self._lock:
            launched = [modules for _, modules in self._idle]
        for modules in wanted:
            if modules in launched:
                launched.remove(modules)
            else:
                self.launch(modules)

    def take(self, module: str | None = None) -> Launched | None:
        """A prestarted child still alive, or ``None``: the first launched to import
        ``module`` (or its package), when one was."""
        wanted = module or ""

        def fits(entry: tuple[Launched, list[str]]) -> bool:
            return any(wanted == m or wanted.startswith(m + ".") for m in entry[1])

        with self._lock:
            # Stable: in launch order among those that fit, then among the others.
            for entry in sorted(self._idle, key=lambda entry: not fits(entry)):
                self._idle.remove(entry)
                if entry[0].proc.poll() is None:
                    return entry[0]
                entry[0].discard()
        return None

    def hand_over_settings(self, body: _payload.Settings, log_dir: Path | None) -> bool:
        """Send a server known by its settings alone to a child waiting for one (launched
        to import its serving module, if one was); return whether one took them.

        :raises MockServerError: its log file cannot be created.
        """
        from mocksup import _payload

        launched = self.take(body.module)
        if launched is None:
            return False
        log_path = self._send(
            launched,
            body.name,
            log_dir,
            {},
            lambda env, log: _payload.encode_body(body, None, env=env, log_path=log),
        )
        if log_path is None:
            return False
        with self._lock:
            self._early[body.name] = (body, launched, log_path)
        return True

    def hand_over(self, server: MockServerBase) -> bool:
        """Send ``server`` to a child waiting for one, as its start would; return whether
        one took it (none waits, or the server has an environment of its own: its child is
        exec'd under it). A child sent ``server``'s very settings by
        :meth:`hand_over_settings` is its child already; one sent other settings under its
        name is discarded.

        :raises MockServerError: its log file cannot be created.
        """
        from mocksup import _payload

        with self._lock:
            early = self._early.pop(server.name, None)
        if early is not None:
            body, claimed, early_log = early
            if not server.env and body.is_of(server):
                with self._lock:
                    self._handed[id(server)] = (server, claimed, early_log)
                return True
            claimed.discard()
        if server.env:
            return False
        launched = self.take(_payload.serving_module(server))
        if launched is None:
            return False
        log_path = self._send(
            launched,
            server.name,
            server.log_dir,
            server.env,
            lambda env, log: _payload.encode(
                server, _payload.main_path(server), env=env, log_path=log
            ),
        )
        if log_path is None:
            return False
        with self._lock:
            self._handed[id(server)] = (server, launched, log_path)
        return True

    @staticmethod
    def _send(
        launched: Launched,
        name: str,
        log_dir: Path | None,
        env: dict[str, str],
        encode: Callable[[dict[str, str], str], bytes],
    ) -> Path | None:
        """Send ``launched`` its payload, ``encode(environment, log path)``, for the server
        of that ``name``, ``log_dir`` and ``env``, with a log file made for it; the file's
        path, or ``None`` if the child is gone (it is then discarded, as on any error).

        :raises MockServerError: the log file cannot be created.
        """
        from mocksup import _logs

        try:
            log_path, fd = _logs.open_named_log(name, log_dir)
            os.close(fd)  # the child opens it by name
            launched.send(encode(child_env(env), str(log_path)))
        except BrokenPipeError:
            launched.discard()
            return None
        except BaseException:
            launched.discard()
            raise
        return log_path

    def adopt(self, server: MockServerBase) -> tuple[Launched, Path] | None:
        """The child :meth:`hand_over` sent ``server`` to, and its log file; once."""
        with self._lock:
            entry = self._handed.pop(id(server), None)
        if entry is None:
            return None
        _, launched, log_path = entry
        return launched, log_path

    def discard(self) -> None:
        """End the children nobody took or adopted."""
        with self._lock:
            idle, self._idle = [entry[0] for entry in self._idle], []
            early, self._early = [entry[1] for entry in self._early.values()], {}
            handed, self._handed = [entry[1] for entry in self._handed.values()], {}
        for launched in [*idle, *early, *handed]:
            launched.discard()

    def pids(self) -> set[int]:
        """The pids of the children waiting, for a server or to be adopted."""
        with self._lock:
            waiting = [entry[0] for entry in self._idle]
            waiting += [entry[1] for entry in self._early.values()]
            waiting += [entry[1] for entry in self._handed.values()]
            return {launched.proc.pid for launched in waiting}


zygote = Zygote(enabled_from_env(), child_env)
prestarted = Prestarted()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=zygote._after_fork)


def _at_exit() -> None:
    prestarted.discard()
    zygote.close()


atexit.register(_at_exit)
