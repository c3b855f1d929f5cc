"""The model directory: atomic writes, checksums verified on load, newer formats refused."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from genprint.storage.model_dir import (
    FORMAT_VERSION,
    ModelFormatError,
    check_output_dir,
    model_lock,
    read_model_dir,
    write_model_dir,
)
from tests.conftest import rewrite_card


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
    rewrite_card(out / "card.json", card)
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


def test_overwrite_replaces_only_genprint_outputs(tmp_path: Path) -> None:
    mine = tmp_path / "my-photos"
    mine.mkdir()
    (mine / "notes.txt").write_text("important")
    with pytest.raises(FileExistsError, match="not only a genprint model directory"):
        _write(mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "important"
    a_file = tmp_path / "image.png"
    a_file.write_bytes(b"png")
    with pytest.raises(FileExistsError, match="is a file"):
        _write(a_file, overwrite=True)
    assert a_file.read_bytes() == b"png"
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", overwrite=True)  # an empty folder may be filled
    assert read_model_dir(tmp_path / "empty").card["method"] == "toy"


def test_output_problems_are_found_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        check_output_dir(tmp_path / "file" / "model", overwrite=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output_dir(tmp_path / "file", overwrite=False)
    assert check_output_dir(tmp_path / "new" / "model", overwrite=False) == tmp_path / "new" / "model"
    assert not any(p.name.startswith(".") for p in (tmp_path / "new").iterdir())


def test_a_symlinked_model_is_updated_behind_its_link(tmp_path: Path) -> None:
    real = _write(tmp_path / "real-model")
    link = tmp_path / "link"
    link.symlink_to(real)
    write_model_dir(link, {"method": "toy", "classes": ["a", "b", "c"]}, overwrite=True)
    assert link.is_symlink()
    assert read_model_dir(real).card["classes"] == ["a", "b", "c"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_non_finite_training_figures_are_saved_as_null(tmp_path: Path) -> None:
    out = write_model_dir(tmp_path / "m", {"method": "toy", "classes": ["a", "b"],
                                           "training": {"val_loso_auroc": float("nan"),
                                                        "rows": [{"x": float("inf")}, 1.5]}})
    training = read_model_dir(out).card["training"]
    assert training == {"val_loso_auroc": None, "rows": [{"x": None}, 1.5]}
    with pytest.raises(ValueError):  # anything else non-finite is a broken model: not saved
        write_model_dir(tmp_path / "m2", {"method": "toy", "thresholds": [float("nan")]})


def test_model_lock_makes_updates_take_turns(tmp_path: Path) -> None:
    model = _write(tmp_path / "m")
    order: list[str] = []

    def second() -> None:
        with model_lock(model):
            order.append("second")

    with model_lock(model):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]


def test_replacing_a_model_keeps_hidden_files_and_needs_a_real_card(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref")
    _write(out, overwrite=True)
    assert (out / ".git" / "HEAD").read_text() == "ref"
    read_model_dir(out)  # hidden entries do not make the model untrustworthy
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "card.json").write_text("my notes, not a card")
    (fake / "data.csv").write_text("1,2")
    with pytest.raises(FileExistsError, match="no readable card.json"):
        _write(fake, overwrite=True)
    (fake / "card.json").write_text('{"hello": 1}')  # JSON, but not a genprint card
    with pytest.raises(FileExistsError, match="not a genprint model card"):
        _write(fake, overwrite=True)
    (out / "notes.txt").write_text("mine")  # a real model with a file of the user's in it
    with pytest.raises(FileExistsError, match=r"did not write there \(notes.txt\)"):
        _write(out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OSError, match="cannot write"):
        check_output_dir(loop, overwrite=True)


def test_a_card_listing_outside_files_or_a_damaged_array_is_refused(tmp_path: Path) -> None:
    import hashlib

    out = _write(tmp_path / "m")
    card = json.loads((out / "card.json").read_text())
    card["files"]["../../etc/passwd"] = "0" * 64
    rewrite_card(out / "card.json", card)
    with pytest.raises(ModelFormatError, match="invalid file name"):
        read_model_dir(out)
    out = _write(tmp_path / "m2")
    weights = out / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])  # truncated, with its checksum updated
    card = json.loads((out / "card.json").read_text())
    card["files"]["weights.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    rewrite_card(out / "card.json", card)
    with pytest.raises(ModelFormatError, match="cannot be read"):
        read_model_dir(out)


def test_a_card_edited_by_hand_is_refused(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    text = (out / "card.json").read_text()
    card = json.loads(text)
    assert card["card_digest"] and card["created"]["packages"]  # library versions recorded
    # renaming a source changes no file's checksum: only the card's digest sees it
    (out / "card.json").write_text(text.replace('"a"', '"x"'))
    with pytest.raises(ModelFormatError, match="changed after it was written"):
        read_model_dir(out)
    (out / "card.json").write_text(text)  # the original loads again
    assert read_model_dir(out).card["classes"] == ["a", "b"]
    old = {k: v for k, v in card.items() if k != "card_digest"}  # a card from before digests
    old["format_version"] = 1
    (out / "card.json").write_text(json.dumps(old))
    assert read_model_dir(out).card["classes"] == ["a", "b"]


@pytest.mark.parametrize("version", [0, True, -1, "1"])
def test_a_nonsense_format_version_is_refused(tmp_path: Path, version: object) -> None:
    out = _write(tmp_path / "m")
    card = json.loads((out / "card.json").read_text())
    card["format_version"] = version
    rewrite_card(out / "card.json", card)
    with pytest.raises(ModelFormatError, match="invalid 'format_version'"):
        read_model_dir(out)


def test_a_model_saved_again_keeps_when_it_was_made(tmp_path: Path) -> None:
    first = read_model_dir(_write(tmp_path / "m")).card
    again = write_model_dir(tmp_path / "m", {"method": "toy", "classes": ["a"],
                                             "created": first["created"]}, overwrite=True)
    card = read_model_dir(again).card
    assert card["created"] == first["created"] and "created_utc" in card["modified"]


def test_what_a_killed_save_leaves_is_pointed_out(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    (tmp_path / ".m.tmp-abc123").mkdir()  # a save killed while writing the new model
    with pytest.warns(UserWarning, match=r"\.m\.tmp-abc123 left by a save of m that was killed"):
        _write(tmp_path / "m", overwrite=True)
    (tmp_path / ".m.old-ghi789" / ".git").mkdir(parents=True)  # killed before moving it back
    with pytest.warns(UserWarning, match=r"first move what is yours back into m: "
                                         r"\.m\.old-ghi789 holds \.git"):
        _write(tmp_path / "m", overwrite=True)
    for left in tmp_path.glob(".m.*"):
        shutil.rmtree(left)
    out.rename(tmp_path / ".m.old-def456")  # killed between moving the old model away and
    with pytest.raises(ModelFormatError, match=r"left the previous model in .*\.m\.old-def456; "
                                               r".*rename that folder to m"):  # ... the new in
        read_model_dir(tmp_path / "m")


def test_a_card_naming_a_path_that_is_not_utf8_saves_and_loads(tmp_path: Path) -> None:
    name = "data_caf\udce9"  # the byte 0xE9 of a Latin-1 folder name, as Python keeps it
    out = write_model_dir(tmp_path / "m", {"method": "toy", "classes": ["a"],
                                           "training": {"data": name}})
    assert read_model_dir(out).card["training"]["data"] == name


def test_a_current_card_without_its_digest_is_refused(tmp_path: Path) -> None:
    out = _write(tmp_path / "m")
    card = json.loads((out / "card.json").read_text())
    del card["card_digest"]  # an edit that also removed the digest
    (out / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="card_digest is missing"):
        read_model_dir(out)


def test_a_killed_save_of_a_new_model_and_a_file_are_named_on_load(tmp_path: Path) -> None:
    (tmp_path / ".m.tmp-abc123").mkdir()  # the first save of m, killed while writing
    with pytest.raises(ModelFormatError, match=r"no such folder; a save of it left "
                                               r"\.m\.tmp-abc123 beside it"):
        read_model_dir(tmp_path / "m")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="a file, not a folder"):
        read_model_dir(tmp_path / "f.png")


def test_outputs_inside_a_model_folder_are_refused_before_any_work(tmp_path: Path) -> None:
    from genprint.storage.atomic import check_output_file, enclosing_model_dir

    model = _write(tmp_path / "m")
    for out in (model / "card.json", model / "results.csv", model / "sub" / "r.json"):
        with pytest.raises(IsADirectoryError, match="inside the model folder"):
            check_output_file(out)
    with pytest.raises(IsADirectoryError, match="inside the model folder"):
        check_output_dir(model / "inner", overwrite=False)
    assert not (model / "sub").exists()
    read_model_dir(model)  # untouched
    assert enclosing_model_dir(model) is None  # the folder itself may be replaced whole
    assert check_output_dir(model, overwrite=True) == model
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "card.json").write_text("{}")  # not a model's card: no objection
    assert check_output_file(tmp_path / "other" / "r.csv") == tmp_path / "other" / "r.csv"


def test_a_load_during_a_save_reads_one_version(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that swaps a new version in while a load reads the folder: the load returns the
    old version whole or the new one whole, never the old card with the new arrays."""
    from genprint.storage import model_dir

    path = _write(tmp_path / "m")
    parse = model_dir._parse_card
    calls = []

    def parse_then_save(raw: bytes, folder: Path) -> dict:
        card = parse(raw, folder)
        if not calls:  # the first read has its card: now another process saves a new version
            write_model_dir(path, {"method": "toy", "classes": ["a", "b", "c"]},
                            arrays={"refs": np.eye(3)}, overwrite=True)
        calls.append(card["classes"])
        return card

    monkeypatch.setattr(model_dir, "_parse_card", parse_then_save)
    new = read_model_dir(path)  # the old version was deleted under it: read again, whole
    assert calls == [["a", "b"], ["a", "b", "c"]]
    assert new.card["classes"] == ["a", "b", "c"] and new.arrays["refs"].shape == (3, 3)
    assert "weights.safetensors" not in new.card["files"] and not new.tensors

    calls.clear()  # the old version kept (its deletion not reached yet): read whole, once
    _write(path, overwrite=True)
    monkeypatch.setattr(model_dir.shutil, "rmtree", lambda *a, **k: None)
    old = read_model_dir(path)
    assert calls == [["a", "b"]]
    assert old.card["classes"] == ["a", "b"] and old.arrays["refs"].shape == (2, 2)
    np.testing.assert_array_equal(old.tensors["w"], np.arange(6).reshape(2, 3))


def test_a_load_between_the_two_renames_of_a_save_waits(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from genprint.storage import model_dir

    path = _write(tmp_path / "m")
    path.rename(tmp_path / ".m.old-x")  # a save has moved the old version away ...
    sleep = time.sleep

    def the_save_goes_on(seconds: float) -> None:  # ... and puts the new one in while we wait
        if not path.exists():
            _write(tmp_path / ".m.tmp-y").rename(path)
            (tmp_path / ".m.old-x").rename(tmp_path / ".m.old-gone")
        sleep(0)

    monkeypatch.setattr(model_dir.time, "sleep", the_save_goes_on)
    assert read_model_dir(path).card["classes"] == ["a", "b"]


def test_a_replaced_model_or_file_keeps_its_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from genprint.storage.atomic import write_text_atomic

    path = _write(tmp_path / "m")
    os.chmod(path, 0o700)
    for f in path.iterdir():
        os.chmod(f, 0o600)
    _write(path, overwrite=True)  # e.g. `genprint enroll` in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()} == {0o600}
    results = write_text_atomic(tmp_path / "r.csv", "a\n")
    os.chmod(results, 0o640)
    write_text_atomic(results, "b\n")
    assert stat.S_IMODE(results.stat().st_mode) == 0o640 and results.read_text() == "b\n"


def test_a_folder_or_a_pipe_in_place_of_a_file_is_refused_at_once(tmp_path: Path) -> None:
    import os

    path = _write(tmp_path / "m")
    (path / "refs.npy").unlink()
    os.mkfifo(path / "refs.npy")  # opening it to read would wait for a writer for ever
    with pytest.raises(ModelFormatError, match="refs.npy is not a regular file"):
        read_model_dir(path)
    card = tmp_path / "n" / "card.json"
    card.mkdir(parents=True)
    with pytest.raises(ModelFormatError, match="card.json is not a regular file"):
        read_model_dir(tmp_path / "n")


def test_a_platform_that_cannot_open_folders_reads_files_by_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    path = _write(tmp_path / "m")
    monkeypatch.setattr(os, "supports_dir_fd", set())  # as on Windows
    loaded = read_model_dir(path)
    assert loaded.card["classes"] == ["a", "b"] and loaded.arrays["refs"].shape == (2, 2)
    (path / "refs.npy").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="does not match its sha256"):
        read_model_dir(path)
