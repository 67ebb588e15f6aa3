"""How vLLM 0.33 reads tool calls out of a model's text, whole and token by token.

The mock writes the text a model writes for each tool choice, and these classes read it as
vLLM does, so the body's ``tool_calls`` and the streamed deltas are framed as vLLM frames
them for the same text and tokens:

* a named ``tool_choice``: the text is the arguments object (its schema is the grammar);
  the first token's chunk carries ``id``, ``type``, ``index`` and ``function.name`` with
  the first argument text, every later token one ``function.arguments`` fragment; the
  finish reason stays ``stop``;
* ``"required"``: the text is a JSON array of ``{"name", "parameters"}``; nothing is sent
  until a call's name is complete and its parameters started, then a chunk with ``id``,
  ``type``, ``index``, ``function.name`` and the parameters so far, then fragments with
  ``"name": null``; tokens that add nothing send no chunk;
* ``"auto"``: the text is Hermes's (``<tool_call>\\n{"name": ..., "arguments": ...}\\n
  </tool_call>``, the format of ``--tool-call-parser hermes``, whatever parser is named):
  text before a tag is ``content`` (a possible tag start is held back), a call's name goes
  out alone once complete (``{"id", "type", "index", "function": {"name"}}``), then the
  arguments as they grow, in chunks whose ``content`` is ``null``.

Each delta is ``None`` when vLLM sends no chunk for that token (the last token always
sends one, with an empty delta if nothing else). A text cut by ``max_tokens`` is read the
same way: a named call keeps its partial arguments, a required array parses to no call, a
Hermes call that does not parse leaves the whole text as content.
"""

from __future__ import annotations

import json
import random
from typing import Any

import regex

__all__ = ["HermesCalls", "NamedCall", "RequiredCalls", "ToolParser"]

Delta = dict[str, Any]
_START, _END = "<tool_call>", "</tool_call>"
_NAME = regex.compile(r'"name"\s*:\s*"([^"]+)"')
_ARGUMENTS = regex.compile(r'"arguments"\s*:\s*')
_REGION = regex.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", regex.DOTALL)


class ToolParser:
    """Reads one choice's text; ``ids`` draws the ``chatcmpl-tool-…`` ids of its calls."""

    #: Whether the request forced the call (a named choice or ``"required"``): the
    #: message's ``content`` is then ``""`` rather than ``null``.
    forced = True

    def __init__(self, rng: random.Random, *, parallel: bool = True) -> None:
        self._rng = rng
        self._ids: list[str] = []
        self.parallel = parallel

    def call_id(self, index: int) -> str:
        """The id of call ``index`` (the same whole and streamed)."""
        while len(self._ids) <= index:
            self._ids.append(f"chatcmpl-tool-{self._rng.getrandbits(64):016x}")
        return self._ids[index]

    def extract(self, text: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The message's ``content`` and ``tool_calls`` for the whole text."""
        raise NotImplementedError

    def stream(self, pieces: list[str]) -> list[Delta | None]:
        """The ``delta`` of each token's chunk (``None``: no chunk)."""
        out: list[Delta | None] = []
        text = ""
        for k, piece in enumerate(pieces):
            before, text = text, text + piece
            delta = self.step(before, text, piece)
            if delta is not None and "tool_calls" in delta and not self.parallel:
                delta["tool_calls"] = [c for c in delta["tool_calls"] if c["index"] == 0]
                if not delta["tool_calls"]:
                    del delta["tool_calls"]
            out.append({} if delta is None and k == len(pieces) - 1 else delta)
        return out

    def step(self, before: str, text: str, piece: str) -> Delta | None:
        """The delta when ``piece`` turns ``before`` into ``text``."""
        raise NotImplementedError

    def calls(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """``tool_calls`` of the body for (name, arguments text) pairs."""
        if not self.parallel:
            pairs = pairs[:1]
        return [
            {"id": self.call_id(i), "type": "function",
             "function": {"name": name, "arguments": arguments}}
            for i, (name, arguments) in enumerate(pairs)
        ]  # fmt: skip


class NamedCall(ToolParser):
    """A named ``tool_choice``: the text is the arguments."""

    def __init__(self, rng: random.Random, name: str, *, parallel: bool = True) -> None:
        super().__init__(rng, parallel=parallel)
        self.name = name
        self._started = False

    def extract(self, text: str) -> tuple[str | None, list[dict[str, Any]]]:
        if not text.strip():
            return "", []
        return "", self.calls([(self.name, text)])

    def step(self, before: str, text: str, piece: str) -> Delta | None:
        if self._started:
            return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        self._started = True
        call = {"id": self.call_id(0), "type": "function", "index": 0,
                "function": {"name": self.name, "arguments": piece}}  # fmt: skip
        return {"tool_calls": [call]}


class RequiredCalls(ToolParser):
    """``tool_choice="required"``: a JSON array of ``{"name", "parameters"}``."""

    def extract(self, text: str) -> tuple[str | None, list[dict[str, Any]]]:
        try:
            items = json.loads(text)
        except ValueError:
            return "", []
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("name"), str) and "parameters" in i
            for i in items
        ):
            return "", []
        pairs = [(i["name"], json.dumps(i["parameters"], ensure_ascii=False)) for i in items]
        return "", self.calls(pairs)

    def step(self, before: str, text: str, piece: str) -> Delta | None:
        sent = len(before)
        deltas: list[dict[str, Any]] = []
        for index, (name, name_end, start, end) in enumerate(_array_calls(text)):
            if name is None or start is None:
                break  # calls come in order: none after this one is ready either
            stop = end if end is not None else len(text)
            if name_end <= sent and start < sent:
                fresh = text[min(stop, sent) : stop]
                if fresh:
                    deltas.append({"index": index, "function": {"name": None, "arguments": fresh}})
                continue
            deltas.append({"id": self.call_id(index), "type": "function", "index": index,
                           "function": {"name": name, "arguments": text[start:stop]}})  # fmt: skip
        return {"tool_calls": deltas} if deltas else None


def _array_calls(text: str) -> list[tuple[str | None, int, int | None, int | None]]:
    """Per element of a (possibly partial) JSON array of objects: its complete ``name``
    (and where that string ends), and where its ``parameters`` value starts and ends."""
    found: list[list[Any]] = []
    depth, key, expect, value_at = 0, None, "key", 0
    string_at, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 2 and expect == "key":
                    key, expect = text[string_at + 1 : i], "colon"
                elif depth == 2 and expect == "string":
                    _value_ends(found[-1], key, text, value_at, i + 1)
                    expect = "after"
            continue
        if char == '"':
            in_string, string_at = True, i
            if depth == 2 and expect == "value":
                value_at, expect = _value_starts(found[-1], key, i), "string"
        elif char in "{[":
            if (depth == 0 and char != "[") or (depth == 1 and char != "{"):
                break
            if depth == 1:
                found.append([None, 0, None, None])
                expect = "key"
            elif depth == 2 and expect == "value":
                value_at, expect = _value_starts(found[-1], key, i), "container"
            depth += 1
        elif char in "}]":
            if depth == 2 and expect == "scalar":
                _value_ends(found[-1], key, text, value_at, i)
            depth -= 1
            if depth == 2 and expect == "container":
                _value_ends(found[-1], key, text, value_at, i + 1)
                expect = "after"
            if depth <= 0:
                break
        elif depth == 2:
            if char == ":" and expect == "colon":
                expect = "value"
            elif char == "," or char.isspace():
                if expect == "scalar":
                    _value_ends(found[-1], key, text, value_at, i)
                    expect = "after"
                if char == ",":
                    expect, key = "key", None
            elif expect == "value":
                value_at, expect = _value_starts(found[-1], key, i), "scalar"
    return [(f[0], f[1], f[2], f[3]) for f in found]


def _value_starts(call: list[Any], key: str | None, at: int) -> int:
    if key == "parameters":
        call[2] = at
    return at


def _value_ends(call: list[Any], key: str | None, text: str, start: int, end: int) -> None:
    if key == "parameters":
        call[3] = end
    elif key == "name":
        try:
            call[0], call[1] = json.loads(text[start:end]), end
        except ValueError:
            call[0] = None


class HermesCalls(ToolParser):
    """``tool_choice="auto"``: ``<tool_call>`` regions of Hermes's format."""

    forced = False

    def __init__(self, rng: random.Random, *, parallel: bool = True) -> None:
        super().__init__(rng, parallel=parallel)
        self._content_sent = 0
        self._names: list[str] = []
        self._arguments: list[str] = []

    def extract(self, text: str) -> tuple[str | None, list[dict[str, Any]]]:
        if _START not in text:
            return text, []
        try:
            found = [json.loads(whole or partial) for whole, partial in _REGION.findall(text)]
            pairs = [(f["name"], json.dumps(f["arguments"], ensure_ascii=False)) for f in found]
        except (ValueError, KeyError, TypeError):
            return text, []
        content = text[: text.find(_START)]
        return content or None, self.calls(pairs)

    def step(self, before: str, text: str, piece: str) -> Delta | None:
        content = self._content(text)
        deltas: list[dict[str, Any]] = []
        for i, (body, complete) in enumerate(_regions(text)):
            if i == len(self._names):
                match = _NAME.search(body)
                if match is None:
                    break
                self._names.append(match.group(1))
                self._arguments.append("")
                deltas.append({"id": self.call_id(i), "type": "function", "index": i,
                               "function": {"name": match.group(1)}})  # fmt: skip
            arguments = _hermes_arguments(body, complete)
            if arguments is not None and len(arguments) > len(self._arguments[i]):
                fresh = arguments[len(self._arguments[i]) :]
                self._arguments[i] = arguments
                deltas.append({"index": i, "function": {"arguments": fresh}})
        if not content and not deltas:
            return None
        out: Delta = {"content": content or None}
        if deltas:
            out["tool_calls"] = deltas
        return out

    def _content(self, text: str) -> str | None:
        # Text before the first tag, holding back an ending that may begin one.
        at = text.find(_START)
        if at < 0:
            at = len(text) - _overlap(text, _START)
        if at <= self._content_sent:
            return None
        content, self._content_sent = text[self._content_sent : at], at
        return content


def _overlap(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def _regions(text: str) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    at = 0
    while (start := text.find(_START, at)) >= 0:
        body_at = start + len(_START)
        end = text.find(_END, body_at)
        if end >= 0:
            out.append((text[body_at:end].strip(), True))
            at = end + len(_END)
            continue
        raw = text[body_at:]
        cut = _overlap(raw, _END)
        body = (raw[:-cut] if cut else raw).strip()
        out.append((body, _parses(body) if body else False))
        break
    return out


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _hermes_arguments(body: str, complete: bool) -> str | None:
    match = _ARGUMENTS.search(body)
    if match is None:
        return None
    raw = body[match.end() :]
    if complete:
        raw = raw.rstrip()
        if raw.endswith("}"):
            raw = raw[:-1].rstrip()
    return raw
