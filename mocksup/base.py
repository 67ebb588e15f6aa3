"""MockServerBase: the parent-side handle of a mock and the contract a subclass fills in.

A mock is a pydantic model: its fields are its settings, validated in the parent before any
process starts, and the validated model itself is what the child receives. A subclass writes
only :meth:`MockServerBase.serve`, which runs in the child; the base spawns the child, waits
until it really serves, stops and reaps it.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from mocksup._sync import run_sync
from mocksup.errors import MockServerError

if TYPE_CHECKING:
    from typing_extensions import Self

    from mocksup._context import ServeContext
    from mocksup._process import ChildProcess
    from mocksup.control import ControlClient

__all__ = (
    "MAX_START_TIMEOUT",
    "MAX_STOP_TIMEOUT",
    "MockServerBase",
    "check_name",
    "check_seconds",
)

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

_log = logging.getLogger(__name__)

#: What a server name may be: it names log files, so letters, digits, ``_``, ``.`` and ``-``
#: only, starting with a letter, digit or ``_`` (never ``..``, never a path).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
#: The longest start a server may be given, in seconds (an hour).
MAX_START_TIMEOUT = 3600.0
#: The longest stop a server may be given, in seconds (ten minutes).
MAX_STOP_TIMEOUT = 600.0


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid server name (it names the server's log file).

    :raises ValueError: it is not: 1 to 64 letters, digits, ``_``, ``.`` or ``-``, not
        starting with ``.`` or ``-``.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid server name: use 1 to 64 letters, digits, '_', '.' or "
            "'-', not starting with '.' or '-' (it names the server's log file)"
        )
    return name


def check_seconds(value: float, what: str, limit: float) -> float:
    """Return ``value`` if it is a number of seconds above 0 and at most ``limit``.

    :raises ValueError: it is not (NaN, infinite, zero, negative or above ``limit``), naming
        ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}")
    if not (math.isfinite(value) and 0 < value <= limit):
        raise ValueError(f"{what} must be above 0 and at most {limit:g} seconds, not {value!r}")
    return float(value)


class MockServerBase(BaseModel):
    """Base class of every mock server; each instance runs in its own child process.

    Settings are keyword arguments, validated at construction (a bad value raises
    :class:`pydantic.ValidationError` before any process starts). After a start, ``port``
    (and any other port field the child reports) holds the port really bound.

    Default ports: ``0`` (a free port) unless a mock imitates a server with a well-known port
    (the collector's 4318 and 4317, vLLM's 8000), which it then takes by default when
    created directly; the harness's default servers, the pytest fixtures and
    :mod:`mocksup.testing`'s examples always ask for free ports.

    Subclasses implement :meth:`serve`. A subclass may instead override
    :meth:`await_start` and :meth:`stop` entirely (``stop()`` with or without a
    ``timeout`` parameter); the harness only ever calls those two.
    """

    # Validators are built on first validation (in the parent, at construction): a child
    # only unpickles its model, and skips building them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)

    #: The name a server of this class gets when none is given.
    default_name: ClassVar[str] = "mock"
    #: ``"module:function"`` serving this class's settings given as a plain dict (its
    #: ``model_dump()``) as ``serve()`` does, for a child that should serve before it imports
    #: pydantic and the class (see :mod:`mocksup._payload`). Used for the class that sets it
    #: only, never for a subclass (which may override ``serve()`` or what it calls).
    _serve_settings: ClassVar[str | None] = None

    name: str = Field(
        "", description="Name in logs, errors and log file names; defaults to the class's."
    )
    host: str = Field("127.0.0.1", min_length=1, description="Interface to bind; loopback.")
    port: int = Field(0, ge=0, le=65535, strict=True, description="Port; 0 for a free one.")
    start_timeout: float = Field(
        30.0,
        gt=0,
        le=MAX_START_TIMEOUT,
        allow_inf_nan=False,
        description="Seconds to wait until ready.",
    )
    stop_timeout: float = Field(
        2.0,
        gt=0,
        le=MAX_STOP_TIMEOUT,
        allow_inf_nan=False,
        description="Seconds for a graceful stop, SIGKILL and reap, in all.",
    )
    log_dir: Path | None = Field(
        None, description="Folder for the child's output; a temporary one by default."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the child."
    )

    _child: ChildProcess | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return check_name(name) if name else name

    @field_validator("env")
    @classmethod
    def _valid_env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(
                    f"{key!r}: an environment variable name must be non-empty without '=' "
                    "or NUL, and its value without NUL"
                )
        return env

    def model_post_init(self, context: object, /) -> None:
        if not self.name:
            self.name = self.default_name

    def __getstate__(self) -> dict[Any, Any]:
        # The process handle stays in the parent: the child gets the settings only.
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private["_child"] = None
        state["__pydantic_private__"] = private
        return state

    # -- the child side ------------------------------------------------------------------

    def serve(self, ctx: ServeContext) -> None:
        """Run the server; called in the child process, never in the parent.

        Bind (``self.host``, ``self.port``; see :mod:`mocksup.serving`), call
        ``ctx.ready(port=...)`` with every port really bound once requests are served,
        block in ``ctx.wait()``, then shut down cleanly (flush what must be flushed) and
        return. Raise :class:`~mocksup.PortInUseError` for a busy port.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement serve()")

    # -- the parent side -----------------------------------------------------------------

    async def await_start(self, timeout: float | None = None) -> None:
        """Start the child process and return once it serves on every port it reported.

        The first start in a process also sweeps the leftovers of crashed runs (children
        whose owner process is provably gone; see :doc:`architecture`), in a worker thread
        while the child starts.

        :param timeout: seconds to wait; ``start_timeout`` by default.
        :raises ChildCrashedError: the child exited before it was ready.
        :raises StartupTimeoutError: it was not ready in time (its processes were killed).
        :raises PortInUseError: a port it had to bind is taken.
        :raises ReadyError: ``ctx.ready()`` named a port that cannot be right.
        :raises ValueError: ``timeout`` is not a number of seconds above 0.
        """
        budget = self.start_timeout
        if timeout is not None:
            budget = check_seconds(timeout, "timeout", MAX_START_TIMEOUT)
        if self.is_running():
            raise RuntimeError(f"mock server {self.name!r} is already running")
        if type(self).serve is MockServerBase.serve:
            raise TypeError(f"{type(self).__name__} must implement serve()")
        from mocksup._process import ChildProcess

        child = ChildProcess(self)
        ports = await child.start(budget)
        self._child = child
        for field, value in ports.items():
            setattr(self, field, value)
        _log.info("%s [%s] ready on %s", self.name, child.pid, _describe_ports(self.host, ports))

    def start(self, timeout: float | None = None) -> Self:
        """Start synchronously (see :meth:`await_start`); works inside a running event loop."""
        run_sync(lambda: self.await_start(timeout))
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the child: SIGTERM, then SIGKILL of its process tree, then reap it.

        Idempotent and safe from ``atexit``. The whole stop takes at most ``timeout``
        (``stop_timeout`` by default) plus the reaping. A child that had exited on its own
        while serving is logged as an error, not raised.

        :raises StopError: the process could not be reaped even after SIGKILL.
        :raises ValueError: ``timeout`` is not a number of seconds above 0.
        """
        budget = self.stop_timeout
        if timeout is not None:
            budget = check_seconds(timeout, "timeout", MAX_STOP_TIMEOUT)
        if self._child is not None:
            self._child.stop(budget)

    def check_running(self, grace: float = 0.0) -> None:
        """Return if the server serves; else raise the error that says why it does not.

        A client that gets no answer from the mock calls it to report the cause rather than
        a bare timeout. ``grace`` gives a child that is exiting (its sockets already closed)
        up to that many seconds to be seen as exited (returns at once when it is).

        :raises ChildCrashedError: the child exited on its own (its exit code, output tail
            and log path attached; ``ready`` says it had served).
        :raises ChildSuspendedError: the child is stopped (SIGSTOP or a debugger).
        :raises MockServerError: it was never started, or was stopped.
        """
        if self._child is None:
            raise MockServerError(f"mock server {self.name!r} was never started", server=self.name)
        failure = self._child.failure(grace)
        if failure is not None:
            raise failure

    # -- the parent-side contract ---------------------------------------------------------
    # Every mock has these; the harness, the CLI and the pytest plugin call them directly.
    # A subclass overrides those that mean something for it.

    @property
    def client_host(self) -> str:
        """The address a client on this machine connects to: ``host``, or loopback when
        ``host`` is a wildcard address (``0.0.0.0``, ``::``)."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)

    @property
    def control(self) -> ControlClient:
        """A client of this mock's HTTP control API (under ``url + "/mocksup"``); a call to
        a mock that crashed or is suspended raises the error that says so, at once."""
        from mocksup.control import ControlClient

        return ControlClient(self.url, self.name, check=self.check_running)

    @property
    def url(self) -> str:
        """The root URL of the server's main port (``http://127.0.0.1:8000``; IPv6 in
        brackets); for an HTTP mock, its control API lives under ``url + "/mocksup"``."""
        # Imported here: the serving side (the HTTP server) is the child's, and ``mocksup
        # up`` validates its servers before it needs any of it.
        from mocksup.serving import url_host

        return f"http://{url_host(self.host)}:{self.port}"

    def endpoints(self) -> dict[str, str]:
        """Where clients reach this server, by role (``{"url": "http://..."}``).

        Shown by ``mocksup up`` and written to its ready file; :class:`~mocksup.Endpoint`
        settings name one of these roles.
        """
        return {"url": self.url}

    def client_env(self) -> dict[str, str]:
        """Environment variables that point a system under test at this server."""
        return {}

    def clear(self) -> None:
        """Forget what the server recorded, so the next test starts clean.

        The harness calls it on every server between tests; the base has nothing to forget.
        """

    def stats(self) -> dict[str, Any]:
        """Counters of what the server received (JSON-able); empty when it counts nothing."""
        return {}

    def summary(self) -> str:
        """One line on what the server received, for ``mocksup up``'s live display."""
        return ""

    def is_running(self) -> bool:
        """Whether the child process was started and has not exited."""
        return self._child is not None and self._child.is_running()

    @property
    def pid(self) -> int | None:
        """The pid of the child process last started, or ``None`` before a start."""
        return self._child.pid if self._child is not None else None

    @property
    def log_path(self) -> Path | None:
        """The file holding the output of the child last started (kept after it stops)."""
        return self._child.log_path if self._child is not None else None

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines the child wrote, or ``""`` before a start.

        :raises ValueError: ``lines`` is negative.
        """
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
            raise ValueError(f"lines must be a whole number of at least 0, not {lines!r}")
        return self._child.tail(lines) if self._child is not None else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.await_start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.name!r} {self.host}:{self.port} {state}>"


def _describe_ports(host: str, ports: dict[str, int]) -> str:
    return ", ".join(f"{host}:{port} ({field})" for field, port in ports.items())
