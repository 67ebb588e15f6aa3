"""The public API: every public module's ``__all__`` is a tuple and honest both ways.

Every name listed exists; every public name a module defines is listed (or renamed with a
leading underscore); a module lists names it imports only from mocksup's private modules
(a facade over its internals), a package from anywhere. The
types of the API are pinned by ``tests/typing_api.py``, which mypy checks and nothing runs.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import unittest
from types import ModuleType

import mocksup

#: Modules of other areas whose ``__all__`` is still a list, for their owners to turn into a
#: tuple (the names are held honest all the same); a stale entry does no harm.
LISTS_PENDING = frozenset(
    {
        "mocksup.otlp.collector",
        "mocksup.otlp.faults",
        "mocksup.otlp.items",
        "mocksup.otlp.metrics",
        "mocksup.otlp.records",
        "mocksup.vllm.client",
        "mocksup.vllm.server",
        "mocksup.vllm.settings",
        "mocksup.vllm.tokenizer",
    }
)

#: Public names other areas' modules define without listing them, recorded so that no new
#: one slips in; each owner lists them or renames them private, and deletes the entry.
UNLISTED_PENDING = {
    "mocksup.otlp.faults": {"Signal", "Transport"},
    "mocksup.vllm.settings": {"MAX_DELAY"},
    "mocksup.vllm.tokenizer": {"SPECIAL"},
}


def public_modules() -> list[str]:
    """``mocksup`` and each of its modules with no ``_`` part in its dotted name."""
    found = ["mocksup"]
    for info in pkgutil.walk_packages(mocksup.__path__, "mocksup."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return found


def _private(module_name: str) -> bool:
    parts = module_name.split(".")
    return parts[0] == "mocksup" and any(part.startswith("_") for part in parts)


def defined_names(module: ModuleType) -> set[str]:
    """The names a module's own top-level code binds (not those it imports), outside
    ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return names


class AllTest(unittest.TestCase):
    def test_every_public_module_is_walked(self) -> None:
        modules = public_modules()
        for name in ("mocksup.base", "mocksup.errors", "mocksup.harness", "mocksup.testing"):
            self.assertIn(name, modules)
        self.assertNotIn("mocksup._process", modules)

    def test_all_is_a_tuple_and_honest_both_ways(self) -> None:
        for name in public_modules():
            with self.subTest(name):
                module = importlib.import_module(name)
                listed = module.__all__
                if name not in LISTS_PENDING:
                    self.assertIsInstance(listed, tuple)
                self.assertEqual(len(set(listed)), len(listed), "a name listed twice")
                for item in listed:
                    self.assertTrue(hasattr(module, item), f"{item} is listed but missing")
                defined = defined_names(module)
                public = {n for n in defined if not n.startswith("_")}
                unlisted = public - set(listed) - UNLISTED_PENDING.get(name, set())
                self.assertEqual(sorted(unlisted), [], "public but not listed")
                if not hasattr(module, "__path__"):
                    # A module re-exports only what a private module of mocksup defines (a
                    # facade over its internals); a package may re-export anything.
                    imported = [
                        item
                        for item in set(listed) - defined
                        if not _private(getattr(getattr(module, item), "__module__", ""))
                    ]
                    self.assertEqual(sorted(imported), [], "listed but defined elsewhere")

    def test_the_facade_is_sorted_and_lazy_names_resolve(self) -> None:
        self.assertEqual(sorted(mocksup.__all__), list(mocksup.__all__))
        for name in ("MockOTLPCollector", "MockRedisServer", "MockVLLMServer"):
            self.assertIs(getattr(mocksup, name).__name__, name)
        with self.assertRaisesRegex(AttributeError, "no attribute 'Nope'"):
            mocksup.Nope  # noqa: B018


if __name__ == "__main__":
    unittest.main()
