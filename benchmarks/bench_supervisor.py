"""Start-until-ready and stop times: mocksup vs the seed's approach vs mirakuru.

Run from the repository root: ``python benchmarks/bench_supervisor.py [--n 1 2 4 8] [--repeat
7]``. mocksup is measured warm (its zygote running and done with its imports, as in a suite
that starts mocks per test), cold (no zygote: the start launches it, as the very first start
does) and with the zygote off (``MOCKSUP_ZYGOTE=0``: every child exec'd). Every variant
starts the same child (``bench_targets.py``: imports mocksup's dependencies, serves HTTP and
gRPC). Prints medians in milliseconds; the floor is a bare interpreter that only imports the
dependencies. Needs mirakuru (``pip install mirakuru``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_targets import DEPS, BenchServer  # noqa: E402

from mocksup import _launch, start_mock_servers_async, stop_mock_servers  # noqa: E402

CHILD = [sys.executable, os.path.join(HERE, "bench_targets.py")]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def floor() -> tuple[float, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import " + ", ".join(DEPS)], check=True, env=ENV)
    return time.perf_counter() - started, 0.0


def mocksup_run(n: int, variant: str) -> tuple[float, float]:
    """Concurrent start: ``warm`` (zygote settled), ``cold`` (none yet), ``exec`` (off)."""
    if variant != "warm":
        _launch.zygote.close()
        _launch.zygote.wait_closed(60)
    _launch.zygote.enabled = variant != "exec"
    if variant == "warm":
        _launch.zygote.start()
        _launch.zygote.settle()
    started = time.perf_counter()
    servers = asyncio.run(start_mock_servers_async([BenchServer(name=f"b{i}") for i in range(n)]))
    ready = time.perf_counter() - started
    started = time.perf_counter()
    stop_mock_servers(servers)
    stopped = time.perf_counter() - started
    _launch.zygote.settle()  # its imports after the start are not the next run's
    return ready, stopped


def seed_run(n: int) -> tuple[float, float]:
    """One after the other; poll each port every 100 ms until it accepts (the seed's way)."""
    started = time.perf_counter()
    procs = []
    for _ in range(n):
        port = free_port()
        procs.append(subprocess.Popen([*CHILD, str(port)], env=ENV))
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
    ready = time.perf_counter() - started
    started = time.perf_counter()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait()
    return ready, time.perf_counter() - started


def mirakuru_run(n: int) -> tuple[float, float]:
    from mirakuru import TCPExecutor

    started = time.perf_counter()
    executors = []
    for _ in range(n):
        port = free_port()
        executor = TCPExecutor(
            [*CHILD, str(port)], host="127.0.0.1", port=port, timeout=60, envvars=ENV
        )
        executor.start()
        executors.append(executor)
    ready = time.perf_counter() - started
    started = time.perf_counter()
    for executor in executors:
        executor.stop()
    return ready, time.perf_counter() - started


def measure(run: Callable[[], tuple[float, float]], repeat: int) -> tuple[float, float]:
    run()  # warm the page cache and the import caches
    samples = [run() for _ in range(repeat)]
    return (
        statistics.median(s[0] for s in samples) * 1e3,
        statistics.median(s[1] for s in samples) * 1e3,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, median of {args.repeat}")
    base, _ = measure(floor, args.repeat)
    print(f"floor: python -c 'import {', '.join(DEPS)}': {base:.0f} ms\n")
    print(f"{'N':>2}  {'variant':<26}{'ready ms':>10}{'x floor':>9}{'stop ms':>9}")
    for n in args.n:
        results = {}
        for label, run in (
            ("mocksup, warm", lambda n: mocksup_run(n, "warm")),
            ("mocksup, cold", lambda n: mocksup_run(n, "cold")),
            ("mocksup, zygote off", lambda n: mocksup_run(n, "exec")),
            ("seed (sequential, 100 ms)", seed_run),
            ("mirakuru TCPExecutor", mirakuru_run),
        ):
            results[label] = measure(lambda run=run, n=n: run(n), args.repeat)
            ready, stop = results[label]
            print(f"{n:>2}  {label:<26}{ready:>10.0f}{ready / base:>9.2f}{stop:>9.1f}")
        mirakuru = results["mirakuru TCPExecutor"][0]
        warm, cold = results["mocksup, warm"][0], results["mocksup, cold"][0]
        print(f"    to ready vs mirakuru: {mirakuru / warm:.1f}x faster warm, ", end="")
        print(f"{mirakuru / cold:.1f}x faster cold\n")
    _launch.zygote.close()


if __name__ == "__main__":
    main()
