"""Reading a control request's input as a client in any language meant it.

The query string and the path arrive as WSGI strings (each byte a latin-1 character, PEP
3333) and leave as the UTF-8 text the client sent, raw or percent-encoded; numbers are the
plain ASCII decimals any client writes, not all that Python's ``int`` and ``float`` take
(``1_000``, a leading space, other scripts' digits); JSON bodies hold no NaN, no infinity
and no nesting deeper than the caller's limit, so that no handler, validator or encoder
after them meets one. :mod:`mocksup.control` turns an :class:`InputError` into its 400.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

__all__ = ("INTEGER", "NUMBER", "InputError", "json_body", "query_pairs", "shown", "wsgi_text")

INTEGER = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)",
    re.IGNORECASE,
)


class InputError(ValueError):
    """The request's input cannot be read; the message says why, for a 400."""


def shown(raw: str) -> str:
    """A value quoted in an error message, cut short: the message must stay readable."""
    return repr(raw) if len(raw) <= 64 else repr(raw[:64]) + "..."


def wsgi_text(text: str) -> str:
    """A WSGI environ string as the UTF-8 text the client sent (a byte that is not UTF-8
    becomes U+FFFD); one the server decoded already is kept."""
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The names and values of a WSGI query string, decoded as UTF-8.

    :raises InputError: too many fields, or a name or value that is not UTF-8.
    """
    try:
        pairs = parse_qsl(
            _ascii_query(query), keep_blank_values=True, max_num_fields=200,
            errors="surrogateescape",
        )  # fmt: skip
    except ValueError as error:
        raise InputError(f"bad query string: {error}") from None
    for name, value in pairs:
        if not _utf8(name):
            raise InputError(f"a parameter name is not UTF-8: {shown(name)}")
        if not _utf8(value):
            raise InputError(f"parameter {name!r} is not UTF-8 (percent-encode its UTF-8 bytes)")
    return pairs


def json_body(raw: bytes, max_depth: int) -> Any:
    """The decoded JSON of a request body.

    :raises InputError: not JSON, NaN or an infinity, a number past a double's range
        (``1e400``), or objects and arrays nested deeper than ``max_depth``.
    """
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        deep = _nests_deeper(body, max_depth)
    except ValueError as error:
        raise InputError(f"the body is not valid JSON: {error}") from None
    except RecursionError:  # nested past what the parser itself can read
        deep = True
    if deep:
        raise InputError(f"the body nests objects and arrays deeper than {max_depth} levels")
    return body


def _ascii_query(query: str) -> str:
    # Raw bytes past ASCII (``curl "...?name=café"`` sends them so) percent-escaped, so that
    # they decode as UTF-8 as escaped ones do.
    if query.isascii():
        return query
    parts = []
    for char in query:
        if char.isascii():
            parts.append(char)
        else:
            data = bytes([ord(char)]) if ord(char) < 256 else char.encode("utf-8", "replace")
            parts.append("".join(f"%{byte:02X}" for byte in data))
    return "".join(parts)


def _utf8(text: str) -> bool:
    # Decoded with surrogateescape: a byte that is not UTF-8 became a lone surrogate.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    # 1e400 is valid JSON that Python reads as infinity, which no answer could encode back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{shown(text)} is out of a double's range")
    return value


def _nests_deeper(value: Any, limit: int) -> bool:
    # Walked level by level, without recursion: the point is to spare the stack.
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(limit):
        if not level:
            return False
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
    return bool(level)
