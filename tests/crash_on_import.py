"""A mock whose module cannot be imported in the child (a broken dependency, say)."""

from __future__ import annotations

import os

from mocksup import MockServerBase, ServeContext

if os.environ.get("MOCKSUP_OWNER"):
    # Only in the child: the parent imports this module fine, as a test's would.
    raise ImportError("No module named 'definitely_missing_dependency'")


class BrokenImport(MockServerBase):
    def serve(self, ctx: ServeContext) -> None:  # pragma: no cover - never reached
        ctx.ready(port=0)
