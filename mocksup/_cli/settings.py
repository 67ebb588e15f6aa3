"""Where ``mocksup up``'s servers and settings come from: options, environment, TOML.

Every option of ``mocksup up`` can also be given as an environment variable,
``MOCKSUP_`` and the option's name in capitals (``--otlp-port`` is ``$MOCKSUP_OTLP_PORT``),
so a container or a Kubernetes pod configures it without a command line; an option given on
the command line wins. The ``--vllm-*`` options set the vLLM mock's common settings,
``--otlp-compat`` the collector's ``compat``. A
``--config`` TOML file lists servers instead, each one checked (and named in any error)
before anything starts.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mocksup._cli.entry import server_names
from mocksup._cli.errors import Advice, UsageError

if TYPE_CHECKING:
    # Imported where they are used: ``mocksup up`` parses its options and launches its
    # children before it pays for pydantic, the harness and the mocks (see mocksup.cli).
    from pydantic import ValidationError

    from mocksup._payload import Settings
    from mocksup.base import MockServerBase
    from mocksup.harness import MockServerConfig

__all__ = (
    "COMPAT_MODES",
    "DEFAULT_SERVERS",
    "VLLM_OPTIONS",
    "add_vllm_options",
    "apply_environment",
    "check_host",
    "default_server_configs",
    "early_collector",
    "env_name",
    "load_config",
    "read_config",
    "up_option",
)

DEFAULT_SERVERS = ("otlp", "vllm")
#: What ``mocksup up`` binds when neither an option nor its variable says: the default
#: servers' well-known ports (options left ``None`` by the parser, so that ``--config`` can
#: tell the ones given, which only the default servers take, from these).
UP_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "servers": ",".join(DEFAULT_SERVERS),
    "otlp_port": 4318,
    "otlp_grpc_port": 4317,
    "vllm_port": 8000,
    "vllm_replicas": 1,
}
#: The values of ``--otlp-compat``: the collector's ``compat`` modes (checked against them
#: by a test, so that ``mocksup up`` need not import the collector to parse its options).
COMPAT_MODES = ("collector", "spec")
_ENV_PREFIX = "MOCKSUP_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

#: ``--vllm-*`` option -> (the vLLM mock's setting, its type, help). Dotted settings are
#: fields of a nested model (``latency.ttft``).
VLLM_OPTIONS: dict[str, tuple[str, Any, str]] = {
    "--vllm-model": ("model", str, "the model name served (mock-model)"),
    "--vllm-api-key": ("api_key", str, "the API key required under /v1 (none)"),
    "--vllm-max-model-len": ("max_model_len", int, "prompt plus output tokens (4096)"),
    "--vllm-seed": ("seed", int, "seed of the generated content and faults (0)"),
    "--vllm-ttft": ("latency.ttft", float, "seconds to the first token (0)"),
    "--vllm-itl": ("latency.itl", float, "seconds between tokens (0)"),
    "--vllm-fault": (
        "faults.kind",
        str,
        "what an injected fault does: %(fault_kinds)s (unavailable)",
    ),
    "--vllm-fault-rate": ("faults.rate", float, "probability that a request fails (0)"),
    "--vllm-fault-first": ("faults.first", int, "fail this many first requests (0)"),
    "--vllm-otlp-traces-endpoint": (
        "otlp_traces_endpoint",
        str,
        "where its llm_request spans go (default: the collector started with it)",
    ),
}


_METAVARS = {int: "N", float: "NUMBER", str: "TEXT"}


class _FaultKinds:
    """The vLLM mock's fault kinds as a help text lists them, read from
    :data:`mocksup.vllm.FaultKind` only when a help is printed: importing the mock (and
    pydantic) to set the options up would hold back the children ``mocksup up`` launches
    first by about 0.2 s."""

    def __str__(self) -> str:
        from typing import get_args

        from mocksup.vllm import FaultKind

        *first, last = get_args(FaultKind)
        return f"{', '.join(first)} or {last}"


def env_name(dest: str) -> str:
    """The environment variable of an option's destination (``otlp_port``)."""
    return _ENV_PREFIX + dest.upper()


def add_vllm_options(parser: argparse.ArgumentParser) -> None:
    """The ``--vllm-*`` options of ``mocksup up``."""
    group = parser.add_argument_group("the vLLM mock (with the default servers)")
    for option, (_, kind, text) in VLLM_OPTIONS.items():
        metavar = _METAVARS.get(kind, "TEXT") if option != "--vllm-fault" else "KIND"
        action = group.add_argument(option, type=kind, help=text, metavar=metavar)
        # argparse fills a help's ``%(name)s`` from the action's attributes when it prints it.
        vars(action)["fault_kinds"] = _FaultKinds()
    group.add_argument(
        "--vllm-replicas",
        type=_replicas,
        metavar="N",
        help="vLLM mocks to start, vllm-0... on --vllm-port and the ports after it (1)",
    )
    group.add_argument(
        "--vllm-args",
        type=shlex.split,
        metavar="ARGS",
        help="a vllm serve command line, in one string ('Qwen/Qwen3-0.6B --max-model-len "
        "1024'): its flags become the mock's settings, the --vllm-* options win",
    )


def _replicas(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of replicas: {text!r}") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError(f"replicas out of range (1 to 256): {count}")
    return count


def apply_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Take the defaults of ``parser``'s options from ``MOCKSUP_<OPTION>`` variables, and
    name each variable in the option's help.

    :raises UsageError: a variable's value is not valid for its option.
    """
    defaults: dict[str, Any] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        name = env_name(action.dest)
        action.help = f"{action.help or ''} [${name}]".strip()
        if name not in environ:
            continue
        defaults[action.dest] = _from_env(action, name, environ[name])
    parser.set_defaults(**defaults)


def _from_env(action: argparse.Action, name: str, raw: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        lowered = raw.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise UsageError(f"${name}: expected 1 or 0 (true or false), not {raw!r}")
        return lowered in _TRUE
    convert = action.type if callable(action.type) else str
    try:
        value = convert(raw)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        raise UsageError(f"${name}: {error or 'invalid value'}: {raw!r}") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"${name}: {raw!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def check_host(host: str, where: str) -> None:
    """Refuse a host this machine cannot bind before any child starts (a child would fail
    with a traceback: ``999.1.1.1``, a name that does not resolve, another machine's address).

    :raises UsageError: it cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host.strip("[]"), 0))
    except (OSError, UnicodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise UsageError(
            f"{where} {host!r}: not an address of this machine ({reason}); use an interface "
            "address such as 127.0.0.1, ::1 or 0.0.0.0"
        ) from None


# -- the default servers -----------------------------------------------------------------------

#: ``MockOTLPCollector().model_dump()``, its serving function and its class's name: what
#: ``mocksup up`` sends its default collector's child before it imports pydantic (see
#: :func:`early_collector`). A test holds them to the model; were they stale, the start
#: would discard that child and launch another: slower, never other settings.
COLLECTOR_SETTINGS: dict[str, Any] = {
    "name": "otlp",
    "host": "127.0.0.1",
    "port": 4318,
    "start_timeout": 30.0,
    "stop_timeout": 2.0,
    "log_dir": None,
    "env": {},
    "grpc_port": 4317,
    "compat": "collector",
    "max_body_size": None,
    "grpc_max_message": None,
    "max_request_objects": 1_000_000,
    "max_items": 1_000_000,
    "max_stored_bytes": 512 * 1024 * 1024,
    "max_requests": 10_000,
    "journal_credentials": False,
    "grpc_workers": 16,
    "max_connections": 256,
    "cors": None,
    "journals": {},
}
_COLLECTOR_SERVE = ("mocksup.otlp._serve:serve_settings", "MockOTLPCollector")


def early_collector(args: argparse.Namespace) -> Settings | None:
    """The settings ``up``'s default collector will have, known without pydantic; ``None``
    unless the model surely takes every option that applies to it.

    None with a file (its servers are validated by the model), with ``--start-timeout``
    (the model bounds it), with a ``--servers`` or ``--vllm-*`` choice that the start will
    refuse, or a host that cannot be bound: the start then validates and says what is wrong
    before the collector serves. A vLLM setting the model refuses is found after the
    collector's child took its settings: the start then ends that child with the others.
    """
    from mocksup._payload import Settings

    if args.config is not None or args.start_timeout is not None:
        return None
    up = {name: up_option(args, name) for name in UP_DEFAULTS}
    chosen = set(server_names(up["servers"]))
    if "otlp" not in chosen or not chosen <= set(DEFAULT_SERVERS):
        return None
    if "vllm" not in chosen and _vllm_settings(args):
        return None
    try:
        check_host(up["host"], "--host")
    except UsageError:
        return None
    settings = copy.deepcopy(COLLECTOR_SETTINGS)
    settings.update(
        host=up["host"], port=up["otlp_port"], grpc_port=up["otlp_grpc_port"], log_dir=args.log_dir
    )
    if args.otlp_compat is not None:
        settings["compat"] = args.otlp_compat
    target, kind = _COLLECTOR_SERVE
    return Settings(target, "otlp", kind, settings)


def up_option(args: argparse.Namespace, name: str) -> Any:
    """The value of one of :data:`UP_DEFAULTS`' options: given, or its default."""
    value = getattr(args, name)
    return UP_DEFAULTS[name] if value is None else value


def default_server_configs(args: argparse.Namespace) -> tuple[list[MockServerConfig], Advice]:
    """The default servers as the options and environment choose them.

    :raises UsageError: ``--servers`` names something else, or a setting is invalid.
    """
    from mocksup.harness import default_configs

    up = {name: up_option(args, name) for name in UP_DEFAULTS}
    chosen = server_names(up["servers"])
    unknown = sorted(set(chosen) - set(DEFAULT_SERVERS))
    if unknown or not chosen:
        raise UsageError(f"--servers takes otlp and/or vllm, not {','.join(unknown) or 'nothing'}")
    try:
        configs = default_configs(
            host=up["host"],
            otlp_port=up["otlp_port"],
            otlp_grpc_port=up["otlp_grpc_port"],
            vllm_port=up["vllm_port"],
            log_dir=args.log_dir,
            servers=chosen,
            vllm_replicas=up["vllm_replicas"],
        )
    except ValueError as error:  # the replicas' ports past 65535
        raise UsageError(f"--vllm-replicas: {error}") from None
    # "vllm", or its replicas "vllm-0"... with --vllm-replicas.
    vllms = [c.name for c in configs if c.name == "vllm" or c.name.startswith("vllm-")]
    options = {
        ("otlp", "port"): "--otlp-port",
        ("otlp", "grpc_port"): "--otlp-grpc-port",
        ("otlp", "compat"): "--otlp-compat",
        **{(c.name, "host"): "--host" for c in configs},
        **{(c.name, "start_timeout"): "--start-timeout" for c in configs},
        **{(name, "port"): "--vllm-port" for name in vllms},
        **{(name, "vllm_serve_args"): "--vllm-args" for name in vllms},
        **{(name, setting): option for name in vllms
           for option, (setting, _, _) in VLLM_OPTIONS.items()},
    }  # fmt: skip
    settings = _vllm_settings(args)
    if settings and "vllm" not in chosen:
        raise UsageError("the --vllm-* options need the vllm server (see --servers)")
    per_server = {name: settings for name in vllms}
    if args.otlp_compat is not None:
        if "otlp" not in chosen:
            raise UsageError("--otlp-compat needs the otlp server (see --servers)")
        per_server["otlp"] = {"compat": args.otlp_compat}
    configs = [_with_settings(c, args, per_server.get(c.name, {})) for c in configs]
    how = Advice(options)
    check_configs(configs, how)
    return configs, how


def _vllm_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for option, (setting, _, _) in VLLM_OPTIONS.items():
        value = getattr(args, option[2:].replace("-", "_"))
        if value is None:
            continue
        head, _, tail = setting.partition(".")
        if tail:
            settings.setdefault(head, {})[tail] = value
        else:
            settings[head] = value
    if args.vllm_args:
        settings["vllm_serve_args"] = args.vllm_args
    return settings


def _with_settings(
    config: MockServerConfig, args: argparse.Namespace, settings: dict[str, Any]
) -> MockServerConfig:
    kwargs = {**config.init_kwargs, **settings}
    if args.start_timeout is not None:
        kwargs["start_timeout"] = args.start_timeout
    return config.model_copy(update={"init_kwargs": kwargs})


def check_configs(configs: Sequence[MockServerConfig], how: Advice) -> None:
    """Validate every server's settings, then the references between them, before any
    process starts; each error names the server (or the option) it is about.

    :raises UsageError: a setting or a reference is invalid.
    """
    from pydantic import ValidationError

    from mocksup import harness

    where = f"{how.config}: " if how.config else ""
    hosts: dict[str, str] = {}
    for config in configs:
        try:
            model = config.create()
        except ValidationError as error:
            raise UsageError(_one_line(error, config.name, how, where)) from None
        option = how.options.get((config.name, "host"))
        hosts.setdefault(model.host, option or f"{where}server {config.name!r}: host")
    try:
        harness.check_configs(configs)
    except ValueError as error:  # a reference to an unknown server or role, a cycle
        raise UsageError(f"{where}{error}") from None
    for host, label in hosts.items():
        check_host(host, label)


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}"
        for e in error.errors()
    )


def _one_line(error: ValidationError, server: str, how: Advice, where: str) -> str:
    parts = []
    for detail in error.errors():
        loc = ".".join(str(part) for part in detail["loc"])
        option = how.options.get((server, loc)) or how.options.get((server, loc.split(".")[0]))
        if option is None and not loc and (server, "vllm_serve_args") in how.options:
            option = how.options[(server, "vllm_serve_args")]
        # With a file, only the settings an option gave are in ``how.options``.
        if option is not None:
            parts.append(f"{option}: {detail['msg']}")
        else:
            parts.append(f"{where}server {server!r}: {loc or 'settings'}: {detail['msg']}")
    return "; ".join(parts)


# -- the configuration file --------------------------------------------------------------------


def toml() -> Any:
    """The TOML parser, imported when a file is read (most runs of ``up`` read none)."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # type: ignore[import-not-found,unused-ignore]  # pragma: no cover

    return tomli  # pragma: no cover


def load_config(
    path: Path,
    log_dir: Path | None = None,
    start_timeout: float | None = None,
    host: str | None = None,
) -> list[MockServerConfig]:
    """Read a TOML file of ``[[servers]]`` tables: ``name``, ``server_class``
    (``"package.module:Class"``) and ``init_kwargs``, as :class:`~mocksup.MockServerConfig`
    takes them. A setting ``{endpoint = "otlp:otlp_grpc"}`` is another server's
    :class:`~mocksup.Endpoint`.

    :param log_dir: the ``log_dir`` of each server that sets none (``--log-dir``).
    :param start_timeout: the ``start_timeout`` of each server that sets none
        (``--start-timeout``).
    :param host: the ``host`` of each server that sets none (``--host``).
    :raises UsageError: the file cannot be read, parsed or validated (the message names the
        server concerned).
    """
    return read_config(path, log_dir, start_timeout, host)[0]


def read_config(
    path: Path,
    log_dir: Path | None = None,
    start_timeout: float | None = None,
    host: str | None = None,
) -> tuple[list[MockServerConfig], Advice]:
    """:func:`load_config`, with the :class:`Advice` for errors about its servers: a server
    that sets no ``start_timeout`` (no ``host``) takes ``--start-timeout``'s (``--host``'s),
    so that option is named."""
    from pydantic import ValidationError

    from mocksup.harness import MockServerConfig

    tomllib = toml()
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
    options: dict[tuple[str, str], str] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{path}: server {entry.get('name', number)!r}"
        unknown = sorted(set(entry) - {"name", "server_class", "init_kwargs"})
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}")
        kwargs = {k: _endpoint(v) for k, v in dict(entry.get("init_kwargs", {})).items()}
        if log_dir is not None:
            kwargs.setdefault("log_dir", str(log_dir))
        timeout_option = "start_timeout" not in kwargs
        if timeout_option and start_timeout is not None:
            kwargs["start_timeout"] = start_timeout
        host_option = host is not None and "host" not in kwargs
        if host_option:
            kwargs["host"] = host
        try:
            config = MockServerConfig(
                name=entry.get("name", ""),
                server_class=_import_class(str(entry.get("server_class", "")), where),
                init_kwargs=kwargs,
            )
        except ValidationError as error:
            raise UsageError(f"{where}: {_describe(error)}") from None
        configs.append(config)
        if timeout_option:
            options[(config.name, "start_timeout")] = "--start-timeout"
        if host_option:
            options[(config.name, "host")] = "--host"
    how = Advice(options, config=str(path))
    check_configs(configs, how)
    return configs, how


def _endpoint(value: Any) -> Any:
    """``{endpoint = "otlp:otlp_grpc"}`` in the file: another server's endpoint."""
    if isinstance(value, dict) and set(value) == {"endpoint"}:
        from mocksup.harness import Endpoint

        server, _, role = str(value["endpoint"]).partition(":")
        return Endpoint(server, role)
    return value


def _import_class(spec: str, where: str) -> type[MockServerBase]:
    from mocksup.base import MockServerBase

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
