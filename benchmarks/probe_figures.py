"""Figures of the ``probe`` method: backbones × heads × scores × training-set sizes, and layers.

For one protocol of a benchmark, for each backbone:

1. the features of every block are extracted once for the protocol's train, validation and test
   images (cached on disk, so a re-run is fast);
2. for each cap on training images per source (``--per-class``, 0 = all), head and score, the
   probe is fitted on the (capped) training images with its layer and hyperparameter chosen on
   validation and its thresholds from validation (``ProbeAttributor.fit_features``), then
   measured on the test images (known sources of the protocol vs its unknown generators):
   closed-set accuracy, macro-F1, AUROC, TNR at TPR 95%, OSCR;
3. the layer study: with all training images and each head's default score, every layer's probe
   (hyperparameter chosen on validation) is measured on test too — next to its validation
   metrics, as in the paper's per-layer figure.

Writes ``OUT/probe_figures.json`` and ``OUT/probe_figures.md`` and prints the tables. With
``--check``, the headline model (first backbone, logreg + msp, all images) is also saved and run
through ``genprint.evaluation.evaluate`` (the path ``genprint eval`` takes), as a cross-check.

    genprint bench build BENCH
    python benchmarks/probe_figures.py --bench BENCH --protocol all --out OUT --check
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genprint.cli.output import to_json
from genprint.evaluation.metrics import OpenSetMetrics
from genprint.io.batches import load_items
from genprint.methods.probe import ProbeAttributor, calibrate, cap_per_class
from genprint.methods.probe_heads import DEFAULT_SCORE, HEADS, SCORES, LayerProbe
from genprint.world.protocols import protocol_view

COLUMNS = (("closed_set_accuracy", "closed acc"), ("macro_f1", "macro-F1"), ("auroc", "AUROC"),
           ("tnr_at_tpr95", "TNR@95"), ("oscr", "OSCR"))


def test_metrics(probe: LayerProbe, thresholds: np.ndarray, feats: np.ndarray, y: np.ndarray,
                 names: list[str]) -> dict[str, Any]:
    """Open-set test metrics of a fitted layer probe (``y``: −1 for unknown sources)."""
    cand, scores = probe.source_scores(feats)
    own = scores[np.arange(len(cand)), cand]
    pred = np.where(own < thresholds[cand], -1, cand)
    metrics = OpenSetMetrics()
    metrics.update(y, pred, cand, own, source_name=names)
    return metrics.compute()


def load_split(items: list) -> tuple[list, list[str]]:
    images, kept, errors = load_items([i.path for i in items], workers=1)
    if errors:
        print(f"  {len(errors)} unreadable file(s) skipped, e.g. {errors[0][0]}")
    return images, [items[k].source for k in kept]


def fmt(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def run_backbone(name: str, view: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Every configuration and the layer study for backbone ``name``."""
    tr_imgs, tr_lab = load_split(view.train)
    va_imgs, va_lab = load_split(view.val)
    te_imgs, te_lab = load_split(view.test)
    base = ProbeAttributor(backbone=name, pad=args.pad, input_size=args.input_size,
                           cache_dir=args.cache_dir)
    size = base.build_backbone(min(min(i.shape[:2]) for i in (*tr_imgs, *va_imgs, *te_imgs))
                               ).preprocessing.input_size
    t0 = time.perf_counter()
    feats = {split: base.extract(imgs) for split, imgs in
             (("train", tr_imgs), ("val", va_imgs), ("test", te_imgs))}
    seconds = time.perf_counter() - t0
    classes = sorted(set(tr_lab))
    y_te = np.array([classes.index(s) if s in classes else -1 for s in te_lab])
    y_va = np.array([classes.index(s) for s in va_lab])
    out: dict[str, Any] = {"backbone": name, "pad": args.pad, "input_size": size,
                           "extract_seconds": seconds, "n_train": len(tr_lab),
                           "n_val": len(va_lab), "n_test": len(te_lab), "runs": [],
                           "layers": {}}
    n_images = len(tr_lab) + len(va_lab) + len(te_lab)
    print(f"{name}: input {size}, pad {args.pad}, features of {n_images} images in {seconds:.0f} s")
    for cap in args.per_class:
        keep = cap_per_class(tr_lab, cap or None, args.seed)
        tr_feats = [f[keep] for f in feats["train"]]
        labels = [tr_lab[i] for i in keep]
        for head in args.heads:
            for score in args.scores:
                model = ProbeAttributor(backbone=name, pad=args.pad, input_size=args.input_size,
                                        head=head, score=score,
                                        layer_select=args.layer_select, seed=args.seed)
                model._backbone_obj = base.build_backbone()
                t1 = time.perf_counter()
                model.fit_features(tr_feats, labels, feats["val"], va_lab)
                k = model.layer_index_
                m = test_metrics(model.probe_, model.thresholds_, feats["test"][k], y_te, te_lab)
                run = {"per_class": cap or "all", "head": head, "score": score,
                       "layer": model.layer_name_, "hp": model.probe_.hp,
                       "fit_seconds": time.perf_counter() - t1,
                       "val_accuracy": model.layer_table_[k]["val_accuracy"],
                       "val_loso_auroc": model.layer_table_[k]["val_loso_auroc"],
                       **{c: m[c] for c, _ in COLUMNS}, "per_unknown_auroc":
                           m.get("per_unknown_auroc", {})}
                out["runs"].append(run)
                print(f"  cap {run['per_class']!s:>4} {head:<6} {score:<11} {run['layer']:<8} "
                      + " ".join(f"{lab} {fmt(run[c])}" for c, lab in COLUMNS), flush=True)
                if cap == 0 and score == DEFAULT_SCORE[head]:
                    out["layers"][head] = layer_study(model, feats, y_va, y_te, te_lab)
    return out


def layer_study(model: ProbeAttributor, feats: dict[str, list[np.ndarray]], y_va: np.ndarray,
                y_te: np.ndarray, te_lab: list[str]) -> list[dict[str, Any]]:
    """Validation and test metrics of every layer's probe."""
    rows = []
    for k, probe in enumerate(model.layer_probes_):
        thresholds = calibrate(probe, feats["val"][k], y_va, model.target_accept)
        m = test_metrics(probe, thresholds, feats["test"][k], y_te, te_lab)
        row = model.layer_table_[k]
        rows.append({"layer": row["layer"], "hp": row["hp"], "chosen": row["chosen"],
                     "val_accuracy": row["val_accuracy"], "val_loso_auroc": row["val_loso_auroc"],
                     "test_accuracy": m["closed_set_accuracy"], "test_auroc": m["auroc"]})
    return rows


def selected(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per training-set cap, the run whose validation criterion is best (test never looked at)."""
    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        loso = run["val_loso_auroc"]
        key = (run["val_accuracy"] + loso) / 2 if loso is not None and math.isfinite(loso) \
            else run["val_accuracy"] / 2
        cap = str(run["per_class"])
        if cap not in best or key > best[cap]["_key"]:
            best[cap] = {**run, "_key": key}
    return list(best.values())


def markdown(results: list[dict[str, Any]], protocol: str) -> str:
    lines = [f"# probe figures, protocol `{protocol}`", ""]
    for r in results:
        title = (f"## {r['backbone']} (input {r['input_size']}, pad {r.get('pad', 'none')}, "
                 f"{r['n_train']} train / "
                 f"{r['n_val']} val / {r['n_test']} test images)")
        lines += [title, "",
                  "| per class | head | score | layer | " + " | ".join(lab for _, lab in COLUMNS)
                  + " |", "|" + "---|" * (4 + len(COLUMNS))]
        for run in r["runs"]:
            lines.append(f"| {run['per_class']} | {run['head']} | {run['score']} | "
                         f"{run['layer']} | " + " | ".join(fmt(run[c]) for c, _ in COLUMNS)
                         + " |")
        lines += ["", ("Chosen on validation (per cap: the head and score with the best mean of "
                       "validation accuracy and validation LOSO AUROC):"), ""]
        for run in selected(r["runs"]):
            lines.append(f"- {run['per_class']} per source: {run['head']} + {run['score']}, "
                         f"{run['layer']} (val {fmt(run['val_accuracy'])} / "
                         f"{fmt(run['val_loso_auroc'])}) → test closed acc "
                         f"{fmt(run['closed_set_accuracy'])}, AUROC {fmt(run['auroc'])}")
        for head, rows in r["layers"].items():
            lines += ["", f"Layers ({head}, default score, all images):", "",
                      "| layer | hp | val acc | val LOSO AUROC | test acc | test AUROC | |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {x['layer']} | {x['hp']:g} | {fmt(x['val_accuracy'])} | "
                      f"{fmt(x['val_loso_auroc'])} | {fmt(x['test_accuracy'])} | "
                      f"{fmt(x['test_auroc'])} | {'chosen' if x['chosen'] else ''} |"
                      for x in rows]
        lines.append("")
    return "\n".join(lines)


def check_end_to_end(name: str, bench: Path, protocol: str, args: argparse.Namespace) -> dict:
    """Headline model trained through fit_on_items, saved, reloaded, and run by evaluate()."""
    import genprint
    from genprint.evaluation.evaluate import evaluate
    from genprint.methods.fitting import fit_on_items

    view = protocol_view(bench, protocol)
    model = ProbeAttributor(backbone=name, pad=args.pad, input_size=args.input_size,
                            cache_dir=args.cache_dir, seed=args.seed)
    fit_on_items(model, view.train, view.val)
    path = model.save(args.out / "models" / f"{protocol}-{name.replace('/', '_')}",
                      overwrite=True)
    run = evaluate(genprint.load(path), bench, protocol)
    return {"model": str(path), **{c: run.metrics[c] for c, _ in COLUMNS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--protocol", default="all")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbone", action="append", default=None,
                        help="name or local path; repeatable (default: both offline ones)")
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 100, 0],
                        help="training images per source; 0 = all")
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--scores", nargs="+", default=list(SCORES), choices=SCORES)
    parser.add_argument("--layer-select", default="balanced")
    parser.add_argument("--pad", default="none", choices=("none", "wrap", "reflect"),
                        help="feed small images padded up to the backbone's input size")
    parser.add_argument("--input-size", type=int, default=None,
                        help="backbone input side (default: the largest valid crop, or the "
                             "native size with --pad)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="also run the headline model through genprint.evaluation.evaluate")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    backbones = args.backbone or ["dinov2-s14-onnx", "efficientnet-lite0"]
    view = protocol_view(args.bench, args.protocol)
    results = [run_backbone(name, view, args) for name in backbones]
    report: dict[str, Any] = {"bench": str(args.bench), "protocol": args.protocol,
                              "results": results}
    (args.out / "probe_figures.json").write_text(to_json(report))
    if args.check:
        report["check"] = check_end_to_end(backbones[0], args.bench, args.protocol, args)
        print("end-to-end check:", {k: fmt(v) if isinstance(v, float) else v
                                    for k, v in report["check"].items()})
        (args.out / "probe_figures.json").write_text(to_json(report))
    text = markdown(results, args.protocol)
    if "check" in report:
        text += ("\nEnd-to-end check (first backbone, logreg + msp, all images; trained by "
                 "fit_on_items, saved, reloaded, run by genprint.evaluation.evaluate): "
                 + ", ".join(f"{lab} {fmt(report['check'][c])}" for c, lab in COLUMNS) + "\n")
    (args.out / "probe_figures.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
