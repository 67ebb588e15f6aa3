"""The web viewer's page and routes, served by the collector under ``/mocksup/ui/``.

The page is one HTML document with its stylesheet and scripts inlined (the files of
``ui/``, shipped in the package: no CDN, no build step), so the live viewer and the
self-contained report (:mod:`mocksup.otlp.report`) are the same page with a different boot
document: ``{"mode": "live"}`` makes it follow ``/mocksup/feed`` (protobuf, decoded in the
browser), a report embeds its data. A Content-Security-Policy allows exactly the two inline
blocks (by hash) and requests to the collector itself; telemetry is only ever written as text.

The vLLM mocks' request journals run on other ports: the collector keeps a list of them
(its ``journals`` setting, and ``PUT /mocksup/ui/journals/<name>``, which a vLLM mock started
with ``journal_viewer`` calls) and fetches a journal itself when the page asks, so the browser
talks to one origin and no mock needs CORS. Only journals on that list are ever fetched.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import threading
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from mocksup.control import ControlClient, ControlError, ControlRequest, Param, Raw, Route
from mocksup.errors import ControlAPIError

__all__ = ("Journals", "check_journal", "journal_view", "page", "ui_routes")

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_SLOT = re.compile(r"\{\{(\w+)\}\}")
#: Seconds the collector waits for a journal beyond the long poll it passes on.
_JOURNAL_TIMEOUT = 5.0


def _asset(name: str) -> str:
    return (resources.files("mocksup.otlp.ui") / name).read_text(encoding="utf-8")


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _json_in_html(value: Any) -> str:
    # Inside <script type="application/json">: no "</script>", no "<!--", whatever the data.
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(boot: dict[str, Any], title: str = "mocksup viewer") -> tuple[str, str]:
    """The viewer's HTML with ``boot`` embedded, and its Content-Security-Policy."""
    style = _asset("viewer.css")
    script = _asset("otlp.js") + "\n" + _asset("viewer.js")
    csp = (
        f"default-src 'none'; script-src {_digest(script)}; style-src {_digest(style)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
    )
    slots = {
        "csp": csp,
        "title": html.escape(title),
        "style": style,
        "script": script,
        "boot": _json_in_html(boot),
    }
    text = _SLOT.sub(lambda match: slots[match.group(1)], _asset("page.html"))
    return text, csp


@cache
def _live_page() -> tuple[bytes, str]:
    text, csp = page({"mode": "live"}, "mocksup viewer")
    return text.encode(), csp


def check_journal(name: str, url: str) -> str:
    """The base URL of a mock whose journal the viewer may show, checked and normalised.

    :raises ValueError: a bad name, or ``url`` is not an ``http(s)://host:port`` URL.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid journal name: 1 to 64 letters, digits, "
                         "'_', '.' or '-'")  # fmt: skip
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"a journal URL is a mock's base URL, such as "
                         f"http://127.0.0.1:8000, not {url!r}")  # fmt: skip
    try:
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError as error:
        raise ValueError(f"a journal URL with a bad port: {url!r} ({error})") from None
    return f"{parts.scheme}://{parts.netloc}"


def journal_view(entry: dict[str, Any]) -> dict[str, Any]:
    """What the viewer shows of one journal entry: no body, no headers but ``traceparent``
    (which links it to its span), the model asked for."""
    body = entry.get("body")
    headers = entry.get("headers") or {}
    return {
        **{key: entry.get(key) for key in ("index", "method", "path", "status", "start",
                                           "first_byte", "duration", "client_disconnected")},
        "traceparent": headers.get("traceparent"),
        "model": body.get("model") if isinstance(body, dict) else None,
        "stream": bool(body.get("stream")) if isinstance(body, dict) else False,
    }  # fmt: skip


class Journals:
    """The request journals the viewer shows: mock name → base URL (thread-safe)."""

    def __init__(self, initial: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self._urls = {name: check_journal(name, url) for name, url in initial.items()}

    def listing(self) -> list[dict[str, str]]:
        with self._lock:
            return [{"name": name, "url": url} for name, url in sorted(self._urls.items())]

    def url(self, name: str) -> str:
        with self._lock:
            found = self._urls.get(name)
        if found is None:
            raise ControlError(404, f"no journal named {name!r}; GET /mocksup/ui/journals")
        return found

    def set(self, name: str, url: str) -> None:
        try:
            checked = check_journal(name, url)
        except ValueError as error:
            raise ControlError(400, str(error)) from None
        with self._lock:
            self._urls[name] = checked

    def remove(self, name: str) -> None:
        self.url(name)
        with self._lock:
            self._urls.pop(name, None)


def ui_routes(journals: Journals) -> list[Route]:
    """The viewer's routes, for the collector's control app."""
    api = _Handlers(journals)
    return [
        Route("/ui/", ("GET",), api.page, doc="the web viewer (an HTML page)"),
        Route("/ui/journals", ("GET",), api.listing, doc="the request journals shown"),
        Route("/ui/journals/<name>", ("GET",), api.journal, {
            "count": Param.integer("wait until the journal holds this many entries", default=0),
            "timeout": Param.wait(default=0.0),
        }, doc="one journal, fetched from its mock (entries without bodies)"),
        Route("/ui/journals/<name>", ("PUT", "DELETE"), api.change,
              doc='show a journal (body {"url": base URL}) or stop showing it'),
    ]  # fmt: skip


class _Handlers:
    def __init__(self, journals: Journals) -> None:
        self.journals = journals

    def page(self, request: ControlRequest) -> Any:
        body, csp = _live_page()
        headers = [
            ("Content-Security-Policy", csp + "; frame-ancestors 'none'"),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return Raw("text/html; charset=utf-8", body, headers)

    def listing(self, request: ControlRequest) -> Any:
        return {"journals": self.journals.listing()}

    def journal(self, request: ControlRequest) -> Any:
        name = request.values["name"]
        url = self.journals.url(name)
        count, timeout = request.args["count"], request.args["timeout"]
        client = ControlClient(url, name, _JOURNAL_TIMEOUT)
        params = {"count": count or None, "timeout": timeout if count else None}
        try:
            answer = client.call("GET", "/requests", params=params, wait=timeout)
        except ControlAPIError as error:
            raise ControlError(502, f"journal {name!r} ({url}): {error}") from None
        entries = answer.get("requests") if isinstance(answer, dict) else None
        if not isinstance(entries, list):
            raise ControlError(502, f"journal {name!r} ({url}) answered no request list")
        return {"name": name, "url": url,
                "requests": [journal_view(e) for e in entries if isinstance(e, dict)]}  # fmt: skip

    def change(self, request: ControlRequest) -> Any:
        name = request.values["name"]
        if request.method == "DELETE":
            self.journals.remove(name)
        else:
            url = request.json_object().get("url")
            if not isinstance(url, str):
                raise ControlError(400, 'the body is {"url": "http://host:port"}')
            self.journals.set(name, url)
        return {"journals": self.journals.listing()}
