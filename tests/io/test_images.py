"""Image input: exact pixels, documented conversions, and a clear refusal for bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genprint.io.images import ImageError, decode_image, read_image, read_image_with_info
from tests.conftest import make_png_header_only


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_png_pixels_are_exact(rgb_png: Path) -> None:
    expected = np.asarray(Image.open(rgb_png))
    got = read_image(rgb_png)
    assert got.dtype == np.uint8 and got.shape == (40, 50, 3)
    np.testing.assert_array_equal(got, expected)


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError) as err:
        read_image(p)
    assert err.value.code == "empty" and str(p) in str(err.value)


def test_text_file_named_png_is_not_an_image(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n")
    with pytest.raises(ImageError) as err:
        read_image(p)
    assert err.value.code == "not_an_image"


def test_truncated_jpeg_is_refused() -> None:
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.code == "truncated"


def test_truncated_png_is_refused(rgb_png: Path) -> None:
    data = rgb_png.read_bytes()
    with pytest.raises(ImageError) as err:
        decode_image(data[: len(data) - 40])
    assert err.value.code in ("truncated", "corrupt")


def test_corrupt_png_data_is_refused(rgb_png: Path) -> None:
    data = bytearray(rgb_png.read_bytes())
    data[60:90] = b"\xff" * 30  # smash the compressed stream
    with pytest.raises(ImageError) as err:
        decode_image(bytes(data))
    assert err.value.code in ("corrupt", "truncated")


def test_one_pixel_image_reads_but_fails_a_crop_requirement() -> None:
    data = _encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")
    pixels, _info = decode_image(data)
    assert pixels.shape == (1, 1, 3) and tuple(pixels[0, 0]) == (10, 20, 30)
    with pytest.raises(ImageError) as err:
        decode_image(data, min_size=32)
    assert err.value.code == "too_small" and "never upsampled" in err.value.reason


def test_sixteen_bit_grey_keeps_the_high_byte_and_says_so() -> None:
    values = np.array([[0, 257, 65535, 32896, 511]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    pixels, info = decode_image(data)
    assert info.mode.startswith("I")
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 1, 255, 128, 1])
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])
    assert info.notes == ("16-bit grey values reduced to 8 bits (the high byte of each)",)
    # 12-bit sensor data in a 16-bit file: most grey levels are lost, and the note says so
    twelve = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    _, info = decode_image(_encode(Image.fromarray(twelve), "PNG"))
    [note] = info.notes
    assert "the values reach only 4080 (at most 12 bits used), so 16 grey level(s) remain" in note


def _png16_rgb(values: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    h, w, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_sixteen_bit_colour_is_reduced_like_grey_and_said() -> None:
    values = np.array([[[0, 257, 65535], [32896, 511, 4095]]], dtype=np.uint16)
    pixels, info = decode_image(_png16_rgb(values))
    np.testing.assert_array_equal(pixels, values >> 8)  # the same rule as 16-bit grey
    assert info.notes == (("16-bit colour values reduced to 8 bits (the high byte of each, by "
                          "Pillow)"),)


def test_dropped_alpha_colour_conversions_and_orientation_are_noted() -> None:
    rgba = np.full((4, 4, 4), 200, np.uint8)
    rgba[..., 3] = 255
    rgba[0, :2, 3] = 0  # 2 of 16 pixels transparent
    pixels, info = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(pixels[0, 0]) == (200, 200, 200)  # their stored colour, analysed
    assert info.notes == (("alpha channel dropped: 12.5% of the pixels are not opaque, and their "
                          "stored colours are analysed"),)
    big = np.full((100, 100, 4), 200, np.uint8)
    big[..., 3] = 255
    big[3, 4, 3] = 254  # one pixel in 10 000: a share would round to 0.0%
    _, info = decode_image(_encode(Image.fromarray(big, "RGBA"), "PNG"))
    assert info.notes[0].startswith("alpha channel dropped: 1 of the 10000 pixels is not opaque")
    big[..., 3] = 0
    big[3, 4, 3] = 255  # all but one: a share would round to 100.0%
    _, info = decode_image(_encode(Image.fromarray(big, "RGBA"), "PNG"))
    assert info.notes[0].startswith("alpha channel dropped: 9999 of the 10000 pixels are not")
    _, info = decode_image(_encode(Image.fromarray(np.full((4, 4, 4), 9, np.uint8)[..., :3]),
                                   "PNG"))
    assert info.notes == ()  # plain 8-bit RGB: nothing to say
    rgba[..., 3] = 255  # an opaque alpha channel loses nothing
    assert decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))[1].notes == ()
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    assert decode_image(_encode(img, "JPEG"))[1].notes == (
        "converted from CMYK to RGB by Pillow's colour conversion (not the stored values)",)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _encode(Image.new("RGB", (16, 8), (1, 2, 3)), "JPEG", exif=exif.tobytes())
    pixels, info = decode_image(rotated)
    assert pixels.shape == (8, 16, 3) and info.exif_orientation == 6
    assert info.notes == (("EXIF orientation 6 not applied: the pixels are analysed as stored "
                          "(the photo displays rotated or mirrored)"),)


def test_cmyk_jpeg_converts_to_rgb() -> None:
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    pixels, info = decode_image(_encode(img, "JPEG", quality=95))
    assert info.mode == "CMYK" and pixels.shape == (16, 16, 3)
    r, g, b = pixels[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_palette_image_is_looked_up_exactly() -> None:
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    img.putpixel((1, 1), 1)
    pixels, _ = decode_image(_encode(img, "PNG"))
    assert tuple(pixels[1, 1]) == (200, 100, 50) and tuple(pixels[0, 0]) == (0, 0, 0)


def test_rgba_drops_alpha_without_compositing() -> None:
    img = Image.new("RGBA", (4, 4), (90, 80, 70, 0))  # fully transparent, colour kept
    pixels, _ = decode_image(_encode(img, "PNG"))
    assert tuple(pixels[0, 0]) == (90, 80, 70)


def test_greyscale_is_copied_to_three_channels() -> None:
    img = Image.fromarray(np.array([[5, 250]], dtype=np.uint8), mode="L")
    pixels, _ = decode_image(_encode(img, "PNG"))
    np.testing.assert_array_equal(pixels[0], [[5, 5, 5], [250, 250, 250]])


def test_float_images_are_refused_with_their_mode() -> None:
    img = Image.fromarray(np.ones((4, 4), dtype=np.float32))
    with pytest.raises(ImageError) as err:
        decode_image(_encode(img, "TIFF"))
    assert err.value.code == "unsupported_mode"


def test_pixel_bomb_header_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError) as err:
        decode_image(make_png_header_only(100_000, 100_000))
    assert err.value.code == "too_many_pixels"


def test_pixel_limit_is_configurable() -> None:
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageError) as err:
        decode_image(data, max_pixels=5000)
    assert err.value.code == "too_many_pixels" and "10000" in err.value.reason
    assert decode_image(data, max_pixels=10_000)[0].shape == (100, 100, 3)


def test_pixel_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    monkeypatch.setenv("GENPRINT_MAX_PIXELS", "5000")
    with pytest.raises(ImageError) as err:
        decode_image(data)
    assert err.value.code == "too_many_pixels" and "--max-pixels" in err.value.reason
    assert decode_image(data, max_pixels=10_000)[0].shape == (100, 100, 3)  # explicit wins
    monkeypatch.setenv("GENPRINT_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="GENPRINT_MAX_PIXELS"):
        decode_image(data)


def test_byte_limit_refuses_huge_files(rgb_png: Path) -> None:
    with pytest.raises(ImageError) as err:
        read_image(rgb_png, max_bytes=100)
    assert err.value.code == "file_too_large"


def test_animated_gif_refused_by_default_first_frame_on_request() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError) as err:
        decode_image(buf.getvalue())
    assert err.value.code == "animated" and "2 frames" in err.value.reason
    pixels, info = decode_image(buf.getvalue(), animated="first")
    assert info.n_frames == 2 and pixels[0, 0, 0] > 200 and pixels[0, 0, 1] < 50
    assert info.notes == ("only the first frame of 2 analysed",)  # said in the row's notes
    tiff = io.BytesIO()  # a multi-page TIFF is pages, not frames
    frames[0].save(tiff, format="TIFF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError) as err:
        decode_image(tiff.getvalue())
    assert err.value.code == "animated" and "multi-page TIFF with 2 pages" in err.value.reason
    assert decode_image(tiff.getvalue(), animated="first")[1].notes == (
        "only the first page of 2 analysed",)


def test_exif_orientation_is_reported_but_not_applied() -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    pixels, info = decode_image(_encode(img, "PNG", exif=exif))
    assert info.exif_orientation == 6
    np.testing.assert_array_equal(pixels, arr)  # stored grid, not rotated


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_a_tiff_is_analysed_on_its_stored_grid_whatever_its_orientation(
        orientation: int, compression: str | None) -> None:
    """Pillow's TIFF decoder rotates or mirrors the image by its orientation tag while loading;
    that is undone, so a TIFF is read like a JPEG: as stored, with the orientation noted."""
    stored = np.random.default_rng(orientation).integers(0, 256, (20, 12, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="TIFF", exif=exif, compression=compression)
    pixels, info = decode_image(buf.getvalue())
    assert np.array_equal(pixels, stored) and info.exif_orientation == orientation
    assert info.format == "TIFF" and (info.width, info.height) == (12, 20)
    note = (f"EXIF orientation {orientation} not applied: the pixels are analysed as stored "
            "(the photo displays rotated or mirrored)")
    expected = () if orientation == 1 else (note,)
    assert info.notes == expected


def test_a_tiff_turned_by_its_xmp_orientation_or_with_pages_is_read_as_stored() -> None:
    """Pillow also turns a TIFF by XMP's tiff:Orientation when IFD0 has none; a multi-page
    TIFF taken on request keeps its format and says 'page'."""
    stored = np.random.default_rng(9).integers(0, 256, (20, 12, 3), dtype=np.uint8)
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
           b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="TIFF", tiffinfo={700: xmp})
    pixels, info = decode_image(buf.getvalue())
    assert np.array_equal(pixels, stored) and info.exif_orientation == 6
    exif = Image.Exif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="TIFF", exif=exif, save_all=True,
                                 append_images=[Image.fromarray(stored[::-1])])
    pixels, info = decode_image(buf.getvalue(), animated="first")
    assert np.array_equal(pixels, stored) and info.format == "TIFF"
    assert "only the first page of 2 analysed" in info.notes


def test_twelve_bit_colour_in_a_sixteen_bit_file_is_said_as_for_grey() -> None:
    """Raw sensor values of 12 bits in a 16-bit RGB file become an almost black image of 16
    levels: the note says so, as it does for grey."""
    tifffile = pytest.importorskip("tifffile")
    rgb12 = np.random.default_rng(2).integers(0, 4096, (16, 12, 3), dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb12, photometric="rgb")
    pixels, info = decode_image(buf.getvalue())
    assert np.array_equal(pixels, (rgb12 >> 8).astype(np.uint8))
    assert "at most 12 bits used" in info.notes[0] and "16 level(s) remain" in info.notes[0]


def test_signed_tiffs_are_refused_and_premultiplied_alpha_is_said() -> None:
    """Signed samples were read as unsigned (-1 became 255) or refused with a wrong width;
    premultiplied (associated) alpha is divided out by Pillow while the note said "stored"."""
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(4)
    for dtype in (np.int8, np.int16):
        buf = io.BytesIO()
        tifffile.imwrite(buf, rng.integers(-100, 100, (16, 12), dtype=dtype))
        with pytest.raises(ImageError, match="signed integer") as err:
            decode_image(buf.getvalue())
        assert err.value.code == "unsupported_mode"
    rgba = rng.integers(0, 256, (16, 12, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rgba[..., 3] > 128, 255, 128)
    rgba[..., :3] = np.minimum(rgba[..., :3], rgba[..., 3:])  # valid premultiplied colours
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgba, photometric="rgb", extrasamples=[1])
    _, info = decode_image(buf.getvalue())
    assert any("premultiplied" in n and "not as stored" in n for n in info.notes), info.notes


def test_deep_samples_pillow_would_misread_are_refused() -> None:
    """Two files Pillow decodes without an error into wrong values: a 16-bit TIFF stored plane
    by plane, uncompressed (garbage), and a JPEG 2000 colour image of more than 8 bits (white
    wrapped to black). Both are refused; their 8-bit forms read exactly."""
    tifffile = pytest.importorskip("tifffile")
    rgb16 = np.random.default_rng(0).integers(0, 65536, (3, 16, 12), dtype=np.uint16)
    for planes, code in ((rgb16, "unsupported_format"), ((rgb16 >> 8).astype(np.uint8), None)):
        buf = io.BytesIO()
        tifffile.imwrite(buf, planes, planarconfig="separate", photometric="rgb")
        if code:
            with pytest.raises(ImageError, match="plane by plane") as err:
                decode_image(buf.getvalue())
            assert err.value.code == code
        else:
            assert np.array_equal(decode_image(buf.getvalue())[0], planes.transpose(1, 2, 0))
    rgb8 = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb8).save(buf, format="JPEG2000", irreversible=False)
    data = bytearray(buf.getvalue())
    assert np.array_equal(decode_image(bytes(data))[0], rgb8)  # lossless, 8 bits: exact
    siz = data.find(b"\xff\x4f\xff\x51") + 4 + 38
    for k in range(3):  # the same file declaring 16 bits per component
        data[siz + 3 * k] = 15
    with pytest.raises(ImageError, match="16 bits per component") as err:
        decode_image(bytes(data))
    assert err.value.code == "unsupported_format"


def test_missing_file_and_directory_give_reasons(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as err:
        read_image(tmp_path / "nope.png")
    assert err.value.code == "not_found"
    with pytest.raises(ImageError) as err:
        read_image(tmp_path)
    assert err.value.code == "unreadable"


def test_info_describes_the_stored_image(rgb_png: Path) -> None:
    _, info = read_image_with_info(rgb_png)
    assert (info.format, info.mode, info.width, info.height) == ("PNG", "RGB", 50, 40)


def test_a_large_file_is_identified_before_it_is_read_whole(tmp_path: Path) -> None:
    import hashlib

    from genprint.io.images import IDENTIFY_FIRST_BYTES

    garbage = tmp_path / "big.png"
    with open(garbage, "wb") as fh:  # sparse: large on paper, cheap on disk
        fh.write(b"not an image")
        fh.truncate(IDENTIFY_FIRST_BYTES + 1024)
    with pytest.raises(ImageError) as info:
        read_image_with_info(garbage)
    assert info.value.code == "not_an_image"
    assert info.value.sha256 == hashlib.sha256(garbage.read_bytes()).hexdigest()
    side = int((IDENTIFY_FIRST_BYTES / 3) ** 0.5) + 8  # an uncompressed BMP over the size
    big = tmp_path / "big.bmp"
    Image.new("RGB", (side, side), (10, 20, 30)).save(big)
    assert big.stat().st_size > IDENTIFY_FIRST_BYTES
    pixels, meta = read_image_with_info(big)
    assert pixels.shape == (side, side, 3) and meta.sha256


def test_a_heic_photo_without_its_plugin_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    with pytest.raises(ImageError) as caught:
        read_image(photo)
    assert caught.value.code == "unsupported_format"
    assert "pillow-heif" in caught.value.reason and "genprint[heif]" in caught.value.reason


def test_heif_transforms_and_depth_the_decoder_applies_are_said() -> None:
    """libheif turns a HEIF by its orientation and reduces 10-bit values with its own rounding,
    with no way to leave either out: the row says so (it said nothing)."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    rgb = np.random.default_rng(6).integers(0, 256, (32, 24, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="HEIF", exif=exif, quality=-1)
    _, info = decode_image(buf.getvalue())
    assert any("orientation 6) applied by the decoder" in n for n in info.notes), info.notes
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="HEIF", quality=-1)
    _, info = decode_image(buf.getvalue())
    assert not any("applied by the decoder" in n for n in info.notes), info.notes


def test_a_damaged_image_is_not_called_not_an_image() -> None:
    """A TIFF whose directory is cut off (Pillow writes it at the end) was reported as "not an
    image"; its first bytes name the format, so it is a damaged image."""
    rgb = np.random.default_rng(8).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="TIFF", compression="tiff_lzw")
    with pytest.raises(ImageError, match="a TIFF file by its first bytes") as err:
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert err.value.code == "corrupt"
    with pytest.raises(ImageError) as err:
        decode_image(b"plain text, not an image")
    assert err.value.code == "not_an_image"
