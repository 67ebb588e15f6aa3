"""What one structured output may cost: characters of text, and steps of work per request.

vLLM's constrained decoding stops after ``max_tokens`` tokens (else what the context leaves)
and answers the cut text with finish reason ``length``, whatever the constraint asks for. So
the mock never needs more text than the request may generate, and its generators (JSON
Schema, regex, grammar, tool arguments) work within a :class:`Budget`:

* ``chars``: the characters the text may take, ``limit x TOKEN_CHARS + CUT_MARGIN`` (no
  token of the mock's tokenizer holds more characters, so a longer text has more than
  ``limit`` tokens and is cut before it ends) and at most
  :data:`~mocksup.vllm._limits.MAX_STRUCTURED_CHARS`. A generator that reaches it
  stops and raises :class:`Full` with what it built so far: a prefix of a conforming text,
  which, cut at the limit, is what vLLM answers. A text past that maximum that the
  limit would let through is refused (vLLM's 400 for the constraint): the mock does not
  build it.
* ``steps``: a schema node built or checked is a step, a pattern node walked or a
  character made an eighth of one (each costs about that much time), shared by every
  choice of a request (:class:`Work`). Past
  :data:`~mocksup.vllm._limits.MAX_STRUCTURED_STEPS` the request is refused with
  :class:`OverBudget`: that bounds what retries (``not``, ``oneOf``, ``uniqueItems``),
  repetitions of nothing and many long choices cost, about half a second at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mocksup.vllm._limits import (
    MAX_STRUCTURED_CHARS,
    MAX_STRUCTURED_STEPS,
    STRUCTURED_REGEX_SECONDS,
)
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = [
    "CUT_MARGIN",
    "TOKEN_CHARS",
    "Budget",
    "Full",
    "OverBudget",
    "Work",
    "chars_for",
]

#: The most characters one token of the mock's tokenizer holds.
TOKEN_CHARS = max(len(piece) for piece in TOKENIZER.pieces)
#: Characters a cut text keeps past its last token: the tokenizer splits a text's end as
#: it splits the whole only where its pieces are shorter than this.
CUT_MARGIN = 64

_T = TypeVar("_T")


class OverBudget(ValueError):
    """The constraint needs more work than the request's steps, or a text longer than the
    mock builds: the request is refused with vLLM's 400 for its constraint."""


class Full(Exception):
    """The text reached its budget: ``partial`` is what was built, a prefix of a
    conforming text (a string, or a JSON value whose last item was cut)."""

    def __init__(self, partial: Any) -> None:
        super().__init__("the output reached its length budget")
        self.partial = partial
        #: For a JSON value: the characters of its text that begin a conforming document.
        self.prefix = -1


@dataclass
class Work:
    """Steps left to one request's structured outputs (every choice draws on them)."""

    steps: int = MAX_STRUCTURED_STEPS
    regex_seconds: float = STRUCTURED_REGEX_SECONDS
    #: What the request's choices share once one computed it (its constraint's maker).
    memo: dict[str, Any] = field(default_factory=dict)
    eighths: int = 0

    def tick(self, count: int = 1) -> None:
        """Spend ``count`` steps.

        :raises OverBudget: none are left.
        """
        self.steps -= count
        if self.steps < 0:
            raise OverBudget(
                f"the constraint needs more than the mock's {MAX_STRUCTURED_STEPS} steps of "
                "work to generate"
            )

    def light(self, eighths: int) -> None:
        """Spend ``eighths`` eighths of a step (pattern nodes walked, characters made)."""
        self.eighths += eighths
        if self.eighths >= 8:
            whole, self.eighths = divmod(self.eighths, 8)
            self.tick(whole)

    def regex(self, run: Callable[[float], _T]) -> _T:
        """``run(timeout)``: a call of the regex engine, given what is left of the
        request's :data:`~mocksup.vllm._limits.STRUCTURED_REGEX_SECONDS`.

        :raises OverBudget: the time ran out.
        """
        start = time.monotonic()
        try:
            return run(max(self.regex_seconds, 0.001))
        except TimeoutError:
            raise OverBudget(
                "the constraint's patterns take more than the mock's "
                f"{STRUCTURED_REGEX_SECONDS} s to match"
            ) from None
        finally:
            self.regex_seconds -= time.monotonic() - start


@dataclass
class Budget:
    """One text's budget: the characters it may take, and the request's work."""

    chars: int = MAX_STRUCTURED_CHARS
    work: Work = field(default_factory=Work)

    def tick(self, count: int = 1) -> None:
        """Spend ``count`` steps of the request's work."""
        self.work.tick(count)


def chars_for(tokens: int, work: Work | None = None) -> Budget:
    """The budget of a text that may have ``tokens`` tokens (and a margin, so that a text
    past it is cut before its end whatever its last pieces)."""
    wanted = max(tokens, 0) * TOKEN_CHARS + CUT_MARGIN
    return Budget(min(wanted, MAX_STRUCTURED_CHARS), work or Work())
