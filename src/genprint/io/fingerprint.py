"""Pixel fingerprints: which images are the same picture, whatever file they came in.

A fingerprint is a 16-byte BLAKE2b digest of an image's decoded pixels and its shape, so the
same picture saved as PNG and as TIFF, or with its metadata stripped, has one fingerprint, and
any change of one pixel value gives another. (A re-encoded JPEG has other pixels: it is another
picture here; near-duplicates are not detected.)

A fitted attributor keeps the fingerprints of its training and validation images
(:attr:`genprint.methods.base.Attributor.training_fingerprints_`, saved in the model directory),
so that ``genprint eval`` can say which test images the model has already seen, and training
can say when one picture appears under two sources or in both training and validation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from genprint.io.images import ImageError
from genprint.io.sources import Item

DIGEST_BYTES = 16
"""Bytes per fingerprint (128 bits: a chance collision needs ~2⁶⁴ images)."""


def fingerprint(image: np.ndarray) -> bytes:
    """The fingerprint of one decoded image (any shape and dtype; the shape and dtype count)."""
    a = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    digest.update(f"{a.dtype.str}{a.shape}".encode())
    digest.update(memoryview(a).cast("B"))
    return digest.digest()


def fingerprints(images: Sequence[np.ndarray]) -> np.ndarray:
    """Fingerprints of ``images`` as an (N, 16) uint8 array (rows in input order)."""
    out = np.zeros((len(images), DIGEST_BYTES), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.frombuffer(fingerprint(img), dtype=np.uint8)
    return out


def as_keys(rows: np.ndarray) -> list[bytes]:
    """An (N, 16) fingerprint array as N hashable byte strings."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8).reshape(-1, DIGEST_BYTES)
    return [r.tobytes() for r in rows]


def check_fingerprints(rows: object) -> np.ndarray:
    """``rows`` as an (N, 16) uint8 array; ValueError if it is not one (a damaged model)."""
    a = np.asarray(rows)
    if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != DIGEST_BYTES:
        raise ValueError(f"training fingerprints must be an (N, {DIGEST_BYTES}) uint8 array, "
                         f"got {a.dtype} {a.shape}")
    return a


def data_digest(rows: np.ndarray, sources: Sequence[str], splits: Sequence[str]) -> str:
    """Hex sha256 identifying a labelled image set by content: the sorted lines
    ``fingerprint<TAB>source<TAB>split`` of its images. File names, paths, formats and order do
    not count; any pixel, label or split does. A model's card records the digest of the
    training and validation images it was fitted on (``training.data_digest``); recompute it
    with :func:`dataset_digest` to check a copy of the data is the one that trained it."""
    lines = sorted(f"{key.hex()}\t{src}\t{split}\n"
                   for key, src, split in zip(as_keys(rows), sources, splits, strict=True))
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def dataset_digest(items: Sequence[Item], min_size: int = 1) -> str:
    """:func:`data_digest` of labelled items (each with a source and a split), reading every
    image; files that cannot be read, or are smaller than ``min_size`` (the method's
    ``min_size``), are left out, as training leaves them out. E.g. for the training and
    validation items a model was fitted on."""
    from genprint.io.batches import iter_images

    keys, sources, splits = [], [], []
    for item, result in zip(items, iter_images([i.path for i in items], min_size=min_size),
                            strict=True):
        if not isinstance(result.pixels, ImageError):
            keys.append(fingerprint(result.pixels))
            sources.append(str(item.source))
            splits.append(str(item.split))
    rows = (np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, DIGEST_BYTES)
            if keys else np.zeros((0, DIGEST_BYTES), np.uint8))
    return data_digest(rows, sources, splits)
