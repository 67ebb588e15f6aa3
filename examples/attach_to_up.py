"""A harness that drives mocks it did not start: ``mocksup up`` runs as a service (here a
separate process; in CI, a container or a Kubernetes Service), and the harness attaches to
it with :func:`mocksup.attach`, getting the same typed handles as for mocks it starts.

Run it from the repository's root: ``python examples/attach_to_up.py``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import openai

import mocksup
from mocksup.remote import NotOwnedError


def check(ready_file: Path) -> None:
    mocks = mocksup.attach(ready_file, wait=60)  # waits for mocksup up to be ready
    mocks.clear()  # a clean start, as between two tests
    client = openai.OpenAI(base_url=mocks.vllm.base_url, api_key="EMPTY")
    reply = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    (request,) = mocks.vllm.wait_for_requests(count=1, path="/v1/chat/completions")
    (span,) = mocks.collector.wait_for_spans("llm_request", timeout=10)
    assert reply.usage is not None
    tokens = reply.usage.completion_tokens
    assert span.attributes["gen_ai.usage.completion_tokens"] == tokens
    print(f"vllm answered {request.status} with {tokens} tokens")
    print(f"collector got {span.name!r} in trace {span.trace_id}")
    try:
        mocks.stop()
    except NotOwnedError as error:
        print(f"stop refused: {error.where.split(';')[0]}")


def main() -> None:
    ready_file = Path(tempfile.mkdtemp()) / "ready.json"
    service = subprocess.Popen(
        [sys.executable, "-m", "mocksup", "up", "--otlp-port", "0", "--otlp-grpc-port", "0",
         "--vllm-port", "0", "--quiet", "--ready-file", str(ready_file)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        check(ready_file)
    finally:
        service.terminate()  # the service's owner stops it
        service.wait(30)
    print("OK")


if __name__ == "__main__":
    main()
