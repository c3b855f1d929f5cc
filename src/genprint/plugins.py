"""Plugins: your own backbones, losses, methods and perturbations, usable by name everywhere.

genprint's pluggable parts live in registries (:mod:`genprint.registry`): ``BACKBONES``,
``METRIC_LOSSES``, ``INVERSION_LOSSES``, ``METHODS``, ``PERTURBATIONS``. A part is registered
when the module that registers it is imported. In your own Python code, import that module
first. The ``genprint`` command imports, before it runs any verb:

1. the entry points of the group ``genprint.plugins`` of every installed package (a package
   declares ``[project.entry-points."genprint.plugins"] mine = "my_package.genprint_parts"``);
2. the modules listed in the ``GENPRINT_PLUGINS`` variable (comma-separated);
3. the modules given with ``genprint --plugin MODULE`` (repeatable).

A module is named as for ``import`` (``my_package.parts``, found on ``PYTHONPATH`` or installed)
or by the path of a ``.py`` file (``./my_parts.py``; it is imported under a name of its own, so
it never replaces a module of the same name, and its folder is added at the end of
``sys.path`` so that it can import its neighbours without shadowing installed libraries). Each
module is imported once. A plugin that was asked for (variable or option) and cannot be
imported is an error that names it, not a silent skip: a model that needs it would otherwise
fail later, with a less clear message. An installed entry point that fails is a warning, so
that one broken package does not stop every command.

Generators for ``verify`` and ``invert`` need no plugin: their spec
(``package.module:factory``) names the module to import.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PLUGINS_ENV = "GENPRINT_PLUGINS"
"""Environment variable: comma-separated plugin modules imported by the ``genprint`` command."""

ENTRY_POINT_GROUP = "genprint.plugins"
"""Entry-point group through which installed packages provide plugins."""

PLUGIN_HINT = ("a part of your own must be registered by a plugin module: genprint --plugin "
               f"MODULE, the {PLUGINS_ENV} variable, or a '{ENTRY_POINT_GROUP}' entry point "
               "(see genprint.plugins)")
"""Said by errors about names that are not registered."""

_loaded: dict[str, ModuleType] = {}
_entry_point_values: set[str] = set()


class PluginError(ImportError):
    """A plugin module that could not be imported, with the reason."""


def loaded_plugin_specs() -> list[str]:
    """The plugin modules this process has imported by name or path (``genprint --plugin``,
    ``GENPRINT_PLUGINS``, :func:`load_plugin`), in order; entry points are not listed (every
    process imports them). What Ray workers must import to see the same registered parts."""
    return [spec for spec in _loaded if spec not in _entry_point_values]


def load_plugin(spec: str) -> ModuleType:
    """Import one plugin module, named as for ``import`` or by a ``.py`` file path."""
    spec = spec.strip()
    if not spec:
        raise PluginError("empty plugin name")
    if spec in _loaded:
        return _loaded[spec]
    try:
        if spec.endswith(".py") or os.sep in spec or (os.altsep and os.altsep in spec):
            module = _import_file(Path(spec))
        else:
            module = importlib.import_module(spec)
    except PluginError:
        raise
    except Exception as exc:  # the plugin's own code failed: say which plugin, and why
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == spec.split(".")[0]:
            hint = (" (install it, put its folder on PYTHONPATH, or give the path of the .py "
                    "file)")
        raise PluginError(f"cannot import plugin {spec!r}: {type(exc).__name__}: {exc}{hint}") \
            from exc
    _loaded[spec] = module
    return module


FILE_PLUGIN_PREFIX = "genprint_plugin_"
"""Module names of plugins imported from a file start with this (then the file's stem and a
hash of its path), so that a plugin never replaces, or is hidden by, a module of the same name."""


def _import_file(path: Path) -> ModuleType:
    import hashlib

    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} not found")
    real = path.resolve()
    folder = str(real.parent)
    if folder not in sys.path:  # after everything else: its neighbours never shadow a library
        sys.path.append(folder)
    digest = hashlib.sha256(str(real).encode()).hexdigest()[:10]
    name = f"{FILE_PLUGIN_PREFIX}{real.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:  # pragma: no cover - not a Python file
        raise PluginError(f"cannot import plugin file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def plugin_specs(extra: Sequence[str] = ()) -> list[str]:
    """The plugin modules the command line imports: ``GENPRINT_PLUGINS`` then ``extra``."""
    from_env = [s for s in os.environ.get(PLUGINS_ENV, "").split(",") if s.strip()]
    return [*from_env, *extra]


def load_plugins(extra: Sequence[str] = ()) -> list[str]:
    """Import the installed entry points, then ``GENPRINT_PLUGINS`` and ``extra``; returns the
    names imported. Raises :class:`PluginError` naming the first that fails."""
    import warnings
    from importlib.metadata import entry_points

    names: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in _loaded:
            continue
        try:
            _loaded[ep.value] = ep.load()
            _entry_point_values.add(ep.value)
        except Exception as exc:  # noqa: BLE001 - an installed package's code
            # not asked for by this command: a broken package must not stop every command
            warnings.warn(f"plugin entry point {ep.name!r} ({ep.value}) of an installed package "
                          f"could not be loaded: {type(exc).__name__}: {exc}", stacklevel=2)
            continue
        names.append(ep.value)
    for spec in plugin_specs(extra):
        load_plugin(spec)
        names.append(spec.strip())
    return names
