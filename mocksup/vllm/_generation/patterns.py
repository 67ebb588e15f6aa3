"""Text that matches a pattern: a regular expression (or a grammar's rules) made into strings.

:func:`parse_regex` reads the regular-expression syntax vLLM's structured-output backends
take (literals and escapes, ``.``, classes with ranges and ``\\d\\w\\s``, groups of every
capturing kind, alternation, ``? * + {m,n}`` greedy or lazy, anchors, inline flags) into a
small tree of :class:`Node`; :func:`generate` walks it with a seeded generator. What it
cannot satisfy by construction (look-arounds, back-references, word boundaries, Unicode
properties, verbose mode) raises :class:`Unsatisfiable`, answered with vLLM's 400 rather
than risking an output that does not match. Grammars (:mod:`.grammar`) reuse the same
nodes plus :class:`Ref`, and a depth budget that steers recursion towards its shortest end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = [
    "Alt",
    "Chars",
    "Lit",
    "Node",
    "Ref",
    "Rep",
    "Seq",
    "Unsatisfiable",
    "generate",
    "parse_regex",
]

#: Characters picked first from a class: what a model would plausibly write.
_PREFERRED = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:;/@#!?+*=()[]{}<>'\"&%$"
)
#: Extra repetitions an unbounded quantifier draws (``*``: 0 to this, ``+``: 1 to 1 + this).
UNBOUNDED_EXTRA = 3
#: Characters one generated string may have at most.
MAX_CHARS = 100_000


class Unsatisfiable(ValueError):
    """A pattern (or schema, or grammar) the mock cannot generate a matching text for."""


class Node:
    """A node of a pattern tree."""

    __slots__ = ()


@dataclass(eq=False)
class Lit(Node):
    """Literal text."""

    text: str


@dataclass(eq=False)
class Chars(Node):
    """One character out of a set (``negated``: out of its complement)."""

    ranges: list[tuple[int, int]]
    negated: bool = False
    pool: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.pool = "".join(c for c in _PREFERRED if self.accepts(ord(c)))

    def accepts(self, code: int) -> bool:
        """Whether the character ``code`` belongs to the set."""
        inside = any(lo <= code <= hi for lo, hi in self.ranges)
        return inside != self.negated

    def pick(self, rng: random.Random) -> str:
        """A member, from the plausible characters when there are any."""
        if self.pool:
            return self.pool[int(rng.random() * len(self.pool))]
        if not self.negated and self.ranges:
            lo, hi = self.ranges[int(rng.random() * len(self.ranges))]
            return chr(rng.randint(lo, hi))
        for code in range(0xA1, 0x110000):
            if self.accepts(code) and not 0xD800 <= code <= 0xDFFF:
                return chr(code)
        raise Unsatisfiable("a character class no character matches")


@dataclass(eq=False)
class Seq(Node):
    """Items one after the other."""

    items: list[Node]


@dataclass(eq=False)
class Alt(Node):
    """One of several options."""

    options: list[Node]


@dataclass(eq=False)
class Rep(Node):
    """``item`` repeated ``low`` to ``high`` times (``None``: unbounded)."""

    item: Node
    low: int
    high: int | None


@dataclass(eq=False)
class Ref(Node):
    """A grammar rule by name."""

    name: str


@dataclass
class _Budget:
    """What a generation may still spend: characters, and rule nesting (grammars)."""

    rules: dict[str, Node]
    costs: dict[str, int]
    depth: int
    chars: int = MAX_CHARS
    nesting: int = 0


def generate(
    node: Node,
    rng: random.Random,
    rules: dict[str, Node] | None = None,
    costs: dict[str, int] | None = None,
    depth: int = 12,
) -> str:
    """A text ``node`` matches, drawn with ``rng``.

    :param rules: a grammar's rules, for :class:`Ref` nodes; ``costs`` their depth to
        the shortest derivation (:func:`rule_costs`); past ``depth`` nested rules every
        choice takes the shortest way out.
    :raises Unsatisfiable: the text would pass :data:`MAX_CHARS`, or a class is empty.
    """
    out: list[str] = []
    _walk(node, rng, out, _Budget(rules or {}, costs or {}, depth))
    return "".join(out)


def _walk(node: Node, rng: random.Random, out: list[str], budget: _Budget) -> None:
    if isinstance(node, Lit):
        _spend(budget, len(node.text))
        out.append(node.text)
    elif isinstance(node, Chars):
        _spend(budget, 1)
        out.append(node.pick(rng))
    elif isinstance(node, Seq):
        for item in node.items:
            _walk(item, rng, out, budget)
    elif isinstance(node, Alt):
        _walk(_option(node, rng, budget), rng, out, budget)
    elif isinstance(node, Rep):
        for _ in range(_count(node, rng, budget)):
            _walk(node.item, rng, out, budget)
    elif isinstance(node, Ref):
        budget.nesting += 1
        _walk(budget.rules[node.name], rng, out, budget)
        budget.nesting -= 1


def _spend(budget: _Budget, chars: int) -> None:
    budget.chars -= chars
    if budget.chars < 0:
        raise Unsatisfiable(f"the text would be longer than the mock's {MAX_CHARS} characters")


def _option(node: Alt, rng: random.Random, budget: _Budget) -> Node:
    if budget.nesting < budget.depth or not budget.costs:
        return node.options[int(rng.random() * len(node.options))]
    # Deep in a recursive grammar: the option closest to a finished text.
    return min(node.options, key=lambda option: cost(option, budget.costs))


def _count(node: Rep, rng: random.Random, budget: _Budget) -> int:
    if budget.nesting >= budget.depth and budget.costs:
        return node.low
    high = node.low + UNBOUNDED_EXTRA if node.high is None else node.high
    return rng.randint(node.low, max(node.low, min(high, node.low + 8)))


def cost(node: Node, costs: dict[str, int]) -> int:
    """Rule nesting needed to finish ``node`` (a large number while unknown)."""
    if isinstance(node, Ref):
        return costs.get(node.name, _INFINITE) + 1
    if isinstance(node, Seq):
        return max((cost(i, costs) for i in node.items), default=0)
    if isinstance(node, Alt):
        return min(cost(o, costs) for o in node.options)
    if isinstance(node, Rep):
        return 0 if node.low == 0 else cost(node.item, costs)
    return 0


_INFINITE = 1 << 30


def rule_costs(rules: dict[str, Node]) -> dict[str, int]:
    """Each rule's nesting to its shortest finished text (a fixpoint over the rules).

    :raises Unsatisfiable: a rule with no finite text, or a reference to no rule.
    """
    for node in rules.values():
        _check_refs(node, rules)
    costs = dict.fromkeys(rules, _INFINITE)
    changed = True
    while changed:
        changed = False
        for name, node in rules.items():
            value = min(cost(node, costs), _INFINITE)
            if value < costs[name]:
                costs[name], changed = value, True
    endless = [name for name, value in costs.items() if value >= _INFINITE]
    if endless:
        raise Unsatisfiable(f"rule {endless[0]} never ends")
    return costs


def _check_refs(node: Node, rules: dict[str, Node]) -> None:
    if isinstance(node, Ref) and node.name not in rules:
        raise Unsatisfiable(f"undefined rule {node.name}")
    for child in _children(node):
        _check_refs(child, rules)


def _children(node: Node) -> list[Node]:
    if isinstance(node, Seq):
        return node.items
    if isinstance(node, Alt):
        return node.options
    if isinstance(node, Rep):
        return [node.item]
    return []


# -- regular expressions ---------------------------------------------------------------------

_DIGITS = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE = [(0x09, 0x0D), (0x20, 0x20)]
_CLASSES = {"d": (_DIGITS, False), "D": (_DIGITS, True), "w": (_WORD, False),
            "W": (_WORD, True), "s": (_SPACE, False), "S": (_SPACE, True)}  # fmt: skip
_CONTROL = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "0": "\0"}
_REFUSED_ESCAPES = {
    "b": "word boundaries (\\b)",
    "B": "word boundaries (\\B)",
    "G": "\\G",
    "p": "Unicode properties (\\p)",
    "P": "Unicode properties (\\P)",
    "k": "back-references",
    "N": "named characters (\\N)",
    "X": "grapheme clusters (\\X)",
}
_QUIET_FLAGS = frozenset("imsuaL")


def parse_regex(pattern: str) -> Node:
    """The tree of ``pattern``.

    :raises Unsatisfiable: a construct the mock cannot generate text for, or bad syntax.
    """
    parser = _RegexParser(pattern)
    node = parser.alternation()
    if parser.pos != len(pattern):
        raise Unsatisfiable(f"unbalanced parenthesis at position {parser.pos}")
    return node


class _RegexParser:
    """Recursive descent over a pattern's characters."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise Unsatisfiable("the pattern ends too early")
        self.pos += 1
        return char

    def alternation(self) -> Node:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alt(options)

    def sequence(self) -> Node:
        items: list[Node] = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            if atom is not None:
                items.append(self.quantified(atom))
        return items[0] if len(items) == 1 else Seq(items)

    def quantified(self, atom: Node) -> Node:
        while True:
            char = self.peek()
            if char in ("*", "+", "?"):
                self.pos += 1
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
            elif char == "{" and (bounds := self.braces()) is not None:
                low, high = bounds
            else:
                return atom
            if self.peek() in ("?", "+"):
                self.pos += 1  # lazy or possessive: the same texts match
            atom = Rep(atom, low, high)

    def braces(self) -> tuple[int, int | None] | None:
        # {m}, {m,}, {m,n}, {,n}; anything else is a literal brace, as in Python.
        end = self.text.find("}", self.pos)
        if end < 0:
            return None
        body = self.text[self.pos + 1 : end]
        low_text, comma, high_text = body.partition(",")
        if not (low_text.isdigit() or (comma and not low_text)) or (
            high_text and not high_text.isdigit()
        ):
            return None
        if not comma and not low_text:
            return None
        self.pos = end + 1
        low = int(low_text or 0)
        high = (int(high_text) if high_text else None) if comma else low
        if high is not None and high < low:
            raise Unsatisfiable(f"min repeat greater than max repeat in {{{body}}}")
        return low, high

    def atom(self) -> Node | None:
        char = self.take()
        if char == "(":
            return self.group()
        if char == "[":
            return self.char_class()
        if char == ".":
            return Chars([(0x0A, 0x0A)], negated=True)
        if char in ("^", "$"):
            return None  # anchors: the whole text is generated anyway
        if char == "\\":
            return self.escape()
        if char in ("*", "+", "?"):
            raise Unsatisfiable(f"nothing to repeat at position {self.pos - 1}")
        return Lit(char)

    def group(self) -> Node | None:
        if self.peek() != "?":
            return self.closed(self.alternation())
        self.pos += 1
        kind = self.take()
        if kind in (":", ">"):
            return self.closed(self.alternation())
        named = kind == "'" or (kind == "P" and self.peek() == "<")
        if named or (kind == "<" and self.peek() not in ("=", "!")):
            if kind == "P":
                self.pos += 1
            end = self.text.find("'" if kind == "'" else ">", self.pos)
            if end < 0:
                raise Unsatisfiable("unterminated group name")
            self.pos = end + 1
            return self.closed(self.alternation())
        if kind == "#":
            end = self.text.find(")", self.pos)
            if end < 0:
                raise Unsatisfiable("unterminated comment")
            self.pos = end + 1
            return None
        if (kind.isalpha() and kind != "P") or kind == "-":
            return self.flags(kind)
        what = {"=": "look-ahead", "!": "look-ahead", "<": "look-behind", "P": "back-references",
                "(": "conditional groups", "|": "branch reset groups"}  # fmt: skip
        raise Unsatisfiable(f"{what.get(kind, 'the group (?' + kind + ')')} not supported")

    def flags(self, first: str) -> Node | None:
        letters = first
        while self.peek() not in (")", ":", ""):
            letters += self.take()
        if set(letters.replace("-", "")) - _QUIET_FLAGS:
            raise Unsatisfiable(f"inline flags ({letters}) not supported")
        if self.take() == ")":
            return None
        return self.closed(self.alternation())

    def closed(self, node: Node) -> Node:
        if self.take() != ")":
            raise Unsatisfiable("missing ), unterminated subpattern")
        return node

    def escape(self) -> Node | None:
        char = self.take()
        if char in _CLASSES:
            ranges, negated = _CLASSES[char]
            return Chars(list(ranges), negated)
        if char in ("A", "Z", "z"):
            return None
        if char in _REFUSED_ESCAPES or (char.isdigit() and char != "0"):
            what = _REFUSED_ESCAPES.get(char, "back-references")
            raise Unsatisfiable(f"{what} not supported")
        return Lit(self.escaped_char(char))

    def escaped_char(self, char: str) -> str:
        if char in _CONTROL:
            return _CONTROL[char]
        width = {"x": 2, "u": 4, "U": 8}.get(char)
        if width is None:
            return char
        if char == "u" and self.peek() == "{":
            end = self.text.find("}", self.pos)
            digits, self.pos = self.text[self.pos + 1 : end], end + 1
        else:
            digits = self.text[self.pos : self.pos + width]
            self.pos += width
        try:
            return chr(int(digits, 16))
        except ValueError:
            raise Unsatisfiable(f"bad escape \\{char}{digits}") from None

    def char_class(self) -> Node:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            char = self.take()
            if char == "]" and not first:
                break
            first = False
            if char == "[" and self.peek() == ":":
                raise Unsatisfiable("POSIX classes ([:name:]) not supported")
            low = self.class_item(char, ranges)
            if low is None:
                continue
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self.class_item(self.take(), ranges)
                if high is None or high < low:
                    raise Unsatisfiable("bad character range")
                ranges.append((low, high))
            else:
                ranges.append((low, low))
        return Chars(ranges, negated)

    def class_item(self, char: str, ranges: list[tuple[int, int]]) -> int | None:
        # One member's code point, or None when it was a class escape (added to ranges).
        if char != "\\":
            return ord(char)
        escaped = self.take()
        if escaped in _CLASSES:
            members, negated = _CLASSES[escaped]
            ranges.extend(_complement(members) if negated else members)
            return None
        if escaped in _REFUSED_ESCAPES and escaped != "b":
            raise Unsatisfiable(f"{_REFUSED_ESCAPES[escaped]} not supported")
        return ord("\b" if escaped == "b" else self.escaped_char(escaped))


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = 0
    for lo, hi in sorted(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = max(start, hi + 1)
    out.append((start, 0x10FFFF))
    return out
