"""``mocksup up`` and friends: the mocks from the command line, for people and other languages.

``mocksup up`` starts the OTLP collector and the vLLM mock (or the servers a TOML file lists),
prints their endpoints and the environment a system under test needs, then a live summary
of what arrived, until Ctrl-C or SIGTERM stops everything (exit 0). ``--ready-file`` and
``--json`` give harnesses in any language the ports really bound. ``mocksup spans``,
``metrics``, ``logs`` and ``stats`` look at what a running collector holds.

Exit codes: 0 on a clean stop, 1 when a server fails to start, 2 for bad options or a bad
configuration file (with a one-line message).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from pydantic import ValidationError

from mocksup import __version__
from mocksup._sync import run_sync
from mocksup.base import MockServerBase
from mocksup.errors import MockServerError
from mocksup.harness import (
    Endpoint,
    MockServerConfig,
    _plan,
    default_configs,
    start_mock_servers_async,
    stop_mock_servers,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["main"]

DEFAULT_SERVERS = ("otlp", "vllm")


class UsageError(Exception):
    """Bad options or a bad configuration file: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: harnesses parse stderr too.
        self.exit(2, f"mocksup: error: {message} (see mocksup {self._sub()}--help)\n")

    def _sub(self) -> str:
        name = self.prog.split()[-1]
        return "" if name == "mocksup" else f"{name} "


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mocksup", description="Mock servers for end-to-end telemetry tests.")
    parser.add_argument("--version", action="version", version=f"mocksup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = commands.add_parser("up", help="start mock servers and keep them running")
    up.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    up.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help="which default servers to start: otlp, vllm or both (default otlp,vllm)",
    )
    up.add_argument("--otlp-port", type=_port, default=4318, help="OTLP/HTTP port (4318)")
    up.add_argument("--otlp-grpc-port", type=_port, default=4317, help="OTLP/gRPC port (4317)")
    up.add_argument("--vllm-port", type=_port, default=8000, help="vLLM mock port (8000)")
    up.add_argument(
        "--config", type=Path, help="a TOML file listing the servers (instead of the defaults)"
    )
    up.add_argument("--ready-file", type=Path, help="write the endpoints here as JSON once ready")
    up.add_argument("--json", action="store_true", help="print one JSON line once ready")
    up.add_argument("--log-dir", type=Path, help="folder for the servers' log files")
    up.add_argument("--quiet", action="store_true", help="no live summary")
    up.set_defaults(func=_up)

    for name in ("spans", "metrics", "logs"):
        query = commands.add_parser(name, help=f"list the {name} a running collector holds")
        _collector_options(query)
        query.add_argument("--name", help="only items with this name")
        query.add_argument("--service", help="only items of this service.name")
        query.add_argument("--limit", type=int, default=50, help="the last N only (50; 0: all)")
        query.add_argument("--json", action="store_true", help="one OTLP/JSON object a line")
        query.set_defaults(func=_query, signal=name)
    stats = commands.add_parser("stats", help="a running collector's counters, as JSON")
    _collector_options(stats)
    stats.set_defaults(func=_stats)

    report = commands.add_parser("report", help="turn a dump into a self-contained HTML report")
    report.add_argument("dump", type=Path, help="a dump: OTLP JSON lines, as export() writes")
    report.add_argument("-o", "--output", type=Path, help="the HTML file (default: DUMP.html)")
    report.add_argument("--title", help="the report's title (default: the dump's name)")
    report.add_argument(
        "--journal",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a vLLM mock's saved GET /mocksup/requests answer; repeatable",
    )
    report.set_defaults(func=_report)
    return parser


def _collector_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("MOCKSUP_COLLECTOR_URL", "http://127.0.0.1:4318"),
        help="the collector's OTLP/HTTP URL (default $MOCKSUP_COLLECTOR_URL or :4318)",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


# -- configuration ---------------------------------------------------------------------------


def _default_configs(args: argparse.Namespace) -> list[MockServerConfig]:
    chosen = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(DEFAULT_SERVERS))
    if unknown or not chosen:
        raise UsageError(f"--servers takes otlp and/or vllm, not {','.join(unknown) or 'nothing'}")
    return default_configs(
        host=args.host,
        otlp_port=args.otlp_port,
        otlp_grpc_port=args.otlp_grpc_port,
        vllm_port=args.vllm_port,
        log_dir=args.log_dir,
        servers=chosen,
    )


def load_config(path: Path, log_dir: Path | None = None) -> list[MockServerConfig]:
    """Read a TOML file of ``[[servers]]`` tables: ``name``, ``server_class``
    (``"package.module:Class"``) and ``init_kwargs``, as :class:`MockServerConfig` takes them.
    A setting ``{endpoint = "otlp:otlp_grpc"}`` is another server's :class:`Endpoint`.

    :raises UsageError: the file cannot be read, parsed or validated.
    """
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read it: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML: {error}") from None
    entries = document.get("servers")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: expected one or more [[servers]] tables")
    configs = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: server {entry.get('name', number)!r}"
        unknown = sorted(set(entry) - {"name", "server_class", "init_kwargs"})
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}")
        kwargs = {k: _endpoint(v) for k, v in dict(entry.get("init_kwargs", {})).items()}
        if log_dir is not None:
            kwargs.setdefault("log_dir", str(log_dir))
        try:
            config = MockServerConfig(
                name=entry.get("name", ""),
                server_class=_import_class(str(entry.get("server_class", "")), where),
                init_kwargs=kwargs,
            )
        except ValidationError as error:
            raise UsageError(f"{where}: {_one_line(error)}") from None
        configs.append(config)
    try:
        _plan(configs)  # every setting and reference checked before anything starts
    except ValidationError as error:
        raise UsageError(f"{path}: {_one_line(error)}") from None
    except ValueError as error:
        raise UsageError(f"{path}: {error}") from None
    return configs


def _endpoint(value: Any) -> Any:
    """``{endpoint = "otlp:otlp_grpc"}`` in the file: another server's endpoint."""
    if isinstance(value, dict) and set(value) == {"endpoint"}:
        server, _, role = str(value["endpoint"]).partition(":")
        return Endpoint(server, role)
    return value


def _import_class(spec: str, where: str) -> type[MockServerBase]:
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        module_name, _, class_name = spec.rpartition(".")
    try:
        value = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise UsageError(f"{where}: cannot import server_class {spec!r}: {error}") from None
    if not (isinstance(value, type) and issubclass(value, MockServerBase)):
        raise UsageError(f"{where}: {spec!r} is not a MockServerBase subclass")
    return value


def _one_line(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}"
        for e in error.errors()
    )


# -- up ---------------------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    if args.config is not None:
        configs = load_config(args.config, args.log_dir)
    else:
        configs = _default_configs(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        servers = _start(configs)
    except MockServerError as error:
        print(f"mocksup: {error}", file=sys.stderr)
        return 1
    try:
        ready = _ready_document(servers)
        if args.ready_file is not None:
            _write_atomically(args.ready_file, json.dumps(ready, indent=2) + "\n")
        if args.json:
            print(json.dumps(ready), flush=True)
        else:
            _print_banner(servers, ready, time.monotonic() - started)
        _summarise_until(stop, servers, quiet=args.quiet or args.json)
    finally:
        stop_mock_servers(servers)
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
    if not args.json:
        print("mocksup: stopped", flush=True)
    return 0


def _start(configs: list[MockServerConfig]) -> dict[str, MockServerBase]:
    async def start() -> dict[str, MockServerBase]:
        return await start_mock_servers_async(configs)

    return run_sync(start)


def _ready_document(servers: dict[str, MockServerBase]) -> dict[str, Any]:
    env: dict[str, str] = {}
    listing = {}
    for name, server in servers.items():
        ports = {
            field: value
            for field, value in server.model_dump().items()
            if (field == "port" or field.endswith("_port")) and value is not None
        }
        listing[name] = {
            "class": f"{type(server).__module__}:{type(server).__name__}",
            "pid": server.pid,
            "host": server.host,
            "ports": ports,
            "endpoints": server.endpoints(),
            "log": str(server.log_path),
        }
        env.update(server.client_env())
    return {"mocksup": __version__, "pid": os.getpid(), "servers": listing, "env": env}


def _write_atomically(path: Path, text: str) -> None:
    # A harness polling for the file must never read half of it.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def _print_banner(servers: dict[str, MockServerBase], ready: dict[str, Any], took: float) -> None:
    print(f"mocksup {__version__}: {len(servers)} mock server(s) ready in {took:.2f} s")
    for name, entry in ready["servers"].items():
        where = "  ".join(f"{role} {url}" for role, url in entry["endpoints"].items())
        print(f"  {name:<8} pid {entry['pid']:<7} {where}")
        print(f"  {'':<8} log {entry['log']}")
    if ready["env"]:
        print("Environment for the system under test:")
        for key, value in ready["env"].items():
            print(f"  export {key}={value}")
    print("Ctrl-C stops everything.", flush=True)


def _summarise_until(
    stop: threading.Event, servers: dict[str, MockServerBase], *, quiet: bool
) -> None:
    tty = sys.stdout.isatty()
    last = ""
    while not stop.wait(0.5 if tty else 1.0):
        if quiet:
            continue
        line = summary(servers)
        if tty:
            stamped = time.strftime("[%H:%M:%S] ") + line
            print("\r" + stamped.ljust(len(last) + 11), end="", flush=True)
        elif line != last:
            # Into a file or a pipe: a new line only when something changed.
            print(time.strftime("[%H:%M:%S] ") + line, flush=True)
        last = line
    if tty and last and not quiet:
        print()


def summary(servers: dict[str, MockServerBase]) -> str:
    """One line on what each server received, from the servers' ``summary()``."""
    parts = []
    for name, server in servers.items():
        try:
            line = server.summary()
        except MockServerError:
            line = "not answering"
        if line:
            parts.append(f"{name}: {line}")
    return " | ".join(parts) or "running"


# -- looking at a running collector ------------------------------------------------------------


def _collector(url: str) -> Any:
    from mocksup.otlp import CollectorClient

    try:
        return CollectorClient(url)
    except ValueError as error:
        raise UsageError(f"--url: {error}") from None


def _query(args: argparse.Namespace) -> int:
    collector = _collector(args.url)
    try:
        items = getattr(collector, args.signal)(args.name, service_name=args.service)
    except MockServerError as error:
        print(f"mocksup: {error}", file=sys.stderr)
        return 1
    for item in items[-args.limit :] if args.limit > 0 else items:
        print(json.dumps(item.to_json()) if args.json else _describe(args.signal, item))
    return 0


def _describe(signal: str, item: Any) -> str:
    service = item.service_name or "-"
    if signal == "spans":
        return (
            f"{item.trace_id} {item.span_id} parent={item.parent_span_id or '-'} "
            f"{service} {item.name!r} {item.kind} {item.status_code} "
            f"{item.duration_ns / 1e6:.1f} ms"
        )
    if signal == "metrics":
        return f"{service} {item.name!r} {item.type} {len(item.data_points)} point(s)"
    return f"{service} {item.severity_text or item.severity_number} {item.body!r}"


def _stats(args: argparse.Namespace) -> int:
    try:
        print(json.dumps(_collector(args.url).stats(), indent=2))
    except MockServerError as error:
        print(f"mocksup: {error}", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from mocksup.otlp import ReplayError
    from mocksup.otlp.report import dump_frames, read_journal, write_report

    output = args.output or args.dump.with_name(args.dump.name + ".html")
    journals = {}
    for spec in args.journal:
        name, eq, path = spec.partition("=")
        if not eq or not name:
            raise UsageError(f"--journal takes NAME=FILE, not {spec!r}")
        try:
            journals[name] = read_journal(path)
        except ValueError as error:
            raise UsageError(str(error)) from None
    try:
        frames = list(dump_frames(args.dump))
        write_report(output, frames, title=args.title or args.dump.name, journals=journals)
    except (OSError, ReplayError) as error:  # a missing file, a line that is not OTLP/JSON
        raise UsageError(f"{args.dump}: {error}") from None
    print(f"mocksup: wrote {output} ({len(frames)} requests)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mocksup`` command; returns its exit code."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as error:
        print(f"mocksup: error: {error}", file=sys.stderr)
        return 2
    return code
