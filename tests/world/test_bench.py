import csv
import hashlib
import json

import pytest

from genprint.world.bench import BenchSettings, build_bench
from genprint.world.cameras import camera_names
from genprint.world.protocols import REAL, protocol_view

from .conftest import TINY_ZOO


def _rows(folder):
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def bench(tiny_zoo, tmp_path):
    out = tmp_path / "bench"
    build_bench(out, BenchSettings(per_class=10, seed=7, generators=TINY_ZOO))
    return out


def test_same_seed_gives_byte_identical_benchmarks(bench, tmp_path):
    again = tmp_path / "again"
    build_bench(again, BenchSettings(per_class=10, seed=7, generators=TINY_ZOO))
    assert _digest(bench) == _digest(again)
    other = tmp_path / "other"
    build_bench(other, BenchSettings(per_class=10, seed=8, generators=TINY_ZOO))
    assert _digest(other) != _digest(bench)


def test_manifest_splits_are_disjoint_and_held_out_cameras_only_in_test(bench):
    rows = _rows(bench)
    assert {r["kind"] for r in rows} == {"real", "generated"}
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths))
    held = set(camera_names(held_out=True))
    for r in rows:
        assert (bench / r["path"]).is_file()
        if r["origin"] in held:
            assert r["split"] == "test" and r["source"] == REAL
    for src in {r["source"] for r in rows}:
        splits = {r["split"] for r in rows if r["source"] == src}
        assert splits == {"train", "val", "test"}


def test_protocols_never_put_unknown_sources_in_train_or_val(bench):
    protocols = json.loads((bench / "protocols.json").read_text())
    assert {"seed", "architecture", "family", "all"} <= set(protocols)
    for name, p in protocols.items():
        assert not set(p["known"]) & set(p["unknown"])
        view = protocol_view(bench, name)
        for item in view.train + view.val:
            assert item.source in p["known"] and item.source not in p["unknown"]
        assert {i.source for i in view.test} >= set(p["unknown"])


def test_real_and_generated_share_one_format(bench):
    suffixes = {p.suffix for p in (bench / "images").rglob("*.*")}
    assert suffixes == {".png"}


def test_camera_task(tmp_path):
    out = tmp_path / "cams"
    build_bench(out, BenchSettings(task="camera", per_class=5, seed=0))
    rows = _rows(out)
    assert {r["source"] for r in rows} == set(camera_names(held_out=False))
    assert json.loads((out / "protocols.json").read_text())["camera"]["unknown"] == []


def test_camera_task_with_random_cameras(tmp_path):
    out = tmp_path / "cams"
    build_bench(out, BenchSettings(task="camera", per_class=3, seed=0, random_cameras=2))
    sources = {r["source"] for r in _rows(out)}
    assert sources == set(camera_names(held_out=False)) | {"rcam-001", "rcam-002"}
    assert json.loads((out / "bench.json").read_text())["random_cameras"] == 2
    with pytest.raises(ValueError, match="camera task"):
        build_bench(tmp_path / "x", BenchSettings(per_class=3, random_cameras=2))


def test_existing_folder_is_not_overwritten_silently(bench):
    with pytest.raises(FileExistsError):
        build_bench(bench, BenchSettings(per_class=10, seed=7, generators=TINY_ZOO))


def test_a_changed_manifest_or_protocols_file_is_refused_on_read(bench):
    """bench.json records the two files' sha256 and the held-out cameras; a protocol read
    checks them (before, an edited manifest moving held-out photographs into training was
    trained and evaluated on without a word)."""
    from genprint.io.sources import ManifestError

    info = json.loads((bench / "bench.json").read_text())
    assert info["held_out_cameras"] == camera_names(held_out=True)
    protocol_view(bench, "all")  # as built: fine
    manifest = (bench / "manifest.csv").read_text()
    rows = _rows(bench)
    held = next(r for r in rows if r["origin"] in info["held_out_cameras"])
    (bench / "manifest.csv").write_text(manifest.replace(
        f"{held['path']},real,test,", f"{held['path']},real,train,"))
    with pytest.raises(ManifestError, match="changed since the benchmark was built"):
        protocol_view(bench, "all")
    (bench / "bench.json").write_text(json.dumps({**info, "manifest_sha256": None}))
    with pytest.raises(ManifestError, match="held-out camera"):
        protocol_view(bench, "all")
    (bench / "manifest.csv").write_text(manifest)
    protocols = json.loads((bench / "protocols.json").read_text())
    protocols["seed"]["unknown"] = protocols["seed"]["unknown"][:1]
    (bench / "protocols.json").write_text(json.dumps(protocols))
    with pytest.raises(ManifestError, match="protocols.json has changed"):
        protocol_view(bench, "seed")
    from genprint.io.sources import load_dataset

    with pytest.raises(ManifestError, match="protocols.json has changed"):
        load_dataset(bench)  # the folder given as --data is checked too
    with pytest.raises(ManifestError, match="protocols.json has changed"):
        load_dataset(bench / "manifest.csv")
    (bench / "bench.json").unlink()  # laid out by hand: nothing recorded, nothing checked
    assert protocol_view(bench, "seed").protocol.unknown == tuple(protocols["seed"]["unknown"])


def test_overwriting_moves_the_old_benchmark_aside_before_swapping(bench, monkeypatch):
    """An interrupt between deleting the old folder and renaming the new one used to leave a
    half-deleted benchmark that still read as one; now the old one is moved aside whole, and
    back if the new one cannot take its place."""
    import os

    from genprint.world import bench as bench_module

    before = _digest(bench)
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append((os.path.basename(src), os.path.basename(dst)))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(bench_module.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        build_bench(bench, BenchSettings(per_class=10, seed=7, generators=TINY_ZOO),
                    overwrite=True)
    assert calls[0][0] == "bench" and calls[0][1].startswith(".bench.old-")
    assert _digest(bench) == before  # the old one, whole
    assert [p.name for p in bench.parent.iterdir() if p.name.startswith(".")] == []
