"""The public API: every public module's ``__all__`` is a tuple and honest both ways, and
every name in it is documented.

Every name listed exists; every public name a module defines is listed (or renamed with a
leading underscore); a module lists names it imports only from mocksup's private modules
(a facade over its internals), a package from anywhere. Every listed name has an entry in
``docs/`` (an autodoc directive, an ``automodule``'s ``:members:``, or a ``.. py:`` entry),
read from the ``.rst`` sources so that no docs build is needed. The types of the API are
pinned by ``tests/typing_api.py``, which mypy checks and nothing runs.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import tempfile
import typing
import unittest
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mocksup
from tests.support import run_code

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: Public names other areas' modules define without listing them, recorded so that no new
#: one slips in; each owner lists them or renames them private, and deletes the entry (an
#: entry left behind fails the test: it would let the name drop out of ``__all__`` again).
UNLISTED_PENDING = {
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
        self.assertLessEqual(set(UNLISTED_PENDING), set(modules), "a pending module is gone")

    def test_all_is_a_tuple_and_honest_both_ways(self) -> None:
        for name in public_modules():
            with self.subTest(name):
                module = importlib.import_module(name)
                listed = module.__all__
                self.assertIsInstance(listed, tuple)
                self.assertEqual(len(set(listed)), len(listed), "a name listed twice")
                for item in listed:
                    self.assertTrue(hasattr(module, item), f"{item} is listed but missing")
                defined = defined_names(module)
                public = {n for n in defined if not n.startswith("_")}
                pending = UNLISTED_PENDING.get(name, set())
                self.assertEqual(sorted(public - set(listed) - pending), [], "public, not listed")
                stale = pending - (public - set(listed))
                self.assertEqual(sorted(stale), [], "listed or gone: delete from UNLISTED_PENDING")
                if not hasattr(module, "__path__"):
                    # A module re-exports only what a private module of mocksup defines (a
                    # facade over its internals); a package may re-export anything.
                    # (A type alias, ``Callable[...]`` or ``Literal[...]``, names the module of
                    # its origin, never its own: it is not checked.)
                    imported = [
                        item
                        for item in set(listed) - defined
                        if typing.get_origin(getattr(module, item)) is None
                        and not _private(getattr(getattr(module, item), "__module__", ""))
                    ]
                    self.assertEqual(sorted(imported), [], "listed but defined elsewhere")

    def test_the_facade_is_sorted_and_lazy_names_resolve(self) -> None:
        self.assertEqual(sorted(mocksup.__all__), list(mocksup.__all__))
        for name in ("MockOTLPCollector", "MockRedisServer", "MockVLLMServer"):
            self.assertIs(getattr(mocksup, name).__name__, name)
        with self.assertRaisesRegex(AttributeError, "no attribute 'Nope'"):
            mocksup.Nope  # noqa: B018


#: A directive that documents an object: ``.. autoclass:: mocksup.X``, ``.. py:data:: ...``.
_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. (?P<kind>auto\w+|py:\w+):: *(?P<target>[\w.]+)")
_OPTION = re.compile(r"^ +:(?P<name>[\w-]+):(?P<value>.*)$")


def _directives(page: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """``(kind, target, options)`` of each directive of an ``.rst`` page whose target is one of
    mocksup's names, in full (``:module:`` prefixed); members written inside a ``py:class``
    are relative to it: not these."""
    lines = page.read_text().splitlines()
    for number, line in enumerate(lines):
        found = _DIRECTIVE.match(line)
        if found is None:
            continue
        options: dict[str, str] = {}
        last = None
        for following in lines[number + 1 :]:
            if not following.startswith(found["indent"] + " ") or not following.strip():
                break
            option = _OPTION.match(following)
            if option is not None:
                last = option["name"]
                options[last] = option["value"].strip()
            elif last is not None:  # an option's value continued on the next line
                options[last] += " " + following.strip()
        target = found["target"]
        if "module" in options:
            target = f"{options['module']}.{target}"
        if target.startswith("mocksup"):
            yield found["kind"], target, options


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _has_own_doc(module: ModuleType, name: str) -> bool:
    """Whether autodoc finds a docstring for ``module.name`` without ``:undoc-members:``: a
    class's or a function's own, or a ``#:`` comment above a value's assignment."""
    value = getattr(module, name)
    if inspect.isclass(value) or inspect.isroutine(value):
        return bool(inspect.getdoc(value))
    pattern = rf"^#:.*\n(?:#:.*\n)*(?:[\w, ]*\b{re.escape(name)}\b[\w, ]*)[:=]"
    return re.search(pattern, inspect.getsource(module), re.M) is not None


def documented_names(docs: Path = DOCS) -> set[str]:
    """The dotted names of every object the ``.rst`` pages document."""
    names: set[str] = set()
    for page in sorted(docs.glob("*.rst")):
        for kind, target, options in _directives(page):
            names.add(target)
            if kind != "automodule" or "members" not in options:
                continue
            members = _names(options["members"])
            if not members:  # all of ``__all__``, less what autodoc skips and excludes
                module = importlib.import_module(target)
                excluded = set(_names(options.get("exclude-members", "")))
                members = [
                    name
                    for name in module.__all__
                    if name not in excluded
                    and ("undoc-members" in options or _has_own_doc(module, name))
                ]
            names.update(f"{target}.{member}" for member in members)
    return names


_MISSING = object()


def _as_autodoc_finds(parts: list[str]) -> object:
    """The longest prefix that imports as a module, then attributes."""
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            found = getattr(found, part, _MISSING)
        return found
    return _MISSING


def _as_code_reaches(parts: list[str]) -> object:
    """Attributes from the top, importing a module where no attribute has its name yet."""
    found: object = importlib.import_module(parts[0])
    for index, part in enumerate(parts[1:], 2):
        if hasattr(found, part):
            found = getattr(found, part)
            continue
        try:
            found = importlib.import_module(".".join(parts[:index]))
        except ImportError:
            return _MISSING
    return found


def resolve(dotted: str) -> list[object]:
    """The objects a dotted name can document: as autodoc finds it, and as a user's code
    reaches it. The two differ where a package's attribute hides its module of the same
    name (``mocksup.otlp.render`` is a function, and a module)."""
    parts = dotted.split(".")
    found: list[object] = []
    for value in (_as_autodoc_finds(parts), _as_code_reaches(parts)):
        if value is not _MISSING and all(value is not other for other in found):
            found.append(value)
    return found


class SubmoduleTest(unittest.TestCase):
    def test_public_submodules_load_on_first_use(self) -> None:
        # In a fresh interpreter: ``import mocksup`` loads neither the harness nor the mocks,
        # yet ``mocksup.harness`` works as it did when the package imported it up front.
        # The same for mocksup.otlp, whose submodules its ``import`` no longer loads.
        code = (
            "import sys, mocksup, mocksup.otlp\n"
            "assert 'mocksup.harness' not in sys.modules\n"
            "assert 'mocksup.otlp.items' not in sys.modules\n"
            "print(mocksup.harness.default_configs.__name__)\n"
            "print(mocksup.otlp.items.Span.__name__, mocksup.otlp.client.__name__)\n"
            "for package in (mocksup, mocksup.otlp):\n"
            "    for name in ('nope', '_zygote', '_grpc', 'a.b'):\n"
            "        try:\n"
            "            getattr(package, name)\n"
            "        except AttributeError:\n"
            "            print('no', name)\n"
        )
        done = run_code(code)
        self.assertEqual(done.returncode, 0, done.stderr)
        refused = ["no", "nope", "no", "_zygote", "no", "_grpc", "no", "a.b"]
        self.assertEqual(
            done.stdout.split(),
            ["default_configs", "Span", "mocksup.otlp.client", *refused, *refused],
        )


class DocumentedTest(unittest.TestCase):
    def test_every_listed_name_is_documented(self) -> None:
        documented = documented_names()
        objects: dict[int, set[str]] = {}
        for dotted in documented:
            for value in resolve(dotted):
                objects.setdefault(id(value), set()).add(dotted.rpartition(".")[2])
        for name in public_modules():
            module = importlib.import_module(name)
            # A name documented where it is defined, or where it is re-exported, covers it
            # at the other place: the same object, under the same name.
            missing = [
                item
                for item in module.__all__
                if f"{name}.{item}" not in documented
                and item not in objects.get(id(getattr(module, item)), set())
            ]
            with self.subTest(name):
                self.assertEqual(missing, [], "listed in __all__ but not documented in docs/")

    def test_every_documented_name_exists(self) -> None:
        for dotted in sorted(documented_names()):
            with self.subTest(dotted):
                self.assertNotEqual(resolve(dotted), [], "no such object: a stale entry")

    def test_the_reading_of_the_docs(self) -> None:
        # The cases the pages above use, each in one small page of its own.
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        folder = Path(temporary.name)
        (folder / "a.rst").write_text(
            ".. automodule:: mocksup.redis\n"
            "   :members: MockRedisServer,\n"
            "      MAX_INLINE\n"
            "\n"
            ".. py:class:: mocksup.Endpoint(server, role)\n"
            "\n"
            "   .. py:method:: nested()\n"
            "\n"
            ".. automodule:: mocksup.process\n"
            "   :members:\n"
            "   :exclude-members: ProcessServer\n"
            "\n"
            ".. automodule:: mocksup.errors\n"
            "   :no-members:\n"
            "\n"
            ".. py:type:: WSGIApp\n"
            "   :module: mocksup.serving\n"
        )
        self.assertEqual(
            documented_names(folder),
            {
                "mocksup.redis",
                "mocksup.redis.MockRedisServer",
                "mocksup.redis.MAX_INLINE",
                "mocksup.Endpoint",
                "mocksup.process",
                "mocksup.process.StopSignal",  # documented by its ``#:`` comment
                "mocksup.errors",
                "mocksup.serving.WSGIApp",
            },
        )


if __name__ == "__main__":
    unittest.main()
