"""The ``mocksup`` command's entry point: ``up`` launches its collector's child first of all.

The command's own imports (its subcommands, then pydantic and the harness) take longer than
the child of the collector takes to import what it serves, so ``mocksup up`` launches that
child before it imports the command: the two import side by side. Which servers ``up``
starts is for its parser to say, once imported; here the arguments are only read as given,
for the plain case: ``up`` with the collector among ``--servers`` (or ``$MOCKSUP_SERVERS``,
or the default), without ``--config`` (or ``$MOCKSUP_CONFIG``) or ``--help``. A guess the
parser contradicts (an abbreviated option, say) costs a child launched for nothing, which
the start ends when it is done; the start launches the children the guess missed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence

__all__ = ("DEFAULT_MODULES", "collector_wanted", "main", "server_names")

#: What the child of each default server imports before it waits for its server. The
#: collector comes as plain settings (no pydantic): its gRPC side, all it needs to serve
#: OTLP/gRPC (a test holds the list to be complete); it builds its HTTP side once gRPC
#: serves. Not before: an import under way cannot be cut short, and the server, sent soon
#: after this list is done, waited for the HTTP side's imports (up to 30 ms). The vLLM
#: mock comes as its model (pydantic, ``mocksup.base``).
DEFAULT_MODULES = {
    "otlp": [
        "mocksup.otlp._serve",
        "mocksup.serving",
        "mocksup.otlp._grpc",
        "mocksup._h2.server",
        "encodings.idna",
    ],
    "vllm": ["mocksup.base", "mocksup.vllm"],
}


def main() -> int:
    """The ``mocksup`` command (:func:`mocksup.cli.main`), the collector's child of ``up``
    launched before it is imported."""
    if collector_wanted(sys.argv[1:], os.environ):
        from mocksup import _launch

        # A launch that fails here is tried again by the start, which reports it.
        with contextlib.suppress(OSError):
            _launch.prestarted.launch(DEFAULT_MODULES["otlp"])
    from mocksup.cli import main as command

    return command()


def collector_wanted(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether ``argv`` is ``up`` starting the default collector, read as given."""
    if argv[:1] != ["up"] or "MOCKSUP_CONFIG" in environ:
        return False
    servers = environ.get("MOCKSUP_SERVERS", "otlp,vllm")
    for index, arg in enumerate(argv[1:], start=1):
        if arg in ("-h", "--help") or arg.startswith("--config"):
            return False
        if arg == "--servers":
            if index + 1 == len(argv):
                return False
            servers = argv[index + 1]
        elif arg.startswith("--servers="):
            servers = arg.partition("=")[2]
    return "otlp" in server_names(servers)


def server_names(text: str) -> list[str]:
    """The names ``--servers`` (or ``$MOCKSUP_SERVERS``) lists: comma-separated, blanks
    around and between them ignored."""
    return [name for name in map(str.strip, text.split(",")) if name]
