"""MockOTLPCollector: the settings and the endpoints.

The child serves OTLP/HTTP and the control API on ``port`` and OTLP/gRPC on ``grpc_port``
(:class:`~mocksup.otlp._serve.CollectorServing`, which serves plain settings as well). The
query methods come from :class:`~mocksup.otlp.client.CollectorQueries`, which a
:class:`~mocksup.otlp.client.CollectorClient` shares for collectors other processes run.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mocksup.base import MockServerBase
from mocksup.otlp._modes import Compat
from mocksup.otlp._serve import CollectorServing
from mocksup.otlp.client import CollectorQueries

__all__ = ("CORSConfig", "MockOTLPCollector")

_MIB = 1024 * 1024


class CORSConfig(BaseModel):
    """CORS for browser exporters, as the Collector's ``cors:`` setting configures it.

    :param allowed_origins: origins allowed; one ``*`` in an entry matches any text
        (``"http://*.example.com"``), ``"*"`` alone any origin. Credentials are allowed, so
        browsers refuse ``"*"``: list the origins or use ``"http://*"``.
    :param allowed_headers: request headers allowed besides the safelisted ones (when empty:
        ``Accept``, ``Content-Type``, ``X-Requested-With``); ``"*"`` allows any.
    :param exposed_headers: response headers a browser script may read.
    :param max_age: seconds a browser may cache a preflight answer (0: not sent).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_origins: list[str] = Field(default_factory=list)
    allowed_headers: list[str] = Field(default_factory=list)
    exposed_headers: list[str] = Field(default_factory=list)
    max_age: int = 0


class MockOTLPCollector(CollectorServing, CollectorQueries, MockServerBase):
    """An OTLP/HTTP and OTLP/gRPC receiver for traces, metrics and logs that tests query.

    Default ports: the well-known 4318 (OTLP/HTTP) and 4317 (OTLP/gRPC), as a real collector
    uses them; ``0`` (for either port) picks a free one, as :func:`mocksup.start_all`, the
    pytest fixtures and ``mocksup up --otlp-port 0`` do. ``grpc_port=None`` switches gRPC off.
    ``compat`` chooses whose answers it gives where the OTLP specification leaves room: the
    OpenTelemetry Collector's (the default) or the specification's; the limits left at
    ``None`` take that mode's defaults. Every exported item is kept until :meth:`clear` (or
    the ``max_items``/``max_stored_bytes`` caps, past which items are counted as dropped in
    :meth:`stats`, never lost silently).
    """

    default_name: ClassVar[str] = "otlp"
    _serve_settings: ClassVar[str | None] = "mocksup.otlp._serve:serve_settings"

    port: int = Field(4318, ge=0, le=65535, description="OTLP/HTTP and control API port.")
    grpc_port: int | None = Field(
        4317, ge=0, le=65535, description="OTLP/gRPC port; None switches gRPC off."
    )
    compat: Compat = Field(
        "collector",
        description='Answer as the OpenTelemetry Collector ("collector") or as '
        'the OTLP specification ("spec") where they differ.',
    )
    max_body_size: int | None = Field(
        None,
        gt=0,
        description="HTTP body limit in bytes, as sent and inflated (None: 20 MiB, or 64 MiB "
        'with compat="spec").',
    )
    grpc_max_message: int | None = Field(
        None,
        gt=0,
        description='gRPC receive limit in bytes (None: 4 MiB, or 64 MiB with compat="spec").',
    )
    max_request_objects: int = Field(
        1_000_000,
        gt=0,
        description="The most protobuf messages, or JSON objects and arrays, one request may hold.",
    )
    max_items: int | None = Field(
        1_000_000, ge=0, description="Items kept, all signals together; None for no cap."
    )
    max_stored_bytes: int | None = Field(
        512 * _MIB, ge=0, description="Bytes of stored telemetry kept; None for no cap."
    )
    max_requests: int = Field(10_000, ge=0, description="Request records kept (newest).")
    journal_credentials: bool = Field(
        False,
        description="Keep credentials (``authorization``, API-key and cookie headers, bearer "
        "values) in the request records instead of ``[redacted]``.",
    )
    grpc_workers: int = Field(
        16, gt=0, description="Threads for gRPC exports while faults are pending."
    )
    max_connections: int = Field(
        256,
        gt=0,
        description="HTTP connections, and gRPC connections, served at once; more wait in "
        "the listen backlog.",
    )
    cors: CORSConfig | None = Field(None, description="CORS for the OTLP/HTTP routes.")
    journals: dict[str, str] = Field(
        default_factory=dict,
        description="Request journals the viewer shows: mock name -> the mock's base URL "
        "(a vLLM mock with journal_viewer adds itself).",
    )

    @field_validator("journals")
    @classmethod
    def _valid_journals(cls, journals: dict[str, str]) -> dict[str, str]:
        from mocksup.otlp._ui import check_journal

        return {name: check_journal(name, url) for name, url in journals.items()}

    # -- the parent side: endpoints --------------------------------------------------------

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base URL (:attr:`url`); signals post to ``/v1/...``."""
        return self.url

    @property
    def grpc_endpoint(self) -> str | None:
        """The OTLP/gRPC endpoint (``http://127.0.0.1:4317``), ``None`` with gRPC off."""
        from mocksup.serving import url_host

        if self.grpc_port is None:
            return None
        return f"http://{url_host(self.host)}:{self.grpc_port}"

    def exporter_env(self, protocol: str = "http/protobuf") -> dict[str, str]:
        """The environment that points an OpenTelemetry SDK at this collector.

        :param protocol: ``"http/protobuf"``, ``"http/json"`` or ``"grpc"``.
        :raises ValueError: an unknown protocol, or ``"grpc"`` with gRPC off.
        """
        from mocksup.otlp.records import exporter_env

        if protocol == "grpc":
            if self.grpc_endpoint is None:
                raise ValueError(f"collector {self.name!r} has gRPC switched off")
            return exporter_env(self.grpc_endpoint, protocol)
        return exporter_env(self.http_endpoint, protocol)

    @property
    def ui_url(self) -> str:
        """The web viewer's URL (``/mocksup/ui/`` on the HTTP port)."""
        return self.url + "/mocksup/ui/"

    def endpoints(self) -> dict[str, str]:
        """``otlp_http``, ``otlp_grpc`` (unless switched off) and ``ui``, the viewer."""
        urls = {"otlp_http": self.http_endpoint}
        if self.grpc_endpoint is not None:
            urls["otlp_grpc"] = self.grpc_endpoint
        urls["ui"] = self.ui_url
        return urls

    def client_env(self) -> dict[str, str]:
        return self.exporter_env()

    def summary(self) -> str:
        """One line on what arrived, for ``mocksup up``'s live display."""
        stats = self.stats()
        items = stats["items"]
        return (
            f"{items['traces']} spans, {stats['metric_points']} metric points, "
            f"{items['logs']} logs "
            f"in {stats['requests']} requests ({stats['rejected_requests']} rejected)"
        )
