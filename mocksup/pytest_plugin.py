"""The pytest plugin (registered through the ``pytest11`` entry point as ``mocksup``).

Session-scoped servers, started on first use and stopped at the end of the session; a
fixture per default server, cleared before each test; each server's log attached to the
report of a failing test that used them, with an HTML report of what each collector
received (:mod:`mocksup.otlp.report`; written to ``$MOCKSUP_REPORT_DIR`` or pytest's temporary
folder, its path shown in the report), and with ``--mocksup-dump-dir DIR`` (or
``$MOCKSUP_DUMP_DIR``) each collector's dump of a failing test written there as an
artifact. Under pytest-xdist every worker starts its own
servers on free ports. Choose the servers by overriding :func:`mocksup_configs` in a
``conftest.py``::

    @pytest.fixture(scope="session")
    def mocksup_configs():
        return [MockServerConfig(name="cache", server_class=MockRedisServer)]
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from mocksup.harness import MockServerConfig, MockServers, default_configs, start_all

if TYPE_CHECKING:
    from mocksup.base import MockServerBase
    from mocksup.otlp import MockOTLPCollector
    from mocksup.vllm import MockVLLMServer

__all__ = (
    "mock_servers",
    "mocksup_configs",
    "mocksup_servers",
    "otlp_collector",
    "pytest_addoption",
    "pytest_runtest_makereport",
    "vllm_server",
)

#: The fixtures whose tests get the servers' logs in their failure reports.
_FIXTURES = frozenset({"mocksup_servers", "mock_servers", "otlp_collector", "vllm_server"})
_RUNNING = pytest.StashKey[MockServers]()
_REPORTS = pytest.StashKey[Path]()
#: Lines of each server's log attached to a failing test's report.
_LOG_LINES = 200
_S = TypeVar("_S", bound="MockServerBase")
_DUMPED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """pytest's hook: adds ``--mocksup-dump-dir DIR`` (the folder of a failing test's
    dumps; default ``$MOCKSUP_DUMP_DIR``)."""
    parser.getgroup("mocksup").addoption(
        "--mocksup-dump-dir",
        metavar="DIR",
        default=None,
        help="write each collector's dump (OTLP JSON lines) of a failing test into DIR "
        "(default: $MOCKSUP_DUMP_DIR; none when unset)",
    )


@pytest.fixture(scope="session")
def mocksup_configs() -> list[MockServerConfig]:
    """The servers of the session: the OTLP collector ``otlp`` and the vLLM mock ``vllm``
    (exporting its spans to the collector) by default. Override it to choose others."""
    return default_configs()


@pytest.fixture(scope="session")
def mocksup_servers(
    mocksup_configs: list[MockServerConfig],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MockServers]:
    """The running servers of the session by name, started on first use."""
    servers = start_all(mocksup_configs)
    request.config.stash[_RUNNING] = servers
    request.config.stash[_REPORTS] = tmp_path_factory.getbasetemp() / "mocksup-reports"
    try:
        yield servers
    finally:
        del request.config.stash[_RUNNING]
        servers.stop()


@pytest.fixture
def mock_servers(mocksup_servers: MockServers) -> MockServers:
    """The session's servers, each cleared (``clear()``) before the test."""
    mocksup_servers.clear()
    return mocksup_servers


def _find(servers: MockServers, cls: type[_S], fixture: str) -> _S:
    try:
        server = servers.server_of(cls)
    except LookupError:
        pass  # failed below, out of the handler: the report shows no chained error
    else:
        server.clear()
        return server
    pytest.fail(
        f"the {fixture} fixture needs one {cls.__name__} among the session's servers "
        f"({', '.join(servers) or 'none'}); add one to mocksup_configs, or look it up by "
        "name in mock_servers",
        pytrace=False,
    )


@pytest.fixture
def otlp_collector(mocksup_servers: MockServers) -> MockOTLPCollector:
    """The session's OTLP collector, cleared before the test."""
    from mocksup.otlp import MockOTLPCollector

    return _find(mocksup_servers, MockOTLPCollector, "otlp_collector")


@pytest.fixture
def vllm_server(mocksup_servers: MockServers) -> MockVLLMServer:
    """The session's vLLM mock, its journal cleared before the test."""
    from mocksup.vllm import MockVLLMServer

    return _find(mocksup_servers, MockVLLMServer, "vllm_server")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """pytest's hook: a failing test that used the plugin's servers gets, in its report, the
    tail of each server's log and the paths of its collectors' dumps and HTML reports."""
    report = yield
    servers = item.config.stash.get(_RUNNING, None)
    if report.failed and servers is not None and _FIXTURES & set(getattr(item, "fixturenames", ())):
        for name, server in servers.items():
            tail = server.log_tail(_LOG_LINES)
            if tail:
                report.sections.append((f"mocksup {name} log ({server.log_path})", tail))
        _attach_dumps(item, report, servers)
        _attach_html_report(item, report, servers)
    return report


def _attach_dumps(item: pytest.Item, report: pytest.TestReport, servers: MockServers) -> None:
    """Write the collectors' dumps of a failing test, once (its first failing phase), and
    name the files in its report."""
    from mocksup._artifacts import dump_dir, write_dumps

    folder = dump_dir(item.config.getoption("mocksup_dump_dir", None))
    if folder is None or item.stash.get(_DUMPED, False):
        return
    item.stash[_DUMPED] = True
    written = write_dumps(servers.values(), folder, item.nodeid)
    if written:
        report.sections.append(("mocksup dumps", "\n".join(str(path) for path in written)))


def _attach_html_report(item: pytest.Item, report: pytest.TestReport, servers: MockServers) -> None:
    from mocksup.otlp.report import REPORT_DIR_ENV, write_test_report

    folder = os.environ.get(REPORT_DIR_ENV) or item.config.stash.get(_REPORTS, None)
    if folder is None:
        return
    test_id = item.nodeid if report.when == "call" else f"{item.nodeid}-{report.when}"
    for path in write_test_report(servers.values(), test_id, folder):
        report.sections.append(("mocksup HTML report", f"{path}"))
