"""Transitional: the control API's client moved to :mod:`mocksup.control`."""

from __future__ import annotations

from mocksup.control import PREFIX, ControlClient

__all__ = ["PREFIX", "ControlClient"]
