"""``genprint train probe`` on a tiny fake benchmark with a user checkpoint, then ``attribute``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from genprint.cli.app import app
from tests.backbones.user_checkpoints import save_hf_clip, save_open_clip_checkpoint

torch.set_num_threads(1)
pytest.importorskip("faiss")
runner = CliRunner()

COLOURS = {"real": (110, 110, 110), "gan-a": (170, 90, 90), "gan-b": (90, 90, 170),
           "gan-c": (90, 170, 90)}


def fake_bench(root: Path, per_split: int = 8) -> Path:
    """manifest.csv (path,source,split,kind,origin) + protocols.json, 32×32 PNG images."""
    rng = np.random.default_rng(0)
    rows = []
    for source, colour in COLOURS.items():
        (root / "images" / source).mkdir(parents=True)
        for split, n in (("train", 3 * per_split), ("val", per_split), ("test", per_split)):
            for k in range(n):
                img = rng.normal(0, 25, (32, 32, 3)) + np.array(colour) + rng.normal(0, 10, 3)
                rel = f"images/{source}/{split}-{k}.png"
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / rel)
                rows.append({"path": rel, "source": source, "split": split,
                             "kind": "real" if source == "real" else "generated",
                             "origin": "cam-1" if source == "real" else source})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "source", "split", "kind", "origin"])
        writer.writeheader()
        writer.writerows(rows)
    protocols = {"all": {"known": ["real", "gan-a", "gan-b"], "unknown": ["gan-c"]}}
    (root / "protocols.json").write_text(json.dumps(protocols))
    return root


def test_train_probe_with_user_checkpoint_then_attribute(tmp_path: Path) -> None:
    bench = fake_bench(tmp_path / "bench")
    ckpt = save_open_clip_checkpoint(tmp_path / "my-clip.pt")
    model = tmp_path / "model"
    out = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--protocol", "all",
                              "--backbone", str(ckpt), "--backbone-model", "ViT-tiny",
                              "--out", str(model), "--per-class", "20",
                              "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["classes"] == ["gan-a", "gan-b", "real"]
    assert summary["n_train_used"] == 60 and summary["input_size"] == 32
    assert len(summary["layers"]) == 2 and summary["layer"] in ("block0", "block1")
    assert (model / "layers.json").is_file()

    mixed = tmp_path / "inputs"
    mixed.mkdir()
    for source in ("gan-a", "gan-c"):
        for p in sorted((bench / "images" / source).glob("test-*.png"))[:2]:
            (mixed / f"{source}-{p.name}").write_bytes(p.read_bytes())
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / "tiny.png")
    (mixed / "broken.png").write_text("not an image")
    out = runner.invoke(app, ["attribute", str(model), str(mixed), "--json"])
    assert out.exit_code == 0, out.output
    rows = {Path(r["path"]).name: r for r in json.loads(out.stdout)}
    assert len(rows) == 6
    assert rows["tiny.png"]["error_code"] == "too_small"
    assert rows["broken.png"]["error_code"] in ("not_an_image", "unreadable", "corrupt")
    good = [r for name, r in rows.items() if name.startswith("gan-a")]
    assert all(r["candidate"] == "gan-a" for r in good)
    assert all(set(r["scores"]) == {"gan-a", "gan-b", "real"} for r in good)


def test_train_probe_knn_fixed_layer_and_errors(tmp_path: Path) -> None:
    bench = fake_bench(tmp_path / "bench", per_split=4)
    ckpt = save_open_clip_checkpoint(tmp_path / "my-clip.pt")
    out = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone", str(ckpt),
                              "--head", "knn", "--layer", "0", "--score", "mahalanobis",
                              "--no-cache", "--out", str(tmp_path / "m")])
    assert out.exit_code == 0, out.output
    assert "chosen" in out.output  # the per-layer table is printed
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["layer"]["name"] == "block0" and card["probe"]["score"] == "mahalanobis"
    bad = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone",
                              str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "unknown backbone" in bad.output
    bad = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone", str(ckpt),
                              "--head", "svm", "--out", str(tmp_path / "y")])
    assert bad.exit_code != 0
    bad = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone", str(ckpt),
                              "--pad", "zeros", "--out", str(tmp_path / "z")])
    assert bad.exit_code != 0 and "pad" in bad.output


def test_train_probe_with_transformers_clip_folder_then_attribute(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    bench = fake_bench(tmp_path / "bench", per_split=4)
    folder = save_hf_clip(tmp_path / "my-hf-clip")  # a CLIPModel written by save_pretrained
    model = tmp_path / "model"
    out = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone", str(folder),
                              "--out", str(model), "--no-cache", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["backbone"] == str(folder.resolve()) and summary["input_size"] == 32
    assert [r["layer"] for r in summary["layers"]] == ["layer1", "layer2", "layer3"]
    out = runner.invoke(app, ["attribute", str(model), str(bench / "images" / "gan-b"),
                              "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert len(rows) == 20 and all(r["candidate"] in ("gan-a", "gan-b", "real") for r in rows)
    test_rows = [r for r in rows if Path(r["path"]).name.startswith("test-")]
    assert np.mean([r["candidate"] == "gan-b" for r in test_rows]) >= 0.75


def test_train_probe_padded_to_a_given_input_size(tmp_path: Path) -> None:
    bench = fake_bench(tmp_path / "bench", per_split=4)
    ckpt = save_open_clip_checkpoint(tmp_path / "clip48.pt", image=48)
    model = tmp_path / "model"
    out = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone", str(ckpt),
                              "--pad", "reflect", "--input-size", "48", "--no-cache",
                              "--out", str(model), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["n_train_used"] == 36 and summary["n_skipped"] == 0  # 32×32 images padded
    assert summary["input_size"] == 48 and summary["pad"] == "reflect"
    assert summary["min_image_side"] == 32  # smaller images are refused: it never saw them
    card = json.loads((model / "card.json").read_text())
    assert card["backbone"]["spec"]["input_size"] == 48
    assert card["backbone"]["preprocessing"]["extra"]["pad"] == "reflect"
    out = runner.invoke(app, ["attribute", str(model), str(bench / "images" / "gan-a"), "--json"])
    assert out.exit_code == 0, out.output
    assert all(r["error_code"] is None for r in json.loads(out.stdout))


def test_train_probe_on_genprint_s_own_forensic_cnn_then_attribute(tmp_path: Path) -> None:
    """``--backbone forensic-cnn`` is the shipped camera checkpoint: the saved model loads and
    attributes (an untrained network, built anew at every load, was refused on load)."""
    bench = fake_bench(tmp_path / "bench")
    model = tmp_path / "model"
    out = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone",
                              "forensic-cnn", "--out", str(model), "--no-cache", "--json"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["attribute", str(model), str(bench / "images" / "gan-a"),
                              "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert len(rows) == 40 and all(r["error_code"] is None for r in rows)
    assert np.mean([r["candidate"] == "gan-a" for r in rows]) >= 0.75  # forensic, not colour, features


def test_train_probe_keep_decoded_budget_gives_the_same_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--keep-decoded-mb 0`` (every file decoded again in the feature pass) reaches the
    reading pass and saves the model the default budget does; a negative budget and the option
    with --ray are refused."""
    from genprint.methods import two_pass

    budgets = []
    real_passes = two_pass.local_passes

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        budgets.append(args[4] if len(args) > 4 else kwargs.get("keep_bytes"))
        return real_passes(*args, **kwargs)

    monkeypatch.setattr(two_pass, "local_passes", spy)
    bench = fake_bench(tmp_path / "bench", per_split=4)
    ckpt = save_open_clip_checkpoint(tmp_path / "clip.pt")
    summaries = []
    for name, extra in (("default", []), ("none-kept", ["--keep-decoded-mb", "0"])):
        out = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone",
                                  str(ckpt), "--out", str(tmp_path / name), "--no-cache",
                                  "--json", *extra])
        assert out.exit_code == 0, out.output
        summaries.append(json.loads(out.stdout))
    assert budgets == [two_pass.KEEP_DECODED_BYTES, 0]
    assert summaries[0]["thresholds"] == summaries[1]["thresholds"]
    assert summaries[0]["layers"] == summaries[1]["layers"]
    # the same model to the bit: every saved file but the card (which records times)
    files = [{p.name: p.read_bytes() for p in (tmp_path / name).iterdir()
              if p.is_file() and p.suffix != ".json" or p.name == "layers.json"}
             for name in ("default", "none-kept")]
    assert len(files[0]) >= 2 and files[0] == files[1]
    for extra in (["--keep-decoded-mb", "-1"], ["--keep-decoded-mb", "8", "--ray"]):
        bad = runner.invoke(app, ["train", "probe", "--bench", str(bench), "--backbone",
                                  str(ckpt), "--out", str(tmp_path / "new" / "bad"), *extra])
        assert bad.exit_code == 2 and "--keep-decoded-mb" in bad.output, bad.output
        assert not (tmp_path / "new").exists()
    assert "local fits only" in bad.output
