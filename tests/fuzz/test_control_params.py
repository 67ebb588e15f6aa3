"""Fuzz the control API of every mock that has one: each route, with damaged query
parameters, path variables, JSON bodies and methods.

The routes come from the mock's own route table (a new route or parameter is fuzzed with no
change here), checked against what the child serves at ``GET /mocksup``. Each case damages
one thing: a parameter's value (wrong type, NaN, infinities, 1e308, negative and huge
integers, empty and very long strings, lone surrogates, invalid percent-encoding and UTF-8),
a parameter repeated or unknown, a path variable, the body (not JSON, not an object, NaN,
1e400, deep nesting, too large, odd values in a valid one) or the method. The answer must
be a 400 whose ``{"error": ...}`` names the parameter when the value is wrong for its kind
(404, 405 with ``Allow``, 413 where those apply), never a 5xx, and a long poll with a bad
``timeout`` must be refused at once. Between cases the mock is fed (a span, a request), and
after each batch: the child is alive, its RSS bounded, every GET route still answers, and
everything it was fed since the last accepted clear is still there.

Random cases: :data:`OTLP_CASES` and :data:`VLLM_CASES` against the two mocks, and
:data:`FRAMEWORK_CASES` against a ``ControlApp`` with a parameter of every kind and known
bounds, served in-process, where each accepted value must also arrive as exactly what it
says. Before them, fixed cases whatever the seed (every parameter with :data:`EVERY_PARAM`,
each long poll with :data:`BAD_WAITS` too, every body route with :data:`FIXED_BODIES`, every
route with a method it does not take): 2,572 cases in all (1,424 collector, 669 vLLM, 479
framework), about 4 s on a 2-core machine.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
import unittest
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from mocksup.control import MAX_BODY, MAX_DEPTH, MAX_WAIT, PREFIX, ControlApp, Param, Route
from mocksup.otlp import MockOTLPCollector
from mocksup.serving import bind_tcp, serve_wsgi
from mocksup.vllm import MockVLLMServer
from tests.fuzz.support import Answer, Checks, Exchange, rng_for, send_raw
from tests.support import ProcessTestCase

OTLP_CASES = 700
VLLM_CASES = 600
FRAMEWORK_CASES = 400
BATCH = 100
#: The mock is fed (a span, a journaled request) every this many cases.
FEED = 10
#: Seconds within which a long poll with a bad ``timeout`` must be refused.
QUICK = 2.0

REFUSE, ACCEPT, EITHER = "refuse", "accept", "either"

# -- damage -------------------------------------------------------------------------------

_TEXTS = [
    "", "0", "1", "7", "-1", "-0", "+5", "0.5", ".5", "5.", "1e3", "1e-300", "1e308",
    "-1e308", "1e5000", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "infinity", "1_0",
    " 1", "1 ", "0x10", "0b1", "1,5", "\u0663", "\u00b2", str(2**31), str(2**62),
    str(2**62 + 1), str(2**63), str(-(2**63) - 1), "9" * 40, "9" * 400, "600", "600.0",
    "600.000001", "601", "true", "false", "TRUE", "yes", "abc", "null", "[]", "{}", '"x"',
    "a=b", "a&b", "a+b", "#", "\x00", "\t", "\u00e9", "caf\u00e9", "\U0001f600", "\u202e",
    "a" * 4096, "a" * 4097, "a" * 5000, "json", "protobuf", "otlp-json", "traces", "logs",
    "http", "grpc", "SERVER", "ERROR", "0123456789abcdef0123456789abcdef", "0123456789abcdef",
    "zz" * 16, "/tokenize", "http/protobuf", "k=v", "k=1e999", "k=[[[[1]]]]",
]  # fmt: skip
#: Query values as sent, and as the server must read them (``None``: not UTF-8).
VALUES: list[tuple[bytes, str | None]] = [
    *((quote(t, safe="").encode(), t) for t in _TEXTS),
    *((t.encode(), t) for t in ("caf\u00e9", "\U0001f600", "\u0663")),  # raw UTF-8, as curl
    (b"%ff", None), (b"%E9", None), (b"%ED%A0%80", None), (b"%ED%B2%80", None),
    (b"%C0%AF", None), (b"%F4%90%80%80", None), (b"\xff", None), (b"caf\xe9", None),
    (b"%", "%"), (b"%zz", "%zz"), (b"%4", "%4"), (b"%%41", "%A"), (b"+", " "), (b"a+b", "a b"),
]  # fmt: skip
#: Names no route declares, as sent and as read.
UNKNOWN_NAMES: list[tuple[bytes, str | None]] = [
    (b"nmae", "nmae"), (b"Timeout", "Timeout"), (b"TIMEOUT", "TIMEOUT"),
    (b"timeout%20", "timeout "), (b"x", "x"), (b"", ""), (b"a" * 100, "a" * 100),
    (b"%ff", None), (b"caf%C3%A9", "caf\u00e9"), (b"attr%5B%5D", "attr[]"), (b"wait", "wait"),
    (b"limit", "limit"), (b"signal", "signal"), (b"count", "count"), (b"path", "path"),
]  # fmt: skip
#: Methods sent to routes that do not take them.
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + b"1" + closer * depth


#: Bodies for any route that reads one, with what the framework must make of them.
BODIES: list[tuple[bytes, str]] = [
    (b"", EITHER), (b"  \r\n", EITHER), (b"{}", EITHER), (b"[]", EITHER), (b"null", EITHER),
    (b"0", EITHER), (b"-1", EITHER), (b'"x"', EITHER), (b'"\\udc80"', EITHER),
    (b'{"\\ud800": "\\udfff"}', EITHER), (b'{"x": 1}', EITHER), (b"[1, 2]", EITHER),
    (b"123456789012345678901234567890", EITHER), (nested(MAX_DEPTH - 1), EITHER),
    (b"not json", REFUSE), (b"{", REFUSE), (b'{"a": 1', REFUSE), (b"\xff\xfe\xfd", REFUSE),
    (b"\x00", REFUSE), (b'{"a": NaN}', REFUSE), (b"[Infinity]", REFUSE),
    (b'{"a": -Infinity}', REFUSE), (b"1e400", REFUSE), (b'{"a": -1e400}', REFUSE),
    (b"[1,]", REFUSE), (b"{'a': 1}", REFUSE), (b'{"a": 1} x', REFUSE),
    (b'{"a": 1}{"b": 2}', REFUSE), (b"1" * 5000, REFUSE), (nested(MAX_DEPTH + 1), REFUSE),
    (nested(5000), REFUSE), (nested(100_000), REFUSE), (nested(5000, b'{"a":', b"}"), REFUSE),
    (b'"' + b"a" * MAX_BODY + b'"', "413"),
]  # fmt: skip
#: Bodies every body route gets, whatever the seed.
FIXED_BODIES = [
    (b"not json", REFUSE), (b'{"a": NaN}', REFUSE), (b"[1e400]", REFUSE),
    (nested(MAX_DEPTH + 1, b'{"a":', b"}"), REFUSE),
    (b"[" + b"1," * (MAX_BODY // 2) + b"1]", "413"),
]  # fmt: skip
#: Values every parameter gets, whatever the seed (as sent, as read).
EVERY_PARAM: list[tuple[bytes, str | None]] = [
    (quote(text).encode(), text)
    for text in ("nan", "inf", "-1", "1e308", str(2**62), "", "a" * 5000)
] + [(b"%ff", None)]
#: Long-poll timeouts every wait parameter gets besides.
BAD_WAITS = ["NaN", "-inf", "601", "1e5000", "abc", "1_0"]
#: JSON values put into a valid body in place of one of its values.
ODD_JSON = [
    "null", "true", "false", "0", "-1", "1.5", "-0.0", "1e308", "-1e308", "2", "3600",
    "3601", "123456789012345678901234567890", "9223372036854775808", "-9223372036854775809",
    '""', '"x"', '"\\udc80"', '"\\u0000"', '"' + "a" * 5000 + '"', "[]", "{}", "[1]",
    '[{"a": []}]', '{"a": {"b": {}}}', '"rate_limit"', '"(a+)+$"', '"http://127.0.0.1:1"',
    '"UNAVAILABLE"', nested(MAX_DEPTH - 4).decode(),
]  # fmt: skip
#: Odd JSON values the framework must refuse wherever they are.
REFUSED_JSON = ["NaN", "Infinity", "-Infinity", "1e400", nested(MAX_DEPTH + 1).decode()]


def damaged_body(rng: random.Random, template: dict[str, Any]) -> tuple[bytes, str]:
    """``template`` with a value (at any depth) replaced by an odd one, a key removed, or
    an unknown key added; and what the framework must make of it."""
    doc = json.loads(json.dumps(template))
    parent: Any = doc
    key: Any = rng.choice(list(doc))
    while isinstance(parent[key], (dict, list)) and parent[key] and rng.random() < 0.6:
        parent = parent[key]
        key = rng.choice(list(parent)) if isinstance(parent, dict) else rng.randrange(len(parent))
    choice = rng.randrange(4)
    if choice == 0:
        doc[rng.choice(["extra", "typo", "url", "rules", "count"])] = "__ODD__"
    elif choice == 1 and isinstance(parent, dict):
        del parent[key]
        return json.dumps(doc).encode(), EITHER
    else:
        parent[key] = "__ODD__"
    odd = rng.choice(ODD_JSON + REFUSED_JSON if rng.random() < 0.2 else ODD_JSON)
    text = json.dumps(doc).replace('"__ODD__"', odd)
    return text.encode(), REFUSE if odd in REFUSED_JSON else EITHER


# -- what a value must get ----------------------------------------------------------------


def _decimal(text: str) -> float | None:
    """The number a client in any language means by ``text``, if it is a finite one."""
    if not text or set(text) - set("0123456789+-.eE"):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _whole(text: str) -> int | None:
    if not text or set(text) - set("0123456789+-"):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def verdict(param: Param, value: str | None) -> str:
    """What the mocks' parameters must do with ``value``: refuse it, accept it, or either
    (a route may still refuse a well-typed value, such as a trace id of the wrong length).

    Every integer parameter of the mocks is at least 0 and at most 2**62, and every text
    one at most 4096 characters long: values past those are refused whatever the route.
    """
    if value is None:
        return REFUSE
    if param.kind == "wait":
        number = _decimal(value)
        return ACCEPT if number is not None and 0 <= number <= MAX_WAIT else REFUSE
    if param.kind == "number":
        return EITHER if _decimal(value) is not None else REFUSE
    if param.kind == "integer":
        whole = _whole(value)
        return EITHER if whole is not None and 0 <= whole <= 1 << 62 else REFUSE
    if param.kind == "flag":
        return ACCEPT if value.lower() in ("true", "false", "1", "0", "") else REFUSE
    if param.kind == "text" and len(value) > 4096:
        return REFUSE
    return EITHER


def names(message: str, name: str | None) -> bool:
    """Whether an error message names the parameter (a name that is not UTF-8 cannot be
    named: the message must say so)."""
    if name is None:
        return "UTF-8" in message
    if not name:
        return "''" in message
    return re.search(rf"(?<![\w]){re.escape(name[:40])}", message) is not None


# -- cases --------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """One route of a control table with one of its methods."""

    rule: str
    method: str
    params: dict[str, Param]
    route_methods: frozenset[str]


def endpoints(app: ControlApp) -> list[Endpoint]:
    by_rule: dict[str, set[str]] = {}
    for route in app.routes:
        by_rule.setdefault(route.rule, set()).update(route.methods)
    return [
        Endpoint(PREFIX + route.rule, method, route.params, frozenset(by_rule[route.rule]))
        for route in app.routes
        for method in route.methods
    ]


@dataclass
class Case:
    endpoint: Endpoint | None
    method: str
    target: bytes
    body: bytes | None = None
    expect: str = EITHER
    statuses: frozenset[int] = frozenset({200, 400})
    named: tuple[str | None, ...] = ()
    #: The one damaged parameter's value as the server must read it.
    value: str | None = None
    quick: bool = False
    #: The methods a 405 must list in ``Allow`` (``None``: not known, but listed).
    allow: frozenset[str] | None = None
    what: str = ""

    def describe(self) -> str:
        body = "" if self.body is None else f" body {self.body[:120]!r}"
        return f"{self.what}: {self.method} {self.target[:200]!r}{body}"


def _query(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"&".join(name + b"=" + value for name, value in pairs)


def _fill(rule: str, values: dict[str, bytes]) -> bytes:
    return re.sub(
        rb"<(?:[^:>]+:)?([^>]+)>", lambda m: values.get(m.group(1).decode(), b"x"), rule.encode()
    )


if TYPE_CHECKING:
    _TestCaseBase = unittest.TestCase
else:
    _TestCaseBase = object  # a mixin in front of a TestCase; mypy checks it as one


class ControlFuzz(_TestCaseBase):
    """The fuzzing loop over one mock's control API; subclasses say how to feed the mock,
    what it must still hold, and the valid bodies and path values of its routes."""

    name: ClassVar[str]
    cases: ClassVar[int]
    host: ClassVar[str]
    port: ClassVar[int]
    pid: ClassVar[int]
    table: ClassVar[ControlApp]
    #: (method, rule) → a valid body, damaged by body cases.
    templates: ClassVar[dict[tuple[str, str], Any]] = {}
    #: Path variable → a valid value.
    path_values: ClassVar[dict[str, bytes]] = {}
    #: (method, rule) of the routes that forget what the mock was fed.
    clearing: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    allowed_5xx: ClassVar[frozenset[int]] = frozenset()
    #: Whether the mock records what it is fed (:meth:`feed`, :meth:`kept`).
    holds_data: ClassVar[bool] = True

    def extra_statuses(self, endpoint: Endpoint) -> frozenset[int]:
        return frozenset({404}) if "<" in endpoint.rule else frozenset()

    def feed(self, number: int) -> None:
        """Give the mock something to keep."""

    def kept(self) -> int:
        """Assert the mock still holds everything fed since the last clear; return how many."""
        return 0

    def cleared(self) -> None:
        """A clearing route accepted: what was fed before is gone."""

    def restore(self) -> None:
        """Undo settings the fuzz changed (faults, latency), before the checks."""

    def verdict(self, name: str, param: Param, value: str | None) -> str:
        return verdict(param, value)

    def check_accepted(self, case: Case, answer: Answer) -> None:
        """More checks of an answer that accepted the case's parameter."""

    # -- the loop -------------------------------------------------------------------------

    def run_fuzz(self) -> None:
        rng = rng_for(f"control-{self.name}")
        self.checks = Checks(self, self.pid, self.allowed_5xx)
        self.assert_table_is_served()
        all_endpoints = endpoints(self.table)
        makers = self.makers(rng, all_endpoints)
        hits: set[tuple[str, str]] = set()
        damaged: set[tuple[str, str, str]] = set()
        most_kept = 0
        self.feed(0)
        for case in self.fixed_cases(all_endpoints):
            self.run_case(case)
        for number in range(self.cases):
            case = next(makers)
            answer = self.run_case(case)
            if case.endpoint is not None:
                hits.add((case.endpoint.method, case.endpoint.rule))
                if case.named and case.named[0] in case.endpoint.params:
                    damaged.add((case.endpoint.method, case.endpoint.rule, str(case.named[0])))
                if (case.method, case.endpoint.rule) in self.clearing and answer.status == 200:
                    self.cleared()
            if number % FEED == FEED - 1:
                self.feed(number)
            if number % BATCH == BATCH - 1:
                most_kept = max(most_kept, self.after_batch(all_endpoints))
        most_kept = max(most_kept, self.after_batch(all_endpoints))
        self.assert_covered(all_endpoints, hits, damaged, most_kept)

    def after_batch(self, all_endpoints: list[Endpoint]) -> int:
        kept: list[int] = []

        def more() -> None:
            self.restore()
            self.every_get_answers(all_endpoints)
            kept.append(self.kept())

        self.checks.alive(more)
        return kept[0]

    def assert_covered(
        self,
        all_endpoints: list[Endpoint],
        hits: set[tuple[str, str]],
        damaged: set[tuple[str, str, str]],
        kept: int,
    ) -> None:
        for endpoint in all_endpoints:
            self.assertIn((endpoint.method, endpoint.rule), hits, "a route was never fuzzed")
            for param in endpoint.params:
                self.assertIn((endpoint.method, endpoint.rule, param), damaged, "never damaged")
        for status in (200, 400, 404, 405, 413):
            self.assertIn(status, self.checks.statuses, f"no case answered {status}")
        if self.holds_data:  # some of what it was fed went through two batches of damage
            self.assertGreaterEqual(kept, 2 * BATCH // FEED, "each batch cleared the mock")

    def assert_table_is_served(self) -> None:
        """The table fuzzed here is the one the child serves (``GET /mocksup``)."""
        answer = self.send(Case(None, "GET", PREFIX.encode()))
        index = json.loads(answer.body)
        served = sorted((r["path"], r["methods"], sorted(r["params"])) for r in index["routes"])
        table = sorted(
            (PREFIX + r.rule, list(r.methods), sorted(r.params)) for r in self.table.routes
        )
        self.assertEqual(served, table)

    def every_get_answers(self, all_endpoints: list[Endpoint]) -> None:
        for endpoint in all_endpoints:
            if endpoint.method != "GET":
                continue
            calm = self.calm(endpoint, "")
            target = _fill(endpoint.rule, self.path_values) + b"?" + _query(calm)
            answer = self.send(Case(endpoint, "GET", target))
            allowed = {200} | self.extra_statuses(endpoint)
            self.assertIn(answer.status, allowed, f"GET {target!r}: {answer.body[:300]!r}")

    def send(self, case: Case) -> Answer:
        head = case.method.encode() + b" " + case.target + b" HTTP/1.1\r\nHost: x\r\n"
        if case.body is not None:
            head += b"Content-Type: application/json\r\n"
            head += b"Content-Length: %d\r\n" % len(case.body)
        exchange: Exchange = send_raw(
            self.host, self.port, head + b"Connection: close\r\n\r\n" + (case.body or b""),
            head_requests=int(case.method == "HEAD"), timeout=10,
        )  # fmt: skip
        self.checks.answers(exchange)
        self.assertEqual(len(exchange.answers), 1, case.describe())
        return exchange.answers[0]

    def run_case(self, case: Case) -> Answer:
        started = time.monotonic()
        answer = self.send(case)
        elapsed = time.monotonic() - started
        what = f"{case.describe()} -> {answer.status} {answer.body[:300]!r}"
        self.assertIn(answer.status, case.statuses, what)
        message = ""
        if answer.status >= 400 and case.method != "HEAD":
            self.assertEqual(answer.headers.get("content-type"), "application/json", what)
            message = json.loads(answer.body)["error"]
            self.assertIsInstance(message, str, what)
            self.assertTrue(message, what)
        if case.expect == REFUSE:
            self.assertEqual(answer.status, 400, what)
        elif case.expect == ACCEPT:
            self.assertNotEqual(answer.status, 400, what)
        if answer.status == 400 and case.named and case.method != "HEAD":
            self.assertTrue(any(names(message, n) for n in case.named), what)
        if case.quick:
            self.assertLess(elapsed, QUICK, what)
        if answer.status == 405:
            self.assertTrue(answer.headers.get("allow"), what)
            if case.allow is not None:
                self.assertEqual(answer.headers["allow"], ", ".join(sorted(case.allow)), what)
        if answer.status == 200 and case.value is not None:
            self.check_accepted(case, answer)
        return answer

    # -- making cases ---------------------------------------------------------------------

    def makers(self, rng: random.Random, all_endpoints: list[Endpoint]) -> Iterator[Case]:
        """Cases without end, each kind going round its routes so that every one is hit."""
        with_params = [(e, p) for e in all_endpoints for p in sorted(e.params)]
        with_body = [e for e in all_endpoints if e.method in ("POST", "PUT", "PATCH")]
        # A clear empties what the mock holds, and the check of it: clear rarely.
        with_body = [e for e in with_body for _ in range(1 if self.clears(e) else 8)]
        with_vars = [e for e in all_endpoints if "<" in e.rule]
        rounds: dict[str, Iterator[Any]] = {
            "param": _rounds(rng, with_params),
            "unknown": _rounds(rng, all_endpoints),
            "body": _rounds(rng, with_body),
            "method": _rounds(rng, all_endpoints),
            "var": _rounds(rng, with_vars),
        }
        weights = {"param": 50, "unknown": 12, "body": 20, "method": 8, "var": 6, "route": 4}
        if not with_vars:
            weights["var"] = 0
        kinds = list(weights)
        while True:
            kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
            if kind == "route":
                yield self.route_case(rng)
                continue
            item = next(rounds[kind])
            if kind == "param":
                yield self.param_case(rng, *item)
            elif kind == "unknown":
                yield self.unknown_case(rng, item)
            elif kind == "body":
                yield self.body_case(rng, item)
            elif kind == "method":
                yield self.method_case(rng, item)
            else:
                yield self.var_case(rng, item)

    def fixed_cases(self, all_endpoints: list[Endpoint]) -> Iterator[Case]:
        """What the suite must always try, whatever the seed: every parameter with NaN, an
        infinity, a negative, a huge number, an empty, a long and a non-UTF-8 value (and each
        long poll with more bad timeouts), every body route with each kind of bad body, every
        route with a method it does not take."""
        for endpoint in all_endpoints:
            for name, param in endpoint.params.items():
                bad_waits = [(quote(t).encode(), t) for t in BAD_WAITS]
                for raw, value in EVERY_PARAM + (bad_waits if param.kind == "wait" else []):
                    yield self.param_case(random.Random(0), endpoint, name, (raw, value))
            if endpoint.method in ("POST", "PUT", "PATCH"):
                for body, expect in FIXED_BODIES:
                    case = self.base(endpoint)
                    case.body, case.what = body, "a bad body"
                    case.expect = REFUSE if expect == REFUSE else EITHER
                    case.statuses = frozenset({413}) if expect == "413" else case.statuses
                    yield case
            yield self.method_case(random.Random(endpoint.rule), endpoint)

    def clears(self, endpoint: Endpoint) -> bool:
        return (endpoint.method, endpoint.rule) in self.clearing

    def calm(self, endpoint: Endpoint, damaged: str) -> list[tuple[bytes, bytes]]:
        """Parameters that keep a long poll short while another one is damaged."""
        return [
            (name.encode(), b"0")
            for name, param in endpoint.params.items()
            if param.kind == "wait" and name != damaged
        ]

    def base(self, endpoint: Endpoint, method: str | None = None) -> Case:
        method = method or endpoint.method
        template = self.templates.get((endpoint.method, endpoint.rule))
        body = json.dumps(template).encode() if template is not None else None
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        statuses = frozenset({200, 400}) | self.extra_statuses(endpoint)
        target = _fill(endpoint.rule, self.path_values)
        return Case(endpoint, method, target, body, statuses=statuses)

    def param_case(
        self,
        rng: random.Random,
        endpoint: Endpoint,
        name: str,
        fixed: tuple[bytes, str | None] | None = None,
    ) -> Case:
        """``name`` with a damaged value (``fixed``, or drawn and maybe repeated)."""
        param = endpoint.params[name]
        raw, value = fixed or rng.choice(VALUES)
        expect = self.verdict(name, param, value)
        while param.kind == "wait" and expect == ACCEPT and (_decimal(value or "") or 0) > 0.01:
            raw, value = rng.choice(VALUES)  # a valid wait would hold the case: no test here
            expect = self.verdict(name, param, value)
        pairs = [(name.encode(), raw)]
        what = f"parameter {name} ({param.kind})"
        repeated = fixed is None and rng.random() < 0.15
        if repeated:
            again, second = rng.choice(VALUES)
            pairs.append((name.encode(), again))
            what += ", twice"
            both = (expect, self.verdict(name, param, second))
            if not param.many or REFUSE in both:
                expect = REFUSE
            elif both != (ACCEPT, ACCEPT):
                expect = EITHER
        pairs += self.calm(endpoint, name)
        rng.shuffle(pairs)
        case = self.base(endpoint)
        if case.method == "GET" and fixed is None and rng.random() < 0.1:
            case.method = "HEAD"
        case.target += b"?" + _query(pairs)
        case.expect, case.named, case.what = expect, (name,), what
        case.value = None if repeated else value
        case.quick = param.kind == "wait" and expect == REFUSE
        return case

    def unknown_case(self, rng: random.Random, endpoint: Endpoint) -> Case:
        raw, name = rng.choice([u for u in UNKNOWN_NAMES if u[1] not in endpoint.params])
        pairs = [(raw, rng.choice(VALUES)[0]), *self.calm(endpoint, "")]
        case = self.base(endpoint)
        case.target += b"?" + _query(pairs)
        case.expect, case.named, case.what = REFUSE, (name,), "an unknown parameter"
        return case

    def body_case(self, rng: random.Random, endpoint: Endpoint) -> Case:
        case = self.base(endpoint)
        template = self.templates.get((endpoint.method, endpoint.rule))
        if template is not None and rng.random() < 0.6:
            case.body, case.expect = damaged_body(rng, template)
        else:
            case.body, expect = rng.choice(BODIES)
            case.expect = EITHER if expect == "413" else expect
            case.statuses = frozenset({413}) if expect == "413" else case.statuses
        case.what = "a damaged body"
        return case

    def method_case(self, rng: random.Random, endpoint: Endpoint) -> Case:
        allowed = set(endpoint.route_methods) | (
            {"HEAD"} if "GET" in endpoint.route_methods else set()
        )
        method = rng.choice([m for m in METHODS if m not in allowed])
        case = self.base(endpoint, method)
        case.statuses, case.what = frozenset({405}), "a method the route does not take"
        case.allow = endpoint.route_methods
        return case

    def var_case(self, rng: random.Random, endpoint: Endpoint) -> Case:
        case = self.base(endpoint)
        segment = rng.choice([b"%2F", b"..", b"a%2Fb", b"%00", b"x" * 300, rng.choice(VALUES)[0]])
        values = {name: segment for name in re.findall(r"<(?:[^:>]+:)?([^>]+)>", endpoint.rule)}
        case.target = _fill(endpoint.rule, {**self.path_values, **values})
        case.statuses |= {404, 405}  # an empty value can make the path another route's
        case.what = "a damaged path variable"
        return case

    def route_case(self, rng: random.Random) -> Case:
        tail = rng.choice([
            b"/nope", b"/stats/x/y", b"//stats", b"/STATS", b"/%ff", b"/\xff", b"/spans/wait/x",
            b"/" + b"a" * 300, b"/health/..", b"/%2e%2e",
        ])  # fmt: skip
        return Case(None, rng.choice(["GET", "POST"]), PREFIX.encode() + tail,
                    statuses=frozenset({404}), what="an unknown route")  # fmt: skip


def _rounds(rng: random.Random, items: list[Any]) -> Iterator[Any]:
    """``items`` over and over, shuffled anew each round."""
    while items:
        order = list(items)
        rng.shuffle(order)
        yield from order


# -- the mocks ----------------------------------------------------------------------------

TRACE_ID = "5b8efff798038103d269b633813fc60c"


def _span(name: str) -> bytes:
    span = {"traceId": TRACE_ID, "spanId": "eee19b7ec3c1b174", "name": name,
            "startTimeUnixNano": "1", "endTimeUnixNano": "2"}  # fmt: skip
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


class CollectorControlFuzzTest(ControlFuzz, ProcessTestCase):
    name = "otlp"
    cases = OTLP_CASES
    # GET /mocksup/ui/journals/<name> fetches a journal from the mock registered under the
    # name: one the fuzz registered at an unreachable URL is a 502 (a gateway's answer).
    allowed_5xx = frozenset({502})
    clearing = frozenset({("POST", "/mocksup/clear")})
    templates = {
        ("POST", "/mocksup/faults"): {
            "signal": "traces", "transport": "http", "count": 2, "status": 503,
            "retry_after": 1, "message": "x", "delay": 0.0, "rejected": 0, "drop": False,
        },
        ("PUT", "/mocksup/ui/journals/<name>"): {"url": "http://127.0.0.1:1"},
    }  # fmt: skip
    path_values = {"trace_id": TRACE_ID.encode(), "name": b"fuzzed"}
    server: ClassVar[MockOTLPCollector]
    expected: list[str]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = MockOTLPCollector(port=0, grpc_port=None)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        assert cls.server.pid is not None
        cls.host, cls.port, cls.pid = cls.server.host, cls.server.port, cls.server.pid
        cls.table = cls.server._parts().app.control

    def extra_statuses(self, endpoint: Endpoint) -> frozenset[int]:
        journal = (endpoint.method, endpoint.rule) == ("GET", "/mocksup/ui/journals/<name>")
        return super().extra_statuses(endpoint) | ({502} if journal else set())

    def restore(self) -> None:
        self.server.control.call("DELETE", "/faults")

    def feed(self, number: int) -> None:
        if number == 0:
            self.expected = []
        self.restore()  # a fault the fuzz added would answer the export
        name = f"canary-{number}"
        raw = (
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(_span(name))
        ) + _span(name)
        self.assertEqual(send_raw(self.host, self.port, raw).answers[0].status, 200)
        self.expected.append(name)

    def cleared(self) -> None:
        self.expected = []

    def kept(self) -> int:
        self.assertEqual(sorted(s.name for s in self.server.spans()), sorted(self.expected))
        return len(self.expected)

    def test_every_route_with_damaged_parameters(self) -> None:
        self.run_fuzz()


#: A script rule with every condition and reply field set.
RULE = {
    "model": "mock-model", "contains": "x", "regex": "a+", "header": "x-a: b", "call": 1,
    "times": 2, "reply": {"content": "y", "tool_calls": [{"name": "f", "arguments": {"a": 1}}],
                          "finish_reason": "stop", "error_status": None, "error_message": "e"},
}  # fmt: skip


class VLLMControlFuzzTest(ControlFuzz, ProcessTestCase):
    name = "vllm"
    cases = VLLM_CASES
    clearing = frozenset({("POST", "/mocksup/clear"), ("DELETE", "/mocksup/requests")})
    templates = {
        ("PUT", "/mocksup/latency"): {
            "ttft": 0.001, "itl": 0.0, "jitter": 0.0, "max_num_seqs": 4,
            "prefill_per_token": 0.0, "ttft_stddev": 0.0, "itl_stddev": 0.0, "load_factor": 1.0,
        },
        ("PUT", "/mocksup/faults"): {
            "kind": "rate_limit", "first": 0, "rate": 0.0, "retry_after": 1, "after_tokens": 1,
        },
        ("PUT", "/mocksup/scripts"): {"rules": [RULE]},
        ("POST", "/mocksup/scripts"): RULE,
        ("POST", "/mocksup/clear"): {"metrics": False},
    }  # fmt: skip
    server: ClassVar[MockVLLMServer]
    settings: ClassVar[dict[str, Any]]
    expected: list[str]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = MockVLLMServer(port=0)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        assert cls.server.pid is not None
        cls.host, cls.port, cls.pid = cls.server.host, cls.server.port, cls.server.pid
        cls.table = cls.server.make_app()[0]._control
        cls.settings = {k: cls.server.control.call("GET", k) for k in ("/latency", "/faults")}

    def restore(self) -> None:
        for path, settings in self.settings.items():
            self.server.control.call("PUT", path, body=settings)
        self.server.control.call("PUT", "/scripts", body={"rules": []})

    def feed(self, number: int) -> None:
        if number == 0:
            self.expected = []
        prompt = f"canary {number}"
        body = json.dumps({"prompt": prompt}).encode()
        raw = (
            b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        ) + body
        self.assertEqual(send_raw(self.host, self.port, raw).answers[0].status, 200)
        self.expected.append(prompt)

    def cleared(self) -> None:
        self.expected = []

    def kept(self) -> int:
        entries = self.server.requests(path="/tokenize")
        self.assertEqual([e.body["prompt"] for e in entries], self.expected)
        return len(self.expected)

    def test_every_route_with_damaged_parameters(self) -> None:
        self.run_fuzz()


# -- the framework, every kind of parameter -----------------------------------------------

#: A parameter of every kind, with bounds to find: name → (parameter, what it accepts).
KINDS: dict[str, Param] = {
    "text": Param.text(max_len=16),
    "texts": Param.texts(max_len=16),
    "choice": Param.choice("a", "b/c"),
    "integer": Param.integer(low=-5, high=1000),
    "number": Param.number(low=-1.0, high=1.0),
    "flag": Param.flag(),
    "timeout": Param.wait(default=0.0),
}


def parsed(name: str, value: str) -> tuple[bool, Any]:
    """Whether the parameter ``name`` of :data:`KINDS` accepts ``value``, and as what."""
    if name in ("text", "texts"):
        return len(value) <= 16, [value] if name == "texts" else value
    if name == "choice":
        return value in ("a", "b/c"), value
    if name == "integer":
        whole = _whole(value)
        return whole is not None and -5 <= whole <= 1000, whole
    if name == "flag":
        return value.lower() in ("true", "false", "1", "0", ""), value.lower() in ("true", "1", "")
    number = _decimal(value)
    low, high = (-1.0, 1.0) if name == "number" else (0.0, MAX_WAIT)
    return number is not None and low <= number <= high, number


class FrameworkParamFuzzTest(ControlFuzz, unittest.TestCase):
    """The same fuzz on a control app with a parameter of every kind and known bounds,
    served in-process: here every value's fate is known, and an accepted one must arrive
    in the handler as exactly the value it says."""

    name = "framework"
    cases = FRAMEWORK_CASES
    holds_data = False
    path_values = {"item_id": b"7"}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.table = ControlApp([
            Route("/echo", ("GET",), lambda r: {"args": r.args}, KINDS),
            Route("/echo", ("POST", "PUT"), lambda r: {"body": r.body}),
            Route("/items/<item_id>", ("GET", "DELETE"), lambda r: r.values),
        ], name="framework")  # fmt: skip
        context = serve_wsgi(cls.table, bind_tcp("127.0.0.1", 0))
        server = context.__enter__()
        cls.addClassCleanup(context.__exit__, None, None, None)
        cls.host, cls.port, cls.pid = "127.0.0.1", server.port, os.getpid()

    def verdict(self, name: str, param: Param, value: str | None) -> str:
        return ACCEPT if value is not None and parsed(name, value)[0] else REFUSE

    def check_accepted(self, case: Case, answer: Answer) -> None:
        name = case.named[0]
        if case.method == "HEAD" or name not in KINDS or case.value is None:
            return
        args = json.loads(answer.body)["args"]
        self.assertEqual(args[name], parsed(name, case.value)[1], case.describe())

    def test_every_kind_with_damaged_values(self) -> None:
        self.run_fuzz()


if __name__ == "__main__":
    unittest.main()
