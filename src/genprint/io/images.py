"""Reading images the way a forensic tool must: exact pixels or a clear, per-file refusal.

Rules (also in the README):

* The file's bytes are read once and decoded with Pillow. Pixels are **never resampled**.
* Pixel analysis uses the stored pixel grid: the EXIF orientation tag is **ignored** (it is
  reported in :class:`ImageInfo` so a viewer can rotate for display). Pillow's TIFF decoder
  applies a TIFF's orientation while loading; that lossless transpose is undone.
* Conversion to 8-bit RGB, by stored mode:

  - ``RGB``: unchanged. ``L`` / ``1`` (grey, bilevel): the grey value is copied to R, G and B
    (bilevel 1 becomes 255).
  - ``P`` / ``PA`` (palette): looked up in the palette, exactly.
  - ``RGBA`` / ``LA`` / ``La`` / ``RGBa``: the alpha channel is **dropped**, colour values are kept as
    stored (no compositing on a background, which would change the pixels).
  - ``I;16*`` and ``I`` (16-bit and 32-bit integer grey, e.g. 16-bit PNG): values are taken to
    span 0..65535 and mapped to 0..255 by their high byte, ``v >> 8``; a 32-bit image with
    values outside 0..65535 is refused (its range is not defined).
  - 16-bit RGB(A) PNGs are delivered by Pillow as 8-bit RGB (their high bytes, ``v >> 8``).
  - ``CMYK``: Pillow's conversion (R = 255 − C − K, clipped; Adobe-inverted JPEGs are undone by
    Pillow's decoder). ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion to RGB.
  - ``F`` (floating point) and other modes: refused, since their range is not defined.

* Refused with a reason (an :class:`ImageError` whose ``code`` is one of :data:`ERROR_CODES`):
  empty files, files that are not images, truncated or corrupt files, **animated images**
  (refused by default rather than silently analysing one frame: pass ``animated="first"`` to take
  the first frame), PNG files whose chunk checksums do not match or whose image data holds fewer
  rows than the header declares, images over a pixel limit (decompression bombs: the header is
  checked before any pixel is decoded), files over a byte limit, and images smaller than a
  method's crop. Any other decoder failure is a per-file ``corrupt`` error, never a crash.
* Multi-picture JPEGs (``MPO``: camera files that carry a preview or a depth map after the
  main picture) are not animations: the main picture (frame 0) is analysed.
* Known limit: a JPEG whose entropy-coded data is cut short *and* closed with an end marker is
  decoded by libjpeg with the missing blocks filled in, and Pillow does not report it; such a
  file cannot be told from a complete one here.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image accepted, in pixels (e.g. 8000×8000); larger headers are refused unread.
The environment variable ``GENPRINT_MAX_PIXELS`` (or ``genprint --max-pixels N``) changes it."""

MAX_PIXELS_ENV = "GENPRINT_MAX_PIXELS"


def is_rgb8(image: object) -> bool:
    """Whether ``image`` is a decoded picture as genprint reads them: an (H, W, 3) uint8 array."""
    return (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            and image.dtype == np.uint8)


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

IDENTIFY_FIRST_BYTES = 16 * 1024 * 1024
"""Files larger than this are identified by Pillow from the file (it reads only the header it
needs) before they are read whole, so a large file that is no image never fills memory."""

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm",
     ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".avif", ".heic", ".heif"}
)
"""File extensions picked up when a folder is scanned for images."""

ERROR_CODES = (
    "not_found", "unreadable", "empty", "file_too_large", "not_an_image", "truncated", "corrupt",
    "animated", "too_many_pixels", "unsupported_mode", "unsupported_format", "too_small",
    "no_content", "no_score",
)

HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"heif")
"""ISO-BMFF brands of HEIC / HEIF files (iPhone photos): Pillow needs the pillow-heif plugin."""


def _heif_decoder_ready(data: bytes) -> bool:
    """For a HEIC / HEIF file: register pillow-heif with Pillow if it is installed, and say
    whether it is (other files: True, nothing to do)."""
    if data[4:8] != b"ftyp" or data[8:12] not in HEIF_BRANDS:
        return True
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True

AnimatedPolicy = Literal["refuse", "first"]


class ImageError(Exception):
    """An image that cannot be used, with a machine-readable ``code`` and a human ``reason``."""

    def __init__(self, code: str, reason: str, path: str | None = None) -> None:
        if code not in ERROR_CODES:  # pragma: no cover - programming error
            raise ValueError(f"unknown image error code {code!r}")
        self.code = code
        self.reason = reason
        self.path = path
        self.sha256: str | None = None
        """Hex sha256 of the file's bytes, when they could be read."""
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
    sha256: str | None = None
    """Hex sha256 of the file's bytes as read (the bytes that were decoded)."""
    notes: tuple[str, ...] = ()
    """What decoding to 8-bit RGB changed or left out, in words (16-bit values reduced, alpha
    dropped, a colour conversion, an EXIF orientation not applied); empty when the pixels are
    the stored ones."""


STRIP_BYTES = 4 * 1024 * 1024
"""Pixels are copied out of Pillow in strips of about this size: converting a whole image at once
holds Pillow's buffer, its ``tobytes()`` copy and the array together (3× the image)."""


def _strips_rgb8(img: Image.Image) -> tuple[np.ndarray, int]:
    """The first three channels of an 8-bit RGB/RGBA/RGBX image, copied strip by strip, and
    how many pixels an alpha channel (RGBA) makes less than opaque."""
    width, height = img.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, STRIP_BYTES // max(1, width * len(img.getbands())))
    see_through = 0
    for top in range(0, height, rows):
        strip = np.asarray(img.crop((0, top, width, min(height, top + rows))), dtype=np.uint8)
        out[top : top + strip.shape[0]] = strip[:, :, :3]
        if img.mode == "RGBA":
            see_through += int(np.count_nonzero(strip[:, :, 3] < 255))
    return out, see_through


def _alpha_note(see_through: int, total: int) -> list[str]:
    if not see_through:
        return []
    share = f"{see_through / max(total, 1):.1%}"
    if share in ("0.0%", "100.0%"):  # a share that hides the pixels the note is about
        what = f"{see_through} of the {total} pixels {'is' if see_through == 1 else 'are'}"
    else:
        what = f"{share} of the pixels are"
    return [f"alpha channel dropped: {what} not opaque, and their stored colours are analysed"]


def _to_rgb8(img: Image.Image, deep: bool = False) -> tuple[np.ndarray, list[str]]:
    """Convert a decoded Pillow image to an (H, W, 3) uint8 array without resampling, and notes
    on what the conversion changed. ``deep``: the file stores 16-bit samples."""
    mode = img.mode
    total = img.size[0] * img.size[1]
    if mode in ("RGB", "RGBA", "RGBX"):
        out, see_through = _strips_rgb8(img)
        notes = []
        if deep:
            note = "16-bit colour values reduced to 8 bits (the high byte of each, by Pillow)"
            top = int(out.max()) if out.size else 0
            if top < 16:  # as for grey: values below 4096, at most 12 bits used
                note += (f"; the high bytes reach only {top} (at most 12 bits used), so "
                         f"{len(np.unique(out))} level(s) remain: scale the data to 16 bits, "
                         "or save it as 8-bit, before analysing it")
            notes.append(note)
        return out, notes + _alpha_note(see_through, total)
    if mode in ("L", "1"):
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), []
    if mode in ("P", "PA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
        return (rgba[:, :, :3].copy(),
                _alpha_note(int(np.count_nonzero(rgba[:, :, 3] < 255)), total))
    if mode == "RGBa":
        rgba = np.asarray(img, dtype=np.uint8)
        return (rgba[:, :, :3].copy(),
                _alpha_note(int(np.count_nonzero(rgba[:, :, 3] < 255)), total))
    if mode in ("LA", "La"):
        la = np.asarray(img, dtype=np.uint8)
        return (np.repeat(la[:, :, :1], 3, axis=2),
                _alpha_note(int(np.count_nonzero(la[:, :, 1] < 255)), total))
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(img).astype(np.int64)
        top = int(values.max()) if values.size else 0
        if values.size and (values.min() < 0 or top > 65535):
            raise ImageError("unsupported_mode", f"32-bit integer image with values "
                             f"{values.min()}..{top}, outside 0..65535: its range is "
                             "not defined")
        grey = (values >> 8).astype(np.uint8)  # the high byte, as Pillow does for 16-bit RGB
        note = "16-bit grey values reduced to 8 bits (the high byte of each)"
        if top < 4096:
            levels = len(np.unique(grey))
            note += (f"; the values reach only {top} (at most 12 bits used), so {levels} grey "
                     f"level(s) remain: scale the data to 16 bits, or save it as 8-bit, "
                     "before analysing it")
        return np.repeat(grey[:, :, None], 3, axis=2), [note]
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return (np.asarray(img.convert("RGB"), dtype=np.uint8).copy(),
                [(f"converted from {mode} to RGB by Pillow's colour conversion (not the stored "
                 "values)")])
    raise ImageError("unsupported_mode", f"unsupported pixel mode {mode!r}")


def _check_png_crcs(data: bytes) -> bool:
    """Verify every PNG chunk's CRC (Pillow skips the image-data chunks), so damaged pixel data
    is refused rather than decoded into wrong pixels. Returns whether the end chunk (IEND) was
    reached; a file cut inside a chunk is refused here."""
    pos = 8
    end = len(data)
    while pos + 12 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        stop = pos + 8 + length
        if stop + 4 > end:
            raise ImageError("truncated", "file is truncated inside PNG chunk "
                             f"{kind.decode('latin-1', 'replace')}")
        stored = int.from_bytes(data[stop : stop + 4], "big")
        if zlib.crc32(data[pos + 4 : stop]) & 0xFFFFFFFF != stored:
            name = kind.decode("latin-1", "replace")
            raise ImageError("corrupt", f"PNG chunk {name} fails its CRC check (damaged file)")
        if kind == b"IEND":
            return True
        pos = stop + 4
    return False


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type → samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # (x0, y0, dx, dy) of the seven interlace passes


def _png_expected_bytes(width: int, height: int, depth: int, colour: int, interlace: int) -> int:
    """Bytes of filtered PNG scanlines (one filter byte per row) the header promises."""
    bits = _PNG_CHANNELS.get(colour, 0) * depth

    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits + 7) // 8)

    if interlace != 1:
        return rows(width, height)
    return sum(rows((width - x0 + dx - 1) // dx if width > x0 else 0,
                    (height - y0 + dy - 1) // dy if height > y0 else 0)
               for x0, y0, dx, dy in _ADAM7)


def _check_png_data(data: bytes) -> None:
    """Refuse a PNG whose compressed image data inflates to fewer bytes than its header promises
    (Pillow would fill the missing rows with zeros). Counts without holding the pixels."""
    if data[12:16] != b"IHDR" or len(data) < 33:
        return
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    depth, colour, interlace = data[24], data[25], data[28]
    expected = _png_expected_bytes(width, height, depth, colour, interlace)
    if expected == 0:
        return
    inflate = zlib.decompressobj()
    got, pos = 0, 8
    try:
        while pos + 12 <= len(data) and got < expected:
            length = int.from_bytes(data[pos : pos + 4], "big")
            kind = data[pos + 4 : pos + 8]
            if kind == b"IDAT":
                chunk = data[pos + 8 : pos + 8 + length]
                while chunk and got < expected:
                    got += len(inflate.decompress(chunk, 1 << 22))
                    chunk = inflate.unconsumed_tail
            elif kind == b"IEND":
                break
            pos += 12 + length
    except zlib.error as exc:
        raise ImageError("corrupt", f"PNG image data cannot be inflated: {exc}") from None
    if got < expected:
        raise ImageError("truncated", f"PNG image data holds {got} of the {expected} bytes its "
                                      "header declares (missing rows would be filled in)")


def _deep_samples_misread(img: Image.Image, data: bytes) -> str | None:
    """Why Pillow would deliver wrong values for this file's samples of more than 8 bits, or
    None. Two cases were found where it decodes without an error:

    * an uncompressed TIFF with 16-bit samples stored plane by plane (PlanarConfiguration 2):
      Pillow reads each plane with an 8-bit raw mode, so the values are garbage;
    * a JPEG 2000 colour image with more than 8 bits per component: Pillow delivers 8-bit RGB
      in which the brightest values wrap round to black.
    """
    if img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})
        bits = tags.get(258)
        bits = max(bits) if isinstance(bits, tuple) and bits else bits
        formats = tags.get(339)  # SampleFormat: 1 unsigned, 2 signed, 3 floating point
        formats = formats if isinstance(formats, tuple) else (formats,)
        # (32-bit signed integers are read as they are: the 0..65535 rule below decides)
        kind = ("floating-point" if 3 in formats else
                f"{bits}-bit signed integer" if 2 in formats and isinstance(bits, int)
                and bits <= 16 else None)
        if kind:
            raise ImageError("unsupported_mode", f"TIFF of {kind} samples: their range is not "
                             "defined (Pillow would read them as unsigned or refuse them); "
                             "convert the image to unsigned 8 or 16 bits")
        if (isinstance(bits, int) and bits > 8 and tags.get(284) == 2
                and any(t[0] == "raw" for t in img.tile)):
            return (f"uncompressed TIFF with {bits}-bit samples stored plane by plane "
                    "(PlanarConfiguration 2), which Pillow cannot read correctly; save it "
                    "interleaved (contiguous) or compressed (e.g. deflate)")
    elif img.format == "JPEG2000" and not img.mode.startswith("I"):
        start = data.find(b"\xff\x4f\xff\x51")  # codestream start, then its SIZ segment
        if start >= 0:
            csiz_at = start + 4 + 36
            n = int.from_bytes(data[csiz_at : csiz_at + 2], "big")
            depths = [(data[csiz_at + 2 + 3 * k] & 0x7F) + 1
                      for k in range(n) if csiz_at + 2 + 3 * k < len(data)]
            if depths and max(depths) > 8:
                return (f"JPEG 2000 {img.mode} image with {max(depths)} bits per component, "
                        "which Pillow delivers as 8 bits with its brightest values wrapped round "
                        "to black; convert it to a 16-bit PNG or TIFF")
    return None


def _undo_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Undo, on an (H, W, 3) array, the lossless turn or flip Pillow's ``exif_transpose``
    applies for ``orientation`` 2–8 (its TIFF decoder applies it while loading)."""
    undo = {
        2: lambda a: a[:, ::-1],  # Pillow flipped left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180°
        4: lambda a: a[::-1],  # flipped top-bottom
        5: lambda a: a.transpose(1, 0, 2),  # transposed
        6: lambda a: np.rot90(a, 1),  # rotated 270° counter-clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transversed
        8: lambda a: np.rot90(a, -1),  # rotated 90° counter-clockwise
    }
    return np.ascontiguousarray(undo[orientation](pixels)) if orientation in undo else pixels


def _format_by_signature(data: bytes) -> str | None:
    """The image format a file's first bytes name (so that a damaged image is not called "not
    an image"), or None."""
    head = data[:16]
    if head[:4] in (b"II*\0", b"MM\0*"):
        return "TIFF"
    if head[:4] == b"GIF8":
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:12] == b"\0\0\0\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "JPEG 2000"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "AVIF" if brand in (b"avif", b"avis") else "HEIF" if brand in HEIF_BRANDS else None
    return None


def _exif_orientation(img: Image.Image) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - broken EXIF must not stop pixel analysis
        return None
    return int(value) if isinstance(value, int) else None


_LOAD_LOCK = threading.Lock()
"""Held while Pillow's global truncated-image switch is turned off for a load (only when the
caller's process had turned it on)."""


def _allow_pillow_limit(limit: int) -> None:
    """Pillow refuses images over its own global limit (2 × ``Image.MAX_IMAGE_PIXELS``) before
    ours is consulted; raise it (never lower it) so that ours decides."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and limit > current:
        Image.MAX_IMAGE_PIXELS = limit


def _load_strictly(img: Image.Image) -> None:
    """``img.load()`` with truncated data refused. Pillow's switch for that is a process-wide
    global; it is only touched (under a lock) if the caller had turned it on."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        img.load()
        return
    with _LOAD_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _decode(data: bytes, limit: int, animated: AnimatedPolicy) -> tuple[np.ndarray, ImageInfo]:
    """The decoding steps of :func:`decode_image` (which turns unexpected failures into
    per-file errors)."""
    png = data[:8] == PNG_SIGNATURE
    png_complete = _check_png_crcs(data) if png else True  # before Pillow parses the chunks
    with warnings.catch_warnings():
        # We enforce our own pixel limit below; Pillow's global limit must not decide for us.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if not _heif_decoder_ready(data):
            raise ImageError("unsupported_format", "HEIC/HEIF image: decoding it needs the "
                             "pillow-heif plugin (pip install 'genprint[heif]')")
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            if not png_complete:
                raise ImageError("truncated", "PNG file ends before its end chunk") from None
            kind = _format_by_signature(data)
            if kind:
                raise ImageError("corrupt", f"a {kind} file by its first bytes, which Pillow "
                                 "cannot decode: truncated or damaged (or a variant Pillow "
                                 "does not read)") from None
            raise ImageError("not_an_image", "not an image file Pillow can decode") from None
        width, height = img.size
        if width * height > limit:
            raise ImageError(
                "too_many_pixels",
                f"image is {width}×{height} = {width * height} pixels, over the limit of "
                f"{limit} (possible decompression bomb); to allow it, raise the limit with "
                f"`genprint --max-pixels N ...`, {MAX_PIXELS_ENV}=N or max_pixels=N in Python",
            )
        if png and not png_complete:
            raise ImageError("truncated", "PNG file ends before its end chunk (IEND)")
        if img.format == "PNG":
            _check_png_data(data)
        n_frames = int(getattr(img, "n_frames", 1) or 1)
        if n_frames > 1 and animated == "refuse" and img.format != "MPO":
            what = (f"multi-page {img.format} with {n_frames} pages; extract the page"
                    if img.format == "TIFF" else
                    f"animated image with {n_frames} frames; extract the frame")
            raise ImageError(
                "animated",
                f"{what} to analyse, or take the first (`--first-frame` where a command offers "
                "it, animated='first' in Python)",
            )
        misread = _deep_samples_misread(img, data)
        if misread:
            raise ImageError("unsupported_format", misread)
        deep = ";16" in str(img.tile)  # 16-bit samples, which Pillow reads as 8-bit RGB
        # (for a PNG, this may decode it already). It is the value Pillow's TIFF decoder turns
        # the image by while loading (IFD0's tag, else XMP's tiff:Orientation): undone below.
        orientation = _exif_orientation(img)
        try:
            img.seek(0)
            _load_strictly(img)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            message = str(exc)
            if "truncated" in message.lower() or isinstance(exc, EOFError):
                detail = message.removeprefix("image file is truncated").strip(" :")
                glue = " " if detail.startswith("(") else ": "
                raise ImageError("truncated", "file is truncated" + (glue + detail if detail
                                                                     else "")) from None
            raise ImageError("corrupt", f"cannot decode image data: {message}") from None
        pixels, notes = _to_rgb8(img, deep)
        if img.format == "TIFF" and orientation is not None:
            pixels = _undo_orientation(pixels, orientation)  # back to the stored grid
        if img.format == "HEIF":  # pillow-heif (libheif) applies the file's transforms
            # (pillow-heif reports the EXIF orientation it turned by; a rotation or mirroring
            # held only in the file's irot/imir properties is applied without being reported)
            turned = img.info.get("original_orientation")
            if turned not in (None, 1):
                notes.append(f"HEIF rotation/mirroring (orientation {turned}) applied by the "
                             "decoder, which cannot leave it out: the pixels are analysed as "
                             "displayed, not on the stored grid (unlike other formats)")
            depth = img.info.get("bit_depth")
            if isinstance(depth, int) and depth > 8:
                notes.append(f"{depth}-bit HEIF values reduced to 8 bits by the decoder "
                             "(libheif's rounding, not v >> 8)")
        extra = getattr(img, "tag_v2", {}).get(338) if img.format == "TIFF" else None
        if extra in (1, (1,)):  # associated alpha: Pillow has un-premultiplied the colours
            notes = [n.replace("their stored colours are analysed", "their colours, stored "
                               "premultiplied by alpha, are analysed divided by alpha (by "
                               "Pillow), not as stored") for n in notes]
        if orientation not in (None, 1):
            notes.append(f"EXIF orientation {orientation} not applied: the pixels are analysed "
                         "as stored (the photo displays rotated or mirrored)")
        if n_frames > 1 and img.format != "MPO":  # taken on request (animated="first")
            notes.append(f"only the first {'page' if img.format == 'TIFF' else 'frame'} of "
                         f"{n_frames} analysed")
        info = ImageInfo(
            format=img.format, mode=img.mode, width=pixels.shape[1], height=pixels.shape[0],
            n_frames=n_frames,
            exif_orientation=orientation, notes=tuple(notes),
        )
        return pixels, info


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
    limit = default_max_pixels() if max_pixels is None else max_pixels
    _allow_pillow_limit(limit)
    try:
        pixels, info = _decode(data, limit, animated)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # over Pillow's own cap, checked before ours
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1))} pixels" if found else "more pixels than Pillow allows"
        raise ImageError(
            "too_many_pixels",
            f"image is {size}, over the limit of {limit} (possible decompression bomb); to "
            f"allow it, raise the limit with `genprint --max-pixels N ...`, {MAX_PIXELS_ENV}=N "
            "or max_pixels=N in Python") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error
        message = f"{type(exc).__name__}: {exc}"
        code = "truncated" if "truncated" in message.lower() else "corrupt"
        raise ImageError(code, f"cannot decode image: {message}") from None
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


def _identifies_as_image(path: Path) -> bool:
    """Whether Pillow recognises the file's format from what it reads of it (the header)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not _heif_decoder_ready(head):
        return True  # a HEIC photo: the full read says what to install
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with open(path, "rb") as fh, Image.open(fh):
                return True
        except UnidentifiedImageError:
            return False
        except Exception:  # noqa: BLE001 - too many pixels, a damaged header, ...: the full
            return True  # read reports it with the usual reasons


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
        if size > IDENTIFY_FIRST_BYTES and not _identifies_as_image(p):
            exc = ImageError("not_an_image", "not an image file Pillow can decode", name)
            from genprint.storage.model_dir import sha256_file

            exc.sha256 = sha256_file(p)  # the hash of refused files too, in bounded memory
            raise exc
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError("not_found", "file not found", name) from None
    except PermissionError:
        raise ImageError("unreadable", "permission denied", name) from None
    except IsADirectoryError:
        raise ImageError("unreadable", "is a directory", name) from None
    except OSError as exc:  # a symlink loop, a file name too long, a path through a file, I/O
        raise ImageError("unreadable", exc.strerror or str(exc), name) from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        pixels, info = decode_image(data, max_pixels=max_pixels, animated=animated,
                                    min_size=min_size)
    except ImageError as exc:
        exc.path = name
        exc.sha256 = digest
        exc.args = (f"{name}: {exc.reason}",)
        raise
    return pixels, replace(info, sha256=digest)
