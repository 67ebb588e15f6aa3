"""ProcessServer: supervise any executable with mocksup's guarantees, next to the mocks.

The app under test, a real OpenTelemetry Collector, a database: anything started from a
command line can join a suite's servers, with what mirakuru offers (readiness by port, by an
HTTP check or by a line of output) and what mocksup adds (concurrent start with the mocks, a
crash before ready reported at once with its output, no orphan even if the harness is
killed, one stop for everything)::

    from mocksup import MockServerConfig, ProcessServer, start_all

    app = ProcessServer(
        name="app",
        command=["python", "-m", "myapp", "--port", "{port}"],
        ready_url_path="/healthz",
    )

The command runs in a mocksup child of its own, as a grandchild in the child's process group:
when the child stops (or the harness dies and the lifeline closes), the command is signalled
and then killed with it. ``{port}`` and ``{host}`` in the command and in ``env`` values are
replaced by the port and host; with ``port=0`` a free port is chosen first (the command
binds it: a small race, unavoidable for a program that cannot report the port it bound).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from mocksup._context import ServeContext
from mocksup.base import MockServerBase
from mocksup.errors import ChildCrashedError, MockServerError
from mocksup.serving import url_host

__all__ = ("ProcessServer", "StopSignal")

#: The signals ``stop_signal`` may name.
StopSignal = Literal["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGKILL"]
#: How often readiness by port or HTTP is checked, at first and at most (it backs off).
_FIRST_CHECK = 0.002
_SLOWEST_CHECK = 0.05
_TAIL_LINES = 50


class ProcessServer(MockServerBase):
    """Runs ``command`` and reports ready once it serves (see the module docstring).

    Readiness, in this order: ``ready_pattern`` (a regular expression found in a line of
    the command's output), else ``ready_url_path`` (an HTTP GET on the port answering below
    500), else a TCP connect to ``port``. With none of those possible (``port=0`` and no
    ``{port}`` in the command), the command is ready as soon as it runs.

    Default port: ``0``, a free one chosen before the command starts (see the module
    docstring for the race that implies).
    """

    default_name: ClassVar[str] = "process"

    command: list[str] = Field(min_length=1, description="The program and its arguments.")
    cwd: Path | None = Field(None, description="Working folder of the command.")
    ready_pattern: str | None = Field(None, description="Ready when a line matches this.")
    ready_url_path: str | None = Field(
        None, description="Ready when GET on this path of the port answers below 500."
    )
    stop_signal: StopSignal = Field("SIGTERM", description="What asks the command to stop.")

    @field_validator("ready_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"ready_pattern is not a regular expression: {error}") from None
        return value

    @field_validator("ready_url_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("ready_url_path must start with '/'")
        return value

    def _uses_port(self) -> bool:
        text = " ".join([*self.command, *self.env.values()])
        return self.port != 0 or "{port}" in text

    # -- the child side ------------------------------------------------------------------

    def serve(self, ctx: ServeContext) -> None:
        """Start the command, wait until it is ready, then until the stop request."""
        port = self.port or (_free_port(self.host) if self._uses_port() else 0)
        values = {"port": str(port), "host": self.host}
        command = [_fill(part, values) for part in self.command]
        env = {**os.environ, **{k: _fill(v, values) for k, v in self.env.items()}}
        output = _Output(self.ready_pattern)
        try:
            proc = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as error:
            raise MockServerError(
                f"{self.name!r} could not run {command[0]!r}: {error}; check the command",
                server=self.name,
            ) from None
        output.follow(proc)
        try:
            self._await_ready(ctx, proc, output, port)
            if ctx.should_stop():
                return
            ctx.ready(**({"port": port} if port else {}))  # no port: nothing to probe
            threading.Thread(
                target=_stop_when_exited, args=(proc, ctx), name="mocksup-proc", daemon=True
            ).start()
            ctx.wait()
            if proc.poll() is not None and ctx.stop_reason == "the command exited":
                raise RuntimeError(f"the command exited with {proc.returncode} while serving")
        finally:
            self._end(proc)
            output.done.wait(1.0)

    def _await_ready(
        self, ctx: ServeContext, proc: subprocess.Popen[bytes], output: _Output, port: int
    ) -> None:
        checks = 0
        while not ctx.should_stop():
            if self.ready_pattern is not None:
                ready = output.matched.wait(_SLOWEST_CHECK)
            else:
                ready = port == 0 or self._serves(port)
            if ready:
                return
            if proc.poll() is not None:
                output.done.wait(1.0)
                raise ChildCrashedError(
                    f"{self.name!r}: the command {proc.args!r} exited with code "
                    f"{proc.returncode} before it was ready; its output below says why",
                    server=self.name,
                    pid=proc.pid,
                    returncode=proc.returncode,
                    output_tail=output.tail(),
                )
            if self.ready_pattern is None:
                # Polling a port is all a foreign program allows: start fast, back off.
                ctx.wait(min(_FIRST_CHECK * 2**checks, _SLOWEST_CHECK))
                checks += 1

    def _serves(self, port: int) -> bool:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if self.ready_url_path is None:
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    return True
            except OSError:
                return False
        url = f"http://{url_host(host)}:{port}{self.ready_url_path}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return int(response.status) < 500
        except urllib.error.HTTPError as error:
            return error.code < 500
        except (OSError, ValueError):
            return False

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.Signals[self.stop_signal])
            try:
                proc.wait(max(self.stop_timeout - 0.5, 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_when_exited(proc: subprocess.Popen[bytes], ctx: ServeContext) -> None:
    proc.wait()
    ctx.request_stop("the command exited")


class _Output:
    """Copies the command's output to ours (the child's log), line by line, keeping a tail
    for errors and watching for the ready pattern."""

    def __init__(self, pattern: str | None) -> None:
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.matched = threading.Event()
        self.done = threading.Event()
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)

    def follow(self, proc: subprocess.Popen[bytes]) -> None:
        threading.Thread(target=self._copy, args=(proc,), name="mocksup-out", daemon=True).start()

    def _copy(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        try:
            for raw in iter(lambda: proc.stdout.readline(1 << 16), b""):  # type: ignore[union-attr]
                line = raw.decode(errors="replace")
                self._tail.append(line.rstrip("\n"))
                os.write(1, raw)
                if self.pattern is not None and self.pattern.search(line):
                    self.matched.set()
        except OSError:
            pass
        finally:
            proc.stdout.close()
            self.done.set()

    def tail(self) -> str:
        return "\n".join(self._tail)
