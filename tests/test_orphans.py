"""No child outlives its parent, and the sweep of leftovers never touches a living run's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

import psutil

from mocksup import _child, _launch, _reap
from tests.support import ProcessTestCase

HARNESS = """
import json, os, sys
import psutil
from mocksup import MockRedisServer, _launch, start_all
from tests.targets import EscapingDescendants, IgnoresSigterm, Sleeper, WithGrandchild
folder = os.environ["PID_FOLDER"]
servers = start_all([
    MockRedisServer(), Sleeper(), WithGrandchild(), IgnoresSigterm(),
    # One whose serve() returns when the parent is gone, one whose serve() never does.
    EscapingDescendants(pid_file=folder + "/returns"),
    EscapingDescendants(name="hangs", pid_file=folder + "/hangs", hang=True),
])
pids = {name: s.pid for name, s in servers.items()}
pids["zygote"] = _launch.zygote.pid  # None with MOCKSUP_ZYGOTE=0
pids["grandchild"] = psutil.Process(servers["parent"].pid).children()[0].pid
for which in ("returns", "hangs"):
    for number, pid in enumerate(open(folder + "/" + which).read().split()):
        pids[f"{which}-escaped{number}"] = int(pid)
print(json.dumps(pids), flush=True)
sys.stdin.read()
"""

#: Those that ignore SIGTERM: only the child's last resort (SIGKILL after
#: ``HARD_EXIT_AFTER``) ends them, so they cannot be gone before it.
STUBBORN = (
    "stubborn",
    "hangs",
    "returns-escaped0",
    "returns-escaped1",
    "hangs-escaped0",
    "hangs-escaped1",
)


class OrphanTest(ProcessTestCase):
    def test_sigkilled_harness_leaves_no_process(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="mocksup-test-"))
        self.addCleanup(shutil.rmtree, folder)
        harness = self.run_python(
            HARNESS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PID_FOLDER": str(folder)},
        )
        assert harness.stdout is not None
        pids: dict[str, int] = json.loads(harness.stdout.readline())
        zygote = pids.pop("zygote")
        processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.assertTrue(all(p.is_running() for p in processes.values()))
        if zygote is not None:
            # The mocks are the zygote's children: it must go too, and they with it.
            processes["zygote"] = psutil.Process(zygote)
            for name in ("redis", "sleeper", "parent", "stubborn", "escaper", "hangs"):
                self.assertEqual(processes[name].ppid(), zygote, name)
        # The escaped ones left the mock's process group: only the child's own tree walk
        # (and its being a subreaper, for the daemon) can reach them.
        for owner in ("escaper", "hangs"):
            for number in (0, 1):
                name = f"{'returns' if owner == 'escaper' else owner}-escaped{number}"
                self.assertNotEqual(os.getpgid(pids[name]), pids[owner], name)
        gone: dict[str, float] = {}

        def record(process: psutil.Process) -> None:
            gone[next(n for n, p in processes.items() if p.pid == process.pid)] = time.monotonic()

        killed_at = time.monotonic()
        harness.send_signal(signal.SIGKILL)
        # Generous on a loaded machine, where the hard exit alone takes 0.5 s.
        _, alive = psutil.wait_procs(
            list(processes.values()), timeout=_child.HARD_EXIT_AFTER + 5.0, callback=record
        )
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        self.assertEqual(alive, [])
        for name in STUBBORN:
            # Not before the hard exit: measured from before the kill, so exactly.
            self.assertGreaterEqual(gone[name] - killed_at, _child.HARD_EXIT_AFTER, name)
        harness.wait(5)


SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


class SweepTest(ProcessTestCase):
    def marked(self, owner: str, namespace: str | None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKSUP_OWNER")}
        env[_reap.OWNER_ENV] = owner
        if namespace is not None:
            env[_reap.NAMESPACE_ENV] = namespace
        return self.popen(SLEEP, env=env)

    def test_sweep_kills_leftovers_of_dead_owners_in_our_namespace_only(self) -> None:
        ours = _reap.pid_namespace(os.getpid())
        assert ours is not None
        dead_owner = "1:0.000"  # pid 1 exists, but was not created at time 0: gone
        leftover = self.marked(dead_owner, ours)
        live = self.marked(_reap.owner_marker(), ours)
        # A container's child names pids of its own namespace: nothing to judge here.
        foreign = self.marked(dead_owner, "4026531999" if ours != "4026531999" else "1")
        # No namespace (an older mocksup), or a marker that does not parse: left alone.
        unknown = self.marked(dead_owner, None)
        garbled = self.marked("1:0.000:x", ours)
        self.addCleanup(setattr, _reap, "_swept", _reap._swept)
        _reap._swept = False
        # Killed: by this sweep, or by the first start of another run on this machine
        # (pytest -n, a second suite) that swept first; no count is asserted for that.
        _reap.sweep_leftovers()
        self.assertEqual(leftover.wait(5), -signal.SIGKILL)
        for proc in (live, foreign, unknown, garbled):
            self.assertIsNone(proc.poll())
        self.assertEqual(_reap.sweep_leftovers(), 0)  # once per process

    def test_the_first_start_sweeps_and_child_env_does_not(self) -> None:
        ours = _reap.pid_namespace(os.getpid())
        leftover = self.marked("1:0.000", ours)
        # Working out a child's environment starts no thread (and sweeps nothing) ...
        self.addCleanup(setattr, _launch, "_owner", _launch._owner)
        _launch._owner = None
        self.assertTrue(_launch.zygote.settle(60))
        threads = set(threading.enumerate())
        _launch.child_env({})
        self.assertEqual(set(threading.enumerate()) - threads, set())
        self.assertIsNone(leftover.poll())
        # ... the first start in a process does, before it returns.
        starter = self.run_python("from tests.targets import Sleeper; Sleeper().start().stop()")
        self.assertEqual(starter.wait(60), 0)
        self.assertEqual(leftover.wait(5), -signal.SIGKILL)

    @unittest.skipUnless(shutil.which("unshare"), "needs unshare(1)")
    def test_a_mock_in_another_pid_namespace_is_never_swept(self) -> None:
        # A harness in a PID namespace of its own (as in a container on this host) is pid 1
        # there; its mock's marker says so. Seen from here, pid 1 is our init, created at
        # another time: judged by pid and start time alone, the mock would look orphaned.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        code = (
            "import sys; from tests.targets import Sleeper; s = Sleeper().start(); "
            "print(s.port, flush=True); sys.stdin.read(); s.stop()"
        )
        contained = self.popen(
            [
                "unshare",
                "--user",
                "--map-root-user",
                "--pid",
                "--fork",
                "--mount-proc",
                sys.executable,
                "-c",
                code,
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert contained.stdout is not None and contained.stdin is not None
        line = contained.stdout.readline()
        if not line:
            self.skipTest(f"no PID namespace here: {contained.communicate()[1].decode()}")
        port = int(line)
        (mock,) = [
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and getattr(c.laddr, "port", None) == port
        ]
        environ = psutil.Process(mock).environ()
        self.assertTrue(environ[_reap.OWNER_ENV].startswith("1:"))
        self.assertNotEqual(environ[_reap.NAMESPACE_ENV], _reap.pid_namespace(os.getpid()))
        self.addCleanup(setattr, _reap, "_swept", _reap._swept)
        _reap._swept = False
        self.assertEqual(_reap.sweep_leftovers(), 0)
        self.assertTrue(psutil.Process(mock).is_running())
        contained.stdin.close()
        self.assertEqual(contained.wait(30), 0, contained.stderr and contained.stderr.read())


if __name__ == "__main__":
    unittest.main()
