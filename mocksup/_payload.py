"""What crosses between parent and child: the server on the way in, an error on the way out.

Over the lifeline pipe the parent writes two length-prefixed pickles: a header (the parent's
``sys.path``, working folder, the path of its ``__main__`` script when the server class lives
there, and for a child started before its server the environment and log file of the
moment), then the validated server model; or, for a class that names a function serving
its settings (``_serve_settings``), those settings as a plain dict (:class:`Settings`), so
that the child serves without importing pydantic or the class first. A child that fails
before it is ready sends back its :class:`~mocksup.MockServerError` pickled, and described
in words as well, so that an error that does not pickle (or that the parent cannot
unpickle) still arrives, as a :class:`~mocksup.ServeError`. The process code on either side
uses this leaf module, which imports neither, so the child's import path stays light (no
psutil, no asyncio machinery).
"""

from __future__ import annotations

import base64
import importlib
import os
import pickle
import runpy
import struct
import sys
import traceback
from typing import TYPE_CHECKING, Any, TypedDict

from mocksup.errors import MockServerError, ServeError

if TYPE_CHECKING:
    from mocksup._context import ServeContext
    from mocksup.base import MockServerBase

__all__ = (
    "MAIN_MODULES",
    "Header",
    "Settings",
    "decode_error",
    "encode",
    "encode_body",
    "encode_error",
    "exec_env",
    "forget_exec_env",
    "import_main",
    "importing_main",
    "main_path",
    "read_header",
    "read_server",
    "serving_module",
)

_LENGTH = struct.Struct("!Q")

#: The module names a class defined in a program's script carries: ``__main__`` in the
#: program itself, ``__mp_main__`` where the script was run again to import it (our child,
#: or a multiprocessing ``spawn`` worker).
MAIN_MODULES = ("__main__", "__mp_main__")

#: While a child runs the parent's script again to import a server class from it, the
#: script's path; a mock started meanwhile means the script's work is not guarded.
importing_main: str | None = None


#: Set in the environment of the processes mocksup execs (children, the zygote), for glibc's
#: malloc to read as they start: one arena. glibc gives each thread an arena of its own; a
#: Python thread allocates holding the GIL, so the arenas spare no waiting, and a worker
#: thread's arena maps, grows and unmaps a heap around each large request body. With one
#: arena, 6,000 OTLP/HTTP uploads of 189 kB cost the collector 0.77-0.86 s of system time
#: instead of 1.11-1.22 s, and it stores 7% more spans a second.
_ARENAS = "MALLOC_ARENA_MAX"
#: Marks an :data:`_ARENAS` that mocksup set (not the user), for :func:`forget_exec_env`.
_ARENAS_OURS = "MOCKSUP_MALLOC_ARENA_MAX"


def exec_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a process mocksup execs: with one malloc arena, unless ``env`` sets
    ``MALLOC_ARENA_MAX`` itself (a user's value stands, and a marker that came with it is
    not ours: it must not make the child take that value out)."""
    if _ARENAS not in env:
        return {**env, _ARENAS: "1", _ARENAS_OURS: "1"}
    if _ARENAS_OURS in env:
        return {key: value for key, value in env.items() if key != _ARENAS_OURS}
    return env


def forget_exec_env() -> None:
    """Take out of this process's environment what :func:`exec_env` added (read by then):
    the programs a mock starts get the environment it was started with."""
    if os.environ.pop(_ARENAS_OURS, None) is not None:
        os.environ.pop(_ARENAS, None)


class Header(TypedDict):
    """What a child needs before it can unpickle its server."""

    sys_path: list[str]
    main_path: str | None
    cwd: str
    env: dict[str, str] | None
    log_path: str | None


class Settings:
    """A server as its validated settings and the function that serves them: what the
    child gets for a class with ``_serve_settings`` instead of the model itself.

    :param target: ``"module:function"``, called with ``(settings, ctx)``.
    :param name: the server's name.
    :param kind: its class's name (the child shows it in ``ps``).
    :param settings: the model's ``model_dump()``.
    """

    def __init__(self, target: str, name: str, kind: str, settings: dict[str, Any]) -> None:
        self.target = target
        self.name = name
        self.kind = kind
        self.settings = settings

    @property
    def module(self) -> str:
        """The module of the function that serves them."""
        return self.target.partition(":")[0]

    def serve(self, ctx: ServeContext) -> None:
        """Serve, as the model's ``serve()`` would."""
        function = self.target.partition(":")[2]
        getattr(importlib.import_module(self.module), function)(self.settings, ctx)

    def is_of(self, server: MockServerBase) -> bool:
        """Whether these are exactly what ``server`` would send (its ``Settings``)."""
        body = _body(server)
        return isinstance(body, Settings) and vars(body) == vars(self)


def _body(server: MockServerBase) -> MockServerBase | Settings:
    # The class's own attribute: a subclass may override serve() or what it calls.
    target = type(server).__dict__.get("_serve_settings")
    if not isinstance(target, str):
        return server
    return Settings(target, server.name, type(server).__name__, server.model_dump())


def serving_module(server: MockServerBase) -> str:
    """The module a child imports to serve ``server``: that of its settings' serving
    function, or its class's."""
    body = _body(server)
    return body.module if isinstance(body, Settings) else type(server).__module__


def main_path(server: MockServerBase) -> str | None:
    """The script a child must run again to import ``server``'s class, if it lives in one.

    :raises TypeError: the class was defined in an interactive session (no file to run).
    """
    module = type(server).__module__
    if module not in MAIN_MODULES:
        return None
    path: str | None = getattr(sys.modules.get(module), "__file__", None)
    if path is None:
        raise TypeError(
            f"{type(server).__name__} is defined in an interactive session; define it in a "
            "module the child process can import"
        )
    return os.path.abspath(path)


def encode(
    server: MockServerBase,
    script: str | None,
    *,
    env: dict[str, str] | None = None,
    log_path: str | None = None,
) -> bytes:
    """The payload for one child (see the module docstring).

    ``env`` and ``log_path`` are for a child started before its server was known (forked
    by the zygote, or prestarted by ``mocksup up``): it takes on the environment of the
    moment and, when ``log_path`` is given, sends its output to the server's log file (a
    forked child got that file already).
    """
    return encode_body(_body(server), script, env=env, log_path=log_path)


def encode_body(
    body: MockServerBase | Settings,
    script: str | None,
    *,
    env: dict[str, str] | None = None,
    log_path: str | None = None,
) -> bytes:
    """:func:`encode` for a server or its :class:`Settings` (``mocksup up`` builds its
    collector's settings before it imports pydantic)."""
    header: Header = {
        "sys_path": list(sys.path),
        "main_path": script,
        "cwd": os.getcwd(),
        "env": env,
        "log_path": log_path,
    }
    head = pickle.dumps(header)
    data = pickle.dumps(body)
    return _LENGTH.pack(len(head)) + head + _LENGTH.pack(len(data)) + data


def read_header(fd: int) -> Header:
    """Read the header from the lifeline.

    :raises EOFError: the parent closed the lifeline first.
    """
    header: Header = pickle.loads(_read_block(fd))
    return header


def read_server(fd: int) -> MockServerBase | Settings:
    """Read and unpickle the server model (its modules are imported here), or its
    :class:`Settings`."""
    server: MockServerBase | Settings = pickle.loads(_read_block(fd))
    return server


def import_main(path: str) -> None:
    """Run the parent's script under the name ``__mp_main__``, as multiprocessing's spawn
    does, so that a server class defined there can be unpickled; its guarded main block
    stays idle. Both ``__main__`` and ``__mp_main__`` then name it.
    """
    global importing_main
    importing_main = path
    try:
        namespace = runpy.run_path(path, run_name="__mp_main__")
    finally:
        importing_main = None
    module = type(sys)("__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__mp_main__"] = sys.modules["__main__"] = module


def encode_error(error: MockServerError) -> dict[str, object]:
    """The status message of a child whose ``serve()`` raised ``error`` before ready: the
    pickled error when it pickles, and its type, message and traceback in any case."""
    kind = type(error)
    message: dict[str, object] = {
        "event": "error",
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(error),
        "traceback": "".join(traceback.format_exception(kind, error, error.__traceback__)),
    }
    try:
        message["error"] = base64.b64encode(pickle.dumps(error)).decode()
    except Exception as why:
        message["unpicklable"] = f"{type(why).__name__}: {why}"
    return message


def decode_error(message: dict[str, object], server: str) -> MockServerError:
    """The error the child reported: itself when it unpickles, else a :class:`ServeError`."""
    blob = message.get("error")
    if isinstance(blob, str):
        try:
            error = pickle.loads(base64.b64decode(blob))
        except Exception as why:
            reason = f"the parent cannot unpickle it: {type(why).__name__}: {why}"
        else:
            if isinstance(error, MockServerError):
                return error
            reason = f"it unpickled as a {type(error).__name__}"
    else:
        reason = f"it does not pickle: {message.get('unpicklable')}"
    kind, text = str(message.get("type")), str(message.get("message"))
    trace = str(message.get("traceback", ""))
    return ServeError(
        f"mock server {server!r} raised {kind}: {text} before it was ready; the error could "
        f"not cross to the parent as itself ({reason}). The child's traceback:\n"
        + "\n".join("    " + line for line in trace.rstrip().splitlines()),
        server=server,
        error_type=kind,
        traceback=trace,
    )


def _read_block(fd: int) -> bytes:
    (size,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size))
    return _read_exact(fd, size)


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("the parent closed the lifeline before sending the server")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
