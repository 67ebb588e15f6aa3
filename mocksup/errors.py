"""The exceptions mocksup raises.

Every failure of the supervisor is a :class:`MockServerError`; each subclass carries the
context a person needs to act (server name, pid, port, exit code, output tail, log path)
as attributes, and says in its message what to do next::

    MockServerError
    ├── ChildCrashedError       the child exited: before it was ready, or while serving
    ├── ChildSuspendedError     the child is stopped (SIGSTOP, a debugger) and answers nothing
    ├── StartupTimeoutError     the child was not ready in time (its process tree was killed)
    ├── ReadyError              serve() reported a port that is no port field or not served
    ├── ServeError              serve() raised an error that could not cross as itself
    ├── PortInUseError          a port the child was told to bind is taken
    ├── StopError               the child could not be stopped and reaped
    ├── ControlAPIError         a mock's HTTP control API answered with an error
    └── WaitTimeoutError        a ``wait_for_*`` call ran out of time (an AssertionError too)

The exceptions cross the pipe from child to parent, so each one pickles with all of its
fields (``__reduce__``); a subclass of your own adds its fields to :meth:`_fields` and
crosses the same way.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import TypedDict, Unpack

    class _ProcessFields(TypedDict, total=False):
        server: str | None
        pid: int | None
        returncode: int | None
        output_tail: str
        log_path: str | None


__all__ = (
    "ChildCrashedError",
    "ChildSuspendedError",
    "ControlAPIError",
    "MockServerError",
    "PortInUseError",
    "ReadyError",
    "ServeError",
    "StartupTimeoutError",
    "StopError",
    "WaitTimeoutError",
    "describe_exit",
)


class MockServerError(Exception):
    """Base class of every error mocksup raises.

    :param message: what happened and what to do next.
    :param server: the name of the server concerned, if any.
    """

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server = server

    def _fields(self) -> dict[str, object]:
        """The attributes that make this error, besides its message (pickled with it)."""
        return {"server": self.server}

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self._fields()))

    def __str__(self) -> str:
        return self.message


def _rebuild(
    cls: type[MockServerError], message: str, fields: dict[str, object]
) -> MockServerError:
    error = cls.__new__(cls)
    server = fields.get("server")
    MockServerError.__init__(error, message, server=server if isinstance(server, str) else None)
    for key, value in fields.items():
        setattr(error, key, value)
    return error


def describe_exit(returncode: int | None) -> str:
    """Say how a process ended, naming the signal for a negative return code."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _context(output_tail: str, log_path: str | None) -> str:
    parts = []
    if output_tail.strip():
        parts.append("last output:\n" + _indent(output_tail.rstrip()))
    if log_path:
        parts.append(f"full log: {log_path}")
    return ("\n" + "\n".join(parts)) if parts else ""


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


class _ProcessError(MockServerError):
    """A failure of one child process, with its output and log."""

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        pid: int | None = None,
        returncode: int | None = None,
        output_tail: str = "",
        log_path: str | None = None,
    ) -> None:
        super().__init__(message + _context(output_tail, log_path), server=server)
        self.pid = pid
        self.returncode = returncode
        self.output_tail = output_tail
        self.log_path = log_path

    def _fields(self) -> dict[str, object]:
        return {
            "server": self.server,
            "pid": self.pid,
            "returncode": self.returncode,
            "output_tail": self.output_tail,
            "log_path": self.log_path,
        }


class ChildCrashedError(_ProcessError):
    """The child process exited (or was killed): before it reported ready, or while serving.

    ``returncode`` is the exit code, negative for a signal (``None`` if it could not be
    known: the zygote that forked the child was killed first); ``output_tail`` holds the last
    lines the child wrote to stdout and stderr; ``log_path`` the file with all of them.
    ``ready`` says whether it had reported ready (then it died while serving).
    """

    def __init__(
        self, message: str, *, ready: bool = False, **fields: Unpack[_ProcessFields]
    ) -> None:
        super().__init__(message, **fields)
        self.ready = ready

    @classmethod
    def from_exit(
        cls,
        *,
        server: str,
        pid: int | None,
        returncode: int | None,
        output_tail: str,
        log_path: str | None,
        ready: bool = False,
    ) -> ChildCrashedError:
        """Build the error for a child that ended with ``returncode``."""
        when = "while serving (after it was ready)" if ready else "before it was ready"
        how = describe_exit(returncode) if returncode is not None else "exited (how is unknown)"
        message = f"mock server {server!r} (pid {pid}) {how} {when}; its output below says why"
        return cls(
            message,
            ready=ready,
            server=server,
            pid=pid,
            returncode=returncode,
            output_tail=output_tail,
            log_path=log_path,
        )

    def _fields(self) -> dict[str, object]:
        return {**super()._fields(), "ready": self.ready}


class ChildSuspendedError(_ProcessError):
    """The child is stopped (``SIGSTOP``, ``kill -STOP``, a debugger) and answers nothing.

    Its sockets still accept connections (the kernel queues them), so a client would wait
    for its whole timeout; this error says why at once. ``SIGCONT`` resumes it.
    """


class StartupTimeoutError(_ProcessError):
    """The child did not report ready within its start timeout; its process tree was killed.

    ``timeout`` is the deadline in seconds that passed.
    """

    def __init__(
        self, message: str, *, timeout: float = 0.0, **fields: Unpack[_ProcessFields]
    ) -> None:
        super().__init__(message, **fields)
        self.timeout = timeout

    def _fields(self) -> dict[str, object]:
        return {**super()._fields(), "timeout": self.timeout}


class StopError(_ProcessError):
    """A child could not be stopped and reaped, even with SIGKILL (it is stuck in the kernel)."""


class ReadyError(MockServerError):
    """``serve()`` reported ready with a port that cannot be right; the child was stopped.

    ``field`` is the keyword given to ``ctx.ready()`` and ``port`` its value: a name that is
    no port field of the server, a value that is no port number, or a port nothing of the
    mock listens on (or that refuses connections on the server's ``host``).
    """

    def __init__(
        self, message: str, *, server: str | None = None, field: str = "", port: object = None
    ) -> None:
        super().__init__(message, server=server)
        self.field = field
        self.port = port

    def _fields(self) -> dict[str, object]:
        return {"server": self.server, "field": self.field, "port": self.port}


class ServeError(MockServerError):
    """``serve()`` raised a :class:`MockServerError` that could not cross to the parent as
    itself (it does not pickle, or the parent cannot import its class).

    ``error_type`` is the qualified name of the original class, the message is its
    message, and ``traceback`` the child's traceback text.
    """

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        error_type: str = "",
        traceback: str = "",
    ) -> None:
        super().__init__(message, server=server)
        self.error_type = error_type
        self.traceback = traceback

    def _fields(self) -> dict[str, object]:
        return {"server": self.server, "error_type": self.error_type, "traceback": self.traceback}


class PortInUseError(MockServerError):
    """A port the server was asked to bind is already taken.

    ``port`` and ``host`` say which; ``holder_pid`` and ``holder_name`` name the process
    listening there when the operating system lets psutil tell (else ``None``).
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        port: int,
        host: str = "127.0.0.1",
        server: str | None = None,
        holder_pid: int | None = None,
        holder_name: str | None = None,
    ) -> None:
        self.port = port
        self.host = host
        self.holder_pid = holder_pid
        self.holder_name = holder_name
        super().__init__(message or self._compose(server), server=server)

    def _compose(self, server: str | None) -> str:
        who = f"mock server {server!r}: " if server else ""
        if self.holder_pid is not None:
            holder = f" by {self.holder_name or 'a process'} (pid {self.holder_pid})"
        else:
            holder = ""
        return (
            f"{who}port {self.port} on {self.host} is in use{holder}; stop that process, "
            "or pass port=0 to let the system choose a free port"
        )

    def with_context(
        self, server: str, holder_pid: int | None, holder_name: str | None
    ) -> PortInUseError:
        """Return a copy naming the server and, where known, the process holding the port."""
        return PortInUseError(
            port=self.port,
            host=self.host,
            server=server,
            holder_pid=holder_pid,
            holder_name=holder_name,
        )

    def _fields(self) -> dict[str, object]:
        return {
            "server": self.server,
            "port": self.port,
            "host": self.host,
            "holder_pid": self.holder_pid,
            "holder_name": self.holder_name,
        }


class ControlAPIError(MockServerError):
    """A mock's HTTP control API could not be reached or answered with an error.

    ``status`` is the HTTP status (``None`` when no answer came) and ``url`` the address asked.
    """

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        status: int | None = None,
        url: str = "",
    ) -> None:
        super().__init__(message, server=server)
        self.status = status
        self.url = url

    def _fields(self) -> dict[str, object]:
        return {"server": self.server, "status": self.status, "url": self.url}


class WaitTimeoutError(MockServerError, AssertionError):
    """A mock's ``wait_for_*`` call did not see what it waited for within its timeout.

    Every mock's waits raise it (or a subclass), with the same keyword-only ``count`` and
    ``timeout``. It is an :class:`AssertionError` too, so a test runner reports a FAIL, not an
    ERROR. ``expected`` is the count awaited, ``matched`` how many matched, ``timeout`` the
    seconds waited, and ``arrived`` one line per kind of thing that did arrive.
    """

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        expected: int = 0,
        matched: int = 0,
        timeout: float = 0.0,
        arrived: list[str] | None = None,
    ) -> None:
        super().__init__(message, server=server)
        self.expected = expected
        self.matched = matched
        self.timeout = timeout
        self.arrived = list(arrived or [])

    def _fields(self) -> dict[str, object]:
        return {
            "server": self.server,
            "expected": self.expected,
            "matched": self.matched,
            "timeout": self.timeout,
            "arrived": self.arrived,
        }
