"""``mocksup up`` and friends: the mocks from the command line, for people and other languages.

``mocksup up`` starts the OTLP collector and the vLLM mock (or the servers a TOML file lists),
prints their endpoints and the environment a system under test needs, then a live summary
of what arrived, until Ctrl-C or SIGTERM stops everything (exit 0). ``--ready-file`` and
``--json`` give harnesses in any language the ports really bound; ``--print`` shows each
item as it arrives and ``--dump`` keeps them all as OTLP JSON lines. Every option can come
from a ``MOCKSUP_<OPTION>`` environment variable (:mod:`mocksup._cli.settings`). ``mocksup
spans``, ``metrics``, ``logs``, ``stats`` and ``tail`` look at what a running collector
holds; ``replay``, ``env`` and ``health`` are in :mod:`mocksup._cli.tools`.

Exit codes: 0 on a clean stop, 1 when a server fails to start, 2 for bad options, a bad
environment variable or a bad configuration file (with a one-line message), 141 when the
reader of the output went away (``mocksup spans | head``).
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

from mocksup import __version__
from mocksup._cli.entry import DEFAULT_MODULES, server_names
from mocksup._cli.errors import Advice, UsageError, advice, interrupts_kept, quiet_broken_pipe
from mocksup._cli.live import (
    Follower,
    StatusLine,
    close_dump,
    dump_follower,
    print_follower,
    summary,
)
from mocksup._cli.query import add_query_commands
from mocksup._cli.settings import (
    COMPAT_MODES,
    VLLM_OPTIONS,
    add_vllm_options,
    apply_environment,
    default_server_configs,
    early_collector,
    load_config,
    read_config,
    toml,
    up_option,
)
from mocksup._cli.tools import add_tool_commands
from mocksup._sync import run_sync
from mocksup.errors import MockServerError

if TYPE_CHECKING:
    # Imported where they are used: ``mocksup up`` launches its children before it pays for
    # pydantic, the harness and the mocks' classes (see _prestart).
    from mocksup.base import MockServerBase
    from mocksup.harness import MockServerConfig

__all__ = ("UsageError", "load_config", "main", "summary")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: harnesses parse stderr too.
        self.exit(2, f"mocksup: error: {message} (see {self.prog} --help)\n")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(prog="mocksup", description="Mock servers for end-to-end telemetry tests.")
    parser.add_argument("--version", action="version", version=f"mocksup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_up(commands.add_parser("up", help="start mock servers and keep them running"))
    add_query_commands(commands)
    add_tool_commands(commands)
    report = commands.add_parser("report", help="turn a dump into a self-contained HTML report")
    report.add_argument("dump", type=Path, help="a dump: OTLP JSON lines (up --dump, export())")
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
    return parser, dict(commands.choices)


def _add_up(up: argparse.ArgumentParser) -> None:
    """``mocksup up``'s options."""
    # Their defaults are UP_DEFAULTS': left None here, so that --config tells them given.
    up.add_argument(
        "--host",
        help="interface to bind (default 127.0.0.1; with --config, each server whose file "
        "sets no host)",
    )
    up.add_argument(
        "--servers",
        help="which default servers to start: otlp, vllm or both (default otlp,vllm)",
    )
    up.add_argument("--otlp-port", type=_port, metavar="PORT", help="OTLP/HTTP port (4318)")
    up.add_argument("--otlp-grpc-port", type=_port, metavar="PORT", help="OTLP/gRPC port (4317)")
    up.add_argument(
        "--otlp-compat",
        choices=COMPAT_MODES,
        help="answer as the OpenTelemetry Collector (collector, the default) or as the OTLP "
        "specification (spec) where they differ",
    )
    up.add_argument("--vllm-port", type=_port, metavar="PORT", help="vLLM mock port (8000)")
    up.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a TOML file listing the servers (instead of the defaults)",
    )
    up.add_argument(
        "--ready-file",
        type=Path,
        metavar="FILE",
        help="write the endpoints here as JSON once ready",
    )
    up.add_argument("--json", action="store_true", help="print one JSON line once ready")
    up.add_argument("--log-dir", type=Path, metavar="DIR", help="folder for the servers' log files")
    up.add_argument("--quiet", action="store_true", help="no live summary")
    up.add_argument(
        "--print",
        action="store_true",
        help="print each span, metric and log as it arrives (instead of the live summary)",
    )
    up.add_argument(
        "--verbosity",
        choices=("basic", "detailed"),
        default="basic",
        help="with --print: one line an item (basic) or every field (detailed)",
    )
    up.add_argument(
        "--dump",
        type=Path,
        metavar="FILE",
        help="write everything the collector receives to this file as OTLP JSON lines "
        "(as it arrives; complete and flushed at stop)",
    )
    up.add_argument(
        "--start-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds each server may take to start (30; with --config, each server whose "
        "file sets no start_timeout)",
    )
    add_vllm_options(up)
    up.set_defaults(func=_up)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


# -- up ---------------------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    from mocksup import _launch

    # ``up`` starts its servers once: no zygote to keep for later starts, and no idle child
    # (a server with an ``env`` of its own is exec'd; the child launched for it ends).
    enabled, _launch.zygote.enabled = _launch.zygote.enabled, False
    # From the very start: a signal during the start cancels it.
    stop = _StopRequest()
    try:
        return _run_up(args, stop)
    finally:
        stop.restore()
        _launch.zygote.enabled = enabled
        _launch.prestarted.discard()
        # What lives now lives to the end: left out of the collection at exit, which
        # would otherwise take tens of milliseconds after the servers have stopped (or
        # after a start that a signal cancelled).
        gc.freeze()


def _prestart(args: argparse.Namespace) -> None:
    """Launch one child per server before anything else (but the collector's, launched
    already when :mod:`~mocksup._cli.entry` read as much in the arguments): each imports
    its mock while this process imports what it needs to build and validate the servers,
    then takes its server."""
    from mocksup import _launch

    _launch.prestarted.launch_missing(_server_modules(args))


def _hand_over_collector(args: argparse.Namespace) -> None:
    """Send the default collector's child its settings before pydantic is imported: it
    serves while this process imports and validates the rest, and the start claims it
    (:meth:`~mocksup._launch.Prestarted.hand_over`, which compares the model's settings)."""
    from mocksup import _launch

    body = early_collector(args)
    if body is not None:
        with contextlib.suppress(MockServerError):  # its log file: the start says why
            _launch.prestarted.hand_over_settings(body, args.log_dir)


def _server_modules(args: argparse.Namespace) -> list[list[str]]:
    """What the child of each server ``up`` will start imports first: its class's module
    when it is one of mocksup's own (another's child imports it once it has its server's
    import path), and pydantic (``mocksup.base``) for a server that comes as its model."""
    if args.config is None:
        names = server_names(up_option(args, "servers"))
        copies = {"vllm": up_option(args, "vllm_replicas")}  # a child for each replica
        return [
            DEFAULT_MODULES[name]
            for name in names
            if name in DEFAULT_MODULES
            for _ in range(copies.get(name, 1))
        ]
    tomllib = toml()
    try:
        entries = tomllib.loads(args.config.read_text()).get("servers")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []  # load_config says what is wrong
    if not isinstance(entries, list):
        return []
    modules: list[list[str]] = []
    for entry in entries:
        spec = str(entry.get("server_class", "")) if isinstance(entry, dict) else ""
        module = spec.partition(":")[0] if ":" in spec else spec.rpartition(".")[0]
        ours = [module] if module.startswith("mocksup.") else []
        modules.append(["mocksup.base", *ours])
    return modules


def _run_up(args: argparse.Namespace, stop: _StopRequest) -> int:
    from mocksup import _launch

    dump = None
    try:
        with stop.interrupting():
            _prestart(args)
            _hand_over_collector(args)
            configs, how = _configs(args)
            dump = _open_dump(args.dump)
            started = time.monotonic()
            chosen = _hand_over(configs)
            _import_start()
        servers = _start(chosen, stop)
    except _Stopped:
        servers = None
    except MockServerError as error:
        if dump is not None:
            close_dump(dump)
        print(f"mocksup: {advice(error, how, _settings_of(configs, error))}", file=sys.stderr)
        return 1
    finally:
        _launch.prestarted.discard()
    if servers is None:  # stopped during the start: what had started was stopped
        if dump is not None:
            close_dump(dump)
        if not args.json:
            print("mocksup: stopped", flush=True)
        return 0
    from mocksup.harness import stop_mock_servers

    followers: list[Follower[Any]] = []
    try:
        ready = _ready_document(servers)
        if args.ready_file is not None:
            _write_atomically(args.ready_file, json.dumps(ready, indent=2) + "\n")
        if args.json:
            print(json.dumps(ready), flush=True)
        else:
            _print_banner(servers, ready, time.monotonic() - started)
        # Followed once the banner is out: what arrived before it (vLLM's start-up spans) is
        # printed after it, not amid its lines. They read from the first item: none is missed.
        followers = _followers(servers, args, dump)
        _summarise_until(stop, servers, quiet=args.quiet or args.json or args.print)
    finally:
        # What arrived is read before the collectors stop: nothing is missed.
        for follower in followers:
            follower.finish()
        if dump is not None:
            close_dump(dump)
        stop_mock_servers(servers)
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
    if not args.json:
        print("mocksup: stopped", flush=True)
    return 0


def _configs(args: argparse.Namespace) -> tuple[list[MockServerConfig], Advice]:
    if args.config is None:
        return default_server_configs(args)
    if args.servers is not None:
        raise UsageError(f"--servers chooses among the default servers; with --config, "
                         f"{args.config} lists the servers")  # fmt: skip
    defaults = ["--otlp-port", "--otlp-grpc-port", "--vllm-port", "--vllm-replicas", *VLLM_OPTIONS]
    given = [o for o in defaults if getattr(args, o[2:].replace("-", "_")) is not None]
    if given or args.vllm_args:
        raise UsageError(f"{(given or ['--vllm-args'])[0]} sets a default server; with "
                         f"--config, set it in {args.config}'s init_kwargs")  # fmt: skip
    if args.otlp_compat is not None:
        raise UsageError(f"--otlp-compat sets the default otlp server; with --config, set "
                         f"compat in {args.config}'s init_kwargs")  # fmt: skip
    return read_config(args.config, args.log_dir, args.start_timeout, args.host)


def _settings_of(configs: list[MockServerConfig], error: MockServerError) -> dict[str, Any]:
    for config in configs:
        if config.name == error.server:
            return dict(config.init_kwargs)
    return {}


def _open_dump(path: Path | None) -> IO[str] | None:
    if path is None:
        return None
    try:
        return path.open("w", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--dump {path}: cannot write it: {error.strerror or error}") from None


def _followers(
    servers: dict[str, MockServerBase], args: argparse.Namespace, dump: IO[str] | None
) -> list[Follower[Any]]:
    from mocksup.otlp import MockOTLPCollector

    collectors = [s for s in servers.values() if isinstance(s, MockOTLPCollector)]
    followers: list[Follower[Any]] = []
    for collector in collectors:
        if args.print:
            prefix = f"{collector.name}: " if len(collectors) > 1 else ""
            followers.append(print_follower(collector, args.verbosity, prefix))
        if dump is not None:
            followers.append(dump_follower(collector, dump))
    if dump is not None and not collectors:
        print("mocksup: --dump: no collector among the servers; the dump stays empty",
              file=sys.stderr)  # fmt: skip
    for follower in followers:
        follower.start()
    return followers


def _hand_over(configs: list[MockServerConfig]) -> list[MockServerConfig | MockServerBase]:
    """The servers to start: each that refers to no other server is built now and sent to
    the child launched for it, which serves while this process imports the harness's
    machinery (asyncio, the supervisor); the start then adopts that child."""
    from mocksup import _launch

    chosen: list[MockServerConfig | MockServerBase] = []
    for config in configs:
        if not config.depends_on():
            server = config.create()
            if _launch.prestarted.hand_over(server):
                chosen.append(server)
                continue
        chosen.append(config)
    return chosen


class _Stopped(BaseException):
    """A signal came before the start began: raised where the command was, an import
    under way included, as Ctrl-C raises ``KeyboardInterrupt``."""


class _StopRequest:
    """SIGTERM and SIGINT: a stop request, which also cancels a start under way.

    The handlers are installed before the command launches children of its own. A signal
    that comes before the start begins (while the command imports pydantic and the
    harness, say) raises :class:`_Stopped` within :meth:`interrupting`: the command ends
    there, without finishing those imports, and the children launched, which have served
    nobody, are killed. During the start, the start's task is cancelled: the servers
    started are stopped, the children starting are killed, and the command exits as after
    a stop, instead of waiting for the start to finish.
    """

    def __init__(self) -> None:
        self._signalled = False  # set by the handler: a plain store, never a lock
        #: Set soon after, from a thread of its own, to wake whoever waits on it.
        self.event = threading.Event()
        self._cancel: Callable[[], object] | None = None
        self._interrupt = False
        self._previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

    def requested(self) -> bool:
        """Whether a signal came (:attr:`event` is set soon after, from another thread)."""
        return self._signalled

    def restore(self) -> None:
        """Put back the handlers of before (``main()`` may run inside a program)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Python runs this in the main thread between two bytecodes, even inside
        # Event.wait() while it holds the event's lock: setting the event here would wait
        # for that lock forever. A thread of its own sets it (as soon as the lock is free).
        self._signalled = True
        if not self.event.is_set():  # is_set() reads a flag: no lock
            with contextlib.suppress(RuntimeError):  # no thread: waits poll requested()
                _thread.start_new_thread(self.event.set, ())
        if self._interrupt:
            self._interrupt = False  # once
            raise _Stopped
        cancel = self._cancel
        if cancel is not None:
            cancel()

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """Within: a signal raises :class:`_Stopped` (at once if one came first).

        A signal that lands while a callback runs (a weakref's, say: the import system's
        locks have them) raises it there, and Python drops an exception raised in a
        callback: that one is kept off stderr and raised when the block ends.
        """
        previous_hook = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            if not isinstance(unraisable.exc_value, _Stopped):
                previous_hook(unraisable)

        sys.unraisablehook = hook
        self._interrupt = True
        try:
            if self.requested():
                raise _Stopped
            yield
            if self.requested():
                raise _Stopped  # raised in a callback, and dropped
        finally:
            self._interrupt = False
            sys.unraisablehook = previous_hook

    @contextlib.contextmanager
    def cancelling(self) -> Iterator[None]:
        """Within: a signal cancels the current task (or has already, if one came first)."""
        import asyncio

        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        # Python runs the handler in the main thread: the wakeup fd wakes the loop's
        # select, so that it does at once, whichever thread the signal was delivered to.
        wakeup_r, wakeup_w = os.pipe()
        for fd in (wakeup_r, wakeup_w):
            os.set_blocking(fd, False)
        loop.add_reader(wakeup_r, os.read, wakeup_r, 512)
        previous = signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        self._cancel = lambda: loop.call_soon_threadsafe(task.cancel)
        try:
            if self.requested():
                task.cancel()
            yield
        finally:
            self._cancel = None
            signal.set_wakeup_fd(previous)
            loop.remove_reader(wakeup_r)
            os.close(wakeup_r)
            os.close(wakeup_w)


def _import_start() -> None:
    """Import what the start runs on (asyncio, the harness and the supervisor)."""
    import asyncio  # noqa: F401

    import mocksup.harness  # noqa: F401


def _start(
    configs: list[MockServerConfig | MockServerBase], stop: _StopRequest
) -> dict[str, MockServerBase] | None:
    """Start the servers; ``None`` when a signal stopped the start (nothing is left)."""
    import asyncio

    from mocksup.harness import start_mock_servers_async

    async def start() -> dict[str, MockServerBase]:
        with stop.cancelling():
            return await start_mock_servers_async(configs)

    if stop.requested():
        return None
    try:
        return run_sync(start)
    except asyncio.CancelledError:
        if stop.requested():
            return None
        raise


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
            "url": server.url,
            "endpoints": server.endpoints(),
            "log": str(server.log_path),
        }
        env.update(server.client_env())
    return {
        "mocksup": __version__,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "servers": listing,
        "env": env,
    }


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
    stop: _StopRequest, servers: dict[str, MockServerBase], *, quiet: bool
) -> None:
    status = StatusLine()
    while not stop.event.wait(0.5 if status.tty else 1.0) and not stop.requested():
        if not quiet:
            status.show(summary(servers))
    status.end()


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
    parser, commands = _parser()
    try:
        apply_environment(commands["up"], os.environ)
    except UsageError as error:
        print(f"mocksup: error: {error}", file=sys.stderr)
        return 2
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Said by the command's own parser, so the advice names its --help.
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")

    def run() -> int:
        try:
            code: int = args.func(args)
        except UsageError as error:
            print(f"mocksup: error: {error}", file=sys.stderr)
            return 2
        return code

    with interrupts_kept():
        return quiet_broken_pipe(run)
