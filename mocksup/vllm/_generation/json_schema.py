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

The whole document is then checked (:class:`~.json_check.Checker`) and drawn again when a
keyword the construction does not guarantee (``not``, ``if``, ``oneOf``'s exclusivity, a
pattern's length) failed; after a few draws the schema is refused with
:class:`~.patterns.Unsatisfiable`, never answered with a document that does not conform.

The value is built in the order of its JSON text, and the characters of that text are
counted as it grows: once they pass the :class:`~.budget.Budget`'s, construction stops with
:class:`~.budget.Full`, carrying the value so far (the last item cut: a shorter string, an
array or object with fewer members) and how much of its text is a prefix of a conforming
document. ``minLength: 1000000`` thus costs what ``max_tokens`` lets through, not a
million characters. Every node built and checked spends the request's work.
"""

from __future__ import annotations

import functools
import json
import random
from typing import Any

from mocksup.vllm._generation.budget import Budget, Full
from mocksup.vllm._generation.json_check import Checker, canonical, resolve
from mocksup.vllm._generation.json_values import FORMATS, bounds, is_number, merge, multiple
from mocksup.vllm._generation.patterns import Unsatisfiable, generate
from mocksup.vllm._generation.regexes import parse_regex
from mocksup.vllm.tokenizer import WORDS

__all__ = ["schema_value", "text_length"]

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


def schema_value(schema: Any, rng: random.Random, budget: Budget | None = None) -> Any:
    """A value valid against ``schema``.

    :param budget: the characters its JSON text (:func:`text_length`) may take, and the
        request's work; by default :data:`~mocksup.vllm._limits.MAX_STRUCTURED_CHARS` and
        a fresh one.
    :raises Full: the text reached the budget's characters: ``partial`` is the value so
        far, ``prefix`` how many characters of its text begin a conforming document.
    :raises OverBudget: the schema took more than the budget's work.
    :raises Unsatisfiable: the mock found no valid value (the schema admits none, or none
        it can construct).
    """
    maker = _Maker(schema, rng, budget or Budget())
    for _ in range(ATTEMPTS):
        maker.used = 0
        try:
            value = maker.value(schema, 0)
        except Full as full:
            full.prefix = maker.used
            raise
        if maker.check.conforms(value, schema):
            return value
    raise Unsatisfiable("the mock could not generate a value valid against the schema")


def text_length(value: Any) -> int:
    """The characters of ``value``'s JSON text as the mock writes it (``json.dumps``,
    ``ensure_ascii=False``)."""
    return len(json.dumps(value, ensure_ascii=False))


class _Maker:
    """One document's construction: the root (for ``$ref``), the generator, the budget
    and how many characters of the text are built (``used``)."""

    def __init__(self, root: Any, rng: random.Random, budget: Budget) -> None:
        self.root = root
        self.rng = rng
        self.budget = budget
        self.check = Checker(root, budget.work)
        self.used = 0
        # Derived schemas by the identity of their source (kept alive beside them), so an
        # array of a million items merges its item schema once.
        self._memo: dict[tuple[str, int], tuple[Any, Any]] = {}

    def spend(self, chars: int, value: Any) -> None:
        """Count ``value``'s ``chars``; past the budget, stop with it as the last item."""
        self.budget.work.light(min(chars, max(self.budget.chars - self.used, 0) + 1))
        self.used += chars
        if self.used > self.budget.chars:
            raise Full(value)

    def memo(self, kind: str, node: Any, make: Any) -> Any:
        known = self._memo.get((kind, id(node)))
        if known is None or known[0] is not node:
            known = (node, make())
            self._memo[(kind, id(node))] = known
        return known[1]

    def value(self, node: Any, depth: int) -> Any:
        self.budget.tick()
        if depth > _MAX_DEPTH:
            raise Unsatisfiable("the schema recurses without an end")
        node = self.flatten(node)
        if isinstance(node, dict) and ("not" in node or "if" in node):
            # Easier checked than built: draw until one passes.
            mark = self.used
            for _ in range(ATTEMPTS * 3):
                self.used = mark
                value = self.built(node, depth)
                if self.check.conforms(value, node):
                    return value
            raise Unsatisfiable("no value found that passes its not/if keywords")
        return self.built(node, depth)

    def built(self, node: Any, depth: int) -> Any:
        if node is False:
            raise Unsatisfiable("a schema admits no value (false)")
        if node is True or not node:
            return self.anything()
        if "const" in node:
            self.spend(text_length(node["const"]), node["const"])
            return node["const"]
        if "enum" in node:
            return self.listed(node)
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                return self.branch(node, key, depth)
        kind = self.kind(node)
        return getattr(self, "make_" + kind)(node, depth)

    def flatten(self, node: Any) -> Any:
        """``node`` with its ``$ref`` and ``allOf`` merged in."""
        if not isinstance(node, dict) or ("$ref" not in node and "allOf" not in node):
            return node
        return self.memo("flat", node, lambda: self.flattened(node))

    def flattened(self, node: Any) -> Any:
        for _ in range(_MAX_DEPTH):
            if not isinstance(node, dict):
                return node
            ref, parts = node.get("$ref"), node.get("allOf")
            if not isinstance(ref, str) and not isinstance(parts, list):
                return node
            self.budget.tick(len(parts) if isinstance(parts, list) else 1)
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

    def listed(self, node: dict[str, Any]) -> Any:
        def fitting() -> list[Any]:
            values = node["enum"]
            if not isinstance(values, list) or not values:
                raise Unsatisfiable("enum must be a non-empty array")
            self.budget.tick(len(values))
            rest = {k: v for k, v in node.items() if k != "enum"}
            return [v for v in values if self.check.conforms(v, rest)]

        found = self.memo("enum", node, fitting)
        if not found:
            raise Unsatisfiable("no value of an enum fits the rest of its schema")
        value = found[int(self.rng.random() * len(found))]
        self.spend(text_length(value), value)
        return value

    def branch(self, node: dict[str, Any], key: str, depth: int) -> Any:
        def merged() -> list[Any]:
            self.budget.tick(len(node[key]))
            rest = {k: v for k, v in node.items() if k != key}
            return [merge(rest, self.flatten(option)) for option in node[key]]

        options = list(self.memo(key, node, merged))
        self.budget.tick(len(options) // 16 + 1)
        self.rng.shuffle(options)
        mark = self.used
        for option in options:
            self.used = mark
            try:
                value = self.value(option, depth + 1)
            except Unsatisfiable:
                continue
            if key == "anyOf" or sum(self.check.conforms(value, o) for o in node[key]) == 1:
                return value
        self.used = mark
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

    def anything(self) -> Any:
        draw = self.rng.random()
        if draw < 0.5:
            value: Any = self.words(1, 3)
        elif draw < 0.7:
            value = self.rng.randint(0, 100)
        elif draw < 0.8:
            value = round(self.rng.uniform(0, 100), 2)
        else:
            value = self.rng.random() < 0.5 if draw < 0.95 else None
        self.spend(text_length(value), value)
        return value

    def make_any(self, node: dict[str, Any], depth: int) -> Any:
        return self.anything()

    def make_null(self, node: dict[str, Any], depth: int) -> Any:
        self.spend(4, None)
        return None

    def make_boolean(self, node: dict[str, Any], depth: int) -> Any:
        value = self.rng.random() < 0.5
        self.spend(text_length(value), value)
        return value

    def make_integer(self, node: dict[str, Any], depth: int) -> Any:
        low, high = bounds(node, integer=True)
        step = node.get("multipleOf")
        if is_number(step) and step > 0:
            value = multiple(low, high, step, self.rng, integer=True)
        else:
            value = self.rng.randint(low, high)
        self.spend(text_length(value), value)
        return value

    def make_number(self, node: dict[str, Any], depth: int) -> Any:
        low, high = bounds(node, integer=False)
        step = node.get("multipleOf")
        if is_number(step) and step > 0:
            value = multiple(low, high, step, self.rng, integer=False)
        else:
            value = round(self.rng.uniform(low, high), 2)
            value = value if low <= value <= high else (low + high) / 2
        self.spend(text_length(value), value)
        return value

    def make_string(self, node: dict[str, Any], depth: int) -> Any:
        low = node.get("minLength", 0)
        high = node.get("maxLength")
        if high is not None and high < low:
            raise Unsatisfiable("maxLength is below minLength")
        form, pattern = node.get("format"), node.get("pattern")
        if isinstance(pattern, str):
            text = self.patterned(pattern, low, high)
        elif isinstance(form, str) and form in FORMATS:
            text = self.formatted(form, low, high)
        else:
            room = self.budget.chars - self.used - 1  # after the opening quote
            if low > room:  # cannot end within the budget: as much as it allows, cut
                cut = self.sized_words(max(room + 1, 0), max(room + 1, 0))
                self.budget.work.light(len(cut))
                self.used += text_length(cut) - 1  # the opening quote and the words
                raise Full(cut)
            text = self.sized_words(low, high)
        self.spend(text_length(text), text)
        return text

    def patterned(self, pattern: str, low: int, high: int | None) -> str:
        node = _regex(pattern)
        room = self.budget.chars - self.used
        cap = room if high is None else min(room, high)
        for _ in range(ATTEMPTS * 2):
            try:
                text = generate(node, self.rng, budget=Budget(cap, self.budget.work))
            except Full as full:
                if high is not None and high < room:
                    continue  # longer than maxLength: draw again
                # Past the room: a prefix of a text the pattern matches ends the document.
                self.used += text_length(full.partial) - 1
                raise Full(full.partial) from None
            if len(text) >= low and (high is None or len(text) <= high):
                return text
        raise Unsatisfiable("no string of the pattern fits its length bounds")

    def formatted(self, form: str, low: int, high: int | None) -> str:
        for _ in range(ATTEMPTS * 2):
            text = FORMATS[form](self)
            if len(text) >= low and (high is None or len(text) <= high):
                return text
        raise Unsatisfiable("no string of the format fits its length bounds")

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
        self.spend(1, [])
        out = self.fill(node, prefix, rest, count, depth)
        self.used += 1
        return out

    def fill(self, node: dict[str, Any], prefix: list[Any], rest: Any, count: int,
             depth: int) -> list[Any]:  # fmt: skip
        contains = node.get("contains")
        needed = node.get("minContains", 1) if contains is not None else 0
        unique = bool(node.get("uniqueItems"))
        seen: set[Any] = set()
        out: list[Any] = []
        both = (
            self.memo("contains", node, lambda: merge(self.flatten(rest), self.flatten(contains)))
            if needed
            else None
        )
        for i in range(max(count, needed)):
            schema = prefix[i] if i < len(prefix) else rest
            if i >= len(prefix) and needed:
                schema, needed = both, needed - 1
            mark = self.used + (2 if out else 0)  # the ", " before the item
            for _ in range(ATTEMPTS * 2):
                self.used = mark
                try:
                    item = self.value(schema, depth + 1)
                except Full as full:
                    if unique and canonical(full.partial) in seen:
                        continue  # a repeated item must not begin the text either
                    raise Full([*out, full.partial]) from None
                if not unique or canonical(item) not in seen:
                    break
            else:
                self.used = mark - (2 if out else 0)
                if len(out) >= node.get("minItems", 0):
                    break
                raise Unsatisfiable("not enough distinct items for uniqueItems")
            if unique:
                seen.add(canonical(item))
            out.append(item)
        return out

    def make_object(self, node: dict[str, Any], depth: int) -> Any:
        properties = node.get("properties") or {}
        required = list(dict.fromkeys(k for k in node.get("required", []) if isinstance(k, str)))
        needed = set(required)
        most = node.get("maxProperties")
        if most is not None and len(required) > most:
            raise Unsatisfiable("more required properties than maxProperties")
        self.budget.tick(len(properties) + 1)
        chance = 0.75 if depth < _SHALLOW else 0.0
        keys = [k for k in properties if k in needed or (chance and self.rng.random() < chance)]
        keys += [k for k in required if k not in properties]
        keys = self.dependents(node, keys)
        if most is not None and len(keys) > most:
            optional = [k for k in keys if k not in needed]
            dropped = set(optional[len(optional) - (len(keys) - most) :])  # the last ones
            keys = [k for k in keys if k not in dropped]
        self.spend(1, {})
        out: dict[str, Any] = {}
        for key in keys:
            self.member(node, out, key, depth)
        spare = (k for k in properties if k not in out)
        least = node.get("minProperties", 0)
        while len(out) < least:
            key = next(spare, None)
            self.member(node, out, self.new_key(node, out) if key is None else key, depth)
        self.used += 1
        return out

    def member(self, node: dict[str, Any], out: dict[str, Any], key: str, depth: int) -> None:
        """Add ``key`` and a value of its schema to ``out``, counting ``"key": value``."""
        self.used += (2 if out else 0) + text_length(key) + 2
        try:
            out[key] = self.value(self.property_schema(node, key), depth + 1)
        except Full as full:
            raise Full({**out, key: full.partial}) from None

    def dependents(self, node: dict[str, Any], keys: list[str]) -> list[str]:
        needs = self.memo(
            "needs",
            node,
            lambda: {**node.get("dependencies", {}), **node.get("dependentRequired", {})},
        )
        have = set(keys)
        for key in keys:  # grows as it goes: a dependency's dependencies come in too
            for other in needs.get(key, []) if isinstance(needs.get(key), list) else []:
                self.budget.tick()
                if other not in have:
                    keys.append(other)
                    have.add(other)
        return keys

    def property_schema(self, node: dict[str, Any], key: str) -> Any:
        properties = node.get("properties") or {}
        if key in properties:
            return properties[key]
        for pattern, schema in (node.get("patternProperties") or {}).items():
            if self.check.search(pattern, key):
                return schema
        extra = node.get("additionalProperties", True)
        if extra is False:
            raise Unsatisfiable(f"property {key!r} is required but not allowed")
        return extra

    def new_key(self, node: dict[str, Any], out: dict[str, Any]) -> str:
        """A name for one more property, not among ``out``'s (its characters counted; a
        name cut by the budget ends the document as that property's)."""
        if node.get("additionalProperties", True) is False and not node.get("patternProperties"):
            raise Unsatisfiable("minProperties needs properties the schema does not allow")
        mark = self.used
        for _ in range(ATTEMPTS * 2):
            self.used = mark + (2 if out else 0)
            try:
                key = self.drawn_key(node, len(out))
            except Full as full:
                cut = full.partial
                if not isinstance(cut, str) or cut in out:
                    self.used = mark  # not a name that begins a new property: the object so far
                    raise Full(dict(out)) from None
                raise Full({**out, cut: None}) from None
            if key not in out:
                self.used = mark
                return key
        raise Unsatisfiable("no new property name found for minProperties")

    def drawn_key(self, node: dict[str, Any], count: int) -> str:
        names = node.get("propertyNames")
        for pattern in node.get("patternProperties") or {}:
            room = self.budget.chars - self.used - 1
            try:
                key = generate(_regex(pattern), self.rng, budget=Budget(room, self.budget.work))
            except Full as full:
                self.used += text_length(full.partial) - 1
                raise
            self.spend(text_length(key), key)
            return key
        if isinstance(names, dict) and names:
            named = self.memo("names", node, lambda: merge({"type": "string"}, names))
            return str(self.value(named, _MAX_DEPTH))
        key = f"{self.words(1, 1)}_{count}"
        self.spend(text_length(key), key)
        return key

    def words(self, low: int, high: int) -> str:
        count = self.rng.randint(low, high)
        return " ".join(_WORDS[int(self.rng.random() * len(_WORDS))] for _ in range(count))

    def sized_words(self, low: int, high: int | None) -> str:
        parts = [self.words(1, 4).capitalize()]
        size = len(parts[0])
        target = low if high is None else self.rng.randint(low, max(low, min(high, low + 24)))
        while size < target:
            word = self.words(1, 1)
            parts.append(word)
            size += len(word) + 1
        text = " ".join(parts)[: max(target, size) if high is None else target]
        # Cut between words where the bounds allow it.
        return text[:-1] if text.endswith(" ") and len(text) > low else text


#: Pattern trees by pattern (the document check compiles the pattern only if it ends).
_regex = functools.lru_cache(maxsize=64)(parse_regex)

_KINDS = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_IMPLIED = (
    (("properties", "required", "additionalProperties", "patternProperties",
      "minProperties", "maxProperties", "propertyNames"), "object"),
    (("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems"), "array"),
    (("minLength", "maxLength", "pattern", "format"), "string"),
    (("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"), "number"),
)  # fmt: skip
