"""Whether a script rule matches a request, with its ``regex`` bounded in time and text.

User patterns run with the ``regex`` package's timeout and with the GIL released, never
under the state lock: a catastrophically backtracking pattern costs its own request at most
:data:`~._limits.REGEX_TIMEOUT` seconds (the rule then counts as not matching, and the
child's log says so once per pattern) and never stalls the others.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import regex

from mocksup.vllm._generation.regexes import pattern_size
from mocksup.vllm._limits import MAX_PATTERN, MAX_SCRIPT_TEXT, REGEX_TIMEOUT
from mocksup.vllm.settings import ScriptRule

__all__ = ["compile_pattern", "matches"]

_log = logging.getLogger(__name__)
_timed_out: set[str] = set()


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """The compiled pattern.

    :raises ValueError: it is not a valid regular expression (said with the reason).
    """
    try:
        size = pattern_size(pattern)
        if size > MAX_PATTERN:
            raise ValueError(
                f"larger than the mock's {MAX_PATTERN} characters once its counted "
                "repetitions are expanded"
            )
        return regex.compile(pattern)
    except (regex.error, TypeError, ValueError) as error:
        raise ValueError(f"invalid regex {pattern!r}: {error}") from None


def matches(rule: ScriptRule, model: str, text: str, headers: dict[str, str], call: int) -> bool:
    """Whether every condition ``rule`` sets holds for this request."""
    if rule.model is not None and rule.model != model:
        return False
    if rule.call is not None and rule.call != call:
        return False
    if rule.header is not None:
        name, _, value = rule.header.partition(":")
        if headers.get(name.strip().lower()) != value.strip():
            return False
    if rule.contains is not None and rule.contains not in text:
        return False
    return rule.regex is None or _search(rule.regex, text)


def _search(pattern: str, text: str) -> bool:
    try:
        found = compile_pattern(pattern).search(
            text[:MAX_SCRIPT_TEXT], timeout=REGEX_TIMEOUT, concurrent=True
        )
    except TimeoutError:
        if pattern not in _timed_out:
            _timed_out.add(pattern)
            _log.warning(
                "script regex %r gave up after %s s: the rule is taken as not matching",
                pattern,
                REGEX_TIMEOUT,
            )
        return False
    return found is not None
