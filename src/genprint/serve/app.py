"""The HTTP API of ``genprint serve`` (FastAPI).

``POST /attribute`` takes one or more image files as a multipart upload (field ``files``) and
answers with one row per file, in upload order: the same fields as a row of
``genprint attribute --json`` (:class:`genprint.results.Attribution`), ``path`` being the
uploaded file name. A file that cannot be used (empty, corrupt, truncated, too large, not an
image, ...) gets its ``error`` and ``error_code`` and the other files are still answered, so the
request succeeds (HTTP 200) as long as it was well formed. ``GET /model`` describes the model
(its ``model_sha256`` ties every answer to it) and the server's limits, ``GET /health``
answers ``{"status": "ok"}`` at once even while the model is busy, ``GET /metrics`` gives
monitoring counters in Prometheus' text format (:mod:`genprint.serve.metrics`), and ``/docs``
is the interactive OpenAPI page.

Images are decoded as stored, never resized (see :func:`genprint.io.images.decode_image`). The
model answers one request at a time (methods keep per-call state); the next ones wait their
turn, up to :attr:`ServeLimits.max_waiting` of them (more get HTTP 503 before their body is
read), and one whose client has gone by its turn is dropped without using the model. Files are
read and decoded within the turn, a batch at a time, so memory stays bounded by the batch; if
the client leaves during its turn, no further file is read (the batch in progress ends it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import genprint
from genprint.io.batches import LoadResult
from genprint.io.images import ImageError, decode_image
from genprint.methods.base import Attributor
from genprint.methods.recalibrate import recalibrations
from genprint.results import Attribution, json_ready
from genprint.serve.limits import ServeLimits
from genprint.serve.metrics import ServeMetrics, metrics_or_none
from genprint.serve.schema import (
    ERROR_RESPONSES,
    UPLOAD_BODY,
    AttributeAnswer,
    ModelInfo,
)

READ_CHUNK = 1024 * 1024
UPLOAD_PATH = "/attribute"
log = logging.getLogger("genprint.serve")


async def _answer(send: Send, status: int, detail: str,
                  headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class _Admission:
    """ASGI middleware in front of ``POST /attribute``: refuses a body over the limit (HTTP
    413: at once when its Content-Length says so, otherwise as soon as that many bytes have
    arrived), a request that would make more than ``max_waiting`` wait (HTTP 503, before
    any of its body is read) and a body that has not arrived in full ``body_timeout`` seconds
    after the request was admitted (HTTP 408), so that a slow client cannot hold a waiting
    place for longer."""

    def __init__(self, app: ASGIApp, limits: ServeLimits,
                 metrics: ServeMetrics | None = None) -> None:
        self.app = app
        self.limits = limits
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and _route_path(scope) == UPLOAD_PATH
                and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        derived = ("" if limit == self.limits.max_request_bytes else
                   f": {self.limits.max_files} files × ({self.limits.max_file_bytes} bytes + "
                   "64 KiB of multipart framing), less than the request limit")
        too_large = (f"request body over {limit} bytes (the server's limit per request"
                     f"{derived}); send fewer or smaller files per request")
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, too_large)
            return
        if self.in_flight > self.limits.max_waiting:  # one answered, max_waiting waiting
            await _answer(send, 503, f"{self.in_flight} requests are already being answered "
                          "or waiting for the model; retry later", ((b"retry-after", b"1"),))
            return
        received = 0
        timeout = self.limits.body_timeout
        deadline = anyio.current_time() + timeout
        body_done = False
        ending = _closing_delimiter(scope)
        tail = b"\r\n"  # as if before the body: a body of no parts is the delimiter alone
        scope[BODY_CLOSED] = ending is None  # not multipart: the form parser says what is wrong

        async def counted() -> Message:
            nonlocal received, body_done, tail
            if body_done:  # after the body: only a disconnection can come, at any time
                return await receive()
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise HTTPException(408, f"the request body did not arrive in full within "
                                    f"{timeout:g} s (the server's limit); send it faster or "
                                    "in smaller requests")
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise HTTPException(413, too_large)
                if ending is not None and not scope[BODY_CLOSED]:
                    scope[BODY_CLOSED] = ending in tail + chunk
                    tail = (tail + chunk)[-len(ending):]
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        self.in_flight += 1
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, counted, send)
        finally:
            self.in_flight -= 1
            if self.metrics is not None:
                self.metrics.in_flight.dec()


BODY_CLOSED = "genprint.body_closed"
"""Scope key set by :class:`_Admission`: whether a multipart/form-data body held its closing
delimiter (``CRLF--BOUNDARY--``, which a part's content cannot hold). Without it the body was
cut short, and the multipart parser would silently answer with the parts it had finished."""


def _closing_delimiter(scope: Scope) -> bytes | None:
    """``CRLF--BOUNDARY--``, the closing delimiter of a ``multipart/form-data`` request (its
    boundary read as Starlette's parser reads it), or None for any other request: only
    form-data bodies are parsed, and the form parser says what is wrong with the others."""
    from starlette.formparsers import parse_options_header

    kind = dict(scope.get("headers", [])).get(b"content-type", b"")
    if parse_options_header is None:  # no multipart parser: the form cannot be read anyway
        return None
    main, options = parse_options_header(kind)
    boundary = options.get(b"boundary")
    if main != b"multipart/form-data" or not boundary:
        return None
    return b"\r\n--" + boundary + b"--"


class _Counting:
    """ASGI middleware counting every HTTP request by path and status code (outermost, so
    refusals of the other middlewares — 401, 413, 503 — are counted too)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an error before any answer started

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noted)
        except anyio.get_cancelled_exc_class():  # e.g. at shutdown: nothing answered, not
            raise  # counted
        except Exception:  # a crash: counted (500 unless an answer had started)
            self.metrics.request(_route_path(scope), status)
            raise
        self.metrics.request(_route_path(scope), status)


OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
"""Paths answered without the token: liveness probes and the API's description."""


def _route_path(scope: Scope) -> str:
    """The request's path within this application (without the prefix it is mounted or
    proxied under)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class _TokenCheck:
    """ASGI middleware requiring ``Authorization: Bearer TOKEN`` on every path but
    :data:`OPEN_PATHS` (HTTP 401 otherwise, before any body is read)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _route_path(scope) not in OPEN_PATHS:
            scheme, _, given = dict(scope.get("headers", [])).get(
                b"authorization", b"").partition(b" ")
            # the scheme is case-insensitive (RFC 9110, 11.1); the token is compared in
            # constant time
            if not (hmac.compare_digest(given.strip(), self.expected)
                    and scheme.lower() == b"bearer"):
                await _answer(send, 401, "this server needs `Authorization: Bearer TOKEN` "
                              "(the token it was started with)",
                              ((b"www-authenticate", b"Bearer"),))
                return
        await self.app(scope, receive, send)


MAX_FIELDS = 16
"""Form fields other than files a request may hold (more: HTTP 400)."""


async def _read_form(request: Request, limits: ServeLimits) -> FormData:
    """The multipart body, parsed with the server's file limit (so a request with too many
    files is refused while it arrives, not after)."""
    try:
        form = await request.form(max_files=limits.max_files, max_fields=MAX_FIELDS)
    except StarletteHTTPException as exc:  # how Starlette reports a multipart problem
        if exc.status_code != 400:  # the body limit, raised while it arrived
            raise
        if str(exc.detail).startswith("Too many files"):
            raise HTTPException(413, f"more than {limits.max_files} files in one request (the "
                                "server's limit); send them in several requests") from None
        raise HTTPException(400, f"the body is not a readable multipart upload ({exc.detail}); "
                            "send image files in the field `files`") from None
    if not request.scope.get(BODY_CLOSED, True):
        await form.close()
        raise HTTPException(400, "the multipart body ends before its closing boundary: it was "
                            "cut short, and files after the cut would be missing; send it "
                            "again")
    return form


def _uploads(form: FormData, content_type: str | None) -> list[UploadFile]:
    """The files of the field ``files``, or HTTP 400 saying what was sent instead."""
    parts = form.getlist("files")
    if not parts:
        sent = sorted(set(form.keys()))
        what = (f"; the body has the fields {sent}" if sent else
                f"; the request's content type is {content_type!r}" if content_type else
                "; the request has no content type")
        raise HTTPException(400, "no files: send images as multipart/form-data in the field "
                            f"`files` (curl -F files=@image.png){what}")
    for i, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            raise HTTPException(400, f"part {i} of `files` is not a file (it has no filename; "
                                "a name given only as filename*= is not read); send it as a "
                                "file with filename= (curl -F files=@image.png)")
    return parts  # type: ignore[return-value]


_CLI_FRAME_HINT = re.compile(r"\(`--first-frame`.*\)$")
_CLI_PIXELS_HINT = re.compile(r"; to allow it, raise the limit with .*$")


def _read_upload(upload: UploadFile, index: int, limits: ServeLimits, min_size: int,
                 first_frame: bool) -> LoadResult:
    """One uploaded file as :func:`~genprint.io.batches.iter_images` would give it: pixels and
    decode notes, or the :class:`~genprint.io.images.ImageError` saying why it cannot be used."""
    name = upload.filename or f"upload-{index}"
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
        if exc.code == "animated":  # the way to take the first frame over HTTP
            exc = ImageError("animated", _CLI_FRAME_HINT.sub("(`first_frame=true` in the "
                                                             "query)", exc.reason))
        elif exc.code == "too_many_pixels":  # the limit is the server's, not the client's
            exc = ImageError("too_many_pixels", _CLI_PIXELS_HINT.sub(
                "; the limit is the server's (its operator sets it with `genprint "
                "--max-pixels N serve`)", exc.reason))
        return LoadResult(name, exc, sha256)
    return LoadResult(name, pixels, sha256, info.notes)


def _who(request: Request) -> str:
    """The client of ``request`` for a log line: ``client 10.0.0.5:51234``."""
    return (f"client {request.client.host}:{request.client.port}" if request.client
            else "a client")


CLIENT_CHECK_SECONDS = 0.25
"""How often a request being analysed checks that its client is still connected."""


async def _watch_client(request: Request, gone: threading.Event) -> None:
    """Set ``gone`` once the client of ``request`` has disconnected."""
    while not await request.is_disconnected():
        await anyio.sleep(CLIENT_CHECK_SECONDS)
    gone.set()


def model_summary(attributor: Attributor, limits: ServeLimits) -> dict[str, Any]:
    """What ``GET /model`` answers: the method, its sources and thresholds, the identifiers
    that tie answers to this model, and the server's limits."""
    thresholds = getattr(attributor, "thresholds_", None)
    fingerprints = getattr(attributor, "training_fingerprints_", None)
    info = getattr(attributor, "training_info_", None) or {}
    return json_ready({
        "method": attributor.method,
        "classes": list(attributor.classes_),
        "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        "min_size": int(attributor.min_size),
        "model_sha256": getattr(attributor, "model_sha256_", None),
        "created": attributor.created_,
        "n_training_fingerprints": None if fingerprints is None else len(fingerprints),
        "threshold_rule": info.get("threshold_rule"),
        "recalibrated_under": recalibrations(attributor),
        "genprint_version": genprint.__version__,
        "limits": limits.describe(),
    })


def create_app(model: str | Path | Attributor, limits: ServeLimits | None = None, *,
               token: str | None = None) -> FastAPI:
    """A FastAPI application answering with ``model`` (a saved model directory, loaded and
    checked now, or a fitted :class:`~genprint.methods.base.Attributor`). With ``token``,
    ``/attribute``, ``/model`` and ``/metrics`` need ``Authorization: Bearer TOKEN`` (HTTP 401
    otherwise).
    Run it with any ASGI server, e.g. ``uvicorn.run(create_app("MODEL"))`` or
    ``genprint serve MODEL``."""
    if token is not None and not token.strip():
        raise ValueError("an empty token would protect nothing; give one or None")
    attributor = model if isinstance(model, Attributor) else genprint.load(model)
    attributor._check_fitted()
    limits = limits or ServeLimits()
    summary = model_summary(attributor, limits)
    tiling = hasattr(attributor, "max_tiles")
    turn = anyio.Lock()

    app = FastAPI(
        title="genprint",
        version=genprint.__version__,
        summary="Open-set source attribution of images: which generator made an image, is it "
                "a real camera image, or is its source unknown.",
    )
    metrics = metrics_or_none(method=attributor.method, model_sha256=summary["model_sha256"],
                              version=genprint.__version__)
    app.state.limits = limits  # for the server: max_connections (see serving)
    app.add_middleware(_Admission, limits=limits, metrics=metrics)
    if token is not None:  # added after: runs before, so a refused request is never queued
        app.add_middleware(_TokenCheck, token=token)
    if metrics is not None:  # added last: runs first, and counts every answer
        app.add_middleware(_Counting, metrics=metrics)

    @app.head("/health", include_in_schema=False)
    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the model is loaded and the server answers (at once, even while the
        model is busy)."""
        return {"status": "ok"}

    @app.get("/model", response_model=ModelInfo)
    async def describe_model() -> dict[str, Any]:
        """The model this server answers with, and the server's limits."""
        return summary

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}},
                              "description": "Prometheus text format"}})
    async def serve_metrics() -> Response:
        """Counters for monitoring, in Prometheus' text format: requests by path and status,
        images answered by label (a source or `unknown`), files that could not be used by
        error code, the model's time per request and the wait for it, requests in flight."""
        if metrics is None:
            raise HTTPException(501, "metrics need prometheus-client: pip install "
                                "'genprint[serve]'")
        body, kind = metrics.render()
        return Response(content=body, media_type=kind)

    def work(uploads: list[UploadFile], first_frame: bool, max_tiles: int | None,
             gone: threading.Event) -> tuple[list[Attribution], int | None]:
        """The rows, and the tiles per image they were made with (tiling methods). Once
        ``gone`` is set (the client left), no further file is read: the batch in progress
        ends the work."""
        def loaded() -> Iterator[LoadResult]:
            for i, upload in enumerate(uploads):
                if gone.is_set():
                    return
                yield _read_upload(upload, i, limits, attributor.min_size, first_frame)

        own_tiles = getattr(attributor, "max_tiles", None)
        if max_tiles is not None:
            attributor.max_tiles = max_tiles
        try:
            rows = list(attributor.attribute_loaded(loaded(), batch_size=limits.batch_size))
            return rows, getattr(attributor, "max_tiles", None)
        finally:
            if max_tiles is not None:
                attributor.max_tiles = own_tiles

    @app.post(UPLOAD_PATH, response_model=AttributeAnswer, responses=ERROR_RESPONSES,
              openapi_extra=UPLOAD_BODY)
    async def attribute(
        request: Request,
        first_frame: Annotated[bool, Query(description="Analyse the first frame of animated "
                                           "images instead of refusing them.")] = False,
        max_tiles: Annotated[int | None, Query(
            ge=1, description="Tiling methods (metric, baseline): analyse at most this many tiles "
                        "per image (default: the model's; at most the server's "
                        "`max_request_tiles`).")] = None,
    ) -> Any:
        """Attribute uploaded images (multipart field `files`, repeatable): one row per file,
        in upload order, with label (a source or `unknown`), candidate, score, threshold,
        per-source scores, or the reason a file could not be used."""
        if max_tiles is not None and not tiling:
            raise HTTPException(400, f"method {attributor.method!r} does not tile images "
                                "(max_tiles is for metric and baseline models)")
        if max_tiles is not None and max_tiles > limits.max_request_tiles:
            raise RequestValidationError([{  # FastAPI's 422, as for max_tiles=0
                "type": "less_than_equal", "loc": ("query", "max_tiles"), "input": max_tiles,
                "msg": f"over the server's limit of {limits.max_request_tiles} tiles per image",
                "ctx": {"le": limits.max_request_tiles}}])
        try:
            form = await _read_form(request, limits)
        except ClientDisconnect:
            log.info("%s left during its upload (499)", _who(request))
            return Response(status_code=499)
        try:
            uploads = _uploads(form, request.headers.get("content-type"))
            asked = time.perf_counter()
            async with turn:
                started = time.perf_counter()
                if metrics is not None:
                    metrics.wait_seconds.observe(started - asked)
                if await request.is_disconnected():
                    log.info("%s left before its turn (499): %d file(s) not analysed",
                             _who(request), len(uploads))
                    return Response(status_code=499)
                gone = threading.Event()
                async with anyio.create_task_group() as watching:
                    watching.start_soon(_watch_client, request, gone)
                    rows, tiles = await run_in_threadpool(work, uploads, first_frame,
                                                          max_tiles, gone)
                    watching.cancel_scope.cancel()
                if metrics is not None:
                    metrics.model_seconds.observe(time.perf_counter() - started)
                if gone.is_set():
                    log.info("%s left during its analysis (499): stopped after %d of %d "
                             "file(s)", _who(request), len(rows), len(uploads))
                    return Response(status_code=499)
        finally:
            await form.close()
        if metrics is not None:  # answers delivered (not those of a client that left)
            metrics.rows(rows)
        return json_ready({
            "model_sha256": summary["model_sha256"],
            "genprint_version": genprint.__version__,
            "max_tiles": tiles,
            "n_images": len(rows),
            "n_errors": sum(not r.ok for r in rows),
            "results": [r.to_dict() for r in rows],
        })

    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), so that a port in use is an
    error before the server starts and the address printed is the real one."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)  # connections queue from now on, before uvicorn runs
    except OSError:
        sock.close()
        raise
    return sock


@contextmanager
def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """``app`` served by uvicorn in a background thread, with one event loop as ``genprint
    serve`` runs it (e.g. in a notebook, a test or a benchmark); yields its base URL
    (``port`` 0: a free port) and stops the server on exit."""

    import uvicorn

    sock = listening_socket(host, port)
    limits = getattr(getattr(app, "state", None), "limits", None)
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning",
        limit_concurrency=limits.max_connections if limits is not None else None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
