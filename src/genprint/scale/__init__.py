"""Beyond one machine: batch attribution (:mod:`genprint.scale.ray_data`) and the feature
extraction of a ``probe`` fit (:mod:`genprint.scale.ray_features`) on Ray Data.

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
from genprint.scale.ray_features import fit_probe_on_ray

__all__ = ["ModelMismatchError", "ScaleError", "attribution_dataset", "fit_probe_on_ray",
           "iter_attributions", "require_ray"]
