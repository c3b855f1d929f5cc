"""Test-set capping for slow methods: a fixed, per-source, path-ordered subset."""

from __future__ import annotations

from pathlib import Path

import pytest

from genprint.evaluation.evaluate import cap_test_items
from genprint.io.sources import Item


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
