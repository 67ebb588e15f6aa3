"""The control-API framework (``mocksup.control``), served in-process over a real socket and
called with ``ControlClient`` and raw ``http.client``."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import threading
import time
import unittest
from typing import Any

import psutil

from mocksup import ChildCrashedError, ControlAPIError
from mocksup.control import (
    MAX_DEPTH,
    MAX_WAIT,
    ControlApp,
    ControlClient,
    ControlError,
    ControlRequest,
    Param,
    Raw,
    Route,
)
from mocksup.errors import ChildSuspendedError
from mocksup.otlp import MockOTLPCollector
from mocksup.serving import bind_tcp, serve_wsgi
from tests.support import ProcessTestCase


class Counter:
    """A tiny control API: a counter with a long poll, as a mock's would be."""

    def __init__(self) -> None:
        self.value = 0
        self.cond = threading.Condition()

    def routes(self) -> list[Route]:
        return [
            Route("/count", ("GET",), self.get, {"at_least": Param.integer(default=0),
                                                 "timeout": Param.wait(default=0.0)}),
            Route("/count", ("POST",), self.add),
            Route("/echo", ("GET",), lambda r: r.args, {
                "name": Param.text(), "tag": Param.texts(), "ratio": Param.number(high=1.0),
                "on": Param.flag(), "kind": Param.choice("a", "b"),
            }),
            Route("/items/<item_id>", ("GET", "DELETE"), lambda r: {"id": r.values["item_id"]}),
            Route("/raw", ("GET",), lambda r: Raw("application/x-protobuf", b"\x0a\x00")),
            Route("/nan", ("GET",), lambda r: {"x": float("nan")}),
            Route("/teapot", ("GET",), self.teapot),
        ]  # fmt: skip

    def get(self, request: ControlRequest) -> Any:
        with self.cond:
            self.cond.wait_for(
                lambda: self.value >= request.args["at_least"], request.args["timeout"]
            )
            return {"value": self.value}

    def add(self, request: ControlRequest) -> Any:
        by = request.json_object().get("by", 1)
        if not isinstance(by, int):
            raise ControlError(400, "by must be an integer")
        with self.cond:
            self.value += by
            self.cond.notify_all()
            return {"value": self.value}

    def teapot(self, request: ControlRequest) -> Any:
        raise ControlError(418, "short and stout", [("X-Spout", "yes")])


class ControlAppTest(unittest.TestCase):
    def setUp(self) -> None:
        self.counter = Counter()
        app = ControlApp(
            self.counter.routes(), name="counter", kind="Counter", info=lambda: {"port": 1}
        )
        context = serve_wsgi(app, bind_tcp("127.0.0.1", 0))
        server = context.__enter__()
        self.addCleanup(context.__exit__, None, None, None)
        self.port = server.port
        self.client = ControlClient(f"http://127.0.0.1:{server.port}", "counter")

    def raw_bytes(self, target: bytes) -> tuple[int, Any]:
        """GET ``target`` as these very bytes (http.client refuses non-ASCII ones)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            response.begin()
            return response.status, json.loads(response.read())

    def raw(self, method: str, target: str, body: bytes | None = None) -> tuple[int, Any, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, response, json.loads(data) if data else None
        finally:
            conn.close()

    def test_health_and_index_on_every_control_app(self) -> None:
        self.assertEqual(
            self.client.call("GET", "/health"),
            {"status": "ok", "name": "counter", "class": "Counter", "port": 1},
        )
        index = self.client.call("GET", "")
        paths = [(r["path"], r["methods"]) for r in index["routes"]]
        self.assertIn(("/mocksup/count", ["POST"]), paths)
        count = next(r for r in index["routes"] if r["path"] == "/mocksup/count" and r["params"])
        self.assertEqual(sorted(count["params"]), ["at_least", "timeout"])

    def test_parameters_are_parsed_and_defaulted(self) -> None:
        answer = self.client.call(
            "GET", "/echo", params={"name": "x", "tag": ["a", "b"], "ratio": 0.5, "on": True}
        )
        self.assertEqual(
            answer, {"name": "x", "tag": ["a", "b"], "ratio": 0.5, "on": True, "kind": None}
        )

    def test_unknown_repeated_and_bad_parameters_are_400_naming_them(self) -> None:
        cases = {
            "/mocksup/echo?nmae=x": "unknown parameter 'nmae' for GET /mocksup/echo; "
            "known: kind, name, on, ratio, tag",
            "/mocksup/echo?name=a&name=b": "parameter 'name' is given more than once",
            "/mocksup/echo?ratio=nan": "parameter 'ratio' must be a finite number",
            "/mocksup/echo?ratio=inf": "parameter 'ratio' must be a finite number",
            "/mocksup/echo?ratio=2": "parameter 'ratio' must be a finite number from 0 to 1",
            "/mocksup/echo?ratio=-1e308": "parameter 'ratio' must be a finite number",
            "/mocksup/echo?on=maybe": "parameter 'on' must be true or false",
            "/mocksup/echo?kind=c": "parameter 'kind' must be one of a, b",
            "/mocksup/count?at_least=-1": "parameter 'at_least' must be from 0",
            "/mocksup/count?at_least=1.5": "parameter 'at_least' must be an integer",
            "/mocksup/count?timeout=nan": "parameter 'timeout' must be a finite number",
            f"/mocksup/count?timeout={MAX_WAIT + 1:g}": "the longest wait is 600 s",
        }
        for target, message in cases.items():
            with self.subTest(target=target):
                status, _, body = self.raw("GET", target)
                self.assertEqual(status, 400)
                self.assertIn(message, body["error"])

    def test_unknown_routes_and_methods(self) -> None:
        status, _, body = self.raw("GET", "/mocksup/nothing")
        self.assertEqual(status, 404)
        self.assertIn("no control route GET /mocksup/nothing", body["error"])
        status, response, body = self.raw("PUT", "/mocksup/count")
        self.assertEqual(status, 405)
        self.assertEqual(response.getheader("Allow"), "GET, POST")
        self.assertEqual(self.client.call("DELETE", "/items/42"), {"id": "42"})
        self.assertEqual(self.client.call("GET", "/items/42/"), {"id": "42"})

    def test_bodies_are_bounded_strict_json_objects(self) -> None:
        self.assertEqual(self.client.call("POST", "/count", body={"by": 2}), {"value": 2})
        for body, message in [
            (b"{", "not valid JSON"),
            (b'{"by": NaN}', "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (b"[" * 100_000 + b"]" * 100_000, f"deeper than {MAX_DEPTH} levels"),
            (b'{"by": "x"}', "by must be an integer"),
            (b" " * (2 << 20), "exceeds the limit"),
        ]:
            with self.subTest(body=body[:20]):
                status, _, answer = self.raw("POST", "/mocksup/count", body)
                self.assertEqual(status, 413 if b" " * 100 in body else 400)
                self.assertIn(message, answer["error"])
        self.assertEqual(self.client.call("GET", "/count"), {"value": 2})

    def test_bodies_nest_at_most_max_depth_and_hold_finite_numbers(self) -> None:
        def deep(levels: int) -> bytes:
            return b'{"by": 1, "x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

        self.assertEqual(self.raw("POST", "/mocksup/count", deep(MAX_DEPTH))[0], 200)
        # 980 levels: json reads it, but what reads it next (pydantic, an answer's encoder)
        # may run out of stack and fail with a 500.
        for levels in (MAX_DEPTH + 1, 980):
            status, _, answer = self.raw("POST", "/mocksup/count", deep(levels))
            self.assertEqual(status, 400)
            self.assertEqual(answer["error"], f"the body nests objects and arrays deeper than "
                                              f"{MAX_DEPTH} levels")  # fmt: skip
        status, _, answer = self.raw("POST", "/mocksup/count", b'{"by": 1, "x": -1e400}')
        self.assertEqual(status, 400)
        self.assertIn("'-1e400' is out of a double's range", answer["error"])
        self.assertEqual(self.client.call("GET", "/count"), {"value": 1})

    def test_query_values_are_utf8_and_numbers_plain_decimals(self) -> None:
        # Raw UTF-8 (curl sends it so) reads as percent-encoded UTF-8 does; so do path values.
        for query in ("name=caf\u00e9", "name=caf%C3%A9"):
            with self.subTest(query):
                status, answer = self.raw_bytes(f"/mocksup/echo?{query}".encode())
                self.assertEqual((status, answer["name"]), (200, "caf\u00e9"))
        self.assertEqual(self.raw_bytes("/mocksup/items/caf\u00e9".encode()),
                         (200, {"id": "caf\u00e9"}))  # fmt: skip
        cases = {
            b"/mocksup/echo?name=%E9": "parameter 'name' is not UTF-8",
            b"/mocksup/echo?name=caf\xe9": "parameter 'name' is not UTF-8",
            b"/mocksup/echo?name=%ED%A0%80": "parameter 'name' is not UTF-8",  # a lone surrogate
            b"/mocksup/echo?%ff=1": "a parameter name is not UTF-8",
            b"/mocksup/count?at_least=1_0": "parameter 'at_least' must be an integer: '1_0'",
            b"/mocksup/count?at_least=%D9%A3": "parameter 'at_least' must be an integer",
            b"/mocksup/count?at_least=%201": "parameter 'at_least' must be an integer",
            b"/mocksup/count?at_least=" + b"9" * 5000: "'at_least' must be from 0 to",
            b"/mocksup/echo?ratio=0x1": "parameter 'ratio' must be a number: '0x1'",
            b"/mocksup/echo?ratio=0_5": "parameter 'ratio' must be a number",
            b"/mocksup/count?timeout=nan": "'timeout' must be a finite number of seconds from 0 "
                                           "to 600, not 'nan'",
            b"/mocksup/count?timeout=-1": "from 0 to 600, not '-1'",
        }  # fmt: skip
        for target, message in cases.items():
            with self.subTest(target=target[:60]):
                status, answer = self.raw_bytes(target)
                self.assertEqual(status, 400)
                self.assertIn(message, answer["error"])
                self.assertLess(len(answer["error"]), 200)  # a long value is cut short
        self.assertEqual(self.client.call("GET", "/echo", params={"ratio": ".5"})["ratio"], 0.5)

    def test_merged_slashes_are_no_route(self) -> None:
        # werkzeug would redirect: no JSON answer, and it was a 500.
        status, _, body = self.raw("GET", "/mocksup//count")
        self.assertEqual(status, 404)
        self.assertIn("no control route GET /mocksup//count", body["error"])

    def test_each_param_says_its_kind(self) -> None:
        params = [
            Param.text(), Param.texts(), Param.choice("a"), Param.integer(), Param.number(),
            Param.flag(), Param.wait(), Param(lambda name, raw: raw, "mine"),
        ]  # fmt: skip
        self.assertEqual(
            [param.kind for param in params],
            ["text", "text", "choice", "integer", "number", "flag", "wait", "custom"],
        )

    def test_answers_never_carry_bare_nan(self) -> None:
        status, _, body = self.raw("GET", "/mocksup/nan")
        self.assertEqual(status, 500)
        self.assertIn("cannot be encoded as JSON", body["error"])

    def test_raw_answers_and_handler_errors(self) -> None:
        self.assertEqual(self.client.fetch("GET", "/raw"), ("application/x-protobuf", b"\x0a\x00"))
        status, response, body = self.raw("GET", "/mocksup/teapot")
        self.assertEqual((status, body), (418, {"error": "short and stout"}))
        self.assertEqual(response.getheader("X-Spout"), "yes")
        with self.assertRaises(ControlAPIError) as caught:
            self.client.call("GET", "/teapot")
        self.assertEqual(caught.exception.status, 418)
        self.assertIn("short and stout", str(caught.exception))

    def test_a_long_poll_returns_as_soon_as_its_condition_holds(self) -> None:
        def bump() -> None:
            time.sleep(0.2)  # the poll must be waiting before the change
            self.client.call("POST", "/count", body={"by": 1})

        threading.Thread(target=bump).start()
        started = time.monotonic()
        answer = self.client.call("GET", "/count", params={"at_least": 1, "timeout": 30}, wait=30)
        elapsed = time.monotonic() - started
        self.assertEqual(answer, {"value": 1})
        self.assertGreaterEqual(elapsed, 0.2)
        self.assertLess(elapsed, 10.0)

    def test_unreachable_mock_is_a_control_api_error(self) -> None:
        with bind_tcp("127.0.0.1", 0) as sock:
            port = sock.getsockname()[1]
        client = ControlClient(f"http://127.0.0.1:{port}", "gone", timeout=2)
        with self.assertRaises(ControlAPIError) as caught:
            client.call("GET", "/health")
        self.assertIsNone(caught.exception.status)
        self.assertIn("'gone' did not answer GET", str(caught.exception))


if __name__ == "__main__":
    unittest.main()


class DeadOrSuspendedMockTest(ProcessTestCase):
    """A control call on a mock that cannot answer says why at once (no timeout waited)."""

    def test_suspended_then_crashed(self) -> None:
        collector = self.start_server(MockOTLPCollector(port=0, grpc_port=None))
        assert collector.pid is not None
        os.kill(collector.pid, signal.SIGSTOP)
        self.addCleanup(_resume, collector.pid)
        child = psutil.Process(collector.pid)
        deadline = time.monotonic() + 5
        while child.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.001)  # the signal is delivered asynchronously
        started = time.monotonic()
        with self.assertRaises(ChildSuspendedError):
            collector.stats()
        self.assertLess(time.monotonic() - started, 2.0)
        os.kill(collector.pid, signal.SIGKILL)
        started = time.monotonic()
        with self.assertRaises(ChildCrashedError) as caught:
            collector.stats()
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(caught.exception.returncode, -signal.SIGKILL)


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
