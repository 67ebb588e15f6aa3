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

from mocksup import MockServerBase, MockServerError, ServeContext
from mocksup.otlp import MockOTLPCollector
from mocksup.serving import bind_tcp, grpc_server
from mocksup.vllm import MockVLLMServer


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
    """A gRPC server with no services, on ``port``; prints whether grpcio's server module
    was imported before it ran."""

    default_name: ClassVar[str] = "grpc"
    port: int = Field(0, ge=0, le=65535)

    def serve(self, ctx: ServeContext) -> None:
        print("grpc._server imported before:", "grpc._server" in sys.modules, flush=True)
        server, port = grpc_server(self.host, self.port)
        server.start()
        ctx.ready(port=port)
        ctx.wait()
        server.stop(0.1).wait()


def _watch_imports(ctx: ServeContext) -> None:
    """Make ``ctx.ready`` first print the modules imported from now until it is called."""
    before = set(sys.modules)
    ready = ctx.ready

    def watched(**ports: int) -> None:
        print("imported while starting:", sorted(set(sys.modules) - before), flush=True)
        ready(**ports)

    ctx.ready = watched  # type: ignore[method-assign]


class WatchedCollector(MockOTLPCollector):
    """The collector, printing the modules its ``serve()`` imported before it was ready."""

    def serve(self, ctx: ServeContext) -> None:
        _watch_imports(ctx)
        super().serve(ctx)


class WatchedVLLM(MockVLLMServer):
    """The vLLM mock, printing the modules its ``serve()`` imported before it was ready."""

    def serve(self, ctx: ServeContext) -> None:
        _watch_imports(ctx)
        super().serve(ctx)


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
    """Prints ``MOCKSUP_TEST_VALUE`` and ``MALLOC_ARENA_MAX`` from its environment, and its
    working folder."""

    default_name: ClassVar[str] = "echo"

    def serve(self, ctx: ServeContext) -> None:
        print("value:", os.environ.get("MOCKSUP_TEST_VALUE"), "cwd:", os.getcwd(), flush=True)
        print("arena:", os.environ.get("MALLOC_ARENA_MAX"), flush=True)
        super().serve(ctx)


class SignalInsideWait(MockServerBase):
    """Reports ready and takes the parent's check that it listens; then takes a SIGTERM
    while it holds the lock of the event that ``ctx.wait()`` waits on (as ``wait()`` itself
    does, between its checks), then waits."""

    default_name: ClassVar[str] = "inside-wait"

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        ctx.ready(port=sock.getsockname()[1])
        sock.accept()[0].close()  # the parent's connection that checks the port
        with ctx._stop._cond:  # type: ignore[attr-defined]  # threading.Event's own lock
            signal.raise_signal(signal.SIGTERM)  # its Python handler runs before this returns
        ctx.wait()
        sock.close()


class BogusReady(MockServerBase):
    """Binds a port, then reports ``ready(**{field: value})`` (``value`` 0: the bound port)."""

    default_name: ClassVar[str] = "bogus"
    field: str = "port"
    value: int = 0

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        ctx.ready(**{self.field: self.value or sock.getsockname()[1]})
        ctx.wait()
        sock.close()


class ReadyOnOtherHost(MockServerBase):
    """Listens on ``bind_host`` instead of ``host``, and reports that port ready."""

    default_name: ClassVar[str] = "elsewhere"
    bind_host: str

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.bind_host, 0)
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        sock.close()


class ExitAfterReady(MockServerBase):
    """Serves until a client sends ``quit``, then says so and exits with ``code``."""

    default_name: ClassVar[str] = "quitter"
    code: int = 4

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        ctx.ready(port=sock.getsockname()[1])
        while True:
            conn, _ = sock.accept()
            with conn:
                if conn.recv(16) == b"quit":  # not the supervisor's probe, which says nothing
                    break
        print("a client said quit: giving up", flush=True)
        os._exit(self.code)


class ReturnsWithoutReady(MockServerBase):
    """serve() returns at once, without calling ready()."""

    default_name: ClassVar[str] = "quiet"

    def serve(self, ctx: ServeContext) -> None:
        return


class QuotaError(MockServerError):
    """A user's own error with a field of its own."""

    def __init__(self, message: str, *, server: str | None = None, quota: int = 0) -> None:
        super().__init__(message, server=server)
        self.quota = quota

    def _fields(self) -> dict[str, object]:
        return {**super()._fields(), "quota": self.quota}


class RaisesQuota(MockServerBase):
    default_name: ClassVar[str] = "quota"

    def serve(self, ctx: ServeContext) -> None:
        raise QuotaError("no quota left for today", quota=42)


class LockedError(MockServerError):
    """An error that does not pickle: it holds a lock among its fields."""

    def _fields(self) -> dict[str, object]:
        return {**super()._fields(), "lock": threading.Lock()}


class RaisesUnpicklable(MockServerBase):
    default_name: ClassVar[str] = "locked"

    def serve(self, ctx: ServeContext) -> None:
        raise LockedError("the lock is held elsewhere")


class IgnoresStopRequest(MockServerBase):
    """Ready; prints when the stop request (SIGTERM) comes, then goes on regardless."""

    default_name: ClassVar[str] = "deaf"

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        print(f"stop requested at {time.time():.6f}", flush=True)
        threading.Event().wait()


#: A process that ignores SIGTERM, prints its pid and sleeps: only SIGKILL ends it.
_STUBBORN = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print(os.getpid(), flush=True)\n"
    "time.sleep(600)\n"
)

#: A daemon: forks, the first process exits, the second leaves the session and stays.
_DAEMON = (
    "import os, signal, sys, time\n"
    "if os.fork():\n"
    "    os._exit(0)\n"
    "os.setsid()\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print(os.getpid(), flush=True)\n"
    "time.sleep(600)\n"
)


class EscapingDescendants(MockServerBase):
    """Starts a SIGTERM-ignoring process in a session of its own and a daemon (double
    fork); writes their pids, one a line, to ``pid_file`` before it reports ready. With
    ``hang``, its serve() never returns, even when asked to stop."""

    default_name: ClassVar[str] = "escaper"
    pid_file: str
    hang: bool = False

    def serve(self, ctx: ServeContext) -> None:
        sock = bind_tcp(self.host, self.port)
        pids = []
        for code in (_STUBBORN, _DAEMON):
            proc = subprocess.Popen(
                [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
            )
            assert proc.stdout is not None
            pids.append(proc.stdout.readline().decode().strip())
            proc.stdout.close()
        proc.wait(5)  # the daemon's launcher, gone once it forked
        with open(self.pid_file, "w") as out:
            out.write("\n".join(pids) + "\n")
        ctx.ready(port=sock.getsockname()[1])
        ctx.wait()
        if self.hang:
            threading.Event().wait()
        sock.close()


class Touch(Sleeper):
    """Creates the file ``path`` as soon as its serve() runs, then serves as a Sleeper."""

    default_name: ClassVar[str] = "touch"
    path: str

    def serve(self, ctx: ServeContext) -> None:
        open(self.path, "w").close()
        super().serve(ctx)
