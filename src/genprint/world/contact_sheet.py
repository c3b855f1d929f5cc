"""Contact sheets: a generator's samples beside real camera images, for people to look at.

The zoom is nearest-neighbour and only for viewing; nothing in genprint's analysis resamples.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from genprint.storage.atomic import atomic_file


def grid(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """Tile uint8 N×H×W×3 images into one grid image (white gaps)."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        out[gap + r * (h + gap) : gap + r * (h + gap) + h,
            gap + c * (w + gap) : gap + c * (w + gap) + w] = img
    return out


def write_contact_sheet(name: str, path: str | os.PathLike[str], n: int = 32, zoom: int = 3,
                        seed: int = 12345) -> Path:
    """PNG with ``n`` samples of zoo generator ``name`` (left) and ``n`` real images (right)."""
    from genprint.world import zoo
    from genprint.world.cameras import camera_images

    gen = zoo.load(name)
    fake = gen.sample(n, seed)
    real, _ = camera_images(n, gen.resolution, seed)
    left, right = grid(fake, 8), grid(real, 8)
    title = 18
    sheet = np.full((left.shape[0] + title, left.shape[1] + right.shape[1] + 12, 3), 255, np.uint8)
    sheet[title:, : left.shape[1]] = left
    sheet[title:, left.shape[1] + 12 :] = right
    img = Image.fromarray(sheet).resize((sheet.shape[1] * zoom, sheet.shape[0] * zoom),
                                        Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    draw.text((6, 4), f"{name}: samples", fill=(0, 0, 0))
    draw.text(((left.shape[1] + 12) * zoom + 6, 4), "real camera images", fill=(0, 0, 0))
    out = Path(path)
    with atomic_file(out) as tmp:
        img.save(tmp, format="PNG")
    return out
