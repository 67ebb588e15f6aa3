"""The children's log files, and the per-process folder of those without ``log_dir``.

Each child's stdout and stderr go straight to its own file (drained by the OS, never an
undrained pipe). Servers without ``log_dir`` log into one ``mocksup-*`` folder per process in
the system's temporary directory, removed at exit when every server started and stopped
cleanly, and kept (its path logged) when one failed: the errors name files in it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from mocksup.errors import MockServerError

if TYPE_CHECKING:
    from mocksup.base import MockServerBase

__all__ = ("Folder", "folder", "open_file", "open_log", "open_named_log", "tail")

_log = logging.getLogger(__name__)

#: How much of the end of a log file :func:`tail` reads.
_TAIL_BYTES = 64 * 1024


class Folder:
    """The ``mocksup-*`` folder of this process's logs; removed at exit unless one failed."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.failed = False
        self._lock = threading.Lock()

    def get(self) -> Path:
        """The folder, created on first use."""
        with self._lock:
            if self.path is None:
                self.path = Path(tempfile.mkdtemp(prefix="mocksup-"))
            return self.path

    def mark_failed(self) -> None:
        """A server failed: keep the folder at exit."""
        self.failed = True

    def close(self) -> None:
        """Remove the folder, or say where it is kept."""
        with self._lock:
            path, self.path = self.path, None
        if path is None:
            return
        if self.failed:
            _log.warning("the logs of mock servers that failed are kept in %s", path)
        else:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


folder = Folder()


def open_log(server: MockServerBase) -> tuple[Path, int]:
    """Create the server's log file (truncated) and return its path and a descriptor.

    The name is validated at construction and on assignment (no separator, no ``..``), so
    the file is in its folder; it is also opened without following a link planted there.

    :raises MockServerError: the file cannot be created.
    """
    return open_named_log(server.name, server.log_dir)


def open_named_log(name: str, log_dir: Path | None) -> tuple[Path, int]:
    """:func:`open_log` for a server known by its name and ``log_dir`` (``mocksup up``
    opens its collector's log before it has the model: a name it chose itself)."""
    if log_dir is None:
        fd, temporary = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=folder.get())
        return Path(temporary), fd
    path = log_dir / f"{name}.log"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        # A folder that cannot be made (a file of that name, no permission) is this error too.
        log_dir.mkdir(parents=True, exist_ok=True)
        return path, os.open(path, flags, 0o644)
    except OSError as error:
        raise MockServerError(f"cannot create the log file {path}: {error}", server=name) from error


def open_file(prefix: str) -> tuple[Path, int]:
    """Create a log file of this process's own (the zygote's) in the folder; return its path
    and a descriptor."""
    fd, name = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".log", dir=folder.get())
    return Path(name), fd


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the file at ``path`` (``""`` if it cannot be read)."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - _TAIL_BYTES))
            data = log.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
