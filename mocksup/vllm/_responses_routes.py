"""The Responses API's routes: create (``POST /v1/responses``), retrieve
(``GET /v1/responses/{response_id}``) and cancel (``POST .../cancel``).

A mixin of :class:`~._app.VLLMApp`, answering as vLLM 0.33's ``OpenAIServingResponses``.
A request becomes a chat request (:func:`~._responses.to_chat`) run through the shared
pipeline on a surface made for it, whose body and event writer build the ``response``
object and store it. With the store enabled (``VLLM_ENABLE_RESPONSES_API_STORE``), a
``background`` request is answered at once (``queued``) while a thread runs its generation
as a stream, recording the events of a streamed one for its readers; cancelling it aborts
the generation as a client that leaves aborts a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError

from mocksup.vllm._body import decode_json, validate
from mocksup.vllm._chat import BodyOptions, ChatRequest, hides_reasoning
from mocksup.vllm._encoding import dumps
from mocksup.vllm._errors import APIError, VLLMValidationError, from_validation_error
from mocksup.vllm._exchange import JSON, Exchange
from mocksup.vllm._faults import ClientGone, Cut
from mocksup.vllm._ids import random_hex
from mocksup.vllm._pipeline import Surface
from mocksup.vllm._plan import Plan
from mocksup.vllm._response_store import EventLog, ResponseStore
from mocksup.vllm._responses import (
    ResponseContext,
    ResponsesRequest,
    output_items,
    response_body,
    to_chat,
    usage_body,
)
from mocksup.vllm._responses_stream import ResponsesEvents
from mocksup.vllm._sampling import StreamOptions
from mocksup.vllm._stream import ChunkWriter, StreamSettings

if TYPE_CHECKING:
    from mocksup.vllm._config import ServerConfig
    from mocksup.vllm._pipeline import Generation

__all__ = ["ResponsesRoutes"]

_log = logging.getLogger(__name__)

Handler = Callable[[Exchange], Iterable[bytes]]
_SSE = [("Content-Type", "text/event-stream; charset=utf-8")]
_STORE_OFF = (
    "This vLLM engine does not support `store=True` and therefore does not support the "
    "background mode. To enable these features, set the environment variable "
    "`VLLM_ENABLE_RESPONSES_API_STORE=1` when launching the vLLM server."
)


class _RetrieveQuery(BaseModel):
    starting_after: int | None = None
    stream: bool | None = False


class ResponsesRoutes:
    """The routes of :mod:`._responses_routes` (a mixin of the app)."""

    config: ServerConfig
    generation: Generation
    responses: ResponseStore

    def responses_routes(self) -> dict[str, tuple[tuple[str, ...], Handler]]:
        """The routes, by path (``{response_id}``: one path segment)."""
        return {
            "/v1/responses": (("POST",), self._create_response),
            "/v1/responses/{response_id}": (("GET",), self._retrieve_response),
            "/v1/responses/{response_id}/cancel": (("POST",), self._cancel_response),
        }

    # -- create -----------------------------------------------------------------------------

    def _create_response(self, exchange: Exchange) -> Iterable[bytes]:
        data = decode_json(exchange.environ.get("CONTENT_TYPE", ""), exchange.body)
        request = validate(ResponsesRequest, data)
        context = self._context(request)
        config = self.config
        if request.background and request.store and not config.responses_store:
            raise APIError(400, _STORE_OFF, type="invalid_request_error", param="background")
        history, previous = self._previous(request.previous_response_id)
        if request.max_output_tokens is not None and request.max_output_tokens > (
            config.max_model_len
        ):
            raise VLLMValidationError(
                f"max_output_tokens={request.max_output_tokens} cannot be greater than "
                f"max_model_len={config.max_model_len}. Please request fewer output tokens.",
                parameter="max_output_tokens",
                value=request.max_output_tokens,
            )
        chat = to_chat(context, history, previous, config.max_model_len)
        prompt = len(chat.prompts(config.role)[0].ids)
        if prompt == config.max_model_len:
            raise APIError(
                400,
                f"The engine prompt length {prompt} exceeds the max_model_len "
                f"{config.max_model_len}. Please reduce prompt.",
                type="invalid_request_error",
                param="input",
            )
        if request.store and config.responses_store:
            self.responses.keep_messages(context.response_id, context.messages)
            context.stored = True
        if request.background and context.stored:
            return self._background(exchange, context, chat, prompt)
        writers: list[ResponsesEvents] = []
        surface = self._surface(context, None, writers)
        result = self.generation.handle(surface, exchange, chat)
        if not request.stream:
            return result
        return _ended(result, writers)

    def _context(self, request: ResponsesRequest) -> ResponseContext:
        config = self.config
        return ResponseContext(
            request=request,
            response_id=request.request_id or f"resp_{random_hex()}",
            model=self.generation.check_model(request.model),
            reasoning_parser=config.reasoning_parser is not None,
            tool_parser=config.auto_tool_choice and config.tool_call_parser is not None,
        )

    def _previous(self, response_id: str | None) -> tuple[Any, Any]:
        if response_id is None:
            return None, None
        entry = self.responses.get(response_id) if self.config.responses_store else None
        if entry is None or entry.body is None:
            raise _not_found(response_id)
        return entry.messages, entry.body["output"]

    def _surface(
        self,
        context: ResponseContext,
        record: Callable[[bytes], None] | None,
        writers: list[ResponsesEvents],
    ) -> Surface:
        finished = self._finisher(context)

        def body(plan: Plan, created: int, options: BodyOptions) -> dict[str, Any]:
            c = plan.choices[0]
            hide = hides_reasoning(options.request, options.reasoning)
            status = "incomplete" if c.finish_reason == "length" else "completed"
            request = context.request
            answer = response_body(
                context,
                status=status,
                output=output_items(context, c, plan.as_ids, hide),
                max_tokens=c.max_tokens,
                usage=usage_body(plan, options.reasoning),
                top_logprobs=request.top_logprobs if request.wants_logprobs else None,
            )
            finished(answer)
            return answer

        def events(
            plan: Plan, request_id: str, created: int, model: str, settings: StreamSettings
        ) -> ChunkWriter:
            writer = ResponsesEvents(
                plan,
                request_id,
                created,
                model,
                settings,
                context=context,
                record=record,
                finished=finished,
            )
            writers.append(writer)
            return writer

        return Surface(ChatRequest, "", "_", body, events, header_ids=False)

    def _finisher(self, context: ResponseContext) -> Callable[[dict[str, Any]], None]:
        if not context.stored:
            return lambda answer: None
        return lambda answer: self.responses.finish(context.response_id, answer)

    # -- background -------------------------------------------------------------------------

    def _background(
        self, exchange: Exchange, context: ResponseContext, chat: ChatRequest, prompt: int
    ) -> Iterable[bytes]:
        request = context.request
        cancelled = threading.Event()
        log = EventLog() if request.stream else None
        # The generation runs as a stream whatever the request says, so it starts only when
        # the thread drains it; a cancel aborts it as a client that leaves does.
        chat.stream, chat.stream_options = True, StreamOptions(include_usage=True)
        runner = Exchange({**exchange.environ, "mocksup.wait_disconnect": cancelled.wait})
        runner.body, runner.route = exchange.body, exchange.route
        writers: list[ResponsesEvents] = []
        surface = self._surface(context, log.append if log is not None else None, writers)
        generation = self.generation.handle(surface, runner, chat)
        limit = self.config.max_model_len - prompt
        queued = response_body(
            context,
            status="queued",
            output=[],
            max_tokens=limit if chat.max_tokens is None else min(chat.max_tokens, limit),
            usage=None,
            top_logprobs=request.top_logprobs if request.wants_logprobs else None,
        )
        self.responses.queue(context.response_id, queued, cancelled, log)
        thread = threading.Thread(
            target=self._run_background,
            args=(context.response_id, generation, log),
            name=f"background {context.response_id}",
            daemon=True,
        )
        thread.start()
        if log is None:
            exchange.respond(200, JSON)
            return [dumps(queued)]
        exchange.respond(200, _SSE)
        return log.follow()

    def _run_background(
        self, response_id: str, generation: Iterable[bytes], log: EventLog | None
    ) -> None:
        try:
            for _ in generation:
                pass
        except ClientGone:
            pass  # cancelled: the store says so already
        except Exception:
            _log.exception("background response %s failed", response_id)
            entry = self.responses.get(response_id)
            if entry is not None and entry.body is not None:
                self.responses.finish(response_id, {**entry.body, "status": "failed"})
        finally:
            if log is not None:
                log.close()

    # -- retrieve and cancel ----------------------------------------------------------------

    def _retrieve_response(self, exchange: Exchange) -> Iterable[bytes]:
        response_id = exchange.environ["mocksup.path_params"]["response_id"]
        query = dict(parse_qsl(exchange.environ.get("QUERY_STRING", "")))
        try:
            params = _RetrieveQuery.model_validate(query)
        except ValidationError as error:
            raise from_validation_error(error, where="query") from None
        entry = self.responses.get(response_id) if self.config.responses_store else None
        if entry is None or entry.body is None:
            raise _not_found(response_id)
        if not params.stream:
            exchange.respond(200, JSON)
            return [dumps(entry.body)]
        exchange.respond(200, _SSE)
        if entry.events is None:
            # vLLM finds no events for a response that was not a background stream: its
            # stream fails after the 200, and the connection ends.
            return _cut()
        start = 0 if params.starting_after is None else params.starting_after + 1
        return entry.events.follow(start)

    def _cancel_response(self, exchange: Exchange) -> Iterable[bytes]:
        response_id = exchange.environ["mocksup.path_params"]["response_id"]
        result = self.responses.cancel(response_id) if self.config.responses_store else None
        if result is None:
            raise _not_found(response_id)
        if isinstance(result, str):
            raise APIError(
                400,
                "Cannot cancel a synchronous response.",
                type="invalid_request_error",
                param="response_id",
            )
        exchange.respond(200, JSON)
        return [dumps(result)]


def _not_found(response_id: str) -> APIError:
    return APIError(
        404,
        f"Response with id '{response_id}' not found.",
        type="invalid_request_error",
        param="response_id",
    )


def _ended(result: Iterable[bytes], writers: list[ResponsesEvents]) -> Iterator[bytes]:
    # A generation error breaks vLLM's Responses stream: the connection ends without a
    # terminal event (the writer wrote nothing more).
    yield from result
    if writers and writers[0].failed:
        raise Cut("the Responses stream broke on a generation error, as vLLM's does")


def _cut() -> Iterator[bytes]:
    # An iterator, so the 200 goes out before the connection ends.
    yield from ()
    raise Cut("no background events for this response")
