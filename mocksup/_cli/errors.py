"""The command line's errors, said in its own terms.

The library's errors advise Python users ("pass port=0", "raise start_timeout"); the command
line has options and a configuration file instead, so :func:`advice` rewrites the advice of
the errors a command can meet into those terms, keeping every fact (server, port, holder,
output tail, log path). :func:`quiet_broken_pipe` makes ``mocksup ... | head`` end quietly,
and :func:`interrupts_kept` makes sure a Ctrl-C ends the command.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mocksup.errors import MockServerError, PortInUseError, StartupTimeoutError

__all__ = (
    "PIPE_CLOSED",
    "Advice",
    "UsageError",
    "advice",
    "interrupts_kept",
    "quiet_broken_pipe",
)

#: The exit code of a command whose reader went away (128 + SIGPIPE, as a shell reports it).
PIPE_CLOSED = 141


class UsageError(Exception):
    """Bad options, environment or configuration file: one line, exit 2."""


@dataclass
class Advice:
    """Where each setting of the servers started comes from, to advise in those terms.

    ``options`` maps ``(server, field)`` to the option that sets it (``--otlp-port``);
    ``config`` is the TOML file the servers came from, if any.
    """

    options: Mapping[tuple[str, str], str] = field(default_factory=dict)
    config: str | None = None

    def setting(self, server: str | None, name: str) -> str:
        """How to change setting ``name`` of ``server`` from the command line."""
        option = self.options.get((server or "", name))
        if option is not None:
            return option
        if self.config is not None:
            return f"{name} in server {server!r}'s init_kwargs in {self.config}"
        return f"--{name.replace('_', '-')}"


def advice(error: MockServerError, how: Advice, fields: Mapping[str, object] = {}) -> str:
    """The error's message with its advice in the command line's terms.

    :param fields: the settings of the server concerned (to find which port field a busy
        port is).
    """
    if isinstance(error, PortInUseError):
        field_name = next(
            (k for k, v in fields.items() if k.endswith("port") and v == error.port), "port"
        )
        holder = ""
        if error.holder_pid is not None:
            holder = f" by {error.holder_name or 'a process'} (pid {error.holder_pid})"
        who = f"mock server {error.server!r}: " if error.server else ""
        return (
            f"{who}port {error.port} on {error.host} is in use{holder}; stop that process, or "
            f"choose another port with {how.setting(error.server, field_name)} (0: a free port)"
        )
    if isinstance(error, StartupTimeoutError):
        first, _, rest = str(error).partition("\n")
        head = first.split(" (raise start_timeout", 1)[0]
        option = how.setting(error.server, "start_timeout")
        first = f"{head} (raise {option} only if it shows slow progress)"
        return first + ("\n" + rest if rest else "")
    return str(error)


def quiet_broken_pipe(run: Callable[[], int]) -> int:
    """Run a command; if its reader went away (``mocksup spans | head``), end quietly with
    :data:`PIPE_CLOSED` instead of a BrokenPipeError traceback."""
    try:
        code = run()
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    else:
        return code
    # Python flushes stdout again at exit and would report the same broken pipe: point
    # the descriptor at /dev/null first (the recipe of the signal module's documentation).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real descriptor (stdout replaced in-process)
        pass
    return PIPE_CLOSED


@contextlib.contextmanager
def interrupts_kept() -> Iterator[None]:
    """Within: a Ctrl-C is never lost in a finalizer.

    Python raises ``KeyboardInterrupt`` wherever the main thread is when it runs the
    handler, which can be a finalizer (an ``http.client`` response being dropped, between
    two of ``tail``'s long polls); there the exception is only reported, and the command
    went on into its next 30 s poll. Such an interrupt is sent again, as a SIGINT to the
    main thread from a thread of its own (sent from the main thread, Python would run the
    handler at once, inside the hook, where a raise is ignored too), and again every
    :data:`_RESEND` seconds until the handler has run: one that lands just before the
    poll's blocking read is only handled once that read returns.
    """
    previous_hook = sys.unraisablehook
    # Only the main thread may set a handler (main() may run in another, inside a program).
    main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.getsignal(signal.SIGINT) if main_thread else None
    # Whether the handler has run since an interrupt was lost. A flag, not an Event: the
    # handler runs in the main thread between two bytecodes, maybe while that thread holds
    # an Event's own lock (setting or clearing it), and would wait for it forever.
    handled = True
    # No SIGINT is sent once the handler has begun; reentrant, as the handler may run in the
    # main thread while it holds the lock (in the hook, or at the end of the block).
    lock = threading.RLock()

    def handler(signum: int, frame: Any) -> None:
        nonlocal handled
        with lock:
            handled = True
        assert callable(previous_handler)  # a KeyboardInterrupt came from a Python handler
        previous_handler(signum, frame)

    def resend(main: int) -> None:
        while True:
            with lock:
                if handled:
                    return
                signal.pthread_kill(main, signal.SIGINT)
            # Sent once when another Python handler takes SIGINT, which would not tell that
            # it ran (none of ours could be set, or the command has set its own since).
            current = signal.getsignal(signal.SIGINT)
            if callable(current) and current is not handler:
                return
            time.sleep(_RESEND)

    def hook(unraisable: Any) -> None:
        nonlocal handled
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            main = threading.main_thread().ident
            assert main is not None  # it has started: it runs this
            with lock:
                handled = False
            _thread.start_new_thread(resend, (main,))
            return
        previous_hook(unraisable)

    sys.unraisablehook = hook
    if callable(previous_handler):
        signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        with lock:
            handled = True  # a resend still under way ends
        if callable(previous_handler):
            signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook


#: Seconds between two SIGINTs sent again for a Ctrl-C lost in a finalizer.
_RESEND = 0.05
