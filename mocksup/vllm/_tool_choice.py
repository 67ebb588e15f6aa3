"""vLLM's rules for ``tools`` and ``tool_choice`` in a chat request, with its wording.

They run on the raw body before the schema (as vLLM's ``check_tool_usage`` model validator),
so a malformed ``tool_choice`` gets vLLM's message and ``param``, not a type error.
"""

from __future__ import annotations

from typing import Any

from mocksup.vllm._errors import VLLMValidationError

__all__ = ["check_tool_usage"]

_CORRECT_USAGE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'


def check_tool_usage(data: Any) -> Any:
    """Check ``tools`` and ``tool_choice``; default ``tool_choice`` to ``"auto"`` with tools.

    :raises VLLMValidationError: vLLM's message and parameter for each broken rule.
    """
    if not isinstance(data, dict):
        return data
    if data.get("tools") == []:
        raise VLLMValidationError(
            "`tools` must not be an empty array. Either provide at least one tool or omit "
            "the field entirely.",
            parameter="tools",
        )
    if "tool_choice" not in data and data.get("tools"):
        data["tool_choice"] = "auto"
    choice = data.get("tool_choice")
    if choice is None or choice == "none":
        return data
    if data.get("tools") is None:
        raise VLLMValidationError(
            "When using `tool_choice`, `tools` must be set.", parameter="tool_choice"
        )
    if choice not in ("auto", "required") and not isinstance(choice, dict):
        raise VLLMValidationError(
            f'Invalid value for `tool_choice`: {choice}! Only named tools, "none", '
            '"auto" or "required" are supported.',
            parameter="tool_choice",
        )
    if isinstance(choice, dict):
        _check_named(choice, data["tools"])
    return data


def _check_named(choice: dict[str, Any], tools: Any) -> None:
    function = choice.get("function")
    if not isinstance(function, dict):
        raise VLLMValidationError(
            f"Invalid value for `function`: `{function}` in `tool_choice`! {_CORRECT_USAGE}",
            parameter="tool_choice.function",
        )
    if "name" not in function:
        raise VLLMValidationError(
            f"Expected field `name` in `function` in `tool_choice`! {_CORRECT_USAGE}",
            parameter="tool_choice.function.name",
        )
    name = function["name"]
    if not isinstance(name, str) or not name:
        raise VLLMValidationError(
            f"Invalid `name` in `function`: `{name}` in `tool_choice`! {_CORRECT_USAGE}",
            parameter="tool_choice.function.name",
        )
    names = [
        t["function"].get("name")
        for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ] if isinstance(tools, list) else []  # fmt: skip
    if name not in names:
        raise VLLMValidationError(
            "The tool specified in `tool_choice` does not match any of the specified `tools`",
            parameter="tool_choice",
        )
