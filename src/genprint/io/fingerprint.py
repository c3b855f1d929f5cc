"""Pixel fingerprints: which images are the same picture, whatever file they came in.

A fingerprint is the image's size and a 16-byte SHA-256 digest of its decoded pixels, so the
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
import struct
from collections.abc import Sequence

import numpy as np

from genprint.io.images import ImageError
from genprint.io.sources import Item

SHAPE_BYTES = 8
"""Leading bytes of a fingerprint: the image's height and width (two big-endian uint32), so that
an image of a size no fitted picture has is known to be new without hashing its pixels."""

DIGEST_BYTES = SHAPE_BYTES + 16
"""Bytes per fingerprint: the size, then 16 bytes of the SHA-256 of the pixels (128 bits: a
chance collision needs ~2⁶⁴ images). SHA-256 rather than BLAKE2: CPUs hash it in hardware (a
48-megapixel photo in ~0.2 s)."""


def _shape_prefix(shape: tuple[int, ...]) -> bytes:
    h, w = (shape[0], shape[1]) if len(shape) >= 2 else (0, shape[0] if shape else 0)
    return struct.pack(">II", h & 0xFFFFFFFF, w & 0xFFFFFFFF)


def fingerprint(image: np.ndarray) -> bytes:
    """The fingerprint of one decoded image (any shape and dtype; the shape and dtype count)."""
    a = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    if a.size:  # (a zero-size array has no bytes to cast)
        digest.update(memoryview(a.reshape(-1)).cast("B"))
    return _shape_prefix(a.shape) + digest.digest()[:DIGEST_BYTES - SHAPE_BYTES]


def fingerprints(images: Sequence[np.ndarray]) -> np.ndarray:
    """Fingerprints of ``images`` as an (N, 24) uint8 array (rows in input order)."""
    return as_rows([fingerprint(img) for img in images])


def as_rows(keys: Sequence[bytes]) -> np.ndarray:
    """N fingerprints (byte strings) as an (N, 24) uint8 array; :func:`as_keys` undoes it."""
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), DIGEST_BYTES).copy()


def as_keys(rows: np.ndarray) -> list[bytes]:
    """An (N, 24) fingerprint array as N hashable byte strings."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8).reshape(-1, DIGEST_BYTES)
    return [r.tobytes() for r in rows]


def check_fingerprints(rows: object) -> np.ndarray:
    """``rows`` as an (N, 24) uint8 array; ValueError if it is not one (a damaged model)."""
    a = np.asarray(rows)
    if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != DIGEST_BYTES:
        raise ValueError(f"training fingerprints must be an (N, {DIGEST_BYTES}) uint8 array, "
                         f"got {a.dtype} {a.shape}")
    return a


class PictureSet:
    """A set of pictures by fingerprint, asked "is this image one of them?" cheaply: an image
    whose size none of them has is answered without hashing its pixels."""

    def __init__(self, rows: np.ndarray) -> None:
        self.keys = set(as_keys(rows))
        self.sizes = {k[:SHAPE_BYTES] for k in self.keys}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, image: object) -> bool:
        if not isinstance(image, np.ndarray):
            return False
        return (_shape_prefix(image.shape) in self.sizes
                and fingerprint(image) in self.keys)


def data_digest(keys: Sequence[bytes], sources: Sequence[str], splits: Sequence[str]) -> str:
    """Hex sha256 identifying a labelled image set by content: the sorted lines
    ``fingerprint<TAB>source<TAB>split`` of its images. File names, paths, formats and order do
    not count; any pixel, label or split does. A model's card records the digest of the
    training and validation images it was fitted on (``training.data_digest``); recompute it
    with :func:`dataset_digest` to check a copy of the data is the one that trained it.
    ``keys``: the images' fingerprints (:func:`fingerprint`, or :func:`as_keys` of an array)."""
    lines = sorted(f"{key.hex()}\t{src}\t{split}\n"
                   for key, src, split in zip(keys, sources, splits, strict=True))
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def dataset_digest(items: Sequence[Item], min_size: int = 1) -> str:
    """:func:`data_digest` of labelled items (each with a source and a split), reading every
    image; files that cannot be read, are smaller than ``min_size`` (the method's
    ``min_size``) or of one colour are left out, as training leaves them out. E.g. for the
    training and validation items a model was fitted on."""
    from genprint.io.batches import iter_images

    keys, sources, splits = [], [], []
    for item, result in zip(items, iter_images([i.path for i in items], min_size=min_size,
                                               refuse_uniform=True), strict=True):
        if not isinstance(result.pixels, ImageError):
            keys.append(fingerprint(result.pixels))
            sources.append(str(item.source))
            splits.append(str(item.split))
    return data_digest(keys, sources, splits)
