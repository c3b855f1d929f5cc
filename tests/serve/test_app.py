"""genprint serve: uploads answered with the local path's rows, bad files per file, limits."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import fields
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import genprint
from genprint.cli.app import app as cli_app
from genprint.results import Attribution
from genprint.serve import ServeLimits, create_app
from genprint.serve.app import serving
from tests.conftest import write_toy_sources

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A baseline model trained on three toy sources, and the folder of those sources."""
    root = tmp_path_factory.mktemp("serve")
    sources = write_toy_sources(root)
    model = root / "model"
    out = runner.invoke(cli_app, ["train", "baseline", "--data", str(sources), "--out", str(model)])
    assert out.exit_code == 0, out.output
    return model, sources


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _mixed_files(sources: Path) -> list[tuple[str, bytes]]:
    good = [(f"{name}.png", (sources / name / "03.png").read_bytes())
            for name in ("alpha", "beta", "gamma")]
    beta = (sources / "beta" / "00.png").read_bytes()
    rgba = np.dstack([np.asarray(Image.open(sources / "gamma" / "05.png")),
                      np.full((36, 40), 128, np.uint8)])
    return [good[0], ("zero.png", b""), ("text.png", b"not an image"), good[1],
            ("trunc.png", beta[: len(beta) // 2]), ("tiny.png", _png(np.zeros((4, 4, 3), np.uint8))),
            ("rgba.png", _png(rgba)), good[2]]


def _post(client: TestClient, files: list[tuple[str, bytes]], **params: object):
    return _post_to(client, "/attribute", files, **params)


def _post_to(client: TestClient, url: str, files: list[tuple[str, bytes]], **params: object):
    return client.post(url, params=params,
                       files=[("files", (name, data, "application/octet-stream"))
                              for name, data in files])


def test_uploads_get_the_local_rows_in_order(served: tuple[Path, Path], tmp_path: Path) -> None:
    model, sources = served
    files = _mixed_files(sources)
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    for name, data in files:
        (local_dir / name).write_bytes(data)
    attributor = genprint.load(model)
    local = {Path(r.path).name: r.to_dict() for r in attributor.attribute(local_dir)}

    client = TestClient(create_app(model))
    answer = _post(client, files)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    rows = body["results"]
    assert [r["path"] for r in rows] == [name for name, _ in files]  # upload order, upload names
    assert body["n_images"] == 8 and body["n_errors"] == 4
    card_hash = hashlib.sha256((model / "card.json").read_bytes()).hexdigest()
    assert body["model_sha256"] == card_hash and body["genprint_version"] == genprint.__version__
    codes = {r["path"]: r["error_code"] for r in rows}
    assert codes["zero.png"] == "empty" and codes["text.png"] == "not_an_image"
    assert codes["trunc.png"] in ("truncated", "corrupt") and codes["tiny.png"] == "too_small"
    for (name, data), row in zip(files, rows, strict=True):
        want = local[name]
        assert row["sha256"] == hashlib.sha256(data).hexdigest() == want["sha256"], name
        assert row["model_sha256"] == card_hash
        assert row.keys() == want.keys()
        for key in want.keys() - {"path", "scores", "score", "threshold", "tile_agreement"}:
            assert row[key] == want[key], (name, key)  # error texts and codes included
        for key in ("score", "threshold", "tile_agreement"):
            assert row[key] == pytest.approx(want[key], abs=1e-9), (name, key)
        assert row["scores"].keys() == want["scores"].keys()
        for source, score in want["scores"].items():
            assert row["scores"][source] == pytest.approx(score, abs=1e-9)
    assert rows[0]["label"] == "alpha" and rows[0]["seen_in_training"] is True
    assert "alpha" in rows[6]["notes"]  # the dropped alpha channel is said, as locally


def test_model_and_health(served: tuple[Path, Path]) -> None:
    model, _ = served
    client = TestClient(create_app(model))
    assert client.get("/health").json() == {"status": "ok"}
    assert client.head("/health").status_code == 200
    info = client.get("/model").json()
    assert info["method"] == "baseline" and info["classes"] == ["alpha", "beta", "gamma"]
    assert len(info["thresholds"]) == 3 and info["n_training_fingerprints"] > 0
    assert info["model_sha256"] == hashlib.sha256((model / "card.json").read_bytes()).hexdigest()
    assert info["limits"]["max_files"] == 64 and info["limits"]["max_pixels"] > 0
    api = client.get("/openapi.json").json()
    assert api["paths"].keys() >= {"/attribute", "/model"}
    post = api["paths"]["/attribute"]["post"]
    assert "files" in str(post["requestBody"]) and {"400", "408", "413", "503"} <= post["responses"].keys()
    # the documented row is the Attribution dataclass, field for field
    row = api["components"]["schemas"]["AttributionRow"]["properties"]
    assert list(row) == [f.name for f in fields(Attribution)]


def test_limits(served: tuple[Path, Path]) -> None:
    model, sources = served
    good = (sources / "alpha" / "01.png").read_bytes()
    limits = ServeLimits(max_files=3, max_file_bytes=len(good) + 10)
    client = TestClient(create_app(model, limits))
    # a file over the per-file limit is an error row with the hash of all its bytes
    big = good + b"\0" * 100
    rows = _post(client, [("good.png", good), ("big.png", big)]).json()["results"]
    assert rows[0]["error"] is None and rows[1]["error_code"] == "file_too_large"
    assert rows[1]["sha256"] == hashlib.sha256(big).hexdigest()
    # too many files: the whole request is refused, with the limit named
    answer = _post(client, [("a.png", good)] * 4)
    assert answer.status_code == 413 and "more than 3 files" in answer.json()["detail"]
    # a body over files x bytes per file: refused from its Content-Length ...
    huge = b"\0" * (limits.max_body_bytes + 1)
    answer = _post(client, [("huge.png", huge)])
    assert answer.status_code == 413 and "request body over" in answer.json()["detail"]

    # ... and, without a Content-Length (chunked), once that many bytes have arrived
    def chunks():
        for _ in range(limits.max_body_bytes // 4096 + 2):
            yield b"\0" * 4096

    answer = client.post("/attribute", content=chunks(),
                         headers={"content-type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 413
    # a body cap below files x bytes per file
    small = TestClient(create_app(model, ServeLimits(max_request_bytes=len(good) * 2)))
    assert _post(small, [("a.png", good)]).status_code == 200
    assert _post(small, [("a.png", good)] * 3).status_code == 413
    # no files, files in another field, a part that is not a file: 400 saying what to send
    answer = client.post("/attribute")
    assert answer.status_code == 400 and "field `files`" in answer.json()["detail"]
    answer = client.post("/attribute", files=[("file", ("a.png", good, "image/png"))])
    assert answer.status_code == 400 and "['file']" in answer.json()["detail"]
    answer = client.post("/attribute", data={"files": "not a file"})
    assert answer.status_code == 400 and "no filename" in answer.json()["detail"]
    star = (b'--XX\r\nContent-Disposition: form-data; name="files"; '
            b"filename*=UTF-8''caf%C3%A9.png\r\n\r\n" + good + b"\r\n--XX--\r\n")
    answer = client.post("/attribute", content=star,
                         headers={"content-type": "multipart/form-data; boundary=XX"})
    assert answer.status_code == 400 and "filename*=" in answer.json()["detail"]
    answer = client.post("/attribute", content=b"garbage",
                         headers={"content-type": "multipart/form-data"})
    assert answer.status_code == 400 and "multipart" in answer.json()["detail"]
    answer = client.post("/attribute", content=good, headers={"content-type": "image/png"})
    assert answer.status_code == 400 and "content type is 'image/png'" in answer.json()["detail"]
    # a file over the pixel limit: its row says the limit is the server's
    pixels = TestClient(create_app(model, ServeLimits(max_pixels=100)))
    row = _post(pixels, [("good.png", good)]).json()["results"][0]
    assert row["error_code"] == "too_many_pixels" and "the limit is the server's" in row["error"]
    assert "GENPRINT_MAX_PIXELS" not in row["error"]
    # the limit a body hits when it comes from files × bytes per file says so
    assert "3 files × (" in _post(client, [("huge.png", huge)]).json()["detail"]


def _multipart(files: list[tuple[str, bytes]], boundary: bytes = b"XX") -> bytes:
    return b"".join(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; '
                    b'filename="' + name.encode() + b'"\r\nContent-Type: image/png\r\n\r\n'
                    + data + b"\r\n" for name, data in files)


def test_a_multipart_body_cut_short_is_refused(served: tuple[Path, Path]) -> None:
    """The multipart parser answers with the parts it finished: without the closing boundary
    the files after the cut would be silently missing from a 200 answer."""
    model, sources = served
    one, two = ((sources / name / "02.png").read_bytes() for name in ("alpha", "beta"))
    client = TestClient(create_app(model))

    def post(body: bytes, kind: str = "multipart/form-data; boundary=XX") -> httpx.Response:
        return client.post("/attribute", content=body, headers={"content-type": kind})

    body = _multipart([("one.png", one), ("two.png", two)])
    for cut in (body, body[: len(body) - len(two) // 2]):  # no closing boundary; cut in a file
        answer = post(cut)
        assert answer.status_code == 400 and "cut short" in answer.json()["detail"]
    # "--XX--" inside a part (here a file name) is not the delimiter, which starts a line
    fooling = _multipart([("see--XX--.png", one), ("two.png", two)])
    assert "cut short" in post(fooling[:-20]).json()["detail"]
    whole = body + b"--XX--\r\n"
    for kind in ('multipart/form-data; boundary="XX"', "multipart/form-data; BOUNDARY=XX",
                 'multipart/form-data; x="boundary=YY"; boundary=XX; charset=utf-8'):
        answer = post(whole + b"an epilogue", kind)
        assert answer.status_code == 200, (kind, answer.text)
        assert [r["path"] for r in answer.json()["results"]] == ["one.png", "two.png"]
    spaced = _multipart([("one.png", one)], boundary=b" ab") + b"-- ab--\r\n"
    assert post(spaced, 'multipart/form-data; boundary=" ab"').status_code == 200
    # other multipart types are not form uploads: said so, not "cut short"
    answer = post(whole, "multipart/mixed; boundary=XX")
    assert answer.status_code == 400 and "no files" in answer.json()["detail"]


def test_the_closing_boundary_is_found_across_chunks(served: tuple[Path, Path]) -> None:
    """The body reaches the app in pieces (TestClient joins them, so the app is driven
    directly): a delimiter split between two pieces, or arriving a byte at a time, counts."""
    import anyio

    model, sources = served
    app = create_app(model)
    body = _multipart([("one.png", (sources / "alpha" / "02.png").read_bytes())]) + b"--XX--"

    async def status(pieces: list[bytes]) -> int:
        messages = [{"type": "http.request", "body": p, "more_body": k < len(pieces) - 1}
                    for k, p in enumerate(pieces)]
        sent: list[dict] = []

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await anyio.sleep(3600)  # the client stays connected
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/attribute", "root_path": "",
                 "query_string": b"", "http_version": "1.1", "scheme": "http",
                 "server": ("test", 80), "client": ("test", 1),
                 "headers": [(b"content-type", b"multipart/form-data; boundary=XX")]}
        with anyio.fail_after(60):
            await app(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    for split in range(len(body) - 12, len(body)):
        assert anyio.run(status, [body[:split], body[split:]]) == 200, split
    assert anyio.run(status, [body[:-8], *(bytes([b]) for b in body[-8:])]) == 200
    assert anyio.run(status, [body[:-8], body[-8:-4]]) == 400  # cut inside the delimiter

def test_animated_first_frame(served: tuple[Path, Path]) -> None:
    model, sources = served
    frames = [Image.open(sources / "beta" / f"0{i}.png").convert("RGB") for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    client = TestClient(create_app(model))
    files = [("anim.gif", buf.getvalue())]
    row = _post(client, files).json()["results"][0]
    assert row["error_code"] == "animated" and "first_frame=true" in row["error"]
    row = _post(client, files, first_frame=True).json()["results"][0]
    assert row["error"] is None and row["label"] is not None


def _files(sources: Path, name: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{name}{i}.png", (sources / name / f"{i:02d}.png").read_bytes(),
                       "image/png")) for i in range(10, 20)]


def test_concurrent_requests_get_their_own_rows(served: tuple[Path, Path]) -> None:
    model, sources = served
    answers: dict[str, list[str]] = {}
    with serving(create_app(model)) as url:
        def ask(name: str) -> None:
            rows = httpx.post(f"{url}/attribute", files=_files(sources, name)).json()["results"]
            answers[name] = [r["candidate"] for r in rows]

        threads = [threading.Thread(target=ask, args=(n,)) for n in ("alpha", "beta", "gamma")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    attributor = genprint.load(model)
    for name in ("alpha", "beta", "gamma"):
        local = attributor.attribute([sources / name / f"{i:02d}.png" for i in range(10, 20)])
        assert answers[name] == [r.candidate for r in local]


def test_a_slow_upload_is_refused_and_frees_its_place(served: tuple[Path, Path]) -> None:
    """A client that sends part of its body and stalls gets HTTP 408 once ``body_timeout``
    has passed, and its waiting place is free again: the next request is answered."""
    import socket
    from urllib.parse import urlsplit

    model, sources = served
    limits = ServeLimits(max_waiting=0, body_timeout=0.5)
    with serving(create_app(model, limits)) as url:
        where = urlsplit(url)
        with socket.create_connection((where.hostname, where.port), timeout=10) as slow:
            slow.sendall(b"POST /attribute HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")
            t = time.perf_counter()
            answer = slow.recv(65536).decode("latin-1")  # the server answers; we send no more
            waited = time.perf_counter() - t
            while "\r\n\r\n" not in answer or len(answer.split("\r\n\r\n", 1)[1]) < int(
                    answer.lower().split("content-length:", 1)[1].split("\r\n", 1)[0]):
                more = slow.recv(65536).decode("latin-1")  # the body can come in a 2nd segment
                if not more:
                    break
                answer += more
        assert answer.startswith("HTTP/1.1 408") and "within 0.5 s" in answer
        assert 0.4 < waited < 5
        # the place it held is free: with max_waiting 0, a request is answered again
        ok = httpx.post(f"{url}/attribute", files=_files(sources, "alpha"), timeout=30)
        assert ok.status_code == 200 and ok.json()["n_images"] == 10
    # a body that arrives in time is not affected by the limit (the other tests), and the
    # limit is reported with the others
    assert TestClient(create_app(model, limits)).get("/model").json()["limits"][
        "body_timeout"] == 0.5
    with pytest.raises(ValueError, match="body_timeout"):
        ServeLimits(body_timeout=0)


def test_busy_model_queue_health_and_clients_that_left(served: tuple[Path, Path]) -> None:
    model, sources = served
    attributor = genprint.load(model)
    release, inside, calls = threading.Event(), threading.Event(), []
    original = attributor.attribute_loaded

    def held(*args, **kwargs):  # the model busy until the test releases it
        calls.append(1)
        inside.set()
        release.wait(20)
        return original(*args, **kwargs)

    attributor.attribute_loaded = held  # type: ignore[method-assign]
    with serving(create_app(attributor, ServeLimits(max_waiting=1))) as url:
        first: dict[str, httpx.Response] = {}
        busy = threading.Thread(target=lambda: first.update(r=httpx.post(
            f"{url}/attribute", files=_files(sources, "alpha"), timeout=30)))
        busy.start()
        assert inside.wait(10)
        # health answers at once while the model is busy
        t = time.perf_counter()
        assert httpx.get(f"{url}/health").status_code == 200
        assert time.perf_counter() - t < 10  # the model is held for up to 20 s
        # a client that gives up while waiting for its turn
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/attribute", files=_files(sources, "beta"), timeout=1.0)
        # one waiting already (the client that left still counts until its turn): 503
        answer = httpx.post(f"{url}/attribute", files=_files(sources, "gamma"))
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        release.set()
        busy.join(30)
        assert first["r"].status_code == 200 and first["r"].json()["n_images"] == 10
        # the request whose client left was dropped at its turn: the model ran once
        deadline = time.perf_counter() + 5
        while time.perf_counter() < deadline and httpx.post(
                f"{url}/attribute", files=_files(sources, "gamma")).status_code == 503:
            time.sleep(0.1)
        assert len(calls) == 2  # the first request and this last one


def test_cli_serves_the_model(served: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    import json
    import socket

    import uvicorn

    model, sources = served
    started: dict[str, object] = {}

    def fake_run(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        started.update(app=server.config.app, port=sockets[0].getsockname()[1],
                       logs=json.dumps(server.config.log_config))
        # already listening when --json was printed: a client can connect at once
        socket.create_connection(("127.0.0.1", started["port"]), timeout=5).close()
        sockets[0].close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    out = runner.invoke(cli_app, ["serve", str(model), "--port", "0", "--max-files", "2",
                                  "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)
    # port 0: the port actually bound is the one printed
    assert started["port"] > 0 and info["address"] == f"http://127.0.0.1:{started['port']}"
    assert info["limits"]["max_files"] == 2 and info["method"] == "baseline"
    assert "sys.stdout" not in started["logs"]  # access lines on stderr: stdout is for --json
    client = TestClient(started["app"])
    good = (sources / "gamma" / "02.png").read_bytes()
    assert _post(client, [("g.png", good)]).json()["results"][0]["candidate"] == "gamma"
    assert _post(client, [("g.png", good)] * 3).status_code == 413
    out = runner.invoke(cli_app, ["serve", str(tmp_path)])  # not a model
    assert out.exit_code == 2 and "card.json" in out.output
    with socket.socket() as taken:  # a port in use: a clean error, nothing printed as started
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = runner.invoke(cli_app, ["serve", str(model), "--port", str(port), "--json"])
    assert out.exit_code == 2 and "cannot listen" in out.output and not out.stdout.strip()


def test_max_tiles_per_request(served: tuple[Path, Path]) -> None:
    model, sources = served
    tile = np.asarray(Image.open(sources / "alpha" / "00.png"))[:32, :32]
    big = _png(np.tile(tile, (4, 4, 1)))  # 128×128: 16 tiles of 32×32
    client = TestClient(create_app(model))
    body = _post(client, [("big.png", big)], max_tiles=2).json()
    assert body["results"][0]["n_tiles"] == 2 and body["max_tiles"] == 2
    body = _post(client, [("big.png", big)]).json()  # the model's own setting is back
    assert body["results"][0]["n_tiles"] == 16 and body["max_tiles"] == 16
    assert _post(client, [("big.png", big)], max_tiles=0).status_code == 422
    # a request may not ask for more tiles than the server allows
    capped = TestClient(create_app(model, ServeLimits(max_request_tiles=8)))
    assert _post(capped, [("big.png", big)], max_tiles=8).json()["max_tiles"] == 8
    answer = _post(capped, [("big.png", big)], max_tiles=9)
    assert answer.status_code == 422  # in FastAPI's form, as for max_tiles=0
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["query", "max_tiles"] and "limit of 8" in problem["msg"]
    assert capped.get("/model").json()["limits"]["max_request_tiles"] == 8


def test_max_tiles_answered_is_the_one_used_under_concurrency(served: tuple[Path, Path]) -> None:
    model, sources = served
    tile = np.asarray(Image.open(sources / "alpha" / "00.png"))[:32, :32]
    big = ("files", ("big.png", _png(np.tile(tile, (4, 4, 1))), "image/png"))
    with serving(create_app(model)) as url:
        answers: list[dict] = []

        def ask(params: dict) -> None:
            answers.append(httpx.post(f"{url}/attribute", params=params, files=[big] * 8,
                                      timeout=60).json() | {"asked": params})

        threads = [threading.Thread(target=ask, args=({"max_tiles": 2} if i % 2 else {},))
                   for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(answers) == 6
    for body in answers:
        want = body["asked"].get("max_tiles", 16)
        assert body["max_tiles"] == want
        assert {r["n_tiles"] for r in body["results"]} == {want}


def test_limits_hold_when_mounted_under_a_prefix(served: tuple[Path, Path]) -> None:
    from fastapi import FastAPI

    model, sources = served
    good = (sources / "alpha" / "01.png").read_bytes()
    outer = FastAPI()
    outer.mount("/gp", create_app(model, ServeLimits(max_request_bytes=len(good) * 2)))
    client = TestClient(outer)
    assert _post_to(client, "/gp/attribute", [("a.png", good)]).status_code == 200
    answer = _post_to(client, "/gp/attribute", [("a.png", good)] * 3)
    assert answer.status_code == 413 and "request body over" in answer.json()["detail"]


def test_token(served: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    model, sources = served
    good = (sources / "beta" / "04.png").read_bytes()
    client = TestClient(create_app(model, token="s3cret"))
    answer = _post(client, [("b.png", good)])
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert client.get("/model").status_code == 401
    wrong = {"Authorization": "Bearer s3cre"}
    assert client.get("/model", headers=wrong).status_code == 401
    right = {"Authorization": "Bearer s3cret"}
    assert client.get("/model", headers=right).json()["method"] == "baseline"
    # the scheme's case does not matter (RFC 9110); another scheme is refused
    assert client.get("/model", headers={"Authorization": "bearer s3cret"}).status_code == 200
    assert client.get("/model", headers={"Authorization": "Basic s3cret"}).status_code == 401
    answer = client.post("/attribute", headers=right,
                         files=[("files", ("b.png", good, "image/png"))])
    assert answer.status_code == 200 and answer.json()["results"][0]["candidate"] == "beta"
    assert client.get("/health").status_code == 200  # probes and the API page stay open
    assert client.get("/openapi.json").status_code == 200
    with pytest.raises(ValueError, match="empty token"):
        create_app(model, token=" ")
    # the command line reads it from the environment, never from its arguments
    import json

    import uvicorn

    started: dict[str, object] = {}
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda server, sockets: started.update(app=server.config.app)
                        or sockets[0].close())
    monkeypatch.setenv("GENPRINT_SERVE_TOKEN", "t0ken")
    out = runner.invoke(cli_app, ["serve", str(model), "--port", "0", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["token_required"] is True
    served_client = TestClient(started["app"])
    assert served_client.get("/model").status_code == 401
    assert served_client.get("/model", headers={"Authorization": "Bearer t0ken"}).status_code == 200


def test_client_gone_during_analysis_stops_reading(served: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import genprint.serve.app as serve_app

    model, sources = served
    attributor = genprint.load(model)
    release, inside, read = threading.Event(), threading.Event(), []
    original_loaded, original_read = attributor.attribute_loaded, serve_app._read_upload

    def held(*args, **kwargs):  # the analysis has started; files are read as it consumes them
        inside.set()
        release.wait(20)
        return original_loaded(*args, **kwargs)

    def counted(*args, **kwargs):
        read.append(1)
        return original_read(*args, **kwargs)

    attributor.attribute_loaded = held  # type: ignore[method-assign]
    monkeypatch.setattr(serve_app, "_read_upload", counted)
    with serving(create_app(attributor)) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/attribute", files=_files(sources, "alpha"), timeout=1.0)
        assert inside.wait(10)
        time.sleep(1.0)  # the server notices within CLIENT_CHECK_SECONDS
        release.set()
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and httpx.get(f"{url}/health").status_code != 200:
            time.sleep(0.1)
        answer = httpx.post(f"{url}/attribute", files=_files(sources, "beta"), timeout=30)
        counters = httpx.get(f"{url}/metrics").text
    assert answer.status_code == 200 and answer.json()["n_images"] == 10
    assert len(read) == 10  # only the second request's files: the first one's were never read
    if "genprint_answers_total" in counters:  # with prometheus-client: only delivered answers
        got = _samples(counters)
        answered = sum(v for (name, _), v in got.items() if name == "genprint_answers_total")
        assert answered == 10
        assert got[("genprint_http_requests_total", (("path", "/attribute"), ("status", "499")))] == 1


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_answers_errors_and_time(served: tuple[Path, Path]) -> None:
    pytest.importorskip("prometheus_client")
    model, sources = served
    client = TestClient(create_app(model, ServeLimits(max_files=8)))
    files = _mixed_files(sources)  # 3 attributed, 5 that cannot be used (1 with notes only)
    answer = _post(client, files)
    assert answer.status_code == 200
    rows = answer.json()["results"]
    assert _post(client, [(f"{i}.png", b"") for i in range(9)]).status_code == 413
    assert client.get("/model").status_code == 200
    text = client.get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    got = _samples(text.text)
    labels = [r["label"] for r in rows if r["error"] is None]
    for label in set(labels):
        assert got[("genprint_answers_total", (("label", label),))] == labels.count(label)
    codes = [r["error_code"] for r in rows if r["error"] is not None]
    for code in set(codes):
        assert got[("genprint_image_errors_total", (("error_code", code),))] == codes.count(code)
    assert got[("genprint_http_requests_total", (("path", "/attribute"), ("status", "200")))] == 1
    assert got[("genprint_http_requests_total", (("path", "/attribute"), ("status", "413")))] == 1
    assert got[("genprint_http_requests_total", (("path", "/model"), ("status", "200")))] == 1
    assert got[("genprint_model_seconds_count", ())] == 1 and got[("genprint_wait_seconds_count",
                                                                   ())] == 1
    assert got[("genprint_requests_in_flight", ())] == 0
    info = [k for k in got if k[0] == "genprint_model_info"]
    assert len(info) == 1 and ("method", "baseline") in info[0][1]
    # with a token, the counters are the service's too: the token is needed
    guarded = TestClient(create_app(model, token="s3cret"))
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    after = _samples(guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text)
    assert after[("genprint_http_requests_total", (("path", "/metrics"), ("status", "401")))] == 1


def test_the_servers_own_log_lines_are_printed() -> None:
    """Lines of the logger genprint.serve (clients that left) reach stderr at the level the
    server was started with, beside uvicorn's."""
    import logging
    import logging.config

    from genprint.cli.serve import _logs_to_stderr

    logger = logging.getLogger("genprint.serve")
    before = (logger.level, list(logger.handlers), logger.propagate)
    try:
        logging.config.dictConfig(_logs_to_stderr("info"))
        assert logger.isEnabledFor(logging.INFO) and logger.handlers
        logging.config.dictConfig(_logs_to_stderr("warning"))
        assert not logger.isEnabledFor(logging.INFO)
    finally:
        logger.level, logger.handlers, logger.propagate = before[0], before[1], before[2]
