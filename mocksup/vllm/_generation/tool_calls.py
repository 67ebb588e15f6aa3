"""Tool calls: which tools a choice calls, with what arguments, in the text a model writes.

Which calls: a script rule's ``tool_calls`` when one matches; else, for a named
``tool_choice``, that tool; for ``"required"``, the tools the last user message names (else
the first tool); for ``"auto"``, what the server's ``tool_call_policy`` decides:
``"mention"`` (the default) calls the tools the last message names when it is the user's,
``"always"`` calls those (else the first tool) unless the last message is a tool result,
``"never"`` calls none. A message names a tool when it contains its name, case aside,
with ``_`` and ``-`` read as spaces too (``get_weather`` or "get weather"). With
``parallel_tool_calls`` false only the first is called, as vLLM's grammar allows one.

Arguments are drawn from the tool's parameter schema (:mod:`.json_schema`), so they are
valid against it. The text is what the model would write for the tool choice, and
:mod:`mocksup.vllm._tool_parsers` reads it back as vLLM's parsers do: that gives the body's
``tool_calls``, the streamed deltas and the finish reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._generation import Ask, Draft
from mocksup.vllm._generation.budget import Budget, Full, OverBudget, chars_for
from mocksup.vllm._generation.json_schema import schema_value
from mocksup.vllm._generation.structured import fitted, json_text
from mocksup.vllm._sampling import Tool, ToolUse
from mocksup.vllm._tool_parsers import HermesCalls, NamedCall, RequiredCalls, ToolParser

__all__ = ["TOOL_CALL_POLICIES", "draft", "named_tools", "synthesize_arguments"]

#: The values of ``tool_call_policy``.
TOOL_CALL_POLICIES = ("mention", "always", "never")


def draft(ask: Ask) -> Draft | None:
    """The calls' text and its parser, or ``None`` when this choice calls no tool.

    :raises VLLMValidationError: a tool's parameter schema is refused (vLLM's 400), or
        its arguments need more than the mock's budget.
    """
    use = ask.request.tool_use
    if use is None or not use.tools:
        return None
    parallel = getattr(ask.request, "parallel_tool_calls", True) is not False
    budget = chars_for(ask.limit, ask.work)
    calls = _chosen(ask, use, budget)
    if not calls:
        return None
    if not parallel:
        calls = calls[:1]
    parser: ToolParser
    if use.forced is not None:
        parser = NamedCall(ask.rng, use.forced, parallel=parallel)
        text = _joined(calls[:1], lambda name, args: args, "", "")
    elif use.required:
        parser = RequiredCalls(ask.rng, parallel=parallel)
        text = _joined(calls, lambda name, args: f'{{"name": {json_text(name)}, "parameters": '
                       f"{args}}}", "[", "]", ", ")  # fmt: skip
    else:
        parser = HermesCalls(ask.rng, parallel=parallel)
        text = _joined(calls, lambda name, args: f"<tool_call>\n{{\"name\": {json_text(name)}, "
                       f'"arguments": {args}}}\n</tool_call>', "", "", "\n")  # fmt: skip
    try:
        tokens, reason = fitted(text, budget, ask.limit, whole=not isinstance(calls[-1][1], _Cut))
    except OverBudget as error:
        raise VLLMValidationError(f"Invalid tool parameters schema: {error}",
                                  parameter="tools") from None  # fmt: skip
    return Draft(tokens, reason, tool_parser=parser)


class _Cut(str):
    """Arguments the budget cut: the start of their JSON text."""


def _joined(calls: list[tuple[str, Any]], call_text: Callable[[str, str], str], opening: str,
            closing: str, between: str = "") -> str:  # fmt: skip
    # The calls' text, each as json_text writes it; a cut call ends it (what comes after
    # lies past the limit).
    texts = []
    for name, args in calls:
        if isinstance(args, _Cut):
            whole = call_text(name, "\x00")
            texts.append(whole[: whole.index("\x00")] + args)
            return opening + between.join(texts)
        texts.append(call_text(name, json_text(args)))
    return opening + between.join(texts) + closing


def _chosen(ask: Ask, use: ToolUse, budget: Budget) -> list[tuple[str, Any]]:
    by_name = {t.function.name: t for t in use.tools}
    reply = ask.reply
    if reply is not None and reply.tool_calls:
        scripted = [(c.name, c.arguments) for c in reply.tool_calls]
        if use.forced is None:
            return scripted
        return [c for c in scripted if c[0] == use.forced][:1] or [
            (use.forced, _arguments(by_name[use.forced], ask, budget))
        ]
    if use.forced is not None:
        return [(use.forced, _arguments(by_name[use.forced], ask, budget))]
    messages = getattr(ask.request, "messages", None) or []
    named = named_tools(messages, use.tools)
    if use.required:
        tools = named or use.tools[:1]
    else:
        policy = ask.tool_call_policy
        last = messages[-1].get("role") if messages and isinstance(messages[-1], dict) else None
        if policy == "never" or last == "tool":
            return []
        tools = named or (use.tools[:1] if policy == "always" else [])
    calls: list[tuple[str, Any]] = []
    for tool in tools:
        calls.append((tool.function.name, _arguments(tool, ask, budget)))
        if isinstance(calls[-1][1], _Cut):
            break  # the text ends within these arguments
    return calls


def named_tools(messages: list[Any], tools: list[Tool]) -> list[Tool]:
    """The tools the last message names, if it is the user's, in the order it names them."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return []
    from mocksup.vllm._chat import content_text

    text = content_text(messages[-1]).lower()
    found: list[tuple[int, Tool]] = []
    for tool in tools:
        name = tool.function.name.lower()
        spelled = re.sub(r"[_-]+", " ", name)
        at = [i for i in (text.find(name), text.find(spelled) if spelled != name else -1) if i >= 0]
        if at:
            found.append((min(at), tool))
    return [tool for _, tool in sorted(found, key=lambda pair: pair[0])]


def _arguments(tool: Tool, ask: Ask, budget: Budget) -> Any:
    try:
        return synthesize_arguments(tool.function.parameters, ask.rng, budget)
    except Full as full:
        return _Cut(json_text(full.partial)[: full.prefix])


def synthesize_arguments(
    parameters: dict[str, Any] | None, rng: Any = None, budget: Budget | None = None
) -> Any:
    """Arguments valid against a tool's parameter schema (an empty object without one).

    :param budget: the characters their JSON text may take and the request's work.
    :raises Full: the arguments reached the budget's characters (as
        :func:`~.json_schema.schema_value` raises it).
    :raises VLLMValidationError: the schema is not one a structured-output backend compiles
        or the mock can satisfy (answered 400, as vLLM answers a tool schema its grammar
        compiler refuses), or it needs more work than the budget's.
    """
    import random

    from mocksup.vllm._checks import schema_problem

    schema = parameters if parameters else {"type": "object", "properties": {}}
    problem = schema_problem(schema, schema)
    if problem is None:
        try:
            return schema_value(schema, rng if rng is not None else random.Random(0), budget)
        except (ValueError, TypeError, LookupError, RecursionError) as error:
            problem = str(error) or "too deeply nested"  # Unsatisfiable, OverBudget...
    raise VLLMValidationError(f"Invalid tool parameters schema: {problem}", parameter="tools")
