"""Reading images the way a forensic tool must: exact pixels or a clear, per-file refusal.

Rules (also in the README):

* The file's bytes are read once and decoded with Pillow. Pixels are **never resampled**.
* Pixel analysis uses the stored pixel grid: the EXIF orientation tag is **ignored** (it is
  reported in :class:`ImageInfo` so a viewer can rotate for display).
* Conversion to 8-bit RGB, by stored mode:

  - ``RGB``: unchanged. ``L`` / ``1`` (grey, bilevel): the grey value is copied to R, G and B
    (bilevel 1 becomes 255).
  - ``P`` / ``PA`` (palette): looked up in the palette, exactly.
  - ``RGBA`` / ``LA`` / ``La`` / ``RGBa``: the alpha channel is **dropped**, colour values are kept as
    stored (no compositing on a background, which would change the pixels).
  - ``I;16*`` and ``I`` (16-bit and 32-bit integer grey, e.g. 16-bit PNG): values are taken to
    span 0..65535 and mapped to 0..255 by ``round(v / 257)`` (clipped).
  - 16-bit RGB(A) PNGs are delivered by Pillow as 8-bit RGB (their high bytes).
  - ``CMYK``: Pillow's conversion (R = 255 − C − K, clipped; Adobe-inverted JPEGs are undone by
    Pillow's decoder). ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion to RGB.
  - ``F`` (floating point) and other modes: refused, since their range is not defined.

* Refused with a reason (an :class:`ImageError` whose ``code`` is one of :data:`ERROR_CODES`):
  empty files, files that are not images, truncated or corrupt files, **animated images**
  (refused by default rather than silently analysing one frame: pass ``animated="first"`` to take
  the first frame), PNG files whose chunk checksums do not match, images over a pixel limit (decompression bombs: the header is checked before
  any pixel is decoded), files over a byte limit, and images smaller than a method's crop.
"""

from __future__ import annotations

import io
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image accepted, in pixels (e.g. 8000×8000); larger headers are refused unread.
The environment variable ``GENPRINT_MAX_PIXELS`` (or ``genprint --max-pixels N``) changes it."""

MAX_PIXELS_ENV = "GENPRINT_MAX_PIXELS"


def default_max_pixels() -> int:
    """The pixel limit in force: ``GENPRINT_MAX_PIXELS`` if set to a positive integer, else
    :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r} is not an integer") from None
    if limit < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be ≥ 1, got {limit}")
    return limit

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""Largest file accepted, in bytes."""

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm",
     ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".avif", ".heic", ".heif"}
)
"""File extensions picked up when a folder is scanned for images."""

ERROR_CODES = (
    "not_found", "unreadable", "empty", "file_too_large", "not_an_image", "truncated", "corrupt",
    "animated", "too_many_pixels", "unsupported_mode", "too_small",
)

AnimatedPolicy = Literal["refuse", "first"]


class ImageError(Exception):
    """An image that cannot be used, with a machine-readable ``code`` and a human ``reason``."""

    def __init__(self, code: str, reason: str, path: str | None = None) -> None:
        if code not in ERROR_CODES:  # pragma: no cover - programming error
            raise ValueError(f"unknown image error code {code!r}")
        self.code = code
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


@dataclass(frozen=True)
class ImageInfo:
    """What was decoded: the stored format, mode and size, and metadata left untouched."""

    format: str | None
    mode: str
    width: int
    height: int
    n_frames: int = 1
    exif_orientation: int | None = None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to an (H, W, 3) uint8 array without resampling."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("L", "1"):
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        return np.asarray(img.convert("RGBA"), dtype=np.uint8)[:, :, :3].copy()
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.asarray(img, dtype=np.uint8)[:, :, :3].copy()
    if mode in ("LA", "La"):
        grey = np.asarray(img, dtype=np.uint8)[:, :, 0]
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(img).astype(np.int64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    raise ImageError("unsupported_mode", f"unsupported pixel mode {mode!r}")


def _check_png_crcs(data: bytes) -> None:
    """Verify every PNG chunk's CRC (Pillow skips the image-data chunks), so damaged pixel data
    is refused rather than decoded into wrong pixels."""
    pos = 8
    end = len(data)
    while pos + 12 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        stop = pos + 8 + length
        if stop + 4 > end:
            raise ImageError("truncated", f"file is truncated inside PNG chunk {kind!r}")
        stored = int.from_bytes(data[stop : stop + 4], "big")
        if zlib.crc32(data[pos + 4 : stop]) & 0xFFFFFFFF != stored:
            name = kind.decode("latin-1", "replace")
            raise ImageError("corrupt", f"PNG chunk {name} fails its CRC check (damaged file)")
        if kind == b"IEND":
            return
        pos = stop + 4


def _exif_orientation(img: Image.Image) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - broken EXIF must not stop pixel analysis
        return None
    return int(value) if isinstance(value, int) else None


def decode_image(
    data: bytes,
    *,
    max_pixels: int | None = None,
    animated: AnimatedPolicy = "refuse",
    min_size: int | tuple[int, int] = 1,
) -> tuple[np.ndarray, ImageInfo]:
    """Decode image bytes to an (H, W, 3) uint8 RGB array and its :class:`ImageInfo`.

    Raises :class:`ImageError` with a reason for anything that cannot be used (see module doc).
    ``min_size`` is the smallest accepted (height, width), e.g. a method's crop size.
    """
    if len(data) == 0:
        raise ImageError("empty", "file is empty (0 bytes)")
    with warnings.catch_warnings():
        # We enforce our own pixel limit below; Pillow's global limit must not decide for us.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError("not_an_image", "not an image file Pillow can decode") from None
        except Image.DecompressionBombError as exc:
            raise ImageError("too_many_pixels", f"decompression bomb refused: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error
            raise ImageError("corrupt", f"cannot open image: {exc}") from None
        width, height = img.size
        limit = default_max_pixels() if max_pixels is None else max_pixels
        if width * height > limit:
            raise ImageError(
                "too_many_pixels",
                f"image is {width}×{height} = {width * height} pixels, over the limit of "
                f"{limit} (possible decompression bomb); to allow it, raise the limit with "
                f"`genprint --max-pixels N ...`, {MAX_PIXELS_ENV}=N or max_pixels=N in Python",
            )
        n_frames = int(getattr(img, "n_frames", 1) or 1)
        if n_frames > 1 and animated == "refuse":
            raise ImageError(
                "animated",
                f"animated image with {n_frames} frames; extract the frame to analyse, or use "
                "the first-frame option",
            )
        orientation = _exif_orientation(img)
        if img.format == "PNG":
            _check_png_crcs(data)
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img.seek(0)
            img.load()
        except Image.DecompressionBombError as exc:
            raise ImageError("too_many_pixels", f"decompression bomb refused: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            message = str(exc)
            if "truncated" in message.lower() or isinstance(exc, EOFError):
                raise ImageError("truncated", f"file is truncated: {message}") from None
            raise ImageError("corrupt", f"cannot decode image data: {message}") from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
        info = ImageInfo(
            format=img.format, mode=img.mode, width=width, height=height, n_frames=n_frames,
            exif_orientation=orientation,
        )
        pixels = _to_rgb8(img)
    min_h, min_w = (min_size, min_size) if isinstance(min_size, int) else min_size
    if pixels.shape[0] < min_h or pixels.shape[1] < min_w:
        raise ImageError(
            "too_small",
            f"image is {pixels.shape[1]}×{pixels.shape[0]}, smaller than the required "
            f"{min_w}×{min_h} crop (images are never upsampled)",
        )
    return pixels, info


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    animated: AnimatedPolicy = "refuse",
    min_size: int | tuple[int, int] = 1,
) -> np.ndarray:
    """Read the image at ``path`` as an (H, W, 3) uint8 RGB array (see :func:`decode_image`)."""
    return read_image_with_info(
        path, max_pixels=max_pixels, max_bytes=max_bytes, animated=animated, min_size=min_size
    )[0]


def read_image_with_info(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    animated: AnimatedPolicy = "refuse",
    min_size: int | tuple[int, int] = 1,
) -> tuple[np.ndarray, ImageInfo]:
    """Like :func:`read_image`, also returning the :class:`ImageInfo`. Errors name the path."""
    name = str(path)
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise ImageError("unreadable", "not a regular file", name)
        if size > max_bytes:
            raise ImageError(
                "file_too_large", f"file is {size} bytes, over the limit of {max_bytes}", name
            )
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError("not_found", "file not found", name) from None
    except PermissionError:
        raise ImageError("unreadable", "permission denied", name) from None
    except IsADirectoryError:
        raise ImageError("unreadable", "is a directory", name) from None
    try:
        return decode_image(data, max_pixels=max_pixels, animated=animated, min_size=min_size)
    except ImageError as exc:
        exc.path = name
        exc.args = (f"{name}: {exc.reason}",)
        raise
