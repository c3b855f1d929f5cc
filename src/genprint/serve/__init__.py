"""``genprint serve``: a saved attributor behind an HTTP API (FastAPI), answering uploaded images
with the same rows as ``genprint attribute``. Needs the ``serve`` extra
(``pip install "genprint[serve]"``); importing this package does not import FastAPI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from genprint.serve.limits import ServeLimits

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from genprint.methods.base import Attributor

__all__ = ["ServeLimits", "create_app"]


def create_app(model: str | Path | Attributor, limits: ServeLimits | None = None, *,
               token: str | None = None) -> FastAPI:
    """The FastAPI application of ``genprint serve`` for ``model`` (a model directory or a
    fitted attributor); see :func:`genprint.serve.app.create_app` (imported on first use: it
    needs FastAPI)."""
    from genprint.serve.app import create_app as _create_app

    return _create_app(model, limits, token=token)
