"""Simulated cameras: the "real" class of the world and the camera-identification task.

Every camera model is a documented, deterministic pipeline applied to a linear-light scene
(:mod:`genprint.world.scenes`):

1. **Optics / sensor response**: a 3×3 spectral cross-talk matrix and an illuminant cast.
2. **Colour filter array**: a Bayer pattern (RGGB, BGGR, GRBG or GBRG) keeps one channel per pixel.
3. **Sensor**: per-device photo-response non-uniformity (PRNU, a fixed multiplicative pattern,
   different for every device of a model), Poisson–Gaussian noise (shot gain + read noise),
   quantisation to the sensor's bit depth.
4. **Demosaicing** with ``colour-demosaicing``: bilinear, Malvar (2004) or Menon (2007).
5. **White balance** (gains), **colour matrix** (sensor RGB → sRGB-ish), **tone curve** (gamma
   and contrast S-curve), optional **sharpening** (unsharp mask) or **denoising** (Gaussian).
6. **8-bit quantisation**, then the camera's own **JPEG** at its quality, or none (lossless).

Scenes are rendered with a margin that is cropped after demosaicing/filtering, so image borders
carry no artefact of the simulation. Images of many scenes are demosaiced together in one tall
mosaic (same CFA phase everywhere), which is exact away from the cut margins and much faster.

Two camera models are **held out**: they never appear in training data and only give real test
images, to check that real photographs from unseen cameras are still called real.

**Random cameras** (``rcam-001``, ``rcam-002``, ...) are extra camera models for pretraining only
(``genprint bench build --task camera --random-cameras N``): each parameter is drawn, from a seed
derived from the name, within the range the eight training cameras span (categorical ones —
Bayer pattern, demosaicing, bit depth — among their values; sharpening, denoising and JPEG are
present as often as among them). Camera-identification pretraining on real photographs uses
dozens of camera models; the world has ten, so these stand in for the rest. They never appear in
an attribution benchmark, and the held-out cameras' parameters are not used to draw them.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from genprint.world.scenes import render_scenes

MARGIN = 4  # pixels cropped on each side after demosaicing and filtering (even: keeps CFA phase)


@dataclass(frozen=True)
class CameraModel:
    """One simulated camera model (every field documented in the module docstring)."""

    name: str
    cfa: str  # Bayer pattern
    demosaic: str  # bilinear | malvar2004 | menon2007
    crosstalk: float  # off-diagonal spectral cross-talk of the sensor
    cast: tuple[float, float, float]  # illuminant cast on the raw channels
    saturation: float  # colour-matrix saturation
    gamma: float  # tone-curve exponent (output = x ** (1 / gamma))
    contrast: float  # S-curve strength, 0 = none
    shot_gain: float  # Poisson–Gaussian noise: variance = shot_gain * x + read_sigma ** 2
    read_sigma: float
    prnu: float  # PRNU strength (std of the multiplicative pattern)
    bits: int  # sensor bit depth
    sharpen: float  # unsharp-mask amount, 0 = none
    denoise: float  # Gaussian denoising sigma (pixels), 0 = none
    jpeg_quality: int | None  # the camera's own JPEG quality; None = lossless output
    devices: int = 3  # number of physical devices (each has its own PRNU)
    held_out: bool = False


CAMERAS: tuple[CameraModel, ...] = (
    CameraModel("cam-01", "RGGB", "bilinear", 0.10, (1.0, 1.0, 1.0), 1.10, 2.2, 0.0,
                0.004, 0.004, 0.010, 12, 0.0, 0.0, None),
    CameraModel("cam-02", "BGGR", "malvar2004", 0.15, (0.9, 1.0, 1.2), 1.20, 2.4, 0.3,
                0.006, 0.002, 0.015, 12, 0.6, 0.0, 92),
    CameraModel("cam-03", "GRBG", "menon2007", 0.05, (1.1, 1.0, 0.8), 1.00, 2.0, 0.2,
                0.003, 0.006, 0.008, 10, 0.0, 0.7, 85),
    CameraModel("cam-04", "GBRG", "bilinear", 0.20, (1.0, 1.0, 0.9), 1.30, 2.2, 0.5,
                0.008, 0.003, 0.020, 10, 1.0, 0.0, None),
    CameraModel("cam-05", "RGGB", "menon2007", 0.12, (0.95, 1.0, 1.05), 1.15, 2.6, 0.1,
                0.002, 0.002, 0.012, 14, 0.3, 0.0, 95),
    CameraModel("cam-06", "BGGR", "bilinear", 0.08, (1.05, 1.0, 0.95), 0.95, 1.9, 0.4,
                0.010, 0.008, 0.018, 10, 0.0, 1.0, 80),
    CameraModel("cam-07", "GRBG", "malvar2004", 0.18, (0.85, 1.0, 1.1), 1.25, 2.3, 0.0,
                0.005, 0.005, 0.014, 12, 0.0, 0.0, None),
    CameraModel("cam-08", "GBRG", "menon2007", 0.10, (1.0, 1.0, 1.0), 1.05, 2.1, 0.3,
                0.004, 0.003, 0.011, 12, 0.8, 0.0, 90),
    # Held out: real test images only.
    CameraModel("cam-09", "RGGB", "malvar2004", 0.14, (1.0, 1.0, 1.1), 1.10, 2.2, 0.2,
                0.005, 0.004, 0.013, 12, 0.4, 0.0, 93, held_out=True),
    CameraModel("cam-10", "BGGR", "menon2007", 0.06, (0.9, 1.0, 1.0), 1.00, 2.4, 0.1,
                0.003, 0.005, 0.009, 14, 0.0, 0.5, None, held_out=True),
)
_BY_NAME = {c.name: c for c in CAMERAS}
RANDOM_PREFIX = "rcam-"
MAX_RANDOM_CAMERAS = 999


def random_camera_names(n: int) -> list[str]:
    """Names of the first ``n`` random pretraining cameras: ``rcam-001`` ... (see module doc)."""
    if not 0 <= n <= MAX_RANDOM_CAMERAS:
        raise ValueError(f"the number of random cameras must be 0 to {MAX_RANDOM_CAMERAS}, "
                         f"got {n}")
    return [f"{RANDOM_PREFIX}{k:03d}" for k in range(1, n + 1)]


def _random_camera(name: str) -> CameraModel:
    """The random camera called ``name``, drawn within the training cameras' parameter ranges."""
    train = [c for c in CAMERAS if not c.held_out]
    rng = np.random.default_rng(_seed("random-camera", name))

    def span(field: str) -> float:
        values = [float(getattr(c, field)) for c in train]
        return float(rng.uniform(min(values), max(values)))

    def choice(field: str) -> object:
        values = sorted({getattr(c, field) for c in train})
        return values[int(rng.integers(len(values)))]

    def optional(field: str) -> float:
        values = [float(getattr(c, field)) for c in train]
        on = [v for v in values if v > 0]
        if not on or rng.random() >= len(on) / len(values):
            return 0.0
        return float(rng.uniform(min(on), max(on)))

    casts = np.array([c.cast for c in train])
    cast = tuple(float(rng.uniform(lo, hi)) for lo, hi in zip(casts.min(0), casts.max(0)))
    qualities = [c.jpeg_quality for c in train if c.jpeg_quality is not None]
    jpeg = (None if rng.random() >= len(qualities) / len(train)
            else int(rng.integers(min(qualities), max(qualities) + 1)))
    return CameraModel(
        name, str(choice("cfa")), str(choice("demosaic")), span("crosstalk"),
        cast, span("saturation"), span("gamma"), span("contrast"),  # type: ignore[arg-type]
        span("shot_gain"), span("read_sigma"), span("prnu"), int(choice("bits")),  # type: ignore[arg-type]
        optional("sharpen"), optional("denoise"), jpeg,
    )


def camera_names(held_out: bool = False) -> list[str]:
    """Names of the training cameras (``held_out=False``) or of the held-out ones."""
    return [c.name for c in CAMERAS if c.held_out == held_out]


def get_camera(name: str) -> CameraModel:
    """The camera model called ``name`` (clear error listing the names otherwise)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    number = name[len(RANDOM_PREFIX):]
    if name.startswith(RANDOM_PREFIX) and number.isdigit() and len(number) == 3 and int(number):
        return _random_camera(name)
    raise KeyError(f"unknown camera {name!r}; known: {', '.join(_BY_NAME)} and random "
                   f"pretraining cameras {RANDOM_PREFIX}001 ... {RANDOM_PREFIX}999")


def camera_card(name: str) -> dict[str, object]:
    """Every parameter of a camera model, for docs and ``--json`` output."""
    return asdict(get_camera(name))


def _seed(*parts: object) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode()) & 0x7FFFFFFF


@lru_cache(maxsize=64)
def prnu_pattern(camera: str, device: int, height: int, width: int) -> np.ndarray:
    """The fixed PRNU pattern (mean 0, std 1, float32 H×W) of one device of a camera model."""
    rng = np.random.default_rng(_seed("prnu", camera, device, height, width))
    k = rng.standard_normal((height, width)).astype(np.float32)
    return (k - k.mean()) / (k.std() + 1e-8)


def _mosaic(rgb: np.ndarray, cfa: str) -> np.ndarray:
    """Keep one channel per pixel following the Bayer ``cfa`` (rgb: N×H×W×3, H and W even)."""
    idx = {"R": 0, "G": 1, "B": 2}
    raw = np.empty(rgb.shape[:3], rgb.dtype)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        raw[:, dy::2, dx::2] = rgb[:, dy::2, dx::2, idx[cfa[k]]]
    return raw


def _demosaic(raw: np.ndarray, cfa: str, algorithm: str) -> np.ndarray:
    """Demosaic a stack of raw frames at once by stacking them into one tall mosaic."""
    import colour_demosaicing as cd

    fn = {
        "bilinear": cd.demosaicing_CFA_Bayer_bilinear,
        "malvar2004": cd.demosaicing_CFA_Bayer_Malvar2004,
        "menon2007": cd.demosaicing_CFA_Bayer_Menon2007,
    }[algorithm]
    n, h, w = raw.shape
    out = fn(raw.reshape(n * h, w).astype(np.float64), cfa)
    return np.asarray(out, np.float32).reshape(n, h, w, 3)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the H and W axes of N×H×W×3 (reflect padding)."""
    radius = max(1, int(3 * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    tmp = sum(k[i] * pad[:, i : i + img.shape[1], :, :] for i in range(len(k)))
    return sum(k[i] * tmp[:, :, i : i + img.shape[2], :] for i in range(len(k)))


def _colour_matrix(cam: CameraModel) -> np.ndarray:
    """Sensor RGB → output RGB: inverse of the cross-talk, then a saturation adjustment."""
    c = cam.crosstalk
    crosstalk = np.full((3, 3), c / 2, np.float32) + np.eye(3, dtype=np.float32) * (1 - c)
    grey = np.full((3, 3), 1 / 3, np.float32)
    sat = grey + cam.saturation * (np.eye(3, dtype=np.float32) - grey)
    return (sat @ np.linalg.inv(crosstalk)).astype(np.float32)


def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(images)
    for k, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out[k] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def capture(scenes: np.ndarray, camera: str, devices: np.ndarray, seed: int) -> np.ndarray:
    """Photograph linear-light ``scenes`` (N×H×W×3, H and W even) with ``camera``.

    ``devices[k]`` picks the physical device (its PRNU) for scene k. Returns uint8
    N×(H−2·MARGIN)×(W−2·MARGIN)×3. Deterministic for ``seed``.
    """
    cam = get_camera(camera)
    _, h, w, _ = scenes.shape
    if h % 2 or w % 2:
        raise ValueError("scene height and width must be even (Bayer phase)")
    rng = np.random.default_rng(_seed("capture", camera, seed))
    c = cam.crosstalk
    crosstalk = np.full((3, 3), c / 2, np.float32) + np.eye(3, dtype=np.float32) * (1 - c)
    sensor = scenes @ crosstalk.T * np.asarray(cam.cast, np.float32)
    raw = _mosaic(sensor, cam.cfa)
    prnu = np.stack([prnu_pattern(camera, int(d), h, w) for d in devices])
    raw = raw * (1.0 + cam.prnu * prnu)
    noise_sd = np.sqrt(np.maximum(cam.shot_gain * raw, 0.0) + cam.read_sigma**2)
    raw = raw + noise_sd * rng.standard_normal(raw.shape).astype(np.float32)
    levels = 2**cam.bits - 1
    raw = np.round(np.clip(raw, 0.0, 1.0) * levels) / levels
    rgb = _demosaic(raw, cam.cfa, cam.demosaic)
    rgb = rgb / np.asarray(cam.cast, np.float32)  # white balance
    rgb = np.clip(rgb @ _colour_matrix(cam).T, 0.0, 1.0)  # colour matrix
    rgb = rgb ** (1.0 / cam.gamma)
    if cam.contrast:
        s_curve = 0.5 - 0.5 * np.cos(np.pi * rgb)
        rgb = (1 - cam.contrast) * rgb + cam.contrast * s_curve
    if cam.denoise:
        rgb = _gaussian_blur(rgb, cam.denoise)
    if cam.sharpen:
        rgb = rgb + cam.sharpen * (rgb - _gaussian_blur(rgb, 1.0))
    out = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    out = out[:, MARGIN : h - MARGIN, MARGIN : w - MARGIN]
    if cam.jpeg_quality is not None:
        out = _jpeg(np.ascontiguousarray(out), cam.jpeg_quality)
    return np.ascontiguousarray(out)


def camera_images(
    n: int,
    size: int,
    seed: int,
    cameras: list[str] | None = None,
    held_out: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """``n`` real images (uint8 N×size×size×3) and the camera name of each.

    Cameras are taken in turn from ``cameras`` (default: every training camera, or every
    held-out camera with ``held_out=True``); each image comes from a random device of its camera
    and a fresh scene. Deterministic for ``seed``.
    """
    names = list(cameras) if cameras is not None else camera_names(held_out)
    if not names:
        raise ValueError("no camera selected")
    for name in names:
        get_camera(name)
    if n < 0:
        raise ValueError("n must be ≥ 0")
    if size % 2:
        raise ValueError("size must be even (Bayer phase)")
    rng = np.random.default_rng(_seed("camera_images", seed, size, *names))
    which = np.array([k % len(names) for k in range(n)])
    rng.shuffle(which)
    scenes = render_scenes(n, size + 2 * MARGIN, int(rng.integers(2**31)))
    out = np.empty((n, size, size, 3), np.uint8)
    for c, name in enumerate(names):
        idx = np.flatnonzero(which == c)
        if idx.size == 0:
            continue
        devices = rng.integers(get_camera(name).devices, size=idx.size)
        out[idx] = capture(scenes[idx], name, devices, int(rng.integers(2**31)))
    return out, [names[c] for c in which]
