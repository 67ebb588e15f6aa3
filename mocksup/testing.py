"""unittest helpers: servers started once per module or class, and accessors per server.

A test module lists its servers and starts them once::

    MOCK_SERVERS = [
        MockServerConfig(name="otlp", server_class=MockOTLPCollector,
                         init_kwargs={"port": 0, "grpc_port": 0}),
        MockServerConfig(name="vllm", server_class=MockVLLMServer,
                         init_kwargs={"port": 0,
                                      "otlp_traces_endpoint": Endpoint("otlp", "otlp_grpc")}),
    ]

    def setUpModule() -> None:
        start_module_servers(MOCK_SERVERS)

    def tearDownModule() -> None:
        stop_module_servers()

    class ChatTest(MockServerTestCase):
        def test_chat(self) -> None:
            ...  # self.vllm.base_url, self.collector.wait_for_spans("llm_request")

Starting and stopping is :func:`mocksup.start_all`'s; this module only decides when, and
finds the servers again from the tests.
"""

from __future__ import annotations

import os
import sys
import tempfile
import unittest
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from mocksup.base import MockServerBase
from mocksup.harness import ConfigLike, MockServers, start_all

if TYPE_CHECKING:
    from mocksup.otlp import MockOTLPCollector
    from mocksup.vllm import MockVLLMServer

    _TestCaseBase = unittest.TestCase
else:
    # At run time the mixin derives from object so that it sits in front of either
    # TestCase kind in the MRO; mypy checks it as a TestCase so ``super()`` calls type-check.
    _TestCaseBase = object

__all__ = (
    "AsyncMockServerTestCase",
    "MockServerTestCase",
    "MockServersMixin",
    "module_servers",
    "start_module_servers",
    "stop_module_servers",
)

_S = TypeVar("_S", bound=MockServerBase)


# -- once per module -----------------------------------------------------------------------

_by_module: dict[str, MockServers] = {}


def _caller_module() -> str:
    # Two frames up: the caller of the public helper, i.e. setUpModule's module.
    return str(sys._getframe(2).f_globals.get("__name__", "__main__"))


def start_module_servers(
    configs: Iterable[ConfigLike], *, module: str | None = None
) -> MockServers:
    """Start the servers of a test module; call it from ``setUpModule``.

    They are registered for :func:`stop_module_servers` and, through
    :func:`unittest.addModuleCleanup`, stopped after the module under ``python -m unittest``
    even when ``setUpModule`` fails later on. pytest does not run unittest's module
    cleanups, so call :func:`stop_module_servers` from ``tearDownModule`` as well (a second
    stop does nothing). Test classes of the module (:class:`MockServersMixin`) find them.

    :param configs: ``MockServerConfig`` entries or server models, as
        :func:`mocksup.start_all` takes them.
    :param module: the module's ``__name__``; the calling module by default.
    :raises ValueError: duplicate names, or an :class:`~mocksup.Endpoint` of no server listed.
    :raises MockServerError: a server failed to start (the others were stopped).
    :raises RuntimeError: the module's servers are running already.
    """
    name = module or _caller_module()
    if name in _by_module:
        raise RuntimeError(f"the mock servers of {name} are running already")
    servers = start_all(configs)
    _by_module[name] = servers
    unittest.addModuleCleanup(_stop_module, name)
    return servers


def stop_module_servers(module: str | None = None, timeout: float | None = None) -> None:
    """Stop the servers :func:`start_module_servers` started for ``module``; idempotent.

    :param module: the module's ``__name__``; the calling module by default.
    :param timeout: each server's stop budget; its ``stop_timeout`` by default.
    """
    _stop_module(module or _caller_module(), timeout)


def _stop_module(name: str, timeout: float | None = None) -> None:
    servers = _by_module.pop(name, None)
    if servers is not None:
        servers.stop(timeout)


def module_servers(module: str) -> MockServers:
    """The servers started for ``module`` by :func:`start_module_servers`.

    :raises LookupError: none are running for it.
    """
    try:
        return _by_module[module]
    except KeyError:
        raise LookupError(
            f"no mock servers run for {module}: call start_module_servers(...) in its "
            "setUpModule, or set mock_server_configs on the test class"
        ) from None


# -- accessors on test classes ---------------------------------------------------------------


class _ServerOf(Generic[_S]):
    """The one server of a class among a test class's servers, on the class and its tests."""

    def __init__(self, module: str, class_name: str) -> None:
        self._module = module
        self._class_name = class_name

    def __get__(self, obj: object | None, owner: type[object]) -> _S:
        import importlib

        kind: type[_S] = getattr(importlib.import_module(self._module), self._class_name)
        return _servers_of(owner).server_of(kind)

    def __repr__(self) -> str:
        return f"<the only {self._class_name}>"


class _ServersOf:
    """The servers of a test class by name, on the class and its tests."""

    def __get__(self, obj: object | None, owner: type[object]) -> MockServers:
        return _servers_of(owner)

    def __repr__(self) -> str:
        return "<the servers by name>"


def _servers_of(cls: type[object]) -> MockServers:
    own: MockServers | None = getattr(cls, "_mocksup_class_servers", None)
    return own if own is not None else module_servers(cls.__module__)


class MockServersMixin(_TestCaseBase):
    """Accessors for a test class's mock servers; put it before the TestCase class.

    The servers are the class's own when ``mock_server_configs`` is set (started once in
    ``setUpClass``, stopped by a class cleanup), else its module's (see
    :func:`start_module_servers`). ``servers`` maps names to servers; ``collector`` and
    ``vllm`` are the only :class:`~mocksup.MockOTLPCollector` and
    :class:`~mocksup.MockVLLMServer`; all three work on the class (in ``setUpClass``) and on
    its tests. Works with :class:`unittest.TestCase` and
    :class:`unittest.IsolatedAsyncioTestCase` alike.
    """

    #: Servers of this class alone, started in ``setUpClass``; empty: the module's.
    mock_server_configs: ClassVar[Sequence[ConfigLike]] = ()
    #: Call ``clear()`` on every server that has it before each test (the collector forgets
    #: its items, vLLM its journal; vLLM's metric counters keep counting).
    clear_before_each_test: ClassVar[bool] = True
    #: Folder where a failing test writes each collector's dump (OTLP JSON lines), as an
    #: artifact; ``None``: ``$MOCKSUP_DUMP_DIR``, and no dump when that is unset too.
    dump_dir: ClassVar[str | Path | None] = None
    _mocksup_class_servers: ClassVar[MockServers | None] = None

    #: The servers by name: ``self.servers["otlp"]`` (``cls.servers`` in ``setUpClass``).
    servers: ClassVar[_ServersOf] = _ServersOf()
    #: The only :class:`~mocksup.MockOTLPCollector`.
    collector: ClassVar[_ServerOf[MockOTLPCollector]] = _ServerOf(
        "mocksup.otlp", "MockOTLPCollector"
    )
    #: The only :class:`~mocksup.MockVLLMServer`.
    vllm: ClassVar[_ServerOf[MockVLLMServer]] = _ServerOf("mocksup.vllm", "MockVLLMServer")

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if cls.mock_server_configs:
            servers = start_all(cls.mock_server_configs)
            cls.addClassCleanup(cls._stop_class_servers)
            cls._mocksup_class_servers = servers

    @classmethod
    def _stop_class_servers(cls) -> None:
        servers, cls._mocksup_class_servers = cls._mocksup_class_servers, None
        if servers is not None:
            servers.stop()

    #: Write an HTML report of what each collector received when a test fails
    #: (:mod:`mocksup.otlp.report`), into ``$MOCKSUP_REPORT_DIR`` or a ``mocksup-reports``
    #: folder of the temporary directory; its path is added to the failure and printed.
    html_report_on_failure: ClassVar[bool] = True

    def setUp(self) -> None:
        super().setUp()
        if self.clear_before_each_test:
            self.servers.clear()

    def run(self, result: unittest.TestResult | None = None) -> unittest.TestResult | None:
        """Run the test; when it failed, write its collectors' dumps (``dump_dir``) and HTML
        report (:attr:`html_report_on_failure`) before the next test clears the servers."""
        # The outcome is known only here, after the test and before the next one clears:
        # the result is watched for a failure (pytest passes its own kind of result).
        if result is None:
            return super().run(result)
        watch = _FailureWatch(result)
        super().run(watch)  # type: ignore[arg-type]
        if watch.failed:
            self._write_artifacts(result)
        return result

    def _write_artifacts(self, result: unittest.TestResult) -> None:
        from mocksup._artifacts import dump_dir, write_dumps

        try:
            servers = _servers_of(type(self))
        except LookupError:
            return
        folder = dump_dir(self.dump_dir)
        if folder is not None:
            for path in write_dumps(servers.values(), folder, self.id()):
                sys.stderr.write(f"mocksup: dump of {self.id()}: {path}\n")
        if self.html_report_on_failure:
            self._write_html_report(result, servers)

    def _write_html_report(self, result: unittest.TestResult, servers: MockServers) -> None:
        from mocksup.otlp.report import REPORT_DIR_ENV, write_test_report

        folder = os.environ.get(REPORT_DIR_ENV) or os.path.join(
            tempfile.gettempdir(), "mocksup-reports"
        )
        for path in write_test_report(servers.values(), self.id(), folder):
            note = f"mocksup HTML report: {path}"
            sys.stderr.write(f"\n{note}\n")
            _add_to_failure(result, self, note)

    @classmethod
    def server_of(cls, kind: type[_S]) -> _S:
        """The only server that is a ``kind`` (a :class:`~mocksup.MockServerBase` subclass).

        :raises LookupError: there is none, or more than one (then look it up by name).
        """
        return _servers_of(cls).server_of(kind)


class _FailureWatch:
    """A test result that notes whether the test failed, passing everything on."""

    def __init__(self, result: object) -> None:
        self._result = result
        self.failed = False
        # Only a result that reports subtests gets them (unittest looks for the method).
        if hasattr(result, "addSubTest"):
            self.addSubTest = self._add_sub_test

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)

    def addError(self, test: object, err: object) -> None:
        self.failed = True
        self._result.addError(test, err)  # type: ignore[attr-defined]

    def addFailure(self, test: object, err: object) -> None:
        self.failed = True
        self._result.addFailure(test, err)  # type: ignore[attr-defined]

    def addUnexpectedSuccess(self, test: object) -> None:
        self.failed = True
        self._result.addUnexpectedSuccess(test)  # type: ignore[attr-defined]

    def _add_sub_test(self, test: object, subtest: object, err: object) -> None:
        if err is not None:
            self.failed = True
        self._result.addSubTest(test, subtest, err)  # type: ignore[attr-defined]


def _add_to_failure(result: unittest.TestResult, test: object, note: str) -> None:
    """Append ``note`` to the failure text ``result`` holds for ``test``."""
    for entries in (getattr(result, "failures", []), getattr(result, "errors", [])):
        for index, (failed, text) in enumerate(entries):
            if failed is test:
                entries[index] = (failed, f"{text}\n{note}\n")
                return


class MockServerTestCase(MockServersMixin, unittest.TestCase):
    """A :class:`unittest.TestCase` with :class:`MockServersMixin`'s accessors."""


class AsyncMockServerTestCase(MockServersMixin, unittest.IsolatedAsyncioTestCase):
    """A :class:`unittest.IsolatedAsyncioTestCase` with :class:`MockServersMixin`'s accessors."""
