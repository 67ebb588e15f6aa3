"""Reading a request's head: the request line, the headers, the body's framing, the environ.

Strict, as RFC 9112 asks of a server that must not be confused: one space between the three
parts of the request line, token characters in methods and header names, no obsolete line
folding, one ``Content-Length`` (repeated only with the same value) or ``chunked`` alone,
never both. What breaks a rule is refused with its status (:class:`Refuse`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from mocksup._http.body import Body

if TYPE_CHECKING:
    from mocksup._http.connection import Connection
    from mocksup._http.server import HTTPLimits

__all__ = ("Refuse", "Request", "parse_header", "parse_request_line")

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset(b"0123456789")


class Refuse(Exception):
    """The request cannot be served: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_request_line(line: bytes) -> Request:
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise Refuse(400, "malformed request line")
    method, target, version = parts
    if not set(method) <= _TOKEN:
        raise Refuse(400, "malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/") and len(version) == 8 and version[5:6].isdigit():
            raise Refuse(505, "unsupported protocol version")
        raise Refuse(400, "malformed HTTP version")
    if any(b < 0x21 or b == 0x7F for b in target):
        raise Refuse(400, "malformed request target")
    return Request(method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"))


def parse_header(raw: bytes) -> tuple[str, str]:
    if raw[:1] in (b" ", b"\t"):
        raise Refuse(400, "obsolete line folding in a header")
    name, colon, value = raw.partition(b":")
    if not colon or not name or not set(name) <= _TOKEN:
        raise Refuse(400, "malformed header line")
    value = value.strip(b" \t\r\n")
    if b"\r" in value or b"\x00" in value or b"\n" in value:
        raise Refuse(400, "invalid character in a header value")
    return name.decode("ascii").lower(), value.decode("latin-1")


class Request:
    __slots__ = ("body", "expect_continue", "headers", "keep_alive", "method", "target", "version")

    def __init__(self, method: str, target: str, version: str) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers: list[tuple[str, str]] = []
        self.body: Body | None = None
        self.keep_alive = version == "HTTP/1.1"
        self.expect_continue = False

    def get(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def frame(self, conn: Connection, limits: HTTPLimits) -> None:
        """Decide the body's framing and the connection's fate from the headers (RFC 9112)."""
        tokens = {t.strip().lower() for v in self.get("connection") for t in v.split(",")}
        if "close" in tokens:
            self.keep_alive = False
        elif self.version == "HTTP/1.0" and "keep-alive" in tokens:
            self.keep_alive = True
        if limits.require_host and self.version == "HTTP/1.1" and not self.get("host"):
            raise Refuse(400, "missing required Host header")
        codings = self.get("transfer-encoding")
        lengths = self.get("content-length")
        if codings:
            if lengths:
                raise Refuse(400, "both Transfer-Encoding and Content-Length")
            if self.version == "HTTP/1.0":
                raise Refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
            if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
                raise Refuse(501, "unsupported transfer encoding")
            self.body = Body(conn, None)
        elif lengths:
            values = {v.strip() for v in ",".join(lengths).split(",")}
            text = values.pop() if len(values) == 1 else ""
            if not text or not set(text.encode()) <= _DIGITS or len(text) > 18:
                raise Refuse(400, "bad Content-Length")
            self.body = Body(conn, int(text))
        else:
            self.body = Body(conn, 0)
        expect = [v.strip().lower() for v in self.get("expect")]
        if expect:
            if expect != ["100-continue"]:
                raise Refuse(417, "")
            self.expect_continue = self.version == "HTTP/1.1" and not self.body.done

    def environ(self, conn: Connection) -> dict[str, Any]:
        target = self.target
        if target.startswith(("http://", "https://")):
            # Absolute form (sent to proxies): keep the path and query.
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        path, _, query = target.partition("?")
        server = conn.server
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "SCRIPT_NAME": "",
            # The target's bytes, unquoted (a str would be UTF-8-encoded first: raw bytes
            # past ASCII would reach the app encoded twice).
            "PATH_INFO": unquote_to_bytes(path.encode("latin-1")).decode("latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": self.target,
            "REQUEST_URI": self.target,
            "SERVER_NAME": server.host,
            "SERVER_PORT": str(server.port),
            "SERVER_PROTOCOL": self.version,
            "REMOTE_ADDR": conn.peer[0] if conn.peer else "",
            "REMOTE_PORT": str(conn.peer[1]) if conn.peer else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": self.body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "mocksup.socket": conn.sock,
            "mocksup.wait_disconnect": conn.wait_disconnect,
        }
        for name, value in self.headers:
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name == "content-length":
                environ["CONTENT_LENGTH"] = value
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
                if key in environ:
                    # WSGI joins repeated headers (RFC 9110 5.3); Cookie joins with "; ".
                    environ[key] += ("; " if name == "cookie" else ", ") + value
                else:
                    environ[key] = value
        return environ
