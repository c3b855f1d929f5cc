"""genprint: open-set source attribution for AI-generated images.

Given an image, genprint says which generator made it, that it is a real camera image, or that
its source is ``unknown`` (a generator never seen in training).

The top-level namespace stays light: importing :mod:`genprint` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

UNKNOWN = "unknown"
"""The reserved label for a source never seen in training (``-1`` as an integer label)."""

if TYPE_CHECKING:  # pragma: no cover
    from genprint.methods.base import Attributor


def load(path: str | Any) -> Attributor:
    """Load a saved attributor directory (any method) after checking its card and checksums."""
    from genprint.methods.base import load_attributor

    return load_attributor(path)


__all__ = ["UNKNOWN", "__version__", "load"]
