"""The parts of a generated JSON document that need no walk of the schema: two schemas
merged into one (``allOf``, ``$ref`` beside other keywords), numbers within bounds that are
multiples of ``multipleOf``, and strings of a ``format``.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeGuard

from mocksup.vllm._generation.json_check import canonical, json_equal, multiple_of
from mocksup.vllm._generation.patterns import Unsatisfiable

__all__ = ["FORMATS", "bounds", "is_number", "merge", "multiple"]

_BOUND_KEYS = {"minimum": max, "exclusiveMinimum": max, "minLength": max, "minItems": max,
               "minProperties": max, "maximum": min, "exclusiveMaximum": min,
               "maxLength": min, "maxItems": min, "maxProperties": min}  # fmt: skip


class Words(Protocol):
    """What a format needs of the generator: its random source and its words."""

    rng: random.Random

    def words(self, low: int, high: int) -> str:
        """``low`` to ``high`` vocabulary words, space-separated."""


def merge(a: Any, b: Any) -> Any:
    """One schema that asks what both ask (as far as generation needs; the final check
    holds the rest)."""
    if a is True or a == {}:
        return b
    if b is True or b == {}:
        return a
    if a is False or b is False or not isinstance(a, dict) or not isinstance(b, dict):
        return False
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "properties" and isinstance(value, dict):
            mine = dict(out[key])
            for name, sub in value.items():
                mine[name] = merge(mine[name], sub) if name in mine else sub
            out[key] = mine
        elif key == "required":
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key in _BOUND_KEYS and is_number(value) and is_number(out[key]):
            out[key] = _BOUND_KEYS[key](out[key], value)
        elif key == "type":
            out[key] = _same_types(out[key], value)
        elif key == "enum" and isinstance(value, list) and isinstance(out[key], list):
            both = {canonical(w) for w in value}
            out[key] = [v for v in out[key] if canonical(v) in both]
        elif not json_equal(out[key], value):
            out["allOf"] = [*out.get("allOf", []), {key: value}]
    return out


def _same_types(a: Any, b: Any) -> Any:
    left = set(a if isinstance(a, list) else [a])
    right = set(b if isinstance(b, list) else [b])
    if ("number" in left and "integer" in right) or ("number" in right and "integer" in left):
        left |= {"integer"}
        right |= {"integer"}
    both = [k for k in (a if isinstance(a, list) else [a]) if k in right]
    both += ["integer"] if "integer" in left & right and "integer" not in both else []
    if not both:
        raise Unsatisfiable("allOf asks for types that exclude each other")
    return both[0] if len(both) == 1 else both


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bounds(node: dict[str, Any], *, integer: bool) -> tuple[Any, Any]:
    """The least and greatest value ``node``'s keywords allow (100 apart when open).

    :raises Unsatisfiable: they admit no value.
    """
    low, high = node.get("minimum"), node.get("maximum")
    low_x, high_x = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if low_x is True:
        low_x, low = low, None
    if high_x is True:
        high_x, high = high, None
    nudge = 1 if integer else 0.01
    lows: list[float] = [low] if is_number(low) else []
    highs: list[float] = [high] if is_number(high) else []
    lows += [low_x + nudge] if is_number(low_x) else []
    highs += [high_x - nudge] if is_number(high_x) else []
    lo = max(lows) if lows else None
    hi = min(highs) if highs else None
    if lo is None:
        lo = 0 if hi is None or hi >= 0 else hi - 100
    if hi is None:
        hi = lo + 100
    if integer:
        lo, hi = math.ceil(lo), math.floor(hi)
    if lo > hi:
        raise Unsatisfiable("the numeric bounds admit no value")
    return lo, hi


def multiple(low: float, high: float, step: float, rng: random.Random, *, integer: bool) -> Any:
    """A multiple of ``step`` between ``low`` and ``high``.

    :raises Unsatisfiable: none was found (none lies there, or the step is too small for
        floats to count the multiples).
    """
    quotients = (low / step, high / step)
    if not all(math.isfinite(q) for q in quotients):
        raise Unsatisfiable(
            "multipleOf is too small for its bounds: the multiples are not countable"
        )
    first, last = math.ceil(quotients[0]), math.floor(quotients[1])
    if first > last:
        raise Unsatisfiable("no multiple of multipleOf lies within the bounds")
    start = rng.randint(first, last)
    for k in (*range(start, min(last, start + 50) + 1), *range(first, min(last, first + 50) + 1)):
        value = k * step
        value = round(value) if integer else round(value, 12)
        if low <= value <= high and multiple_of(value, step):
            return value
    raise Unsatisfiable("no multiple of multipleOf lies within the bounds")


def _date(m: Words) -> str:
    r = m.rng
    return f"{r.randint(2000, 2030):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def _time(m: Words) -> str:
    r = m.rng
    return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"


def _ipv6(m: Words) -> str:
    return ":".join(f"{m.rng.getrandbits(16):x}" for _ in range(8))


def _word(m: Words) -> str:
    return m.words(1, 1)


#: String formats: each a maker of a valid string.
FORMATS: dict[str, Callable[[Words], str]] = {
    "date-time": lambda m: f"{_date(m)}T{_time(m)}",
    "date": _date,
    "time": _time,
    "duration": lambda m: f"P{m.rng.randint(1, 30)}DT{m.rng.randint(0, 23)}H",
    "email": lambda m: f"{_word(m)}.{_word(m)}@example.com",
    "hostname": lambda m: f"{_word(m)}.example.com",
    "ipv4": lambda m: ".".join(str(m.rng.randint(1, 254)) for _ in range(4)),
    "ipv6": _ipv6,
    "uuid": lambda m: str(uuid.UUID(int=m.rng.getrandbits(128), version=4)),
    "uri": lambda m: f"https://{_word(m)}.example.com/{_word(m)}",
    "uri-reference": lambda m: f"/{_word(m)}/{_word(m)}",
    "iri": lambda m: f"https://{_word(m)}.example.com/{_word(m)}",
    "uri-template": lambda m: f"https://example.com/{_word(m)}/{{id}}",
    "json-pointer": lambda m: f"/{_word(m)}/{m.rng.randint(0, 9)}",
    "relative-json-pointer": lambda m: f"{m.rng.randint(0, 3)}/{_word(m)}",
}
