"""Open-set protocols over the built-in world, in the spirit of OSMA (POSE, CVPR 2023).

Each protocol names the **known** sources (``real`` and the generators a method may train on)
and the **unknown** ones (generators it must answer ``unknown`` for). Unknown generators differ
from the known ones:

* ``seed`` — by training seed only (same architecture and data, another seed);
* ``architecture`` — by architecture within a family that stays known;
* ``family`` — by family (no generator of that family is known);
* ``all`` — the union of the three.

A benchmark's manifest gives every source train / val / test rows; :func:`protocol_view`
enforces the protocol: unknown sources contribute their **test** rows only, and real images from
held-out cameras appear in test only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from genprint.io.sources import Item, ManifestError, check_built_bench, read_manifest

REAL = "real"
"""Source name of camera images."""

PROTOCOL_UNKNOWNS: dict[str, tuple[str, ...]] = {
    "seed": ("gan-tconv-s1", "gan-pshuffle-s1"),
    "architecture": ("gan-bilinear-s0", "vae-nearest-s0"),
    "family": ("ddim-pixel-s0", "ddim-pixel-s1"),
}
"""Unknown generators per protocol (``all`` is their union). ``seed``'s differ from a known
generator by training seed only and ``family``'s by family; ``architecture``'s by architecture
within a known family, though their upsampling stacks are known generators' (vae-nearest-s0's
decoder has gan-nearest-s0's layers, gan-bilinear-s0's upsampling is ldm-bilinear-s0's): see
the README's "Known limits of the world"."""


@dataclass(frozen=True)
class Protocol:
    """One open-set protocol: known sources (``real`` included) and unknown generators."""

    name: str
    known: tuple[str, ...]
    unknown: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        """The ``protocols.json`` entry."""
        return {"known": list(self.known), "unknown": list(self.unknown)}


def make_protocols(generators: list[str]) -> dict[str, Protocol]:
    """The protocols ``seed``, ``architecture``, ``family`` and ``all`` for these generators.

    Unknown names absent from ``generators`` are skipped (a world built from part of the zoo);
    a protocol left with no unknown generator is an error, since it would measure nothing.
    """
    available = set(generators)
    chosen = {k: tuple(n for n in v if n in available) for k, v in PROTOCOL_UNKNOWNS.items()}
    chosen["all"] = tuple(sorted({n for v in chosen.values() for n in v}))
    protocols: dict[str, Protocol] = {}
    for name, unknown in chosen.items():
        if not unknown:
            raise ValueError(
                f"protocol {name!r} has no unknown generator among {sorted(available)}; "
                f"it needs one of {PROTOCOL_UNKNOWNS.get(name, chosen['all'])}"
            )
        known = (REAL, *sorted(available - set(unknown)))
        protocols[name] = Protocol(name, known, tuple(sorted(unknown)))
    return protocols


@dataclass
class ProtocolView:
    """A benchmark seen through one protocol: what may be trained on, calibrated on, tested on."""

    protocol: Protocol
    train: list[Item] = field(default_factory=list)
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)
    left_out_test: list[Item] = field(default_factory=list)
    """Test rows of the benchmark whose source the protocol lists neither as known nor as
    unknown (not evaluated)."""

    def is_unknown(self, item: Item) -> bool:
        """Whether ``item`` comes from a source unknown to this protocol."""
        return item.source not in self.protocol.known


def read_protocols(bench_dir: str | os.PathLike[str]) -> dict[str, Protocol]:
    """Protocols stored in ``BENCH/protocols.json``."""
    folder = Path(bench_dir)
    if not folder.is_dir():
        raise ManifestError(f"{bench_dir}: no such benchmark folder")
    path = folder / "protocols.json"
    if not path.is_file():
        raise ManifestError(f"{bench_dir}: no protocols.json (build it with `genprint bench build`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    shape = ('an object {"PROTOCOL": {"known": [SOURCES], "unknown": [SOURCES]}, ...}')
    if not isinstance(raw, dict) or not raw:
        raise ManifestError(f"{path}: expected {shape}")
    protocols = {}
    for name, value in raw.items():
        lists = [value.get(key) if isinstance(value, dict) else None
                 for key in ("known", "unknown")]
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists):
            raise ManifestError(f"{path}: protocol {name!r} needs 'known' and 'unknown' lists of "
                                f"source names; expected {shape}")
        both = sorted(set(lists[0]) & set(lists[1]))  # type: ignore[arg-type]
        if both:
            raise ManifestError(f"{path}: protocol {name!r} lists {', '.join(both)} as both "
                                "known and unknown")
        protocols[name] = Protocol(name, tuple(lists[0]), tuple(lists[1]))  # type: ignore[arg-type]
    return protocols


def protocol_view(bench_dir: str | os.PathLike[str], name: str) -> ProtocolView:
    """Split a benchmark's manifest according to protocol ``name`` (see module doc), after
    :func:`check_built_bench`."""
    held_out = set(check_built_bench(bench_dir))
    protocols = read_protocols(bench_dir)
    if name not in protocols:
        raise ManifestError(f"unknown protocol {name!r}; this benchmark has: {', '.join(protocols)}")
    protocol = protocols[name]
    dataset = read_manifest(Path(bench_dir) / "manifest.csv")
    view = ProtocolView(protocol)
    misplaced = [i for i in dataset.items
                 if i.source == REAL and i.origin in held_out and i.split != "test"]
    if misplaced:
        raise ManifestError(f"{bench_dir}: {len(misplaced)} real image(s) of the held-out "
                            f"camera(s) {', '.join(sorted(held_out))} are in a "
                            f"{misplaced[0].split!r} split (first: {misplaced[0].path}); "
                            "they must be test images only")
    for item in dataset.items:
        if item.source in protocol.known:
            if item.split == "train":
                view.train.append(item)
            elif item.split == "val":
                view.val.append(item)
            elif item.split == "test":
                view.test.append(item)
        elif item.split == "test":
            (view.test if item.source in protocol.unknown else view.left_out_test).append(item)
    present = {i.source for i in dataset.items}
    absent = [s for s in (*protocol.known, *protocol.unknown) if s not in present]
    if absent:
        raise ManifestError(f"protocol {name!r} of {bench_dir} names source(s) without any "
                            f"image in its manifest: {', '.join(absent)}")
    return view
