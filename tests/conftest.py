"""Shared fixtures: tiny images and datasets built by the tests themselves."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` but whose data is tiny (a pixel bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def textured(rng: np.random.Generator, h: int, w: int, period: int) -> np.ndarray:
    """A smooth random image with a periodic trace of the given period (a toy 'source')."""
    img = rng.integers(60, 200, (h, w, 3)).astype(np.float32)
    img = np.cumsum(img, axis=1) / np.arange(1, w + 1)[None, :, None]
    img[::period, ::period] += 30
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test with one torch thread (tiny models: threads only add overhead and make
    timings noisy on the 2-core CI machine); the previous count is restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rgb_png(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    p = tmp_path / "rgb.png"
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(p)
    return p


def write_toy_sources(parent: Path) -> Path:
    """``parent/sources``: one sub-folder per toy source (period 2, 3 and 5 traces), 24 images
    each (36×40 PNGs, the same pixels every time)."""
    rng = np.random.default_rng(0)
    root = parent / "sources"
    for name, period in (("alpha", 2), ("beta", 3), ("gamma", 5)):
        (root / name).mkdir(parents=True)
        for i in range(24):
            Image.fromarray(textured(rng, 36, 40, period)).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture
def toy_sources(tmp_path: Path) -> Path:
    """:func:`write_toy_sources` in the test's temporary folder."""
    return write_toy_sources(tmp_path)


def rewrite_card(path: Path, card: dict) -> None:
    """Write an edited card with its digest recomputed, as a deliberate forger would: for tests
    of what loading checks beyond the digest (an edit that keeps the old digest is refused)."""
    import json

    from genprint.storage.model_dir import CARD_DIGEST, card_digest

    card = {k: v for k, v in card.items() if k != CARD_DIGEST}
    card[CARD_DIGEST] = card_digest(card)
    path.write_text(json.dumps(card))
