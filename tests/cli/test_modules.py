"""Every command-line module can be imported on its own, first (benchmarks and plugins import
helpers from them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import genprint.cli


def test_each_cli_module_imports_on_its_own() -> None:
    names = sorted(p.stem for p in Path(genprint.cli.__file__).parent.glob("*.py")
                   if p.stem != "__init__")
    assert "train" in names and "app" in names
    runs = {name: subprocess.Popen([sys.executable, "-c", f"import genprint.cli.{name}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in names}
    failed = {}
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=120)
        if proc.returncode:
            failed[name] = err.strip().splitlines()[-1]
    assert failed == {}


def test_genprint_cli_app_is_the_module() -> None:
    """Assembling the app in ``genprint.cli`` must not hide the module behind its Typer object
    (``import genprint.cli.app as m`` then gave the Typer)."""
    import types

    import genprint.cli.app as module

    assert isinstance(module, types.ModuleType) and hasattr(module, "main")
