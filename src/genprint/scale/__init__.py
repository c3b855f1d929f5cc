"""Attribution beyond one machine: batch attribution on Ray Data (:mod:`genprint.scale.ray_data`).

Importing this package does not import Ray or torch; the functions import Ray when they are
called and say ``pip install "genprint[ray]"`` when it is missing. See ``docs/scale.md``.
"""

from __future__ import annotations

from genprint.scale.ray_data import (
    ModelMismatchError,
    ScaleError,
    attribution_dataset,
    iter_attributions,
    require_ray,
)

__all__ = ["ModelMismatchError", "ScaleError", "attribution_dataset", "iter_attributions",
           "require_ray"]
