"""Test-set capping for slow methods: a fixed, per-source, path-ordered subset."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from genprint.evaluation.evaluate import cap_test_items, score_results
from genprint.io.sources import Item
from genprint.results import Attribution


def _items() -> list[Item]:
    out = []
    for source, n in (("real", 5), ("gan-a", 2), ("gan-b", 4)):
        for k in reversed(range(n)):  # deliberately not in path order
            out.append(Item(Path(f"images/{source}/{k:03d}.png"), source, "test"))
    return out


def test_cap_keeps_the_first_images_of_each_source_in_path_order() -> None:
    kept = cap_test_items(_items(), 3)
    by_source: dict[str, list[str]] = {}
    for item in kept:
        by_source.setdefault(str(item.source), []).append(item.path.name)
    assert {k: sorted(v) for k, v in by_source.items()} == {
        "real": ["000.png", "001.png", "002.png"],
        "gan-a": ["000.png", "001.png"],  # fewer than the cap: all of them
        "gan-b": ["000.png", "001.png", "002.png"],
    }
    # the original order of the kept items is preserved, and capping is deterministic
    positions = [_items().index(i) for i in kept]
    assert positions == sorted(positions)
    assert cap_test_items(_items(), 3) == kept


def test_no_cap_keeps_everything_and_a_bad_cap_is_refused() -> None:
    assert cap_test_items(_items(), None) == _items()
    with pytest.raises(ValueError, match="≥ 1"):
        cap_test_items(_items(), 0)


def _answer(path: str, label: str, candidate: str, score: float, classes: list[str]) -> Attribution:
    return Attribution(path=path, label=label, candidate=candidate, score=score, threshold=0.5,
                       is_unknown=label == "unknown",
                       scores={c: (score if c == candidate else 0.0) for c in classes})


def test_held_out_camera_accuracy_is_undefined_without_a_real_class() -> None:
    items = [Item(Path("r0.png"), "real", "test", "real", "cam-09"),
             Item(Path("r1.png"), "real", "test", "real", "cam-10"),
             Item(Path("g0.png"), "gan-a", "test", "generated"),
             Item(Path("g1.png"), "gan-b", "test", "generated")]
    with_real = ["gan-a", "real"]
    answers = [_answer("r0.png", "real", "real", 0.9, with_real),
               _answer("r1.png", "unknown", "real", 0.1, with_real),
               _answer("g0.png", "gan-a", "gan-a", 0.9, with_real),
               _answer("g1.png", "unknown", "gan-a", 0.2, with_real)]
    out = score_results(items, answers, with_real, held_out_cameras=["cam-09", "cam-10"])
    assert out["held_out_camera_real_accuracy"] == 0.5 and out["n_held_out_camera_test"] == 2
    # a verifier of generators (no `real` class) can never answer `real`: NaN, not 0.0
    gens = ["gan-a"]
    answers = [_answer(a.path, "unknown" if a.label == "real" else a.label, "gan-a",
                       a.score or 0.0, gens) for a in answers]
    out = score_results(items, answers, gens, held_out_cameras=["cam-09", "cam-10"])
    assert math.isnan(out["held_out_camera_real_accuracy"])
    assert math.isnan(out["real_vs_generated_auroc"])
