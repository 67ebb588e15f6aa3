"""The link to a collector's viewer: the mock tells it where its request journal is.

The collector cannot be told at its own start (the vLLM mock starts after it, to export its
spans there), so the mock announces itself once it serves: one ``PUT`` to the viewer's
``journals/<name>`` route, from a daemon thread, so that neither the ready handshake nor a
stop ever waits on it. A viewer that does not answer only costs a log line.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from urllib.parse import urljoin, urlsplit

__all__ = ["announce_journal"]

_log = logging.getLogger(__name__)
_TIMEOUT = 5.0


def announce_journal(viewer: str, name: str, own_url: str) -> threading.Thread:
    """Ask the viewer at ``viewer`` (a collector's ``ui`` endpoint) to show the journal of
    the mock ``name`` serving at ``own_url``; returns the thread doing it."""
    thread = threading.Thread(
        target=_put, args=(viewer, name, own_url), name="mocksup-viewer-link", daemon=True
    )
    thread.start()
    return thread


def _put(viewer: str, name: str, own_url: str) -> None:
    target = urlsplit(urljoin(viewer if viewer.endswith("/") else viewer + "/", f"journals/{name}"))
    body = json.dumps({"url": own_url}).encode()
    conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=_TIMEOUT)
    try:
        conn.request("PUT", target.path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            _log.warning("the viewer at %s refused the journal of %s: %s %r", viewer, name,
                         response.status, answer[:200])  # fmt: skip
        else:
            _log.info("the viewer at %s shows the journal of %s", viewer, name)
    except (OSError, http.client.HTTPException) as error:
        _log.warning("the viewer at %s did not answer (%s): no journal link", viewer, error)
    finally:
        conn.close()
