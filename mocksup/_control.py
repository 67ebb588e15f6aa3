"""The parent's client of a mock's HTTP control API.

Each mock serves a small JSON API under the reserved prefix :data:`PREFIX` on its own HTTP
port, so a harness in any language can query and steer it; the Python methods of the mocks
are thin clients of that same API (one implementation, two doors).
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlencode, urlsplit

from mocksup.errors import ControlAPIError

__all__ = ["PREFIX", "ControlClient"]

#: Every control route of every mock lives under this path; no real API uses it.
PREFIX = "/mocksup"


class ControlClient:
    """Calls one mock's control API.

    :param base_url: the mock's HTTP root, such as ``http://127.0.0.1:4318``.
    :param server: the mock's name, for error messages.
    :param timeout: seconds to wait for an answer beyond any server-side wait.
    """

    def __init__(self, base_url: str, server: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.base_url = base_url.rstrip("/")
        self.server = server
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        wait: float = 0.0,
    ) -> Any:
        """Send one request to ``PREFIX + path`` and return the decoded JSON answer.

        :param params: query parameters; ``None`` values are left out, lists repeat the key.
        :param body: a JSON-able request body.
        :param wait: seconds the server may hold the request (long polls); added to the
            socket timeout.
        :raises ControlAPIError: the mock could not be reached or answered an error.
        """
        _, payload = self.fetch(method, path, params=params, body=body, wait=wait)
        return json.loads(payload) if payload else None

    def fetch(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        wait: float = 0.0,
    ) -> tuple[str, bytes]:
        """Like :meth:`call`, but return the answer undecoded: ``(content type, body)``.

        For answers that are not JSON (the collector's protobuf query results).
        """
        target = PREFIX + path
        if params:
            query = urlencode(
                [(k, v) for k, v in params.items() if v is not None and not isinstance(v, list)]
                + [(k, x) for k, v in params.items() if isinstance(v, list) for x in v]
            )
            if query:
                target += "?" + query
        url = self.base_url + target
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout + wait)
        try:
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            reason = "timed out" if isinstance(error, socket.timeout) else str(error)
            raise ControlAPIError(
                f"mock server {self.server!r} did not answer {method} {url} ({reason}); "
                "is it still running? Its log_tail() may say why",
                server=self.server,
                url=url,
            ) from error
        finally:
            conn.close()
        if response.status >= 400:
            raise ControlAPIError(
                f"mock server {self.server!r} answered {response.status} to {method} {url}: "
                f"{_error_detail(payload)!r}",
                server=self.server,
                status=response.status,
                url=url,
            )
        return response.getheader("Content-Type") or "", payload


def _error_detail(payload: bytes) -> Any:
    try:
        decoded = json.loads(payload)
    except ValueError:
        return payload[:200]
    return decoded.get("error", decoded) if isinstance(decoded, dict) else decoded
