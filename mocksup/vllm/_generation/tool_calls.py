"""Tool calls: a scripted reply's calls, or one call when the request forces a tool.

``tool_choice`` ``"required"`` or a named function makes one call to that tool (the first
tool for ``"required"``) with arguments made up from its parameter schema; ``"auto"`` calls a
tool only when a script rule says so. The call's tokens are those of its JSON text, as a
tool parser would have read them from the model's output.
"""

from __future__ import annotations

import json
from typing import Any

from mocksup.vllm._generation import Ask, Draft
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["draft", "synthesize_arguments"]

_DEFAULTS: dict[str, Any] = {
    "integer": 1,
    "number": 1.0,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


def draft(ask: Ask) -> Draft | None:
    """The calls, or ``None`` when this choice calls no tool."""
    use = ask.request.tool_use
    if use is None:
        return None
    calls: list[tuple[str, dict[str, Any]]] = []
    forced = use.forced
    if ask.reply is not None and ask.reply.tool_calls:
        calls = [(c.name, c.arguments) for c in ask.reply.tool_calls]
    elif use.tools and (use.required or forced is not None):
        tool = next((t for t in use.tools if t.function.name == forced), use.tools[0])
        calls = [(tool.function.name, synthesize_arguments(tool.function.parameters))]
    if not calls:
        return None
    text = json.dumps([{"name": n, "arguments": json.dumps(a)} for n, a in calls])
    tokens = TOKENIZER.encode(text)
    if len(tokens) > ask.limit:
        # Cut before the call is whole: vLLM parses no call and reports the cut, with empty
        # content (as OpenAI does).
        return Draft(tokens[: ask.limit], "length", [], content="")
    encoded = [
        {
            "id": f"chatcmpl-tool-{ask.rng.getrandbits(64):016x}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        for name, arguments in calls
    ]
    # A named tool choice keeps "stop"; "auto"/"required" report the calls.
    return Draft(tokens, "stop" if forced is not None else "tool_calls", encoded)


def synthesize_arguments(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Plausible arguments for a JSON schema: one value of the right type per property.

    :raises ValueError: the schema is not one a structured-output backend compiles
        (answered 400, as vLLM answers a tool schema its grammar compiler refuses).
    """
    properties = (parameters or {}).get("properties") or {}
    if not isinstance(properties, dict):
        raise ValueError("Invalid tool parameters schema: `properties` must be an object.")
    values: dict[str, Any] = {}
    for name, schema in properties.items():
        if not isinstance(schema, dict):
            raise ValueError(f"Invalid tool parameters schema: property {name!r} is not an object.")
        enum = schema.get("enum")
        if enum is not None and (not isinstance(enum, list) or not enum):
            raise ValueError(
                f"Invalid tool parameters schema: `enum` of {name!r} must be a non-empty array."
            )
        if enum:
            values[name] = enum[0]
            continue
        kind = schema.get("type")
        values[name] = _DEFAULTS.get(kind, "mock") if isinstance(kind, str) else "mock"
    return values
