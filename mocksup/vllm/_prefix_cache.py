"""The prefix cache vLLM keeps by default, simulated over the mock's token ids.

vLLM hashes each full block of ``block_size`` tokens together with the hash of the block
before it, and a new request reuses the KV of the longest run of leading blocks already
cached; at least one prompt token is always computed. The mock keeps the same chained
hashes (Python's tuple hash of int tokens: stable within the process) in an LRU bounded by
the KV cache's block count, so usage (``cached_tokens``), the prefix-cache metrics and the
span agree on what a repeated prefix saves. Prompt blocks are cached at admission, the
blocks a request completes with its output when it finishes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["PrefixCache"]


class PrefixCache:
    """Cached block hashes, least recently used first; thread-safe."""

    def __init__(self, block_size: int, capacity: int, *, enabled: bool = True) -> None:
        self.block_size = block_size
        self.capacity = capacity
        self.enabled = enabled
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()

    def _hashes(self, tokens: list[int]) -> list[int]:
        size = self.block_size
        hashes: list[int] = []
        parent = 0
        for start in range(0, len(tokens) - size + 1, size):
            parent = hash((parent, *tokens[start : start + size]))
            hashes.append(parent)
        return hashes

    def admit(self, prompt: list[int]) -> int:
        """Look the prompt up, cache its blocks, and return how many of its tokens hit."""
        if not self.enabled or len(prompt) < self.block_size:
            return 0
        hashes = self._hashes(prompt)
        hits = 0
        with self._lock:
            for digest in hashes:
                if digest not in self._blocks:
                    break
                hits += 1
            self._store(hashes)
        # The last prompt token is always computed: hits stop at the block before it.
        return min(hits * self.block_size, (len(prompt) - 1) // self.block_size * self.block_size)

    def finish(self, tokens: list[int]) -> None:
        """Cache the full blocks of a finished sequence (prompt and output)."""
        if self.enabled and len(tokens) >= self.block_size:
            hashes = self._hashes(tokens)
            with self._lock:
                self._store(hashes)

    def _store(self, hashes: list[int]) -> None:
        blocks = self._blocks
        for digest in hashes:
            blocks[digest] = None
            blocks.move_to_end(digest)
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)

    def reset(self) -> None:
        """Forget every cached block (``/reset_prefix_cache``, sleep)."""
        with self._lock:
            self._blocks.clear()
