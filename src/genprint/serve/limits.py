"""What ``genprint serve`` accepts: limits checked before any image is decoded."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from genprint.io.images import default_max_pixels

MiB = 1024 * 1024

MULTIPART_FRAMING = 64 * 1024
"""Bytes allowed per file for the multipart framing around it (headers, boundaries)."""


@dataclass(frozen=True)
class ServeLimits:
    """Limits of ``POST /attribute``.

    A file over ``max_file_bytes`` or ``max_pixels`` is answered with an error row (as
    ``genprint attribute`` does), and the rest of the request goes on. A request is refused as a
    whole, before its body is read to the end: with more than ``max_files`` files or a body over
    :attr:`max_body_bytes` (HTTP 413), or when ``max_waiting`` requests already wait for the
    model (HTTP 503, before any of its body is read). So the server holds at most
    ``max_waiting + 1`` request bodies (uploads over 1 MiB are spooled to the temporary
    directory), and a client that gives up while its request waits costs no model time.
    """

    max_files: int = 64
    """Files per request."""
    max_file_bytes: int = 64 * MiB
    """Bytes per file."""
    max_request_bytes: int = 256 * MiB
    """Bytes per request body, whatever the number of files."""
    max_pixels: int | None = None
    """Pixels per image (default: genprint's, 64 000 000 or ``GENPRINT_MAX_PIXELS``)."""
    max_waiting: int = 8
    """Requests that may wait for the model while it answers another one."""
    batch_size: int = 64
    """Images per forward pass (large images are batched by pixels too)."""
    body_timeout: float = 300.0
    """Seconds from admission in which a request's whole body must arrive (more: HTTP 408);
    the default lets the largest body (256 MiB) come at 0.9 MB/s."""
    max_request_tiles: int = 256
    """The largest ``max_tiles`` a request may ask for (tiling methods; more: HTTP 422), so
    that one request cannot hold the model for minutes: 64 images of 256 tiles took 19.5 s
    on one core (another job on the other) with the demo's ``metric`` model."""
    max_connections: int = 100
    """Open connections at once, any endpoint (more: HTTP 503). Enforced by the server that
    runs the app: uvicorn under ``genprint serve`` and :func:`genprint.serve.app.serving`;
    another ASGI server needs its own setting."""

    def __post_init__(self) -> None:
        for name in ("max_files", "max_file_bytes", "max_request_bytes", "batch_size",
                     "max_request_tiles", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {self.max_waiting}")
        if not self.body_timeout > 0:
            raise ValueError(f"body_timeout must be positive, got {self.body_timeout}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1, got {self.max_pixels}")

    @property
    def pixel_limit(self) -> int:
        """The pixel limit in force."""
        return default_max_pixels() if self.max_pixels is None else self.max_pixels

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted: ``max_request_bytes``, or less when
        ``max_files`` files at ``max_file_bytes`` (plus their multipart framing) are less."""
        return min(self.max_request_bytes,
                   self.max_files * (self.max_file_bytes + MULTIPART_FRAMING))

    def describe(self) -> dict[str, Any]:
        """The limits in force, as ``GET /model`` and ``serve --json`` report them."""
        return {**asdict(self), "max_pixels": self.pixel_limit,
                "max_body_bytes": self.max_body_bytes}
