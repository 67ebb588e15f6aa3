"""``POST /tokenize`` and ``POST /detokenize``, with vLLM's request models.

``/tokenize`` takes vLLM's union of a completion form (``prompt``) and a chat form
(``messages``, rendered as generation renders them), so a body that fits neither lists the
errors of both, as vLLM's does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mocksup.vllm._chat import CHAT_TEMPLATE, render_chat
from mocksup.vllm._errors import from_validation_error
from mocksup.vllm.tokenizer import SPECIAL, TOKENIZER

__all__ = ["DetokenizeRequest", "detokenize", "tokenize", "tokenizer_info"]


class _Form(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    return_token_strs: bool | None = False


class TokenizeCompletionRequest(_Form):
    """``/tokenize`` with a ``prompt``."""

    prompt: str


class TokenizeChatRequest(_Form):
    """``/tokenize`` with chat ``messages``."""

    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True


class DetokenizeRequest(BaseModel):
    """``/detokenize``."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    tokens: list[int] = Field()


_TOKENIZE = TypeAdapter(TokenizeCompletionRequest | TokenizeChatRequest)


def parse_tokenize(data: Any) -> TokenizeCompletionRequest | TokenizeChatRequest:
    """Validate a ``/tokenize`` body.

    :raises APIError: vLLM's 400 listing the errors of both forms.
    """
    try:
        return _TOKENIZE.validate_python(data)
    except ValidationError as error:
        raise from_validation_error(error) from None


def tokenize(
    request: TokenizeCompletionRequest | TokenizeChatRequest, max_model_len: int
) -> dict[str, Any]:
    """``/tokenize``: ``{count, max_model_len, tokens, token_strs}``."""
    if isinstance(request, TokenizeChatRequest):
        text = render_chat(request.messages, request.add_generation_prompt)
    else:
        text = request.prompt
    tokens = TOKENIZER.encode(text)
    strs = [TOKENIZER.token_str(t) for t in tokens] if request.return_token_strs else None
    return {"count": len(tokens), "max_model_len": max_model_len, "tokens": tokens,
            "token_strs": strs}  # fmt: skip


def detokenize(request: DetokenizeRequest) -> dict[str, Any]:
    """``/detokenize``: ``tokens`` back to text."""
    return {"prompt": TOKENIZER.decode(request.tokens)}


def tokenizer_info(max_model_len: int) -> dict[str, Any]:
    """``/tokenizer_info`` (``--enable-tokenizer-info-endpoint``): the tokenizer's settings,
    as vLLM reports a tokenizer's ``tokenizer_config.json``."""
    return {
        "model_max_length": max_model_len,
        "vocab_size": TOKENIZER.vocab_size,
        "added_tokens_decoder": {
            str(TOKENIZER.encode(marker)[0]): {"content": marker, "special": True}
            for marker in SPECIAL
        },
        "tokenizer_class": "MockTokenizer",
        "chat_template": CHAT_TEMPLATE,
    }
