"""Text renderings of received telemetry, for people watching it arrive.

:func:`render` writes a span, metric or log record as one line (``"basic"``: what
``mocksup tail`` prints for each item, as the Collector's debug exporter logs one line per
record) or as a block of lines with every field (``"detailed"``, the debug exporter's
detailed verbosity). :func:`render_trace` draws a trace as an indented tree with each span's
duration and start offset. They are plain functions of the items, so any front end (the
command line, a test's failure message, a log) can use them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    # Imported where they are used (datetime too): the package imports this module at once
    # (see its __init__), and the collector's child, which imports its serving modules from
    # the package, serves before it needs any of them.
    from mocksup.otlp.items import LogRecord, Span
    from mocksup.otlp.metrics import DataPoint, Metric
    from mocksup.otlp.records import Trace

__all__ = ("Verbosity", "format_duration", "render", "render_trace")

#: How much :func:`~mocksup.otlp.render` writes: one line, or every field.
Verbosity = Literal["basic", "detailed"]
_MAX_VALUE = 80


def format_duration(nanoseconds: int) -> str:
    """A duration for people: ``850 ns``, ``12.5 µs``, ``3.2 ms``, ``1.25 s``."""
    if abs(nanoseconds) < 1_000:
        return f"{nanoseconds} ns"
    if abs(nanoseconds) < 1_000_000:
        return f"{nanoseconds / 1e3:.1f} µs"
    if abs(nanoseconds) < 1_000_000_000:
        return f"{nanoseconds / 1e6:.1f} ms"
    return f"{nanoseconds / 1e9:.2f} s"


def render(item: Span | Metric | LogRecord, verbosity: Verbosity = "basic") -> str:
    """One item as text: one line (``"basic"``) or every field, one per line
    (``"detailed"``).

    :raises ValueError: an unknown verbosity.
    """
    from mocksup.otlp.items import Span
    from mocksup.otlp.metrics import Metric

    if verbosity not in ("basic", "detailed"):
        raise ValueError(f"unknown verbosity {verbosity!r}; use basic or detailed")
    detailed = verbosity == "detailed"
    if isinstance(item, Span):
        return _span_detailed(item) if detailed else _span_line(item)
    if isinstance(item, Metric):
        return _metric_detailed(item) if detailed else _metric_line(item)
    return _log_detailed(item) if detailed else _log_line(item)


# -- one line ------------------------------------------------------------------------------


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _attrs(attributes: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={_value(value)}" for key, value in attributes.items())


def _line(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _span_line(span: Span) -> str:
    return _line(
        "span",
        span.service_name or "-",
        repr(span.name),
        str(span.kind),
        str(span.status_code),
        format_duration(span.duration_ns),
        f"trace={span.trace_id or '-'} span={span.span_id or '-'}",
        f"parent={span.parent_span_id or '-'}",
        _attrs(span.attributes),
    )


def _point_text(point: DataPoint) -> str:
    if point.value is not None:
        shown = _value(point.value)
    else:
        shown = f"count={point.count} sum={_value(point.sum)}"
    return shown + (f" {{{_attrs(point.attributes)}}}" if point.attributes else "")


def _metric_line(metric: Metric) -> str:
    points = metric.data_points
    return _line(
        "metric",
        metric.service_name or "-",
        repr(metric.name),
        metric.type or "empty",
        f"unit={metric.unit}" if metric.unit else "",
        f"{len(points)} point(s):" if points else "no points",
        ", ".join(_point_text(point) for point in points[:5]),
        "..." if len(points) > 5 else "",
    )


def _log_line(record: LogRecord) -> str:
    return _line(
        "log",
        record.service_name or "-",
        record.severity_text or str(record.severity_number),
        _value(record.body) if isinstance(record.body, str) else repr(record.body),
        f"event={record.event_name}" if record.event_name else "",
        f"trace={record.trace_id} span={record.span_id}" if record.trace_id else "",
        _attrs(record.attributes),
    )


# -- detailed ------------------------------------------------------------------------------


def _time(nanoseconds: int) -> str:
    import datetime

    if not nanoseconds:
        return "-"
    moment = datetime.datetime.fromtimestamp(nanoseconds / 1e9, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def _block(title: str, fields: Iterable[tuple[str, Any]], item: Any) -> str:
    lines = [title]
    lines.extend(f"    {name:<15}: {value}" for name, value in fields)
    resource = item.resource
    lines.append(f"    {'Resource':<15}: {_attrs(resource.attributes) or '-'}")
    scope = item.scope
    lines.append(f"    {'Scope':<15}: {_line(scope.name, scope.version) or '-'}")
    if item.attributes:
        lines.append("Attributes:")
        lines.extend(f"     -> {key}: {value!r}" for key, value in item.attributes.items())
    return "\n".join(lines)


def _span_detailed(span: Span) -> str:
    text = _block(
        f"Span {span.name!r}",
        [
            ("Trace ID", span.trace_id),
            ("Parent ID", span.parent_span_id),
            ("ID", span.span_id),
            ("Kind", span.kind),
            ("Start time", _time(span.start_time_unix_nano)),
            ("End time", _time(span.end_time_unix_nano)),
            ("Duration", format_duration(span.duration_ns)),
            ("Status code", span.status_code),
            ("Status message", span.status_message),
        ],
        span,
    )
    extra = []
    for event in span.events:
        extra.append(f"Event {event.name!r} at {_time(event.time_unix_nano)}")
        extra.extend(f"     -> {key}: {value!r}" for key, value in event.attributes.items())
    for link in span.links:
        extra.append(f"Link to trace {link.trace_id} span {link.span_id}")
        extra.extend(f"     -> {key}: {value!r}" for key, value in link.attributes.items())
    return "\n".join([text, *extra])


def _metric_detailed(metric: Metric) -> str:
    text = _block(
        f"Metric {metric.name!r}",
        [
            ("Description", metric.description),
            ("Unit", metric.unit),
            ("Type", metric.type),
            ("Temporality", metric.aggregation_temporality),
            ("Monotonic", metric.is_monotonic),
        ],
        metric,
    )
    lines = [text]
    for index, point in enumerate(metric.data_points):
        lines.append(f"Data point #{index}")
        lines.append(f"     -> start: {_time(point.start_time_unix_nano)}")
        lines.append(f"     -> time: {_time(point.time_unix_nano)}")
        if point.value is not None:
            lines.append(f"     -> value: {point.value!r}")
        if point.count is not None:
            lines.append(f"     -> count: {point.count} sum: {point.sum!r}")
        lines.extend(f"     -> {key}: {value!r}" for key, value in point.extra.items())
        lines.extend(f"     -> attribute {k}: {v!r}" for k, v in point.attributes.items())
    return "\n".join(lines)


def _log_detailed(record: LogRecord) -> str:
    return _block(
        f"LogRecord {record.event_name!r}" if record.event_name else "LogRecord",
        [
            ("Time", _time(record.time_unix_nano)),
            ("Observed time", _time(record.observed_time_unix_nano)),
            ("Severity", f"{record.severity_text or '-'} ({record.severity_number})"),
            ("Body", repr(record.body)),
            ("Trace ID", record.trace_id),
            ("Span ID", record.span_id),
            ("Flags", record.flags),
        ],
        record,
    )


# -- a trace as a tree ---------------------------------------------------------------------


def render_trace(trace: Trace) -> str:
    """A trace as an indented tree: each span's name, service, kind, duration, its start
    after the trace's first span, and ``ERROR`` where its status is one.

    Spans whose parent did not arrive are drawn under a line naming the missing parent;
    spans no root or orphan leads to (a parent loop) are listed at the end.
    """
    spans = trace.spans
    if not spans:
        return f"trace {trace.trace_id}: no spans"
    start = min(span.start_time_unix_nano for span in spans)
    end = max(span.end_time_unix_nano for span in spans)
    lines = [f"trace {trace.trace_id}: {len(spans)} span(s), {format_duration(end - start)}"]
    drawn: set[str] = set()
    for root in trace.roots:
        _draw(trace, root, start, lines, drawn)
    missing: dict[str, list[Span]] = {}
    for orphan in trace.orphans:
        missing.setdefault(orphan.parent_span_id, []).append(orphan)
    for parent, orphans in missing.items():
        lines.append(f"(parent {parent} did not arrive)")
        for index, orphan in enumerate(orphans):
            last = index == len(orphans) - 1
            _draw(trace, orphan, start, lines, drawn, branch="└── " if last else "├── ",
                  indent="    " if last else "│   ")  # fmt: skip
    rest = [span for span in spans if span.span_id not in drawn]
    if rest:
        lines.append("(spans in a parent loop)")
        lines.extend("    " + _tree_label(span, start) for span in rest)
    return "\n".join(lines)


def _tree_label(span: Span, start: int) -> str:
    who = ", ".join(part for part in (span.service_name, str(span.kind)) if part)
    label = f"{span.name} ({who}) {format_duration(span.duration_ns)}"
    label += f" at +{format_duration(span.start_time_unix_nano - start)}"
    return label + (" ERROR" if span.status_code == "ERROR" else "")


def _draw(
    trace: Trace,
    span: Span,
    start: int,
    lines: list[str],
    drawn: set[str],
    *,
    branch: str = "",
    indent: str = "",
) -> None:
    # Iterative: a trace may nest deeper than Python's recursion limit.
    stack = [(span, branch, indent)]
    while stack:
        span, branch, indent = stack.pop()
        if span.span_id in drawn:
            continue  # a span id sent twice: drawn once
        drawn.add(span.span_id)
        lines.append(branch + _tree_label(span, start))
        children = [child for child in trace.children(span) if child.span_id not in drawn]
        for index in reversed(range(len(children))):  # the first child is drawn first
            last = index == len(children) - 1
            stack.append((children[index], indent + ("└── " if last else "├── "),
                          indent + ("    " if last else "│   ")))  # fmt: skip
