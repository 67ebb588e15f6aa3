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
        #: The other data-parallel ranks' caches: they are reset with this one.
        self.followers: list[PrefixCache] = []

    def _hashes(self, tokens: list[int], parent: int = 0, start: int = 0) -> list[int]:
        # The chained hashes of the full blocks of tokens[start:], after ``parent``.
        size = self.block_size
        hashes: list[int] = []
        for first in range(start, len(tokens) - size + 1, size):
            parent = hash((parent, *tokens[first : first + size]))
            hashes.append(parent)
        return hashes

    def admit(self, prompt: list[int]) -> tuple[int, list[int]]:
        """Look the prompt up and cache its blocks.

        :returns: how many of its tokens hit, and its block hashes (for :meth:`finish`).
        """
        if not self.enabled or len(prompt) < self.block_size:
            return 0, []
        hashes = self._hashes(prompt)
        hits = 0
        with self._lock:
            blocks = self._blocks
            for digest in hashes:
                if digest not in blocks:
                    break
                hits += 1
            self._store(hashes)
        # The last prompt token is always computed: hits stop at the block before it.
        size = self.block_size
        return min(hits * size, (len(prompt) - 1) // size * size), hashes

    def finish(self, prompt_hashes: list[int], prompt: list[int], output: list[int]) -> None:
        """Cache the full blocks of a finished sequence (the prompt, whose block hashes
        :meth:`admit` gave, then the output)."""
        if not self.enabled or len(prompt) + len(output) < self.block_size:
            return
        done = len(prompt_hashes) * self.block_size
        tail = prompt[done:] + output
        parent = prompt_hashes[-1] if prompt_hashes else 0
        hashes = prompt_hashes + self._hashes(tail, parent)
        with self._lock:
            self._store(hashes)

    def _store(self, hashes: list[int]) -> None:
        blocks = self._blocks
        for digest in hashes:
            if digest in blocks:
                blocks.move_to_end(digest)
            else:
                blocks[digest] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)

    def reset(self) -> None:
        """Forget every cached block (``/reset_prefix_cache``, sleep)."""
        with self._lock:
            self._blocks.clear()
        for follower in self.followers:
            follower.reset()
