"""The collector client's ways of taking what arrived out: OTLP/JSON, dumps, the live feed.

:class:`CollectorStreams` is mixed into :class:`~mocksup.otlp.client.CollectorQueries`, so
:class:`~mocksup.MockOTLPCollector` and :class:`~mocksup.otlp.CollectorClient` both have
these methods; like the queries, each is a client of one control route (``/mocksup/spans``
with ``encoding=otlp-json``, ``/mocksup/export``, ``/mocksup/feed``).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Any

from mocksup.otlp._signals import SIGNALS, Signal

if TYPE_CHECKING:
    from mocksup.control import ControlClient

    # Its parser loads the protobuf modules: imported by load() itself (see _query._parsers).
    from mocksup.otlp.dump import _Source
    from mocksup.otlp.items import LogRecord, Span
    from mocksup.otlp.metrics import Metric
    from mocksup.otlp.records import FeedPage

    Item = Span | Metric | LogRecord

# What the methods use is imported by the methods: the collector's class (which the parent
# of ``mocksup up`` imports to validate its settings before it sends them to the child) is
# made of this mixin, and pays for the client side (HTTP, the item classes, the protobuf
# parsers' wrappers) only when a method is first called.

__all__ = ("CollectorStreams", "parse_feed_page")

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

_Attrs = Mapping[str, Any] | None
_QUERY_METHODS: dict[Signal, str] = {"traces": "spans", "metrics": "metrics", "logs": "logs"}
_ROUTES: dict[Signal, str] = {"traces": "/spans", "metrics": "/metrics", "logs": "/logs"}
#: The fields of a feed page in protobuf (see ``_answers.feed_protobuf``), by number: each
#: signal's frames, then the cursor and the generation.
_FEED_SIGNALS: dict[int, Signal] = dict(enumerate(SIGNALS, 1))
_CURSOR, _GENERATION = 4, 5


class CollectorStreams:
    """OTLP/JSON, dumps and the live feed of a collector, for any class with ``control``."""

    if TYPE_CHECKING:  # provided by the classes that mix this in
        name: str

        @property
        def control(self) -> ControlClient: ...

    def otlp_json(self, signal: Signal, **filters: Any) -> dict[str, Any]:
        """The matching items as one OTLP/JSON ``TracesData``, ``MetricsData`` or
        ``LogsData`` document, resources and scopes kept as they arrived.

        :param signal: ``"traces"``, ``"metrics"`` or ``"logs"``.
        :param filters: the filters of :meth:`spans`, :meth:`metrics` or :meth:`logs`.
        :raises TypeError: a filter that signal's query does not take.
        """
        from mocksup.otlp._query import filter_params

        method = _QUERY_METHODS.get(signal)
        if method is None:
            raise ValueError(f"unknown signal {signal!r}; use traces, metrics or logs")
        known = set(inspect.signature(getattr(type(self), method)).parameters) - {"self"}
        unknown = set(filters) - known
        if unknown:
            raise TypeError(
                f"{method}() filters are {', '.join(sorted(known))}; not {', '.join(unknown)}"
            )
        params = {"encoding": "otlp-json", **filter_params(filters)}
        document: dict[str, Any] = self.control.call("GET", _ROUTES[signal], params=params)
        return document

    def export(
        self, target: str | os.PathLike[str] | IO[bytes], *, signals: list[Signal] | None = None
    ) -> int:
        """Write everything received as a dump: OTLP JSON lines, one ``TracesData``,
        ``MetricsData`` or ``LogsData`` object per stored request, in arrival order (the
        OpenTelemetry Collector's file exporter format; :func:`~mocksup.otlp.replay` sends it
        anywhere). Streamed: neither side holds the whole dump. Returns the lines written.

        :param target: a path (created or truncated) or a file opened in binary mode.
        :param signals: only these signals (default: all three).
        :raises ControlAPIError: the collector is unreachable or answered an error.
        """
        lines = 0
        with ExitStack() as stack:
            out: Any = target
            if isinstance(target, (str, os.PathLike)):
                out = stack.enter_context(open(target, "wb"))
            for chunk in _stream(self.control, "/export", {"signal": signals or None}):
                out.write(chunk)
                lines += chunk.count(b"\n")
        return lines

    def load(self, source: _Source) -> int:
        """Replay a dump into this collector (through its OTLP/HTTP endpoint, so every line
        is a request it records); return the requests sent. See :func:`~mocksup.otlp.replay`.
        """
        from mocksup.otlp.dump import replay

        return replay(source, self.control.base_url, timeout=self.control.timeout)

    def feed(
        self,
        after: int = 0,
        *,
        timeout: float = 10.0,
        signals: list[Signal] | None = None,
        limit: int = 10_000,
        name: str | None = None,
        attributes: _Attrs = None,
        resource: _Attrs = None,
        service_name: str | None = None,
        scope: str | None = None,
    ) -> FeedPage:
        """The items that arrived after the cursor ``after``, in arrival order, waiting up to
        ``timeout`` seconds (a long poll) when none has yet; an empty page when none came.

        Pass the page's ``cursor`` as the next ``after``. ``0`` starts from the first item
        stored; ``stats()["cursor"]`` is the cursor of what arrived so far. Requests are never
        split, so a page holds ``limit`` items or a little more. ``name`` and the other
        filters are those the three signals share (see :meth:`spans`).

        :raises ControlAPIError: the collector is unreachable, or ``after`` is past its last
            request (it was restarted: start again from 0).
        """
        from mocksup.otlp._query import filter_params, items_from_protobuf
        from mocksup.otlp.records import FeedPage

        params = filter_params(
            {"name": name, "attributes": attributes, "resource": resource,
             "service_name": service_name, "scope": scope}
        )  # fmt: skip
        params.update(after=after, timeout=timeout, limit=limit, signal=signals or None)
        params["encoding"] = "protobuf"
        _, payload = self.control.fetch("GET", "/feed", params=params, wait=timeout)
        frames, cursor, generation = parse_feed_page(payload)
        items: list[Item] = []
        for signal, frame in frames:
            items.extend(items_from_protobuf(signal, frame))
        return FeedPage(tuple(items), cursor, generation)

    def follow(
        self,
        *,
        signals: list[Signal] | None = None,
        timeout: float | None = None,
        from_start: bool = True,
        name: str | None = None,
        attributes: _Attrs = None,
        resource: _Attrs = None,
        service_name: str | None = None,
        scope: str | None = None,
    ) -> Iterator[Item]:
        """Yield each item as it arrives (spans, metrics and log records, in arrival order),
        like the Collector's debug exporter; each is yielded about as soon as the collector
        stores it (the feed's long poll).

        :param timeout: stop after this many seconds (``None``: never; break out of the loop).
        :param from_start: begin with what is already stored (else only what comes next).

        Other parameters as in :meth:`feed`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = 0 if from_start else int(self.stats()["cursor"])
        while True:
            wait = _FOLLOW_POLL
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            page = self.feed(cursor, timeout=wait, signals=signals, name=name,
                             attributes=attributes, resource=resource,
                             service_name=service_name, scope=scope)  # fmt: skip
            yield from page.items
            cursor = page.cursor
            if deadline is not None and time.monotonic() >= deadline:
                return

    if TYPE_CHECKING:

        def stats(self) -> dict[str, Any]: ...


#: The longest one long poll of :meth:`CollectorStreams.follow` is held (a new one follows).
_FOLLOW_POLL = 30.0


def parse_feed_page(data: bytes) -> tuple[list[tuple[Signal, bytes]], int, int]:
    """A feed page in protobuf (see ``_answers.feed_protobuf``): its ``(signal, *Data
    bytes)`` frames in wire order, its cursor and its generation."""
    frames: list[tuple[Signal, bytes]] = []
    numbers = {_CURSOR: 0, _GENERATION: 0}
    pos, end = 0, len(data)
    while pos < end:
        tag = data[pos]
        value, pos = _varint(data, pos + 1)
        if tag & 7 == 0:
            numbers[tag >> 3] = value
        else:
            frames.append((_FEED_SIGNALS[tag >> 3], data[pos : pos + value]))
            pos += value
    return frames, numbers[_CURSOR], numbers[_GENERATION]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _stream(control: ControlClient, path: str, params: dict[str, Any]) -> Iterator[bytes]:
    """GET a control route and yield its body as it arrives (not held whole)."""
    import http.client
    from urllib.parse import urlencode

    from mocksup.control import CHECK_GRACE, PREFIX
    from mocksup.errors import ControlAPIError

    query = urlencode([(k, v) for k, vs in params.items() if vs is not None
                       for v in (vs if isinstance(vs, list) else [vs])])  # fmt: skip
    target = PREFIX + path + ("?" + query if query else "")
    url = control.base_url + target
    if control.check is not None:
        control.check(0.0)  # a crashed or suspended mock: its own error, at once
    conn = http.client.HTTPConnection(control.host, control.port, timeout=control.timeout)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        if response.status >= 400:
            raise ControlAPIError(
                f"mock server {control.server!r} answered {response.status} to GET {url}: "
                f"{response.read()[:500]!r}",
                server=control.server,
                status=response.status,
                url=url,
            )
        while chunk := response.read1(1 << 16):
            yield chunk
    except (OSError, http.client.HTTPException) as error:
        if control.check is not None:
            control.check(CHECK_GRACE)
        raise ControlAPIError(
            f"mock server {control.server!r} did not answer GET {url} ({error})",
            server=control.server,
            url=url,
        ) from error
    finally:
        conn.close()
