"""CORS for the OTLP/HTTP receiver, as the Collector's ``cors:`` settings configure it.

The Collector hands its settings to rs/cors (v1.11) with ``AllowCredentials`` on and the
default methods (GET, POST, HEAD); this module answers the same way: a preflight (``OPTIONS``
with ``Access-Control-Request-Method``) gets 204 and, when the origin, method and requested
headers are allowed, the ``Access-Control-Allow-*`` headers; any other request from an allowed
origin gets ``Access-Control-Allow-Origin`` (the origin itself, or ``*`` when ``*`` is
allowed), ``Access-Control-Allow-Credentials: true`` and the exposed headers. ``Vary`` is
always set. With credentials on, browsers refuse ``*``: allow ``http://*`` or a list instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ("CORSPolicy",)

_METHODS = ("GET", "POST", "HEAD")
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
#: rs/cors tolerates this many empty elements in Access-Control-Request-Headers.
_MAX_EMPTY = 16


@dataclass(frozen=True)
class CORSPolicy:
    """The CORS answers of one receiver (built from :class:`~mocksup.otlp.CORSConfig`)."""

    allowed_origins: Sequence[str]
    allowed_headers: Sequence[str] = ()
    exposed_headers: Sequence[str] = ()
    max_age: int = 0
    _exact: frozenset[str] = field(init=False, repr=False)
    _wild: tuple[tuple[str, str], ...] = field(init=False, repr=False)
    _any_origin: bool = field(init=False, repr=False)
    _headers: tuple[str, ...] = field(init=False, repr=False)
    _any_header: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        origins = [o.lower() for o in self.allowed_origins]
        wild = tuple((o[: o.index("*")], o[o.index("*") + 1 :]) for o in origins if "*" in o)
        set_ = object.__setattr__
        set_(self, "_any_origin", "*" in origins)
        set_(self, "_exact", frozenset(o for o in origins if "*" not in o))
        set_(self, "_wild", wild)
        headers = [h.lower() for h in self.allowed_headers] or [
            "accept",
            "content-type",
            "x-requested-with",
        ]
        set_(self, "_any_header", "*" in self.allowed_headers)
        set_(self, "_headers", tuple(sorted(set(headers))))

    def origin_allowed(self, origin: str) -> bool:
        """Whether requests from ``origin`` are allowed (wildcards match any text)."""
        if self._any_origin:
            return True
        origin = origin.lower()
        return origin in self._exact or any(
            len(origin) >= len(p) + len(s) and origin.startswith(p) and origin.endswith(s)
            for p, s in self._wild
        )

    def is_preflight(self, environ: dict[str, str]) -> bool:
        """Whether the request is a preflight (answered here, never by the receiver)."""
        return environ.get("REQUEST_METHOD") == "OPTIONS" and bool(
            environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
        )

    def preflight(self, environ: dict[str, str]) -> list[tuple[str, str]]:
        """The headers of the 204 answer to a preflight."""
        headers = [("Vary", _PREFLIGHT_VARY)]
        origin = environ.get("HTTP_ORIGIN", "")
        method = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD", "")
        requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
        if not origin or not self.origin_allowed(origin):
            return headers
        if method not in _METHODS and method != "OPTIONS":
            return headers
        if requested is not None and not self._any_header and not self._accepts(requested):
            return headers
        headers.append(("Access-Control-Allow-Origin", "*" if self._any_origin else origin))
        headers.append(("Access-Control-Allow-Methods", method))
        if requested:
            headers.append(("Access-Control-Allow-Headers", requested))
        headers.append(("Access-Control-Allow-Credentials", "true"))
        if self.max_age > 0:
            headers.append(("Access-Control-Max-Age", str(self.max_age)))
        elif self.max_age < 0:
            headers.append(("Access-Control-Max-Age", "0"))
        return headers

    def actual(self, environ: dict[str, str]) -> list[tuple[str, str]]:
        """The CORS headers of any other answer."""
        headers = [("Vary", "Origin")]
        origin = environ.get("HTTP_ORIGIN", "")
        method = environ.get("REQUEST_METHOD", "")
        if not origin or not self.origin_allowed(origin):
            return headers
        if method not in _METHODS and method != "OPTIONS":
            return headers
        headers.append(("Access-Control-Allow-Origin", "*" if self._any_origin else origin))
        if self.exposed_headers:
            names = ", ".join(
                "-".join(p.capitalize() for p in h.split("-")) for h in self.exposed_headers
            )
            headers.append(("Access-Control-Expose-Headers", names))
        headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def _accepts(self, requested: str) -> bool:
        # As rs/cors: lower-case names, sorted, unique, all allowed (browsers send them so).
        last = -1
        empty = 0
        for part in requested.split(","):
            name = part.strip(" \t")
            if not name:
                empty += 1
                if empty > _MAX_EMPTY:
                    return False
                continue
            if name not in self._headers:
                return False
            position = self._headers.index(name)
            if position <= last:
                return False
            last = position
        return True
