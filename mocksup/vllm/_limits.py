"""Every limit of the vLLM mock in one place, with what a client gets past it.

Two kinds: vLLM's own limits, which the mock enforces with vLLM's status and message
(``max_logprobs``, the embedding size), and the mock's structure limits, which keep one
request within the size limit (``max_request_bytes``, 32 MiB by default) from taking the
child's memory far past its idle size. A request past a structure limit gets 413 with a
message naming the limit. ``docs/vllm.rst`` lists them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = [
    "JOURNAL_BODY_BYTES",
    "JOURNAL_HEADER_BYTES",
    "MAX_COMPLETION_PROMPTS",
    "MAX_GRAMMAR",
    "MAX_JSON_CONTAINERS",
    "MAX_JSON_VALUES",
    "MAX_LOGPROBS",
    "MAX_N_SEQUENCES",
    "MAX_OUTPUT_FLOATS",
    "MAX_OUTPUT_TOKENS",
    "MAX_PATTERN",
    "MAX_PROMPT_ITEMS",
    "MAX_SCRIPT_TEXT",
    "MAX_STOP_STRINGS",
    "MAX_STORED_BYTES",
    "MAX_STORED_RESPONSES",
    "MAX_STRUCTURED_CHARS",
    "MAX_STRUCTURED_STEPS",
    "QUEUE_TIMEOUT",
    "REGEX_TIMEOUT",
    "STOP_STRINGS",
    "STRUCTURED_REGEX_SECONDS",
    "env_int",
    "stop_strings",
]

#: vLLM's ``--max-logprobs`` default: ``logprobs``/``top_logprobs`` above it get 400.
MAX_LOGPROBS = 20

#: The default of vLLM's ``VLLM_MAX_N_SEQUENCES``, read from the child's environment: the
#: largest ``n`` (400 past it).
MAX_N_SEQUENCES = 16384

#: The default of vLLM's ``VLLM_MAX_COMPLETION_PROMPTS``, read from the child's environment:
#: prompts in one completion request (400 past it).
MAX_COMPLETION_PROMPTS = 1024

#: The default of vLLM's ``VLLM_MAX_STOP_STRINGS``: stop strings in one request (a schema
#: error past it).
MAX_STOP_STRINGS = 4


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """A ``VLLM_MAX_*`` variable as vLLM reads it, ``int(os.environ.get(name, default))``.

    :raises ValueError: it is not an integer (vLLM fails to start).
    """
    text = env.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer (vLLM's default: {default})") from None


def stop_strings(env: Mapping[str, str]) -> int:
    """``VLLM_MAX_STOP_STRINGS``: the ``max_length`` of ``stop`` in vLLM's request schemas.

    :raises ValueError: vLLM cannot start with it: not an integer, or no ``max_length``
        pydantic can build a schema with (negative, or past 2**64 - 1).
    """
    value = env_int(env, "VLLM_MAX_STOP_STRINGS", MAX_STOP_STRINGS)
    if not 0 <= value < 2**64:
        state = "is negative" if value < 0 else "is past 2**64 - 1"
        raise ValueError(f"VLLM_MAX_STOP_STRINGS={env['VLLM_MAX_STOP_STRINGS']!r} {state}")
    return value


def _schema_stop_strings() -> int:
    try:
        return stop_strings(os.environ)
    except ValueError:
        return MAX_STOP_STRINGS  # server_config fails the start with this error


#: The stop strings the request schemas take: ``VLLM_MAX_STOP_STRINGS`` in the environment
#: the schemas are built in (the child's), as vLLM builds its own at import.
STOP_STRINGS = _schema_stop_strings()

#: Objects and arrays in one JSON body. Each costs a few hundred bytes once decoded and
#: validated; 200,000 of them stay around 100 MiB.
MAX_JSON_CONTAINERS = 200_000

#: Values in one JSON body, counted as commas plus containers (an upper bound: commas in
#: strings count too). A million small values stay around 150 MiB decoded and validated.
MAX_JSON_VALUES = 1_000_000

#: Embedding inputs in one request (a limit of the mock: 413 past it).
MAX_PROMPT_ITEMS = 10_000

#: Tokens one request may generate over all its choices (``n`` x ``max_tokens``).
MAX_OUTPUT_TOKENS = 1_000_000

#: Numbers one answer may hold: embedding values, or log-probabilities (one per
#: generated token and alternative).
MAX_OUTPUT_FLOATS = 4_000_000

#: Characters of one structured output (a JSON Schema's document, a regex's, grammar's or
#: choice's text, a tool call's arguments) the mock builds: ``max_tokens`` cuts a longer
#: one (finish reason ``length``, as vLLM cuts it), and a request whose limit would let
#: more through gets vLLM's 400 for its constraint.
MAX_STRUCTURED_CHARS = 100_000

#: Steps of work one request's structured outputs may take, all its choices together: a
#: schema node built or checked is one, a pattern node walked or a character made an
#: eighth (about half a second in all). Past them: vLLM's 400 for the constraint.
MAX_STRUCTURED_STEPS = 100_000

#: Seconds the regex engine may take matching one request's patterns (a schema's
#: ``pattern``, a regex checked against its text), in all. Past them: a 400.
STRUCTURED_REGEX_SECONDS = 1.0

#: Characters of a pattern (a regex constraint, a schema's ``pattern``, a script rule's
#: ``regex``), also once its counted repetitions are copied out, as the regex engine
#: compiles them (``(a{1000}){1000}`` took 1.9 GiB).
MAX_PATTERN = 10_000

#: Characters of a grammar the mock parses (its tree costs about 150 bytes a character).
MAX_GRAMMAR = 65_536

#: Bytes of a request body the journal keeps; the rest is cut and marked.
JOURNAL_BODY_BYTES = 64 * 1024

#: Bytes of one request header value the journal keeps; the rest is cut and marked.
JOURNAL_HEADER_BYTES = 4 * 1024

#: Characters of prompt text a script rule's ``regex`` is searched in.
MAX_SCRIPT_TEXT = 64 * 1024

#: Seconds a script rule's ``regex`` may search one request's text before the rule is
#: taken as not matching (and the rule is reported in the child's log).
REGEX_TIMEOUT = 0.25

#: Seconds a request may wait for a slot (``max_num_seqs``) before it is answered 503.
QUEUE_TIMEOUT = 600.0

#: Responses the Responses API's store keeps (``VLLM_ENABLE_RESPONSES_API_STORE``); past
#: it the oldest is forgotten (its id then answers 404). vLLM's store never forgets.
MAX_STORED_RESPONSES = 1_000

#: Bytes the store keeps, roughly (the JSON of the stored responses and of their input
#: messages); past it the oldest responses are forgotten.
MAX_STORED_BYTES = 64 * 1024 * 1024
