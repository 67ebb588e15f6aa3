"""Free text: sentences of vocabulary words, deterministic for the choice's seeded generator.

Its natural length is drawn from the server's ``output_tokens`` range (at least the request's
``min_tokens``); ``max_tokens`` below it, or ``ignore_eos``, makes it exactly the limit with
finish reason ``length``. Made of vocabulary pieces only, the text re-tokenizes to exactly the
tokens counted.
"""

from __future__ import annotations

import random

from mocksup.vllm._generation import Ask, Draft
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["draft", "word_ids"]


def draft(ask: Ask) -> Draft:
    """Draw the text's length, then its words (only ``allowed_token_ids``, when given)."""
    length = max(ask.rng.randint(*ask.length_range), ask.request.min_tokens)
    reason = "stop"
    if ask.request.ignore_eos or length >= ask.limit:
        length, reason = ask.limit, "length"
    allowed = ask.request.allowed_token_ids
    if allowed:
        draw = ask.rng.random
        return Draft([allowed[int(draw() * len(allowed))] for _ in range(length)], reason)
    return Draft(word_ids(ask.rng, length), reason)


def word_ids(rng: random.Random, length: int) -> list[int]:
    """``length`` token ids of sentences: a capital first word, periods now and then."""
    t = TOKENIZER
    draw = rng.random
    words, capitals, spaced = t.spaced_word_ids, t.capital_word_ids, t.spaced_capital_ids
    period = t.period_id
    ids: list[int] = []
    sentence = 0
    for _ in range(length):
        # Indexing with random() is a few times cheaper than choice() and as deterministic.
        if not ids:
            ids.append(capitals[int(draw() * len(capitals))])
        elif ids[-1] == period:
            ids.append(spaced[int(draw() * len(spaced))])
            sentence = 0
        elif sentence > 4 and draw() < 0.15:
            ids.append(period)
        else:
            ids.append(words[int(draw() * len(words))])
        sentence += 1
    return ids
