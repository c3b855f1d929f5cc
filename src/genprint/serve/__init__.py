"""``genprint serve``: a saved attributor behind an HTTP API (FastAPI), answering uploaded images
with the same rows as ``genprint attribute``. Needs the ``serve`` extra
(``pip install "genprint[serve]"``); importing this package does not import FastAPI."""

from __future__ import annotations

from genprint.serve.limits import ServeLimits

__all__ = ["ServeLimits", "create_app"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """:func:`genprint.serve.app.create_app` (imported on first use: it needs FastAPI)."""
    from genprint.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
