"""The pieces a connection hands its handler: a stream, an answer, errors, the protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from mocksup._h2.frames import STREAM_WINDOW

if TYPE_CHECKING:
    from mocksup._h2.connection import Connection

__all__ = ("Answer", "Cancellable", "H2Error", "Handler", "Held", "Limits", "Stream")


class H2Error(Exception):
    """A protocol error: of the connection (``stream == 0``) or of one stream."""

    def __init__(self, code: int, message: str, stream: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.stream = stream


class Answer:
    """A response: ``head`` (header block) or ``None`` for a trailers-only answer, the
    ``data`` (DATA frames, flow-controlled) and ``trailers`` (ending the stream)."""

    __slots__ = ("data", "head", "trailers")

    def __init__(self, head: bytes | None, data: bytes, trailers: bytes) -> None:
        self.head = head
        self.data = data
        self.trailers = trailers


class Stream:
    """One request stream: its headers, the body so far, its windows."""

    __slots__ = (
        "answered",
        "body",
        "headers",
        "id",
        "pending",
        "recv_window",
        "remote_closed",
        "send_window",
        "size",
        "state",
        "timer",
    )

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]], window: int) -> None:
        self.id = stream_id
        self.headers = headers
        self.body: list[bytes | memoryview] = []  # the DATA payloads, as they arrived
        self.size = 0
        self.send_window = window
        self.recv_window = STREAM_WINDOW
        self.remote_closed = False
        self.answered = False
        self.pending: tuple[bytes, bytes] | None = None  # data and trailers held by windows
        self.state: object = None  # the handler's
        self.timer: Cancellable | None = None  # the handler's deadline, cancelled at the end

    def release(self) -> None:
        """The stream is over: nothing more is sent on it; its timer is cancelled."""
        self.answered = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Held:
    """Bytes of request bodies the streams of a server's connections hold, all together."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


class Cancellable(Protocol):
    """A timer (:class:`mocksup._h2.server.Timer`)."""

    def cancel(self) -> None: ...


class Handler(Protocol):
    """What serves the requests of a connection (see the module's docstring)."""

    def opened(self, conn: Connection, stream: Stream) -> Answer | None: ...
    def received(self, conn: Connection, stream: Stream) -> Answer | None: ...
    def ended(self, conn: Connection, stream: Stream) -> Answer | None: ...


class Limits(Protocol):
    """The bounds a connection needs (:class:`mocksup._h2.server.H2Limits`)."""

    @property
    def max_streams(self) -> int: ...
    @property
    def max_header_list(self) -> int: ...
    @property
    def max_held(self) -> int: ...
