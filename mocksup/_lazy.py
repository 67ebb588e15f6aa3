"""Package attributes loaded on first use (a module ``__getattr__``, PEP 562).

mocksup's packages are imported by every child process, which should pay only for what it
uses: a child serving one mock needs neither the others nor the harness, and the
collector's child serves before it imports its query side.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ("lazy_attributes",)


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], object]:
    """The ``__getattr__`` of ``package``: each of ``names`` imported from its module when
    first read (then kept in the package), and a public submodule imported when first
    read as an attribute, as it was when the package imported it up front."""

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            # Here: rarely needed, and not free at every child's start.
            from importlib.util import find_spec

            if (
                name.startswith("_")
                or not name.isidentifier()
                or find_spec(f"{package}.{name}") is None
            ):
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            return importlib.import_module(f"{package}.{name}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
