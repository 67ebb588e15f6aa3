"""The child's entry: read the server model, watch the lifeline, serve, report ready.

The parent runs ``python -m mocksup._child LIFELINE_FD STATUS_FD`` (an exec, never a fork, so a
parent that has loaded gRPC is safe). Over the lifeline pipe it sends one length-prefixed
pickle: the parent's ``sys.path``, the path of its ``__main__`` script when the server class
lives there, and the validated server model. The parent then keeps the pipe's write end open
for the child's whole life: EOF on it means the parent is gone (even SIGKILLed), and the child
stops at once. On the status pipe the child writes exactly one JSON line: ``ready`` with the
ports it really serves on, or ``error`` with a pickled :class:`~mocksup.MockServerError`.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import pickle
import select
import signal
import struct
import sys
import threading
import traceback
from types import FrameType
from typing import TYPE_CHECKING

from mocksup._context import ServeContext, write_status

if TYPE_CHECKING:
    from mocksup.base import MockServerBase

__all__ = ["encode_payload", "main"]

#: When the parent is gone (lifeline EOF), nobody will escalate: ``serve()`` gets this long
#: to return before the child ends itself, so no orphan outlives its parent by a second.
#: A stop the parent asks for (SIGTERM) is escalated by the parent within its own budget.
HARD_EXIT_AFTER = 0.5

_HEADER = struct.Struct("!Q")
_log = logging.getLogger("mocksup.child")


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("the parent closed the lifeline before sending the server")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def encode_payload(
    server: MockServerBase,
    main_path: str | None,
    *,
    env: dict[str, str] | None = None,
    log_path: str | None = None,
) -> bytes:
    """Serialise what the child needs, for the parent side (see the module docstring).

    ``env`` and ``log_path`` are for a warm child, started before its server was known: it
    takes on the environment of the moment and sends its output to the server's log file.
    """
    header = pickle.dumps(
        {
            "sys_path": list(sys.path),
            "main_path": main_path,
            "cwd": os.getcwd(),
            "env": env,
            "log_path": log_path,
        }
    )
    body = pickle.dumps(server)
    return _HEADER.pack(len(header)) + header + _HEADER.pack(len(body)) + body


def _load_payload(fd: int, status_fd: int, warm: bool) -> MockServerBase:
    header = pickle.loads(_read_exact(fd, _HEADER.unpack(_read_exact(fd, _HEADER.size))[0]))
    if warm:
        # Tell the parent this child is alive and has its server: a warm child that died
        # before this line is replaced by a fresh start, not reported as the server's crash.
        write_status(status_fd, {"event": "taken"})
    if header["log_path"]:
        log = os.open(header["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    if header["env"] is not None:
        os.environ.clear()
        os.environ.update(header["env"])
    os.chdir(header["cwd"])
    sys.path[:] = header["sys_path"]
    main_path = header["main_path"]
    if main_path:
        _import_main(main_path)
    body = _read_exact(fd, _HEADER.unpack(_read_exact(fd, _HEADER.size))[0])
    server: MockServerBase = pickle.loads(body)
    return server


#: What a warm child imports while it waits for its server: mocksup's dependencies and its
#: own mocks, so that a start from the warm pool pays for none of them.
PRELOAD = (
    "grpc",
    "werkzeug.serving",
    "mocksup.serving",
    "mocksup.otlp",
    "mocksup.vllm",
)


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            # Preloading is an optimisation: a module that cannot load here will fail with
            # its real error when a server that needs it is unpickled.
            continue


def _import_main(path: str) -> None:
    # A server class defined in the parent's script pickles as ``__main__.X``: run that script
    # under another name, as multiprocessing's spawn does, so its guarded main block stays idle.
    import runpy

    namespace = runpy.run_path(path, run_name="__mp_main__")
    module = type(sys)("__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__mp_main__"] = sys.modules["__main__"] = module


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
    _end_group()


_hard_exit_armed = threading.Lock()


def _hard_exit_later() -> None:
    if not _hard_exit_armed.acquire(blocking=False):
        return

    def _exit() -> None:
        _log.error("serve() did not return %.1f s after the stop request; exiting", HARD_EXIT_AFTER)
        sys.stderr.flush()
        _end_group()
        os._exit(70)

    timer = threading.Timer(HARD_EXIT_AFTER, _exit)
    timer.daemon = True
    timer.start()


def main(argv: list[str]) -> int:
    """Run one mock server in this process; the parent's ``_process`` module calls it."""
    lifeline_fd, status_fd = int(argv[0]), int(argv[1])
    warm = argv[2:] == ["--warm"]
    if warm:
        _preload()
        write_status(status_fd, {"event": "warm"})
    for fd in (lifeline_fd, status_fd):
        # Grandchildren a mock may start must not keep our pipes alive.
        os.set_inheritable(fd, False)
    logging.basicConfig(
        level=os.environ.get("MOCKSUP_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    ctx = ServeContext(status_fd)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        ctx.request_stop(signal.Signals(signum).name)

    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = _load_payload(lifeline_fd, status_fd, warm)
    ctx.name = server.name
    threading.Thread(
        target=_watch, args=(lifeline_fd, wakeup_r, ctx), name="mocksup-watch", daemon=True
    ).start()
    try:
        server.serve(ctx)
    except BaseException as error:
        from mocksup.errors import MockServerError

        if ctx.is_ready:
            _log.exception("%s failed while serving", server.name)
            return 1
        if isinstance(error, MockServerError):
            blob = base64.b64encode(pickle.dumps(error)).decode()
            write_status(status_fd, {"event": "error", "error": blob})
            _log.error("%s could not start: %s", server.name, error)
            return 3
        # Anything else (werkzeug's SystemExit on a busy port included) is printed, and the
        # parent reports the exit with this output as a ChildCrashedError.
        traceback.print_exc()
        return 1
    finally:
        _end_group()
    if not ctx.is_ready:
        _log.error("%s: serve() returned without calling ready()", server.name)
        return 2
    _log.info("%s stopped (%s)", server.name, ctx.stop_reason or "serve() returned")
    return 0


def _end_group() -> None:
    # We lead our own session and group: whatever the server started (a subprocess of its
    # own) ends with us, even when the parent is gone and cannot kill the tree. Our own
    # handler takes this SIGTERM harmlessly.
    if os.getpgid(0) == os.getpid():
        with contextlib.suppress(OSError):
            os.killpg(0, signal.SIGTERM)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: non-daemon threads of a server library must not delay exit.
    os._exit(code)
