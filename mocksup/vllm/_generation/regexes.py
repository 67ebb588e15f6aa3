"""Regular expressions: read into :mod:`.patterns` trees, and compiled (bounded) to check texts.

:func:`parse_regex` reads the syntax vLLM's structured-output backends take (literals and
escapes, ``.``, classes with ranges and ``\\d\\w\\s``, groups of every capturing kind,
alternation, ``? * + {m,n}`` greedy or lazy, anchors, inline flags). What the mock cannot
satisfy by construction (look-arounds, back-references, word boundaries, Unicode
properties, verbose mode) raises :class:`~.patterns.Unsatisfiable`, answered with vLLM's
400 rather than risking an output that does not match.

The ``regex`` engine, which checks what was generated, copies a counted repetition out
(``a{1000000}`` takes 290 MiB and 1.5 s to compile, ``(){100000000}`` 16 GiB):
:func:`compiled` refuses a pattern longer than
:data:`~mocksup.vllm._limits.MAX_PATTERN` characters or larger than that once its
repetitions are copied out, and keeps few compiled patterns.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import regex

from mocksup.vllm._generation.patterns import (
    Alt,
    Chars,
    Lit,
    Node,
    Rep,
    Seq,
    Unsatisfiable,
    complement,
)
from mocksup.vllm._limits import MAX_PATTERN

__all__ = ["TooLarge", "compiled", "parse_regex", "pattern_size"]

#: A size too large to count further.
_HUGE = 1 << 30


class TooLarge(Unsatisfiable):
    """A pattern too large for the regex engine to check a text against (:func:`compiled`):
    a text of it can still be generated, and sent once ``max_tokens`` cuts it."""


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

    :raises Unsatisfiable: a construct the mock cannot generate text for, bad syntax, or a
        pattern longer than :data:`~mocksup.vllm._limits.MAX_PATTERN` characters.
    """
    if len(pattern) > MAX_PATTERN:
        raise Unsatisfiable(f"the pattern is longer than the mock's {MAX_PATTERN} characters")
    parser = _RegexParser(pattern)
    node = parser.alternation()
    if parser.pos != len(pattern):
        raise Unsatisfiable(f"unbalanced parenthesis at position {parser.pos}")
    return node


@functools.lru_cache(maxsize=32)
def compiled(pattern: str) -> Any:
    """``pattern`` compiled by the ``regex`` engine (the few most recent kept).

    :raises TooLarge: the pattern is longer than
        :data:`~mocksup.vllm._limits.MAX_PATTERN` characters, or larger than that with
        its counted repetitions expanded.
    :raises Unsatisfiable: not a pattern the engine compiles (with the engine's reason).
    """
    size = pattern_size(pattern)
    if size > MAX_PATTERN:
        raise TooLarge(
            f"the pattern is larger than the mock's {MAX_PATTERN} characters once its "
            f"counted repetitions are expanded ({size if size < _HUGE else 'more'})"
        )
    try:
        # Not in the engine's own cache of 500: these are few and may be megabytes each.
        return regex.compile(pattern, cache_pattern=False)
    except (regex.error, OverflowError, ValueError) as error:
        raise Unsatisfiable(str(error)) from None


def pattern_size(pattern: str) -> int:
    """The characters ``pattern`` stands for with its counted repetitions copied out, as the
    ``regex`` engine compiles it (at least its length; a large number when unknown)."""
    if len(pattern) > MAX_PATTERN:
        return len(pattern)
    try:
        return max(_size(parse_regex(pattern)), len(pattern))
    except (Unsatisfiable, RecursionError):
        # A construct the parser refuses (a look-around): every repetition counted as if
        # nested in every other.
        size = len(pattern)
        for match in _COUNTED.finditer(pattern):
            size *= max(int(match.group(1) or 0), 1)
            if size > MAX_PATTERN:
                return size
        return size


_COUNTED = re.compile(r"\{(\d*),?\d*\}")


def _size(node: Node) -> int:
    # Every node is at least one unit of the engine's program, even one that matches
    # nothing: ``(){100000000}`` is a hundred million copies (16 GiB).
    if isinstance(node, Lit):
        return max(len(node.text), 1)
    if isinstance(node, (Seq, Alt)):
        parts = node.items if isinstance(node, Seq) else node.options
        return min(sum(_size(part) for part in parts) + 1, _HUGE)
    if isinstance(node, Rep):
        # The engine copies the item ``low`` times (an optional rest stays a loop).
        return min(_size(node.item) * max(node.low, 1) + 1, _HUGE)
    return 1


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
            ranges.extend(complement(members) if negated else members)
            return None
        if escaped in _REFUSED_ESCAPES and escaped != "b":
            raise Unsatisfiable(f"{_REFUSED_ESCAPES[escaped]} not supported")
        return ord("\b" if escaped == "b" else self.escaped_char(escaped))
