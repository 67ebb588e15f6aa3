"""Request ids as vLLM makes them: uuid4 hex."""

from __future__ import annotations

import random
import uuid

__all__ = ["random_hex"]

_ids = random.Random()  # seeded from os.urandom once; ids need uniqueness, not secrecy


def random_hex() -> str:
    """A uuid4 in hex, as vLLM's ``random_uuid()``, without a getrandom() call per request."""
    return uuid.UUID(int=_ids.getrandbits(128), version=4).hex
