"""ServeContext: what the supervisor hands a mock's ``serve()`` in the child process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping

__all__ = ("ServeContext", "write_status")

_log = logging.getLogger(__name__)


class ServeContext:
    """What a running child hands to :meth:`MockServerBase.serve`.

    ``serve()`` binds its sockets, calls :meth:`ready` once it really serves, then blocks
    in :meth:`wait` until a stop is requested, shuts down cleanly and returns.
    """

    def __init__(self, status_fd: int | None = None, name: str = "mock") -> None:
        self.name = name
        self._status_fd = status_fd
        self._stop = threading.Event()
        self._ready_sent = False
        self.stop_reason: str | None = None

    @property
    def is_ready(self) -> bool:
        """Whether :meth:`ready` was called."""
        return self._ready_sent

    def ready(self, **ports: int) -> None:
        """Report that the server serves, with the ports it really bound.

        Each keyword names a field of the server model (``port=8000, grpc_port=4317``); the
        parent sets those fields to these values. Call it after the server accepts and
        handles requests (for gRPC, after ``server.start()``), exactly once.
        """
        if self._ready_sent:
            raise RuntimeError("ready() was already called")
        self._ready_sent = True
        _log.info(
            "%s [%d] ready: %s",
            self.name,
            os.getpid(),
            ", ".join(f"{field} {port}" for field, port in ports.items()),
        )
        write_status(self._status_fd, {"event": "ready", "pid": os.getpid(), "ports": ports})

    def request_stop(self, reason: str) -> None:
        """Ask ``serve()`` to return; called on SIGTERM, SIGINT and lifeline EOF."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def should_stop(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (or ``timeout`` passes); return whether it was."""
        return self._stop.wait(timeout)


def write_status(fd: int | None, message: Mapping[str, object]) -> None:
    """Write one JSON line to the parent's status pipe (nothing when ``fd`` is ``None``)."""
    if fd is None:
        return
    data = (json.dumps(message) + "\n").encode()
    # The parent may have stopped listening (it gave up or died); the lifeline handles that.
    with contextlib.suppress(OSError):
        os.write(fd, data)
