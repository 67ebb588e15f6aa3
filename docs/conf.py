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
