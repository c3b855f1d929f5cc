"""Helpers shared by the backbone implementations: input sizes, weight fingerprints, batches.

Backbones never resize images. A backbone whose native input is 224×224 still runs on the
32×32 images of the built-in world at a smaller input: the largest size that is a multiple of
its patch size (ViTs) or total stride (CNNs), no larger than the image and no larger than its
native size (see :func:`fit_input_size`). Each backbone records ``native_size``,
``size_multiple`` and ``min_size`` in ``Preprocessing.extra``. Alternatively, small images can be
padded up to a larger input (``Preprocessing.extra["pad"]``: ``wrap`` or ``reflect``, see
:func:`pad_to`): pixels are copied, never interpolated.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from genprint.backbones.base import Backbone, Preprocessing
from genprint.io.crops import center_crop

_HASHES: dict[tuple[str, int, int, int, int], str] = {}


def sha256_of_files(paths: Iterable[str | os.PathLike[str]]) -> str:
    """sha256 over the names and contents of weight files (memoised per path, inode, size,
    modification and change time: a file replaced by another, even one given the old
    modification time as ``cp -p`` does, gets a new change time, so it is hashed again).

    Used as the weights' identity in feature caches and saved models.
    """
    digest = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        st = p.stat()
        key = (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in _HASHES:
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
            _HASHES[key] = h.hexdigest()
        digest.update(p.name.encode() + b"\0" + _HASHES[key].encode())
    return digest.hexdigest()


def reader_error(exc: BaseException) -> str:
    """A reader's exception in one line for a message: its type and the first line of its
    text (terminal colour codes removed, at most 200 characters)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def size_rules(pre: Preprocessing) -> tuple[int, int, int]:
    """(native size, size multiple, smallest size) of a backbone's input."""
    native = int(pre.extra.get("native_size", pre.input_size))
    multiple = int(pre.extra.get("size_multiple", 1))
    smallest = int(pre.extra.get("min_size", multiple))
    return native, multiple, smallest


def fit_input_size(native: int, multiple: int, smallest: int, min_side: int) -> int:
    """Largest valid input side for images whose smaller side is ``min_side``.

    A multiple of ``multiple``, at most ``native`` and at most ``min_side`` (images are cropped,
    never upsampled). Raises ``ValueError`` when that is below ``smallest``.
    """
    size = min(native, min_side) // multiple * multiple
    if size < max(smallest, 1):
        raise ValueError(
            f"images with a {min_side}-pixel side are too small for this backbone: it needs at "
            f"least {max(smallest, multiple)} pixels (images are never upsampled)"
        )
    return size


def check_input_size(size: int, multiple: int, smallest: int, name: str) -> int:
    """Validate an explicit input size for backbone ``name``."""
    if size < smallest or size % multiple:
        raise ValueError(
            f"backbone {name}: input size {size} must be a multiple of {multiple} and at least "
            f"{smallest}"
        )
    return int(size)


PAD_MODES = ("none", "wrap", "reflect")
"""How an image smaller than a backbone's input reaches it: ``none`` (refused), or padded up to
the input size — ``wrap`` (the image repeated periodically, as tiles side by side) or ``reflect``
(mirrored at its borders). Padding copies pixels; it never resamples them."""


def pad_to(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """``image`` padded (centred) so that both sides are at least ``size``, by ``mode``."""
    if mode not in PAD_MODES or mode == "none":
        raise ValueError(f"pad mode must be one of {', '.join(PAD_MODES[1:])}, got {mode!r}")
    h, w = image.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if not ph and not pw:
        return image
    widths = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, widths, mode=mode)


def to_batch(images: Sequence[np.ndarray], size: int, pad: str = "none") -> torch.Tensor:
    """Centre crops of (H, W, 3) uint8 images as an N×3×size×size float tensor in [0, 1].

    With ``pad`` (``wrap`` or ``reflect``), images smaller than ``size`` are padded up to it
    first (:func:`pad_to`); with ``none`` they are refused.
    """
    if pad != "none":
        images = [pad_to(img, size, pad) for img in images]
    crops = np.stack([center_crop(img, size) for img in images])
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0


def with_padding(backbone: Backbone, pad: str) -> Backbone:
    """``backbone`` whose preprocessing pads small images by ``pad`` (recorded in its card, so
    feature caches and saved models tell padded features apart). ``none`` changes nothing."""
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}, got {pad!r}")
    if pad != "none":
        pre = backbone.preprocessing
        backbone.preprocessing = replace(pre, extra={**pre.extra, "pad": pad})
    return backbone


def cls_tokens(hidden: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The first (CLS) token of every N×L×D hidden state, as N×D float32 tensors."""
    return [h[:, 0, :].float().contiguous() for h in hidden]
