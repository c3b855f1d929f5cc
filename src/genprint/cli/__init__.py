"""The ``genprint`` command line: one module per verb, assembled in :mod:`genprint.cli.app`."""

# The verb modules import ``app`` and register on it, and ``app`` imports every verb module:
# assembling it here, first, lets any of them be imported on its own (``genprint.cli.train``).
from genprint.cli.app import app

__all__ = ["app"]
