"""The HTML report: parsed with the stdlib parser, every plot an embedded PNG that decodes."""

from __future__ import annotations

import base64
import io
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

from genprint.evaluation.evaluate import EvaluationRun, _labels, score_results
from genprint.evaluation.report import write_report
from genprint.io.sources import Item
from genprint.results import Attribution

CLASSES = ["gan-a", "gan-b", "real"]
PLOTS = {"confusion", "roc", "oscr", "histogram", "embedding"}


class _Page(HTMLParser):
    """Collects images, tables (with their header and body cells) and notes."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, dict[str, str]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.notes: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._table: str | None = None
        self._note: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "img":
            self.images[a["id"]] = a
        elif tag == "table":
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "p" and a.get("class") == "note":
            self._note = a["id"]
            self.notes[self._note] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "p":
            self._note = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._note:
            self.notes[self._note] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _make_run(with_unknown: bool = True, embeddings: bool = False,
              failed: int = 0, classes: list[str] | None = None,
              unknowns: tuple[str, str] = ("gan-u1", "vae-u2")) -> EvaluationRun:
    rng = np.random.default_rng(0)
    CLASSES = classes or globals()["CLASSES"]
    sources = [c for c in CLASSES for _ in range(12)]
    if with_unknown:
        sources += [unknowns[0]] * 8 + [unknowns[1]] * 6
    items = [Item(Path(f"/bench/{s}/{k}.png"), s, "test") for k, s in enumerate(sources)]
    results = []
    for k, src in enumerate(sources):
        scores = rng.normal(0.2, 0.1, len(CLASSES))
        if src in CLASSES:
            scores[CLASSES.index(src)] += 0.5
        cand = int(np.argmax(scores))
        unknown = bool(scores[cand] < 0.5)
        results.append(Attribution(
            str(items[k].path), label="unknown" if unknown else CLASSES[cand],
            candidate=CLASSES[cand], score=float(scores[cand]), threshold=0.5, is_unknown=unknown,
            scores=dict(zip(CLASSES, map(float, scores), strict=True))))
    for k in range(failed):
        results[k] = Attribution(results[k].path, error="too small", error_code="too_small")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = score_results(items, results, CLASSES)
    metrics = {"method": "fake", "protocol": "all", **metrics}
    emb = rng.normal(size=(len(items), 5)) if embeddings else None
    return EvaluationRun(items, results, _labels(items, CLASSES), CLASSES, metrics, emb)


def _assert_png(img: dict[str, str]) -> None:
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix) and img["alt"]
    with Image.open(io.BytesIO(base64.b64decode(img["src"][len(prefix):]))) as im:
        assert im.format == "PNG"
        im.load()
        assert im.width > 100 and im.height > 100


def test_full_report(tmp_path: Path) -> None:
    run = _make_run(embeddings=True)
    perturbed = {"jpeg75": dict(run.metrics), "noise": {**run.metrics, "auroc": float("nan")}}
    path = write_report(run, tmp_path / "sub" / "r.html", perturbations=perturbed, title="T <1>")
    page = _parse(path)
    assert {f"plot-{p}" for p in PLOTS} | {"plot-perturbations"} == set(page.images)
    for img in page.images.values():
        _assert_png(img)
    assert {"table-summary", "table-confusion", "table-perturbations"} <= set(page.tables)
    assert not page.notes
    # self-contained: no external resource of any kind
    for tag, attrs in page.tags:
        assert tag not in ("script", "link")
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith("data:")
    assert "T &lt;1&gt;" in path.read_text()
    # confusion matrix: known classes then the unknown column; unknown sources as rows
    header, *rows = page.tables["table-confusion"]
    assert header[1:] == [*CLASSES, "unknown"]
    assert [r[0] for r in rows] == [*CLASSES, "gan-u1 (unknown source)",
                                    "vae-u2 (unknown source)"]
    counts = np.array([[int(c) for c in r[1:]] for r in rows])
    assert counts.sum() == len(run.results)
    assert counts[3:, :].sum(axis=1).tolist() == [8, 6]
    answered_unknown = sum(r.label == "unknown" for r in run.results)
    assert counts[:, -1].sum() == answered_unknown
    # perturbation table: clean condition first, NaN as n/a
    perturb_rows = page.tables["table-perturbations"]
    assert [r[0] for r in perturb_rows[1:]] == ["none", "jpeg75", "noise"]
    assert "n/a" in perturb_rows[3]
    summary = {r[0]: r[1] for r in page.tables["table-summary"][1:]}
    assert summary["AUROC known vs unknown"] == f"{run.metrics['auroc']:.3f}"
    assert "AUROC vs gan-u1" in summary
    caption = _embedding_caption(path)
    assert "PCA" in caption and "embed()" in caption and "scores" not in caption


def test_no_unknown_run_gives_notes_not_a_crash(tmp_path: Path) -> None:
    run = _make_run(with_unknown=False, failed=3)
    path = write_report(run, tmp_path / "r.html")
    page = _parse(path)
    assert {"note-roc", "note-oscr", "note-histogram", "note-perturbations"} <= set(page.notes)
    assert "no unknown test images" in page.notes["note-roc"]
    assert "plot-roc" not in page.images and "plot-oscr" not in page.images
    for key in ("confusion", "histogram", "embedding"):
        _assert_png(page.images[f"plot-{key}"])
    header = page.tables["table-confusion"][0]
    assert header[-1] == "unknown" and len(page.tables["table-confusion"]) == 1 + len(CLASSES)
    assert "PCA" in _embedding_caption(path) and "per-source scores" in _embedding_caption(path)
    summary = {r[0]: r[1] for r in page.tables["table-summary"][1:]}
    assert summary["images that could not be attributed"] == "3"


def _embedding_caption(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text.split('id="plot-embedding"', 1)[1].split("</figcaption>", 1)[0]


def test_nothing_attributed(tmp_path: Path) -> None:
    run = _make_run(failed=0)
    run.results = [Attribution(r.path, error="bad", error_code="corrupt") for r in run.results]
    page = _parse(write_report(run, tmp_path / "r.html"))
    assert {"note-confusion", "note-roc", "note-histogram", "note-embedding"} <= set(page.notes)
    assert not page.images


def test_names_that_look_like_mathematics_or_are_long_are_drawn_as_text(tmp_path: Path) -> None:
    """matplotlib reads ``$...$`` as mathematics: a source named ``ldm $\\frac{a$`` stopped the
    report (and, before it, the eval command's other files). Plots show names as plain text and
    shorten long ones; the tables keep them whole."""
    long_name = "a-generator-with-a-very-long-name-" + "x" * 40
    classes = ["ldm $\\frac{a$ & co", "price $5 and $6", long_name]
    run = _make_run(embeddings=True, classes=classes, unknowns=("$\\sqrt{", "=cmd|u2"))
    page = _parse(write_report(run, tmp_path / "r.html"))
    assert {f"plot-{p}" for p in PLOTS} <= set(page.images)
    header = page.tables["table-confusion"][0]
    assert header[1:] == [*classes, "unknown"]
    from genprint.evaluation.report import PLOT_LABEL_CHARS, _plot_labels

    twins = ["stable-diffusion-xl-base-with-a-long-name-" + s + "-v1" for s in ("a", "b")]
    shown = _plot_labels([*twins, "short"])
    assert len(set(shown)) == 3 and shown[2] == "short"
    assert all(len(s) <= PLOT_LABEL_CHARS + 4 for s in shown) and all("…" in s for s in shown[:2])
