"""Feature extractors ("backbones") shared by the methods, in one registry: :data:`BACKBONES`.

A backbone maps images to the features of every intermediate block (see
:class:`~genprint.backbones.base.Backbone`). Built-in entries are registered when their module is
imported; :func:`get_backbone` imports them on demand, so importing :mod:`genprint` stays light.
"""

from genprint.backbones.base import BACKBONES, Backbone, Preprocessing, get_backbone

__all__ = ["BACKBONES", "Backbone", "Preprocessing", "get_backbone"]
