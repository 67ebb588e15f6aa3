"""The zygote: the preloaded process that forks the mocks' children.

Each test that needs a fresh zygote closes the running one first; the next start launches
a new one. Every test holds whether the suite runs with ``MOCKSUP_ZYGOTE`` on or off: those
about forking turn it on themselves and put the setting back afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

import grpc
import psutil

from mocksup import ChildCrashedError, _fork, _launch, _reap
from tests.otlp.support import grpc_call
from tests.support import ProcessTestCase, open_fds, wait_until_exited
from tests.targets import (
    CrashBeforeReady,
    EnvEcho,
    GrpcMock,
    Sleeper,
    WatchedCollector,
    WatchedVLLM,
)


def fds_of(pid: int) -> set[str]:
    """What the descriptors of ``pid`` point to (``socket:[123]``, ``pipe:[456]``, paths)."""
    folder = f"/proc/{pid}/fd"
    found = set()
    for fd in os.listdir(folder):
        try:
            found.add(os.readlink(f"{folder}/{fd}"))
        except FileNotFoundError:
            continue  # closed meanwhile
    return found


class ZygoteTestCase(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(setattr, _launch.zygote, "enabled", _launch.zygote.enabled)
        _launch.zygote.enabled = True
        self.addCleanup(_launch.zygote.close)

    def fresh_zygote(self) -> None:
        """Close the running zygote (the next start launches one); wait until it is gone."""
        _launch.zygote.close()
        self.assertTrue(_launch.zygote.wait_closed(30))


class ForkTest(ZygoteTestCase):
    def test_a_start_forks_from_the_zygote_and_the_zygote_stays(self) -> None:
        first = self.start_server(Sleeper(name="first"))
        zygote = _launch.zygote.pid
        assert zygote is not None
        self.assertEqual(psutil.Process(first.pid).ppid(), zygote)
        # Like an exec'd child: its own session and group.
        self.assertEqual(os.getsid(first.pid or 0), first.pid)
        self.assertEqual(os.getpgid(first.pid or 0), first.pid)
        second = self.start_server(Sleeper(name="second"))
        self.assertEqual(psutil.Process(second.pid).ppid(), zygote)
        self.assertEqual(_launch.zygote.pid, zygote)
        # The zygote itself: single-threaded, and a child of ours that leads its session.
        self.assertEqual(psutil.Process(zygote).num_threads(), 1)
        self.assertEqual(psutil.Process(zygote).ppid(), os.getpid())
        self.assertEqual(os.getsid(zygote), zygote)

    def test_a_settled_zygote_has_imported_grpcs_server_and_is_still_single_threaded(
        self,
    ) -> None:
        self.fresh_zygote()
        self.start_server(Sleeper()).stop()
        self.assertTrue(_launch.zygote.settle(60))
        zygote = _launch.zygote.pid
        assert zygote is not None
        self.assertEqual(psutil.Process(zygote).num_threads(), 1)
        server = self.start_server(GrpcMock())
        self.assertEqual(psutil.Process(server.pid).ppid(), zygote)
        self.assertIn("grpc._server imported before: True", server.log_tail())
        # The child's gRPC server, made from what the zygote imported, serves.
        _, error = grpc_call(f"127.0.0.1:{server.port}", b"", path="/mocksup.Nothing/Here")
        assert error is not None
        self.assertEqual(error.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_the_default_mocks_forked_from_a_settled_zygote_import_nothing_to_start(
        self,
    ) -> None:
        self.start_server(Sleeper()).stop()
        self.assertTrue(_launch.zygote.settle(60))
        for server in (WatchedCollector(port=0, grpc_port=0), WatchedVLLM(port=0)):
            with self.subTest(type(server).__name__):
                self.start_server(server)
                self.assertEqual(psutil.Process(server.pid).ppid(), _launch.zygote.pid)
                self.assertIn("imported while starting: []", server.log_tail())

    def test_a_forked_child_takes_the_environment_and_folder_of_its_start(self) -> None:
        self.start_server(Sleeper()).stop()  # the zygote runs before this start's changes
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        with mock.patch.dict(os.environ, {"MOCKSUP_TEST_VALUE": "late"}):
            previous = os.getcwd()
            os.chdir(folder)
            self.addCleanup(os.chdir, previous)
            server = self.start_server(EnvEcho())
        self.assertEqual(psutil.Process(server.pid).ppid(), _launch.zygote.pid)
        self.assertIn(f"value: late cwd: {os.path.realpath(folder)}", server.log_tail())

    def test_a_server_with_its_own_environment_is_execd(self) -> None:
        server = self.start_server(EnvEcho(env={"MOCKSUP_TEST_VALUE": "own"}))
        self.assertEqual(psutil.Process(server.pid).ppid(), os.getpid())
        self.assertIn("value: own", server.log_tail())

    def test_children_start_with_one_malloc_arena_that_their_programs_do_not_inherit(
        self,
    ) -> None:
        self.fresh_zygote()
        for how, env in (("forked", {}), ("exec'd", {"MOCKSUP_TEST_VALUE": "own"})):
            with self.subTest(how):
                server = self.start_server(EnvEcho(env=env))
                forked = psutil.Process(server.pid).ppid() == _launch.zygote.pid
                self.assertEqual(forked, how == "forked")
                # What glibc read as the process started (its exec'd environment) ...
                self.assertEqual(psutil.Process(server.pid).environ()["MALLOC_ARENA_MAX"], "1")
                # ... is not what it hands on: its environment is the one it was started in.
                self.assertIn("arena: None", server.log_tail())
                server.stop()

    def test_a_users_malloc_setting_stands(self) -> None:
        # Forked and exec'd; also beside a marker of the name mocksup uses for its own
        # setting, which the user's environment may hold (a program started with a copy of
        # a child's exec'd environment).
        for extra in ({}, {"MOCKSUP_MALLOC_ARENA_MAX": "1"}):
            for env in ({}, {"MOCKSUP_TEST_VALUE": "own"}):
                with self.subTest(extra=extra, env=env):
                    self.fresh_zygote()
                    with mock.patch.dict(os.environ, {"MALLOC_ARENA_MAX": "2", **extra}):
                        server = self.start_server(EnvEcho(env=env))
                    environ = psutil.Process(server.pid).environ()
                    self.assertEqual(environ["MALLOC_ARENA_MAX"], "2")
                    self.assertIn("arena: 2", server.log_tail())
                    server.stop()

    def test_a_forked_child_holds_nothing_of_the_zygote(self) -> None:
        # Two children, so that the zygote holds the exit pipe and pidfd of the first while
        # it forks the second.
        first = self.start_server(Sleeper(name="first"))
        second = self.start_server(Sleeper(name="second"))
        zygote = _launch.zygote.pid
        assert zygote is not None
        theirs = fds_of(zygote) - {"/dev/null"}
        self.assertTrue(any(target.startswith("socket:") for target in theirs))
        self.assertTrue(any("pidfd" in target for target in theirs))
        for server in (first, second):
            self.assertEqual(fds_of(server.pid or 0) & theirs, set(), server.name)

    def test_a_forked_childs_crash_is_reported_with_its_output_and_code(self) -> None:
        self.start_server(Sleeper()).stop()
        for code, text in ((3, "exited with code 3"), (-signal.SIGSEGV, "killed by SIGSEGV")):
            with self.subTest(code), self.assertRaises(ChildCrashedError) as caught:
                CrashBeforeReady(code=code).start()
            error = caught.exception
            self.assertEqual(error.returncode, code)
            self.assertIn(text, str(error))
            self.assertIn("the disk is on fire", error.output_tail)
        # Forked, not exec'd: the zygote is the one that ran since the first start.
        self.assertIsNotNone(_launch.zygote.pid)

    def test_a_cancelled_start_leaves_no_process_and_no_descriptor(self) -> None:
        self.fresh_zygote()
        self.assertTrue(_launch.zygote.start())
        fds = open_fds()
        server = Sleeper()

        async def cancelled() -> None:
            # The new zygote is still importing: the start is cancelled while it waits.
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(server.await_start(), 0.001)

        asyncio.run(cancelled())
        # Every answer of the zygote has arrived once it has settled (answers come in order).
        self.assertTrue(_launch.zygote.settle(60))
        zygote = psutil.Process(_launch.zygote.pid)
        _, alive = psutil.wait_procs(zygote.children(), timeout=10)
        self.assertEqual(alive, [])
        self.assertFalse(server.is_running())
        # Nothing of the child kept here: its lifeline, status pipe, pidfd, exit pipe.
        self.assertEqual(open_fds(), fds)


class ZygoteDeathTest(ZygoteTestCase):
    def test_children_of_a_killed_zygote_serve_stop_and_are_reported(self) -> None:
        self.fresh_zygote()
        serving = self.start_server(Sleeper(name="serving"))
        crashing = self.start_server(Sleeper(name="crashing"))
        killed = _launch.zygote.pid
        assert killed is not None
        with self.assertLogs("mocksup._fork", logging.WARNING) as logs:
            os.kill(killed, signal.SIGKILL)
            wait_until_exited(killed)
            self.assertTrue(_launch.zygote.wait_closed(30))
        self.assertIn(f"the zygote (pid {killed}) exited", logs.output[0])
        # Its children serve on ...
        socket.create_connection(("127.0.0.1", serving.port), timeout=5).close()
        # ... a crash is seen, though its exit status was lost with the zygote ...
        os.kill(crashing.pid or 0, signal.SIGKILL)
        wait_until_exited(crashing.pid or 0)
        with self.assertRaises(ChildCrashedError) as caught:
            crashing.check_running(grace=5)
        self.assertIsNone(caught.exception.returncode)
        self.assertIn("exited (how is unknown) while serving", str(caught.exception))
        # ... a stop stops and reaps ...
        pid = serving.pid
        serving.stop()
        self.assertFalse(_running(pid or 0))
        # ... and the next start runs a new zygote.
        again = self.start_server(Sleeper(name="again"))
        self.assertNotEqual(_launch.zygote.pid, killed)
        self.assertEqual(psutil.Process(again.pid).ppid(), _launch.zygote.pid)

    def test_a_zygote_that_dies_before_its_first_fork_is_not_tried_again(self) -> None:
        self.fresh_zygote()
        self.assertTrue(_launch.zygote.start())
        # Watched from before the kill: the zygote's reader thread reports its death when
        # it sees it, which may be before the start below or after it has begun.
        with self.assertLogs("mocksup._fork", logging.WARNING) as logs:
            # Killed at once: it is still importing, it cannot have forked.
            os.kill(_launch.zygote.pid or 0, signal.SIGKILL)
            server = self.start_server(Sleeper())
            deadline = time.monotonic() + 10
            while "every child is exec'd" not in "\n".join(logs.output):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        self.assertIn("every child is exec'd", "\n".join(logs.output))
        self.assertFalse(_launch.zygote.enabled)
        self.assertEqual(psutil.Process(server.pid).ppid(), os.getpid())

    def test_a_zygote_with_a_thread_refuses_to_fork_and_is_not_asked_again(self) -> None:
        # A site customisation that starts a thread in every interpreter, the zygote's
        # included: forking it would copy one thread of two.
        folder = Path(tempfile.mkdtemp(prefix="mocksup-test-"))
        self.addCleanup(shutil.rmtree, folder)
        (folder / "sitecustomize.py").write_text(
            "import threading\n"
            "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        )
        code = (
            "import json, logging, os, psutil; from mocksup import _launch; "
            "from tests.targets import Sleeper\n"
            "logging.basicConfig()\n"
            "with Sleeper() as s:\n"
            "    first = psutil.Process(s.pid).ppid() == os.getpid()\n"
            "with Sleeper() as s:\n"
            "    second = psutil.Process(s.pid).ppid() == os.getpid()\n"
            "print(json.dumps([first, second, _launch.zygote.enabled]))"
        )
        path = os.pathsep.join([str(folder), *sys.path])
        proc = self.run_python(
            code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PYTHONPATH": path}
        )
        out, err = proc.communicate(timeout=60)
        self.assertEqual(json.loads(out), [True, True, False], err)
        self.assertIn(b"the zygote cannot fork: it runs 2 threads", err)


HARNESS = """
import json, sys
from mocksup import _launch, start_all
from tests.targets import Sleeper
servers = start_all([Sleeper(name="a"), Sleeper(name="b")])
print(json.dumps({"zygote": _launch.zygote.pid, **{n: s.pid for n, s in servers.items()}}))
sys.stdout.flush()
sys.stdin.read()
"""


class LeftoverTest(ZygoteTestCase):
    def test_the_sweep_finds_the_zygote_and_its_children(self) -> None:
        # Stopped, they cannot act on their lifelines when the harness dies: leftovers.
        harness = self.run_python(
            HARNESS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"MOCKSUP_ZYGOTE": "1"},
        )
        assert harness.stdout is not None
        pids: dict[str, int] = json.loads(harness.stdout.readline())
        processes = [psutil.Process(pid) for pid in pids.values()]
        self.addCleanup(_kill_all, processes)
        for name in ("a", "b"):
            self.assertEqual(processes[list(pids).index(name)].ppid(), pids["zygote"])
        for process in processes:
            process.suspend()
        harness.kill()
        harness.wait(10)
        self.addCleanup(setattr, _reap, "_swept", _reap._swept)
        _reap._swept = False
        self.assertGreaterEqual(_reap.sweep_leftovers(), 3)
        _, alive = psutil.wait_procs(processes, timeout=10)
        self.assertEqual([p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [])


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (an orphan's zombie waits for an init that may never reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue


class SettingTest(ProcessTestCase):
    def test_the_setting_is_read_and_bad_values_said(self) -> None:
        on = _fork.enabled_from_env({})
        self.assertEqual(on, os.uname().sysname == "Linux")
        self.assertFalse(_fork.enabled_from_env({"MOCKSUP_ZYGOTE": "0"}))
        self.assertEqual(_fork.enabled_from_env({"MOCKSUP_ZYGOTE": " 1 "}), on)
        with self.assertLogs("mocksup._fork", logging.WARNING) as logs:
            self.assertEqual(_fork.enabled_from_env({"MOCKSUP_ZYGOTE": "yes"}), on)
        self.assertIn("MOCKSUP_ZYGOTE='yes' is neither 0 nor 1", logs.output[0])

    def test_off_every_child_is_execd_and_no_zygote_runs(self) -> None:
        code = (
            "import json, os, psutil; from mocksup import _launch; "
            "from tests.targets import Sleeper\n"
            "with Sleeper() as s:\n"
            "    print(json.dumps([psutil.Process(s.pid).ppid() == os.getpid(), "
            "_launch.zygote.pid]))"
        )
        proc = self.run_python(code, stdout=subprocess.PIPE, env={"MOCKSUP_ZYGOTE": "0"})
        out, _ = proc.communicate(timeout=60)
        self.assertEqual(json.loads(out), [True, None])


class TitleTest(ZygoteTestCase):
    def test_children_show_their_name_and_class_and_keep_their_markers(self) -> None:
        forked = self.start_server(Sleeper(name="forked"))
        execd = self.start_server(EnvEcho(name="execd", env={"MOCKSUP_TEST_VALUE": "x"}))
        for server, kind in ((forked, "Sleeper"), (execd, "EnvEcho")):
            process = psutil.Process(server.pid)
            self.assertEqual(" ".join(process.cmdline()), f"mocksup {server.name} ({kind})")
            self.assertEqual(process.name(), f"mocksup {server.name}"[:15].rstrip())
            # Written over its command line only: the environment after it is intact.
            self.assertEqual(process.environ()[_reap.OWNER_ENV], _reap.owner_marker())
        ps = subprocess.run(
            ["ps", "-o", "args=", "-p", str(forked.pid)],
            capture_output=True,
            text=True,
            check=False,
        )
        if ps.returncode == 0:
            self.assertEqual(ps.stdout.strip(), "mocksup forked (Sleeper)")

    def test_a_long_name_is_cut_to_the_room_there_is(self) -> None:
        server = self.start_server(Sleeper(name="n" * 64))
        shown = " ".join(psutil.Process(server.pid).cmdline())
        self.assertTrue(shown.startswith("mocksup nnnn"), shown)
        self.assertLessEqual(
            len(shown), len(Path(f"/proc/{_launch.zygote.pid}/cmdline").read_bytes())
        )


if __name__ == "__main__":
    unittest.main()
