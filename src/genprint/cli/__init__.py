"""The ``genprint`` command line: one module per verb, assembled in :mod:`genprint.cli.app`."""
