"""MockServerBase: the parent-side handle of a mock and the contract a subclass fills in.

A mock is a pydantic model: its fields are its settings, validated in the parent before any
process starts, and the validated model itself is what the child receives. A subclass writes
only :meth:`MockServerBase.serve`, which runs in the child; the base spawns the child, waits
until it really serves, stops and reaps it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from mocksup.serving import url_host

if TYPE_CHECKING:
    from typing_extensions import Self

    from mocksup._context import ServeContext
    from mocksup._process import ChildProcess

__all__ = ["MockServerBase"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


class MockServerBase(BaseModel):
    """Base class of every mock server; each instance runs in its own child process.

    Settings are keyword arguments, validated at construction (a bad value raises
    :class:`pydantic.ValidationError` before any process starts). After a start, ``port``
    (and any other port field the child reports) holds the port really bound.

    Subclasses implement :meth:`serve`. A subclass may instead override
    :meth:`await_start` and :meth:`stop` entirely; the harness only ever calls those two.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: The name a server of this class gets when none is given.
    default_name: ClassVar[str] = "mock"

    name: str = Field("", description="Name in logs and errors; defaults to the class's.")
    host: str = Field("127.0.0.1", description="Interface to bind; loopback unless told.")
    port: int = Field(0, ge=0, le=65535, description="Port to bind; 0 for a free one.")
    start_timeout: float = Field(30.0, gt=0, description="Seconds to wait until ready.")
    stop_timeout: float = Field(
        2.0, gt=0, description="Seconds for a graceful stop, SIGKILL and reap, in all."
    )
    log_dir: Path | None = Field(
        None, description="Folder for the child's output; a temporary one by default."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the child."
    )

    _child: ChildProcess | None = PrivateAttr(None)

    def model_post_init(self, context: Any, /) -> None:
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

        :param timeout: seconds to wait; ``start_timeout`` by default.
        :raises ChildCrashedError: the child exited before it was ready.
        :raises StartupTimeoutError: it was not ready in time (its processes were killed).
        :raises PortInUseError: a port it had to bind is taken.
        """
        from mocksup._process import ChildProcess

        if self.is_running():
            raise RuntimeError(f"mock server {self.name!r} is already running")
        if type(self).serve is MockServerBase.serve:
            raise TypeError(f"{type(self).__name__} must implement serve()")
        child = ChildProcess(self)
        ports = await child.start(self.start_timeout if timeout is None else timeout)
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
        (``stop_timeout`` by default) plus the reaping.

        :raises StopError: the process could not be reaped even after SIGKILL.
        """
        if self._child is not None:
            self._child.stop(self.stop_timeout if timeout is None else timeout)

    # -- the parent-side contract ---------------------------------------------------------
    # Every mock has these; the harness, the CLI and the pytest plugin call them directly.
    # A subclass overrides those that mean something for it.

    @property
    def url(self) -> str:
        """The root URL of the server's main port (``http://127.0.0.1:8000``; IPv6 in
        brackets); for an HTTP mock, its control API lives under ``url + "/mocksup"``."""
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
        """The last ``lines`` lines the child wrote, or ``""`` before a start."""
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
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.name!r} {self.host}:{self.port} {state}>"


def _describe_ports(host: str, ports: dict[str, int]) -> str:
    return ", ".join(f"{host}:{port} ({field})" for field, port in ports.items())


def run_sync(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run the awaitable that ``make()`` returns to completion, from sync code.

    With no running event loop it uses ``asyncio.run``; inside one (pytest-asyncio,
    ``IsolatedAsyncioTestCase``) it runs a fresh loop in a helper thread, since the caller's
    loop is busy running the caller. Children never depend on the loop that started them.
    """

    async def main() -> _T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, name="mocksup-start")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: _T = box["value"]
    return value
