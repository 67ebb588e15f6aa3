"""The Messages API's routes: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

A mixin of :class:`~._app.VLLMApp`. The body is checked against the Anthropic schema first
(a refusal is vLLM's usual 400, as FastAPI answers it); everything after that answers
Anthropic-shaped errors, as vLLM's ``anthropic`` router translates them. A message is a
chat request run through the shared pipeline on the Messages surface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from mocksup.vllm._body import decode_json, validate
from mocksup.vllm._chat import BodyOptions, ChatRequest
from mocksup.vllm._encoding import dumps
from mocksup.vllm._errors import APIError, VLLMValidationError, rule_error
from mocksup.vllm._exchange import JSON, Exchange
from mocksup.vllm._messages import (
    CountTokensRequest,
    MessagesRequest,
    anthropic_error,
    message_body,
    to_chat,
)
from mocksup.vllm._messages_stream import MessagesEvents
from mocksup.vllm._pipeline import Surface
from mocksup.vllm._plan import Plan

if TYPE_CHECKING:
    from mocksup.vllm._config import ServerConfig
    from mocksup.vllm._pipeline import Generation

__all__ = ["MESSAGES", "MessagesRoutes"]

Handler = Callable[[Exchange], Iterable[bytes]]
#: Exceptions vLLM's Anthropic handler catches and answers (as a 400 when not its own).
_CAUGHT = (APIError, VLLMValidationError, ValueError, TypeError, OverflowError)


def _body(plan: Plan, created: int, options: BodyOptions) -> dict[str, Any]:
    return message_body(plan, options.request_id, options.model, options.prompt_details)


MESSAGES = Surface(ChatRequest, "chatcmpl-", "", _body, MessagesEvents)


class MessagesRoutes:
    """The routes of :mod:`._messages_routes` (a mixin of the app)."""

    config: ServerConfig
    generation: Generation

    def messages_routes(self) -> dict[str, tuple[tuple[str, ...], Handler]]:
        """The routes, by path."""
        return {
            "/v1/messages": (("POST",), self._messages),
            "/v1/messages/count_tokens": (("POST",), self._count_tokens),
        }

    def _messages(self, exchange: Exchange) -> Iterable[bytes]:
        data = decode_json(exchange.environ.get("CONTENT_TYPE", ""), exchange.body)
        request = validate(MessagesRequest, data)
        try:
            result = self.generation.handle(MESSAGES, exchange, to_chat(request))
        except _CAUGHT as error:
            raise _translated(error) from None
        return result

    def _count_tokens(self, exchange: Exchange) -> Iterable[bytes]:
        data = decode_json(exchange.environ.get("CONTENT_TYPE", ""), exchange.body)
        request = validate(CountTokensRequest, data)
        try:
            chat = to_chat(request)
            self.generation.check_model(chat.model)
            count = len(chat.prompts(self.config.role)[0].ids)
            limit = self.config.max_model_len
            if count > limit:
                raise VLLMValidationError(
                    f"This model's maximum context length is {limit} tokens. However, your "
                    f"prompt contains {count} input tokens, which exceeds this limit even "
                    "without any output tokens. Please reduce the length of the input prompt.",
                    parameter="input_tokens",
                    value=count,
                )
        except _CAUGHT as error:
            raise _translated(error) from None
        exchange.respond(200, JSON)
        return [
            dumps({"input_tokens": count, "context_management": {"original_input_tokens": count}})
        ]


def _translated(error: Exception) -> APIError:
    if isinstance(error, VLLMValidationError):
        error = rule_error(error)
    elif not isinstance(error, APIError):
        error = APIError(400, str(error))
    return anthropic_error(error)
