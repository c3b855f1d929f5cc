"""The model directory: atomic writes, checksums verified on load, newer formats refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genprint.storage.model_dir import (
    FORMAT_VERSION,
    ModelFormatError,
    read_model_dir,
    write_model_dir,
)


def _write(path: Path, **kw: object) -> Path:
    return write_model_dir(
        path, {"method": "toy", "classes": ["a", "b"]},
        tensors={"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
        arrays={"refs": np.eye(2)}, **kw,  # type: ignore[arg-type]
    )


def test_round_trip_keeps_card_tensors_and_arrays(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    loaded = read_model_dir(out)
    assert loaded.card["method"] == "toy" and loaded.card["format_version"] == FORMAT_VERSION
    assert set(loaded.card["files"]) == {"weights.safetensors", "refs.npy"}
    assert "genprint_version" in loaded.card["created"]
    np.testing.assert_array_equal(loaded.tensors["w"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(loaded.arrays["refs"], np.eye(2))


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    refs = out / "refs.npy"
    data = bytearray(refs.read_bytes())
    data[-1] ^= 0xFF
    refs.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="sha256"):
        read_model_dir(out)


def test_missing_and_extra_files_are_refused(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    (out / "sneaky.npy").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="unexpected"):
        read_model_dir(out)
    (out / "sneaky.npy").unlink()
    (out / "refs.npy").unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        read_model_dir(out)


def test_newer_format_version_is_refused_with_upgrade_advice(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    card = json.loads((out / "card.json").read_text())
    card["format_version"] = FORMAT_VERSION + 1
    (out / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="Upgrade genprint"):
        read_model_dir(out)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="no card.json"):
        read_model_dir(tmp_path)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        read_model_dir(tmp_path)


def test_existing_directory_needs_overwrite_and_is_replaced_whole(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    with pytest.raises(FileExistsError):
        _write(out)
    write_model_dir(out, {"method": "toy2", "classes": []}, arrays={"x": np.zeros(1)},
                    overwrite=True)
    loaded = read_model_dir(out)
    assert loaded.card["method"] == "toy2" and set(loaded.card["files"]) == {"x.npy"}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp or backup left behind


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_model_dir(tmp_path / "m", {"nan": float("nan")})  # NaN is not valid JSON
    assert list(tmp_path.iterdir()) == []
