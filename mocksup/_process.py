"""One child's life: spawn, ready handshake, output tail, stop escalation.

The child is started with ``subprocess.Popen`` running ``python -m mocksup._child``: an exec
(vfork/posix_spawn), never a bare fork and never ``preexec_fn``, so it is safe when the parent
has loaded gRPC, and it works whatever multiprocessing start method the program uses
(``spawn``, or ``forkserver``, the default from Python 3.14). The handle is plain ``Popen``
plus two pipes, independent of any event loop: servers started under ``asyncio.run()`` outlive
that loop and can be stopped later from sync code.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mocksup import _launch, _reap
from mocksup._child import encode_payload
from mocksup.errors import (
    ChildCrashedError,
    MockServerError,
    PortInUseError,
    StartupTimeoutError,
    StopError,
)

if TYPE_CHECKING:
    from mocksup.base import MockServerBase

__all__ = ["ChildProcess"]

_log = logging.getLogger("mocksup")

#: Of a stop's budget, what is kept back for SIGKILL and reaping after the graceful part.
_KILL_RESERVE = 0.25
#: Lines of output quoted in an error.
TAIL_LINES = 50

_live: set[ChildProcess] = set()
_live_lock = threading.Lock()
_session_dir: Path | None = None


def _log_dir(server: MockServerBase) -> Path:
    global _session_dir
    if server.log_dir is not None:
        server.log_dir.mkdir(parents=True, exist_ok=True)
        return server.log_dir
    if _session_dir is None:
        _session_dir = Path(tempfile.mkdtemp(prefix="mocksup-"))
    return _session_dir


def _main_path(server: MockServerBase) -> str | None:
    if type(server).__module__ != "__main__":
        return None
    main = sys.modules["__main__"]
    path: str | None = getattr(main, "__file__", None)
    if path is None:
        raise TypeError(
            f"{type(server).__name__} is defined in an interactive session; define it in a "
            "module the child process can import"
        )
    return os.path.abspath(path)


class ChildProcess:
    """The parent's handle on one running mock server child."""

    def __init__(self, server: MockServerBase) -> None:
        self.server = server
        self.name = server.name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._lifeline: int | None = None
        self._warm = False
        self._taken = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the child's output."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                data = log.read()
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    # -- start ---------------------------------------------------------------------------

    def _spawn(self, warm: bool) -> int:
        """Start the child, warm when allowed and one is idle; return its status pipe."""
        server = self.server
        main_path = _main_path(server)
        directory = _log_dir(server)
        if server.log_dir is not None:
            self.log_path = directory / f"{server.name}.log"
            log = open(self.log_path, "wb")  # noqa: SIM115 (closed below, after the spawn)
        else:
            fd, path = tempfile.mkstemp(prefix=f"{server.name}-", suffix=".log", dir=directory)
            self.log_path = Path(path)
            log = os.fdopen(fd, "wb")
        env = _launch.child_env(server.env)
        with log:
            # A warm child imported its modules under the environment of its own start: one
            # for a server with environment settings of its own is started afresh.
            launched = _launch.pool.take() if warm and not server.env else None
            self._warm = launched is not None
            self._taken = False
            if launched is not None:
                try:
                    launched.send(
                        encode_payload(server, main_path, env=env, log_path=str(self.log_path))
                    )
                except BrokenPipeError:
                    launched.discard()
                    launched = None
            if launched is None:
                launched = _launch.launch(env, log)
                launched.send(encode_payload(server, main_path))
        self.proc = launched.proc
        self._lifeline = launched.lifeline
        with _live_lock:
            _live.add(self)
        return launched.status

    async def start(self, timeout: float) -> dict[str, int]:
        """Spawn the child and wait until it serves; return the ports it reported."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            message = await self._attempt(timeout, warm=True)
            if message is None and self._warm and not self._taken:
                # The warm child died before it took the server (killed from outside, say):
                # nothing of this server ran yet, so start it afresh.
                _log.warning("%s: warm child %s was gone; starting afresh", self.name, self.pid)
                await loop.run_in_executor(None, self._reap_gone)
                message = await self._attempt(max(deadline - loop.time(), 0.001), warm=False)
        finally:
            # Replace the warm child this start took (or make the first ones), now that
            # the start itself no longer competes for the CPU.
            _launch.pool.refill()
        if message is None:
            raise await self._crashed()
        if message.get("event") == "error":
            raise await self._reported(message)
        ports: dict[str, int] = message["ports"]
        try:
            await self._probe(ports, deadline)
        except BaseException:
            self._kill_now()
            raise
        return ports

    async def _attempt(self, timeout: float, *, warm: bool) -> dict[str, Any] | None:
        status_r = self._spawn(warm)
        try:
            return await self._read_status(status_r, timeout)
        except BaseException:
            self._kill_now()
            raise
        finally:
            os.close(status_r)

    def _reap_gone(self) -> None:
        if self.proc is not None and not _reap.wait_exit(self.proc, 1.0):
            _reap.kill_tree(self.proc)
            _reap.wait_exit(self.proc, 1.0)
        self._forget()

    async def _read_status(self, fd: int, timeout: float) -> dict[str, Any] | None:
        """The child's status (ready or error), or ``None`` at EOF (the child exited)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        buffer = bytearray()
        os.set_blocking(fd, False)

        def on_readable() -> None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            buffer.extend(chunk)
            while b"\n" in buffer and not done.done():
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                message: dict[str, Any] = json.loads(line)
                if message.get("event") == "taken":
                    self._taken = True
                else:
                    done.set_result(message)
            if not chunk and not done.done():
                done.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            return await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            raise self._timed_out(timeout) from None
        finally:
            loop.remove_reader(fd)

    async def _probe(self, ports: dict[str, int], deadline: float) -> None:
        """Connect once to each reported port: the child said it serves; check from outside."""
        loop = asyncio.get_running_loop()
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            self.server.host, self.server.host
        )
        for port in ports.values():
            while True:
                try:
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port), max(deadline - loop.time(), 0.001)
                    )
                except (OSError, asyncio.TimeoutError) as error:
                    if not self.is_running():
                        raise await self._crashed() from error
                    if loop.time() >= deadline:
                        raise self._timed_out(self.server.start_timeout) from error
                    # Ready is reported after listen(), so a refusal here is rare (a firewall,
                    # a wrong host): try again soon, without spinning.
                    await asyncio.sleep(0.01)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                break

    async def _crashed(self) -> ChildCrashedError:
        assert self.proc is not None
        proc = self.proc
        loop = asyncio.get_running_loop()
        # The status pipe closes as the child exits: its exit status follows at once.
        exited = await loop.run_in_executor(None, _reap.wait_exit, proc, 1.0)
        if not exited:
            self._kill_now()
        self._forget()
        return ChildCrashedError.from_exit(
            server=self.name,
            pid=proc.pid,
            returncode=proc.returncode,
            output_tail=self.tail(),
            log_path=str(self.log_path),
        )

    async def _reported(self, message: dict[str, Any]) -> MockServerError:
        error: MockServerError = pickle.loads(base64.b64decode(message["error"]))
        loop = asyncio.get_running_loop()
        assert self.proc is not None
        if not await loop.run_in_executor(None, _reap.wait_exit, self.proc, 1.0):
            self._kill_now()
        self._forget()
        if isinstance(error, PortInUseError):
            holder_pid, holder_name = await loop.run_in_executor(
                None, _reap.port_holder, error.port
            )
            return error.with_context(self.name, holder_pid, holder_name)
        if error.server is None:
            error.server = self.name
        return error

    def _timed_out(self, timeout: float) -> StartupTimeoutError:
        pid = self.pid
        self._kill_now()
        return StartupTimeoutError(
            f"mock server {self.name!r} (pid {pid}) was not ready within {timeout:g} s and "
            "was killed; raise start_timeout if the machine is slow, or see its output below",
            server=self.name,
            pid=pid,
            returncode=self.proc.returncode if self.proc else None,
            output_tail=self.tail(),
            log_path=str(self.log_path),
            timeout=timeout,
        )

    # -- stop ----------------------------------------------------------------------------

    def _kill_now(self) -> None:
        if self.proc is not None:
            _reap.kill_tree(self.proc)
            _reap.wait_exit(self.proc, 1.0)
        self._forget()

    def _forget(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        with _live_lock:
            _live.discard(self)

    def stop(self, timeout: float) -> None:
        """SIGTERM the group, wait, SIGKILL the tree, reap; all within about ``timeout``."""
        proc = self.proc
        if proc is None or (proc.returncode is not None and self._lifeline is None):
            return
        start = time.monotonic()
        tree = _reap.descendants(proc.pid)
        _reap.signal_group(proc, signal.SIGTERM)
        graceful = _reap.wait_exit(proc, max(timeout - _KILL_RESERVE, 0.0))
        if not graceful:
            _log.warning(
                "%s [%s] did not stop within %.2f s of SIGTERM; killing it",
                self.name,
                proc.pid,
                timeout - _KILL_RESERVE,
            )
        # Kill whatever is left: the child if it ignored SIGTERM, and any grandchildren.
        _reap.kill_tree(proc, tree)
        remaining = max(timeout - (time.monotonic() - start), _KILL_RESERVE)
        exited = _reap.wait_exit(proc, remaining)
        stragglers = _reap.reap(tree, remaining)
        self._forget()
        if not exited or stragglers:
            raise StopError(
                f"mock server {self.name!r} (pid {proc.pid}) could not be reaped even after "
                f"SIGKILL ({len(stragglers)} descendant(s) left); it may be stuck in the "
                "kernel (uninterruptible I/O)",
                server=self.name,
                pid=proc.pid,
                returncode=proc.returncode,
                output_tail=self.tail(),
                log_path=str(self.log_path),
            )
        _log.info(
            "%s [%s] stopped in %.0f ms", self.name, proc.pid, 1e3 * (time.monotonic() - start)
        )


def stop_live(timeout: float = 2.0) -> None:
    """Stop every child still running; the ``atexit`` safety net."""
    with _live_lock:
        children = list(_live)
    for child in children:
        with contextlib.suppress(Exception):
            child.stop(timeout)


atexit.register(stop_live)
