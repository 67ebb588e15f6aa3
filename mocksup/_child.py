"""The child's entry: read the server, watch the lifeline, serve, report ready.

A child is either exec'd by the parent (``python -m mocksup._child LIFELINE_FD STATUS_FD``:
an exec, never a fork of the parent, so a parent that has loaded gRPC is safe) or forked by
the zygote (:mod:`mocksup._zygote`), which calls :func:`run` with the same two pipes. Over
the lifeline pipe the parent sends the payload (:mod:`mocksup._payload`): the parent's
``sys.path``, its ``__main__`` script when the server class lives there, and the validated
server model (or, for a class that serves plain settings, those settings: the child then
serves before it imports pydantic). The parent then keeps the pipe's write end open for the
child's whole life: EOF on it means the parent is gone (even SIGKILLed), and the child stops
at once. On the status pipe the child writes one JSON line: ``ready`` with the ports it
really serves on, or ``error`` with a pickled :class:`~mocksup.MockServerError`.

A child started before its server was known (forked, or exec'd with ``--warm`` by ``mocksup
up``) takes on the environment and working folder of the moment from the payload. Once it
has its server it shows in ``ps`` as ``mocksup NAME (CLASS)``.

Whatever the server starts ends with the child, even a process that left its group
(``start_new_session=True``) or daemonised: on Linux the child is a *subreaper*, so orphans
of its subtree stay its descendants, and it ends all of its descendants before it exits.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import os
import pkgutil
import select
import signal
import sys
import threading
import traceback
from types import FrameType
from typing import TYPE_CHECKING, Any

from mocksup import _payload
from mocksup._context import ServeContext, write_status

if TYPE_CHECKING:
    from mocksup.base import MockServerBase
    from mocksup.errors import MockServerError

__all__ = ("HARD_EXIT_AFTER", "main", "modules_of", "preload", "prepare", "run", "title")

#: When the parent is gone (lifeline EOF), nobody will escalate: ``serve()`` gets this long
#: to return before the child ends itself (and its descendants), so no orphan outlives its
#: parent by more. A stop the parent asks for (SIGTERM) is escalated by the parent.
HARD_EXIT_AFTER = 0.5

_log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    """Run one mock server in this exec'd process: ``LIFELINE_FD STATUS_FD [--warm
    MODULE...]``. With ``--warm`` the child imports those modules first (see
    :func:`preload`; ``mocksup.base`` for a server that comes as a model), says so, then
    reads its server and serves it."""
    _payload.forget_exec_env()
    lifeline_fd, status_fd = int(argv[0]), int(argv[1])
    warm = argv[2:3] == ["--warm"]
    if warm:
        _preload(argv[3:])
        write_status(status_fd, {"event": "warm"})
    return run(lifeline_fd, status_fd, adopted=warm)


def run(lifeline_fd: int, status_fd: int, *, adopted: bool = False) -> int:
    """Read the server from ``lifeline_fd``, serve it, report on ``status_fd``; return the
    exit code. ``adopted``: started before the server was known (forked or warm)."""
    for fd in (lifeline_fd, status_fd):
        # Grandchildren a mock may start must not keep our pipes alive.
        os.set_inheritable(fd, False)
    _become_subreaper()
    ctx = ServeContext(status_fd)
    wakeup = _install_signal_handlers()
    try:
        server = _load_payload(lifeline_fd, status_fd, adopted)
    except Exception as error:
        return _could_not_load(error, status_fd)
    kind = server.kind if isinstance(server, _payload.Settings) else type(server).__name__
    _name_process(title(server.name, kind), f"mocksup {server.name}")
    _configure_logging()
    ctx.name = server.name
    threading.Thread(
        target=_watch, args=(lifeline_fd, wakeup, ctx), name="mocksup-watch", daemon=True
    ).start()
    try:
        return _serve(server, ctx, status_fd)
    finally:
        _end_descendants(HARD_EXIT_AFTER)


def _preload(names: list[str]) -> None:
    for name in names:
        preload(name)


def preload(module: str) -> None:
    """Import ``module`` ahead of need; for a module of mocksup's own mocks, its whole
    package (what ``serve()`` imports as well as the class)."""
    for name in modules_of(module):
        try:
            importlib.import_module(name)
        except ImportError:
            # Preloading is an optimisation: a module that cannot load here fails with its
            # real error when a server that needs it is unpickled.
            continue


def modules_of(module: str) -> list[str]:
    """``module``, or for a public one in a package of mocksup (``mocksup.otlp.collector``)
    that package and each of its modules, in the order to import them. A private module
    (``mocksup.otlp._serve``) names exactly what is needed: it comes alone."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "mocksup" or parts[1].startswith("_"):
        return [module]
    if len(parts) > 2 and parts[-1].startswith("_"):
        return [module]
    package = ".".join(parts[:2])
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return [module]
    if spec is None or not spec.submodule_search_locations:
        return [module]
    found = pkgutil.iter_modules(spec.submodule_search_locations, package + ".")
    return [package, *sorted(info.name for info in found)]


def title(name: str, kind: str) -> str:
    """How a child shows in ``ps`` once it has its server: its name and its class."""
    return f"mocksup {name} ({kind})"


def _name_process(text: str, name: str) -> None:
    """Show ``text`` as this process's command line and ``name`` (cut to 15 bytes) as its
    name (Linux: ``ps``, ``top``, ``pgrep``).

    The command line is rewritten in place, within its own bytes: never into the
    environment that follows it, where the owner markers the sweep reads live. Nothing is
    written unless the memory holds exactly what the kernel shows as our command line.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as stat:
            # Fields 48 and 49 (arg_start, arg_end); the name before them may hold spaces.
            fields = stat.read().rpartition(b")")[2].split()
        start, end = int(fields[45]), int(fields[46])
        with open("/proc/self/cmdline", "rb") as cmdline:
            shown = cmdline.read()
    except (OSError, IndexError, ValueError):
        return
    size = end - start
    if not 0 < size <= 65536 or ctypes.string_at(start, size) != shown[:size]:
        return
    data = text.encode(errors="replace")[: size - 2]
    # The last byte not NUL: the kernel then shows the text up to its NUL (as for
    # setproctitle), not the rest of the area as empty arguments.
    ctypes.memmove(start, data.ljust(size - 1, b"\0") + b" ", size)
    pr_set_name = 15
    _prctl(pr_set_name, name.encode(errors="replace")[:15].rstrip())


@functools.cache
def _libc() -> Any:
    """The C library, for ``prctl`` (loaded once; the zygote loads it for its children)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: object) -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(option, arg, 0, 0, 0)


def prepare() -> None:
    """What the zygote does once for all its children: load what each would load."""
    if sys.platform.startswith("linux"):
        _libc()


def _become_subreaper() -> None:
    """Make orphans of our subtree our children again (Linux), so they end with us.

    A daemon a mock starts (a double fork) would otherwise be reparented to init, out of
    reach of every tree walk.
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_child_subreaper = 36
    _prctl(pr_set_child_subreaper, 1)


def _install_signal_handlers() -> int:
    """Let SIGTERM and SIGINT through to the wakeup fd, which :func:`_watch` turns into a
    stop request; return that fd.

    The Python handler does nothing but keep the signals from ending the process. It must
    not request the stop itself: it runs in the main thread between two bytecodes, even
    inside ``ctx.wait()`` while that holds its event's lock, and setting the event there
    would wait for that lock forever.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        pass  # the C-level handler has written the signal to the wakeup fd

    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return wakeup_r


def _load_payload(fd: int, status_fd: int, adopted: bool) -> MockServerBase | _payload.Settings:
    header = _payload.read_header(fd)
    if adopted:
        # Tell the parent this child is alive and has its server: one that died before
        # this line is replaced by a fresh start, not reported as the server's crash.
        write_status(status_fd, {"event": "taken"})
    if header["log_path"]:
        # The parent created the file; never follow a link planted in its place since.
        log = os.open(header["log_path"], os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    if header["env"] is not None:
        os.environ.clear()
        os.environ.update(header["env"])
    os.chdir(header["cwd"])
    sys.path[:] = header["sys_path"]
    script = header["main_path"]
    if script:
        _import_script(script)
    return _payload.read_server(fd)


def _import_script(path: str) -> None:
    from mocksup.errors import MockServerError

    try:
        _payload.import_main(path)
    except MockServerError:
        raise
    except (Exception, SystemExit) as error:
        # SystemExit too: an unguarded ``sys.exit(main())`` ends the script at import.
        traceback.print_exc()
        raise MockServerError(
            f"the child ran {path} again to import the server class defined there, and the "
            f"script raised {type(error).__name__}: {error}. Keep the script's own work "
            'under `if __name__ == "__main__":` (see the traceback in the log)'
        ) from error


def _could_not_load(error: Exception, status_fd: int) -> int:
    from mocksup.errors import MockServerError

    if isinstance(error, MockServerError):
        _report_error(status_fd, error)
        return 3
    # An import error in the server's module, say: the parent reports the exit with this
    # output as a ChildCrashedError.
    traceback.print_exc()
    return 1


def _configure_logging() -> None:
    """Log to stderr (the server's log file) at ``MOCKSUP_LOG_LEVEL`` (default INFO).

    Called once the payload is read, so an adopted child takes the level of its server's
    environment. A value that is no level is reported, not fatal.
    """
    text = os.environ.get("MOCKSUP_LOG_LEVEL", "INFO").strip()
    level = logging.getLevelName(text.upper()) if not text.isdigit() else int(text)
    valid = isinstance(level, int)
    logging.basicConfig(
        level=level if valid else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    if not valid:
        _log.warning(
            "MOCKSUP_LOG_LEVEL=%r is not a logging level (DEBUG, INFO, WARNING, ERROR, "
            "CRITICAL or a number); using INFO",
            text,
        )
    _log.debug("logging at %s", logging.getLevelName(logging.getLogger().level))


def _serve(server: MockServerBase | _payload.Settings, ctx: ServeContext, status_fd: int) -> int:
    from mocksup.errors import MockServerError

    try:
        server.serve(ctx)
    except BaseException as error:
        if ctx.is_ready:
            _log.exception("%s failed while serving", server.name)
            return 1
        if isinstance(error, MockServerError):
            _report_error(status_fd, error)
            _log.error("%s could not start: %s", server.name, error)
            return 3
        # Anything else (werkzeug's SystemExit on a busy port included) is printed, and the
        # parent reports the exit with this output as a ChildCrashedError.
        traceback.print_exc()
        return 1
    if not ctx.is_ready:
        _log.error("%s: serve() returned without calling ctx.ready()", server.name)
        return 2
    _log.info("%s stopped (%s)", server.name, ctx.stop_reason or "serve() returned")
    return 0


def _report_error(status_fd: int, error: MockServerError) -> None:
    write_status(status_fd, _payload.encode_error(error))


def _watch(lifeline: int, wakeup: int, ctx: ServeContext) -> None:
    """Turn lifeline EOF and SIGTERM/SIGINT into a stop request, from a thread of our own.

    A signal may be delivered to any thread (gRPC's own threads included), and Python runs
    its handler only when the main thread next executes bytecode: a main thread blocked in
    ``ctx.wait()`` would never see it. The wakeup fd is written by the C-level handler
    whichever thread took the signal, so this thread always sees it at once.
    """
    while True:
        readable, _, _ = select.select([lifeline, wakeup], [], [])
        if wakeup in readable:
            for signum in os.read(wakeup, 64):
                ctx.request_stop(signal.Signals(signum).name)
        if lifeline in readable:
            try:
                data = os.read(lifeline, 4096)
            except OSError:
                data = b""
            if not data:
                break
    ctx.request_stop("lifeline closed: the parent is gone")
    _hard_exit_later()
    _signal_group(signal.SIGTERM)


_hard_exit_armed = threading.Lock()


def _hard_exit_later() -> None:
    if not _hard_exit_armed.acquire(blocking=False):
        return

    def _exit() -> None:
        _log.error("serve() did not return %.1f s after the stop request; exiting", HARD_EXIT_AFTER)
        sys.stderr.flush()
        from mocksup import _reap

        _reap.kill_descendants()
        os._exit(70)

    timer = threading.Timer(HARD_EXIT_AFTER, _exit)
    timer.daemon = True
    timer.start()


def _signal_group(signum: int) -> None:
    # We lead our own session and group: whatever the server started in it ends with us.
    # Our own handler takes this SIGTERM harmlessly.
    if os.getpgid(0) == os.getpid():
        with contextlib.suppress(OSError):
            os.killpg(0, signum)


def _has_children() -> bool:
    """Whether this process has any child, without importing psutil when it has none."""
    if not hasattr(os, "waitid"):
        return True
    try:
        # WNOWAIT: look only; the server's own code may still want to reap its children.
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _end_descendants(grace: float) -> None:
    """End whatever the server started: SIGTERM, ``grace`` seconds, then SIGKILL."""
    _signal_group(signal.SIGTERM)
    if not _has_children():
        return
    from mocksup import _reap

    killed = _reap.end_descendants(grace)
    if killed:
        _log.warning("killed %d process(es) the server left running", killed)


if __name__ == "__main__":
    # Run as ``python -m mocksup._child``: hand over to the module under its own name, so
    # that its logger and its state are mocksup._child's, not __main__'s.
    from mocksup._child import main as _main

    code = _main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: non-daemon threads of a server library must not delay exit.
    os._exit(code)
