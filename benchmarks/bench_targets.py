"""The child every supervisor benchmark starts: imports mocksup's dependencies, serves HTTP
(werkzeug) and gRPC, stops on SIGTERM. Run as a script for the seed and mirakuru variants,
used as a mocksup server class for mocksup's own."""

from __future__ import annotations

import signal
import sys
from typing import ClassVar

import grpc  # noqa: F401  (the import cost is part of what is measured)
import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401
import psutil  # noqa: F401
import pydantic  # noqa: F401
import werkzeug.serving  # noqa: F401

from mocksup import MockServerBase, ServeContext
from mocksup.serving import bind_tcp, grpc_server, serve_wsgi

DEPS = (
    "grpc",
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    "psutil",
    "pydantic",
    "werkzeug.serving",
)


def app(environ: object, start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])  # type: ignore[operator]
    return [b"ok"]


class BenchServer(MockServerBase):
    """HTTP on ``port`` and gRPC on ``grpc_port``, both free ports by default."""

    default_name: ClassVar[str] = "bench"
    grpc_port: int = 0

    def serve(self, ctx: ServeContext) -> None:
        grpc_srv, grpc_port = grpc_server(self.host, self.grpc_port)
        grpc_srv.start()
        sock = bind_tcp(self.host, self.port)
        with serve_wsgi(app, sock) as http:
            ctx.ready(port=http.port, grpc_port=grpc_port)
            ctx.wait()
        grpc_srv.stop(0).wait()


def main(port: int) -> None:
    """The same server as a plain script on a fixed port, for the seed and mirakuru."""
    # Block SIGTERM in every thread (gRPC's included) and take it synchronously here.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    grpc_srv, _ = grpc_server("127.0.0.1", 0)
    grpc_srv.start()
    with serve_wsgi(app, bind_tcp("127.0.0.1", port)):
        signal.sigwait({signal.SIGTERM})
    grpc_srv.stop(0).wait()


if __name__ == "__main__":
    main(int(sys.argv[1]))
