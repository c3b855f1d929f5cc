"""Choosing ``metric`` settings without the test split: a pseudo-open-set on validation data.

The protocol's known sources are split into folds; in each fold, ``--hold`` generator sources are
held out and play the unknowns. A model is trained on the training images of the other known
sources; its thresholds are calibrated on one half of their validation images, and the figures
are measured on the other half (knowns) against every image (train + val) of the held-out
sources (pseudo-unknowns). The protocol's real unknown sources and every test image are never
read.

Settings that need retraining (``--losses``, ``--epochs``) are one model each; the reference
points per source (``--ks``) and the open-set score are applied afterwards to the same network:

* ``distance``: −(distance to the candidate's nearest reference point), the method's score;
* ``relative``: −(that distance ÷ the candidate's threshold), so every source is accepted at 1.

Each fold also enrols every held-out source from ``--enrol-images`` of its images (the method's
enrolment rule, ``--enrol-k`` reference points per source): recall on its other images and the
drop, in points, of the knowns' open-set accuracy.

``--hold-cameras`` also leaves some cameras of ``real`` out of training and calibration; their
images are evaluated as known real images, which measures whether unseen cameras are still
accepted (the test split holds cameras that no split before it has).

Prints one row per setting (mean over folds: closed accuracy, AUROC, OSCR, enrolment recall and
drop) and writes ``OUT/metric_validation.json`` and the embeddings of every fold (``.npz``).

    python benchmarks/metric_validation.py --bench BENCH --camera-ckpt CKPT --out OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genprint.evaluation.metrics import auroc, oscr
from genprint.io.batches import load_items
from genprint.methods import metric_refs as refs
from genprint.methods.camera_pretrain import checkpoint_architecture
from genprint.methods.metric import MetricAttributor
from genprint.world.protocols import protocol_view

REAL = "real"


def folds(known: list[str], hold: int) -> list[list[str]]:
    """Disjoint groups of ``hold`` generator sources (real always stays known)."""
    gens = [s for s in known if s != REAL]
    return [gens[i::len(gens) // hold] for i in range(len(gens) // hold)]


def figures(train_emb: np.ndarray, train_y: np.ndarray, cal_emb: np.ndarray, cal_y: np.ndarray,
            eval_emb: np.ndarray, eval_y: np.ndarray, n_classes: int, k: int, score: str,
            seed: int, target_accept: float, unseen: np.ndarray | None = None
            ) -> dict[str, float]:
    """Closed accuracy, AUROC and OSCR of one reference / score setting (eval_y −1 = unknown),
    and the share of ``unseen`` (held-out camera) images accepted as their source."""
    points, owners = refs.class_references(train_emb, train_y, n_classes, k, seed)
    cal_d = refs.source_distances(cal_emb, points, owners, n_classes)
    thr = refs.calibrate_thresholds(cal_d[np.arange(len(cal_y)), cal_y], cal_y, n_classes,
                                    target_accept)
    d = refs.source_distances(eval_emb, points, owners, n_classes)
    if score == "relative":
        d = d / thr[None, :]
    cand = d.argmin(axis=1)
    s = -d[np.arange(len(d)), cand]
    known = eval_y >= 0
    out = {"closed_acc": float(np.mean(cand[known] == eval_y[known])),
           "auroc": float(auroc(known, s)), "oscr": float(oscr(eval_y, cand, s))}
    if unseen is not None and unseen.any():
        ok = (cand == eval_y) & (s >= -thr[cand]) if score == "distance" else (
            (cand == eval_y) & (s >= -1.0))
        out["unseen_camera_accept"] = float(np.mean(ok[unseen]))
    return out


def run_fold(bench: Path, protocol: str, held: list[str], loss: str, epochs: int,
             args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    """Train on one fold; the figures of every (K, score) setting and the training seconds."""
    view = protocol_view(bench, protocol)
    arch = checkpoint_architecture(args.camera_ckpt) if args.init == "camera" else None
    model = MetricAttributor(
        loss=loss, epochs=epochs, init=args.init, seed=args.seed, lr=args.lr,
        origin_classes=not args.no_origin_classes,
        unseen_origin_thresholds=args.unseen_origin_thresholds,
        pseudo_sources=args.pseudo_sources, symmetries=args.symmetries,
        camera_ckpt=str(args.camera_ckpt) if arch else None,
        **({"width": arch.width, "embedding_dim": arch.embedding_dim, "blocks": arch.blocks}
           if arch else {}))
    cams = set(args.hold_cameras)

    def trained_on(i: Any) -> bool:
        return i.source not in held and not (i.source == REAL and i.origin in cams)

    train = [i for i in view.train if trained_on(i)]
    val = [i for i in view.val if trained_on(i)]
    rng = np.random.default_rng(args.seed)
    half = rng.random(len(val)) < 0.5
    cal = [i for i, h in zip(val, half, strict=True) if h]
    ev = [i for i, h in zip(val, half, strict=True) if not h]
    pseudo = [i for i in [*view.train, *view.val] if i.source in held]
    # real images of held-out cameras: known (real) images the model must still accept
    ev += [i for i in [*view.train, *view.val] if i.source == REAL and i.origin in cams]

    def load(items: list) -> tuple[list[np.ndarray], list[str], list]:
        """The readable images, their sources and their items."""
        imgs, kept, _ = load_items([i.path for i in items], min_size=model.min_size)
        return imgs, [items[k].source for k in kept], [items[k] for k in kept]

    tr_imgs, tr_src, tr_items = load(train)
    cal_imgs, cal_src, cal_items = load(cal)
    ev_imgs, ev_src, ev_items = load(ev)
    unseen = np.array([i.source == REAL and i.origin in cams for i in ev_items])
    ps_imgs, ps_src, _ = load(pseudo)
    t0 = time.perf_counter()
    model.fit(tr_imgs, tr_src, cal_imgs, cal_src, train_origins=[i.origin for i in tr_items],
              val_origins=[i.origin for i in cal_items])
    seconds = time.perf_counter() - t0
    if args.symmetries_at_inference != "none":  # a diagnostic: views averaged, not trained on
        model.symmetries = args.symmetries_at_inference
    index = {c: i for i, c in enumerate(model.classes_)}
    tr_y = np.array([index[s] for s in tr_src])
    cal_y = np.array([index[s] for s in cal_src])
    eval_y = np.array([index[s] for s in ev_src] + [-1] * len(ps_imgs))
    unseen = np.concatenate([unseen, np.zeros(len(ps_imgs), bool)]) if cams else None
    tr_e, cal_e = model.embed(tr_imgs), model.embed(cal_imgs)
    ev_e = model.embed([*ev_imgs, *ps_imgs])
    np.savez(args.out / f"embeddings-{loss}-{epochs}-lr{args.lr:g}-{'+'.join(held)}.npz", train=tr_e,
             train_y=tr_y, cal=cal_e, cal_y=cal_y, eval=ev_e, eval_y=eval_y,
             pseudo_sources=np.array(ps_src), classes=np.array(model.classes_))
    rows = []
    if unseen is not None and unseen.any():  # with the model's own thresholds (its K and rule)
        d = refs.source_distances(ev_e, model.references_, model.reference_sources_,
                                  len(model.classes_))
        cand = d.argmin(axis=1)
        accepted = d[np.arange(len(d)), cand] <= -model.thresholds_[cand]
        ok = (cand == index[REAL]) & accepted
        print(f"fold {held}, the model's thresholds: unseen cameras accepted as real "
              f"{np.mean(ok[unseen]):.3f} ({unseen.sum()} images); pseudo-unknowns accepted "
              f"{np.mean(accepted[eval_y < 0]):.3f}, as real {np.mean(ok[eval_y < 0]):.3f}",
              flush=True)
    enrol = enrolment(tr_e, tr_y, cal_e, cal_y, ev_e, eval_y, len(model.classes_), args,
                      model.target_accept, ps_src)
    for k in args.ks:
        for score in ("distance", "relative"):
            rows.append({"loss": loss, "epochs": epochs, "k": k, "score": score,
                         **figures(tr_e, tr_y, cal_e, cal_y, ev_e, eval_y, len(model.classes_),
                                   k, score, args.seed, model.target_accept, unseen), **enrol})
    return rows, seconds


def enrolment(tr_e: np.ndarray, tr_y: np.ndarray, cal_e: np.ndarray, cal_y: np.ndarray,
              ev_e: np.ndarray, eval_y: np.ndarray, n_classes: int, args: argparse.Namespace,
              target_accept: float, pseudo_sources: list[str]) -> dict[str, float]:
    """Enrol each held-out source from ``--enrol-images`` images (the method's rule, K =
    ``--enrol-k``): mean recall on its other images and mean drop (points) of the knowns'
    open-set accuracy."""
    k = args.enrol_k
    points, owners = refs.class_references(tr_e, tr_y, n_classes, k, args.seed)
    cal_d = refs.source_distances(cal_e, points, owners, n_classes)
    thr = refs.calibrate_thresholds(cal_d[np.arange(len(cal_y)), cal_y], cal_y, n_classes,
                                    target_accept)
    known = eval_y >= 0
    kn_e, kn_y = ev_e[known], eval_y[known]

    def open_acc(pts: np.ndarray, own: np.ndarray, t: np.ndarray, e: np.ndarray,
                 y: np.ndarray) -> float:
        """Open-set accuracy with the method's rule (the last source, if new, is enrolled)."""
        d = refs.source_distances(e, pts, own, len(t))
        enrolled = np.arange(len(t)) >= n_classes
        return float(np.mean(refs.decide_sources(d, t, enrolled) == y))

    before = open_acc(points, owners, thr, kn_e, kn_y)
    ps_e = ev_e[~known]
    names = np.array(pseudo_sources)
    recalls, drops = [], []
    n = args.enrol_images
    for src in sorted(set(pseudo_sources)):
        idx = np.flatnonzero(names == src)
        few, rest = ps_e[idx[:n]], ps_e[idx[n:]]
        new = refs.enrolment_references(few, np.arange(len(few)), k, args.seed)
        dist, _ = refs.enrolment_threshold(few, np.arange(len(few)), few, k, args.seed,
                                           target_accept, thr)
        pts = np.concatenate([points, new])
        own = np.concatenate([owners, np.full(len(new), n_classes)])
        t = np.append(thr, dist)
        recalls.append(open_acc(pts, own, t, rest, np.full(len(rest), n_classes)))
        drops.append(100 * (before - open_acc(pts, own, t, kn_e, kn_y)))
    return {"enrol_recall": float(np.mean(recalls)), "enrol_min_recall": float(np.min(recalls)),
            "enrol_drop": float(np.mean(drops)), "enrol_max_drop": float(np.max(drops))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--protocol", default="all")
    parser.add_argument("--camera-ckpt", type=Path, default=None)
    parser.add_argument("--init", default="camera", choices=["camera", "scratch"])
    parser.add_argument("--losses", nargs="+", default=["proxy-anchor"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[30])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hold", type=int, default=2, help="generator sources held out per fold")
    parser.add_argument("--enrol-images", type=int, default=10)
    parser.add_argument("--enrol-k", type=int, default=8, help="reference points per source "
                        "in the enrolment figures")
    parser.add_argument("--no-origin-classes", action="store_true",
                        help="one loss class per source, even where items name an origin")
    parser.add_argument("--unseen-origin-thresholds", action="store_true",
                        help="the model's opt-in threshold rule for sources with several origins")
    parser.add_argument("--hold-cameras", nargs="*", default=[],
                        help="cameras (origins) of real left out of training and calibration; "
                             "their images are evaluated as known real (unseen cameras)")
    parser.add_argument("--pseudo-sources", type=int, default=0,
                        help="extra loss classes re-synthesised from training images")
    parser.add_argument("--symmetries", default="none", choices=["none", "flips", "dihedral"],
                        help="pixel-exact views: random one in training, mean over all at "
                             "inference")
    parser.add_argument("--symmetries-at-inference", default="none",
                        choices=["none", "flips", "dihedral"],
                        help="diagnostic: average the views at inference only (training unchanged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("metric-validation"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.init == "camera" and args.camera_ckpt is None:
        from genprint.methods.camera_pretrain import default_camera_checkpoint

        args.camera_ckpt = default_camera_checkpoint()
    known = protocol_view(args.bench, args.protocol).protocol.known
    groups = folds(list(known), args.hold)
    print(f"folds (held-out pseudo-unknowns): {groups}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    all_rows: list[dict[str, Any]] = []
    for loss in args.losses:
        for epochs in args.epochs:
            per_fold, secs = [], []
            for held in groups:
                rows, s = run_fold(args.bench, args.protocol, held, loss, epochs, args)
                per_fold.append(rows)
                secs.append(s)
            for j, row in enumerate(per_fold[0]):
                mean = {m: float(np.mean([f[j][m] for f in per_fold]))
                        for m in ("closed_acc", "auroc", "oscr", "enrol_recall", "enrol_drop",
                                  "unseen_camera_accept") if m in per_fold[0][j]}
                mean["enrol_min_recall"] = float(min(f[j]["enrol_min_recall"] for f in per_fold))
                mean["enrol_max_drop"] = float(max(f[j]["enrol_max_drop"] for f in per_fold))
                out = {**{k: row[k] for k in ("loss", "epochs", "k", "score")}, **mean,
                       "per_fold_auroc": [f[j]["auroc"] for f in per_fold],
                       "train_seconds": float(np.mean(secs))}
                all_rows.append(out)
                print(f"{loss:17s} ep={epochs:3d} K={row['k']} {row['score']:8s} "
                      f"closed={mean['closed_acc']:.3f} auroc={mean['auroc']:.3f} "
                      f"oscr={mean['oscr']:.3f} enrol recall={mean['enrol_recall']:.3f} "
                      f"(min {mean['enrol_min_recall']:.3f}) drop={mean['enrol_drop']:.2f} "
                      f"(max {mean['enrol_max_drop']:.2f})"
                      + (f" unseen-camera accept={mean['unseen_camera_accept']:.3f}"
                         if "unseen_camera_accept" in mean else "")
                      + f"  folds={[round(a, 3) for a in out['per_fold_auroc']]}"
                      f"  train={np.mean(secs):.0f}s", flush=True)
            (args.out / "metric_validation.json").write_text(
                json.dumps({"folds": groups, "rows": all_rows,
                            "settings": {k: str(v) for k, v in vars(args).items()}}, indent=2),
                encoding="utf-8")


if __name__ == "__main__":
    main()
