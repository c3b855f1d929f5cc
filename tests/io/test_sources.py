"""Data sources: folders, folder per source, CSV / Parquet manifests, the reserved label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genprint.io.sources import (
    ManifestError,
    load_dataset,
    read_folder,
    read_manifest,
    scan_inputs,
    scan_inputs_report,
    source_name_problem,
    with_split,
)


def _img(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(p)
    return p


def test_folder_per_source_uses_subfolder_names(toy_sources: Path) -> None:
    ds = load_dataset(toy_sources)
    assert ds.sources() == ["alpha", "beta", "gamma"]
    assert len(ds) == 72 and all(i.split is None for i in ds.items)


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    _img(tmp_path / "a.png"), _img(tmp_path / "b.jpg")
    (tmp_path / "readme.txt").write_text("x")
    ds = load_dataset(tmp_path)
    assert [i.path.name for i in ds.items] == ["a.png", "b.jpg"]
    assert ds.sources() == []


def test_an_unknown_folder_holds_images_of_unseen_sources(tmp_path: Path) -> None:
    _img(tmp_path / "unknown" / "x.png")
    _img(tmp_path / "real" / "y.png")
    ds = load_dataset(tmp_path)
    assert {i.path.name: i.source for i in ds.items} == {"x.png": "unknown", "y.png": "real"}
    assert ds.sources() == ["real"]  # unknown is not a source


def test_csv_manifest_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    _img(tmp_path / "imgs" / "a.png"), _img(tmp_path / "imgs" / "b.png")
    m = tmp_path / "manifest.csv"
    m.write_text("path,source,split\nimgs/a.png,real,train\nimgs/b.png,gan,validation\n")
    ds = load_dataset(tmp_path)  # a folder holding manifest.csv reads the manifest
    assert [i.path for i in ds.items] == [tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "b.png"]
    assert [(i.source, i.split) for i in ds.items] == [("real", "train"), ("gan", "val")]
    assert ds.problems == []


def test_manifest_with_a_missing_file_reports_it_and_keeps_the_rest(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    m = tmp_path / "m.csv"
    m.write_text("path,label,split\na.png,real,train\ngone.png,real,train\n")
    ds = read_manifest(m)
    assert len(ds) == 2
    assert ds.missing() == [tmp_path / "gone.png"]
    assert any("missing" in p and "gone.png" in p for p in ds.problems)


def test_manifest_refuses_unknown_in_train_and_bad_splits(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("path,source,split\na.png,unknown,train\n")
    with pytest.raises(ManifestError, match="reserved"):
        read_manifest(m)
    m.write_text("path,source,split\na.png,real,holdout\n")
    with pytest.raises(ManifestError, match="split"):
        read_manifest(m)
    m.write_text("file,source\na.png,real\n")
    with pytest.raises(ManifestError, match="'path'"):
        read_manifest(m)
    m.write_text("path,source\na.png,real\na.png,gan\n")
    with pytest.raises(ManifestError, match="twice"):
        read_manifest(m)


def test_unknown_label_is_allowed_in_test_rows(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    m = tmp_path / "m.csv"
    m.write_text("path,source,split\na.png,unknown,test\n")
    ds = read_manifest(m)
    assert ds.items[0].source == "unknown" and ds.sources() == []


def test_parquet_manifest_reads_like_csv(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    _img(tmp_path / "a.png")
    table = pa.table({"path": ["a.png"], "source": ["real"], "split": ["test"], "kind": ["real"]})
    pq.write_table(table, tmp_path / "manifest.parquet")
    ds = load_dataset(tmp_path / "manifest.parquet")
    assert (ds.items[0].source, ds.items[0].split, ds.items[0].kind) == ("real", "test", "real")


def test_scan_inputs_keeps_explicit_files_and_walks_folders(tmp_path: Path) -> None:
    _img(tmp_path / "d" / "x.png"), _img(tmp_path / "d" / "sub" / "y.png")
    (tmp_path / "d" / "notes.txt").write_text("x")
    odd = tmp_path / "odd.dat"
    odd.write_text("x")
    paths = scan_inputs([tmp_path / "d", odd, tmp_path / "missing.png"])
    names = [p.name for p in paths]
    assert names == ["x.png", "y.png", "odd.dat", "missing.png"]


def test_scan_reads_each_file_once_and_counts_what_it_left_out(tmp_path: Path) -> None:
    _img(tmp_path / "d" / "x.png"), _img(tmp_path / "d" / "ext" / "a.png")
    (tmp_path / "d" / "notes.txt").write_text("x")
    (tmp_path / "d" / "ext" / "carved").write_bytes(b"x")  # no extension
    (tmp_path / "d" / ".DS_Store").write_bytes(b"x")  # hidden: not counted
    (tmp_path / "alias").symlink_to(tmp_path / "d" / "x.png")
    scan = scan_inputs_report([tmp_path / "d" / "ext", tmp_path / "d",
                               tmp_path / "d" / "ext" / "a.png", tmp_path / "alias"])
    assert [p.name for p in scan.paths] == ["a.png", "x.png"]  # where each first appears
    assert scan.repeated == 3  # a.png in d, a.png named again, x.png through its link
    assert scan.not_images == 2  # carved (reached twice, counted once) and notes.txt
    assert sorted(p.name for p in scan.not_image_examples) == ["carved", "notes.txt"]
    # the Python API keeps one entry per input file, repeats included (results line up)
    again = scan_inputs([tmp_path / "d" / "ext" / "a.png", tmp_path / "d" / "ext" / "a.png"])
    assert len(again) == 2


def test_scan_follows_linked_folders_once_and_skips_hidden_files(tmp_path: Path) -> None:
    _img(tmp_path / "d" / "x.png"), _img(tmp_path / "elsewhere" / "z.png")
    _img(tmp_path / "d" / ".hidden.png"), _img(tmp_path / "d" / ".cache" / "w.png")
    (tmp_path / "d" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d", target_is_directory=True)
    names = [p.name for p in scan_inputs([tmp_path / "d"])]
    assert names == ["x.png", "z.png"]  # linked folder followed; the loop is not walked again
    _img(tmp_path / "flat" / "a.png"), _img(tmp_path / "flat" / ".b.png")
    assert [i.path.name for i in read_folder(tmp_path / "flat").items] == ["a.png"]


def test_with_split_is_seeded_and_per_source(toy_sources: Path) -> None:
    ds = load_dataset(toy_sources)
    a = with_split(ds, (0.5, 0.25, 0.25), seed=3)
    b = with_split(ds, (0.5, 0.25, 0.25), seed=3)
    assert [i.split for i in a.items] == [i.split for i in b.items]
    for src in ds.sources():
        splits = [i.split for i in a.items if i.source == src]
        assert splits.count("train") == 12 and splits.count("val") == 6
    assert np.mean([i.split == "test" for i in a.items]) == pytest.approx(0.25)


@pytest.mark.parametrize("name", ["", " gan", "gan ", "gan\nx", "gan\tx", "gan\u200bx", "Unknown",
                                  "UNKNOWN", "x" * 101])
def test_unusable_source_names_are_named(name: str) -> None:
    assert source_name_problem(name)


@pytest.mark.parametrize("name", ["real", "gan-a", "midjourney/v6", "Stable Diffusion 1.5",
                                  "caméra-ü", "x" * 100, "unknown"])
def test_usable_source_names_pass(name: str) -> None:
    assert source_name_problem(name) is None


def test_manifest_and_folder_refuse_unusable_source_names(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    m = tmp_path / "m.csv"
    m.write_text("path,source,split\na.png,real,train\na.png,Unknown,test\n")
    with pytest.raises(ManifestError, match=r"m\.csv:3: .*'Unknown'"):
        read_manifest(m)
    m.write_text('path,source,split\na.png,"gan\u200b",train\n', encoding="utf-8")
    with pytest.raises(ManifestError, match="U\\+200B"):
        read_manifest(m)
    layout = tmp_path / "layout"
    _img(layout / "real" / "a.png")
    _img(layout / "gan " / "b.png")
    with pytest.raises(ManifestError, match="sub-folder names a source.*trailing spaces"):
        read_folder(layout)


def test_repeated_rows_count_once_and_a_file_in_two_splits_is_refused(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    m = tmp_path / "m.csv"
    m.write_text("path,source,split\na.png,real,train\nb.png,real,val\na.png,real,train\n")
    ds = read_manifest(m)
    assert [i.path.name for i in ds.items] == ["a.png", "b.png"]
    assert any("repeat" in p for p in ds.problems)
    m.write_text("path,source,split\na.png,real,train\na.png,real,test\n")
    with pytest.raises(ManifestError, match=r"m\.csv:3: .*two splits .*line 2"):
        read_manifest(m)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    for other in (f"{tmp_path}/sub/../a.png", "link.png"):  # the same file, spelled otherwise
        m.write_text(f"path,source,split\na.png,real,train\n{other},real,test\n")
        with pytest.raises(ManifestError, match="two splits"):
            read_manifest(m)


def test_damaged_manifests_say_what_is_wrong(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,source\ncaf\xe9.png,real\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(latin)
    pytest.importorskip("pyarrow")
    broken = tmp_path / "m.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet file"):
        read_manifest(broken)


def test_an_empty_source_folder_is_noted(tmp_path: Path) -> None:
    _img(tmp_path / "real" / "a.png")
    (tmp_path / "gan").mkdir()
    ds = read_folder(tmp_path)
    assert ds.sources() == ["real"] and any("gan" in p for p in ds.problems)


def test_a_folder_per_split_holds_a_folder_per_source(tmp_path: Path) -> None:
    for split in ("train", "Validation", "test"):
        for source in ("real", "gan"):
            _img(tmp_path / split / source / "a.png")
    ds = read_folder(tmp_path)
    assert sorted((i.source, i.split) for i in ds.items) == [
        ("gan", "test"), ("gan", "train"), ("gan", "val"),
        ("real", "test"), ("real", "train"), ("real", "val")]
    assert ds.notes == [("read as one sub-folder per split (Validation, test, train), each with "
                        "one sub-folder per source")] and ds.problems == []
    _img(tmp_path / "train" / "loose.png")  # no source: left out, with a note
    _img(tmp_path / "top.png")  # no split either
    (tmp_path / "val").mkdir()  # an empty split folder is noted, not an error
    problems = " | ".join(read_folder(tmp_path).problems)
    assert "1 image(s) directly in" in problems and "are left out" in problems
    assert "beside the split folders" in problems and "split folder val is empty" in problems
    _img(tmp_path / "other" / "a.png")  # a source folder beside split folders: ambiguous
    with pytest.raises(ManifestError, match="name splits, but other does not"):
        read_folder(tmp_path)


def test_a_split_folder_without_source_folders_is_refused(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "a.png")
    _img(tmp_path / "val" / "b.png")
    with pytest.raises(ManifestError, match="must hold one sub-folder per source"):
        read_folder(tmp_path)


def test_a_link_to_nothing_is_noted(tmp_path: Path) -> None:
    _img(tmp_path / "real" / "a.png")
    (tmp_path / "gan").symlink_to(tmp_path / "nowhere")
    ds = read_folder(tmp_path)
    assert ds.sources() == ["real"] and any("link(s) to nothing" in p and "gan" in p
                                            for p in ds.problems)


def test_source_names_are_one_unicode_spelling(tmp_path: Path) -> None:
    nfc, nfd = "gan-\u00fc", "gan-u\u0308"
    _img(tmp_path / "f" / nfd / "a.png")
    assert read_folder(tmp_path / "f").sources() == [nfc]
    _img(tmp_path / "a.png")
    m = tmp_path / "m.csv"
    m.write_text(f"path,source\na.png,{nfd}\n", encoding="utf-8")
    assert read_manifest(m).sources() == [nfc]


def test_manifest_quirks_of_spreadsheets_and_windows(tmp_path: Path) -> None:
    _img(tmp_path / "imgs" / "a.png"), _img(tmp_path / "imgs" / "b.png")
    m = tmp_path / "m.csv"
    m.write_text("Path , source, label ,split\nimgs/a.png,real,real,train\n"
                 "imgs\\b.png,gan,gan-x,train\n,,,\n\n", encoding="utf-8")
    ds = read_manifest(m)
    assert [(i.path.name, i.source) for i in ds.items] == [("a.png", "real"), ("b.png", "gan")]
    problems = " | ".join(ds.problems)
    assert "1 empty row(s) skipped" in problems  # csv drops the blank line, keeps ",,,"
    assert "differ on 1 row(s): 'source' is used" in problems
    assert "1 path(s) written with '\\'" in problems


def test_a_folder_layout_reads_each_file_once_whatever_links_lead_to_it(tmp_path: Path) -> None:
    import os

    _img(tmp_path / "real" / "a.png")
    _img(tmp_path / "gan" / "b.png")
    os.symlink("a.png", tmp_path / "real" / "also-a.png")  # the same file, same source
    ds = read_folder(tmp_path)
    assert sorted(i.path.name for i in ds.items) == ["a.png", "b.png"]
    assert any("reached twice under the same source" in p for p in ds.problems)
    os.symlink("../gan", tmp_path / "real" / "gan-too")  # gan's files under `real` too
    with pytest.raises(ManifestError, match=r"b\.png is the same file as .* \(gan\) but is "
                                            r"reached under real"):
        read_folder(tmp_path)


def test_a_file_reached_through_a_link_keeps_its_own_path(tmp_path: Path) -> None:
    """Links sorted before what they point to: each file keeps its path without links, what
    only a link reaches comes last, and every path left out is counted."""
    _img(tmp_path / "d" / "rgb.png"), _img(tmp_path / "d" / "nested" / "n0.png")
    _img(tmp_path / "d" / "nested" / "deeper" / "n1.png"), _img(tmp_path / "out" / "o.png")
    (tmp_path / "d" / "a-link.png").symlink_to(tmp_path / "d" / "rgb.png")
    (tmp_path / "d" / "a-linked-dir").symlink_to(tmp_path / "d" / "nested",
                                                 target_is_directory=True)
    (tmp_path / "d" / "b-outside").symlink_to(tmp_path / "out", target_is_directory=True)
    scan = scan_inputs_report([tmp_path / "d"])
    assert [str(p.relative_to(tmp_path / "d")) for p in scan.paths] == [
        "rgb.png", "nested/n0.png", "nested/deeper/n1.png", "b-outside/o.png"]
    assert scan.repeated == 3  # a-link.png and the two files under a-linked-dir
    assert scan_inputs([tmp_path / "d"]) == scan.paths
