"""mocksup: mock servers in child processes for end-to-end telemetry tests of LLM apps.

Each mock server (a :class:`MockServerBase` subclass) runs in its own child process; the
harness starts them concurrently, waits until each serves and stops and reaps them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mocksup._context import ServeContext
from mocksup._lazy import lazy_attributes
from mocksup.errors import (
    ChildCrashedError,
    ChildSuspendedError,
    ControlAPIError,
    MockServerError,
    PortInUseError,
    ReadyError,
    ServeError,
    StartupTimeoutError,
    StopError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from mocksup.base import MockServerBase
    from mocksup.harness import (
        Endpoint,
        MockServerConfig,
        MockServers,
        start_all,
        start_mock_servers_async,
        start_vllm_fleet,
        stop_all,
        stop_mock_servers,
    )
    from mocksup.otlp import MockOTLPCollector
    from mocksup.process import ProcessServer
    from mocksup.redis import MockRedisServer
    from mocksup.remote import attach
    from mocksup.vllm import MockVLLMServer

__version__ = "0.1.0"

__all__ = (
    "ChildCrashedError",
    "ChildSuspendedError",
    "ControlAPIError",
    "Endpoint",
    "MockOTLPCollector",
    "MockRedisServer",
    "MockServerBase",
    "MockServerConfig",
    "MockServerError",
    "MockServers",
    "MockVLLMServer",
    "PortInUseError",
    "ProcessServer",
    "ReadyError",
    "ServeContext",
    "ServeError",
    "StartupTimeoutError",
    "StopError",
    "WaitTimeoutError",
    "__version__",
    "attach",
    "start_all",
    "start_mock_servers_async",
    "start_vllm_fleet",
    "stop_all",
    "stop_mock_servers",
)

# Imported on first use: every child process imports this package, and should pay only for
# what it uses: a child serving one mock needs neither the others nor the harness (nor
# pydantic before it unpickles its server).
_LAZY = {
    "attach": "mocksup.remote",
    "MockServerBase": "mocksup.base",
    "Endpoint": "mocksup.harness",
    "MockServerConfig": "mocksup.harness",
    "MockServers": "mocksup.harness",
    "start_all": "mocksup.harness",
    "start_mock_servers_async": "mocksup.harness",
    "start_vllm_fleet": "mocksup.harness",
    "stop_all": "mocksup.harness",
    "stop_mock_servers": "mocksup.harness",
    "MockOTLPCollector": "mocksup.otlp",
    "MockRedisServer": "mocksup.redis",
    "ProcessServer": "mocksup.process",
    "MockVLLMServer": "mocksup.vllm",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


logging.getLogger(__name__).addHandler(logging.NullHandler())
