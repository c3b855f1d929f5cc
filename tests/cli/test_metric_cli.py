"""CLI end to end for `metric`: pretrain camera, train metric, attribute, enroll (tiny benches)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import genprint
from genprint.cli.app import app
from tests.conftest import textured

runner = CliRunner()
TINY = ["--width", "4", "--embedding-dim", "16", "--batch-size", "16"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_bench(root: Path, sources: dict[str, Callable[[np.random.Generator], np.ndarray]],
                protocols: dict[str, dict[str, list[str]]], per_split: dict[str, int]) -> Path:
    """A fake benchmark: images/<source>/*.png, manifest.csv and protocols.json."""
    rng = np.random.default_rng(0)
    rows = []
    for source, make in sources.items():
        (root / "images" / source).mkdir(parents=True)
        n = 0
        for split, count in per_split.items():
            for _ in range(count):
                rel = f"images/{source}/{n:05d}.png"
                Image.fromarray(make(rng)).save(root / rel)
                rows.append({"path": rel, "source": source, "split": split,
                             "kind": "real" if source.startswith(("real", "cam")) else "generated",
                             "origin": f"cam-{n % 2}" if source == "real" else source})
                n += 1
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "source", "split", "kind", "origin"])
        writer.writeheader()
        writer.writerows(rows)
    (root / "protocols.json").write_text(json.dumps(protocols))
    return root


def period(p: int, size: int = 32) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda rng: textured(rng, size, size, p)


@pytest.fixture
def benches(tmp_path: Path) -> tuple[Path, Path]:
    camera = write_bench(tmp_path / "cam", {"cam-a": period(2), "cam-b": period(4)},
                         {"camera": {"known": ["cam-a", "cam-b"], "unknown": []}},
                         {"train": 8, "val": 3, "test": 3})
    attribution = write_bench(
        tmp_path / "bench", {"real": period(3), "gen-a": period(2), "gen-b": period(5),
                             "gen-c": period(7)},
        {"all": {"known": ["real", "gen-a", "gen-b"], "unknown": ["gen-c"]}},
        {"train": 8, "val": 4, "test": 4})
    return camera, attribution


def invoke(*args: str) -> dict:
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_pretrain_train_attribute_enroll(benches: tuple[Path, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    camera, bench = benches
    ckpt, model = tmp_path / "ckpt", tmp_path / "model"
    pre = invoke("pretrain", "camera", "--bench", str(camera), "--out", str(ckpt), "--epochs",
                 "1", *TINY)
    assert pre["cameras"] == ["cam-a", "cam-b"] and (ckpt / "card.json").is_file()
    summary = invoke("train", "metric", "--bench", str(bench), "--protocol", "all", "--out",
                     str(model), "--init", "camera", "--camera-ckpt", str(ckpt), "--epochs", "1",
                     "--batch-size", "16", "--origin-classes")
    assert summary["classes"] == ["gen-a", "gen-b", "real"] and summary["init"] == "camera"
    assert summary["n_train"] == 24 and summary["n_val"] == 12
    card = json.loads((model / "card.json").read_text())
    assert card["backbone"]["architecture"]["width"] == 4  # taken from the checkpoint
    assert card["backbone"]["preprocessing"]["crop"] == "tiles"
    assert card["training"]["loss_classes"] == 4  # real's two cameras (manifest origins) split
    import hashlib

    manifest = (bench / "manifest.csv").read_bytes()
    assert card["training"]["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert len(card["training"]["data_digest"]) == 64 and card["created"]["torch_threads"] >= 1

    rows = invoke("attribute", str(model), str(bench / "images" / "gen-c"))
    assert len(rows) == 16 and all(r["error"] is None for r in rows)
    assert all(set(r["scores"]) == {"gen-a", "gen-b", "real"} for r in rows)

    before = genprint.load(model)
    enrolled = invoke("enroll", str(model), "--source", "gen-c",
                      *map(str, sorted((bench / "images" / "gen-c").glob("*.png"))[:5]))
    assert enrolled["source"] == "gen-c" and enrolled["n_images"] == 5
    assert enrolled["model_sha256_before"] == before.model_sha256_  # the history of a model
    assert len(enrolled["image_fingerprints"]) == 5 and enrolled["enrolled_utc"].endswith("Z")
    assert enrolled["separator"] == "none (off by default)"
    assert 0.0 <= enrolled["loo_recall"] <= 1.0  # the leave-one-out self-check ran
    assert enrolled["overlap_samples"] > 0 and 0.0 <= enrolled["overlap_share"] <= 1.0
    assert set(enrolled["overlap_taken"]) <= {"gen-a", "gen-b", "real"}
    after = genprint.load(model)
    assert after.classes_ == ["gen-a", "gen-b", "real", "gen-c"]
    n_before = len(before.references_)
    np.testing.assert_array_equal(after.references_[:n_before], before.references_)
    np.testing.assert_array_equal(after.reference_sources_[:n_before], before.reference_sources_)
    from genprint.io.fingerprint import fingerprint
    from genprint.io.images import read_image

    enrolled_prints = {fingerprint(read_image(p))
                       for p in sorted((bench / "images" / "gen-c").glob("*.png"))[:5]}
    kept = {r.tobytes() for r in after.training_fingerprints_}
    assert len(before.training_fingerprints_) == 36  # the 24 training and 12 validation images
    assert kept == {r.tobytes() for r in before.training_fingerprints_} | enrolled_prints
    assert {bytes.fromhex(h) for h in enrolled["image_fingerprints"]} == enrolled_prints
    card_after = json.loads((model / "card.json").read_text())
    assert card_after["created"] == card["created"] and "modified" in card_after
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no leftover temp dirs
    out = runner.invoke(app, ["enroll", str(model), "--source", "gen-c",
                              str(bench / "images" / "gen-c" / "00000.png")])
    assert out.exit_code == 2 and "already known" in out.output
    sep = invoke("enroll", str(model), "--source", "gen-c2", "--separator",
                 *map(str, sorted((bench / "images" / "gen-c").glob("*.png"))[5:9]))
    assert sep["separator"].startswith("logistic regression")
    assert np.isfinite(genprint.load(model).separators_[-1]).all()
    copy = tmp_path / "model-c3"
    few = [str(p) for p in sorted((bench / "images" / "gen-c").glob("*.png"))[9:13]]
    text = runner.invoke(app, ["enroll", str(model), "--source", "gen-c3", "--out", str(copy),
                               *few])
    assert text.exit_code == 0, text.output
    flat = " ".join(text.output.split())
    assert "leave-one-out check:" in flat and "overlap check:" in flat
    assert "stored images of its other sources" in flat
    assert genprint.load(copy).classes_[-1] == "gen-c3"  # written to --out ...
    assert "gen-c3" not in genprint.load(model).classes_  # ... and the model left as it was
    again = runner.invoke(app, ["enroll", str(model), "--source", "gen-c3", "--out", str(copy),
                                *few])
    assert again.exit_code == 2 and "exists" in again.output
    # another run writing the same --out while this one works: refused, its output kept
    late, load = tmp_path / "model-late", genprint.load

    def load_while_another_run_writes(path: Path) -> object:
        load(copy).save(late)
        return load(path)

    monkeypatch.setattr(genprint, "load", load_while_another_run_writes)
    raced = runner.invoke(app, ["enroll", str(model), "--source", "gen-c4", "--out", str(late),
                                *few])
    monkeypatch.undo()
    assert raced.exit_code == 2 and "exists" in raced.output
    assert "nothing was written" in " ".join(raced.output.split())
    assert genprint.load(late).classes_[-1] == "gen-c3"
    # pictures the model holds (a training image, an enrolled one) stop the enrolment, named;
    # a file of one colour is skipped with the others that cannot be used, and listed in --json
    from PIL import Image

    card_bytes = (model / "card.json").read_bytes()
    import csv

    with open(bench / "manifest.csv", newline="", encoding="utf-8") as fh:
        training_image = bench / next(r["path"] for r in csv.DictReader(fh)
                                      if r["split"] == "train" and r["source"] == "real")
    gen_c = sorted((bench / "images" / "gen-c").glob("*.png"))
    held = runner.invoke(app, ["enroll", str(model), "--source", "gen-d", str(training_image),
                               str(gen_c[6]), *map(str, gen_c[13:15])],  # gen_c[6]: in gen-c2
                         env={"COLUMNS": "300"})
    said = " ".join(held.output.split())
    assert held.exit_code == 2 and "2 of the 4 image(s) are pictures the model" in said
    assert str(training_image) in said and str(gen_c[6]) in said
    assert "Nothing was changed" in said and (model / "card.json").read_bytes() == card_bytes
    Image.new("RGB", (40, 40), (20, 30, 40)).save(tmp_path / "flat.png")
    rest = [str(p) for p in sorted((bench / "images" / "gen-c").glob("*.png"))[13:16]]
    skipped = invoke("enroll", str(model), "--source", "gen-d", "--out", str(tmp_path / "md"),
                     str(tmp_path / "flat.png"), *rest)
    assert skipped["n_images"] == 3 and skipped["n_skipped"] == 1
    assert [(Path(r["path"]).name, r["error_code"]) for r in skipped["skipped"]] == [
        ("flat.png", "no_content")]
    inside = runner.invoke(app, ["attribute", str(model), rest[0], "--out",
                                 str(model / "results.csv")])
    assert inside.exit_code == 2 and "inside the model folder" in " ".join(inside.output.split())
    assert (model / "card.json").read_bytes() == card_bytes and genprint.load(model)


def test_train_metric_from_scratch_with_data(tmp_path: Path, toy_sources: Path) -> None:
    summary = invoke("train", "metric", "--data", str(toy_sources), "--out", str(tmp_path / "m"),
                     "--init", "scratch", "--epochs", "1", *TINY)
    assert summary["classes"] == ["alpha", "beta", "gamma"] and summary["init"] == "scratch"
    out = runner.invoke(app, ["train", "metric", "--data", str(toy_sources), "--out",
                              str(tmp_path / "m"), "--init", "scratch"])
    assert out.exit_code == 2 and "exists" in out.output


def test_enroll_refuses_a_method_without_enrolment(tmp_path: Path, toy_sources: Path) -> None:
    invoke("train", "baseline", "--data", str(toy_sources), "--out", str(tmp_path / "b"))
    out = runner.invoke(app, ["enroll", str(tmp_path / "b"), "--source", "new",
                              str(toy_sources / "alpha" / "00.png")])
    assert out.exit_code == 2 and "enrolment" in out.output


def test_an_overlap_with_real_photographs_warns_of_unseen_cameras(
        capsys: pytest.CaptureFixture[str]) -> None:
    from genprint.cli.enroll import _print_overlap_check

    _print_overlap_check({"overlap_taken": {"gen-a": 0.02}, "overlap_samples": 100,
                          "separator": "none (off by default)"})
    assert "cameras the model was not trained on" not in capsys.readouterr().err
    _print_overlap_check({"overlap_taken": {"real": 0.03}, "overlap_samples": 100,
                          "separator": "none (off by default)"})
    said = " ".join(capsys.readouterr().err.split())
    assert "takes 3.0% of real" in said and "cameras the model was not trained on" in said
