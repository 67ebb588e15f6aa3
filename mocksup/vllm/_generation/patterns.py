"""Text that matches a pattern: a tree of :class:`Node` made into strings.

A regular expression (:func:`~.regexes.parse_regex`) or a grammar's rules (:mod:`.grammar`)
become a small tree of literals, character classes, sequences, choices, repetitions and
rule references; :func:`generate` walks it with a seeded generator, within a
:class:`~.budget.Budget` (its text stops at the budget's characters, its walk spends the
request's steps). A grammar's walk uses :func:`rule_costs`, each rule's nesting to its
shortest text, to steer recursion towards its end past a depth.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from mocksup.vllm._generation.budget import Budget, Full

__all__ = [
    "Alt",
    "Chars",
    "Costs",
    "Lit",
    "Node",
    "Ref",
    "Rep",
    "Seq",
    "Unsatisfiable",
    "complement",
    "generate",
    "rule_costs",
]

#: Characters picked first from a class: what a model would plausibly write.
_PREFERRED = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:;/@#!?+*=()[]{}<>'\"&%$"
)
#: Extra repetitions an unbounded quantifier draws (``*``: 0 to this, ``+``: 1 to 1 + this).
UNBOUNDED_EXTRA = 3


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
    found: int = field(init=False, default=-1)

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
            code = rng.randint(lo, hi)
            if not 0xD800 <= code <= 0xDFFF:  # a lone surrogate is no text
                return chr(code)
        return chr(self.spare())

    def spare(self) -> int:
        """A member that is no surrogate, past Latin-1's controls when one is (found from
        the ranges, not by trying every code point)."""
        if self.found < 0:
            members = complement(self.ranges) if self.negated else sorted(self.ranges)
            usable = [(lo, hi) for lo, hi in members for lo, hi in _minus_surrogates(lo, hi)]
            late = [max(lo, 0xA1) for lo, hi in usable if hi >= 0xA1]
            if not usable:
                raise Unsatisfiable("a character class no character matches")
            self.found = late[0] if late else usable[0][0]
        return self.found


def _minus_surrogates(lo: int, hi: int) -> list[tuple[int, int]]:
    parts = [(lo, min(hi, 0xD7FF)), (max(lo, 0xE000), hi)]
    return [(a, b) for a, b in parts if a <= b]


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


#: Node costs of a grammar (:func:`rule_costs`): by rule name, and by ``id`` of each node.
Costs = dict[int | str, int]


@dataclass
class _Walk:
    """One generation's state: the budget, and rule nesting (grammars)."""

    rules: dict[str, Node]
    costs: Costs
    depth: int
    budget: Budget
    chars: int
    nesting: int = 0


def generate(
    node: Node,
    rng: random.Random,
    rules: dict[str, Node] | None = None,
    costs: Costs | None = None,
    depth: int = 12,
    *,
    budget: Budget | None = None,
) -> str:
    """A text ``node`` matches, drawn with ``rng``.

    :param rules: a grammar's rules, for :class:`Ref` nodes; ``costs`` the nesting to their
        shortest derivation (:func:`rule_costs`); past ``depth`` nested rules every choice
        takes the shortest way out.
    :param budget: the characters the text may take and the request's work (by default
        :data:`~mocksup.vllm._limits.MAX_STRUCTURED_CHARS` and a fresh :class:`~.budget.Work`).
    :raises Full: the text reached the budget's characters (``partial``: the text so far).
    :raises OverBudget: the walk took the request's steps.
    :raises Unsatisfiable: a character class no character matches.
    """
    budget = budget or Budget()
    out: list[str] = []
    try:
        _walk(node, rng, out, _Walk(rules or {}, costs or {}, depth, budget, budget.chars))
    except _Stop:
        raise Full("".join(out)) from None
    return "".join(out)


class _Stop(Exception):
    """The text reached its characters."""


def _walk(node: Node, rng: random.Random, out: list[str], walk: _Walk) -> None:
    walk.budget.work.light(1)  # also a repetition of nothing costs its steps
    if isinstance(node, Lit):
        out.append(node.text)
        _spend(walk, len(node.text))
    elif isinstance(node, Chars):
        out.append(node.pick(rng))
        _spend(walk, 1)
    elif isinstance(node, Seq):
        for item in node.items:
            _walk(item, rng, out, walk)
    elif isinstance(node, Alt):
        _walk(_option(node, rng, walk), rng, out, walk)
    elif isinstance(node, Rep):
        for _ in range(_count(node, rng, walk)):
            _walk(node.item, rng, out, walk)
    elif isinstance(node, Ref):
        walk.nesting += 1
        _walk(walk.rules[node.name], rng, out, walk)
        walk.nesting -= 1


def _spend(walk: _Walk, chars: int) -> None:
    walk.chars -= chars
    if walk.chars < 0:
        raise _Stop


def _option(node: Alt, rng: random.Random, walk: _Walk) -> Node:
    if walk.nesting < walk.depth or not walk.costs:
        return node.options[int(rng.random() * len(node.options))]
    # Deep in a recursive grammar: the option closest to a finished text.
    return min(node.options, key=lambda option: walk.costs.get(id(option), _INFINITE))


def _count(node: Rep, rng: random.Random, walk: _Walk) -> int:
    if walk.nesting >= walk.depth and walk.costs:
        return node.low
    high = node.low + UNBOUNDED_EXTRA if node.high is None else node.high
    return rng.randint(node.low, max(node.low, min(high, node.low + 8)))


_INFINITE = 1 << 30


def rule_costs(rules: dict[str, Node]) -> Costs:
    """Each rule's and node's nesting to its shortest finished text.

    Knuth's generalisation of Dijkstra's algorithm over the rules' and/or graph (a sequence
    needs all its items, a choice one option, a reference one more level): values are
    settled in increasing order, each edge looked at once, so a grammar of thousands of
    rules costs milliseconds, not a fixpoint's passes over every rule.

    :raises Unsatisfiable: a rule with no finite text, or a reference to no rule.
    """
    graph = _Graph(rules)
    settled: Costs = {}
    heap = [(0, i, key) for i, key in enumerate(graph.leaves)]
    order = len(heap)
    while heap:
        value, _, key = heapq.heappop(heap)
        if key in settled:
            continue
        settled[key] = value
        for parent in graph.parents.get(key, ()):
            if parent in settled:
                continue
            ready = graph.reached(parent, value)
            if ready is not None:
                order += 1
                heapq.heappush(heap, (ready, order, parent))
    endless = [name for name in rules if name not in settled]
    if endless:
        raise Unsatisfiable(f"rule {endless[0]} never ends")
    return settled


class _Graph:
    """The rules as an and/or graph keyed by rule name and node ``id``."""

    def __init__(self, rules: dict[str, Node]) -> None:
        self.parents: dict[int | str, list[int | str]] = {}
        self.kinds: dict[int | str, str] = {}
        self.waiting: dict[int | str, int] = {}
        self.highest: dict[int | str, int] = {}
        self.leaves: list[int | str] = []
        self.nodes: list[Node] = []  # alive, so their ids stay theirs
        stack: list[tuple[int | str, Node]] = []
        for name, body in rules.items():
            self.link(name, "and", [body], stack)
        while stack:
            key, node = stack.pop()
            if key in self.kinds:
                continue
            self.nodes.append(node)
            if isinstance(node, Ref):
                if node.name not in rules:
                    raise Unsatisfiable(f"undefined rule {node.name}")
                self.kinds[key] = "ref"
                self.parents.setdefault(node.name, []).append(key)
            elif isinstance(node, Alt):
                self.link(key, "or", node.options, stack)
            elif isinstance(node, (Seq, Rep)):
                items = node.items if isinstance(node, Seq) else [node.item] * (node.low > 0)
                self.link(key, "and", items, stack)
            else:
                self.link(key, "and", [], stack)

    def link(self, key: int | str, kind: str, children: list[Node],
             stack: list[tuple[int | str, Node]]) -> None:  # fmt: skip
        self.kinds[key] = kind
        self.waiting[key] = len(children)
        if not children:
            self.leaves.append(key)
        for child in children:
            self.parents.setdefault(id(child), []).append(key)
            stack.append((id(child), child))

    def reached(self, key: int | str, value: int) -> int | None:
        """A child of ``key`` settled at ``value``: ``key``'s value if it is now known."""
        kind = self.kinds[key]
        if kind == "ref":
            return value + 1
        if kind == "or":
            return value  # children settle in increasing order: the first is the least
        self.highest[key] = max(self.highest.get(key, 0), value)
        self.waiting[key] -= 1
        return self.highest[key] if self.waiting[key] == 0 else None


def complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The code points outside ``ranges``, as ranges."""
    out: list[tuple[int, int]] = []
    start = 0
    for lo, hi in sorted(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = max(start, hi + 1)
    out.append((start, 0x10FFFF))
    return out
