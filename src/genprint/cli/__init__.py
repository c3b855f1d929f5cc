"""The ``genprint`` command line: one module per verb, assembled in :mod:`genprint.cli.app`."""

# The verb modules import ``app`` and register on it, and ``app`` imports every verb module:
# assembling it here, first, lets any of them be imported on its own (``genprint.cli.train``).
# (imported as a module: ``genprint.cli.app`` stays the module, not its Typer object)
from genprint.cli import app as _assembled  # noqa: F401
