"""The vLLM mock: an OpenAI-compatible server with vLLM's wire format, metrics and spans."""

from __future__ import annotations

from mocksup.vllm.server import MockVLLMServer
from mocksup.vllm.settings import FaultKind, Faults, Latency, ScriptReply, ScriptRule, ToolCall
from mocksup.vllm.tokenizer import TOKENIZER, MockTokenizer

__all__ = (
    "TOKENIZER",
    "FaultKind",
    "Faults",
    "Latency",
    "MockTokenizer",
    "MockVLLMServer",
    "ScriptReply",
    "ScriptRule",
    "ToolCall",
)
