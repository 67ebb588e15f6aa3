"""A module whose import never ends in a child (a dependency that blocks, say)."""

from __future__ import annotations

import os
import threading

if os.environ.get("MOCKSUP_OWNER"):
    # Only in a child of mocksup's: the module stands for a slow import there.
    threading.Event().wait()
