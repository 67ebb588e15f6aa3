"""The Responses API's SSE events, in vLLM 0.33's sequence and with its field names.

Each event is ``event: <type>\\ndata: <json>\\n\\n`` (vLLM's ``model_dump_json`` of the
``openai`` event type, every field present), numbered by ``sequence_number`` from 0. A
stream opens with ``response.created`` and ``response.in_progress`` (sent before the engine
admits the request, as vLLM sends them), then walks the output through vLLM's simple-stream
state machine: each state (reasoning, text, a tool call) opens an output item
(``response.output_item.added``, and for text and reasoning ``response.content_part.added``),
streams its deltas (``response.reasoning_text.delta``, ``response.output_text.delta``,
``response.function_call_arguments.delta``), and closes with its ``*.done`` events when the
next state starts or the output ends; ``response.completed`` (``response.incomplete`` when
``max_output_tokens`` cut it) carries the final response, whose items are the streamed ones.
Tool calls, whose text the mock does not stream token by token, come whole with the last
token. There is no ``[DONE]``. A generation error mid-stream ends the connection without a
terminal event, as vLLM's stream breaks there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mocksup.vllm._encoding import dumps
from mocksup.vllm._ids import random_hex
from mocksup.vllm._plan import Plan
from mocksup.vllm._responses import (
    ResponseContext,
    function_call_item,
    logprob_entries,
    message_item,
    output_text,
    reasoning_item,
    response_body,
    usage_body,
)
from mocksup.vllm._stream import ChunkWriter, StreamSettings

__all__ = ["ResponsesEvents", "sse_event"]

_NONE, _TEXT, _REASONING, _TOOL = "none", "text", "reasoning", "tool"


def sse_event(event: dict[str, Any]) -> bytes:
    """One event as vLLM frames it: its type on an ``event:`` line, then its JSON."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + dumps(event) + b"\n\n"


class ResponsesEvents(ChunkWriter):
    """Writes one response's events as the engine produces its tokens.

    :param record: called with every event's bytes (the store's log of a background
        response), besides the stream.
    :param finished: called with the final response body once it is known.
    """

    end = b""

    def __init__(
        self,
        plan: Plan,
        request_id: str,
        created: int,
        model: str,
        settings: StreamSettings,
        *,
        context: ResponseContext,
        record: Callable[[bytes], None] | None,
        finished: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__(plan, request_id, created, model, settings)
        self.context = context
        self._record = record
        self._finished = finished
        self.failed = False
        self._sequence = 0
        self._state = _NONE
        self._index = 0  # the output index of the item open, or of the next one
        self._item_id = ""
        self._text = ""
        self._logprobs: list[dict[str, Any]] = []
        self._call: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        c = plan.choices[0]
        self._hide = settings.hide_reasoning
        self._want_logprobs = context.request.wants_logprobs and c.logprobs is not None
        self._max_tokens = c.max_tokens

    # -- framing ------------------------------------------------------------------------

    def _emit(self, out: list[bytes], event: dict[str, Any]) -> None:
        event["sequence_number"] = self._sequence
        self._sequence += 1
        # The openai event types declare their fields in alphabetical order; vLLM's extra
        # ``name`` (on function_call_arguments.done) comes after them.
        extra = event.pop("name", None)
        ordered = {k: event[k] for k in sorted(event)}
        if extra is not None:
            ordered["name"] = extra
        data = sse_event(ordered)
        if self._record is not None:
            self._record(data)
        out.append(data)

    def _response(self, status: str, output: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
        top = self.context.request.top_logprobs if self.context.request.wants_logprobs else None
        return response_body(
            self.context,
            status=status,
            output=output,
            max_tokens=self._max_tokens,
            usage=usage,
            top_logprobs=top,
        )

    # -- what the engine calls ----------------------------------------------------------

    def opening(self) -> bytes:
        """``response.created`` and ``response.in_progress``, both with the response as it
        starts (``in_progress``, no output, no usage)."""
        out: list[bytes] = []
        initial = self._response("in_progress", [], None)
        self._emit(out, {"response": initial, "type": "response.created"})
        self._emit(out, {"response": initial, "type": "response.in_progress"})
        return b"".join(out)

    def token(self, position: int, k: int) -> bytes:
        """The events of token ``k``."""
        c = self.plan.choices[position]
        self._generated[position] = k + 1
        out: list[bytes] = []
        delta = c.deltas[k]
        if k < c.answer_start:
            if delta and not self._hide and self.context.parsed:
                self._switch(out, _REASONING)
                self._text += delta
                self._emit(
                    out,
                    {
                        "content_index": 0,
                        "delta": delta,
                        "item_id": self._item_id,
                        "output_index": self._index,
                        "type": "response.reasoning_text.delta",
                    },
                )
        elif delta and not c.tool_calls:
            self._switch(out, _TEXT)
            self._text += delta
            logprobs = logprob_entries(c, k, k + 1, self.plan.as_ids) if self._want_logprobs else []
            self._logprobs.extend(logprobs)
            stream_logprobs = [
                {
                    "token": e["token"],
                    "logprob": e["logprob"],
                    "top_logprobs": [
                        {"token": t["token"], "logprob": t["logprob"]} for t in e["top_logprobs"]
                    ],
                }
                for e in logprobs
            ]
            self._emit(
                out,
                {
                    "content_index": 0,
                    "delta": delta,
                    "item_id": self._item_id,
                    "logprobs": stream_logprobs,
                    "output_index": self._index,
                    "type": "response.output_text.delta",
                },
            )
        if k == len(c.tokens) - 1 and c.tool_calls and self.context.parsed:
            for call in c.tool_calls:
                self._close(out, "completed")
                self._open_call(out, call)
        return b"".join(out)

    def empty_finish(self, position: int) -> bytes:
        """A choice that generated nothing has no events of its own."""
        return b""

    def usage_chunk(self) -> bytes:
        """The last item's ``*.done`` events, then ``response.completed`` (or
        ``response.incomplete``) with the final response."""
        c = self.plan.choices[0]
        out: list[bytes] = []
        status = "incomplete" if c.finish_reason == "length" else "completed"
        self._close(out, status)
        usage = usage_body(self.plan, self.settings.reasoning)
        final = self._response(status, self.items, usage)
        self._finished(final)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        self._emit(out, {"response": final, "type": kind})
        return b"".join(out)

    def error_chunk(self, error: dict[str, Any]) -> bytes:  # type: ignore[override]
        """vLLM's stream breaks on a generation error: nothing more is written, and the
        route ends the connection (see :attr:`failed`)."""
        self.failed = True
        return b""

    # -- vLLM's state machine -----------------------------------------------------------

    def _switch(self, out: list[bytes], state: str) -> None:
        if self._state == state:
            return
        self._close(out, "completed")
        self._state, self._text, self._logprobs = state, "", []
        self._item_id = f"{'rs' if state == _REASONING else 'msg'}_{random_hex()}"
        if state == _REASONING:
            item = reasoning_item(self._item_id, None, "in_progress")
            part: dict[str, Any] = {"text": "", "type": "reasoning_text"}
        else:
            item = message_item(self._item_id, [], "in_progress")
            part = output_text("", [])
        self._emit(
            out, {"item": item, "output_index": self._index, "type": "response.output_item.added"}
        )
        self._emit(
            out,
            {
                "content_index": 0,
                "item_id": self._item_id,
                "output_index": self._index,
                "part": part,
                "type": "response.content_part.added",
            },
        )

    def _open_call(self, out: list[bytes], call: dict[str, Any]) -> None:
        self._state, self._call = _TOOL, call
        self._item_id = f"fc_{random_hex()}"
        item = function_call_item(self._item_id, call, "in_progress", arguments="")
        self._emit(
            out, {"item": item, "output_index": self._index, "type": "response.output_item.added"}
        )
        arguments = call["function"]["arguments"]
        if arguments:
            self._emit(
                out,
                {
                    "delta": arguments,
                    "item_id": self._item_id,
                    "output_index": self._index,
                    "type": "response.function_call_arguments.delta",
                },
            )

    def _close(self, out: list[bytes], status: str) -> None:
        state, index, item_id = self._state, self._index, self._item_id
        if state == _NONE:
            return
        if state == _TOOL:
            arguments = self._call["function"]["arguments"]
            self._emit(
                out,
                {
                    "arguments": arguments,
                    "item_id": item_id,
                    "output_index": index,
                    "type": "response.function_call_arguments.done",
                    "name": self._call["function"]["name"],
                },
            )
            item = function_call_item(item_id, self._call, status)
        elif state == _REASONING:
            part = {"text": self._text, "type": "reasoning_text"}
            self._text_done(out, {"type": "response.reasoning_text.done"}, part)
            item = reasoning_item(item_id, self._text, status)
        else:
            part = output_text(self._text, self._logprobs or None)
            done = {"logprobs": [], "type": "response.output_text.done"}
            self._text_done(out, done, part)
            item = message_item(item_id, [part] if self._text else [], status)
        self._emit(out, {"item": item, "output_index": index, "type": "response.output_item.done"})
        self.items.append(item)
        self._index += 1
        self._state = _NONE

    def _text_done(self, out: list[bytes], done: dict[str, Any], part: dict[str, Any]) -> None:
        # The text's ``*.done`` event (``done`` adds its type), then its part's.
        where = {"content_index": 0, "item_id": self._item_id, "output_index": self._index}
        self._emit(out, {**where, **done, "text": self._text})
        self._emit(out, {**where, "part": part, "type": "response.content_part.done"})
