"""The web viewer's page, stylesheet and scripts (package data, read by ``mocksup.otlp._ui``)."""

__all__ = ()
