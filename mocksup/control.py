"""A mock's control API: both doors, the server's routes and the parent's client.

Each mock serves a small JSON API under the reserved prefix :data:`PREFIX` on its own HTTP
port, so a harness in any language can query and steer it; the Python methods of the mocks
are thin clients of that same API (one implementation, two doors).

The server side is a :class:`ControlApp` built from :class:`Route` entries. It gives every
mock the same rules: werkzeug's routing (404 for an unknown route, 405 with ``Allow`` for a
known route and another method), declared query parameters (an unknown or repeated one, or
a bad value, is a 400 naming it and the known ones: a typo never turns a filter into "match
everything"; values are UTF-8 and numbers are plain ASCII decimals, whatever Python's ``int``
and ``float`` would also take), bounded JSON bodies (size and nesting), one long-poll
parameter (``timeout``, seconds, at most :data:`MAX_WAIT`), and errors as
``{"error": "..."}``. ``GET /mocksup`` lists the routes with their parameters and
``GET /mocksup/health`` answers ``{"status": "ok", ...}`` on every mock.

The client side is :class:`ControlClient`; a custom mock's parent-side methods use it
through :attr:`MockServerBase.control <mocksup.MockServerBase.control>`::

    class MyMock(MockServerBase):
        def hits(self) -> int:
            return self.control.call("GET", "/hits")["hits"]
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from mocksup._control_input import (
    INTEGER,
    NUMBER,
    InputError,
    json_body,
    query_pairs,
    shown,
    wsgi_text,
)
from mocksup.errors import ControlAPIError
from mocksup.serving import BodyError, read_body, status_line

__all__ = (
    "CHECK_GRACE",
    "MAX_BODY",
    "MAX_DEPTH",
    "MAX_WAIT",
    "PREFIX",
    "ControlApp",
    "ControlClient",
    "ControlError",
    "ControlRequest",
    "Handler",
    "Param",
    "Raw",
    "Route",
    "dumps",
)

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

#: Every control route of every mock lives under this path; no real API uses it.
PREFIX = "/mocksup"
#: The longest a long poll (a ``timeout`` parameter) may hold a request, in seconds.
MAX_WAIT = 600.0
#: The largest control request body accepted, in bytes.
MAX_BODY = 1 << 20
#: The deepest a control request body may nest objects and arrays: deeper, it is a 400
#: (whatever the stack of the thread that would encode it back, or validate it, has left).
MAX_DEPTH = 64
#: Seconds a failed call gives a mock whose connection broke to be seen exiting.
CHECK_GRACE = 0.5

_JSON = "application/json"


class ControlError(Exception):
    """Raised by a route handler (or the framework) to answer ``status`` with ``message``."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


# -- parameters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A declared query parameter: its parser, and what the route's index says of it.

    Build them with the class methods; ``many`` parameters may repeat and arrive as a list.
    ``kind`` says what the value is (``text``, ``choice``, ``integer``, ``number``, ``flag``,
    ``wait``; ``custom`` for a parser of your own), for tools that generate requests.
    """

    parse: Callable[[str, str], Any]
    doc: str
    many: bool = False
    default: Any = None
    kind: str = "custom"

    @classmethod
    def text(cls, doc: str = "text", *, default: str | None = None, max_len: int = 4096) -> Param:
        def parse(name: str, raw: str) -> str:
            if len(raw) > max_len:
                raise ControlError(400, f"parameter {name!r} is longer than {max_len} characters")
            return raw

        return cls(parse, doc, default=default, kind="text")

    @classmethod
    def texts(cls, doc: str = "text, repeatable", *, max_len: int = 4096) -> Param:
        return cls(cls.text(doc, max_len=max_len).parse, doc, many=True, default=[], kind="text")

    @classmethod
    def choice(cls, *choices: str, default: str | None = None) -> Param:
        def parse(name: str, raw: str) -> str:
            if raw not in choices:
                raise ControlError(400, f"parameter {name!r} must be one of {', '.join(choices)}")
            return raw

        return cls(parse, "one of " + ", ".join(choices), default=default, kind="choice")

    @classmethod
    def integer(
        cls, doc: str = "integer", *, low: int = 0, high: int = 1 << 62, default: int | None = None
    ) -> Param:
        def parse(name: str, raw: str) -> int:
            if not INTEGER.fullmatch(raw):
                raise ControlError(400, f"parameter {name!r} must be an integer: {shown(raw)}")
            # More digits than any bound has: out of range (and int() refuses 4,300 digits).
            value = int(raw) if len(raw) <= 40 else None
            if value is None or not low <= value <= high:
                raise ControlError(400, f"parameter {name!r} must be from {low} to {high}, "
                                   f"not {shown(raw)}")  # fmt: skip
            return value

        return cls(parse, f"{doc}, {low} to {high}", default=default, kind="integer")

    @classmethod
    def number(
        cls,
        doc: str = "number",
        *,
        low: float = 0.0,
        high: float = math.inf,
        default: float | None = None,
    ) -> Param:
        bounds = f"from {low:g} to {high:g}" if math.isfinite(high) else f"of at least {low:g}"

        def parse(name: str, raw: str) -> float:
            if not NUMBER.fullmatch(raw):
                raise ControlError(400, f"parameter {name!r} must be a number: {shown(raw)}")
            value = float(raw)
            if not math.isfinite(value) or not low <= value <= high:
                raise ControlError(400, f"parameter {name!r} must be a finite number {bounds}, "
                                   f"not {shown(raw)}")  # fmt: skip
            return value

        return cls(parse, doc, default=default, kind="number")

    @classmethod
    def flag(cls, doc: str = "true or false", *, default: bool | None = None) -> Param:
        def parse(name: str, raw: str) -> bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", ""):
                raise ControlError(400, f"parameter {name!r} must be true or false: {shown(raw)}")
            return lowered in ("true", "1", "")

        return cls(parse, doc, default=default, kind="flag")

    @classmethod
    def wait(cls, default: float = 10.0) -> Param:
        """The long-poll parameter: seconds to hold the request, at most :data:`MAX_WAIT`."""

        def parse(name: str, raw: str) -> float:
            value = float(raw) if NUMBER.fullmatch(raw) else math.nan
            if math.isfinite(value) and value > MAX_WAIT:
                raise ControlError(400, f"parameter {name!r} is {value:g} s; the longest wait "
                                   f"is {MAX_WAIT:g} s, wait again for longer")  # fmt: skip
            if not (math.isfinite(value) and value >= 0):
                raise ControlError(400, f"parameter {name!r} must be a finite number of seconds "
                                   f"from 0 to {MAX_WAIT:g}, not {shown(raw)}")  # fmt: skip
            return value

        return cls(parse, f"seconds to wait, at most {MAX_WAIT:g}", default=default, kind="wait")


# -- routes and requests ------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A handler's answer that is not JSON: a content type and the body (bytes or chunks)."""

    content_type: str
    body: bytes | Iterable[bytes]
    headers: Sequence[tuple[str, str]] = ()


@dataclass
class ControlRequest:
    """What a route handler gets."""

    method: str
    #: The path after :data:`PREFIX`, e.g. ``/traces/abc``.
    path: str
    #: Path variables of the route (``<trace_id>``).
    values: dict[str, str]
    #: The declared parameters, parsed (defaults filled in).
    args: dict[str, Any]
    #: The decoded JSON body, ``None`` without one.
    body: Any
    environ: dict[str, Any] = field(repr=False)

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, or a 400."""
        if not isinstance(self.body, dict):
            raise ControlError(400, "the body must be a JSON object")
        return self.body


#: A route's handler: it answers a :class:`ControlRequest` with a JSON-able value (sent with
#: 200) or a :class:`Raw` body, or raises :class:`ControlError` for an error answer.
Handler = Callable[[ControlRequest], Any]


@dataclass(frozen=True)
class Route:
    """One control route: a werkzeug rule under :data:`PREFIX` (``"/traces/<trace_id>"``),
    its methods, its handler and its declared query parameters."""

    rule: str
    methods: tuple[str, ...]
    handler: Handler
    params: dict[str, Param] = field(default_factory=dict)
    doc: str = ""


class ControlApp:
    """The WSGI app of a mock's control routes (see the module docstring).

    :param name: the mock's name, in ``/mocksup/health``.
    :param kind: the mock's class name, likewise.
    :param info: more keys for ``/mocksup/health`` (ports, version), read at each call.
    """

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        name: str = "mock",
        kind: str = "",
        info: Callable[[], dict[str, Any]] | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        from werkzeug.routing import Map, Rule

        self.name = name
        self.kind = kind
        self.info = info
        self.max_body = max_body
        builtin = [
            Route("", ("GET",), self._index, doc="the control routes and their parameters"),
            Route("/health", ("GET",), self._health, doc="liveness, name and class"),
        ]
        self.routes = [*builtin, *routes]
        rules = [
            Rule(PREFIX + r.rule, methods=list(r.methods), endpoint=i, strict_slashes=False)
            for i, r in enumerate(self.routes)
        ]
        # No slash merging: werkzeug answers "//" with a redirect, which is no JSON answer.
        self._map = Map(rules, merge_slashes=False).bind("localhost")

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = wsgi_text(environ.get("PATH_INFO") or "")
        try:
            route, values = self._match(path, method)
            request = ControlRequest(
                method=method,
                path=path[len(PREFIX) :],
                values=values,
                args=_parse_args(route, environ.get("QUERY_STRING", ""), method, path),
                body=self._body(environ) if method in ("POST", "PUT", "PATCH") else None,
                environ=environ,
            )
            answer = route.handler(request)
        except ControlError as error:
            return _send(start_response, error.status, {"error": error.message}, error.headers)
        if isinstance(answer, Raw):
            body = answer.body
            headers = [("Content-Type", answer.content_type), *answer.headers]
            if isinstance(body, bytes):
                headers.append(("Content-Length", str(len(body))))
                start_response(status_line(200), headers)
                return [body]
            start_response(status_line(200), headers)
            return body
        return _send(start_response, 200, answer)

    def _match(self, path: str, method: str) -> tuple[Route, dict[str, str]]:
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        try:
            index, values = self._map.match(path, method)
        except MethodNotAllowed as error:
            allowed = sorted(set(error.valid_methods or ()) - {"HEAD"})
            raise ControlError(
                405,
                f"{method} is not allowed on {path}; use {', '.join(allowed)}",
                [("Allow", ", ".join(allowed))],
            ) from None
        except NotFound:
            raise ControlError(
                404, f"no control route {method} {path}; GET {PREFIX} lists them"
            ) from None
        return self.routes[index], {k: str(v) for k, v in values.items()}

    def _body(self, environ: dict[str, Any]) -> Any:
        try:
            raw = read_body(environ, self.max_body)
        except BodyError as error:
            raise ControlError(error.status, error.message) from None
        if not raw.strip():
            return None
        try:
            return json_body(raw, MAX_DEPTH)
        except InputError as error:
            raise ControlError(400, str(error)) from None

    def _index(self, request: ControlRequest) -> Any:
        return {
            "name": self.name,
            "class": self.kind,
            "routes": [
                {
                    "path": PREFIX + r.rule,
                    "methods": list(r.methods),
                    "params": {n: p.doc for n, p in r.params.items()},
                    "doc": r.doc,
                }
                for r in self.routes
            ],
        }

    def _health(self, request: ControlRequest) -> Any:
        return {
            "status": "ok",
            "name": self.name,
            "class": self.kind,
            **(self.info() if self.info else {}),
        }


def _parse_args(route: Route, query: str, method: str, path: str) -> dict[str, Any]:
    try:
        pairs = query_pairs(query)
    except InputError as error:
        raise ControlError(400, str(error)) from None
    args: dict[str, Any] = {}
    for name, raw in pairs:
        param = route.params.get(name)
        if param is None:
            known = ", ".join(sorted(route.params)) or "none"
            raise ControlError(
                400, f"unknown parameter {shown(name)} for {method} {path}; known: {known}"
            )
        value = param.parse(name, raw)
        if param.many:
            args.setdefault(name, []).append(value)
        elif name in args:
            raise ControlError(400, f"parameter {name!r} is given more than once")
        else:
            args[name] = value
    for name, param in route.params.items():
        if name not in args:
            args[name] = list(param.default) if param.many else param.default
    return args


def dumps(value: Any) -> bytes:
    """JSON for a control answer; a NaN or infinity is refused (strict parsers choke on it)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def _send(
    start_response: Callable[..., Any],
    status: int,
    answer: Any,
    headers: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    try:
        body = dumps(answer)
    except ValueError as error:  # a non-finite number: a bug of the mock, said plainly
        status, body = 500, dumps({"error": f"the answer cannot be encoded as JSON: {error}"})
    start_response(
        status_line(status),
        [("Content-Type", _JSON), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


# -- the client -------------------------------------------------------------------------


class ControlClient:
    """Calls one mock's control API (one connection per call, from any thread).

    :param base_url: the mock's HTTP root, such as ``http://127.0.0.1:4318``.
    :param server: the mock's name, for error messages.
    :param timeout: seconds to wait for an answer beyond any server-side wait.
    :param check: ``check(grace)``, called before each call (``grace`` 0) and when one gets
        no answer (``grace`` :data:`CHECK_GRACE`, for a mock caught exiting); raises the
        error that says why the mock cannot answer (:meth:`mocksup.MockServerBase.check_running`:
        it crashed, with its exit code and output; it is suspended), so a call fails at
        once with the cause instead of waiting out its timeout.
    """

    def __init__(
        self,
        base_url: str,
        server: str,
        timeout: float = 10.0,
        *,
        check: Callable[[float], None] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.base_url = base_url.rstrip("/")
        self.server = server
        self.timeout = timeout
        self.check = check

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        wait: float = 0.0,
    ) -> Any:
        """Send one request to ``PREFIX + path`` and return the decoded JSON answer.

        :param params: query parameters; ``None`` values are left out, lists repeat the key.
        :param body: a JSON-able request body.
        :param wait: seconds the server may hold the request (long polls); added to the
            socket timeout.
        :raises ControlAPIError: the mock could not be reached or answered an error.
        """
        _, payload = self.fetch(method, path, params=params, body=body, wait=wait)
        return json.loads(payload) if payload else None

    def fetch(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        wait: float = 0.0,
    ) -> tuple[str, bytes]:
        """Like :meth:`call`, but return the answer undecoded: ``(content type, body)``."""
        target = PREFIX + path
        query = _query(params or {})
        if query:
            target += "?" + query
        url = self.base_url + target
        data = None if body is None else dumps(body)
        headers = {"Content-Type": _JSON} if data is not None else {}
        if self.check is not None:
            self.check(0.0)
        # Imported by the client only: a mock serving its routes never pays for it (nor for
        # the ssl and email modules it loads).
        import http.client

        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout + wait)
        try:
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            if self.check is not None:
                self.check(CHECK_GRACE)  # the cause, when the mock itself is the trouble
            reason = "timed out" if isinstance(error, socket.timeout) else str(error)
            raise ControlAPIError(
                f"mock server {self.server!r} did not answer {method} {url} ({reason})",
                server=self.server,
                url=url,
            ) from error
        finally:
            conn.close()
        if response.status >= 400:
            raise ControlAPIError(
                f"mock server {self.server!r} answered {response.status} to {method} {url}: "
                f"{_error_detail(payload)}",
                server=self.server,
                status=response.status,
                url=url,
            )
        return response.getheader("Content-Type") or "", payload


def _query(params: dict[str, Any]) -> str:
    pairs: list[tuple[str, Any]] = []
    for key, value in params.items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, "true" if item is True else "false" if item is False else item))
    return urlencode(pairs)


def _error_detail(payload: bytes) -> str:
    try:
        decoded = json.loads(payload)
    except ValueError:
        return repr(payload[:200])
    detail = decoded.get("error", decoded) if isinstance(decoded, dict) else decoded
    return str(detail)
