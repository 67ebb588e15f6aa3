"""Log-probabilities as vLLM writes them, for generated and prompt tokens.

A choice's row for each generated token holds the sampled token first, then the
alternatives (the engine's order). Chat returns the first ``top_logprobs`` of the row
(``-1``: all), completions the first ``logprobs + 1``. Tokens are their decoded text (a
byte that is part of a character decodes to U+FFFD, as vLLM's per-token decoding does), or
``token_id:N`` with ``return_tokens_as_token_ids``. Prompt log-probabilities
(``prompt_logprobs``) are vLLM's ``Logprob`` records keyed by token id, ``None`` for the
first prompt token.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from mocksup.vllm._plan import Choice
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = [
    "chat_logprobs",
    "completion_logprobs",
    "prompt_logprob_rows",
    "prompt_logprobs_body",
    "token_text",
]


def token_text(token: int, as_ids: bool) -> str:
    """A token as log-probabilities name it."""
    return f"token_id:{token}" if as_ids else TOKENIZER.token_str(token)


def _limit(wanted: int, extra: int) -> int | None:
    return None if wanted == -1 else wanted + extra


def chat_logprobs(c: Choice, start: int, stop: int, as_ids: bool) -> dict[str, Any] | None:
    """The chat ``logprobs`` object of tokens ``start`` to ``stop`` (``None`` without)."""
    if c.logprobs is None or c.top is None:
        return None
    limit = _limit(c.logprobs_wanted, 0)
    content = []
    for k in range(start, stop):
        text = token_text(c.tokens[k], as_ids)
        row = c.top[k][:limit]
        content.append(
            {
                "token": text,
                "logprob": c.logprobs[k],
                "bytes": list(text.encode("utf-8", "replace")),
                "top_logprobs": [
                    {
                        "token": (t := token_text(token, as_ids)),
                        "logprob": value,
                        "bytes": list(t.encode("utf-8", "replace")),
                    }
                    for token, value in row
                ],
            }
        )
    return {"content": content}


def completion_logprobs(
    tokens: list[int],
    rows: list[list[tuple[int, float]] | None],
    wanted: int,
    offset: int,
    as_ids: bool,
) -> dict[str, Any]:
    """The completions ``logprobs`` object of ``tokens`` whose rows are ``rows`` (``None``
    for a token without log-probabilities: the first prompt token)."""
    limit = _limit(wanted, 1)
    offsets: list[int] = []
    texts: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    for token, row in zip(tokens, rows, strict=True):
        text = token_text(token, as_ids)
        offsets.append(offset)
        offset += len(text)
        texts.append(text)
        if row is None:
            values.append(None)
            tops.append(None)
        else:
            values.append(row[0][1])
            tops.append({token_text(t, as_ids): v for t, v in row[:limit]})
    return {"text_offset": offsets, "token_logprobs": values, "tokens": texts,
            "top_logprobs": tops}  # fmt: skip


def prompt_logprob_rows(ids: list[int], wanted: int) -> list[list[tuple[int, float]] | None]:
    """Rows for the prompt's tokens: ``None``, then the prompt token and ``wanted``
    alternatives per position (deterministic from the prompt)."""
    digest = hashlib.sha256(repr(ids[:4096]).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    # The prompt token is taken as the likeliest: with the alternatives, ``wanted`` entries
    # (at least the token itself), as a model that predicted its prompt well reports them.
    count = TOKENIZER.vocab_size if wanted == -1 else wanted
    rows: list[list[tuple[int, float]] | None] = [None]
    for token in ids[1:]:
        value = -round(rng.random() ** 2 * 6, 6)
        row = [(token, value)]
        for k in range(1, count):
            other = TOKENIZER.spaced_word_ids[(token + 7 * k) % len(TOKENIZER.spaced_word_ids)]
            if other != token:
                row.append((other, round(value - k * 0.5 - rng.random() * 0.1, 6)))
        rows.append(row)
    return rows


def prompt_logprobs_body(ids: list[int], wanted: int) -> list[dict[str, Any] | None]:
    """``prompt_logprobs`` as vLLM serialises them: per position ``None`` or
    ``{token_id: {"logprob", "rank", "decoded_token"}}``."""
    out: list[dict[str, Any] | None] = []
    for row in prompt_logprob_rows(ids, wanted):
        if row is None:
            out.append(None)
            continue
        entry: dict[str, Any] = {}
        for rank, (token, value) in enumerate(row):
            # The prompt token's own rank is where it would sort among the alternatives.
            shown_rank = rank if rank else 1 + sum(1 for _, v in row[1:] if v > value)
            entry[str(token)] = {
                "logprob": value,
                "rank": shown_rank,
                "decoded_token": TOKENIZER.token_str(token),
            }
        out.append(entry)
    return out
