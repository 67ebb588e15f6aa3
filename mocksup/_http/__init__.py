"""mocksup's HTTP/1.1 server for the mocks' WSGI apps (used through :mod:`mocksup.serving`).

Why not werkzeug's development server: a mock must survive whatever the system under test,
a fuzzer or a dying client sends it, and werkzeug's server is not built for that (its chunked
reader could crash the interpreter on a short read, ``Expect: 100-continue`` went unanswered,
errors raised before the app ran closed the connection with no reply, ``HEAD`` got a body, and
it had no connection cap). This one is written for hostile input:

- **Framing is ours** (:mod:`.request`, :mod:`.body`). Request line, headers,
  ``Content-Length`` and ``chunked`` bodies are parsed strictly (RFC 9112): a malformed or
  ambiguous request gets a 4xx/5xx answer and the connection closes. The app always sees a
  bounded, well-framed body.
- **Limits everywhere** (:mod:`.server`). Request line (414), header size and count (431),
  connections (:class:`HTTPLimits`), idle and head timeouts; at the cap, idle keep-alive
  connections are reclaimed first; descriptor exhaustion backs off and is logged once.
- **HTTP/1.1 as clients expect it** (:mod:`.connection`). Keep-alive, pipelining,
  ``100 Continue`` when the app first reads the body, ``HEAD`` without a body, chunked
  answers for streams, one send per answer or stream chunk (``TCP_NODELAY``).

It speaks WSGI to the app, plus ``mocksup.socket`` and ``mocksup.wait_disconnect`` in the
environ. Nothing here knows about processes, OTLP or vLLM.
"""

from __future__ import annotations

from mocksup._http.body import Body, BodyError, read_body
from mocksup._http.connection import DropConnection
from mocksup._http.server import ErrorPage, HTTPLimits, HTTPServer, WSGIApp, go_error

__all__ = (
    "Body",
    "BodyError",
    "DropConnection",
    "ErrorPage",
    "HTTPLimits",
    "HTTPServer",
    "WSGIApp",
    "go_error",
    "read_body",
)
