"""Every limit the collector enforces, in one place, and the checks that need no parsing.

A limit answers the client (with a message naming the setting) and never costs the collector
its memory: the body limit applies to the body as sent and while inflating it; the structure
limit bounds what one request may make the child allocate, counted before anything is built
(JSON here, protobuf in ``_proto``); request records keep bounded text; the store has a byte
budget (``_store``). The defaults and what a client gets past each are in ``docs/otlp.rst``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mocksup.otlp._modes import Mode

__all__ = (
    "MAX_PENDING_FAULTS",
    "RECORD_TEXT",
    "LimitError",
    "Limits",
    "bounded",
    "bounded_headers",
    "check_json_size",
)

#: The most faults pending at once (``mocksup.otlp.faults.MAX_PENDING``): far more than any
#: script of answers needs, and a bound on what a harness that adds faults in a loop (and
#: never clears them) makes the collector keep and scan on every export.
MAX_PENDING_FAULTS = 10_000
#: The longest text a request record keeps of one header value, path or error message.
RECORD_TEXT = 1024
#: The most header bytes a request record keeps in all (names and values).
_RECORD_HEADERS = 8 * 1024


class LimitError(Exception):
    """A request over a limit; ``setting`` names the collector setting that bounds it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting
        self.message = message


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one collector, resolved from its settings and its mode."""

    mode: Mode
    max_body_size: int
    grpc_max_message: int
    max_request_objects: int
    max_stored_bytes: int | None
    max_items: int | None
    max_requests: int

    def too_large(self, what: str = "the request body") -> LimitError:
        """The error for a body past ``max_body_size`` (as sent or inflated)."""
        if self.mode.oversize_status == 400:
            # Go's MaxBytesReader says just this; the setting is named for people.
            text = f"http: request body too large (max_body_size {self.max_body_size} bytes)"
        else:
            text = f"{what} exceeds max_body_size ({self.max_body_size} bytes)"
        return LimitError("max_body_size", text)

    def too_complex(self, count: int, what: str) -> LimitError:
        """The error for a request past ``max_request_objects``."""
        return LimitError(
            "max_request_objects",
            f"the request holds more than {self.max_request_objects:,} {what} "
            f"(max_request_objects; counted {count:,} so far)",
        )


def check_json_size(data: bytes, limits: Limits) -> None:
    """Refuse an OTLP/JSON body that would build more objects and arrays than allowed.

    Python's JSON decoder spends about 70 bytes on an empty object and this collector's
    conversion about 300 more, so a 20 MiB body of ``{}`` would take 2 GiB. Each ``{`` or
    ``[`` (also inside strings: a safe overestimate) counts; a body of fewer bytes than twice
    the limit cannot hold that many, so the usual body is not even scanned.

    :raises LimitError: over ``max_request_objects``.
    """
    limit = limits.max_request_objects
    if len(data) <= 2 * limit:
        return
    count = data.count(b"{") + data.count(b"[")
    if count > limit:
        raise limits.too_complex(count, "JSON objects and arrays")


def bounded(text: str, limit: int = RECORD_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def bounded_headers(headers: dict[str, str]) -> dict[str, str]:
    """Request headers as a record keeps them: each value bounded, about 8 KiB in all.

    A client may send up to the HTTP server's header limit on every request; records of
    10,000 requests must not keep that many times over.
    """
    if (
        sum(map(len, headers.values())) + sum(map(len, headers)) <= _RECORD_HEADERS
        and max(map(len, headers.values()), default=0) <= RECORD_TEXT
    ):
        return headers  # the usual request: nothing to cut (two passes in C)
    out: dict[str, str] = {}
    room = _RECORD_HEADERS
    for name, value in headers.items():
        text = bounded(str(value), min(RECORD_TEXT, max(room, 0)))
        room -= len(name) + len(text)
        if room < 0:
            out["..."] = f"{len(headers) - len(out)} more header(s) not kept"
            break
        out[bounded(name, 128)] = text
    return out
