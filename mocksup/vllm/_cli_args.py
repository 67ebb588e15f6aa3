"""A ``vllm serve`` command line read into the mock's settings.

:func:`parse_serve_args` takes the arguments a test hands real vLLM (``["Qwen/Qwen3-0.6B",
"--max-model-len", "1024", "--api-key", "k"]``, with or without a leading ``vllm serve``) and
returns the settings of :class:`~mocksup.vllm.MockVLLMServer` they stand for. Flags the mock
implements become settings under the same name (``--max-model-len`` is ``max_model_len``);
the other flags ``vllm serve`` 0.33.0 knows (:mod:`._vllm_flags`) are skipped with their
values and named in the result, so a suite written for real vLLM keeps its arguments; a flag
vLLM does not know is refused, as ``vllm serve`` refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from mocksup.vllm._vllm_flags import (
    LIST_FLAGS,
    OPTIONAL_VALUE_FLAGS,
    SHORT_FLAGS,
    SWITCH_FLAGS,
    VALUE_FLAGS,
)

__all__ = ["IMPLEMENTED_FLAGS", "parse_serve_args"]


def _human_int(text: str) -> int:
    # vLLM's readable integers: 1k = 1000, 1K = 1024 (and m/M, g/G).
    factors = {"k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    if text and text[-1] in factors:
        return int(float(text[:-1]) * factors[text[-1]])
    return int(text)


def _text(text: str) -> str:
    return text


#: Flags taking values that the mock implements: flag -> converter of each value.
_VALUED: dict[str, Callable[[str], Any]] = {
    "model": _text,
    "served-model-name": _text,
    "max-model-len": _human_int,
    "api-key": _text,
    "seed": int,
    "port": int,
    "host": _text,
    "max-num-seqs": int,
    "max-num-queued-reqs": int,
    "max-num-queued-tokens": int,
    "max-logprobs": int,
    "response-role": _text,
    "root-path": _text,
    "tool-call-parser": _text,
    "otlp-traces-endpoint": _text,
    "block-size": int,
    "gpu-memory-utilization": float,
    "num-gpu-blocks-override": int,
    "kv-cache-dtype": _text,
    "fingerprint-mode": _text,
    "fingerprint-value": _text,
    "reasoning-parser": _text,
    "default-chat-template-kwargs": json.loads,
    "lora-modules": _text,
    "max-loras": int,
    "max-lora-rank": int,
    "data-parallel-size": int,
    "shutdown-timeout": int,
}

#: Switches the mock implements.
_SWITCHES = frozenset(
    {
        "enable-request-id-headers",
        "enable-force-include-usage",
        "enable-prompt-tokens-details",
        "enable-per-request-metrics",
        "enable-server-load-tracking",
        "enable-tokenizer-info-endpoint",
        "enable-auto-tool-choice",
        "return-tokens-as-token-ids",
        "disable-fastapi-docs",
        "disable-log-stats",
        "enable-prefix-caching",
        "enable-lora",
    }
)

#: Every ``vllm serve`` flag that changes the mock (``docs/vllm.rst`` lists them).
IMPLEMENTED_FLAGS = frozenset(_VALUED) | _SWITCHES


def parse_serve_args(args: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The settings a ``vllm serve`` command line stands for, and the real vLLM flags that
    have no effect on the mock (skipped, with their values).

    :raises ValueError: a flag ``vllm serve`` does not know, a missing or malformed value,
        or two model names.
    """
    tokens = list(args)
    if tokens[:2] == ["vllm", "serve"]:
        tokens = tokens[2:]
    elif tokens[:1] == ["serve"]:
        tokens = tokens[1:]
    settings: dict[str, Any] = {}
    ignored: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-") or token == "-":
            _set_model(settings, token)
            continue
        flag, inline = _split(token)
        values, i = _take_values(flag, inline, tokens, i)
        name = flag[3:] if flag.startswith("no-") and flag[3:] in SWITCH_FLAGS else flag
        if name in IMPLEMENTED_FLAGS:
            _apply(settings, flag, values)
        else:
            ignored.append("--" + flag)
    return settings, ignored


def _split(token: str) -> tuple[str, str | None]:
    # "--max-model-len=1024", "--max_model_len 1024", "-tp 2", "-O3"; dotted keys of JSON
    # settings ("--compilation-config.mode 3") belong to their flag.
    body, eq, inline = token.partition("=")
    if body.startswith("--"):
        flag = body[2:].replace("_", "-")
    elif body in SHORT_FLAGS:
        flag = SHORT_FLAGS[body]
    elif body.startswith("-O"):
        return "compilation-config", inline if eq else (body[2:] or None)
    else:
        raise ValueError(f"unknown vllm serve flag {body!r}")
    flag = flag.split(".", 1)[0] if "." in flag else flag
    return flag, inline if eq else None


def _take_values(flag: str, inline: str | None, tokens: list[str], i: int) -> tuple[list[str], int]:
    switch = flag in SWITCH_FLAGS or (flag.startswith("no-") and flag[3:] in SWITCH_FLAGS)
    if switch:
        if inline is not None:
            raise ValueError(f"--{flag} takes no value")
        return [], i
    if flag not in VALUE_FLAGS and flag not in LIST_FLAGS and flag not in OPTIONAL_VALUE_FLAGS:
        raise ValueError(f"unknown vllm serve flag '--{flag}'")
    if inline is not None:
        return [inline], i
    values = []
    while i < len(tokens) and not (tokens[i].startswith("-") and len(tokens[i]) > 1):
        values.append(tokens[i])
        i += 1
        if flag not in LIST_FLAGS:
            break
    if not values and flag not in OPTIONAL_VALUE_FLAGS:
        raise ValueError(f"--{flag} needs a value")
    return values, i


def _apply(settings: dict[str, Any], flag: str, values: list[str]) -> None:
    if flag.startswith("no-"):
        settings[flag[3:].replace("-", "_")] = False
        return
    key = flag.replace("-", "_")
    if flag in _SWITCHES:
        settings[key] = True
        return
    convert = _VALUED[flag]
    try:
        converted = [convert(v) for v in values]
    except ValueError:
        raise ValueError(f"--{flag}: invalid value {' '.join(values)!r}") from None
    if flag == "model":
        _set_model(settings, converted[0])
    elif flag in LIST_FLAGS:
        settings[key] = converted
    else:
        settings[key] = converted[0]


def _set_model(settings: dict[str, Any], model: str) -> None:
    if "model" in settings and settings["model"] != model:
        raise ValueError(f"two models given: {settings['model']!r} and {model!r}")
    settings["model"] = model
