"""Plugins: modules that register parts of one's own, imported by name, file or variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from genprint.cli.app import app
from genprint.methods.metric_train import METRIC_LOSSES
from genprint.plugins import PLUGINS_ENV, PluginError, load_plugin, load_plugins

PLUGIN = '''
from genprint.methods.metric_train import METRIC_LOSSES

if "{name}" not in METRIC_LOSSES:
    METRIC_LOSSES.add("{name}", METRIC_LOSSES.get("supcon"))
'''


@pytest.fixture
def plugin_file(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    name = f"plugin-loss-{request.node.name[-12:]}".lower().replace("[", "").replace("]", "")
    path = tmp_path / f"my_parts_{abs(hash(name))}.py"
    path.write_text(PLUGIN.format(name=name))
    yield path, name
    if name in METRIC_LOSSES:
        METRIC_LOSSES.remove(name)


def test_a_plugin_file_registers_its_parts(plugin_file: tuple[Path, str]) -> None:
    path, name = plugin_file
    assert name not in METRIC_LOSSES
    load_plugin(str(path))
    assert name in METRIC_LOSSES


def test_plugins_from_the_variable_and_the_command_line(plugin_file: tuple[Path, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path, name = plugin_file
    monkeypatch.setenv(PLUGINS_ENV, f" {path} ,")
    assert str(path) in load_plugins()
    assert name in METRIC_LOSSES
    METRIC_LOSSES.remove(name)
    monkeypatch.delenv(PLUGINS_ENV)
    out = CliRunner().invoke(app, ["--plugin", str(path.with_name("missing.py")), "zoo", "list"])
    assert out.exit_code == 2 and "missing.py" in out.output and "not found" in out.output


def test_a_plugin_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(PluginError, match="no_such_plugin_module.*PYTHONPATH"):
        load_plugin("no_such_plugin_module")


def test_a_plugin_whose_code_fails_says_why(tmp_path: Path) -> None:
    bad = tmp_path / "broken_parts.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="broken_parts.*boom"):
        load_plugin(str(bad))
    out = CliRunner().invoke(app, ["--plugin", str(bad), "zoo", "list"])
    assert out.exit_code == 2 and "boom" in out.output


def test_unknown_names_point_to_plugins() -> None:
    from genprint.methods.metric_train import build_loss

    with pytest.raises(ValueError, match="--plugin"):
        build_loss("no-such-loss", 2, 8)


def test_a_model_on_a_plugin_backbone_names_the_plugin_it_needs(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    import numpy as np

    import genprint
    from genprint.backbones.base import BACKBONES
    from genprint.backbones.resolve import resolve_backbone
    from genprint.methods.probe import ProbeAttributor
    from genprint.storage.model_dir import ModelFormatError
    from tests.backbones.user_checkpoints import save_open_clip_checkpoint

    ckpt = save_open_clip_checkpoint(tmp_path / "clip.pt")

    def factory(**kwargs: object) -> object:
        return resolve_backbone(str(ckpt), **kwargs)

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(24)]
    labels = ["a", "b"] * 12
    BACKBONES.add("test-plugin-backbone", factory)
    try:
        model = ProbeAttributor(backbone="test-plugin-backbone", grid=[1.0], cache=False)
        model.fit(images[:16], labels[:16], images[16:], labels[16:])
        model.save(tmp_path / "model")
    finally:
        BACKBONES.remove("test-plugin-backbone")
    again = genprint.load(tmp_path / "model")
    with pytest.raises(ModelFormatError, match=f"--plugin {__name__}"):
        again.attribute_arrays(images[:1])


def test_a_plugin_file_never_replaces_or_hides_a_module_of_the_same_name(tmp_path: Path) -> None:
    import json
    import sys

    name = "plugin-loss-named-like-json"
    (tmp_path / "json.py").write_text(PLUGIN.format(name=name))
    try:
        module = load_plugin(str(tmp_path / "json.py"))
        assert name in METRIC_LOSSES  # its code ran ...
        assert sys.modules["json"] is json and module is not json  # ... stdlib json untouched
        stdlib = str(Path(json.__file__).parent.parent)  # the folder holding the json package
        assert sys.path.index(str(tmp_path)) > sys.path.index(stdlib)
    finally:
        if name in METRIC_LOSSES:
            METRIC_LOSSES.remove(name)


def test_plugins_given_on_the_command_line_are_listed_for_ray_workers(
        plugin_file: tuple[Path, str]) -> None:
    """``--ray`` sends the workers every plugin this process imported by name or path
    (``genprint --plugin`` too, not only ``GENPRINT_PLUGINS``), never entry points."""
    from genprint.plugins import loaded_plugin_specs

    path, _ = plugin_file
    assert str(path) not in loaded_plugin_specs()
    out = CliRunner().invoke(app, ["--plugin", str(path), "zoo", "list"])
    assert out.exit_code == 0, out.output
    assert str(path) in loaded_plugin_specs()
