"""What one request to ``genprint serve`` may hold: checked before any image is decoded."""

from __future__ import annotations

from dataclasses import dataclass

from genprint.io.images import default_max_pixels

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServeLimits:
    """Limits of one ``POST /attribute`` request.

    A file over ``max_file_bytes`` or ``max_pixels`` is answered with an error row (as
    ``genprint attribute`` does), the rest of the request goes on. A request with more than
    ``max_files`` files, or a body over :attr:`max_request_bytes`, is refused as a whole
    (HTTP 413) before it is read to the end, so an upload cannot fill the server's disk or
    memory.
    """

    max_files: int = 64
    """Files per request."""
    max_file_bytes: int = 64 * MiB
    """Bytes per file."""
    max_pixels: int | None = None
    """Pixels per image (default: genprint's, 64 000 000 or ``GENPRINT_MAX_PIXELS``)."""
    batch_size: int = 64
    """Images per forward pass (large images are batched by pixels too)."""

    def __post_init__(self) -> None:
        for name in ("max_files", "max_file_bytes", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1, got {self.max_pixels}")

    @property
    def pixel_limit(self) -> int:
        """The pixel limit in force."""
        return default_max_pixels() if self.max_pixels is None else self.max_pixels

    @property
    def max_request_bytes(self) -> int:
        """The largest request body: every file at its limit, plus 64 KiB of multipart framing
        per file."""
        return self.max_files * (self.max_file_bytes + 64 * 1024)
