"""Zoo weights on disk: ``NAME.safetensors`` plus the model card ``NAME.json``.

The card holds the generator's spec (family, architecture, upsampling, seed, resolution, ...),
its parameter count, training information and the sha256 of the weights file, which is checked on
every load. Both files are written to temporary names and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from genprint.storage.atomic import atomic_file, write_text_atomic
from genprint.world.zoo.generator import GeneratorSpec, ZooGenerator

CARD_VERSION = 1


def package_weights_dir() -> Path:
    """The directory of the weights shipped with genprint."""
    return Path(__file__).resolve().parents[2] / "zoo_weights"


def train_hint(name: str = "NAME") -> str:
    """How to give a zoo generator weights (said by every "has no trained weights" error)."""
    return (f"train it with `genprint zoo train {name} --out DIR` and set GENPRINT_ZOO_DIR=DIR "
            "so that genprint finds the weights")


def weights_dirs() -> list[Path]:
    """Where zoo weights are looked up: ``$GENPRINT_ZOO_DIR`` (if set), then the shipped ones."""
    dirs = []
    if os.environ.get("GENPRINT_ZOO_DIR"):
        dirs.append(Path(os.environ["GENPRINT_ZOO_DIR"]))
    dirs.append(package_weights_dir())
    return dirs


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_generator(gen: ZooGenerator, out_dir: str | os.PathLike[str],
                    info: dict[str, Any]) -> dict[str, Any]:
    """Write ``gen``'s weights and card into ``out_dir`` atomically; returns the card."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{gen.name}.safetensors"
    state = {k: v.detach().contiguous() for k, v in gen.state_dict().items()}
    with atomic_file(weights) as tmp:
        save_file(state, str(tmp), metadata={"name": gen.name})
    spec = gen.spec.to_dict()
    card = {
        "card_version": CARD_VERSION,
        "name": gen.name,
        "family": spec["family"],
        "architecture": spec["architecture"],
        "upsampling": spec["upsampling"],
        "seed": spec["seed"],
        "resolution": spec["resolution"],
        "latent_shape": list(gen.latent_shape),
        "has_encoder": gen.has_encoder,
        "parameters": gen.n_parameters(),
        **info,
        "spec": spec,
        "file": weights.name,
        "sha256": sha256_file(weights),
    }
    write_text_atomic(out / f"{gen.name}.json", json.dumps(card, indent=2) + "\n")
    return card


def find_card(name: str) -> Path | None:
    for d in weights_dirs():
        p = d / f"{name}.json"
        if p.exists():
            return p
    return None


def read_card(path: Path) -> dict[str, Any]:
    """A zoo model card; ``ValueError`` naming the file if it is not one."""
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable zoo card ({exc})") from None
    if not isinstance(card, dict):
        raise ValueError(f"{path}: not a zoo card (JSON {type(card).__name__})")  # noqa: TRY004
    if card.get("card_version", 0) > CARD_VERSION:
        raise ValueError(f"{path}: zoo card version {card['card_version']} is newer than this "
                         "genprint understands; upgrade genprint")
    return card


def load_generator(card_path: Path, verify: bool = True) -> ZooGenerator:
    """Build the generator described by a card and load its weights (sha256 checked)."""
    from safetensors.torch import load_file

    card = read_card(card_path)
    weights = card_path.parent / card["file"]
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing (the card {card_path.name} refers to it)")
    if verify and sha256_file(weights) != card["sha256"]:
        raise ValueError(f"{weights}: sha256 does not match its card; the file was modified or "
                         "is corrupt")
    spec_d = dict(card["spec"])
    spec_d.pop("architecture", None)
    gen = ZooGenerator(GeneratorSpec(**spec_d))
    gen.load_state_dict(load_file(str(weights)))
    return gen.freeze()
