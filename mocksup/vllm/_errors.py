"""vLLM's error answers: the body, the status and type each failure gets, and its wording.

vLLM 0.33 answers every error with ``{"error": {"message", "type", "param", "code"}}``
(``ErrorResponse``), except the auth middleware's ``{"error": "Unauthorized"}`` and FastAPI's
own ``{"detail": ...}`` answers. Three families matter here:

* schema errors (pydantic, answered by vLLM's ``validation_exception_handler``): type
  ``"Bad Request"``, a message listing the errors as ``"N validation error(s):\\n  {...}"``
  (each error a Python dict with ``loc`` joined by dots, big inputs described rather than
  echoed), and ``param`` from the first error's location (``"body.seed"``), or from a
  :class:`VLLMValidationError` raised by a model validator;
* rule errors raised while serving (:class:`VLLMValidationError` outside pydantic): type
  ``"BadRequestError"``, the message with ``(parameter=..., value=...)`` appended, and
  ``param``;
* any other ``ValueError``/``TypeError``/``OverflowError`` escaping a handler: 400
  ``BadRequestError`` with the exception's text (vLLM's fallback handlers do the same).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

__all__ = [
    "APIError",
    "VLLMValidationError",
    "error_body",
    "from_validation_error",
    "parse_error",
    "rule_error",
    "uvicorn_error_page",
]

_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    413: "BadRequestError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}

#: How many errors a validation message lists, and how long one entry or input may be.
_LISTED_ERRORS = 10
_INPUT_CHARS = 200
_ENTRY_CHARS = 1000


class APIError(Exception):
    """An error answered with vLLM's body ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "InternalServerError")
        self.param = param
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        """The JSON body vLLM sends (``code`` is the HTTP status, as its ``ErrorInfo``)."""
        return error_body(self.message, self.type, self.status, self.param)


class VLLMValidationError(ValueError):
    """A rule of vLLM's protocol broken (vLLM's exception of the same name and wording).

    Raised in a model validator it becomes a schema error whose ``param`` is ``parameter``;
    raised while serving, :func:`rule_error` turns it into the answer.
    """

    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value

    def __str__(self) -> str:
        extras = []
        if self.parameter is not None:
            extras.append(f"parameter={self.parameter}")
        if self.value is not None:
            extras.append(f"value={self.value}")
        text = super().__str__()
        return f"{text} ({', '.join(extras)})" if extras else text


def error_body(message: str, type: str, code: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's error body (``ErrorResponse``)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def rule_error(error: VLLMValidationError) -> APIError:
    """The 400 vLLM answers for a rule broken while serving."""
    return APIError(400, str(error), param=error.parameter)


def uvicorn_error_page(status: int, reason: str) -> tuple[int, bytes]:
    """What vLLM's HTTP server (uvicorn) answers to a request it cannot parse, whatever the
    fault: 400 and a fixed sentence (for :func:`mocksup.serving.serve_wsgi`)."""
    return 400, b"Invalid HTTP request received."


def parse_error() -> APIError:
    """FastAPI's answer to a body its JSON parser gave up on (too deep, for one)."""
    return _DetailError(400, "There was an error parsing the body")


class _DetailError(APIError):
    # FastAPI raises Starlette's HTTPException here, which vLLM's handler (registered for
    # FastAPI's subclass) never sees: the body is Starlette's ``{"detail": ...}``.
    def body(self) -> dict[str, Any]:
        return {"detail": self.message}


def from_validation_error(error: ValidationError | list[Any], where: str = "body") -> APIError:
    """The 400 vLLM's ``validation_exception_handler`` answers for these schema errors.

    ``error`` may also be a ready list of error entries (dicts, or plain strings as vLLM's
    content-type check raises them). ``where`` is FastAPI's first location segment: the
    request ``body``, or ``query`` for a query parameter.
    """
    entries = error.errors(include_url=False) if isinstance(error, ValidationError) else error
    if where != "body":
        entries = [{**e, "loc": (where, *e.get("loc", ()))} for e in entries]
    param = None
    for entry in entries:
        cause = entry.get("ctx", {}).get("error") if isinstance(entry, dict) else None
        if isinstance(cause, VLLMValidationError):
            param = cause.parameter
            break
    if param is None and entries and isinstance(entries[0], dict):
        param = _param(entries[0].get("loc", ()))
    count = len(entries)
    label = "error" if count == 1 else "errors"
    lines = [f"  {_entry_text(entry)}" for entry in entries[:_LISTED_ERRORS]]
    if count > _LISTED_ERRORS:
        lines.append(f"  ...and {count - _LISTED_ERRORS} more {label}")
    message = f"{count} validation {label}:\n" + "\n".join(lines) if entries else "Validation error"
    return APIError(400, message, type="Bad Request", param=param)


#: Segments pydantic puts into an error location that name no field: union branches and
#: validator kinds (``list[int]``, ``function-wrap[...]``, ``str``...). vLLM drops them.
_MARKERS = frozenset(
    [
        "function-wrap",
        "function-after",
        "function-before",
        "function-plain",
        "json-or-python",
        "lax-or-strict",
        "chain",
        "default",
        "nullable",
        "tagged-union",
        "union",
        "call",
        "arguments",
        "is-instance",
        "is-subclass",
        "callable",
        "str",
        "int",
        "float",
        "bool",
        "bytes",
        "bytearray",
        "list",
        "tuple",
        "dict",
        "set",
        "frozenset",
        "complex",
        "none",
        "nonetype",
    ]
)
_BRACKETED = re.compile(r"[\[\]{}()]")


def _param(loc: Any) -> str:
    # FastAPI locates body errors under "body"; vLLM joins the meaningful segments.
    segments = [str(s) for s in loc]
    if not segments or segments[0] not in ("body", "query"):
        segments.insert(0, "body")
    kept = [s for s in segments if not (_BRACKETED.search(s) or s.lower() in _MARKERS)]
    return ".".join(kept or segments)


def _entry_text(entry: Any) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    shown = dict(entry)
    if "input" in shown:
        shown["input"] = _describe(shown["input"])
    shown["loc"] = _param(shown.get("loc", ()))
    text = str(shown)
    return text[:_ENTRY_CHARS] + "...[truncated]" if len(text) > _ENTRY_CHARS else text


def _describe(value: Any) -> Any:
    # Containers are described, never rendered: a big request's errors would repeat it.
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{type(value).__name__} of {len(value)} bytes>"
    text = value if isinstance(value, str) else _text(value)
    return text[:_INPUT_CHARS] + "...[truncated]" if len(text) > _INPUT_CHARS else text


def _text(value: Any) -> str:
    try:
        return str(value)
    except ValueError:  # an int past Python's digit limit
        return f"<{type(value).__name__}>"
