"""Sphinx configuration for mocksup's documentation."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import mocksup

project = "mocksup"
author = "the mocksup developers"
copyright = "2026, the mocksup developers"
version = release = mocksup.__version__

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"exclude-members": "model_config, model_post_init"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

# Built with -n (tox -e docs): every reference must resolve. Names outside mocksup (the
# standard library, pydantic, pytest) would need intersphinx, which fetches inventories
# over the network; the docs build offline, so those are not checked. So are private names
# autodoc shows in signatures (type variables, typed dicts) and pydantic's field constraints
# (``ge=0``) that it renders as types.
nitpick_ignore_regex = [
    (
        "py:.*",
        r"(annotated_types|types|pydantic|collections|pathlib|unittest|socket|os|asyncio|"
        r"multiprocessing|_pytest|pytest|typing|typing_extensions|http|concurrent|"
        r"werkzeug|grpc|google|opentelemetry)(\..*)?",
    ),
    ("py:.*", r"(Path|Any|Self|IO|Iterator|Iterable|Mapping|Sequence|Callable)"),
    ("py:.*", r".*\b_[A-Za-z].*"),
    ("py:class", r".*=.*"),
]
