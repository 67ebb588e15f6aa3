"""Request ids as vLLM 0.33 makes them: 16 hex characters (64 random bits)."""

from __future__ import annotations

import random
import uuid

__all__ = ["random_hex", "uuid4_hex"]

_ids = random.Random()  # seeded from os.urandom once; ids need uniqueness, not secrecy


def random_hex() -> str:
    """16 hex characters, as vLLM's ``random_uuid()``, without a getrandom() call each."""
    return f"{_ids.getrandbits(64):016x}"


def uuid4_hex() -> str:
    """A uuid4 in hex (32 characters): the ``X-Request-Id`` vLLM's middleware makes up."""
    return uuid.UUID(int=_ids.getrandbits(128), version=4).hex
