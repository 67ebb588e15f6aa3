"""Whether a JSON value conforms to a JSON Schema: the check every generated document passes.

The generator (:mod:`.json_schema`) builds a value keyword by keyword; a few keywords
(``not``, ``oneOf``, ``if``/``then``/``else``, formats combined with lengths) are easier to
check than to construct, so every document is checked against the whole schema before it is
sent, and drawn again when it fails. The keywords are those of JSON Schema 2020-12 that
structured-output backends compile (with draft-7 spellings: ``definitions``, ``items`` as a
list, ``additionalItems``, boolean ``exclusiveMinimum``, ``dependencies``), with JSON's
equality (``1 == 1.0``, ``true != 1``). Formats are checked for the ones the mock generates.

A :class:`Checker` spends the request's :class:`~.budget.Work` (a step per schema checked),
compares ``enum`` and ``uniqueItems`` values through hashable :func:`canonical` forms (not
pair by pair), and runs the schema's patterns through :func:`~.patterns.compiled` with a
time limit, so a check costs at most what the budget allows.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import uuid
from typing import Any, TypeGuard
from urllib.parse import unquote

import regex

from mocksup.vllm._generation.budget import Work
from mocksup.vllm._generation.regexes import compiled

__all__ = ["Checker", "canonical", "json_equal", "multiple_of", "resolve"]

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}

_HOSTNAME = regex.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")  # fmt: skip
_EMAIL = regex.compile(r"[^@\s]+@[^@\s]+")
_DURATION = regex.compile(r"P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?")
_URI = regex.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*")
_TIME = regex.compile(r"\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_POINTER = regex.compile(r"(/([^~/]|~[01])*)*")


def resolve(ref: str, root: Any) -> Any:
    """The schema a local ``$ref`` (``#/$defs/x``) points to.

    :raises KeyError: it points nowhere.
    """
    node = root
    for part in ref[1:].split("/")[1:] if ref.startswith("#/") else []:
        key = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and key.isdigit():
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise KeyError(ref)
    return node


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: booleans are not numbers, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def multiple_of(value: Any, step: Any) -> bool:
    """``value`` is a whole multiple of ``step`` (as a validator computes it in floats)."""
    if isinstance(step, float) or isinstance(value, float):
        quotient = value / step
        return math.isfinite(quotient) and int(quotient) == quotient
    return bool(value % step == 0)


def canonical(value: Any) -> Any:
    """A hashable form of a JSON value, equal for values JSON calls equal (``1`` and ``1.0``,
    not ``true`` and ``1``; objects whatever their key order)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)  # Python's 1 == 1.0 and hash(1) == hash(1.0), as JSON's
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(canonical(item) for item in value))
    if isinstance(value, dict):
        return ("d", frozenset((key, canonical(item)) for key, item in value.items()))
    return ("x", repr(value))


class Checker:
    """Checks against one root schema, spending one request's work."""

    def __init__(self, root: Any, work: Work) -> None:
        self.root = root
        self.work = work
        # Canonical sets of enum lists, by identity (the list is kept alive beside them).
        self._listed: dict[int, tuple[Any, frozenset[Any]]] = {}

    def conforms(self, value: Any, schema: Any, depth: int = 0) -> bool:
        """Whether ``value`` is valid against ``schema``.

        :raises OverBudget: the request's work ran out, or its patterns' time.
        """
        if schema is True or schema == {}:
            return True
        if schema is False or not isinstance(schema, dict) or depth > 200:
            return schema is not False and depth <= 200
        self.work.tick()
        ref = schema.get("$ref")
        if isinstance(ref, str) and not self.conforms(value, resolve(ref, self.root), depth + 1):
            return False
        return all(check(self, value, schema, depth) for check in _CHECKS)

    def among(self, value: Any, listed: list[Any]) -> bool:
        """Whether ``value`` equals (as JSON) one of ``listed``."""
        known = self._listed.get(id(listed))
        if known is None or known[0] is not listed:
            self.work.tick(len(listed) + 1)
            known = (listed, frozenset(canonical(item) for item in listed))
            self._listed[id(listed)] = known
        return canonical(value) in known[1]

    def search(self, pattern: str, text: str) -> bool:
        """Whether ``pattern`` matches somewhere in ``text``.

        :raises OverBudget: the request's patterns took their time; a pattern the regex
            engine refuses is an :class:`~.patterns.Unsatisfiable`.
        """
        self.work.tick()
        engine = compiled(pattern)
        found = self.work.regex(lambda timeout: engine.search(text, timeout=timeout,
                                                               concurrent=True))  # fmt: skip
        return found is not None


def _types_and_values(checker: Checker, value: Any, schema: dict[str, Any], depth: int) -> bool:
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(_TYPES[k](value) for k in names if isinstance(k, str) and k in _TYPES):
            return False
    listed = schema.get("enum")
    if isinstance(listed, list) and not checker.among(value, listed):
        return False
    return "const" not in schema or json_equal(value, schema["const"])


def _numbers(checker: Checker, value: Any, schema: dict[str, Any], depth: int) -> bool:
    if not _TYPES["number"](value):
        return True
    low, high = schema.get("minimum"), schema.get("maximum")
    low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if low_x is True:
        low_x, low = low, None
    if high_x is True:
        high_x, high = high, None
    if (_number(low) and value < low) or (_number(high) and value > high):
        return False
    if (_number(low_x) and value <= low_x) or (_number(high_x) and value >= high_x):
        return False
    step = schema.get("multipleOf")
    return not _number(step) or step <= 0 or multiple_of(value, step)


def _number(bound: Any) -> TypeGuard[float]:
    return isinstance(bound, (int, float)) and not isinstance(bound, bool)


def _strings(checker: Checker, value: Any, schema: dict[str, Any], depth: int) -> bool:
    if not isinstance(value, str):
        return True
    if len(value) < schema.get("minLength", 0):
        return False
    high = schema.get("maxLength")
    if high is not None and len(value) > high:
        return False
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not checker.search(pattern, value):
        return False
    form = schema.get("format")
    return not isinstance(form, str) or format_ok(form, value)


def format_ok(form: str, value: str) -> bool:
    """Whether ``value`` has the string format ``form`` (unknown formats: yes)."""
    try:
        if form == "date-time":
            date, _, time = value.upper().partition("T")
            return format_ok("date", date) and format_ok("time", time)
        if form == "date":
            return len(value) == 10 and datetime.date.fromisoformat(value) is not None
        if form == "time":
            return _TIME.fullmatch(value) is not None
        if form in ("ipv4", "ipv6"):
            kind = ipaddress.IPv4Address if form == "ipv4" else ipaddress.IPv6Address
            return kind(value) is not None
        if form == "uuid":
            return str(uuid.UUID(value)) == value.lower() and value.count("-") == 4
    except ValueError:
        return False
    checks = {"email": _EMAIL, "hostname": _HOSTNAME, "duration": _DURATION, "uri": _URI,
              "json-pointer": _POINTER}  # fmt: skip
    pattern = checks.get(form)
    return pattern is None or pattern.fullmatch(value) is not None


def _arrays(checker: Checker, value: Any, schema: dict[str, Any], depth: int) -> bool:
    if not isinstance(value, list):
        return True
    if len(value) < schema.get("minItems", 0):
        return False
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return False
    items = schema.get("items", True)
    prefix = schema.get("prefixItems") or (items if isinstance(items, list) else [])
    rest = schema.get("additionalItems", True) if isinstance(items, list) else items
    for i, item in enumerate(value):
        sub = prefix[i] if i < len(prefix) else rest
        if not checker.conforms(item, sub, depth + 1):
            return False
    if schema.get("uniqueItems") and len({canonical(item) for item in value}) < len(value):
        return False
    contains = schema.get("contains")
    if contains is None:
        return True
    found = sum(checker.conforms(item, contains, depth + 1) for item in value)
    most = schema.get("maxContains")
    return found >= schema.get("minContains", 1) and (most is None or found <= most)


def _objects(checker: Checker, value: Any, schema: dict[str, Any], depth: int) -> bool:
    if not isinstance(value, dict):
        return True
    if any(key not in value for key in schema.get("required", [])):
        return False
    if len(value) < schema.get("minProperties", 0):
        return False
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        return False
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    names = schema.get("propertyNames")
    for key, item in value.items():
        if names is not None and not checker.conforms(key, names, depth + 1):
            return False
        matched = [s for p, s in patterns.items() if checker.search(p, key)]
        if key in properties:
            matched.append(properties[key])
        if not matched:
            matched = [schema.get("additionalProperties", True)]
        if not all(checker.conforms(item, s, depth + 1) for s in matched):
            return False
    return _dependencies(checker, value, schema, depth)


def _dependencies(checker: Checker, value: dict[str, Any], schema: dict[str, Any],
                  depth: int) -> bool:  # fmt: skip
    needs = {**schema.get("dependencies", {}), **schema.get("dependentRequired", {}),
             **schema.get("dependentSchemas", {})}  # fmt: skip
    for key, need in needs.items():
        if key not in value:
            continue
        if isinstance(need, list):
            if any(other not in value for other in need):
                return False
        elif not checker.conforms(value, need, depth + 1):
            return False
    unevaluated = schema.get("unevaluatedProperties", True)
    if unevaluated is True:
        return True
    known = _declared(checker, schema)
    return all(
        key in known or checker.conforms(item, unevaluated, depth + 1)
        for key, item in value.items()
    )


def _declared(checker: Checker, schema: Any, depth: int = 0) -> set[str]:
    # Properties a schema and its sub-schemas declare (what unevaluatedProperties spares);
    # a $ref that leads back to itself ends at the depth bound.
    if not isinstance(schema, dict) or depth > 200:
        return set()
    checker.work.tick()
    keys = set(schema.get("properties", {}))
    for combinator in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(combinator, []):
            keys |= _declared(checker, sub, depth + 1)
    ref = schema.get("$ref")
    if isinstance(ref, str):
        keys |= _declared(checker, resolve(ref, checker.root), depth + 1)
    return keys


def _logic(checker: Checker, value: Any, schema: dict[str, Any], depth: int) -> bool:
    deeper = depth + 1
    if not all(checker.conforms(value, s, deeper) for s in schema.get("allOf", [])):
        return False
    options = schema.get("anyOf")
    if options is not None and not any(checker.conforms(value, s, deeper) for s in options):
        return False
    options = schema.get("oneOf")
    if options is not None and sum(checker.conforms(value, s, deeper) for s in options) != 1:
        return False
    if "not" in schema and checker.conforms(value, schema["not"], deeper):
        return False
    if "if" in schema:
        branch = "then" if checker.conforms(value, schema["if"], deeper) else "else"
        return checker.conforms(value, schema.get(branch, True), deeper)
    return True


_CHECKS = (_types_and_values, _numbers, _strings, _arrays, _objects, _logic)
