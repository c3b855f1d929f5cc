"""The JSON that ``genprint serve`` answers with, as pydantic models (its OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class AttributionRow(BaseModel):
    """One uploaded file's answer: the fields of :class:`genprint.results.Attribution` (a row
    of ``genprint attribute --json``), ``path`` being the file name as uploaded."""

    path: str = Field(description="The uploaded file's name.")
    label: str | None = Field(description="The attributed source, or `unknown`.")
    candidate: str | None = Field(description="The known source the method ranks first.")
    score: float | None = Field(description="Open-set score of the candidate (higher = more "
                                "like it).")
    threshold: float | None = Field(description="The candidate's acceptance threshold.")
    is_unknown: bool | None
    scores: dict[str, float | None] = Field(description="One score per known source.")
    n_tiles: int | None
    tile_agreement: float | None
    accepted_by: str | None = Field(description="`threshold` or `separator`; empty for "
                                    "`unknown`.")
    seen_in_training: bool | None = Field(description="Same pixels as a picture the model was "
                                          "fitted on.")
    notes: str | None = Field(description="What reading the file changed or left out, "
                                              "then what the method did to the pixels "
                                              "(probe's padding).")
    error: str | None = Field(description="Why the file could not be used.")
    error_code: str | None
    sha256: str | None = Field(description="sha256 of the uploaded bytes.")
    model_sha256: str | None


class AttributeAnswer(BaseModel):
    """The answer to ``POST /attribute``."""

    model_sha256: str | None = Field(description="sha256 of the model's card.json.")
    genprint_version: str
    max_tiles: int | None = Field(description="Tiles per image in force (tiling methods).")
    n_images: int
    n_errors: int = Field(description="Files that could not be used (rows with `error`).")
    results: list[AttributionRow] = Field(description="One row per file, in upload order.")


class ModelInfo(BaseModel):
    """The answer to ``GET /model``."""

    method: str
    classes: list[str]
    thresholds: list[float | None] | None
    min_size: int = Field(description="Smallest image side the model accepts (never upsampled).")
    model_sha256: str | None
    created: dict[str, Any] | None = Field(description="The card's creation record.")
    n_training_fingerprints: int | None
    threshold_rule: str | None = Field(
        default=None, description="How the thresholds were set (the card's record).")
    recalibrated_under: list[list[str]] = Field(
        default_factory=list, description="The conditions of each `genprint calibrate` of the "
                                          "thresholds, in order (none: as trained).")
    genprint_version: str
    limits: dict[str, Any] = Field(description="The server's limits per request.")


class Problem(BaseModel):
    """An error answer (400, 413, 503)."""

    detail: str


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {"files": {
                "type": "array", "items": {"type": "string", "format": "binary"},
                "description": "Image files (repeat the field for several)."}},
        }}},
    },
}
"""The OpenAPI description of the upload (the endpoint parses the multipart body itself, to
apply its limits while reading it)."""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Not a multipart upload of files in `files`, a "
          "body cut short (no closing boundary), or an option that does not apply to the "
          "model."},
    401: {"model": Problem, "description": "Only when the server has a token: the request "
          "does not carry `Authorization: Bearer TOKEN`."},
    408: {"model": Problem, "description": "The request body did not arrive in full within "
          "the server's time limit."},
    413: {"model": Problem, "description": "More files or bytes than the server accepts."},
    503: {"model": Problem, "description": "Too many requests wait for the model; retry later "
          "(see Retry-After)."},
}
