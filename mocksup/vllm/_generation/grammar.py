"""Text a grammar derives: ``structured_outputs.grammar`` in EBNF (GBNF) or Lark syntax.

vLLM reads a grammar with a ``::=`` line as EBNF (root rule ``root``) and any other as
Lark (root rule ``start``), as its ``grammar_is_likely_lark`` decides. :func:`parse_grammar`
reads both into :mod:`.patterns` nodes: EBNF's ``"literals"``, ``[classes]``, rule names,
groups, ``|`` and ``* + ? {m,n}``; Lark's rules and terminals (``"literal"i``, ``/regex/``,
``"a".."z"``, ``[optional]``, ``~ n..m``, ``-> alias``, ``?``/``!``/priority markers), the
``common`` terminals it imports, and ``%ignore`` of whitespace (a space then separates the
terminals of a rule). Derivations steer to the shortest end past a nesting depth, so a
recursive grammar still ends. Other directives and constructs are refused with vLLM's
"Invalid grammar specification." rather than answered with text the grammar may not derive.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from typing import Any

from mocksup.vllm._generation.budget import Budget, Full
from mocksup.vllm._generation.patterns import (
    Alt,
    Chars,
    Costs,
    Lit,
    Node,
    Ref,
    Rep,
    Seq,
    Unsatisfiable,
    generate,
    rule_costs,
)
from mocksup.vllm._generation.regexes import _RegexParser, parse_regex
from mocksup.vllm._limits import MAX_GRAMMAR

__all__ = ["Grammar", "parse_grammar"]

#: Rule nesting past which a derivation takes the shortest way to its end.
_DEPTH = 6
_COMMENT = re.compile(r"(#|//).*$")
_EBNF_TOKEN = re.compile(
    r"\s+|#[^\n]*|(?P<name>[A-Za-z_][\w.-]*)(?=\s*::=)\s*::=|(?P<ref>[A-Za-z_][\w-]*)"
    r'|(?P<str>"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\')|(?P<rep>\{\d*,?\d*\})'
    r"|(?P<op>[()|*+?])"
)
_LARK_TOKEN = re.compile(
    r'\s+|//[^\n]*|(?P<str>"(?:\\.|[^"\\])*"i?)|(?P<re>/(?:\\.|[^/\\\n])+/[imsxlu]*)'
    r"|(?P<arrow>->\s*\w+)|(?P<name>[?!]?\w+)|(?P<num>\d+)|(?P<range>\.\.)"
    r"|(?P<op>[()\[\]|*+?~])"
)
_LARK_DEFINITION = re.compile(r"^([?!]?[A-Za-z_]\w*)(\.-?\d+)?\s*:(.*)$")

#: Lark's ``common`` terminals, as patterns (the ones grammars import most).
_COMMON = {
    "DIGIT": r"[0-9]",
    "HEXDIGIT": r"[0-9a-fA-F]",
    "INT": r"[0-9]+",
    "SIGNED_INT": r"[+-]?[0-9]+",
    "DECIMAL": r"[0-9]+\.[0-9]*|\.[0-9]+",
    "FLOAT": r"[0-9]+\.[0-9]+",
    "SIGNED_FLOAT": r"[+-]?[0-9]+\.[0-9]+",
    "NUMBER": r"[0-9]+(\.[0-9]+)?",
    "SIGNED_NUMBER": r"[+-]?[0-9]+(\.[0-9]+)?",
    "LCASE_LETTER": r"[a-z]",
    "UCASE_LETTER": r"[A-Z]",
    "LETTER": r"[A-Za-z]",
    "WORD": r"[A-Za-z]+",
    "CNAME": r"[A-Za-z_][A-Za-z0-9_]*",
    "WS_INLINE": r"[ \t]+",
    "WS": r"[ \t\f\r\n]+",
    "CR": r"\r",
    "LF": r"\n",
    "NEWLINE": r"(\r?\n)+",
    "ESCAPED_STRING": r'"[A-Za-z0-9 ]*"',
}


@dataclass(frozen=True)
class Grammar:
    """A parsed grammar: its rules, their depths to a finished text, and its root."""

    rules: dict[str, Node]
    costs: Costs
    root: str
    #: Lark's ``%ignore`` of whitespace: a space before each terminal (then stripped).
    spaced: bool = False

    def text(self, rng: random.Random, budget: Budget | None = None) -> str:
        """A text the grammar derives, within ``budget``.

        :raises Full: the text reached the budget's characters (``partial``: so far).
        :raises OverBudget: the derivation took the request's steps.
        """
        try:
            out = generate(Ref(self.root), rng, self.rules, self.costs, _DEPTH, budget=budget)
        except Full as full:
            raise Full(full.partial.lstrip(" ") if self.spaced else full.partial) from None
        return out.lstrip(" ") if self.spaced else out


@functools.lru_cache(maxsize=16)
def parse_grammar(source: str) -> Grammar:
    """The grammar ``source`` holds (EBNF when a line has ``::=``, else Lark).

    :raises Unsatisfiable: a syntax or construct the mock does not derive text for, or a
        grammar longer than :data:`~mocksup.vllm._limits.MAX_GRAMMAR` characters.
    """
    if len(source) > MAX_GRAMMAR:
        raise Unsatisfiable(f"the grammar is longer than the mock's {MAX_GRAMMAR} characters")
    lines = [_COMMENT.sub("", line).strip() for line in source.split("\n")]
    if any("::=" in line for line in lines):
        rules, root, spaced = _EBNFParser(source).rules(), "root", False
    else:
        rules, spaced = _lark_rules(source)
        root = "start"
    if root not in rules:
        raise Unsatisfiable(f"no {root} rule")
    return Grammar(rules, rule_costs(rules), root, spaced)


# -- EBNF ------------------------------------------------------------------------------------


class _TokenParser:
    """What both grammar readers share: a token cursor and ``a | b | ...``, recursive
    descent over a ``sequence()`` each reader defines."""

    tokens: list[tuple[str, Any]]
    pos: int

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def sequence(self) -> Node:
        raise NotImplementedError

    def alternation(self) -> Node:
        options = [self.sequence()]
        while self.peek() == ("op", "|"):
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alt(options)


class _EBNFParser(_TokenParser):
    """GBNF as xgrammar reads it: ``name ::= expression`` rules."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = self.lex(source)
        self.pos = 0

    def lex(self, source: str) -> list[tuple[str, str | Node]]:
        tokens: list[tuple[str, str | Node]] = []
        at = 0
        while at < len(source):
            if source[at] == "[":
                parser = _RegexParser(source)
                parser.pos = at + 1
                tokens.append(("node", parser.char_class()))
                at = parser.pos
                continue
            match = _EBNF_TOKEN.match(source, at)
            if match is None:
                raise Unsatisfiable(f"unexpected {source[at : at + 10]!r}")
            at = match.end()
            kind = match.lastgroup
            if kind is None:
                continue
            text = match.group(kind)
            if kind == "str":
                tokens.append(("node", Lit(_unescape(text[1:-1]))))
            else:
                tokens.append((kind, match.group(kind) if kind != "name" else text))
        return tokens

    def rules(self) -> dict[str, Node]:
        rules: dict[str, Node] = {}
        while self.pos < len(self.tokens):
            kind, value = self.tokens[self.pos]
            if kind != "name":
                raise Unsatisfiable("expected a rule name before ::=")
            self.pos += 1
            rules[str(value)] = self.alternation()
        return rules

    def sequence(self) -> Node:
        items: list[Node] = []
        while True:
            kind, value = self.peek()
            if kind in ("end", "name") or (kind == "op" and value in ("|", ")")):
                return items[0] if len(items) == 1 else Seq(items)
            self.pos += 1
            if kind == "node":
                assert isinstance(value, Node)
                item: Node = value
            elif kind == "ref":
                item = Ref(str(value))
            elif value == "(":
                item = self.alternation()
                if self.peek() != ("op", ")"):
                    raise Unsatisfiable("missing )")
                self.pos += 1
            else:
                raise Unsatisfiable(f"unexpected {value!r}")
            items.append(self.quantified(item))

    def quantified(self, item: Node) -> Node:
        while True:
            kind, value = self.peek()
            if kind == "op" and value in ("*", "+", "?"):
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[str(value)]
            elif kind == "rep":
                low_text, comma, high_text = str(value)[1:-1].partition(",")
                low = int(low_text or 0)
                high = (int(high_text) if high_text else None) if comma else low
            else:
                return item
            self.pos += 1
            item = Rep(item, low, high)


def _unescape(text: str) -> str:
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        raise Unsatisfiable(f"bad escape in {text!r}") from None


# -- Lark ------------------------------------------------------------------------------------


def _lark_rules(source: str) -> tuple[dict[str, Node], bool]:
    bodies: dict[str, str] = {}
    ignored: list[str] = []
    rules: dict[str, Node] = {}
    current = None
    for raw in source.split("\n"):
        line = re.sub(r"//.*$", "", raw).rstrip()
        if not line.strip():
            continue
        if line.startswith("%"):
            _directive(line, rules, ignored)
            current = None
            continue
        definition = _LARK_DEFINITION.match(line)
        if definition and not raw[:1].isspace():
            current = definition.group(1).lstrip("?!")
            bodies[current] = definition.group(3)
        elif current is not None:
            bodies[current] += " " + line.strip()
        else:
            raise Unsatisfiable(f"unexpected line {line.strip()[:40]!r}")
    spaced = any(_is_space(name, rules, bodies) for name in ignored)
    for name, body in bodies.items():
        rules[name] = _LarkExpression(body, terminal=name.lstrip("_").isupper(),
                                      spaced=spaced).parse()  # fmt: skip
    return rules, spaced


def _directive(line: str, rules: dict[str, Node], ignored: list[str]) -> None:
    words = line.split()
    if words[0] == "%ignore" and len(words) >= 2:
        ignored.append(" ".join(words[1:]))
        return
    if words[0] != "%import" or len(words) < 2:
        raise Unsatisfiable(f"the directive {words[0]} is not supported")
    spec = line[len("%import") :].strip()
    module, _, names = spec.partition("(")
    alias = None
    if names:
        wanted = [n.strip() for n in names.rstrip(")").split(",") if n.strip()]
        module = module.strip()
    else:
        spec, _, alias_text = spec.partition("->")
        module, _, name = spec.strip().rpartition(".")
        wanted, alias = [name], alias_text.strip() or None
    if module.strip() != "common":
        raise Unsatisfiable(f"only %import common is supported, not {module.strip()}")
    for name in wanted:
        if name not in _COMMON:
            raise Unsatisfiable(f"common.{name} is not a terminal the mock knows")
        rules[alias or name] = parse_regex(_COMMON[name])


def _is_space(name: str, rules: dict[str, Node], bodies: dict[str, str]) -> bool:
    pattern = _COMMON.get(name) or name.strip("/\"'")
    if name in bodies and name not in _COMMON:
        pattern = bodies[name].strip().strip("/\"'")
    try:
        return re.fullmatch(pattern, " ") is not None
    except re.error:
        return False


class _LarkExpression(_TokenParser):
    """One rule's or terminal's body: alternatives of items with operators."""

    def __init__(self, body: str, *, terminal: bool, spaced: bool) -> None:
        self.tokens = self.lex(body)
        self.pos = 0
        self.terminal = terminal
        self.spaced = spaced and not terminal

    @staticmethod
    def lex(body: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        at = 0
        while at < len(body):
            match = _LARK_TOKEN.match(body, at)
            if match is None:
                raise Unsatisfiable(f"unexpected {body[at : at + 10]!r}")
            at = match.end()
            if match.lastgroup is not None:
                tokens.append((match.lastgroup, match.group(match.lastgroup)))
        return tokens

    def parse(self) -> Node:
        node = self.alternation()
        if self.pos != len(self.tokens):
            raise Unsatisfiable(f"unexpected {self.peek()[1]!r}")
        return node

    def sequence(self) -> Node:
        items: list[Node] = []
        while True:
            kind, value = self.peek()
            if kind == "arrow":
                self.pos += 1
                continue
            if kind == "end" or (kind == "op" and value in "|)]"):
                return items[0] if len(items) == 1 else Seq(items)
            self.pos += 1
            items.append(self.quantified(self.item(kind, value)))

    def item(self, kind: str, value: str) -> Node:
        if kind == "op" and value in "([":
            inner = self.alternation()
            closing = ")" if value == "(" else "]"
            if self.peek() != ("op", closing):
                raise Unsatisfiable(f"missing {closing}")
            self.pos += 1
            return inner if value == "(" else Rep(inner, 0, 1)
        if kind == "str":
            text = _unescape(value[1 : value.rindex('"')])
            if self.peek()[0] == "range":
                return self.char_range(text)
            return self.spaced_item(Lit(text))
        if kind == "re":
            body, _, flags = value[1:].rpartition("/")
            if "x" in flags:
                raise Unsatisfiable("verbose regular expressions are not supported")
            return self.spaced_item(parse_regex(body))
        if kind == "name":
            name = value.lstrip("?!")
            ref = Ref(name)
            return self.spaced_item(ref) if name.lstrip("_").isupper() else ref
        raise Unsatisfiable(f"unexpected {value!r}")

    def char_range(self, low: str) -> Node:
        self.pos += 1
        kind, value = self.peek()
        if kind != "str":
            raise Unsatisfiable("a range needs two literals")
        self.pos += 1
        high = _unescape(value[1 : value.rindex('"')])
        if len(low) != 1 or len(high) != 1 or high < low:
            raise Unsatisfiable("bad character range")
        return self.spaced_item(Chars([(ord(low), ord(high))]))

    def spaced_item(self, node: Node) -> Node:
        # With %ignore of whitespace, a space may precede every terminal of a rule.
        return Seq([Lit(" "), node]) if self.spaced else node

    def quantified(self, item: Node) -> Node:
        while True:
            kind, value = self.peek()
            if kind == "op" and value in ("*", "+", "?"):
                self.pos += 1
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[value]
            elif (kind, value) == ("op", "~"):
                self.pos += 1
                low, high = self.repeat_count()
            else:
                return item
            item = Rep(item, low, high)

    def repeat_count(self) -> tuple[int, int | None]:
        kind, value = self.peek()
        if kind != "num":
            raise Unsatisfiable("~ needs a count")
        self.pos += 1
        low = int(value)
        if self.peek()[0] != "range":
            return low, low
        self.pos += 1
        kind, value = self.peek()
        if kind != "num" or int(value) < low:
            raise Unsatisfiable("bad ~ range")
        self.pos += 1
        return low, int(value)
