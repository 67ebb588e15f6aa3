"""mocksup side by side with its peers: interleaved, in rounds, the ratio per round (issue 13).

Run from the repository root with the peers installed (``pip install -e '.[bench]'``)::

    python benchmarks/bench_peers.py                  # 3 rounds, every row (about 4 minutes)
    python benchmarks/bench_peers.py --quick          # 1 round of short runs, for development
    python benchmarks/bench_peers.py --only up,vllm   # some rows or groups (--list names them)

In every round each row measures mocksup and its peers one right after the other (the order
alternates from round to round) on the same machine with the same clients, then prints
mocksup's figure, each peer's, the ratio mocksup / peer, the issue's target for the row and
whether this round meets it. The peers, and how each is run:

- starting and stopping two servers (and eight): mirakuru's ``TCPExecutor`` and
  pytest-xprocess start the child of ``bench_targets.py`` one after the other; the floor is a
  bare interpreter importing the same dependencies;
- ``mocksup up`` until its first accepted export, and SIGTERM until exit: oteltest's
  ``otelsink`` (gRPC on its fixed port 4317);
- OTLP/gRPC ingest: oteltest's ``GrpcSink`` with the ``AccumulatingHandler`` oteltest's own
  runner uses, in a child process; OTLP/HTTP ingest: upb's bare parse of the same bodies;
- the control API's JSON span listing: ``spans()`` from Python;
- the vLLM mock: stacklok's mockllm under uvicorn, with the same request bodies.

Clients are separate processes (spawned once, reused), each on one kept-alive connection or
gRPC channel, sending pre-encoded bodies. Every ingest run checks that the server stored
exactly what was sent. A peer that cannot be installed or run here is reported with the
reason; no figure is ever made up. The script asserts nothing and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

CHILD = [sys.executable, os.path.join(HERE, "bench_targets.py")]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
OTELSINK_PORT = 4317  # otelsink has no option for another port


# -- rows, targets, results --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The issue's bound on mocksup's figure, or on mocksup / ``peer`` when a peer is named."""

    text: str
    bound: float
    at_most: bool
    peer: str | None = None

    def met(self, mocksup: float, peers: dict[str, Figure]) -> bool | None:
        value = mocksup
        if self.peer is not None:
            reference = peers.get(self.peer)
            if reference is None or reference.value is None:
                return None
            value = mocksup / reference.value
        return value <= self.bound if self.at_most else value >= self.bound


@dataclass(frozen=True)
class Row:
    key: str
    group: str
    title: str
    unit: str  # "ms" (lower is better) or a rate such as "spans/s" (higher is better)
    target: Target | None


ROWS = (
    Row("start-warm", "supervisor", "2 servers ready, warm (zygote running)", "ms",
        Target("<= 50 ms", 50, at_most=True)),
    Row("start-again", "supervisor", "2 servers ready, right after a previous start", "ms",
        Target("<= 50 ms", 50, at_most=True)),
    Row("start-cold", "supervisor", "2 servers ready, cold (first start)", "ms",
        Target("<= 1.2x the floor", 1.2, at_most=True, peer="floor")),
    Row("start-8", "supervisor", "8 servers ready at once", "ms",
        Target("<= 100 ms", 100, at_most=True)),
    Row("stop-2", "supervisor", "2 servers stopped", "ms", None),
    Row("up-export", "up", "mocksup up: exec until the first export is accepted", "ms",
        Target("<= 1.5x otelsink", 1.5, at_most=True, peer="otelsink")),
    Row("up-sigterm", "up", "mocksup up: SIGTERM until exit, every child gone", "ms",
        Target("<= 100 ms, none left", 100, at_most=True)),
    Row("grpc-batch", "otlp", "OTLP/gRPC 512-span batches, 4 clients", "spans/s",
        Target(">= 1.5x GrpcSink", 1.5, at_most=False, peer="GrpcSink")),
    Row("grpc-single", "otlp", "OTLP/gRPC 1-span requests, 4 clients", "req/s",
        Target(">= 1.5x GrpcSink", 1.5, at_most=False, peer="GrpcSink")),
    Row("http-batch", "otlp", "OTLP/HTTP protobuf 512-span batches, 4 clients", "spans/s",
        Target(">= 0.7x upb parse", 0.7, at_most=False, peer="upb parse")),
    Row("control-spans", "otlp", "GET /mocksup/spans, 100,352 spans, JSON", "ms",
        Target("<= 1 s", 1000, at_most=True)),
    Row("vllm", "vllm", "vLLM mock non-streamed, 8 clients", "req/s",
        Target(">= 3x mockllm", 3, at_most=False, peer="mockllm")),
    Row("vllm-stream", "vllm", "vLLM mock streamed, 8 clients", "events/s",
        Target(">= 5x mockllm", 5, at_most=False, peer="mockllm")),
)  # fmt: skip


@dataclass
class Figure:
    """A measured value, or ``None`` with the reason it could not be measured."""

    value: float | None
    why: str = ""


@dataclass
class Result:
    """One row in one round."""

    mocksup: Figure
    peers: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ok: bool = True  # False when a check failed (spans lost, a child left running, ...)


class Unavailable(Exception):
    """A peer (or mocksup) cannot be measured here; the message says why."""


#: What was run for each side, printed with the tables (label -> command line).
COMMANDS: dict[str, str] = {}


def measure(run: Callable[[], float]) -> Figure:
    """Run one measurement; a side that cannot run becomes a figure with the reason."""
    return measure_pair(lambda: (run(), 0.0))[0]


def measure_pair(run: Callable[[], tuple[float, float]]) -> tuple[Figure, Figure]:
    """Two figures from one run (such as ready and stop), or twice the reason for none."""
    try:
        first, second = run()
    except Exception as error:  # a broken peer must not end the whole run
        return failed(error), failed(error)
    return Figure(first), Figure(second)


def failed(error: Exception) -> Figure:
    if isinstance(error, Unavailable):
        return Figure(None, str(error))
    return Figure(None, f"{type(error).__name__}: {error}".splitlines()[0][:200])


def median_figure(samples: list[Figure]) -> Figure:
    values = [s.value for s in samples if s.value is not None]
    if not values:
        return samples[0] if samples else Figure(None, "not measured")
    return Figure(statistics.median(values))


def shown(argv: list[str]) -> str:
    """A command line as printed: ``python`` and paths relative to the repository root."""
    parts = []
    for arg in argv:
        if arg == sys.executable:
            parts.append("python")
        elif os.path.isabs(arg) and os.path.dirname(arg) == os.path.dirname(sys.executable):
            parts.append(os.path.basename(arg))  # a console script
        elif os.path.isabs(arg) and arg.startswith(ROOT + os.sep):
            parts.append(os.path.relpath(arg, ROOT))
        else:
            parts.append(arg)
    return " ".join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script(name: str, module: str) -> list[str]:
    """A console script next to this interpreter, else ``python -m module``."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return [path] if os.access(path, os.X_OK) else [sys.executable, "-m", module]


# -- client processes --------------------------------------------------------------------------


def _sleep_until(moment: float) -> None:
    # The start barrier across client processes (benchmark only, not synchronisation).
    time.sleep(max(0.0, moment - time.time()))


def _grpc_task(*, target: str, body: bytes, count: int, start_at: float) -> dict[str, Any]:
    import grpc

    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(target, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        call = channel.unary_unary(TRACE_EXPORT)
        ok, errors = 0, []
        _sleep_until(start_at)
        for _ in range(count):
            try:
                call(body, timeout=60)
                ok += 1
            except grpc.RpcError as error:
                errors.append(str(error.code()))
    return {"ok": ok, "failed": len(errors), "errors": errors[:3], "events": 0, "end": time.time()}


class _Connection:
    """One kept-alive HTTP/1.1 connection that sends a pre-encoded request and reads each
    answer by its framing (``Content-Length`` or chunked) and nothing else.

    The load generator must cost the clients far less than a request costs the server, or
    the clients, sharing the machine's cores, become what is measured; ``http.client``
    costs about as much as the vLLM mock's whole answer.
    """

    def __init__(self, port: int, request: bytes) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._request = request
        self._buf = b""
        self._pos = 0  # where the unread part of _buf begins

    def exchange(self) -> tuple[int, bytes]:
        """Send the request; the answer's status and body (chunks joined)."""
        self._sock.sendall(self._request)
        head = self._until(b"\r\n\r\n")
        status = int(head[9:12])
        fields = head.lower() + b"\r\n"
        at = fields.find(b"\r\ncontent-length:")
        if at >= 0:
            return status, self._take(int(fields[at + 17 : fields.index(b"\r\n", at + 2)]))
        if b"\r\ntransfer-encoding: chunked" not in fields:
            raise RuntimeError(f"an answer without a length: {head[:200]!r}")
        parts = []
        while size := int(self._until(b"\r\n").split(b";")[0], 16):
            parts.append(self._take(size + 2)[:-2])
        while self._until(b"\r\n") != b"":  # trailers, then the empty line
            pass
        return status, b"".join(parts)

    def _fill(self) -> None:
        data = self._sock.recv(1 << 18)
        if not data:
            raise RuntimeError("the server closed the connection")
        self._buf = self._buf[self._pos :] + data  # what is left is short: one small copy
        self._pos = 0

    def _until(self, mark: bytes) -> bytes:
        while (at := self._buf.find(mark, self._pos)) < 0:
            self._fill()
        line = self._buf[self._pos : at]
        self._pos = at + len(mark)
        return line

    def _take(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size:
            self._fill()
        data = self._buf[self._pos : self._pos + size]
        self._pos += size
        return data

    def close(self) -> None:
        self._sock.close()


def _http_task(
    *,
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    start_at: float,
    count: int = 0,
    seconds: float = 0.0,
    sse: bool = False,
) -> dict[str, Any]:
    """POST ``body`` on one kept-alive connection, ``count`` times or for ``seconds``;
    with ``sse``, count the events of each streamed answer."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    conn = _Connection(port, request)
    ok = events = 0
    errors: list[str] = []
    _sleep_until(start_at)
    deadline = start_at + seconds
    while (ok + len(errors) < count) if count else (time.time() < deadline):
        status, data = conn.exchange()
        if status != 200:
            errors.append(f"HTTP {status}: {data[:80]!r}")
        elif sse:
            if not data.rstrip().endswith(b"data: [DONE]"):
                errors.append(f"stream without [DONE]: {data[-80:]!r}")
                continue
            events += data.count(b"data: ") - 1  # every event but [DONE]
            ok += 1
        else:
            ok += 1
    conn.close()
    return {"ok": ok, "failed": len(errors), "errors": errors[:3], "events": events,
            "end": time.time()}  # fmt: skip


TASKS: dict[str, Callable[..., dict[str, Any]]] = {"grpc": _grpc_task, "http": _http_task}


def _worker(conn: Any) -> None:
    while True:
        try:
            kind, kwargs = conn.recv()
        except EOFError:
            return
        try:
            conn.send(TASKS[kind](**kwargs))
        except Exception as error:
            conn.send({"error": f"{type(error).__name__}: {error}"})


@dataclass
class Run:
    """What the clients of one run did together."""

    ok: int
    failed: int
    events: int
    seconds: float
    errors: list[str]

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds


class Clients:
    """Client processes, spawned once and reused: each takes one task at a time."""

    def __init__(self, count: int = 8) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns = []
        self._procs = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            proc = context.Process(target=_worker, args=(theirs,), daemon=True)
            proc.start()
            theirs.close()
            self._conns.append(ours)
            self._procs.append(proc)

    def run(self, kind: str, clients: int, **kwargs: Any) -> Run:
        start_at = time.time() + 0.5  # room for every client to connect first
        conns = self._conns[:clients]
        for conn in conns:
            conn.send((kind, {**kwargs, "start_at": start_at}))
        results = [conn.recv() for conn in conns]
        broken = [r["error"] for r in results if "error" in r]
        if broken:
            raise RuntimeError(f"client failed: {broken[0]}")
        return Run(
            ok=sum(r["ok"] for r in results),
            failed=sum(r["failed"] for r in results),
            events=sum(r["events"] for r in results),
            seconds=max(r["end"] for r in results) - start_at,
            errors=[e for r in results for e in r["errors"]][:3],
        )

    def pids(self, clients: int) -> list[int]:
        """The process ids of the first ``clients`` clients (those :meth:`run` uses)."""
        return [proc.pid for proc in self._procs[:clients]]

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            proc.join(5)


# -- supervisor: two servers ready and stopped -----------------------------------------------


def _zygote() -> Any:
    from mocksup import _launch

    return getattr(_launch, "zygote", None)


def pool_prepare(warm: bool) -> None:
    """Warm: mocksup's zygote started and done with its imports; cold: none running."""
    zygote = _zygote()
    if zygote is None:
        return
    if warm:
        zygote.start()
        zygote.settle()
    else:
        zygote.close()


def pool_settle() -> None:
    """Wait for the zygote's imports under way, so that none skews the next measurement."""
    zygote = _zygote()
    if zygote is not None:
        zygote.settle()


def mocksup_start(n: int) -> tuple[float, float]:
    from bench_targets import BenchServer

    from mocksup import start_mock_servers_async, stop_mock_servers

    servers = [BenchServer(name=f"b{i}") for i in range(n)]
    started = time.perf_counter()
    running = asyncio.run(start_mock_servers_async(servers))
    ready = time.perf_counter() - started
    started = time.perf_counter()
    stop_mock_servers(running)
    return ready * 1e3, (time.perf_counter() - started) * 1e3


def mocksup_variant(variant: str, n: int) -> tuple[float, float]:
    """``warm``: zygote settled; ``cold``: none; ``again``: right after a start and stop."""
    pool_prepare(variant != "cold")
    if variant == "again":
        mocksup_start(n)
    try:
        return mocksup_start(n)
    finally:
        pool_settle()


def floor_run() -> tuple[float, float]:
    from bench_supervisor import floor

    ready, _ = floor()
    return ready * 1e3, 0.0


def mirakuru_run(n: int) -> tuple[float, float]:
    try:
        import mirakuru  # noqa: F401
    except ImportError as error:
        raise Unavailable(f"mirakuru is not installed ({error})") from None
    from bench_supervisor import mirakuru_run as run  # TCPExecutor, one after the other

    ready, stop = run(n)
    return ready * 1e3, stop * 1e3


def xprocess_run(n: int) -> tuple[float, float]:
    try:
        import py
        from xprocess import ProcessStarter, XProcess
    except ImportError as error:
        raise Unavailable(f"pytest-xprocess is not installed ({error})") from None

    def starter(port: int) -> type[ProcessStarter]:
        class Starter(ProcessStarter):  # type: ignore[misc]
            args = [*CHILD, str(port)]
            env = ENV
            timeout = 60

            def startup_check(self) -> bool:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return False
                return True

        return Starter

    quiet = type("Quiet", (), {"debug": lambda self, *args: None})()
    with tempfile.TemporaryDirectory() as root:
        xprocess = XProcess(type("Config", (), {})(), py.path.local(root), log=quiet)
        started = time.perf_counter()
        names = []
        try:
            for i in range(n):
                xprocess.ensure(f"b{i}", starter(free_port()))
                names.append(f"b{i}")
            ready = time.perf_counter() - started
        finally:
            started = time.perf_counter()
            for name in names:
                xprocess.getinfo(name).terminate()
            stopped = time.perf_counter() - started
            xprocess._force_clean_up()
    return ready * 1e3, stopped * 1e3


def supervisor_group(rows: set[str], rnd: int, samples: int) -> dict[str, Result]:
    if _zygote() is None:
        print("note: mocksup has no zygote API here; warm rows start as they are", flush=True)
    child = shown(CHILD) + " PORT"
    COMMANDS["mocksup (start)"] = (
        "start_mock_servers_async([BenchServer()] * N) from bench_targets.py; "
        "stop_mock_servers(); zygote started and settled before warm starts, closed before "
        "cold ones (the first start launches it)"
    )
    COMMANDS["mirakuru"] = f"TCPExecutor([{child}], port=PORT).start() one after the other; stop()"
    COMMANDS["pytest-xprocess"] = (
        f"XProcess.ensure(name, ProcessStarter(args=[{child}], startup_check=TCP connect)) "
        "one after the other; getinfo(name).terminate()"
    )
    variants: dict[str, Callable[[], tuple[float, float]]] = {}
    if rows & {"start-warm", "stop-2"}:
        variants["warm"] = lambda: mocksup_variant("warm", 2)
    if "start-again" in rows:
        variants["again"] = lambda: mocksup_variant("again", 2)
    if "start-cold" in rows:
        variants["cold"] = lambda: mocksup_variant("cold", 2)
        variants["floor"] = floor_run
        from bench_targets import DEPS

        COMMANDS["floor"] = shown([sys.executable, "-c", f"'import {', '.join(DEPS)}'"])
    if "start-8" in rows:
        variants["eight"] = lambda: mocksup_variant("warm", 8)
        variants["mirakuru8"] = lambda: mirakuru_run(8)
        variants["xprocess8"] = lambda: xprocess_run(8)
    variants["mirakuru2"] = lambda: mirakuru_run(2)
    variants["xprocess2"] = lambda: xprocess_run(2)
    if rnd == 1:  # the page cache and this process's imports, off the record
        measure_pair(floor_run)
        measure_pair(lambda: mocksup_variant("cold", 2))
    order = list(variants) if rnd % 2 else list(reversed(variants))
    got: dict[str, list[tuple[Figure, Figure]]] = {name: [] for name in order}
    for _ in range(samples):
        for name in order:
            got[name].append(measure_pair(variants[name]))
    ready = {name: median_figure([r for r, _ in pairs]) for name, pairs in got.items()}
    stop = {name: median_figure([s for _, s in pairs]) for name, pairs in got.items()}
    none = Figure(None, "not measured")
    rows_of = {  # row: (mocksup's variant, {peer: variant}, figures)
        "start-warm": ("warm", {"mirakuru": "mirakuru2", "pytest-xprocess": "xprocess2"}, ready),
        "start-again": ("again", {"mirakuru": "mirakuru2", "pytest-xprocess": "xprocess2"}, ready),
        "start-cold": ("cold", {"floor": "floor", "mirakuru": "mirakuru2"}, ready),
        "start-8": ("eight", {"mirakuru": "mirakuru8", "pytest-xprocess": "xprocess8"}, ready),
        "stop-2": ("warm", {"mirakuru": "mirakuru2", "pytest-xprocess": "xprocess2"}, stop),
    }
    return {
        key: Result(got.get(ours, none), {peer: got.get(v, none) for peer, v in peers.items()})
        for key, (ours, peers, got) in rows_of.items()
        if key in rows
    }


# -- mocksup up vs otelsink: exec until the first accepted export; SIGTERM until exit ----------


def _tail(stream: Any, limit: int = 300) -> str:
    stream.seek(0)
    text = stream.read().decode(errors="replace").strip()
    return text[-limit:].replace("\n", " | ") or "no output"


def _gone_after(procs: list[Any], timeout: float) -> int:
    """Wait until none of ``procs`` runs (zombies count as gone); return how many still run."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive or time.monotonic() > deadline:
            return len(alive)
        time.sleep(0.001)  # measuring how long they outlive their parent, 1 ms resolution
        procs = alive


@dataclass
class Cycle:
    export: float  # ms from exec until the first export was accepted
    stop: float  # ms from SIGTERM until exit, with none of its descendants running
    descendants: int  # processes under it at SIGTERM
    left: int  # descendants still running 5 s after SIGTERM


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, stderr: Any) -> None:
    """Connect to ``port`` every 5 ms until it accepts (or ``proc`` exits)."""
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            raise Unavailable(
                f"{what} exited with {proc.returncode} before it listened on {port}: "
                f"{_tail(stderr)}"
            )
        time.sleep(0.005)  # the client's polling interval, the figure's resolution


def up_cycle(argv: list[str], port: int, body: bytes) -> Cycle:
    """Exec ``argv``, export to ``port`` until accepted, SIGTERM it, wait for it and its tree.

    The client connects every 5 ms until the port accepts, then sends the export with
    ``wait_for_ready`` on a channel that had not tried to connect yet (so it connects at
    once; the server answers once it serves). gRPC's own reconnection cannot poll that
    often: grpc-core raises any reconnect backoff under 100 ms to 100 ms (grpc/grpc#17250),
    which made the figure a multiple of about 100 ms.
    """
    import grpc
    import psutil

    with (
        tempfile.TemporaryFile() as stderr,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        call = channel.unary_unary(TRACE_EXPORT)
        accepted = threading.Event()
        stamps: list[float] = []

        def done(_: object) -> None:  # on a gRPC thread, as the answer arrives
            stamps.append(time.perf_counter())
            accepted.set()

        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=ENV)
        try:
            _wait_listening(port, proc, shown(argv[:2]), stderr)
            future = call.future(body, wait_for_ready=True, timeout=60)
            future.add_done_callback(done)
            while not accepted.wait(0.05):
                if proc.poll() is not None:
                    future.cancel()
                    raise Unavailable(
                        f"{shown(argv[:2])} exited with {proc.returncode} before accepting "
                        f"an export: {_tail(stderr)}"
                    )
            future.result()  # raises the RpcError of a refused export
            export = stamps[0] - started
            descendants = psutil.Process(proc.pid).children(recursive=True)
            started = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            left = _gone_after(descendants, 5.0)
            stop = time.perf_counter() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Cycle(export * 1e3, stop * 1e3, len(descendants), left)


def port_is_free(port: int) -> bool:
    """Whether a listener could bind ``port`` (as otelsink checks: TIME_WAIT is no obstacle)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def up_group(rows: set[str], rnd: int, samples: int) -> dict[str, Result]:
    import compileall

    from bench_otlp import make_request

    # Bytecode for this tree, as an installed mocksup has (pip compiles what it installs;
    # otelsink's is): with PYTHONDONTWRITEBYTECODE (tox sets it) a source tree is compiled
    # again at every start, some 80 ms of mocksup up's figure. Into __pycache__, ignored by git.
    compileall.compile_dir(os.path.join(ROOT, "mocksup"), quiet=1)

    body = make_request(1, 3).SerializeToString()
    mocksup = [*_script("mocksup", "mocksup"), "up", "--servers", "otlp", "--quiet"]
    otelsink = _script("otelsink", "oteltest.sink.main")
    COMMANDS["mocksup up"] = shown(mocksup) + " --otlp-port PORT --otlp-grpc-port PORT"
    COMMANDS["otelsink"] = shown(otelsink) + f" (gRPC on its fixed port {OTELSINK_PORT})"
    COMMANDS["up client"] = (
        "TCP connect every 5 ms from exec on until the port accepts, then one gRPC Export of "
        "1 span, wait_for_ready"
    )

    def run_mocksup() -> Cycle:
        http_port, grpc_port = free_port(), free_port()
        argv = [*mocksup, "--otlp-port", str(http_port), "--otlp-grpc-port", str(grpc_port)]
        return up_cycle(argv, grpc_port, body)

    def run_otelsink() -> Cycle:
        try:
            import oteltest  # noqa: F401
        except ImportError as error:
            raise Unavailable(f"oteltest is not installed ({error})") from None
        if not port_is_free(OTELSINK_PORT):
            raise Unavailable(f"port {OTELSINK_PORT} is in use here, and otelsink binds no other")
        return up_cycle(otelsink, OTELSINK_PORT, body)

    sides = {"mocksup": run_mocksup, "otelsink": run_otelsink}
    export: dict[str, list[Figure]] = {name: [] for name in sides}
    stop: dict[str, list[Figure]] = {name: [] for name in sides}
    trees: list[tuple[int, int]] = []  # mocksup's (descendants, left running)
    for _ in range(samples):
        for name in sides if rnd % 2 else reversed(sides):
            try:
                cycle = sides[name]()
            except Exception as error:
                export[name].append(failed(error))
                stop[name].append(failed(error))
                continue
            export[name].append(Figure(cycle.export))
            stop[name].append(Figure(cycle.stop))
            if name == "mocksup":
                trees.append((cycle.descendants, cycle.left))
    figures = {"up-export": export, "up-sigterm": stop}
    results = {
        key: Result(median_figure(got["mocksup"]), {"otelsink": median_figure(got["otelsink"])})
        for key, got in figures.items()
    }
    sigterm = results["up-sigterm"]
    sigterm.notes.append(f"mocksup up's processes at SIGTERM: {[d for d, _ in trees]}")
    if any(left for _, left in trees):
        sigterm.ok = False
        sigterm.notes.append(f"still running 5 s after SIGTERM: {[n for _, n in trees]}")
    return {key: result for key, result in results.items() if key in rows}


# -- OTLP ingest and the control API -----------------------------------------------------------


def serve_grpcsink(port: int) -> None:
    """The peer's side of the gRPC rows, in a child: oteltest's ``GrpcSink`` with the
    ``AccumulatingHandler`` its runner uses; ``count`` and ``clear`` arrive on stdin."""
    import logging

    from oteltest.sink import GrpcSink
    from oteltest.sink.handler import AccumulatingHandler

    handler = AccumulatingHandler()
    sink = GrpcSink(handler, logging.getLogger("otelsink"), port=port)
    sink.start()
    print("ready", flush=True)
    for line in sys.stdin:
        requests = handler.telemetry.trace_requests
        if line.strip() == "count":
            print(
                sum(len(s.spans) for r in requests for rs in r.pbreq.resource_spans
                    for s in rs.scope_spans),
                flush=True,
            )  # fmt: skip
        elif line.strip() == "clear":
            requests.clear()
            print("cleared", flush=True)
    sink.stop()


class GrpcSinkProcess:
    """``serve_grpcsink`` in a child process of its own; ``close()`` ends it."""

    def __init__(self) -> None:
        try:
            import oteltest  # noqa: F401
        except ImportError as error:
            raise Unavailable(f"oteltest is not installed ({error})") from None
        self.port = free_port()
        argv = [sys.executable, os.path.abspath(__file__), "--serve-grpcsink", str(self.port)]
        COMMANDS["GrpcSink"] = (
            f"{shown(argv[:2])} --serve-grpcsink PORT: "
            "GrpcSink(AccumulatingHandler(), logger, port=PORT) in a child process"
        )
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=ENV
        )
        if self._ask(None) != "ready":
            why = _tail(self._stderr)
            self.close()
            raise Unavailable(f"GrpcSink did not start: {why}")

    def _ask(self, command: str | None) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        if command is not None:
            self._proc.stdin.write(command.encode() + b"\n")
            self._proc.stdin.flush()
        return self._proc.stdout.readline().decode().strip()

    def count(self) -> int:
        return int(self._ask("count"))

    def clear(self) -> None:
        self._ask("clear")

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


@dataclass
class Config:
    rounds: int
    samples: int
    seconds: float
    batches: int  # 512-span requests per ingest run (all clients together)
    singles: int  # 1-span requests per ingest run


@dataclass
class Sink:
    """What an ingest run needs of a server: its gRPC or HTTP address, clear, count."""

    name: str
    target: dict[str, Any]  # the client task's address arguments
    clear: Callable[[], None]
    count: Callable[[], int]


def ingest(clients: Clients, sink: Sink, kind: str, body: bytes, *, spans: int, requests: int,
           notes: list[str]) -> float:  # fmt: skip
    """One run of 4 clients; spans/s (batches) or requests/s (1 span); checks the count."""
    sink.clear()
    run = clients.run(kind, 4, body=body, count=requests // 4, **sink.target)
    sent = run.ok * spans
    stored = sink.count()
    if run.failed or stored != sent:
        notes.append(
            f"{sink.name}: stored {stored:,} of {sent:,} spans sent; "
            f"{run.failed} failed {run.errors}"
        )
    return (sent if spans > 1 else run.ok) / run.seconds


def parse_rate(body: bytes, spans: int, seconds: float) -> float:
    """Spans/s of ``ExportTraceServiceRequest.FromString`` on ``body``, in this process."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    parse = ExportTraceServiceRequest.FromString
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            parse(body)
        done += 10
    return done * spans / (time.perf_counter() - started)


def control_spans(collector: Any, clients: Clients, batch: bytes, samples: int, rnd: int) -> Result:
    """``GET /mocksup/spans`` over 100,352 stored spans, raw, vs ``spans()`` from Python."""
    collector.clear()
    clients.run("grpc", 2, target=f"127.0.0.1:{collector.grpc_port}", body=batch, count=98)
    stored = collector.stats()["items"]["traces"]
    result = Result(Figure(None))

    def get() -> float:
        conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=120)
        started = time.perf_counter()
        conn.request("GET", "/mocksup/spans")
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        if not result.notes:  # check the document once, off the clock
            listed = len(json.loads(data)["spans"])
            result.notes.append(f"{len(data) / 2**20:.0f} MiB of JSON, {listed:,} spans")
            result.ok = listed == stored == 100_352
        return elapsed * 1e3

    def python() -> float:
        started = time.perf_counter()
        count = len(collector.spans())
        if count != stored:
            raise RuntimeError(f"spans() returned {count:,} of {stored:,}")
        return (time.perf_counter() - started) * 1e3

    sides = [("mocksup", get), ("spans()", python)]
    got: dict[str, list[Figure]] = {"mocksup": [], "spans()": []}
    for _ in range(samples):
        for name, run in sides if rnd % 2 else reversed(sides):
            got[name].append(measure(run))
    result.mocksup = median_figure(got["mocksup"])
    result.peers["spans() from Python"] = median_figure(got["spans()"])
    collector.clear()
    return result


def otlp_group(rows: set[str], rnd: int, cfg: Config, clients: Clients) -> dict[str, Result]:
    from bench_otlp import make_request

    from mocksup.otlp import MockOTLPCollector

    batch = make_request(512, 1).SerializeToString()
    single = make_request(1, 2).SerializeToString()
    COMMANDS["mocksup collector"] = (
        "MockOTLPCollector(port=0, grpc_port=0, max_items=None, max_requests=1000)"
    )
    COMMANDS["ingest clients"] = (
        "4 client processes, one gRPC channel or kept-alive HTTP connection each, "
        "pre-encoded bodies of bench_otlp.make_request (10 string attributes a span)"
    )
    COMMANDS["upb parse"] = "ExportTraceServiceRequest.FromString(body) in a loop, this process"
    results: dict[str, Result] = {}
    with contextlib.ExitStack() as stack:
        collector = stack.enter_context(
            MockOTLPCollector(port=0, grpc_port=0, max_items=None, max_requests=1000)
        )
        ours = Sink(
            "mocksup",
            {"target": f"127.0.0.1:{collector.grpc_port}"},
            collector.clear,
            lambda: int(collector.stats()["items"]["traces"]),
        )
        peer: Sink | Figure | None = None
        if rows & {"grpc-batch", "grpc-single"}:
            try:
                sink = GrpcSinkProcess()
            except Unavailable as error:
                peer = Figure(None, str(error))
            else:
                stack.callback(sink.close)
                peer = Sink("GrpcSink", {"target": f"127.0.0.1:{sink.port}"}, sink.clear,
                            sink.count)  # fmt: skip
        pool_settle()
        for key, body, spans, requests in (
            ("grpc-batch", batch, 512, cfg.batches),
            ("grpc-single", single, 1, cfg.singles),
        ):
            if key in rows:
                sides = (ours, peer) if rnd % 2 else (peer, ours)
                results[key] = grpc_row(clients, sides, body, spans=spans, requests=requests)
        if "http-batch" in rows:
            results["http-batch"] = http_batch(collector, clients, batch, cfg, rnd)
        if "control-spans" in rows:
            results["control-spans"] = control_spans(collector, clients, batch, cfg.samples, rnd)
    return results


def grpc_row(clients: Clients, sides: tuple[Sink | Figure | None, ...], body: bytes, *,
             spans: int, requests: int) -> Result:  # fmt: skip
    """mocksup's gRPC intake and GrpcSink's, in the order given."""
    result = Result(Figure(None))
    for side in sides:
        if isinstance(side, Figure):  # the peer could not be started
            result.peers["GrpcSink"] = side
        elif side is not None:
            run = partial(ingest, clients, side, "grpc", body, spans=spans, requests=requests,
                          notes=result.notes)  # fmt: skip
            figure = measure(run)
            if side.name == "mocksup":
                result.mocksup = figure
            else:
                result.peers[side.name] = figure
    result.ok = not result.notes
    return result


def http_batch(collector: Any, clients: Clients, batch: bytes, cfg: Config, rnd: int) -> Result:
    """mocksup's OTLP/HTTP protobuf intake vs upb parsing the same body, in this round."""
    result = Result(Figure(None))
    http = Sink(
        "mocksup",
        {"port": collector.port, "path": "/v1/traces", "content_type": "application/x-protobuf"},
        collector.clear,
        lambda: int(collector.stats()["items"]["traces"]),
    )

    def ours() -> None:
        result.mocksup = measure(
            lambda: ingest(
                clients, http, "http", batch, spans=512, requests=cfg.batches, notes=result.notes
            )
        )

    def parse() -> None:
        result.peers["upb parse"] = measure(lambda: parse_rate(batch, 512, cfg.seconds / 2))

    for step in (ours, parse) if rnd % 2 else (parse, ours):
        step()
    result.ok = not result.notes
    collector.clear()
    return result


# -- the vLLM mock vs mockllm ------------------------------------------------------------------

SHORT = " ".join(["hello"] * 16)  # mockllm's reply to the non-streamed prompt
LONG = "abcdefghij" * 100  # mockllm streams one event a character: 1,000 events
NON_STREAM = {"model": "mock-model", "messages": [{"role": "user", "content": "Say hello"}],
              "max_tokens": 16}  # fmt: skip
STREAM = {"model": "mock-model", "messages": [{"role": "user", "content": "Count"}],
          "max_tokens": 1000, "ignore_eos": True, "stream": True}  # fmt: skip


class MockllmProcess:
    """mockllm's FastAPI app under uvicorn in a child, answering our two prompts.

    ``mockllm start`` always turns uvicorn's auto-reload on (its ``--reload`` flag defaults
    to true) and logs every request; the same app is run without either, mockllm's best case.
    The model name is not one of OpenAI's, so its usage count does not try to download a
    tiktoken encoding (it cannot here, and would retry on every request).
    """

    def __init__(self) -> None:
        try:
            import mockllm  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as error:
            raise Unavailable(f"mockllm is not installed ({error})") from None
        self._dir = tempfile.TemporaryDirectory()
        responses = os.path.join(self._dir.name, "responses.yml")
        with open(responses, "w") as file:
            # JSON is YAML too. A stream is the default reply whatever the prompt (mockllm
            # looks its reply up again as a prompt), so the long text is the default.
            json.dump({"responses": {"Say hello": SHORT}, "defaults": {"unknown_response": LONG}},
                      file)  # fmt: skip
        self.port = free_port()
        argv = [sys.executable, "-m", "uvicorn", "mockllm.server:app", "--host", "127.0.0.1",
                "--port", str(self.port), "--no-access-log"]  # fmt: skip
        COMMANDS["mockllm"] = (
            f"MOCKLLM_RESPONSES_FILE=responses.yml {shown(argv[:4])} --host 127.0.0.1 "
            "--port PORT --no-access-log (mockllm 'start' forces --reload)"
        )
        self._proc = subprocess.Popen(
            argv,
            cwd=self._dir.name,
            env={**ENV, "MOCKLLM_RESPONSES_FILE": responses},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._tail: list[str] = []
        self._serving = False
        told = threading.Event()
        threading.Thread(target=self._drain, args=(told,), daemon=True).start()
        if not (told.wait(60) and self._serving):
            self.close()
            raise Unavailable(f"mockllm did not start: {' | '.join(self._tail[-3:])}")

    def _drain(self, told: threading.Event) -> None:
        # uvicorn logs "Uvicorn running on ..." once its socket listens (its "Application
        # startup complete" comes before the bind); read on so its pipe never fills.
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").strip()
            self._tail = [*self._tail[-20:], line]
            if "Uvicorn running on" in line:
                self._serving = True
                told.set()
        told.set()  # it exited (or closed stderr) without serving

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._dir.cleanup()


def vllm_group(rows: set[str], rnd: int, cfg: Config, clients: Clients) -> dict[str, Result]:
    from mocksup.vllm import MockVLLMServer

    COMMANDS["mocksup vLLM mock"] = "MockVLLMServer(port=0): zero latency"
    COMMANDS["vLLM clients"] = (
        "8 client processes, one kept-alive connection each (a pre-encoded request, the "
        "answer read by its framing), POST "
        f"/v1/chat/completions for {cfg.seconds:g} s: {json.dumps(NON_STREAM)} and "
        f"{json.dumps(STREAM)}"
    )
    results: dict[str, Result] = {}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(MockVLLMServer(port=0))
        ports: dict[str, int | Figure] = {"mocksup": server.port}
        try:
            peer = MockllmProcess()
        except Unavailable as error:
            ports["mockllm"] = Figure(None, str(error))
        else:
            stack.callback(peer.close)
            ports["mockllm"] = peer.port
        pool_settle()
        for key, body in (("vllm", NON_STREAM), ("vllm-stream", STREAM)):
            if key in rows:
                results[key] = vllm_row(clients, ports, json.dumps(body).encode(), cfg, rnd)
    return results


def vllm_row(
    clients: Clients, ports: dict[str, int | Figure], body: bytes, cfg: Config, rnd: int
) -> Result:
    result = Result(Figure(None))
    stream = b'"stream": true' in body  # as json.dumps writes it
    names = list(ports) if rnd % 2 else list(reversed(ports))
    for name in names:
        port = ports[name]
        if isinstance(port, Figure):
            result.peers[name] = port
            continue
        per_stream: list[str] = []

        def run(port: int = port, per_stream: list[str] = per_stream) -> float:
            args = {"port": port, "path": "/v1/chat/completions", "body": body,
                    "content_type": "application/json", "sse": stream}  # fmt: skip
            clients.run("http", 1, count=2, **args)  # warm-up, off the clock
            done = clients.run("http", 8, seconds=cfg.seconds, **args)
            if done.failed:
                raise RuntimeError(f"{done.failed} failed: {done.errors}")
            if stream:
                per_stream.append(f"{done.events / max(done.ok, 1):,.0f} events a stream")
                return done.events / done.seconds
            return done.per_second

        figure = measure(run)
        if name == "mocksup":
            result.mocksup = figure
        else:
            result.peers[name] = figure
        result.notes.extend(f"{name}: {text}" for text in per_stream)
    return result


# -- the report --------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        if value >= 1000:
            return f"{value / 1e3:.2f} s"
        return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M {unit}"
    if value >= 1e4:
        return f"{value / 1e3:.0f} k {unit}"
    if value >= 1e3:
        return f"{value / 1e3:.2f} k {unit}"
    return f"{value:.0f} {unit}"


def ratio_text(mocksup: float, peer: float, unit: str) -> str:
    ratio = mocksup / peer
    better = ratio < 1 if unit == "ms" else ratio > 1
    factor = max(ratio, 1 / ratio)
    return f"{ratio:.2f} ({factor:.1f}x {'faster' if better else 'slower'})"


def met_text(row: Row, result: Result) -> str:
    if row.target is None or result.mocksup.value is None:
        return "-" if row.target is None else "n/a"
    met = row.target.met(result.mocksup.value, result.peers)
    if met is None:
        return "n/a"
    if not result.ok:
        return "NO (check failed)"
    return "yes" if met else "NO"


def table_lines(row: Row, rnd: int, result: Result) -> Iterator[str]:
    """The row's lines for one round: one per peer, mocksup's figure on the first."""
    mocksup = result.mocksup
    first = [row.title, str(rnd), fmt(mocksup.value, row.unit) if mocksup.value is not None
             else f"n/a: {mocksup.why}"]  # fmt: skip
    target = row.target.text if row.target else "-"
    peers = list(result.peers.items()) or [("-", Figure(None, "no peer"))]
    for i, (name, figure) in enumerate(peers):
        if figure.value is None:
            peer, ratio = f"{name}: n/a ({figure.why})", "-"
        else:
            peer = f"{name} {fmt(figure.value, row.unit)}"
            ratio = ratio_text(mocksup.value, figure.value, row.unit) if mocksup.value else "-"
        cells = first if i == 0 else ["", "", ""]
        tail = [target, met_text(row, result)] if i == 0 else ["", ""]
        yield "| " + " | ".join([*cells, peer, ratio, *tail]) + " |"


def summary_line(row: Row, results: list[Result]) -> str:
    met = [met_text(row, r) for r in results]
    values = [r.mocksup.value for r in results if r.mocksup.value is not None]
    reference = row.target.peer if row.target else None
    if reference is None and results and results[0].peers:
        reference = next(iter(results[0].peers))
    ratios = [
        r.mocksup.value / r.peers[reference].value  # type: ignore[operator]
        for r in results
        if reference in r.peers and r.peers[reference].value and r.mocksup.value is not None
    ]
    span = f"{min(ratios):.2f}-{max(ratios):.2f} vs {reference}" if ratios else "-"
    middle = fmt(statistics.median(values), row.unit) if values else "n/a"
    verdict = f"{met.count('yes')}/{len(met)}" if row.target else "-"
    target = row.target.text if row.target else "-"
    return f"| {row.title} | {middle} | {span} | {target} | {verdict} |"


def report(selected: list[Row], results: dict[str, list[Result]], header: str) -> None:
    print("\n" + header + "\n")
    print("| row | round | mocksup | peer | mocksup/peer | target | met |")
    print("|---|---|---|---|---|---|---|")
    for row in selected:
        for rnd, result in enumerate(results.get(row.key, []), 1):
            for line in table_lines(row, rnd, result):
                print(line)
    print("\n| row | mocksup, median | mocksup/peer, lowest-highest | target | rounds met |")
    print("|---|---|---|---|---|")
    for row in selected:
        print(summary_line(row, results.get(row.key, [])))
    notes = [
        f"- {row.key}, round {rnd}: {note}"
        for row in selected
        for rnd, result in enumerate(results.get(row.key, []), 1)
        for note in result.notes
    ]
    if notes:
        print("\nNotes:")
        print("\n".join(notes))
    print("\nCommands:")
    for label, command in COMMANDS.items():
        print(f"- {label}: {command}")


def versions() -> str:
    from importlib import metadata

    from google.protobuf.internal import api_implementation

    import mocksup

    found = [f"mocksup {mocksup.__version__}"]
    for name in ("mirakuru", "pytest-xprocess", "oteltest", "mockllm", "grpcio", "protobuf",
                 "uvicorn", "fastapi"):  # fmt: skip
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    found.append(f"protobuf backend {api_implementation.Type()}")
    return ", ".join(found)


# -- main --------------------------------------------------------------------------------------

GROUPS = ("supervisor", "up", "otlp", "vllm")


def choose(only: list[str]) -> list[Row]:
    if not only:
        return list(ROWS)
    wanted = {word.strip() for text in only for word in text.split(",") if word.strip()}
    known = {row.key for row in ROWS} | set(GROUPS)
    unknown = sorted(wanted - known)
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}; see --list")
    return [row for row in ROWS if row.key in wanted or row.group in wanted]


def run_group(group: str, keys: set[str], rnd: int, cfg: Config, clients: Any) -> dict[str, Result]:
    if group == "supervisor":
        return supervisor_group(keys, rnd, cfg.samples)
    if group == "up":
        return up_group(keys, rnd, cfg.samples)
    if group == "otlp":
        return otlp_group(keys, rnd, cfg, clients())
    return vllm_group(keys, rnd, cfg, clients())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of short runs")
    parser.add_argument("--rounds", type=int, help="rounds (3; --quick 1)")
    parser.add_argument("--samples", type=int, help="start/stop samples a round (3; --quick 1)")
    parser.add_argument("--seconds", type=float, help="each vLLM run (5; --quick 1.5)")
    parser.add_argument("--only", action="append", default=[], help="rows or groups, a,b,...")
    parser.add_argument("--list", action="store_true", help="list the rows and groups")
    parser.add_argument("--serve-grpcsink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_grpcsink:
        serve_grpcsink(args.serve_grpcsink)
        return
    if args.list:
        for row in ROWS:
            print(f"{row.key:<14} {row.group:<11} {row.title}")
        return
    selected = choose(args.only)
    cfg = Config(
        rounds=args.rounds or (1 if args.quick else 3),
        samples=args.samples or (1 if args.quick else 3),
        seconds=args.seconds or (1.5 if args.quick else 5.0),
        batches=100 if args.quick else 400,
        singles=2000 if args.quick else 8000,
    )
    header = (
        f"mocksup vs peers: {cfg.rounds} round(s), {cfg.samples} start/stop sample(s) a round, "
        f"{cfg.seconds:g} s vLLM runs; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at the start; {platform.python_implementation()} "
        f"{platform.python_version()}; {versions()}"
    )
    print(header, flush=True)
    pool: list[Clients] = []

    def clients() -> Clients:
        if not pool:
            pool.append(Clients(8))
        return pool[0]

    results: dict[str, list[Result]] = {}
    try:
        for rnd in range(1, cfg.rounds + 1):
            for group in GROUPS:
                keys = {row.key for row in selected if row.group == group}
                if not keys:
                    continue
                started = time.monotonic()
                for key, result in run_group(group, keys, rnd, cfg, clients).items():
                    results.setdefault(key, []).append(result)
                print(f"round {rnd}: {group} measured in {time.monotonic() - started:.0f} s",
                      flush=True)  # fmt: skip
    finally:
        for each in pool:
            each.close()
        pool_prepare(False)
    report(selected, results, header)


if __name__ == "__main__":
    main()
