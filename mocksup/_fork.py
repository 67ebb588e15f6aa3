"""The parent's side of the zygote: its client, and the handle of a child it forked.

The zygote itself (:mod:`mocksup._zygote`) forks; this module starts it, sends it requests
(a lock serialises them), and reads its answers in a thread of its own, which hands each
to the :class:`~concurrent.futures.Future` of its request: a start waits for its child in
its own event loop, and a start cancelled meanwhile leaves nothing behind. A forked child is
not this process's child: :class:`Forked` waits on it through the pidfd the zygote hands
over and reads its exit status from the pipe the zygote writes it to.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from mocksup import _logs, _reap
from mocksup._zygote import EXIT

__all__ = ("UNKNOWN_EXIT", "Forked", "Zygote", "ZygoteError", "enabled_from_env")

_log = logging.getLogger(__name__)

#: ``Forked.returncode`` of a child that exited after its zygote was gone: the exit status
#: was lost with the zygote. No exit code or signal number is this.
UNKNOWN_EXIT = 256
#: After a forked child's exit, how long the zygote may take to report its status.
_STATUS_WAIT = 1.0


class Forked:
    """A child the zygote forked, with the part of ``Popen`` the supervisor uses.

    The zygote reaps it and writes its exit status on the exit pipe; the pidfd the zygote
    handed over names this very process (it cannot be reaped before the zygote opens it).
    If the zygote is gone when the child exits, the pidfd still says when, not how:
    ``returncode`` is then :data:`UNKNOWN_EXIT`.
    """

    def __init__(self, pid: int, pidfd: int, exit_fd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._exit_fd: int | None = exit_fd
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        """The exit code, or ``None`` while it runs (or its status is on its way)."""
        return self._wait(0.0)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code.

        :raises subprocess.TimeoutExpired: it did not exit within ``timeout`` seconds.
        """
        code = self._wait(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        return code

    def _wait(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._collect(0.0) is not None:
                    return self.returncode
                # Each waiter selects on a duplicate, which no other thread closes.
                pidfd = os.dup(self._pidfd)
            try:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                exited = _readable(pidfd, left)
            finally:
                os.close(pidfd)
            if not exited:
                return None
            with self._lock:
                # It has exited: the zygote writes its status the moment it has reaped it
                # (as Popen.poll() reaps an exited child, this waits for that moment).
                if self._collect(_STATUS_WAIT) is not None:
                    return self.returncode
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _collect(self, timeout: float) -> int | None:
        """Read the exit status if it is there (within ``timeout``); under the lock."""
        if self.returncode is not None:
            return self.returncode
        if self._exit_fd is not None:
            if not _readable(self._exit_fd, timeout):
                return None
            data = os.read(self._exit_fd, EXIT.size)
            if len(data) == EXIT.size:
                self._finish(EXIT.unpack(data)[0])
                return self.returncode
            # EOF: the zygote is gone; only the pidfd can tell the exit now.
            os.close(self._exit_fd)
            self._exit_fd = None
        if _readable(self._pidfd, 0.0):
            self._finish(UNKNOWN_EXIT)
        return self.returncode

    def abandon(self) -> None:
        """SIGKILL it (through the pidfd: this very process) and forget its status."""
        with self._lock:
            if self.returncode is None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                self._finish(UNKNOWN_EXIT)

    def _finish(self, code: int) -> None:
        self.returncode = code
        for fd in (self._exit_fd, self._pidfd):
            if fd is not None:
                os.close(fd)
        self._exit_fd = None


def _readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` is readable within ``timeout`` seconds (poll: any descriptor number,
    where select stops at 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1e3))


class ZygoteError(Exception):
    """The zygote could not fork this child (the start then execs one)."""


def enabled_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``MOCKSUP_ZYGOTE`` leaves the zygote on (``0`` turns it off) and this system
    can run one (``fork`` and pidfds: Linux 5.3 or later)."""
    text = environ.get("MOCKSUP_ZYGOTE", "1").strip()
    if text not in ("0", "1"):
        _log.warning("MOCKSUP_ZYGOTE=%r is neither 0 nor 1; the zygote stays on", text)
    return text != "0" and sys.platform.startswith("linux") and hasattr(os, "pidfd_open")


class Zygote:
    """The parent's end of the zygote: starts it, asks it for children, reads its answers.

    Requests are sent under a lock; a reader thread hands each answer to the
    :class:`~concurrent.futures.Future` of its request, so that a start waits in its own
    event loop, and a cancelled start never leaves a child behind (its lifeline closes).
    """

    def __init__(self, enabled: bool, env: Callable[[dict[str, str]], dict[str, str]]) -> None:
        self.enabled = enabled
        self._env = env
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._log_path: str | None = None
        # Request id: its future, its exit pipe, the socket of the zygote asked.
        self._pending: dict[int, tuple[Future[Any], int | None, socket.socket]] = {}
        self._ids = itertools.count(1)
        self._starts = 0
        self._preloading = False
        self._forked = False
        self._retired: list[subprocess.Popen[bytes]] = []
        self._readers: dict[subprocess.Popen[bytes], threading.Thread] = {}

    @property
    def pid(self) -> int | None:
        """The running zygote's pid, or ``None``."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def pids(self) -> set[int]:
        """The zygotes not yet reaped: the running one and closed ones whose children
        still run (a zygote reaps its children before it exits)."""
        with self._lock:
            self._reap_retired()
            procs = [*self._retired, *([self._proc] if self._proc is not None else [])]
            return {proc.pid for proc in procs}

    def fork(self, module: str, lifeline: int, status: int, log: int) -> Future[Forked] | None:
        """Ask for a child with these pipe ends and log file; ``None`` when no zygote can
        be asked. ``module`` is the server class's: the zygote imports it first if it is
        one of mocksup's own."""
        exit_r, exit_w = os.pipe()
        try:
            message: dict[str, object] = {"kind": "fork", "module": module}
            future = self._request(message, [lifeline, status, log, exit_w], exit_r)
        finally:
            os.close(exit_w)
        if future is None:
            os.close(exit_r)
        return future

    def start(self) -> bool:
        """Start the zygote unless it runs; return whether it does."""
        with self._lock:
            return self._running()

    def begin(self) -> None:
        """A start is under way: the zygote keeps its imports for when none is."""
        with self._lock:
            self._starts += 1

    def end(self) -> None:
        """A start is over; with none under way, the zygote imports the rest of the mocks."""
        with self._lock:
            self._starts -= 1
            if self._starts > 0 or self._sock is None or self._preloading:
                return
            self._preloading = True
        self._request({"kind": "preload"}, expect_answer=False)

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until a running zygote has imported everything (for tests and benchmarks);
        return whether it has (``True`` when no zygote runs)."""
        with self._lock:
            if self._sock is None:
                return True
            self._preloading = True
        self._request({"kind": "preload"}, expect_answer=False)
        future = self._request({"kind": "settle"})
        if future is None:
            return True
        try:
            future.result(timeout)
        except ZygoteError:
            return True  # gone: nothing is being imported
        except concurrent.futures.TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop asking the zygote: it forks no more and exits once its children have."""
        with self._lock:
            sock, proc = self._sock, self._proc
            self._sock = self._proc = None
            if proc is not None:
                self._retired.append(proc)
            self._reap_retired()
        if sock is not None:
            # The reader thread sees the end and closes the socket; the zygote sees EOF.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait_closed(self, timeout: float) -> bool:
        """Wait until every closed or dead zygote has exited and its end has been dealt with
        (for tests); return whether it has."""
        deadline = time.monotonic() + timeout
        with self._lock:
            procs = list(self._retired)
            if self._proc is not None and self._proc.poll() is not None:
                procs.append(self._proc)  # died: its reader is about to say so
            readers = [self._readers[proc] for proc in procs if proc in self._readers]
        for reader in readers:
            reader.join(max(deadline - time.monotonic(), 0.0))
        for proc in procs:
            if not _reap.wait_exit(proc, max(deadline - time.monotonic(), 0.0)):
                return False
        with self._lock:
            self._reap_retired()
        return not any(reader.is_alive() for reader in readers)

    # -- under the hood ------------------------------------------------------------------

    def _request(
        self,
        message: dict[str, object],
        fds: list[int] | None = None,
        exit_r: int | None = None,
        *,
        expect_answer: bool = True,
    ) -> Future[Any] | None:
        future: Future[Any] = Future()
        with self._lock:
            if not self._running():
                return None
            assert self._sock is not None
            ident = next(self._ids)
            if expect_answer:
                self._pending[ident] = (future, exit_r, self._sock)
            try:
                socket.send_fds(
                    self._sock, [json.dumps({**message, "id": ident}).encode()], fds or []
                )
            except OSError:
                self._pending.pop(ident, None)
                return None
        return future

    def _running(self) -> bool:
        """Whether a zygote runs, starting one if none does; under the lock."""
        if self._sock is not None:
            return True
        if not self.enabled:
            return False
        from mocksup._payload import exec_env

        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        path, log = _logs.open_file("zygote")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mocksup._zygote", str(child_end.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(child_end.fileno(),),
                start_new_session=True,
                env=exec_env(self._env({})),
            )
        except OSError as error:
            _log.warning("cannot start the zygote (%s); every child is exec'd", error)
            parent_end.close()
            self.enabled = False
            return False
        finally:
            child_end.close()
            os.close(log)
        self._proc, self._sock, self._log_path = proc, parent_end, str(path)
        self._preloading = self._forked = False
        reader = threading.Thread(
            target=self._read, args=(parent_end, proc), name="mocksup-zygote", daemon=True
        )
        self._readers[proc] = reader
        reader.start()
        return True

    def _read(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        """The reader thread: hand each answer to its request, until the socket ends."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(sock, 65536, 1)
            except OSError:
                data, fds = b"", []
            if not data:
                break
            message = json.loads(data)
            with self._lock:
                future, exit_r, _ = self._pending.pop(message.get("id"), (None, None, sock))
                if "pid" in message:
                    self._forked = True
            self._answer(message, fds, future, exit_r)
        sock.close()
        self._gone(sock, proc)

    def _answer(
        self,
        message: dict[str, Any],
        fds: list[int],
        future: Future[Any] | None,
        exit_r: int | None,
    ) -> None:
        if "pid" in message and fds and exit_r is not None:
            forked = Forked(int(message["pid"]), fds[0], exit_r)
            if future is None or not _resolve(future, forked):
                # Its start was cancelled before it had a server: it ends here, and the
                # zygote reaps it.
                forked.abandon()
            return
        for fd in fds:
            os.close(fd)
        if exit_r is not None:
            os.close(exit_r)
        if "error" in message:
            fatal = bool(message.get("fatal"))
            _log.warning(
                "%s; %s", message["error"], "every child is exec'd" if fatal else "exec'd instead"
            )
            if fatal:
                self.enabled = False
                self.close()
            if future is not None:
                _fail(future, ZygoteError(str(message["error"])))
        elif future is not None:
            _resolve(future, message)

    def _gone(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._readers.pop(proc, None)
            ours = [ident for ident, (_, _, asked) in self._pending.items() if asked is sock]
            pending = [self._pending.pop(ident) for ident in ours]
            current = self._proc is proc
            if current:
                self._sock = self._proc = None
                self._retired.append(proc)
                if not self._forked:
                    # It died before its first child: it would die again; exec from now on.
                    self.enabled = False
        for future, exit_r, _ in pending:
            if exit_r is not None:
                os.close(exit_r)
            _fail(future, ZygoteError("the zygote exited"))
        if current:
            _log.warning(
                "the zygote (pid %s) exited; %s (its output: %s)",
                proc.pid,
                "the next start runs a new one" if self.enabled else "every child is exec'd",
                self._log_path,
            )
            _logs.folder.mark_failed()

    def _reap_retired(self) -> None:
        self._retired = [proc for proc in self._retired if proc.poll() is None]

    def _after_fork(self) -> None:
        """In a fork of this process (multiprocessing's ``fork``): the zygote is the
        parent's. Forget it (the copy of its socket closed) and start afresh if asked."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        if self._sock is not None:
            self._sock.close()
        self._sock = self._proc = None
        self._pending, self._retired, self._readers = {}, [], {}
        self._starts = 0


def _resolve(future: Future[Any], value: object) -> bool:
    try:
        future.set_result(value)
    except Exception:  # cancelled: InvalidStateError
        return False
    return True


def _fail(future: Future[Any], error: Exception) -> None:
    with contextlib.suppress(Exception):
        future.set_exception(error)
