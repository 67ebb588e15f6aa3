"""``mocksup replay``, ``mocksup env`` and ``mocksup health``: dumps sent anywhere, a ready
file as shell variables, and a health check for scripts and orchestrators."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from mocksup._cli.errors import UsageError
from mocksup._cli.query import collector_options
from mocksup.errors import MockServerError

__all__ = ("add_tool_commands", "shell_env")


def add_tool_commands(commands: Any) -> None:
    """Add ``replay``, ``env`` and ``health`` to the subparsers."""
    replay = commands.add_parser(
        "replay", help="send a dump (OTLP JSON lines) to an OTLP/HTTP endpoint"
    )
    replay.add_argument("file", type=Path, help="the dump: mocksup up --dump, or a Collector's")
    collector_options(replay)
    replay.add_argument(
        "--to",
        dest="url",
        default=argparse.SUPPRESS,
        help="the endpoint's base URL (default: --url, the collector)",
    )
    replay.add_argument(
        "--encoding",
        choices=("protobuf", "json"),
        default="protobuf",
        help="how each export is sent (protobuf)",
    )
    replay.set_defaults(func=_replay)

    env = commands.add_parser(
        "env", help='a ready file as export lines for a shell: eval "$(mocksup env FILE)"'
    )
    env.add_argument("ready_file", type=Path, help="the file mocksup up --ready-file writes")
    env.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the file to appear (30; mocksup up writes it once ready)",
    )
    env.set_defaults(func=_env)

    health = commands.add_parser("health", help="check that mocks answer: exit 0 if all do")
    health.add_argument("urls", nargs="*", metavar="URL", help="mocks' URLs")
    health.add_argument("--ready-file", type=Path, help="check every mock of this ready file")
    health.set_defaults(func=_health)


def _replay(args: argparse.Namespace) -> int:
    from mocksup.otlp import ReplayError, replay

    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    try:
        sent = replay(args.file, args.url, encoding=args.encoding)
    except ValueError as error:
        raise UsageError(f"--to: {error}") from None
    except (ReplayError, OSError) as error:
        print(f"mocksup: {args.file}: {error}", file=sys.stderr)
        return 1
    print(f"mocksup: sent {sent} request(s) from {args.file} to {args.url}")
    return 0


def shell_env(ready: dict[str, Any]) -> dict[str, str]:
    """The variables ``mocksup env`` exports: the environment for a system under test,
    ``MOCKSUP_<NAME>_URL`` for each server's HTTP root, and ``MOCKSUP_COLLECTOR_URL`` for
    the first collector (what ``mocksup spans`` and friends read)."""
    variables = dict(ready.get("env") or {})
    for name, entry in ready["servers"].items():
        endpoints = entry.get("endpoints") or {}
        url = entry.get("url") or endpoints.get("url") or endpoints.get("otlp_http")
        if url:
            variables[f"MOCKSUP_{re.sub(r'[^A-Z0-9]', '_', name.upper())}_URL"] = url
        if "otlp_http" in endpoints:
            variables.setdefault("MOCKSUP_COLLECTOR_URL", endpoints["otlp_http"])
    return variables


def _env(args: argparse.Namespace) -> int:
    from mocksup.remote import read_ready_file

    try:
        ready = read_ready_file(args.ready_file, args.wait)
    except (OSError, ValueError) as error:
        print(f"mocksup: {error}", file=sys.stderr)
        return 1
    for key, value in shell_env(ready).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _health(args: argparse.Namespace) -> int:
    from mocksup.remote import attach

    if not args.urls and args.ready_file is None:
        raise UsageError("give the mocks' URLs or --ready-file")
    sources: list[Any] = [*args.urls, *([args.ready_file] if args.ready_file else [])]
    healthy = True
    for source in sources:
        try:
            for name, handle in attach(source).items():
                print(json.dumps({"name": name, **handle.health()}))
        except (MockServerError, OSError, ValueError) as error:
            print(f"mocksup: {source}: {error}", file=sys.stderr)
            healthy = False
    return 0 if healthy else 1
