"""Building a benchmark folder from the built-in world (``genprint bench build``).

The attribution task (default) writes::

    OUT/images/<source>/<n>.png     real camera images and samples of every zoo generator
    OUT/manifest.csv                path,source,split,kind,origin
    OUT/protocols.json              {name: {"known": [...], "unknown": [...]}}
    OUT/bench.json                  the build settings

Every source gets ``per_class`` images split 60 / 20 / 20 into train / val / test. Real images
come from the non-held-out cameras; the held-out cameras add real **test** images only
(``origin`` names the camera). Generated images are samples of the shipped zoo. Whatever the
format, real and generated images go through the same final step (PNG, lossless; or JPEG at one
quality for all), so no method can learn the container instead of the source.

The camera task (``task="camera"``) writes the camera-identification set used for pretraining:
one source per non-held-out camera model, plus ``random_cameras`` random pretraining cameras
(``rcam-001`` ..., :mod:`genprint.world.cameras`).

Everything is deterministic for a seed: two builds with the same arguments are byte-identical.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from genprint.storage.model_dir import check_output_dir, sha256_file
from genprint.world.protocols import REAL, make_protocols

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
MANIFEST_COLUMNS = ("path", "source", "split", "kind", "origin")


@dataclass(frozen=True)
class BenchSettings:
    """How a benchmark was built (stored as ``bench.json``)."""

    task: Literal["attribution", "camera"] = "attribution"
    per_class: int = 200
    seed: int = 0
    size: int = 32
    format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 90
    generators: tuple[str, ...] | None = None
    random_cameras: int = 0  # camera task only: extra random camera models (rcam-001 ...)


def stable_seed(*parts: object) -> int:
    """A seed derived from names and numbers, stable across runs and Python versions."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode("utf-8")) & 0x7FFFFFFF


def split_counts(n: int) -> tuple[int, int, int]:
    """(train, val, test) counts for ``n`` images, 60 / 20 / 20, each ≥ 1 when n ≥ 3."""
    if n < 3:
        raise ValueError(f"need at least 3 images per class for train/val/test, got {n}")
    n_val = max(1, round(n * SPLIT_FRACTIONS[1]))
    n_test = max(1, round(n * SPLIT_FRACTIONS[2]))
    return n - n_val - n_test, n_val, n_test


def encode(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """The final, shared processing step of every image: PNG (lossless) or JPEG at ``quality``."""
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=6)
    elif fmt == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=2)
    else:
        raise ValueError(f"format must be png or jpeg, got {fmt!r}")
    return buf.getvalue()


def _split_names(n: int) -> list[str]:
    tr, va, te = split_counts(n)
    return ["train"] * tr + ["val"] * va + ["test"] * te


def build_bench(
    out: str | os.PathLike[str],
    settings: BenchSettings = BenchSettings(),
    overwrite: bool = False,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict[str, object]:
    """Build a benchmark folder (see module doc); returns a summary with counts per source.

    The folder is assembled under a temporary name and renamed into place when complete.
    ``on_progress(source, n_images)`` is called after each source is written.
    """
    from genprint.world import cameras

    if settings.random_cameras and settings.task != "camera":
        raise ValueError("random cameras are for the camera task only (--task camera)")
    target = Path(out)
    if target.is_dir() and not any(target.iterdir()):
        overwrite = True  # an empty folder is simply filled
    target = check_output_dir(target, overwrite, kind="benchmark")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    rows: list[dict[str, str]] = []
    ext = "png" if settings.format == "png" else "jpg"

    def write(source: str, images: np.ndarray, splits: Sequence[str], kind: str,
              origins: Sequence[str]) -> None:
        folder = tmp / "images" / source
        folder.mkdir(parents=True, exist_ok=True)
        start = len(list(folder.iterdir()))
        for k, (img, split, origin) in enumerate(zip(images, splits, origins, strict=True)):
            rel = f"images/{source}/{start + k:05d}.{ext}"
            (tmp / rel).write_bytes(encode(img, settings.format, settings.jpeg_quality))
            rows.append({"path": rel, "source": source, "split": split, "kind": kind,
                         "origin": origin})
        if on_progress:
            on_progress(source, len(images))

    try:
        known_cams = cameras.camera_names(held_out=False)
        if settings.task == "camera":
            known_cams += cameras.random_camera_names(settings.random_cameras)
            for cam in known_cams:
                imgs, _ = cameras.camera_images(settings.per_class, settings.size,
                                                stable_seed(settings.seed, "camera-task", cam),
                                                cameras=[cam])
                write(cam, imgs, _split_names(settings.per_class), "real", [cam] * len(imgs))
            protocols = {"camera": {"known": known_cams, "unknown": []}}
        else:
            from genprint.world import zoo

            names = list(settings.generators or [g["name"] for g in zoo.list_generators()])
            imgs, cams = cameras.camera_images(settings.per_class, settings.size,
                                               stable_seed(settings.seed, REAL), held_out=False)
            write(REAL, imgs, _split_names(settings.per_class), "real", cams)
            n_held = split_counts(settings.per_class)[2]
            imgs, cams = cameras.camera_images(n_held, settings.size,
                                               stable_seed(settings.seed, REAL, "held-out"),
                                               held_out=True)
            write(REAL, imgs, ["test"] * n_held, "real", cams)
            for name in names:
                generator = zoo.load(name)
                if generator.resolution != settings.size:
                    raise ValueError(
                        f"generator {name} makes {generator.resolution}×{generator.resolution} "
                        f"images, the benchmark asks for {settings.size}×{settings.size}"
                    )
                imgs = generator.sample(settings.per_class, seed=stable_seed(settings.seed, name))
                write(name, imgs, _split_names(settings.per_class), "generated",
                      [name] * len(imgs))
            protocols = {k: p.to_json() for k, p in make_protocols(names).items()}
        with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        (tmp / "protocols.json").write_text(json.dumps(protocols, indent=2, sort_keys=True) + "\n")
        info = asdict(settings)
        info["generators"] = list(settings.generators) if settings.generators else None
        # checked whenever a protocol is read (world.protocols.check_built_bench)
        info["manifest_sha256"] = sha256_file(tmp / "manifest.csv")
        info["protocols_sha256"] = sha256_file(tmp / "protocols.json")
        info["held_out_cameras"] = ([] if settings.task == "camera"
                                    else cameras.camera_names(held_out=True))
        (tmp / "bench.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        if target.exists():  # moved aside first: an interrupt never leaves half of the old one
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)  # the old benchmark back, whole
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r["source"], {}).setdefault(r["split"], 0)
        counts[r["source"]][r["split"]] += 1
    return {"out": str(target), "n_images": len(rows), "counts": counts,
            "protocols": sorted(protocols)}
