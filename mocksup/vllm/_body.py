"""Request bodies: bounded framing, JSON decoding within the structure limits, validation.

Every API route's body goes through :func:`read_body`, then :func:`decode_json` (vLLM's
content-type check and FastAPI's JSON errors) and :func:`validate` (a pydantic model, its
errors answered as vLLM answers them). Structure is checked on the raw bytes before
decoding, so a hostile body never becomes a huge tree of Python objects.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mocksup import serving
from mocksup.serving import BodyError
from mocksup.vllm._errors import APIError, from_validation_error, parse_error
from mocksup.vllm._limits import MAX_JSON_CONTAINERS, MAX_JSON_VALUES

__all__ = ["check_structure", "decode_json", "read_body", "validate"]

M = TypeVar("M", bound=BaseModel)

_MEDIA_TYPE_ERROR = "Unsupported Media Type: Only 'application/json' is allowed"


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (``max_request_bytes``).

    :raises APIError: 413 past ``limit``; 400 for a body badly framed or cut short (the
        HTTP server's framing checks, see :func:`mocksup.serving.read_body`); 503 when the
        server holds as many request bodies as it may (its ``max_held``).
    """
    try:
        return serving.read_body(environ, limit)
    except BodyError as error:
        if error.status == 413:
            raise APIError(
                413, f"Request body exceeds the limit of {limit} bytes (max_request_bytes)."
            ) from None
        if error.status == 503:  # the HTTP server's max_held: the body was not read
            message = "The mock holds as many request bodies as it may; retry later."
            raise APIError(503, message) from None
        raise APIError(400, "There was an error parsing the body") from None


def decode_json(content_type: str, body: bytes) -> Any:
    """Decode a JSON body as vLLM's server does, within the mock's structure limits.

    :raises APIError: vLLM's 400 for another content type or malformed JSON, FastAPI's
        "error parsing the body" for nesting deeper than the JSON parser's recursion limit
        (as vLLM's parser), 413 for more than :data:`MAX_JSON_CONTAINERS` objects and arrays.
    """
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise from_validation_error([_MEDIA_TYPE_ERROR])
    check_structure(body)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as error:
        raise from_validation_error([_json_error(error)]) from None
    except (ValueError, RecursionError):  # not UTF-8, or nested past the recursion limit
        raise parse_error() from None
    return data


def check_structure(body: bytes) -> None:
    """Refuse a body holding too many objects and arrays, or values (counted on the bytes).

    Brackets and commas inside strings count too: the counts are upper bounds, cheap in C.
    """
    opened = body.count(b"[") + body.count(b"{")
    if opened > MAX_JSON_CONTAINERS:
        raise APIError(
            413,
            f"The request body has more than {MAX_JSON_CONTAINERS} JSON objects and "
            "arrays (a limit of the mock).",
        )
    if opened + body.count(b",") > MAX_JSON_VALUES:
        raise APIError(
            413,
            f"The request body has more than {MAX_JSON_VALUES} JSON values (a limit of the mock).",
        )


def _json_error(error: json.JSONDecodeError) -> dict[str, Any]:
    # FastAPI's entry for a body json.loads refused: located at the character offset.
    return {
        "type": "json_invalid",
        "loc": (error.pos,),
        "msg": "JSON decode error",
        "input": {},
        "ctx": {"error": error.msg},
    }


def validate(model: type[M], data: Any, context: dict[str, Any] | None = None) -> M:
    """Validate decoded JSON against ``model`` (``context``: the limits it checks, from
    :attr:`~._config.ServerConfig.validation_context`; vLLM's defaults without it).

    :raises APIError: vLLM's 400 listing the schema errors.
    """
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        raise from_validation_error(error) from None
