"""A self-contained HTML report of one evaluation: tables and plots in a single file.

The page holds a summary table, the confusion matrix with an ``unknown`` column, the ROC curve
of known vs unknown, the CCR–FPR curve (whose area is the OSCR), score histograms, a 2-D map of
per-image embeddings, and the metrics under each robustness perturbation. Figures are drawn
with matplotlib's Agg canvas and embedded as base64 PNG; there is no external CSS, JS or image.
Every figure's ``<img>`` has an ``id`` (``plot-confusion``, ``plot-roc``, ``plot-oscr``,
``plot-histogram``, ``plot-embedding``, ``plot-perturbations``) and an ``alt``; every table an
``id`` (``table-summary``, ``table-confusion``, ``table-perturbations``). A plot that needs
data the run does not have (no unknown test images, ...) is replaced by a ``<p class="note">``
with ``id="note-..."`` saying why.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genprint import UNKNOWN
from genprint.evaluation.evaluate import DATA_PROTOCOL, EvaluationRun
from genprint.storage.atomic import atomic_file

SUMMARY_ROWS = (
    ("closed_set_accuracy", "closed-set accuracy (known test)"),
    ("macro_f1", "macro-F1 (known test)"),
    ("auroc", "AUROC known vs unknown"),
    ("ap", "AP known vs unknown"),
    ("tnr_at_tpr95", "TNR at TPR 95%"),
    ("oscr", "OSCR"),
    ("known_correct", "known images given their source (model's thresholds)"),
    ("known_called_unknown", "known images called unknown (model's thresholds)"),
    ("unknown_rejected", "unknown images called unknown (model's thresholds)"),
    ("real_vs_generated_auroc", "real vs generated AUROC"),
    ("held_out_camera_real_accuracy", "held-out cameras called real"),
)
PERTURBATION_COLUMNS = (
    ("closed_set_accuracy", "closed acc"), ("macro_f1", "macro-F1"), ("auroc", "AUROC"),
    ("ap", "AP"), ("tnr_at_tpr95", "TNR@95"), ("oscr", "OSCR"),
    ("real_vs_generated_auroc", "real/gen AUROC"),
    ("known_correct", "known given their source"), ("unknown_rejected", "unknown called unknown"),
)


def thresholds_phrase(metrics: dict[str, Any]) -> str:
    """Where the thresholds the answers use come from: clean validation data, or the last
    ``genprint calibrate``'s conditions."""
    recalibrated = metrics.get("thresholds_recalibrated_under") or []
    if recalibrated:
        return ("the model's thresholds, recalibrated on validation data under "
                + ", ".join(recalibrated[-1]))
    return "the thresholds set on clean validation data"
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f2f2}
tr.unknown-source th{font-style:italic}figure{margin:1em 0}figcaption{color:#555;font-size:90%}
p.note{background:#fff6dd;border-left:4px solid #e0b000;padding:0.5em 1em}img{max-width:100%}
"""


def fmt(value: Any) -> str:
    """A metric for a table: 3 decimals, ``n/a`` when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


@dataclass
class _Data:
    """The usable (successfully attributed) images of a run, as arrays."""

    classes: list[str]
    sources: list[str]
    y_true: np.ndarray
    candidate: np.ndarray
    label: list[str]
    score: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray | None

    @property
    def known(self) -> np.ndarray:
        return self.y_true >= 0

    @property
    def has_open_set(self) -> bool:
        return bool(self.known.any() and (~self.known).any())


def _data(run: EvaluationRun) -> _Data:
    ok = [k for k, r in enumerate(run.results) if r.ok]
    res = [run.results[k] for k in ok]
    n = len(ok)
    emb = None
    if run.embeddings is not None and len(run.embeddings) == len(run.results):
        emb = np.asarray(run.embeddings, dtype=np.float64)[ok].reshape(n, -1)
    return _Data(
        classes=list(run.classes),
        sources=[run.items[k].source or "" for k in ok],
        y_true=np.asarray(run.y_true)[ok].astype(np.int64),
        candidate=np.array([run.classes.index(r.candidate) for r in res], dtype=np.int64),
        label=[r.label or "" for r in res],
        score=np.array([r.score for r in res], dtype=np.float64),
        scores=np.array([[r.scores[c] for c in run.classes] for r in res],
                        dtype=np.float64).reshape(n, len(run.classes)),
        embeddings=emb,
    )


# ------------------------------------------------------------------------------ HTML pieces
def _e(text: object) -> str:
    """HTML-escaped text; bytes of a file name that are not UTF-8 shown as ``\\xNN``."""
    from genprint.results import printable

    return html.escape(printable(str(text)))


def _note(key: str, text: str) -> str:
    return f'<p class="note" id="note-{key}">{_e(text)}</p>'


def _img(key: str, fig: Any, alt: str, caption: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure><img id="plot-{key}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _figure(width: float = 6.0, height: float = 4.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


PLOT_LABEL_CHARS = 28
"""Source names longer than this are shortened in the plots (with "…"); tables keep them whole."""


def _plot_label(name: str) -> str:
    """``name`` as a plot shows it: printable, at most :data:`PLOT_LABEL_CHARS` characters."""
    from genprint.results import printable

    text = printable(str(name))
    if len(text) <= PLOT_LABEL_CHARS:
        return text
    tail = PLOT_LABEL_CHARS // 3  # names often differ at the end (…-base-1.0, …-refiner-1.0)
    return text[: PLOT_LABEL_CHARS - tail - 1] + "…" + text[-tail:]


def _plot_labels(names: list[str]) -> list[str]:
    """:func:`_plot_label` of each name; names that would look the same once shortened get
    " (1)", " (2)", … in the order given, so no two labels of a plot are equal."""
    labels = [_plot_label(n) for n in names]
    count: dict[str, int] = {}
    for label in labels:
        count[label] = count.get(label, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        if count[label] > 1:
            seen[label] = seen.get(label, 0) + 1
            label = f"{label} ({seen[label]})"
        out.append(label)
    return out


def _table(key: str, header: list[str], rows: list[tuple[str, list[str], str]]) -> str:
    """``rows``: (row header, cells, css class of the row)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{cls}"><th>{_e(name)}</th>'
        + "".join(f'<td class="num">{_e(c)}</td>' for c in cells) + "</tr>"
        for name, cells, cls in rows)
    return f'<table id="table-{key}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ------------------------------------------------------------------------------ sections
def _summary(run: EvaluationRun) -> str:
    m = run.metrics
    rows = [(label, [fmt(m.get(key))], "") for key, label in SUMMARY_ROWS]
    rows += [(f"AUROC vs {name}", [fmt(v)], "")
             for name, v in sorted((m.get("per_unknown_auroc") or {}).items())]
    n_failed = sum(not r.ok for r in run.results)
    rows.append(("known / unknown test images",
                 [f"{m.get('n_known_test')} / {m.get('n_unknown_test')}"], ""))
    rows.append(("images that could not be attributed", [str(n_failed)], ""))
    rows.append(("model (sha256 of its card.json)", [str(m.get("model_sha256") or "not saved")],
                 ""))
    rows.append(("genprint version", [str(m.get("genprint_version"))], ""))
    for conditions in m.get("thresholds_recalibrated_under") or []:
        rows.append(("thresholds recalibrated under (genprint calibrate)",
                     [", ".join(conditions)], ""))
    unreadable = m.get("unreadable_test") or []
    rows.append(("test files that could not be used (left out)", [str(len(unreadable))], ""))
    rows += [(f"  {u['path']}", [f"{u['error_code']}: {u['reason']}"], "")
             for u in unreadable[:20]]
    seen = m.get("test_seen_in_training")
    if seen is not None:
        rows.append(("test images the model was fitted on (same pixels)", [str(len(seen))], ""))
        rows += [(f"  {path}", ["seen in training, validation or enrolment"], "")
                 for path in seen[:20]]
    if m.get("n_test_copies"):
        rows.append(("test files that copy another (same bytes; each counted)",
                     [str(m["n_test_copies"])], ""))
        rows += [(f"  {path}", ["a copy under two or more labels"], "")
                 for path in (m.get("test_copies_with_other_labels") or [])[:20]]
    return "<h2>Summary</h2>" + _table("summary", ["metric", "value"], rows)


def _confusion(d: _Data) -> str:
    unknown_sources = sorted({s for s, y in zip(d.sources, d.y_true, strict=True) if y < 0})
    rows_names = d.classes + unknown_sources
    cols = d.classes + [UNKNOWN]
    matrix = np.zeros((len(rows_names), len(cols)), dtype=np.int64)
    for src, y, lab in zip(d.sources, d.y_true, d.label, strict=True):
        r = int(y) if y >= 0 else len(d.classes) + unknown_sources.index(src)
        matrix[r, cols.index(lab) if lab in cols else len(cols) - 1] += 1
    rows = [(name if k < len(d.classes) else f"{name} (unknown source)",
             [str(v) for v in matrix[k]], "known-source" if k < len(d.classes) else
             "unknown-source") for k, name in enumerate(rows_names)]
    out = ["<h2>Confusion matrix</h2>",
           _table("confusion", ["true source \\ answer", *cols], rows)]
    if not len(d.y_true):
        return "".join([*out, _note("confusion", "no test image could be attributed")])
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = _figure(1.6 + 0.45 * len(cols), 1.4 + 0.4 * len(rows_names))
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), _plot_labels(cols), rotation=60, ha="right")
    ax.set_yticks(range(len(rows_names)),
                  [n + ("" if k < len(d.classes) else " (unknown)")
                   for k, n in enumerate(_plot_labels(rows_names))])
    if matrix.size <= 600:
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
    if unknown_sources:
        ax.axhline(len(d.classes) - 0.5, color="k", lw=1)
    ax.axvline(len(d.classes) - 0.5, color="k", lw=1)
    ax.set_xlabel("answer")
    ax.set_ylabel("true source")
    out.append(_img("confusion", fig, "confusion matrix with an unknown column",
                    "Rows: true sources (unknown sources below the line); columns: the answer, "
                    "a known source or unknown. Colour: share of the row; numbers: counts."))
    return "".join(out)


def _curve(d: _Data, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, rate of ``hit`` among knowns) over decreasing thresholds at the distinct scores."""
    order = np.argsort(-d.score, kind="stable")
    s = d.score[order]
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    known = d.known
    x = np.concatenate(([0.0], np.cumsum(~known[order])[last] / max(int((~known).sum()), 1)))
    y = np.concatenate(([0.0], np.cumsum(hit[order])[last] / max(int(known.sum()), 1)))
    return x, y


def _open_set_curves(run: EvaluationRun, d: _Data) -> str:
    out = ["<h2>Known vs unknown</h2>"]
    if not d.has_open_set:
        why = ("no unknown test images" if d.known.any() else "no known test images")
        return "".join([*out, _note("roc", f"ROC curve not drawn: {why}."),
                        _note("oscr", f"CCR–FPR curve (OSCR) not drawn: {why}.")])
    accepted = np.array([lab != UNKNOWN for lab in d.label])
    known = d.known
    op_fpr = float(accepted[~known].mean())
    fpr, tpr = _curve(d, known)
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=1.5, label=f"AUROC = {fmt(run.metrics.get('auroc'))}")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.plot([op_fpr], [float(accepted[known].mean())], "o", color="C3",
            label="calibrated thresholds")
    ax.set(xlabel="false positive rate (unknown images accepted)",
           ylabel="true positive rate (known images accepted)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
    out.append(_img("roc", fig, "ROC curve of known vs unknown",
                    "Open-set score as a known-vs-unknown detector; the dot is the operating "
                    "point of the per-source thresholds fixed on validation data."))
    correct = known & (d.candidate == d.y_true)
    fpr, ccr = _curve(d, correct)
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot()
    ax.plot(fpr, ccr, lw=1.5, color="C2", label=f"OSCR = {fmt(run.metrics.get('oscr'))}")
    names = np.array([d.classes[int(y)] if y >= 0 else UNKNOWN for y in d.y_true])
    op_ccr = float((np.array(d.label) == names)[known].mean())
    ax.plot([op_fpr], [op_ccr], "o", color="C3", label="calibrated thresholds")
    ax.set(xlabel="false positive rate (unknown images accepted)",
           ylabel="correct classification rate (known)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
    out.append(_img("oscr", fig, "CCR-FPR curve (OSCR)",
                    "Share of known images accepted and correctly attributed against the share "
                    "of unknown images accepted, as the threshold falls; its area is the OSCR."))
    return "".join(out)


def _histogram(d: _Data) -> str:
    out = ["<h2>Score distributions</h2>"]
    if not len(d.score):
        return "".join([*out, _note("histogram", "no test image could be attributed")])
    finite = d.score[np.isfinite(d.score)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    for mask, name, colour in ((d.known, "known sources", "C0"),
                               (~d.known, "unknown sources", "C3")):
        if mask.any():
            ax.hist(np.clip(d.score[mask], bins[0], bins[-1]), bins=bins, alpha=0.55,
                    color=colour, density=True, label=f"{name} ({int(mask.sum())})")
    ax.set(xlabel="open-set score (higher = more like a known source)", ylabel="density")
    ax.legend()
    caption = "Score of each test image for its candidate source."
    if not (~d.known).any():
        out.append(_note("histogram", "No unknown test images: only known scores are shown."))
    return "".join([*out, _img("histogram", fig, "score histograms, known vs unknown", caption)])


def _embedding_map(d: _Data) -> str:
    out = ["<h2>Embedding map</h2>"]
    if d.embeddings is not None:
        base, what = d.embeddings, "per-image embeddings (the method's embed())"
    else:
        base, what = d.scores, ("per-image vectors of per-source scores (the evaluation kept no "
                                "embeddings: the method has no embed(), or it ran on Ray)")
    keep = np.isfinite(base).all(axis=1)
    x = base[keep]
    if len(x) < 3:
        return "".join([*out, _note("embedding", "Fewer than 3 images: no embedding map.")])
    from sklearn.decomposition import PCA

    if x.shape[1] >= 2 and np.ptp(x, axis=0).max() > 0:
        pca = PCA(n_components=2).fit(x)
        xy = pca.transform(x)
        var = pca.explained_variance_ratio_
        axes = [f"PC{k + 1} ({v:.0%} of variance)" for k, v in enumerate(var)]
    else:
        xy = np.column_stack([x[:, 0], np.zeros(len(x))])
        axes = ["the only dimension", ""]
    sources = np.array(d.sources)[keep]
    known = d.known[keep]
    order = [c for c in d.classes if c in set(sources[known])]
    order += sorted(set(sources[~known]))
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    for k, (name, shown) in enumerate(zip(order, _plot_labels(order), strict=True)):
        sel = sources == name
        is_unknown = not known[sel].all()
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=cmap(k % cmap.N),
                   marker="x" if is_unknown else "o", alpha=0.8,
                   label=f"{shown} (unknown)" if is_unknown else shown)
    ax.set(xlabel=axes[0], ylabel=axes[1])
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return "".join([*out, _img("embedding", fig, "2-D map of per-image embeddings by source",
                               f"PCA to 2-D of {what}, coloured by true source; crosses are "
                               "unknown sources.")])


def _perturbations(run: EvaluationRun, perturbations: dict[str, dict[str, Any]] | None) -> str:
    out = ["<h2>Robustness</h2>"]
    if not perturbations:
        return "".join([*out, _note("perturbations", "No perturbation was evaluated "
                                                     "(genprint eval --perturb all).")])
    from genprint.evaluation.perturb import PERTURBATIONS, describe

    conditions = {"none": run.metrics, **perturbations}
    header = ["condition", *[label for _, label in PERTURBATION_COLUMNS], "description"]
    def description(name: str, m: dict[str, Any]) -> str:
        if name not in PERTURBATIONS:
            return "no perturbation"
        share = m.get("perturbed_share")
        if share is None or share >= 1:
            return describe(name)
        return f"{describe(name)} — changed {share:.0%} of the images (the others kept whole)"

    rows = [(name, [fmt(m.get(k)) for k, _ in PERTURBATION_COLUMNS] + [description(name, m)],
             "") for name, m in conditions.items()]
    out.append("<p>Every test image, real and generated alike, is perturbed (seeded per image); "
               f"the answers use {_e(thresholds_phrase(run.metrics))} under every "
               "condition.</p>")
    out.append(_table("perturbations", header, rows))
    fig = _figure(max(5.0, 1.0 + 0.7 * len(conditions)), 3.6)
    ax = fig.add_subplot()
    keys = (("closed_set_accuracy", "closed acc"), ("auroc", "AUROC"), ("oscr", "OSCR"))
    pos = np.arange(len(conditions))
    for k, (key, label) in enumerate(keys):
        vals = [m.get(key) for m in conditions.values()]
        vals = [np.nan if v is None else float(v) for v in vals]
        ax.bar(pos + (k - 1) * 0.27, vals, width=0.27, label=label)
    ax.set_xticks(pos, _plot_labels(list(conditions)), rotation=30, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="metric")
    ax.legend(fontsize=8, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    out.append(_img("perturbations", fig, "metrics under each perturbation",
                    "Closed-set accuracy, AUROC and OSCR per condition (missing bars: "
                    "undefined)."))
    return "".join(out)


# ------------------------------------------------------------------------------ entry point
def write_report(
    run: EvaluationRun,
    path: str | os.PathLike[str],
    perturbations: dict[str, dict[str, Any]] | None = None,
    title: str = "genprint evaluation report",
) -> Path:
    """Write one self-contained HTML report of ``run`` to ``path`` (atomically) and return it.

    ``perturbations`` maps a condition name to its metrics (as returned by
    :func:`genprint.evaluation.evaluate.evaluate_conditions`). Degenerate runs (no unknown test
    images, nothing attributed) give explanatory notes in place of the plots that need the
    missing data. Names are drawn as plain text in the plots (a ``$`` in a source name is not
    read as mathematics) and shortened there beyond :data:`PLOT_LABEL_CHARS` characters.
    """
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        page = _page(run, perturbations, title)
    out = Path(path)
    with atomic_file(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def _page(run: EvaluationRun, perturbations: dict[str, dict[str, Any]] | None,
          title: str) -> str:
    d = _data(run)
    m = run.metrics
    sections = [
        f"<h1>{_e(title)}</h1>",
        (f"<p>Method <b>{_e(m.get('method', '?'))}</b> on "
         + ("labelled data of your own" if m.get("protocol") == DATA_PROTOCOL
            else f"protocol <b>{_e(m.get('protocol', '?'))}</b>")
         + f": {len(run.results)} test images; the model knows {len(d.classes)} sources, "
         f"{len(set(d.classes) & {i.source for i in run.items})} of them with usable test images. "
         "Thresholds were fixed on validation data.</p>"),
        _summary(run), _confusion(d), _open_set_curves(run, d), _histogram(d),
        _embedding_map(d), _perturbations(run, perturbations),
    ]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")
    return page
