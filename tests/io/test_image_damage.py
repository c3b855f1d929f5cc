"""Damaged and unusual image files: per-file errors, never a crash or silently filled pixels."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from genprint.io.images import ImageError, decode_image


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def _png(pixels: np.ndarray, interlace: bool = False, rows: int | None = None) -> bytes:
    """An 8-bit RGB PNG written by hand (filter 0 on every row), optionally Adam7-interlaced
    or holding only its first ``rows`` scanlines, with valid checksums."""
    h, w, _ = pixels.shape
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                               (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
            sub = pixels[y0::dy, x0::dx]
            if sub.size:
                raw += b"".join(b"\0" + row.tobytes() for row in sub)
    else:
        raw = b"".join(b"\0" + row.tobytes() for row in pixels[:rows])
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)


def test_hand_written_pngs_decode_exactly(pixels: np.ndarray) -> None:
    for interlace in (False, True):  # the data-size check must accept both layouts
        got, _ = decode_image(_png(pixels, interlace))
        np.testing.assert_array_equal(got, pixels)


def test_png_with_fewer_rows_than_its_header_is_truncated(pixels: np.ndarray) -> None:
    data = _png(pixels, rows=10)  # valid checksums, complete zlib stream, 10 of 37 rows
    with pytest.raises(ImageError) as err:
        decode_image(data)
    assert err.value.code == "truncated" and "header declares" in err.value.reason


def test_broken_text_chunk_is_corrupt_not_unidentified(pixels: np.ndarray) -> None:
    data = bytearray(_png(pixels))
    text = _chunk(b"tEXt", b"Comment\0hello")
    text = text[:-1] + bytes([text[-1] ^ 0xFF])  # a wrong checksum
    data[33:33] = text  # after the IHDR chunk
    with pytest.raises(ImageError) as err:
        decode_image(bytes(data))
    assert err.value.code == "corrupt" and "tEXt" in err.value.reason


def test_truncated_animated_gif_is_a_per_file_error() -> None:
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).convert("P")
              for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    for cut in (0.5, 0.7, 0.9):
        for animated in ("refuse", "first"):
            try:
                decode_image(data[: int(len(data) * cut)], animated=animated)
            except ImageError as exc:
                assert exc.code in ("truncated", "corrupt", "animated")


def test_any_decoder_failure_becomes_a_per_file_error(monkeypatch: pytest.MonkeyPatch,
                                                      pixels: np.ndarray) -> None:
    def broken(img: Image.Image, deep: bool = False) -> np.ndarray:
        raise IndexError("list index out of range")

    monkeypatch.setattr("genprint.io.images._to_rgb8", broken)
    with pytest.raises(ImageError) as err:
        decode_image(_png(pixels))
    assert err.value.code == "corrupt" and "IndexError" in err.value.reason


def test_multi_picture_jpeg_analyses_its_main_picture() -> None:
    rng = np.random.default_rng(2)
    main = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    preview = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    buf = io.BytesIO()
    main.save(buf, format="MPO", save_all=True, append_images=[preview])
    got, info = decode_image(buf.getvalue())
    assert info.format == "MPO" and info.n_frames == 2 and got.shape == (48, 64, 3)
    np.testing.assert_array_equal(got, np.asarray(Image.open(io.BytesIO(buf.getvalue()))))


def test_32_bit_images_outside_the_16_bit_range_are_refused() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40), 70_000, dtype=np.int32)).save(buf, format="TIFF")
    with pytest.raises(ImageError) as err:
        decode_image(buf.getvalue())
    assert err.value.code == "unsupported_mode" and "70000" in err.value.reason


def test_our_pixel_limit_decides_not_pillows(monkeypatch: pytest.MonkeyPatch,
                                            pixels: np.ndarray) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would refuse 37 × 45 px
    got, _ = decode_image(_png(pixels), max_pixels=10_000)
    assert got.shape == pixels.shape


def test_truncated_data_is_refused_even_if_the_caller_allows_it_in_pillow(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError) as err:
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert err.value.code == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored
