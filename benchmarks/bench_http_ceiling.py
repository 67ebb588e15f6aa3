"""How far OTLP/HTTP intake of 512-span batches can go: the collector against bare servers.

Run from the repository root (about five minutes)::

    python benchmarks/bench_http_ceiling.py              # 3 rounds
    python benchmarks/bench_http_ceiling.py --rounds 1

``bench_peers.py`` compares the collector's intake of 512-span batches with the bare upb
parse of the same bodies in a loop (target 0.7x). This script asks what any server written
in Python reaches against that figure on the same machine, with the same 4 client processes
and bodies, by serving them with servers that do less than the collector:

- ``collector``: the real :class:`~mocksup.otlp.MockOTLPCollector` child, as
  ``bench_peers.py`` runs it;
- ``threads, parse``: mocksup's HTTP/1.1 server (a thread per connection, as the collector
  uses) with an app that only reads the body and parses it
  (``ExportTraceServiceRequest.FromString``);
- ``threads, collector app``: mocksup's HTTP/1.1 server serving the collector's WSGI app
  (its check, store and answer): the collector's child without its gRPC side and control
  plumbing;
- ``threads, collector app, no check``: the same with the check taken out (each body only
  opened as an envelope, to count and store it). No collector may skip the check: this is
  the most that moving it off the process (to helper processes) could give;
- ``one loop, parse``: one thread serving every connection from a ``selectors`` loop (a
  minimal HTTP/1.1 reader: ``Content-Length`` bodies only), parsing each body;
- ``one loop, collector app``: the same loop calling the collector's WSGI app in-process
  (its check, store and answer, without its HTTP server);
- ``two loops, parse``: two processes serving the same listening socket, each a loop that
  parses;
- ``two processes, check, store hop``: two processes serving the same listening socket
  with mocksup's HTTP server, each checking every body as the collector does
  (:func:`mocksup.otlp._proto.decode`), then sending it over a Unix socket to a third
  process that keeps it (the collector's app without its check) and waiting for its
  answer: ingest in several processes with one store, as a collector that scaled its
  intake out would have it;
- ``threads, collector app, check in a second process``: the collector's app on mocksup's
  HTTP server as above, but each body's check done by a process forked for it (before any
  thread) and reached over 4 socket pairs; the app waits for the verdict (its thread
  holds no GIL meanwhile), then opens the envelope and stores the body: one store and one
  HTTP server, the check on the second core.

Every server runs in a process of its own with ``MALLOC_ARENA_MAX=1``, as mocksup's
children do. None of the bare servers is a collector: they show where the ceiling is.

Besides each server's CPU a request, the clients' CPU a request is printed, and from it
the budget a server has for 0.7x the parse: on a machine of N cores, the processes of the
server and the clients together may spend at most N / (0.7 x parse rate) a request.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import selectors
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil
from bench_otlp import make_request
from bench_peers import Clients
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SPANS = 512
CLIENTS = 4
_EMPTY_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"


def _parse(body: bytes) -> bytes:
    ExportTraceServiceRequest.FromString(body)
    return _EMPTY_OK


def _collector_app(*, checked: bool = True) -> Any:
    """The collector's WSGI app, as its child serves it; ``checked=False``: without the
    check of each body (an upper bound, not a collector)."""
    from mocksup.otlp import MockOTLPCollector, _http
    from mocksup.otlp._proto import Envelope

    if not checked:
        _http.decode_protobuf = lambda signal, raw, limits: Envelope(raw, limits)
    collector = MockOTLPCollector(port=0, grpc_port=0, max_items=None, max_requests=1000)
    return collector._parts().app  # the pieces the collector's child serves


def _collector_answer(*, checked: bool = True) -> Callable[[bytes], bytes]:
    """The collector's WSGI app, called in-process for each body; its answer as bytes."""
    app = _collector_app(checked=checked)
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/traces", "QUERY_STRING": "",
        "CONTENT_TYPE": "application/x-protobuf", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "4318", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:4318",
    }  # fmt: skip

    def answer(body: bytes) -> bytes:
        status: list[str] = []
        result = app(
            {**environ, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)},
            lambda line, headers, exc_info=None: status.append(line),
        )
        data = b"".join(result)
        if not status[0].startswith("200"):
            raise RuntimeError(f"the collector's app answered {status[0]}")
        return (
            f"HTTP/1.1 {status[0]}\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data

    return answer


def _loop(listener: socket.socket, answer: Callable[[bytes], bytes], quota: int) -> None:
    """Serve connections from one thread: read a head, then its body, then answer.

    At most ``quota`` connections at a time, so that processes sharing the listener share
    the clients evenly.
    """
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, bytearray] = {}
    while True:
        if len(pending) < quota and listener not in selector.get_map():
            selector.register(listener, selectors.EVENT_READ)
        for key, _ in selector.select():
            sock: Any = key.fileobj
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:  # the other process took it
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pending[conn] = bytearray()
                selector.register(conn, selectors.EVENT_READ)
                if len(pending) >= quota:
                    selector.unregister(listener)
                continue
            data = pending[sock]
            try:
                chunk = sock.recv(1 << 18)
            except BlockingIOError:
                continue
            if not chunk:
                selector.unregister(sock)
                sock.close()
                del pending[sock]
                continue
            data += chunk
            while (end := data.find(b"\r\n\r\n")) >= 0:
                head = bytes(data[:end]).lower()
                size = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if len(data) < end + 4 + size:
                    break
                body = bytes(data[end + 4 : end + 4 + size])
                del data[: end + 4 + size]
                sock.setblocking(True)
                sock.sendall(answer(body))
                sock.setblocking(False)


def _loop_server(ready: Any, kind: str, processes: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    listener.setblocking(False)
    answer = _collector_answer() if kind == "app" else _parse
    for _ in range(processes - 1):
        if os.fork() == 0:
            break  # each process serves the same listening socket
    else:
        ready.send(listener.getsockname()[1])
    _loop(listener, answer, -(-CLIENTS // processes))


def _threads_server(ready: Any) -> None:
    from mocksup.serving import bind_tcp, read_body, serve_wsgi

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ExportTraceServiceRequest.FromString(read_body(environ, 1 << 26))
        start_response("200 OK", [("Content-Type", "application/x-protobuf")])
        return [b""]

    with serve_wsgi(app, bind_tcp("127.0.0.1", 0)) as server:
        ready.send(server.port)
        time.sleep(3600)


def _app_server(ready: Any, checked: bool) -> None:
    from mocksup.serving import bind_tcp, serve_wsgi

    with serve_wsgi(_collector_app(checked=checked), bind_tcp("127.0.0.1", 0)) as server:
        ready.send(server.port)
        time.sleep(3600)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size, socket.MSG_WAITALL)
    if len(data) != size:
        raise EOFError
    return data


def _hop_store(listener: socket.socket) -> None:
    """The store of the *store hop*: for each body a checking process sends, the collector's
    app without its check; its answer sent back. A thread per checking thread."""
    import threading

    answer = _collector_answer(checked=False)

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                (size,) = struct.unpack("!I", _recv_exact(conn, 4))
                data = answer(_recv_exact(conn, size))
                conn.sendall(struct.pack("!I", len(data)) + data)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _hop_server(ready: Any, processes: int) -> None:
    import threading

    from mocksup.otlp import MockOTLPCollector
    from mocksup.otlp._proto import decode
    from mocksup.serving import read_body, serve_wsgi

    store = socket.socket(socket.AF_UNIX)
    store.bind(f"\0mocksup-bench-hop-{os.getpid()}")  # abstract: no file left behind
    store.listen(64)
    if os.fork() == 0:
        _hop_store(store)
    address = store.getsockname()
    store.close()
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    for _ in range(processes - 1):
        if os.fork() == 0:
            break  # each process serves the same listening socket
    else:
        ready.send(listener.getsockname()[1])
    limits, local = MockOTLPCollector(port=0, grpc_port=0).limits(), threading.local()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = read_body(environ, 1 << 26)
        decode("traces", body, limits)  # refusing nothing here: the bodies are valid
        if not hasattr(local, "hop"):
            local.hop = socket.socket(socket.AF_UNIX)
            local.hop.connect(address)
        local.hop.sendall(struct.pack("!I", len(body)) + body)
        (size,) = struct.unpack("!I", _recv_exact(local.hop, 4))
        _recv_exact(local.hop, size)  # the store's answer: 200, kept
        start_response("200 OK", [("Content-Type", "application/x-protobuf")])
        return [b""]

    with serve_wsgi(app, listener):
        time.sleep(3600)


def _offload_server(ready: Any, channels: int) -> None:
    import queue
    import threading

    from mocksup.otlp import MockOTLPCollector, _http
    from mocksup.otlp._proto import Envelope, decode
    from mocksup.serving import bind_tcp, serve_wsgi

    collector = MockOTLPCollector(port=0, grpc_port=0, max_items=None, max_requests=1000)
    limits = collector.limits()
    pairs = [socket.socketpair() for _ in range(channels)]
    if os.fork() == 0:  # the checker: a thread a channel, each body checked as decode() does
        for ours, _ in pairs:
            ours.close()

        def check(conn: socket.socket) -> None:
            with contextlib.suppress(EOFError, OSError):
                while True:
                    (size,) = struct.unpack("!I", _recv_exact(conn, 4))
                    decode("traces", _recv_exact(conn, size), limits)
                    conn.sendall(b"\x00")  # valid (the bodies are)

        threads = [threading.Thread(target=check, args=(theirs,)) for _, theirs in pairs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        os._exit(0)
    free: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
    for ours, theirs in pairs:
        theirs.close()
        free.put(ours)

    def checked_elsewhere(signal: str, raw: bytes, limits: Any) -> Envelope:
        conn = free.get()
        try:
            conn.sendall(struct.pack("!I", len(raw)))
            conn.sendall(raw)
            _recv_exact(conn, 1)
        finally:
            free.put(conn)
        return Envelope(raw, limits)

    _http.decode_protobuf = checked_elsewhere
    with serve_wsgi(collector._parts().app, bind_tcp("127.0.0.1", 0)) as server:
        ready.send(server.port)
        time.sleep(3600)


def _spawn(target: Callable[..., None], *args: Any) -> tuple[Any, int]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    proc = context.Process(target=target, args=(theirs, *args), daemon=True)
    proc.start()
    if not ours.poll(60):
        raise RuntimeError(f"{target.__name__} did not start")
    return proc, ours.recv()


def _measure(variant: str, clients: Clients, body: bytes, seconds: float) -> dict[str, float]:
    """Serve ``variant``, send it the batches for ``seconds``: requests/s, CPU a request."""
    collector = proc = None
    if variant == "collector":
        from mocksup.otlp import MockOTLPCollector

        collector = MockOTLPCollector(port=0, grpc_port=0, max_items=None, max_requests=1000)
        collector.start()
        port = collector.port
        tree = [psutil.Process(collector.pid)]
    else:
        if variant == "threads":
            proc, port = _spawn(_threads_server)
        elif variant.startswith("threads-app"):
            proc, port = _spawn(_app_server, *VARIANTS[variant][1])
        elif variant == "hop":
            proc, port = _spawn(_hop_server, *VARIANTS[variant][1])
        elif variant == "offload":
            proc, port = _spawn(_offload_server, *VARIANTS[variant][1])
        else:
            proc, port = _spawn(_loop_server, *VARIANTS[variant][1])
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]
    try:
        args = {"port": port, "path": "/v1/traces", "body": body,
                "content_type": "application/x-protobuf"}  # fmt: skip
        clients.run("http", CLIENTS, count=CLIENTS * 4, **args)  # warm-up, off the clock
        senders = [psutil.Process(pid) for pid in clients.pids(CLIENTS)]
        before = _cpu(tree), _cpu(senders)
        run = clients.run("http", CLIENTS, seconds=seconds, **args)
        cpu = _cpu(tree) - before[0], _cpu(senders) - before[1]
        if run.failed:
            raise RuntimeError(f"{variant}: {run.failed} failed: {run.errors}")
        requests = max(run.ok, 1)
        return {
            "per_second": run.per_second,
            "cpu_per_request": cpu[0] / requests,
            "client_cpu_per_request": cpu[1] / requests,
        }
    finally:
        if collector is not None:
            collector.stop()
        if proc is not None:
            for child in tree[1:]:
                child.kill()
            proc.kill()
            proc.join()


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


#: Variant -> (its label, the loop server's arguments).
VARIANTS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "collector": ("collector (the real child)", ()),
    "threads": ("threads, parse", ()),
    "threads-app": ("threads, collector app", (True,)),
    "threads-app-unchecked": ("threads, collector app, no check", (False,)),
    "loop": ("one loop, parse", ("parse", 1)),
    "loop-app": ("one loop, collector app", ("app", 1)),
    "two-loops": ("two loops, parse", ("parse", 2)),
    "hop": ("two processes, check, store hop", (2,)),
    "offload": ("threads, app, check in 2nd process", (4,)),
}


def _parse_rate(body: bytes, seconds: float = 2.0) -> float:
    count = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(20):
            ExportTraceServiceRequest.FromString(body)
        count += 20
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant and round")
    options = parser.parse_args()
    os.environ.setdefault("MALLOC_ARENA_MAX", "1")  # the spawned servers, as mocksup's children
    body = make_request(SPANS, 1).SerializeToString()
    clients = Clients(CLIENTS)
    rows: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    budgets: list[float] = []
    cores = os.cpu_count() or 1
    try:
        for round_ in range(1, options.rounds + 1):
            figures = {name: _measure(name, clients, body, options.seconds) for name in VARIANTS}
            parse = _parse_rate(body)  # the clients idle now, as the servers do
            spans = parse * SPANS / 1e6
            client = statistics.median(f["client_cpu_per_request"] for f in figures.values())
            budget = cores / (0.7 * parse) - client
            budgets.append(budget)
            print(
                f"round {round_}: upb parse {spans:.2f} M spans/s ({parse:,.0f} bodies/s); "
                f"clients' CPU {client * 1e6:.0f} us/request; for 0.7x the parse a server may "
                f"spend {budget * 1e6:.0f} us/request on {cores} cores, "
                f"{1e6 / (0.7 * parse):.0f} us in one process"
            )
            for name, (label, _) in VARIANTS.items():
                figure = figures[name]
                ratio = figure["per_second"] / parse
                rows[name].append(ratio)
                cpu[name].append(figure["cpu_per_request"])
                print(
                    f"  {label:34s} {figure['per_second']:7,.0f} req/s  "
                    f"{figure['per_second'] * SPANS / 1e3:5,.0f} k spans/s  {ratio:.2f}x parse  "
                    f"server CPU {figure['cpu_per_request'] * 1e6:4.0f} us/request"
                )
    finally:
        clients.close()
    print(
        f"\nserver CPU budget for 0.7x the parse: {min(budgets) * 1e6:.0f}-"
        f"{max(budgets) * 1e6:.0f} us/request, all its processes together"
    )
    print("ratio to the upb parse, lowest-highest over the rounds:")
    for name, (label, _) in VARIANTS.items():
        print(
            f"  {label:34s} {min(rows[name]):.2f}-{max(rows[name]):.2f}x  "
            f"(server CPU {statistics.median(cpu[name]) * 1e6:.0f} us/request, median)"
        )


if __name__ == "__main__":
    main()
