"""One child's life: spawn, ready handshake, output tail, stop escalation.

The child is started with ``subprocess.Popen`` running ``python -m mocksup._child``: an exec
(vfork/posix_spawn), never a bare fork and never ``preexec_fn``, so it is safe when the parent
has loaded gRPC, and it works whatever multiprocessing start method the program uses
(``spawn``, or ``forkserver``, the default from Python 3.14). The handle is plain ``Popen``
plus two pipes, independent of any event loop: servers started under ``asyncio.run()`` outlive
that loop and can be stopped later from sync code.

Each child's stdout and stderr go to its log file (:mod:`mocksup._logs`), never to a pipe.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mocksup import _fork, _launch, _logs, _payload, _reap
from mocksup.errors import (
    ChildCrashedError,
    ChildSuspendedError,
    MockServerError,
    PortInUseError,
    ReadyError,
    StartupTimeoutError,
    StopError,
)

if TYPE_CHECKING:
    import psutil

    from mocksup.base import MockServerBase
    from mocksup.errors import _ProcessError

    _E = TypeVar("_E", bound=_ProcessError)

__all__ = ("TAIL_LINES", "ChildProcess", "stop_live")

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

_log = logging.getLogger(__name__)

#: Of a stop's budget, what is kept back for SIGKILL and reaping after the graceful part.
_KILL_RESERVE = 0.25
#: Lines of output quoted in an error.
TAIL_LINES = 50

_live: set[ChildProcess] = set()
_live_lock = threading.Lock()


def _sweep_once() -> None:
    try:
        _reap.sweep_leftovers()
    except Exception:
        _log.exception("the sweep of leftover mock servers failed")


class ChildProcess:
    """The parent's handle on one running mock server child.

    :raises MockServerError: created while a child runs the program's script again to
        import a server class (the script starts servers at import: it is not guarded).
    """

    def __init__(self, server: MockServerBase) -> None:
        if _payload.importing_main is not None:
            raise MockServerError(
                f"mock server {server.name!r} was started while a mock's child process ran "
                f"{_payload.importing_main} again to import a server class defined there: "
                "the script starts servers when it is imported. Put its own work under "
                '`if __name__ == "__main__":`, as multiprocessing requires too',
                server=server.name,
            )
        self.server = server
        self.name = server.name
        self.proc: _reap.Proc | None = None
        self.log_path: Path | None = None
        self.ready = False
        self._death: ChildCrashedError | None = None
        self._lifeline: int | None = None
        #: stop() has signalled it: its exit from then on is ours, not a crash.
        self._stopping = False
        self._adopted = False
        self._taken = False
        self._budget = server.start_timeout

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the child's output."""
        return _logs.tail(self.log_path, lines) if self.log_path is not None else ""

    def failure(self, grace: float = 0.0) -> MockServerError | None:
        """Why the server does not serve now, or ``None`` when it does (after up to
        ``grace`` seconds for a child that may be exiting to be seen as exited)."""
        proc = self.proc
        if proc is None:
            return MockServerError(f"mock server {self.name!r} was never started", server=self.name)
        if proc.poll() is not None or (grace > 0 and _reap.wait_exit(proc, grace)):
            if self._stopping or (self._death is None and self._lifeline is None):
                return MockServerError(f"mock server {self.name!r} was stopped", server=self.name)
            return self._died()
        if _reap.is_suspended(proc.pid):
            return self._error(
                ChildSuspendedError,
                f"mock server {self.name!r} (pid {proc.pid}) is suspended (SIGSTOP or a "
                "debugger): it accepts connections but answers nothing until it gets SIGCONT",
            )
        return None

    def _error(self, kind: type[_E], message: str) -> _E:
        return kind(
            message,
            server=self.name,
            pid=self.pid,
            returncode=_exit_code(self.proc),
            output_tail=self.tail(),
            log_path=str(self.log_path),
        )

    def _died(self) -> ChildCrashedError:
        """The error for a child that exited on its own: logged once, its logs kept."""
        if self._death is None:
            assert self.proc is not None
            self._death = ChildCrashedError.from_exit(
                server=self.name,
                pid=self.proc.pid,
                returncode=_exit_code(self.proc),
                output_tail=self.tail(),
                log_path=str(self.log_path),
                ready=self.ready,
            )
            _log.error("%s", self._death)
            _logs.folder.mark_failed()
            # Whatever it started may still run in its group.
            _reap.kill_tree(self.proc)
            self._forget()
        return self._death

    # -- start ---------------------------------------------------------------------------

    async def _spawn(self, adopt: bool, deadline: float) -> int:
        """Start the child; return its status pipe.

        With ``adopt``: a child ``mocksup up`` started early if one waits, else a fork of
        the zygote; an exec when neither is there (or allowed).
        """
        server = self.server
        handed = None
        if adopt:
            # A child ``mocksup up`` started early: sent this server already (by up itself,
            # before it imported the harness), or sent it now.
            handed = _launch.prestarted.adopt(server)
            if handed is None and _launch.prestarted.hand_over(server):
                handed = _launch.prestarted.adopt(server)
        if handed is not None:
            child, self.log_path = handed
            self._adopted, self._taken = True, False
            return self._started(child)
        script = _payload.main_path(server)
        self.log_path, log = _logs.open_log(server)
        env = _launch.child_env(server.env)
        try:
            launched = None
            # An adopted child imported its modules under the environment of the moment it
            # was started: a server with environment settings of its own gets an exec.
            if adopt and not server.env:
                launched = await self._fork(script, env, log, deadline)
            self._adopted = launched is not None
            self._taken = False
            if launched is None:
                launched = _launch.launch(env, log)
                launched.send(_payload.encode(server, script))
        finally:
            os.close(log)
        return self._started(launched)

    def _started(self, launched: _launch.Launched) -> int:
        """Hold ``launched`` as this server's child; return its status pipe."""
        self.proc = launched.proc
        self._lifeline = launched.lifeline
        with _live_lock:
            _live.add(self)
        return launched.status

    async def _fork(
        self, script: str | None, env: dict[str, str], log: int, deadline: float
    ) -> _launch.Launched | None:
        """A child forked by the zygote, or ``None`` when it cannot fork one."""
        lifeline_r, lifeline_w = os.pipe()
        status_r, status_w = os.pipe()
        # Held from now on: if this start is cancelled, closing it ends the child.
        self._lifeline = lifeline_w
        # Into the pipe before the child exists, so that it reads its server at once; what
        # does not fit follows once the zygote has answered.
        rest = _launch.write_ahead(lifeline_w, _payload.encode(self.server, script, env=env))
        try:
            module = type(self.server).__module__
            future = _launch.zygote.fork(module, lifeline_r, status_w, log)
        finally:
            os.close(lifeline_r)
            os.close(status_w)
        try:
            if future is None:
                raise _fork.ZygoteError("no zygote")
            loop = asyncio.get_running_loop()
            forked: _fork.Forked = await asyncio.wait_for(
                asyncio.wrap_future(future), max(deadline - loop.time(), 0.001)
            )
        except _fork.ZygoteError:
            self._forget()
            os.close(status_r)
            return None
        except asyncio.TimeoutError:
            os.close(status_r)
            raise self._timed_out(self.server.start_timeout) from None
        except BaseException:
            os.close(status_r)
            raise
        launched = _launch.Launched(forked, lifeline_w, status_r)
        # It may have died already: its status pipe says so, and the start tries an exec.
        with contextlib.suppress(BrokenPipeError):
            launched.send(rest)
        return launched

    async def start(self, timeout: float) -> dict[str, int]:
        """Spawn the child and wait until it serves; return the ports it reported.

        The first start in a process also sweeps the leftovers of crashed runs, in a worker
        thread while the child starts.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._budget = timeout
        # Once swept, no thread: a warm start takes a few milliseconds, a thread counts.
        sweep = None if _reap.swept() else loop.run_in_executor(None, _sweep_once)
        _launch.zygote.begin()
        try:
            message = await self._attempt(deadline, adopt=True)
            if message is None and self._adopted and not self._taken:
                # The child died before it took the server (killed from outside, say):
                # nothing of this server ran yet, so start it afresh.
                _log.warning(
                    "%s: child %s died before its server; starting afresh", self.name, self.pid
                )
                await loop.run_in_executor(None, self._reap_gone)
                message = await self._attempt(deadline, adopt=False)
        finally:
            # With no start under way, the zygote imports the rest of the mocks: not while
            # it would compete with this start for the CPU.
            _launch.zygote.end()
            if sweep is not None:
                await sweep
        if message is None:
            raise await self._crashed()
        if message.get("event") == "error":
            raise await self._reported(message)
        try:
            ports = self._check_ready(message.get("ports"))
            await self._probe(ports, deadline)
        except BaseException:
            _logs.folder.mark_failed()
            self._kill_now()
            raise
        self.ready = True
        return ports

    async def _attempt(self, deadline: float, *, adopt: bool) -> dict[str, object] | None:
        loop = asyncio.get_running_loop()
        try:
            status_r = await self._spawn(adopt, deadline)
        except BaseException:
            self._kill_now()
            raise
        try:
            return await self._read_status(status_r, max(deadline - loop.time(), 0.001))
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

    async def _read_status(self, fd: int, timeout: float) -> dict[str, object] | None:
        """The child's status (ready or error), or ``None`` at EOF (the child exited)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, object] | None] = loop.create_future()
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
                message = json.loads(line)
                event = message.get("event")
                if event == "taken":
                    self._taken = True
                elif event != "warm":  # a prestarted child done with its imports
                    done.set_result(message)
            if not chunk and not done.done():
                done.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            return await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            raise self._timed_out(self._budget) from None
        finally:
            loop.remove_reader(fd)

    def _check_ready(self, reported: object) -> dict[str, int]:
        """The ports ``ctx.ready()`` reported, once each is a port field of the server and a
        port number the field takes.

        :raises ReadyError: one is not.
        """
        ports = reported if isinstance(reported, dict) else {}
        fields = sorted(f for f in type(self.server).model_fields if f.endswith("port"))
        check = self.server.model_copy()
        for field, port in ports.items():
            if field not in type(self.server).model_fields:
                raise self._bad_ready(
                    field,
                    port,
                    f"{type(self.server).__name__} has no field {field!r}; ready() takes the "
                    f"port fields of the server ({', '.join(fields) or 'none'})",
                )
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise self._bad_ready(field, port, "that is not a port number (1 to 65535)")
            try:
                setattr(check, field, port)
            except ValueError as error:  # pydantic's ValidationError is a ValueError
                raise self._bad_ready(field, port, f"the field refuses it: {error}") from None
        return dict(ports)

    def _bad_ready(self, field: str, port: object, why: str) -> ReadyError:
        return ReadyError(
            f"mock server {self.name!r} called ctx.ready({field}={port!r}), but {why}; the "
            "child was stopped",
            server=self.name,
            field=field,
            port=port,
        )

    async def _probe(self, ports: dict[str, int], deadline: float) -> None:
        """Connect once to each reported port: the child said it serves; check from outside."""
        loop = asyncio.get_running_loop()
        host = self.server.client_host
        for field, port in ports.items():
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), max(deadline - loop.time(), 0.001)
                )
            except (OSError, asyncio.TimeoutError) as error:
                if not self.is_running():
                    raise await self._crashed() from error
                if isinstance(error, asyncio.TimeoutError):
                    raise self._timed_out(self.server.start_timeout) from error
                # Ready comes after listen(): a refusal now will not turn into a welcome.
                raise await self._unreachable(field, port, error) from error
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _unreachable(self, field: str, port: int, error: OSError) -> ReadyError:
        """Say why a reported port refused the probe: the mock listens elsewhere, or not
        at all. (A port that answers is never refused, whoever serves it: a container's
        proxy, say.)"""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        served = await loop.run_in_executor(None, _reap.listening_ports, self.proc.pid)
        if served is not None and port not in served:
            why = (
                f"no process of the mock listens on port {port}; report the port really "
                "bound, such as sock.getsockname()[1]"
            )
        else:
            what = "was refused" if isinstance(error, ConnectionRefusedError) else "failed"
            why = (
                f"a connection to {self.server.client_host} port {port} {what} ({error}); "
                "serve() must bind self.host and call ready() once it listens"
            )
        return self._bad_ready(field, port, why)

    async def _crashed(self) -> ChildCrashedError:
        assert self.proc is not None
        proc = self.proc
        loop = asyncio.get_running_loop()
        # The status pipe closes as the child exits: its exit status follows at once.
        exited = await loop.run_in_executor(None, _reap.wait_exit, proc, 1.0)
        if not exited:
            self._kill_now()
        self._forget()
        _logs.folder.mark_failed()
        return ChildCrashedError.from_exit(
            server=self.name,
            pid=proc.pid,
            returncode=_exit_code(proc),
            output_tail=self.tail(),
            log_path=str(self.log_path),
        )

    async def _reported(self, message: dict[str, object]) -> MockServerError:
        loop = asyncio.get_running_loop()
        assert self.proc is not None
        if not await loop.run_in_executor(None, _reap.wait_exit, self.proc, 1.0):
            self._kill_now()
        self._forget()
        error = _payload.decode_error(message, self.name)
        if isinstance(error, PortInUseError):
            holder_pid, holder_name = await loop.run_in_executor(
                None, _reap.port_holder, error.port, error.host
            )
            return error.with_context(self.name, holder_pid, holder_name)
        _logs.folder.mark_failed()
        if error.server is None:
            error.server = self.name
        return error

    def _timed_out(self, timeout: float) -> StartupTimeoutError:
        pid = self.pid
        self._kill_now()
        _logs.folder.mark_failed()
        error = self._error(
            StartupTimeoutError,
            f"mock server {self.name!r} (pid {pid}) was not ready within {timeout:g} s and "
            "was killed; see its output below for how far it got (raise start_timeout only "
            "if it shows slow progress)",
        )
        error.timeout = timeout
        return error

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
        """SIGTERM the group, wait, SIGKILL the tree, reap; all within about ``timeout``.

        :raises StopError: the child or a descendant could not be reaped even after SIGKILL.
        """
        proc = self.proc
        if proc is None or (self._lifeline is None and proc.poll() is not None):
            return  # never started, or stopped already
        if proc.poll() is not None:
            self._died()  # it exited on its own while serving: said (once), not raised
            return
        # Running: a first stop, or another try after a StopError.
        start = time.monotonic()
        self._stopping = True
        stragglers = self._terminate(proc, timeout)
        self._forget()
        if proc.returncode is None or stragglers:
            _logs.folder.mark_failed()
            raise self._error(
                StopError,
                f"mock server {self.name!r} (pid {proc.pid}) could not be reaped even after "
                f"SIGKILL ({len(stragglers)} descendant(s) left); it may be stuck in the "
                "kernel (uninterruptible I/O, a frozen cgroup)",
            )
        _log.info(
            "%s [%s] stopped in %.0f ms", self.name, proc.pid, 1e3 * (time.monotonic() - start)
        )

    def _terminate(self, proc: _reap.Proc, timeout: float) -> list[psutil.Process]:
        """SIGTERM, wait, SIGKILL the tree, reap; return the descendants still there."""
        start = time.monotonic()
        tree = _reap.descendants(proc.pid)
        _reap.signal_group(proc, signal.SIGTERM)
        # A stopped (SIGSTOP) child would act on its SIGTERM only once continued.
        _reap.signal_group(proc, signal.SIGCONT)
        graceful = max(timeout - _KILL_RESERVE, 0.0)
        if not _reap.wait_exit(proc, graceful):
            _log.warning(
                "%s [%s] did not stop within %.2f s of SIGTERM; killing it",
                self.name,
                proc.pid,
                graceful,
            )
        # Kill whatever is left: the child if it ignored SIGTERM, and any descendants.
        _reap.kill_tree(proc, tree)
        remaining = max(timeout - (time.monotonic() - start), _KILL_RESERVE)
        _reap.wait_exit(proc, remaining)
        return _reap.reap(tree, remaining)


def _exit_code(proc: _reap.Proc | None) -> int | None:
    """The exit code for an error: ``None`` while it runs, or when it was lost."""
    code = proc.returncode if proc is not None else None
    return None if code == _fork.UNKNOWN_EXIT else code


def stop_live(timeout: float = 2.0) -> None:
    """Stop every child still running, logging each that could not be stopped.

    The ``atexit`` safety net: it never raises.
    """
    with _live_lock:
        children = list(_live)
    for child in children:
        try:
            child.stop(timeout)
        except Exception as error:
            _logs.folder.mark_failed()
            _log.error("could not stop mock server %r at exit: %s", child.name, error)


def _at_exit() -> None:
    stop_live()
    _logs.folder.close()


atexit.register(_at_exit)
