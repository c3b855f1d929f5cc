"""The HTTP API of ``genprint serve`` (FastAPI).

``POST /attribute`` takes one or more image files as a multipart upload (field ``files``) and
answers with one row per file, in upload order: the same fields as a row of
``genprint attribute --json`` (:class:`genprint.results.Attribution`), ``path`` being the
uploaded file name. A file that cannot be used (empty, corrupt, truncated, too large, not an
image, ...) gets its ``error`` and ``error_code`` and the other files are still answered, so the
request succeeds (HTTP 200) as long as it was well formed. ``GET /model`` describes the model
(its ``model_sha256`` ties every answer to it), ``GET /health`` answers ``{"status": "ok"}``, and
``/docs`` is the interactive OpenAPI page.

Images are decoded as stored, never resized (see :func:`genprint.io.images.decode_image`). One
model answers one request at a time (a lock: methods keep per-call state); files are read and
decoded inside that turn, a batch at a time, so memory stays bounded by the batch and the limits.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import genprint
from genprint.io.batches import LoadResult
from genprint.io.images import ImageError, decode_image
from genprint.methods.base import Attributor
from genprint.results import json_ready
from genprint.serve.limits import ServeLimits

READ_CHUNK = 1024 * 1024


class _BodyLimit:
    """ASGI middleware refusing a request body over ``limit`` bytes with HTTP 413: at once when
    its Content-Length says so, otherwise as soon as that many bytes have arrived."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return (f"request body over {self.limit} bytes (the server's limit: its files per "
                "request times bytes per file); send fewer or smaller files per request")

    async def _refuse(self, send: Send) -> None:
        import json

        body = json.dumps({"detail": self._message()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _read_upload(upload: UploadFile, index: int, limits: ServeLimits, min_size: int,
                 first_frame: bool) -> LoadResult:
    """One uploaded file as :func:`~genprint.io.batches.iter_images` would give it: pixels and
    decode notes, or the :class:`~genprint.io.images.ImageError` saying why it cannot be used."""
    name = Path(upload.filename or f"upload-{index}")
    digest = hashlib.sha256()
    data = upload.file.read(limits.max_file_bytes + 1)
    digest.update(data)
    if len(data) > limits.max_file_bytes:
        size = len(data)
        while chunk := upload.file.read(READ_CHUNK):  # hash all of it, as for a local file
            digest.update(chunk)
            size += len(chunk)
        error = ImageError("file_too_large", f"file is {size} bytes, over the server's limit "
                           f"of {limits.max_file_bytes}")
        return LoadResult(name, error, digest.hexdigest())
    sha256 = digest.hexdigest()
    try:
        pixels, info = decode_image(data, max_pixels=limits.pixel_limit, min_size=min_size,
                                    animated="first" if first_frame else "refuse")
    except ImageError as exc:
        return LoadResult(name, exc, sha256)
    return LoadResult(name, pixels, sha256, info.notes)


def model_summary(attributor: Attributor) -> dict[str, Any]:
    """What ``GET /model`` answers: the method, its sources and thresholds, and the identifiers
    that tie answers to this model."""
    thresholds = getattr(attributor, "thresholds_", None)
    fingerprints = getattr(attributor, "training_fingerprints_", None)
    return json_ready({
        "method": attributor.method,
        "classes": list(attributor.classes_),
        "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        "min_size": int(attributor.min_size),
        "model_sha256": getattr(attributor, "model_sha256_", None),
        "created": attributor.created_,
        "n_training_fingerprints": None if fingerprints is None else len(fingerprints),
        "genprint_version": genprint.__version__,
    })


def create_app(model: str | Path | Attributor, limits: ServeLimits | None = None) -> FastAPI:
    """A FastAPI application answering with ``model`` (a saved model directory, loaded and
    checked now, or a fitted :class:`~genprint.methods.base.Attributor`). Run it with any ASGI
    server, e.g. ``uvicorn.run(create_app("MODEL"))`` or ``genprint serve MODEL``."""
    attributor = model if isinstance(model, Attributor) else genprint.load(model)
    attributor._check_fitted()
    limits = limits or ServeLimits()
    summary = model_summary(attributor)
    turn = threading.Lock()

    app = FastAPI(
        title="genprint",
        version=genprint.__version__,
        summary="Open-set source attribution of images: which generator made an image, is it "
                "a real camera image, or is its source unknown.",
    )
    app.add_middleware(_BodyLimit, limit=limits.max_request_bytes)

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness: the model is loaded and the server answers."""
        return {"status": "ok"}

    @app.get("/model")
    def describe_model() -> dict[str, Any]:
        """The model this server answers with."""
        return summary

    @app.post("/attribute")
    def attribute(
        files: Annotated[list[UploadFile], File(description="Image files (field `files`, "
                                                "repeatable).")],
        first_frame: Annotated[bool, Query(description="Analyse the first frame of animated "
                                           "images instead of refusing them.")] = False,
        max_tiles: Annotated[int | None, Query(ge=1, description="Tiling methods (metric, "
                                               "baseline): analyse at most this many tiles per "
                                               "image (default: the model's).")] = None,
    ) -> dict[str, Any]:
        """Attribute uploaded images: one row per file, in upload order, with label (a source
        or `unknown`), candidate, score, threshold, per-source scores, or the reason a file
        could not be used."""
        if len(files) > limits.max_files:
            raise HTTPException(413, f"{len(files)} files in one request, over the server's "
                                f"limit of {limits.max_files}; send them in several requests")

        tiling = hasattr(attributor, "max_tiles")
        if max_tiles is not None and not tiling:
            raise HTTPException(400, f"method {attributor.method!r} does not tile images "
                                "(max_tiles is for metric and baseline models)")

        def loaded() -> Iterator[LoadResult]:
            for i, upload in enumerate(files):
                yield _read_upload(upload, i, limits, attributor.min_size, first_frame)

        with turn:
            own_tiles = getattr(attributor, "max_tiles", None)
            if max_tiles is not None:
                attributor.max_tiles = max_tiles
            try:
                rows = list(attributor.attribute_loaded(loaded(), batch_size=limits.batch_size))
            finally:
                if max_tiles is not None:
                    attributor.max_tiles = own_tiles
        return json_ready({
            "model_sha256": summary["model_sha256"],
            "genprint_version": genprint.__version__,
            "max_tiles": (max_tiles or own_tiles) if tiling else None,
            "n_images": len(rows),
            "n_errors": sum(not r.ok for r in rows),
            "results": [r.to_dict() for r in rows],
        })

    return app
