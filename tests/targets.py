"""Tiny mock servers for the supervisor tests: they serve, crash, hang or misbehave."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import ClassVar

from pydantic import Field

from mocksup import MockServerBase, ServeContext
from mocksup.serving import bind_tcp, grpc_server


class Sleeper(MockServerBase):
    """Binds, reports ready, waits for the stop request: the cooperative child."""

    default_name: ClassVar[str] = "sleeper"

    def endpoints(self) -> dict[str, str]:
        return {"tcp": f"tcp://{self.host}:{self.port}"}

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        sock.close()


class Downstream(Sleeper):
    """Needs the address of another server (``upstream``) in its settings."""

    default_name: ClassVar[str] = "downstream"
    upstream: str


class CrashBeforeReady(MockServerBase):
    """Exits with ``code`` (a negative one: killed by that signal) after ``delay`` s, unready."""

    default_name: ClassVar[str] = "crasher"
    code: int = 3
    delay: float = 0.0

    def serve(self, ctx: ServeContext) -> None:
        print("about to crash: the disk is on fire", flush=True)
        ctx.wait(self.delay)
        print(f"exiting at {time.time():.6f}", flush=True)
        if self.code < 0:
            os.kill(os.getpid(), -self.code)
        os._exit(self.code)


class RaiseBeforeReady(MockServerBase):
    """Raises an ordinary exception in serve()."""

    default_name: ClassVar[str] = "raiser"

    def serve(self, ctx: ServeContext) -> None:
        raise RuntimeError("the configuration file is missing")


class NeverReady(MockServerBase):
    """Binds but never reports ready."""

    default_name: ClassVar[str] = "never"

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        threading.Event().wait()
        sock.close()


class IgnoresSigterm(MockServerBase):
    """Ready, then ignores SIGTERM and the stop request: only SIGKILL ends it."""

    default_name: ClassVar[str] = "stubborn"

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        ctx.ready(port=sock.getsockname()[1])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        threading.Event().wait()


class WithGrandchild(MockServerBase):
    """Starts a long-running subprocess of its own before it reports ready."""

    default_name: ClassVar[str] = "parent"

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        code = "import time; time.sleep(120)"
        proc = subprocess.Popen([sys.executable, "-c", code])
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        sock.close()
        proc.wait()


class GrpcMock(MockServerBase):
    """A gRPC server with no services, on ``port``."""

    default_name: ClassVar[str] = "grpc"
    port: int = Field(0, ge=0, le=65535)

    def serve(self, ctx: ServeContext) -> None:
        server, port = grpc_server(self.host, self.port)
        server.start()
        ctx.ready(port=port)
        ctx.wait()
        server.stop(0.1).wait()


def free_port() -> int:
    """A port free at the time of asking (for tests that need a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Rendezvous(MockServerBase):
    """Reports ready only after the test's barrier at ``barrier_port`` lets it go."""

    default_name: ClassVar[str] = "rendezvous"
    barrier_port: int

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        with socket.create_connection(("127.0.0.1", self.barrier_port)) as barrier:
            barrier.recv(1)
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        sock.close()


class EnvEcho(Sleeper):
    """Prints ``MOCKSUP_TEST_VALUE`` from its environment and its working folder."""

    default_name: ClassVar[str] = "echo"

    def serve(self, ctx: ServeContext) -> None:
        print("value:", os.environ.get("MOCKSUP_TEST_VALUE"), "cwd:", os.getcwd(), flush=True)
        super().serve(ctx)
