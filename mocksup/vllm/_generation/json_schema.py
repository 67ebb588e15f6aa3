"""JSON documents valid against a JSON Schema, drawn from a seeded generator.

:func:`schema_value` builds a value keyword by keyword: ``$ref`` (local pointers, into
``$defs`` or ``definitions``) and ``allOf`` are merged into one schema, ``const`` and
``enum`` pick a listed value, ``anyOf``/``oneOf`` one branch, ``type`` (or the keywords
that imply one) the kind; objects get their ``required`` properties and, drawn, some
optional ones (never past ``maxProperties``, enough for ``minProperties``), arrays
``prefixItems`` then ``items`` between ``minItems`` and ``maxItems`` (distinct with
``uniqueItems``, enough matches for ``contains``), strings a ``format`` (date-time, date,
time, email, uuid, uri, hostname, ipv4, ipv6, duration...), a ``pattern``
(:mod:`.patterns`) or vocabulary words within ``minLength``/``maxLength``, numbers a value
within the bounds and a multiple of ``multipleOf``. Recursive schemas stop recursing past a
depth, where optional properties are left out and arrays are as short as allowed.

The whole document is then checked (:func:`~.json_check.conforms`) and drawn again when a
keyword the construction does not guarantee (``not``, ``if``, ``oneOf``'s exclusivity, a
pattern's length) failed; after a few draws the schema is refused with
:class:`~.patterns.Unsatisfiable`, never answered with a document that does not conform.
"""

from __future__ import annotations

import functools
import math
import random
import uuid
from collections.abc import Callable
from typing import Any, TypeGuard

from mocksup.vllm._generation.json_check import conforms, json_equal, multiple_of, resolve
from mocksup.vllm._generation.patterns import Node, Unsatisfiable, generate, parse_regex
from mocksup.vllm.tokenizer import WORDS

__all__ = ["schema_value"]

#: Whole-document draws before a schema is refused.
ATTEMPTS = 6
#: Nesting past which optional parts are left out; past ``_MAX_DEPTH`` the schema is refused.
_SHALLOW, _MAX_DEPTH = 4, 40
#: Words for strings and keys (the vocabulary's, less a few a report should not show).
_WORDS = tuple(
    dict.fromkeys(
        w for w in WORDS if w.isalpha() and w not in {"sex", "kill", "die", "dead", "gun",
                                                      "drug", "weapon", "shoot", "death",
                                                      "war", "crime", "attack", "blood"}
    )
)  # fmt: skip
_BOUND_KEYS = {"minimum": max, "exclusiveMinimum": max, "minLength": max, "minItems": max,
               "minProperties": max, "maximum": min, "exclusiveMaximum": min,
               "maxLength": min, "maxItems": min, "maxProperties": min}  # fmt: skip


def schema_value(schema: Any, rng: random.Random) -> Any:
    """A value valid against ``schema``.

    :raises Unsatisfiable: the mock found no valid value (the schema admits none, or none
        it can construct).
    """
    maker = _Maker(schema, rng)
    for _ in range(ATTEMPTS):
        value = maker.value(schema, 0)
        if conforms(value, schema, schema):
            return value
    raise Unsatisfiable("the mock could not generate a value valid against the schema")


class _Maker:
    """One document's construction: the root (for ``$ref``) and the generator."""

    def __init__(self, root: Any, rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, node: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise Unsatisfiable("the schema recurses without an end")
        node = self.flatten(node)
        if isinstance(node, dict) and ("not" in node or "if" in node):
            # Easier checked than built: draw until one passes.
            for _ in range(ATTEMPTS * 3):
                value = self.built(node, depth)
                if conforms(value, node, self.root):
                    return value
            raise Unsatisfiable("no value found that passes its not/if keywords")
        return self.built(node, depth)

    def built(self, node: Any, depth: int) -> Any:
        if node is False:
            raise Unsatisfiable("a schema admits no value (false)")
        if node is True or not node:
            return self.anything(depth)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return self.listed(node, depth)
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                return self.branch(node, key, depth)
        kind = self.kind(node)
        return getattr(self, "make_" + kind)(node, depth)

    def flatten(self, node: Any) -> Any:
        """``node`` with its ``$ref`` and ``allOf`` merged in."""
        for _ in range(_MAX_DEPTH):
            if not isinstance(node, dict):
                return node
            ref, parts = node.get("$ref"), node.get("allOf")
            if not isinstance(ref, str) and not isinstance(parts, list):
                return node
            rest = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
            if isinstance(ref, str):
                try:
                    rest = merge(resolve(ref, self.root), rest)
                except KeyError:
                    raise Unsatisfiable(f"cannot resolve $ref {ref}") from None
            for part in parts if isinstance(parts, list) else []:
                rest = merge(rest, self.flatten(part))
            node = rest
        raise Unsatisfiable("$ref chains without an end")

    def listed(self, node: dict[str, Any], depth: int) -> Any:
        rest = {k: v for k, v in node.items() if k != "enum"}
        values = node["enum"]
        if not isinstance(values, list) or not values:
            raise Unsatisfiable("enum must be a non-empty array")
        fitting = [v for v in values if conforms(v, rest, self.root)]
        if not fitting:
            raise Unsatisfiable("no value of an enum fits the rest of its schema")
        return fitting[int(self.rng.random() * len(fitting))]

    def branch(self, node: dict[str, Any], key: str, depth: int) -> Any:
        options = list(node[key])
        self.rng.shuffle(options)
        rest = {k: v for k, v in node.items() if k != key}
        for option in options:
            try:
                value = self.value(merge(rest, self.flatten(option)), depth + 1)
            except Unsatisfiable:
                continue
            if key == "anyOf" or sum(conforms(value, o, self.root) for o in node[key]) == 1:
                return value
        raise Unsatisfiable(f"no branch of {key} could be generated")

    def kind(self, node: dict[str, Any]) -> str:
        kinds = node.get("type")
        if isinstance(kinds, str):
            return kinds if kinds in _KINDS else "null"
        if isinstance(kinds, list) and kinds:
            useful = [str(k) for k in kinds if k in _KINDS and k != "null"] or ["null"]
            return useful[int(self.rng.random() * len(useful))]
        for keys, kind in _IMPLIED:
            if any(k in node for k in keys):
                return kind
        return "any"

    def anything(self, depth: int) -> Any:
        draw = self.rng.random()
        if draw < 0.5:
            return self.words(1, 3)
        if draw < 0.7:
            return self.rng.randint(0, 100)
        if draw < 0.8:
            return round(self.rng.uniform(0, 100), 2)
        return self.rng.random() < 0.5 if draw < 0.95 else None

    def make_any(self, node: dict[str, Any], depth: int) -> Any:
        return self.anything(depth)

    def make_null(self, node: dict[str, Any], depth: int) -> Any:
        return None

    def make_boolean(self, node: dict[str, Any], depth: int) -> Any:
        return self.rng.random() < 0.5

    def make_integer(self, node: dict[str, Any], depth: int) -> Any:
        low, high = _bounds(node, integer=True)
        step = node.get("multipleOf")
        if _is_number(step) and step > 0:
            return _multiple(low, high, step, self.rng, integer=True)
        return self.rng.randint(low, high)

    def make_number(self, node: dict[str, Any], depth: int) -> Any:
        low, high = _bounds(node, integer=False)
        step = node.get("multipleOf")
        if _is_number(step) and step > 0:
            return _multiple(low, high, step, self.rng, integer=False)
        value = round(self.rng.uniform(low, high), 2)
        return value if low <= value <= high else (low + high) / 2

    def make_string(self, node: dict[str, Any], depth: int) -> Any:
        low = node.get("minLength", 0)
        high = node.get("maxLength")
        if high is not None and high < low:
            raise Unsatisfiable("maxLength is below minLength")
        form, pattern = node.get("format"), node.get("pattern")
        for _ in range(ATTEMPTS * 2):
            if isinstance(pattern, str):
                text = generate(_regex(pattern), self.rng)
            elif isinstance(form, str) and form in _FORMATS:
                text = _FORMATS[form](self)
            else:
                return self.sized_words(low, high)
            if len(text) >= low and (high is None or len(text) <= high):
                return text
        raise Unsatisfiable("no string of the pattern or format fits its length bounds")

    def make_array(self, node: dict[str, Any], depth: int) -> Any:
        items = node.get("items", True)
        prefix = node.get("prefixItems") or (items if isinstance(items, list) else [])
        rest = node.get("additionalItems", True) if isinstance(items, list) else items
        low, high = node.get("minItems", 0), node.get("maxItems")
        top = high if high is not None else low + 3
        if rest is False:
            top = min(top, len(prefix))
        if top < low:
            raise Unsatisfiable("the array cannot have minItems items")
        count = low if depth >= _SHALLOW else self.rng.randint(low, max(low, min(top, low + 3)))
        return self.fill(node, prefix, rest, count, depth)

    def fill(self, node: dict[str, Any], prefix: list[Any], rest: Any, count: int,
             depth: int) -> list[Any]:  # fmt: skip
        contains = node.get("contains")
        needed = node.get("minContains", 1) if contains is not None else 0
        unique = bool(node.get("uniqueItems"))
        out: list[Any] = []
        for i in range(max(count, needed)):
            schema = prefix[i] if i < len(prefix) else rest
            if i >= len(prefix) and needed:
                schema, needed = merge(self.flatten(rest), self.flatten(contains)), needed - 1
            for _ in range(ATTEMPTS * 2):
                item = self.value(schema, depth + 1)
                if not unique or not any(json_equal(item, seen) for seen in out):
                    break
            else:
                if len(out) >= node.get("minItems", 0):
                    break
                raise Unsatisfiable("not enough distinct items for uniqueItems")
            out.append(item)
        return out

    def make_object(self, node: dict[str, Any], depth: int) -> Any:
        properties = node.get("properties") or {}
        required = [k for k in node.get("required", []) if isinstance(k, str)]
        most = node.get("maxProperties")
        if most is not None and len(required) > most:
            raise Unsatisfiable("more required properties than maxProperties")
        chance = 0.75 if depth < _SHALLOW else 0.0
        keys = [k for k in properties if k in required or self.rng.random() < chance]
        keys += [k for k in required if k not in properties]
        keys = self.dependents(node, keys)
        while most is not None and len(keys) > most:
            keys.remove(next(k for k in reversed(keys) if k not in required))
        optional = [k for k in properties if k not in keys]
        while len(keys) < node.get("minProperties", 0):
            keys.append(optional.pop(0) if optional else self.new_key(node, keys))
        return {key: self.value(self.property_schema(node, key), depth + 1) for key in keys}

    def dependents(self, node: dict[str, Any], keys: list[str]) -> list[str]:
        needs = {**node.get("dependencies", {}), **node.get("dependentRequired", {})}
        for key in keys:
            for other in needs.get(key, []) if isinstance(needs.get(key), list) else []:
                if other not in keys:
                    keys.append(other)
        return keys

    def property_schema(self, node: dict[str, Any], key: str) -> Any:
        properties = node.get("properties") or {}
        if key in properties:
            return properties[key]
        for pattern, schema in (node.get("patternProperties") or {}).items():
            if _regex_compiled(pattern).search(key):
                return schema
        extra = node.get("additionalProperties", True)
        if extra is False:
            raise Unsatisfiable(f"property {key!r} is required but not allowed")
        return extra

    def new_key(self, node: dict[str, Any], keys: list[str]) -> str:
        names = node.get("propertyNames")
        for pattern in node.get("patternProperties") or {}:
            return generate(_regex(pattern), self.rng)
        if node.get("additionalProperties", True) is False:
            raise Unsatisfiable("minProperties needs properties the schema does not allow")
        if isinstance(names, dict) and names:
            return str(self.value(names, _MAX_DEPTH))
        return f"{self.words(1, 1)}_{len(keys)}"

    def words(self, low: int, high: int) -> str:
        count = self.rng.randint(low, high)
        return " ".join(_WORDS[int(self.rng.random() * len(_WORDS))] for _ in range(count))

    def sized_words(self, low: int, high: int | None) -> str:
        text = self.words(1, 4).capitalize()
        if high is None:
            while len(text) < low:
                text += " " + self.words(1, 1)
            return text
        target = self.rng.randint(low, max(low, min(high, low + 24)))
        while len(text) < target:
            text += " " + self.words(1, 1)
        text = text[:target]
        # Cut between words where the bounds allow it.
        return text[:-1] if text.endswith(" ") and len(text) > low else text


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
        elif key in _BOUND_KEYS and _is_number(value) and _is_number(out[key]):
            out[key] = _BOUND_KEYS[key](out[key], value)
        elif key == "type":
            out[key] = _same_types(out[key], value)
        elif key == "enum":
            out[key] = [v for v in out[key] if any(json_equal(v, w) for w in value)]
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


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds(node: dict[str, Any], *, integer: bool) -> tuple[Any, Any]:
    low, high = node.get("minimum"), node.get("maximum")
    low_x, high_x = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if low_x is True:
        low_x, low = low, None
    if high_x is True:
        high_x, high = high, None
    nudge = 1 if integer else 0.01
    lows: list[float] = [low] if _is_number(low) else []
    highs: list[float] = [high] if _is_number(high) else []
    lows += [low_x + nudge] if _is_number(low_x) else []
    highs += [high_x - nudge] if _is_number(high_x) else []
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


def _multiple(low: float, high: float, step: float, rng: random.Random, *, integer: bool) -> Any:
    first, last = math.ceil(low / step), math.floor(high / step)
    if first > last:
        raise Unsatisfiable("no multiple of multipleOf lies within the bounds")
    start = rng.randint(first, last)
    for k in (*range(start, min(last, start + 50) + 1), *range(first, min(last, first + 50) + 1)):
        value = k * step
        value = round(value) if integer else round(value, 12)
        if low <= value <= high and multiple_of(value, step):
            return value
    raise Unsatisfiable("no multiple of multipleOf lies within the bounds")


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> Node:
    return parse_regex(pattern)


@functools.lru_cache(maxsize=256)
def _regex_compiled(pattern: str) -> Any:
    import regex

    return regex.compile(pattern)


def _date(m: _Maker) -> str:
    r = m.rng
    return f"{r.randint(2000, 2030):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def _time(m: _Maker) -> str:
    r = m.rng
    return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"


def _ipv6(m: _Maker) -> str:
    return ":".join(f"{m.rng.getrandbits(16):x}" for _ in range(8))


def _word(m: _Maker) -> str:
    return m.words(1, 1)


_FORMATS: dict[str, Callable[[_Maker], str]] = {
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

_KINDS = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_IMPLIED = (
    (("properties", "required", "additionalProperties", "patternProperties",
      "minProperties", "maxProperties", "propertyNames"), "object"),
    (("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems"), "array"),
    (("minLength", "maxLength", "pattern", "format"), "string"),
    (("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"), "number"),
)  # fmt: skip
