"""The vLLM mock: an OpenAI-compatible server with vLLM 0.33's wire format, metrics and spans.

Public: :class:`MockVLLMServer` (settings, and the child's server), :class:`VLLMClient` and
:class:`VLLMQueries` (the parent-side queries), the run-time settings (:class:`Latency`,
:class:`Faults`, :class:`ScriptRule`...) and the tokenizer. Modules starting with ``_`` are
the server's internals (see ``docs/architecture.rst``).
"""

from __future__ import annotations

from mocksup.vllm.client import JournalEntry, VLLMClient, VLLMQueries
from mocksup.vllm.server import VLLM_VERSION, MockVLLMServer
from mocksup.vllm.settings import FaultKind, Faults, Latency, ScriptReply, ScriptRule, ToolCall
from mocksup.vllm.tokenizer import TOKENIZER, MockTokenizer

__all__ = (
    "TOKENIZER",
    "VLLM_VERSION",
    "FaultKind",
    "Faults",
    "JournalEntry",
    "Latency",
    "MockTokenizer",
    "MockVLLMServer",
    "ScriptReply",
    "ScriptRule",
    "ToolCall",
    "VLLMClient",
    "VLLMQueries",
)
