"""ProcessServer: any executable supervised like a mock (real commands, real sockets)."""

from __future__ import annotations

import http.client
import os
import signal
import sys
import textwrap
import time

import psutil
from pydantic import ValidationError

from mocksup import ChildCrashedError, MockServerConfig, ProcessServer, start_all
from tests.support import ProcessTestCase

#: A small HTTP server on the port given as its argument; says "listening" once it is.
SERVER = textwrap.dedent(
    """
    import http.server, sys, time
    delay = float(sys.argv[2])
    time.sleep(delay)  # a slow start, so readiness is really awaited
    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])),
                                    http.server.SimpleHTTPRequestHandler)
    print("listening", flush=True)
    server.serve_forever()
    """
)


def http_status(port: int, path: str = "/") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class ProcessServerTest(ProcessTestCase):
    def command(self, delay: float = 0.3) -> list[str]:
        return [sys.executable, "-c", SERVER, "{port}", str(delay)]

    def test_ready_by_port_http_and_output_each_wait_for_the_command(self) -> None:
        for ready in ({}, {"ready_url_path": "/"}, {"ready_pattern": r"^listen"}):
            with self.subTest(ready=ready):
                started = time.monotonic()
                server = self.start_server(ProcessServer(command=self.command(), **ready))
                self.assertGreaterEqual(time.monotonic() - started, 0.3)
                # Ready means serving: the first request succeeds, no retry needed.
                self.assertEqual(http_status(server.port), 200)
                self.assertIn("listening", server.log_tail())
                server.stop()

    def test_a_command_that_dies_before_ready_is_reported_with_its_output(self) -> None:
        code = "print('config missing: /etc/app.toml', flush=True); raise SystemExit(4)"
        server = ProcessServer(command=[sys.executable, "-c", code], port=1)
        started = time.monotonic()
        with self.assertRaises(ChildCrashedError) as caught:
            self.start_server(server)
        self.assertLess(time.monotonic() - started, 5.0)
        error = caught.exception
        self.assertEqual(error.returncode, 4)
        self.assertIn("config missing: /etc/app.toml", error.output_tail)
        self.assertIn("exited with code 4 before it was ready", str(error))

    def test_a_missing_program_is_a_clear_error(self) -> None:
        with self.assertRaises(Exception) as caught:
            self.start_server(ProcessServer(command=["/nonexistent/app"]))
        self.assertIn("could not run '/nonexistent/app'", str(caught.exception))

    def test_settings_are_checked_before_anything_starts(self) -> None:
        with self.assertRaises(ValidationError):
            ProcessServer(command=[])
        with self.assertRaises(ValidationError):
            ProcessServer(command=["x"], ready_pattern="(")
        with self.assertRaises(ValidationError):
            ProcessServer(command=["x"], ready_url_path="health")

    def test_started_with_mocks_and_stopped_with_them(self) -> None:
        from mocksup.otlp import MockOTLPCollector

        configs = [
            MockServerConfig(
                name="app",
                server_class=ProcessServer,
                init_kwargs={"command": self.command(0.0), "ready_url_path": "/"},
            ),
            MockServerConfig(
                name="otlp", server_class=MockOTLPCollector, init_kwargs={"grpc_port": None,
                                                                         "port": 0}
            ),
        ]  # fmt: skip
        servers = start_all(configs)
        self.addCleanup(servers.stop)
        app = servers["app"]
        grandchild = psutil.Process(app.pid).children()[0]
        self.assertEqual(http_status(app.port), 200)
        servers.stop()
        self.assertFalse(grandchild.is_running() and grandchild.status() != "zombie")

    def test_the_command_ends_when_the_harness_is_killed(self) -> None:
        script = textwrap.dedent(
            f"""
            import sys
            from mocksup import ProcessServer
            if __name__ == "__main__":
                server = ProcessServer(command={self.command(0.0)!r}).start()
                print(server.pid, flush=True)
                sys.stdin.read()
            """
        )
        harness = self.run_python(script, stdout=-1, stdin=-1)
        assert harness.stdout is not None
        child = psutil.Process(int(harness.stdout.readline()))
        command = child.children()[0]
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait(10)
        _, alive = psutil.wait_procs([child, command], timeout=5)
        self.assertEqual(alive, [])

    def test_a_command_that_exits_while_serving_ends_its_child(self) -> None:
        code = "import time; print('up', flush=True); time.sleep(0.5)"
        server = self.start_server(
            ProcessServer(command=[sys.executable, "-c", code], ready_pattern="up")
        )
        assert server.pid is not None
        psutil.Process(server.pid).wait(10)
        self.assertFalse(server.is_running())
        self.assertIn("exited with 0 while serving", server.log_tail())
