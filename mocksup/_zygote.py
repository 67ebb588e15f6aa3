"""The zygote: a preloaded, single-threaded process that forks the mocks' children.

A child exec'd afresh pays for an interpreter and the imports of pydantic, grpc, werkzeug
and mocksup's own modules: nearly all of its start. The zygote pays for them once per
parent: the parent execs it (``python -m mocksup._zygote FD``, an exec like any child's, so
a parent that has loaded gRPC is safe), and from then on each start asks it for a child,
which it forks. A forked child only unpickles its server and binds: a few milliseconds, and
its memory is the zygote's until written (gc frozen, so collections do not dirty it).

Fork safety: the zygote imports mocksup's modules and their dependencies only (never the
program's code), never creates a gRPC object and never starts a thread; before each fork it
checks that it still has exactly one thread, and refuses to fork otherwise (the parent then
execs its children).

The child it forks is exactly an exec'd child: it leads its own session; its lifeline, its
status pipe and its log file are the parent's, passed over the socket (``SCM_RIGHTS``), and
nothing else stays open in it; it reads its server from the lifeline and reports ready as
any child does. The zygote is its parent: it reaps it at once (a pidfd each) and writes its
exit status on a pipe the parent holds (:class:`mocksup._fork.Forked` reads it), and it
hands the parent a pidfd of the child, so the parent waits on and signals the very process
it asked for. When the parent is gone (its socket closes) the zygote forks no more; it
reaps the children, which end on their own lifelines, then exits.

Requests are JSON datagrams on a ``SOCK_SEQPACKET`` socket pair, each with an ``id`` that
its answer repeats: ``fork`` (four descriptors: lifeline, status pipe, log file, exit pipe),
``preload`` (import the rest, in the gaps between requests; no answer) and ``settle``
(answered once everything is imported).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from typing import NoReturn

__all__ = ("CORE", "EXIT", "REST", "main")

#: Imported before the first fork: what every child needs (its own machinery, pydantic) and
#: what mocksup's serving helpers use.
CORE = ("mocksup.base", "mocksup._child", "mocksup.serving", "grpc", "werkzeug.serving", "psutil")
#: Imported once no start is under way, one module between two requests: the mocks, and
#: what their children and :func:`mocksup.serving.grpc_server` would otherwise import as
#: they start (about 14 ms of a collector's start, 6 ms of a gRPC server's): the HTTP/2
#: server, werkzeug's routing (the control API), the idna codec (a host name's lookup),
#: grpcio's server. Plain Python: no gRPC object, no thread.
REST = (
    "mocksup.otlp",
    "mocksup.vllm",
    "mocksup._h2.server",
    "werkzeug.routing",
    "encodings.idna",
    "grpc._server",
    "concurrent.futures.thread",
)
#: How an exit status travels on the exit pipe: ``Popen.returncode``'s convention.
EXIT = struct.Struct("!i")
#: Seconds the zygote waits for its children after its parent is gone; they end on their
#: own lifelines within ``_child.HARD_EXIT_AFTER``.
_LINGER = 5.0


def main(argv: list[str]) -> int:
    """Serve fork requests on the socket ``argv[0]`` until the parent closes it."""
    control = socket.socket(fileno=int(argv[0]))
    # Objects freed between forks would leave holes that each child's writes then copy.
    gc.disable()
    _import(CORE)
    from mocksup import _child

    _child.prepare()
    return _Zygote(control).run()


def _import(names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            # Preloading is an optimisation: a module that cannot load here fails in the
            # child with its real error, when a server that needs it is unpickled.
            continue
        except Exception:
            traceback.print_exc()  # the same: in the zygote's log, and the child says it


def _ours(module: object) -> bool:
    """Whether ``module`` is one of mocksup's own, safe to import here."""
    return isinstance(module, str) and module.startswith("mocksup.")


def _rest() -> list[str]:
    """The modules of :data:`REST` not imported yet, one list to import one by one."""
    from mocksup._child import modules_of

    names = [name for package in REST for name in modules_of(package)]
    return [name for name in names if name not in sys.modules]


def _unsafe() -> str | None:
    """Why forking now would be unsafe, or ``None``: a fork copies only the calling thread."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return "cannot count its threads"
    return None if threads == 1 else f"it runs {threads} threads"


class _Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.poller = select.poll()
        self.poller.register(control, select.POLLIN)
        self.children: dict[int, tuple[int, int]] = {}  # pidfd: (pid, exit pipe)
        self.rest: list[str] = []
        self.settling: list[int] = []  # ids of settle requests not yet answered
        self.parent = True

    def run(self) -> int:
        gone_at = 0.0
        while self.parent or self.children:
            if not self.parent:
                left = gone_at + _LINGER - time.monotonic()
                if left <= 0:
                    return 0
                timeout: float | None = left * 1e3
            else:
                timeout = 0 if self.rest else None
            events = self.poller.poll(timeout)
            for fd, _ in events:
                if fd == self.control.fileno() and self.parent:
                    if not self._request():
                        gone_at = time.monotonic()
                elif fd in self.children:
                    self._reap(fd)
            if not events and self.parent and self.rest:
                _import([self.rest.pop(0)])
                if not self.rest:
                    self._settled()
        return 0

    def _request(self) -> bool:
        """Serve one request; return whether the parent is still there."""
        try:
            data, fds, _, _ = socket.recv_fds(self.control, 65536, 4)
        except OSError:
            data, fds = b"", []
        if not data:
            self._parent_gone(fds)
            return False
        message = json.loads(data)
        kind, ident = message.get("kind"), message.get("id")
        if kind == "fork" and len(fds) == 4:
            self._fork(ident, message.get("module"), fds)
            return True
        for fd in fds:
            os.close(fd)
        if kind == "preload":
            self.rest = _rest()
        elif kind == "settle":
            self.settling.append(ident)
            if not self.rest:
                self._settled()
        return True

    def _parent_gone(self, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        self.parent = False
        self.poller.unregister(self.control)
        self.control.close()

    def _settled(self) -> None:
        for ident in self.settling:
            self._answer({"id": ident, "settled": True})
        self.settling = []

    def _answer(self, message: dict[str, object], fds: list[int] | None = None) -> None:
        # The parent may be gone: its socket's EOF, read next, ends the zygote's serving.
        with contextlib.suppress(OSError):
            socket.send_fds(self.control, [json.dumps(message).encode()], fds or [])

    def _fork(self, ident: object, module: object, fds: list[int]) -> None:
        lifeline, status, log, exit_w = fds
        pid = pidfd = -1
        try:
            if _ours(module):
                from mocksup._child import modules_of

                _import(modules_of(str(module)))
            why = _unsafe()
            if why is not None:
                # It will not become safe again: the parent stops asking.
                message = {"id": ident, "error": f"the zygote cannot fork: {why}", "fatal": True}
                self._answer(message)
                return
            gc.freeze()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                self._become_child(lifeline, status, log)
            pidfd = _pidfd(pid)
        except OSError as error:
            self._answer({"id": ident, "error": f"the zygote cannot fork: {error}"})
            return
        finally:
            for fd in (lifeline, status, log) if pid != 0 else ():
                os.close(fd)
            if pidfd < 0 and pid != 0:
                os.close(exit_w)
        self.children[pidfd] = (pid, exit_w)
        self.poller.register(pidfd, select.POLLIN)
        self._answer({"id": ident, "pid": pid}, [pidfd])

    def _reap(self, pidfd: int) -> None:
        pid, exit_w = self.children.pop(pidfd)
        self.poller.unregister(pidfd)
        # The pidfd is readable: the child has exited and this wait does not block.
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            os.write(exit_w, EXIT.pack(os.waitstatus_to_exitcode(status)))
        os.close(exit_w)
        os.close(pidfd)

    def _become_child(self, lifeline: int, status: int, log: int) -> NoReturn:
        """In the forked child: become an exec'd child's twin, run the server, exit."""
        code = 70
        try:
            os.setsid()
            os.dup2(log, 1)
            os.dup2(log, 2)
            # Detached, not closed: the socket object must never close a number reused since.
            self.control.detach()
            _close_all_but(0, 1, 2, lifeline, status)
            gc.enable()
            from mocksup import _child

            code = _child.run(lifeline, status, adopted=True)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _pidfd(pid: int) -> int:
    """A pidfd of our child ``pid``; if none can be had, the child is killed and reaped."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


def _close_all_but(*keep: int) -> None:
    """Close every descriptor but ``keep``: nothing of the zygote's (its socket, the exit
    pipes and pidfds of the other children) stays open in a child."""
    low = 0
    for fd in sorted(set(keep)):
        # Never an empty range: os.closerange(0, 0) asks close_range() for 0 to -1, which
        # it reads as 0 to UINT_MAX and closes everything.
        if low < fd:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


if __name__ == "__main__":
    # Run as ``python -m mocksup._zygote``: hand over to the module under its own name.
    from mocksup._zygote import main as _main

    code = _main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: tens of milliseconds of CPU for all it imported, taken from
    # the start that may be running next to it (a new zygote, a test's own work).
    os._exit(code)
