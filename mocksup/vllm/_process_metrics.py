"""The families of ``prometheus_client``'s default registry that vLLM's ``/metrics`` shows.

vLLM (one API server) serves the default registry, which also holds the client library's
own collectors: ``python_gc_*`` (``gc.get_stats()``), ``python_info`` and, where ``/proc``
exists, ``process_*``. The mock writes the same families about its own process, read the
same way: on a system without ``/proc`` (macOS) there are no ``process_*`` families, as with
``prometheus_client`` there.
"""

from __future__ import annotations

import gc
import os
import platform

from mocksup.vllm._exposition import family, sample

__all__ = ["render_process_metrics"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def render_process_metrics() -> str:
    """The ``python_gc_*``, ``python_info`` and ``process_*`` families, in that order."""
    out: list[str] = []
    _gc(out)
    _python_info(out)
    _process(out)
    return "".join(out)


def _gc(out: list[str]) -> None:
    if platform.python_implementation() != "CPython":
        return
    stats = gc.get_stats()
    for name, key, help_text in (
        ("python_gc_objects_collected_total", "collected", "Objects collected during gc"),
        (
            "python_gc_objects_uncollectable_total",
            "uncollectable",
            "Uncollectable objects found during GC",
        ),
        ("python_gc_collections_total", "collections",
         "Number of times this generation was collected"),
    ):  # fmt: skip
        family(out, name, help_text, "counter")
        for generation, stat in enumerate(stats):
            sample(out, name, {"generation": str(generation)}, stat[key])


def _python_info(out: list[str]) -> None:
    major, minor, patch = platform.python_version_tuple()
    family(out, "python_info", "Python platform information", "gauge")
    labels = {
        "implementation": platform.python_implementation(),
        "major": major,
        "minor": minor,
        "patchlevel": patch,
        "version": platform.python_version(),
    }
    sample(out, "python_info", labels, 1.0)


def _process(out: list[str]) -> None:
    try:
        with open("/proc/self/stat", "rb") as stat_file:
            fields = stat_file.read().split(b")")[-1].split()
        with open("/proc/stat", "rb") as system_file:
            boot = next(float(line.split()[1]) for line in system_file if line.startswith(b"btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        return  # no /proc: prometheus_client writes no process_* families either
    gauges = (
        ("process_virtual_memory_bytes", "Virtual memory size in bytes.", float(fields[20])),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            float(fields[21]) * _PAGE_SIZE,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            float(fields[19]) / _TICKS + boot,
        ),
    )
    for name, help_text, value in gauges:
        family(out, name, help_text, "gauge")
        sample(out, name, {}, value)
    name = "process_cpu_seconds_total"
    family(out, name, "Total user and system CPU time spent in seconds.", "counter")
    sample(out, name, {}, (float(fields[11]) + float(fields[12])) / _TICKS)
    _fds(out)


def _fds(out: list[str]) -> None:
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/limits", "rb") as limits:
            max_fds = next(
                float(line.split()[3]) for line in limits if line.startswith(b"Max open files")
            )
    except (OSError, StopIteration, IndexError, ValueError):
        return
    family(out, "process_open_fds", "Number of open file descriptors.", "gauge")
    sample(out, "process_open_fds", {}, open_fds)
    family(out, "process_max_fds", "Maximum number of open file descriptors.", "gauge")
    sample(out, "process_max_fds", {}, max_fds)
