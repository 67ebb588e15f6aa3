"""``POST /v1/chat/completions/batch``: several conversations in one request, one choice each.

vLLM's ``BatchChatCompletionRequest`` takes the fields of a chat request with ``messages`` a
list of conversations; each is its own engine request (``<id>_<i>``) and the answer is one
``chat.completion`` whose choice ``i`` answers conversation ``i``. No streaming, no tools,
``n`` must be 1.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from mocksup.vllm._chat import content_text, render_chat
from mocksup.vllm._errors import VLLMValidationError
from mocksup.vllm._sampling import GenerationRequest, Prompt
from mocksup.vllm.tokenizer import TOKENIZER

__all__ = ["BatchChatRequest"]

_Conversation = Annotated[list[dict[str, Any]], Field(min_length=1)]


class BatchChatRequest(GenerationRequest):
    """``POST /v1/chat/completions/batch`` (vLLM's ``BatchChatCompletionRequest``)."""

    #: Chat bodies carry prompt token ids at the top only for one conversation.
    batch: ClassVar[bool] = True

    messages: Annotated[list[_Conversation], Field(min_length=1)]
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    tool_choice: Literal["none"] | None = "none"
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    @model_validator(mode="before")
    @classmethod
    def _check_batch(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("use_beam_search"):
            raise VLLMValidationError(
                "Batch chat completions do not support beam search. Please set "
                "`use_beam_search` to False.",
                parameter="use_beam_search",
            )
        if data.get("logprob_token_ids") and not data.get("logprobs"):
            raise VLLMValidationError(
                "when using `logprob_token_ids`, `logprobs` must be set to true.",
                parameter="logprob_token_ids",
            )
        n = data.get("n", 1)
        if n is not None and n != 1:
            raise VLLMValidationError(
                "Batch chat completions do not support `n > 1`. Please set `n` to 1.",
                parameter="n",
                value=n,
            )
        return data

    def prompts(self, role: str = "assistant") -> list[Prompt]:
        """One prompt per conversation."""
        prompts = []
        for conversation in self.messages:
            text = render_chat(
                conversation, self.add_generation_prompt, self.continue_final_message
            )
            last = conversation[-1]
            reply = role if self.add_generation_prompt else last.get("role")
            echo = content_text(last) if self.echo and last.get("role") == reply else ""
            prompts.append(Prompt(text, TOKENIZER.encode(text), echo))
        return prompts

    def match_text(self) -> str:
        """The last user message of the first conversation."""
        for message in reversed(self.messages[0]):
            if message.get("role") == "user":
                return content_text(message)
        return ""

    def reply_role(self, response_role: str) -> str:
        """The reply's role (of the first conversation)."""
        if self.add_generation_prompt:
            return response_role
        return str(self.messages[0][-1].get("role", response_role))

    @property
    def max_new(self) -> int | None:
        """``max_completion_tokens``, which wins over ``max_tokens``."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    @property
    def logprobs_wanted(self) -> int | None:
        """``top_logprobs`` when ``logprobs`` is on."""
        return (self.top_logprobs or 0) if self.logprobs else None
