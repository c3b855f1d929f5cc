"""Open-set protocols: each unknown generator differs as the protocol says; integrity of views."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from genprint.world.protocols import PROTOCOL_UNKNOWNS, REAL, make_protocols, protocol_view

ZOO = ["gan-tconv-s0", "gan-tconv-s1", "gan-nearest-s0", "gan-bilinear-s0", "gan-pshuffle-s0",
       "gan-pshuffle-s1", "vae-tconv-s0", "vae-nearest-s0", "ddim-pixel-s0", "ddim-pixel-s1",
       "ldm-vae-s0"]


def test_protocols_partition_sources_and_all_is_the_union() -> None:
    protocols = make_protocols(ZOO)
    assert set(protocols) == {"seed", "architecture", "family", "all"}
    for p in protocols.values():
        assert REAL in p.known and REAL not in p.unknown
        assert not set(p.known) & set(p.unknown)
        assert set(p.known) | set(p.unknown) == {REAL, *ZOO}
    union = {n for k in ("seed", "architecture", "family") for n in protocols[k].unknown}
    assert set(protocols["all"].unknown) == union


def test_seed_unknowns_have_a_known_twin_and_family_unknowns_do_not() -> None:
    protocols = make_protocols(ZOO)
    for name in protocols["seed"].unknown:
        twin = name.rsplit("-s", 1)[0]
        assert any(k.startswith(twin + "-s") for k in protocols["seed"].known)
    for name in protocols["family"].unknown:
        family = name.split("-")[0]
        assert not any(k.split("-")[0] == family for k in protocols["family"].known)


def test_a_protocol_without_unknowns_is_an_error() -> None:
    with pytest.raises(ValueError, match="no unknown generator"):
        make_protocols([g for g in ZOO if g not in PROTOCOL_UNKNOWNS["seed"]])


def _fake_bench(root: Path) -> Path:
    protocols = {k: p.to_json() for k, p in make_protocols(ZOO).items()}
    (root / "protocols.json").write_text(json.dumps(protocols))
    rows = []
    for src in [REAL, *ZOO]:
        for split in ("train", "val", "test"):
            rows.append({"path": f"images/{src}/{split}.png", "source": src, "split": split})
    rows.append({"path": "images/real/held.png", "source": REAL, "split": "test"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "source", "split"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.mark.parametrize("name", ["seed", "architecture", "family", "all"])
def test_unknown_sources_appear_in_test_only(tmp_path: Path, name: str) -> None:
    view = protocol_view(_fake_bench(tmp_path), name)
    unknown = set(view.protocol.unknown)
    assert not {i.source for i in view.train + view.val} & unknown
    assert {i.source for i in view.test} >= unknown
    assert {i.source for i in view.train} == set(view.protocol.known)
    assert sum(view.is_unknown(i) for i in view.test) == len(unknown)


def test_protocols_naming_missing_or_doubled_sources_are_refused(tmp_path: Path) -> None:
    import json

    from genprint.io.sources import ManifestError
    from genprint.world.protocols import protocol_view, read_protocols

    (tmp_path / "real").mkdir()
    (tmp_path / "manifest.csv").write_text("path,source,split\nreal/a.png,real,train\n")
    (tmp_path / "protocols.json").write_text(json.dumps(
        {"p": {"known": ["real", "nosuch"], "unknown": []}}))
    with pytest.raises(ManifestError, match="without any image in its manifest: nosuch"):
        protocol_view(tmp_path, "p")
    (tmp_path / "protocols.json").write_text(json.dumps(
        {"p": {"known": ["real"], "unknown": ["real"]}}))
    with pytest.raises(ManifestError, match="both known and unknown"):
        read_protocols(tmp_path)
    (tmp_path / "protocols.json").write_text('{"p": "real"}')
    with pytest.raises(ManifestError, match="needs 'known' and 'unknown' lists"):
        read_protocols(tmp_path)
