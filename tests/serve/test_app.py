"""genprint serve: uploads answered with the local path's rows, bad files per file, limits."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import genprint
from genprint.cli.app import app as cli_app
from genprint.serve import ServeLimits, create_app
from tests.conftest import textured

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A baseline model trained on three toy sources, and the folder of those sources."""
    root = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    sources = root / "sources"
    for name, period in (("alpha", 2), ("beta", 3), ("gamma", 5)):
        (sources / name).mkdir(parents=True)
        for i in range(24):
            Image.fromarray(textured(rng, 36, 40, period)).save(sources / name / f"{i:02d}.png")
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
    return client.post("/attribute", params=params,
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
        for key in ("label", "candidate", "is_unknown", "error_code", "notes", "n_tiles",
                    "accepted_by", "seen_in_training"):
            assert row[key] == want[key], (name, key)
        assert row["scores"].keys() == want["scores"].keys()
        for source, score in want["scores"].items():
            assert row["scores"][source] == pytest.approx(score, abs=1e-9)
    assert rows[0]["label"] == "alpha" and rows[0]["seen_in_training"] is True
    assert "alpha" in rows[6]["notes"]  # the dropped alpha channel is said, as locally


def test_model_and_health(served: tuple[Path, Path]) -> None:
    model, _ = served
    client = TestClient(create_app(model))
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["method"] == "baseline" and info["classes"] == ["alpha", "beta", "gamma"]
    assert len(info["thresholds"]) == 3 and info["n_training_fingerprints"] > 0
    assert info["model_sha256"] == hashlib.sha256((model / "card.json").read_bytes()).hexdigest()
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/attribute", "/model"}


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
    assert answer.status_code == 413 and "limit of 3" in answer.json()["detail"]
    # a body over files x bytes per file: refused from its Content-Length ...
    huge = b"\0" * (limits.max_request_bytes + 1)
    answer = _post(client, [("huge.png", huge)])
    assert answer.status_code == 413 and "request body over" in answer.json()["detail"]

    # ... and, without a Content-Length (chunked), once that many bytes have arrived
    def chunks():
        for _ in range(limits.max_request_bytes // 4096 + 2):
            yield b"\0" * 4096

    answer = client.post("/attribute", content=chunks(),
                         headers={"content-type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 413
    # no files at all: FastAPI's validation error names the field
    answer = client.post("/attribute")
    assert answer.status_code == 422 and "files" in answer.text


def test_animated_first_frame(served: tuple[Path, Path]) -> None:
    model, sources = served
    frames = [Image.open(sources / "beta" / f"0{i}.png").convert("RGB") for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    client = TestClient(create_app(model))
    files = [("anim.gif", buf.getvalue())]
    assert _post(client, files).json()["results"][0]["error_code"] == "animated"
    row = _post(client, files, first_frame=True).json()["results"][0]
    assert row["error"] is None and row["label"] is not None


def test_concurrent_requests_get_their_own_rows(served: tuple[Path, Path]) -> None:
    model, sources = served
    client = TestClient(create_app(model))
    answers: dict[str, list[str]] = {}

    def ask(name: str) -> None:
        files = [(f"{name}{i}.png", (sources / name / f"{i:02d}.png").read_bytes())
                 for i in range(10, 20)]
        answers[name] = [r["candidate"] for r in _post(client, files).json()["results"]]

    threads = [threading.Thread(target=ask, args=(n,)) for n in ("alpha", "beta", "gamma")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    attributor = genprint.load(model)
    for name in ("alpha", "beta", "gamma"):
        local = attributor.attribute([sources / name / f"{i:02d}.png" for i in range(10, 20)])
        assert answers[name] == [r.candidate for r in local]


def test_cli_serves_the_model(served: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    import json

    import uvicorn

    model, sources = served
    started: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda web_app, **kw: started.update(app=web_app, **kw))
    out = runner.invoke(cli_app, ["serve", str(model), "--port", "8123", "--max-files", "2",
                                  "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)
    assert info["address"] == "http://127.0.0.1:8123" and info["max_files"] == 2
    assert started["host"] == "127.0.0.1" and started["port"] == 8123
    client = TestClient(started["app"])
    good = (sources / "gamma" / "02.png").read_bytes()
    assert _post(client, [("g.png", good)]).json()["results"][0]["candidate"] == "gamma"
    assert _post(client, [("g.png", good)] * 3).status_code == 413
    out = runner.invoke(cli_app, ["serve", str(tmp_path)])  # not a model
    assert out.exit_code == 2 and "card.json" in out.output


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
