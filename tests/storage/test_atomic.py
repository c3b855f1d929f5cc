"""Atomic output files get the umask's permissions and never replace a file half-written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from genprint.storage.atomic import atomic_file, dir_mode, file_mode
from genprint.storage.model_dir import write_model_dir


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_modes_follow_the_umask() -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    assert file_mode() == 0o666 & ~umask and dir_mode() == 0o777 & ~umask


def test_atomic_file_renames_on_success_and_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    with atomic_file(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new" and _mode(out) == file_mode()
    with pytest.raises(RuntimeError), atomic_file(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert out.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["r.csv"]
    with pytest.raises(IsADirectoryError), atomic_file(tmp_path):
        pass


def test_a_file_is_flushed_before_its_rename_and_the_folder_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The order that makes a power cut leave the old file or the whole new one: the new
    bytes reach the disk before the rename, and the rename before the write returns."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append("rename")
        real_replace(src, dst)

    real_chmod = os.chmod

    def chmod(path: str | Path, mode: int) -> None:
        events.append("chmod")
        real_chmod(path, mode)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "chmod", chmod)
    out = tmp_path / "r.json"
    with atomic_file(out) as tmp:
        tmp.write_text("{}")
    # flushed while the file is still the process's own 0600 one: a umask or the mode of the
    # file it replaces may take read (or, on Windows, write) access away
    assert events == ["fsync file", "chmod", "rename", "fsync folder"]
    assert out.read_text() == "{}"
    from genprint.results import Attribution, write_results

    for suffix in (".csv", ".json"):
        events.clear()
        write_results([Attribution("a.png", error="x", error_code="corrupt")],
                      tmp_path / f"rows{suffix}")
        assert events[-4:] == ["fsync file", "chmod", "rename", "fsync folder"], events


def test_model_directory_files_are_not_private(tmp_path: Path) -> None:
    target = write_model_dir(tmp_path / "m", {"method": "x"},
                             tensors={"w": np.zeros(3, np.float32)}, arrays={"a": np.ones(2)})
    assert _mode(target) == dir_mode()
    assert {p.name: _mode(p) for p in target.iterdir()} == {
        name: file_mode() for name in ("card.json", "weights.safetensors", "a.npy")}
