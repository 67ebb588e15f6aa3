"""The commands that look at a running collector: ``spans``, ``metrics``, ``logs``, ``stats``
and ``tail``.

They are clients of the collector's control API (:class:`~mocksup.otlp.CollectorClient`),
found at ``--url`` (default ``$MOCKSUP_COLLECTOR_URL``, else ``http://127.0.0.1:4318``). Items
are printed as :func:`mocksup.otlp.render` writes them, ``--json`` prints one OTLP/JSON
document (``TracesData``, ``MetricsData`` or ``LogsData``, resources and scopes included),
``spans --tree`` draws each trace with :func:`mocksup.otlp.render_trace`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from mocksup._cli.errors import UsageError
from mocksup.errors import MockServerError

if TYPE_CHECKING:
    # Annotations only: the collector's client is imported when a command runs.
    from mocksup.otlp._signals import Signal

__all__ = ("add_query_commands", "collector_for")

DEFAULT_URL = "http://127.0.0.1:4318"
_SIGNALS: dict[str, Signal] = {"spans": "traces", "metrics": "metrics", "logs": "logs"}
#: The OTLP/JSON keys of each signal: resources, scopes in a resource, items in a scope.
_KEYS: dict[Signal, tuple[str, str, str]] = {
    "traces": ("resourceSpans", "scopeSpans", "spans"),
    "metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
    "logs": ("resourceLogs", "scopeLogs", "logRecords"),
}


def add_query_commands(commands: Any) -> None:
    """Add ``spans``, ``metrics``, ``logs``, ``stats`` and ``tail`` to the subparsers."""
    for name in ("spans", "metrics", "logs"):
        query = commands.add_parser(name, help=f"list the {name} a running collector holds")
        collector_options(query)
        _filter_options(query, name)
        query.add_argument(
            "--limit",
            type=_count,
            default=50,
            help="the last N only (50; 0: all); a note on stderr says when some were left out",
        )
        out = query.add_mutually_exclusive_group()
        out.add_argument("--json", action="store_true", help="one OTLP/JSON document")
        _verbosity_option(out)
        if name == "spans":
            out.add_argument(
                "--tree", action="store_true", help="each trace as a tree, with durations"
            )
        query.set_defaults(func=_query, signal=_SIGNALS[name])
    stats = commands.add_parser("stats", help="a running collector's counters, as JSON")
    collector_options(stats)
    stats.set_defaults(func=_stats)
    tail = commands.add_parser(
        "tail", help="print spans, metrics and logs as they arrive, one line each"
    )
    collector_options(tail)
    tail.add_argument("--name", help="only items with this name")
    tail.add_argument("--service", help="only items of this service.name")
    _verbosity_option(tail)
    tail.add_argument(
        "--signal",
        action="append",
        choices=sorted(_SIGNALS.values()),
        help="only this signal (repeatable; default: all)",
    )
    tail.add_argument(
        "--from-start", action="store_true", help="first what the collector holds already"
    )
    tail.add_argument(
        "--timeout", type=float, help="stop after this many seconds (default: Ctrl-C)"
    )
    tail.set_defaults(func=_tail)


def collector_options(parser: argparse.ArgumentParser) -> None:
    """``--url``, defaulting to ``$MOCKSUP_COLLECTOR_URL``."""
    parser.add_argument(
        "--url",
        default=os.environ.get("MOCKSUP_COLLECTOR_URL", DEFAULT_URL),
        help="the collector's OTLP/HTTP URL (default $MOCKSUP_COLLECTOR_URL or :4318)",
    )


def _filter_options(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--name", help="only items with this name (logs: event_name)")
    parser.add_argument("--service", help="only items of this service.name")
    if name != "metrics":
        parser.add_argument("--trace-id", help="only items of this trace (32 hex digits)")
    parser.add_argument(
        "-a",
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only items with this attribute (metrics: a data point's); VALUE is read as "
        "JSON when it parses (200, true), else as text; KEY alone: present. Repeatable",
    )


def _verbosity_option(parser: Any) -> None:
    parser.add_argument(
        "--verbosity",
        choices=("basic", "detailed"),
        default="basic",
        help="basic: one line an item (default); detailed: every field",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
    return value


def collector_for(url: str) -> Any:
    """The client of the collector at ``url``.

    :raises UsageError: the URL is not one.
    """
    from mocksup.otlp import CollectorClient

    try:
        return CollectorClient(url)
    except ValueError as error:
        raise UsageError(f"--url: {error}") from None


def _attributes(pairs: list[str]) -> dict[str, Any] | None:
    attributes: dict[str, Any] = {}
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        if not key:
            raise UsageError(f"-a {pair!r}: expected KEY=VALUE or KEY")
        if not equals:
            attributes[key] = None
            continue
        try:
            attributes[key] = json.loads(raw)
        except ValueError:
            attributes[key] = raw
    return attributes or None


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    filters: dict[str, Any] = {
        "service_name": args.service,
        "attributes": _attributes(args.attr),
    }
    if args.signal == "logs":
        filters["event_name"] = args.name
    else:
        filters["name"] = args.name
    if getattr(args, "trace_id", None):
        filters["trace_id"] = args.trace_id
    return {key: value for key, value in filters.items() if value is not None}


def _query(args: argparse.Namespace) -> int:
    collector = collector_for(args.url)
    filters = _filters(args)
    method = {"traces": "spans", "metrics": "metrics", "logs": "logs"}[args.signal]
    try:
        if args.json:
            document = collector.otlp_json(args.signal, **filters)
            total, shown = _keep_last(document, args.signal, args.limit)
            print(json.dumps(document, separators=(",", ":")))
            _note_left_out(total, shown, method)
            return 0
        items = getattr(collector, method)(**filters)
        if getattr(args, "tree", False):
            return _trees(collector, items, args.limit)
    except MockServerError as error:
        print(f"mocksup: {error}", file=sys.stderr)
        return 1
    from mocksup.otlp import render

    shown = items[-args.limit :] if args.limit else items
    for item in shown:
        print(render(item, args.verbosity))
    _note_left_out(len(items), len(shown), method)
    return 0


def _trees(collector: Any, spans: list[Any], limit: int) -> int:
    from mocksup.otlp import render_trace

    trace_ids = list(dict.fromkeys(span.trace_id for span in spans))
    shown = trace_ids[-limit:] if limit else trace_ids
    for index, trace_id in enumerate(shown):
        if index:
            print()
        print(render_trace(collector.trace(trace_id)))
    _note_left_out(len(trace_ids), len(shown), "traces")
    return 0


def _note_left_out(total: int, shown: int, what: str) -> None:
    if shown < total:
        print(
            f"mocksup: showing the last {shown} of {total} {what} (--limit 0 shows all)",
            file=sys.stderr,
        )


def _keep_last(document: dict[str, Any], signal: Signal, limit: int) -> tuple[int, int]:
    """Keep the last ``limit`` items of an OTLP/JSON document (0: all), dropping the
    resources and scopes left empty; return how many there were and are."""
    resources_key, scopes_key, items_key = _KEYS[signal]
    resources = document.get(resources_key, [])
    total = sum(len(s.get(items_key, [])) for r in resources for s in r.get(scopes_key, []))
    if not limit or total <= limit:
        return total, total
    skip = total - limit
    kept_resources = []
    for resource in resources:
        kept_scopes = []
        for scope in resource.get(scopes_key, []):
            items = scope.get(items_key, [])
            dropped = min(skip, len(items))
            skip -= dropped
            if dropped < len(items):
                kept_scopes.append({**scope, items_key: items[dropped:]})
        if kept_scopes:
            kept_resources.append({**resource, scopes_key: kept_scopes})
    document[resources_key] = kept_resources
    return total, limit


def _stats(args: argparse.Namespace) -> int:
    try:
        print(json.dumps(collector_for(args.url).stats(), indent=2))
    except MockServerError as error:
        print(f"mocksup: {error}", file=sys.stderr)
        return 1
    return 0


def _tail(args: argparse.Namespace) -> int:
    from mocksup.otlp import render

    collector = collector_for(args.url)
    follow = collector.follow(
        signals=args.signal,
        timeout=args.timeout,
        from_start=args.from_start,
        name=args.name,
        service_name=args.service,
    )
    try:
        for item in follow:
            print(render(item, args.verbosity), flush=True)
    except MockServerError as error:
        print(f"mocksup: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
