"""Choosing ``metric`` settings without the test split: a pseudo-open-set on validation data.

The protocol's known sources are split into folds; in each fold, ``--hold`` generator sources are
held out and play the unknowns (or the groups ``--folds`` names, e.g. one family per fold). A
model is trained on the training images of the other known sources; its thresholds are
calibrated on one half of their validation images, and the figures are measured on the other
half (knowns) against every image (train + val) of the held-out sources (pseudo-unknowns). The
protocol's real unknown sources and every test image are never read.

Settings that need retraining (``--losses``, ``--epochs``) are one model each; the reference
points per source (``--ks``) and the open-set score are applied afterwards to the same network:

* ``distance``: −(distance to the candidate's nearest reference point), the method's score;
* ``relative``: −(that distance ÷ the candidate's threshold), so every source is accepted at 1.

Each fold also enrols every held-out source from ``--enrol-images`` of its images (the method's
enrolment rule, ``--enrol-k`` reference points per source): recall on its other images, the
drop, in points, of the knowns' open-set accuracy, and the share of the *other* held-out
source's images the enrolled source takes (an unseen generator attributed to the new one),
over ``--enrol-draws`` draws of the enrolled images, without and with the method's opt-in
separator (fitted on the fold's training and calibration embeddings, as a model keeps them).
``--enrol-factor`` also measures a variant that widens the enrolled threshold by a factor
calibrated on simulated enrolments of the known sources (their calibration images, 20 random
draws of ``--enrol-images`` each), chosen so that their mean acceptance reaches the model's
target (95%): the largest of 10 held-out distances accepts only ≈ 10/11 on average.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genprint.evaluation.metrics import auroc, oscr
from genprint.io.batches import load_items
from genprint.methods import metric_refs as refs
from genprint.methods.camera_pretrain import checkpoint_architecture
from genprint.methods.metric import RESIDUAL_WEIGHT, MetricAttributor
from genprint.world.protocols import protocol_view

REAL = "real"
EMBEDDING_SETTINGS = ("bench", "protocol", "camera_ckpt", "init", "seed", "split_seed",
                      "hold_cameras",
                      "no_origin_classes", "pseudo_sources", "pseudo_kind", "symmetries",
                      "symmetries_at_inference", "layer", "residual_weight", "augment",
                      "real_gen_weight")
"""Options that change a fold's embeddings (``--reuse`` checks them)."""


def folds(known: list[str], hold: int) -> list[list[str]]:
    """Disjoint groups of ``hold`` generator sources (real always stays known)."""
    gens = [s for s in known if s != REAL]
    return [gens[i::len(gens) // hold] for i in range(len(gens) // hold)]


def given_folds(known: list[str], given: list[str]) -> list[list[str]]:
    """The folds named on the command line (``--folds``): each a comma-separated group of known
    generators; a group must not be empty, name real or an unknown source, or overlap another."""
    gens = [s for s in known if s != REAL]
    groups = [[g.strip() for g in group.split(",") if g.strip()] for group in given]
    seen: set[str] = set()
    for group in groups:
        if not group or not set(group) <= set(gens) or seen & set(group):
            raise SystemExit(f"--folds: {','.join(group) or 'an empty group'} must name known "
                             f"generators of the protocol ({', '.join(gens)}), each in one fold "
                             "only")
        seen |= set(group)
    return groups


def known_references(tr_e: np.ndarray, tr_y: np.ndarray, cal_e: np.ndarray, cal_y: np.ndarray,
                     n_classes: int, k: int, seed: int, target_accept: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The method's reference points (K per source, from the training embeddings), their
    sources, and the thresholds calibrated on the calibration half."""
    points, owners = refs.class_references(tr_e, tr_y, n_classes, k, seed)
    cal_d = refs.source_distances(cal_e, points, owners, n_classes)
    thr = refs.calibrate_thresholds(cal_d[np.arange(len(cal_y)), cal_y], cal_y, n_classes,
                                    target_accept)
    return points, owners, thr


def figures(train_emb: np.ndarray, train_y: np.ndarray, cal_emb: np.ndarray, cal_y: np.ndarray,
            eval_emb: np.ndarray, eval_y: np.ndarray, n_classes: int, k: int, score: str,
            seed: int, target_accept: float, unseen: np.ndarray | None = None
            ) -> dict[str, float]:
    """Closed accuracy, AUROC and OSCR of one reference / score setting (eval_y −1 = unknown),
    and the share of ``unseen`` (held-out camera) images accepted as their source."""
    points, owners, thr = known_references(train_emb, train_y, cal_emb, cal_y, n_classes, k,
                                           seed, target_accept)
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


def layer_embed(model: MetricAttributor, images: list[np.ndarray], layer: str) -> np.ndarray:
    """Unit vectors of one layer's pooled features (``--layer``; images of one patch each)."""
    if layer == "embedding":
        return model.embed(images)
    from genprint.backbones.forensic_cnn import patches_to_tensor

    names = model.net_.layer_names()
    parts = layer.split("+")
    out = []
    model.net_.eval()
    with torch.no_grad():
        for start in range(0, len(images), 512):
            chunk = np.stack([img[: model.patch_size, : model.patch_size]
                              for img in images[start:start + 512]])
            feats = model.net_.forward_features(patches_to_tensor(chunk))
            picked = [torch.nn.functional.normalize(feats[names.index(p)], dim=1) for p in parts]
            out.append(torch.nn.functional.normalize(torch.cat(picked, 1), dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


def extra_real(args: argparse.Namespace) -> tuple[list, list]:
    """Real images of random pretraining cameras (``--extra-real``): train and calibration."""
    if args.extra_real is None:
        return [], []
    import csv

    from genprint.io.sources import Item

    with open(args.extra_real / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"].startswith("rcam-")]
    cams = sorted({r["source"] for r in rows})[: args.extra_real_cameras]
    out: dict[str, list] = {"train": [], "val": []}
    for cam in cams:
        for split, n in (("train", args.extra_real_per_camera),
                         ("val", max(1, args.extra_real_per_camera // 3))):
            mine = [r for r in rows if r["source"] == cam and r["split"] == split][:n]
            out[split] += [Item(args.extra_real / r["path"], REAL, split, "real", cam)
                           for r in mine]
    print(f"extra real images: {len(out['train'])} train, {len(out['val'])} calibration, "
          f"from {len(cams)} random cameras", flush=True)
    return out["train"], out["val"]


def run_fold(bench: Path, protocol: str, held: list[str], loss: str, epochs: int,
             args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    """Train on one fold; the figures of every (K, score) setting and the training seconds."""
    npz = args.out / f"embeddings-{loss}-{epochs}-lr{args.lr:g}-{'+'.join(held)}.npz"
    made_with = json.dumps({k: str(getattr(args, k)) for k in EMBEDDING_SETTINGS
                            # (a default added later is left out, so older runs still match)
                            if not (k == "pseudo_kind" and args.pseudo_kind == "upsample")
                            and not (k == "layer" and args.layer == "embedding")
                            and not (k == "split_seed" and args.split_seed is None)
                            # (runs from before residual statistics had none)
                            and not (k == "residual_weight" and not args.residual_weight)
                            and not (k == "augment" and args.augment == "none")
                            and not (k == "real_gen_weight" and not args.real_gen_weight)},
                           sort_keys=True)
    if args.reuse and npz.is_file():  # the saved embeddings of an earlier run of this fold
        z = np.load(npz)
        saved = str(z["made_with"]) if "made_with" in z.files else None
        if saved is not None and saved != made_with:
            raise SystemExit(f"{npz} was made with other settings ({saved}); use another --out "
                             "or drop --reuse")
        if saved is None:
            print(f"note: {npz.name} does not record its settings; reused as it is", flush=True)
        unseen_saved = z["unseen"] if "unseen" in z.files else None
        return fold_rows(z["train"], z["train_y"], z["cal"], z["cal_y"], z["eval"], z["eval_y"],
                         len(z["classes"]), MetricAttributor().target_accept,
                         unseen_saved, [str(s) for s in z["pseudo_sources"]], held, loss, epochs,
                         args, real_index(list(map(str, z["classes"])))), 0.0
    view = protocol_view(bench, protocol)
    arch = checkpoint_architecture(args.camera_ckpt) if args.init == "camera" else None
    model = MetricAttributor(
        loss=loss, epochs=epochs, init=args.init, seed=args.seed, lr=args.lr,
        origin_classes=not args.no_origin_classes,
        unseen_origin_thresholds=args.unseen_origin_thresholds,
        pseudo_sources=args.pseudo_sources, pseudo_kind=args.pseudo_kind,
        symmetries=args.symmetries, residual_weight=args.residual_weight, augment=args.augment,
        real_gen_weight=args.real_gen_weight, camera_ckpt=str(args.camera_ckpt) if arch else None,
        **({"width": arch.width, "embedding_dim": arch.embedding_dim, "blocks": arch.blocks}
           if arch else {}))
    cams = set(args.hold_cameras)

    def trained_on(i: Any) -> bool:
        return i.source not in held and not (i.source == REAL and i.origin in cams)

    train = [i for i in view.train if trained_on(i)]
    val = [i for i in view.val if trained_on(i)]
    extra_train, extra_cal = extra_real(args)
    rng = np.random.default_rng(args.seed if args.split_seed is None else args.split_seed)
    half = rng.random(len(val)) < 0.5
    cal = [i for i, h in zip(val, half, strict=True) if h]
    ev = [i for i, h in zip(val, half, strict=True) if not h]
    train += extra_train
    cal += extra_cal
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
    tr_e, cal_e = layer_embed(model, tr_imgs, args.layer), layer_embed(model, cal_imgs, args.layer)
    ev_e = layer_embed(model, [*ev_imgs, *ps_imgs], args.layer)
    np.savez(npz, train=tr_e, train_y=tr_y, cal=cal_e, cal_y=cal_y, eval=ev_e, eval_y=eval_y,
             pseudo_sources=np.array(ps_src), classes=np.array(model.classes_),
             made_with=np.array(made_with),
             **({"unseen": unseen} if unseen is not None else {}))
    if unseen is not None and unseen.any() and args.layer == "embedding":  # the model's own thresholds
        d = refs.source_distances(ev_e, model.references_, model.reference_sources_,
                                  len(model.classes_))
        cand = d.argmin(axis=1)
        accepted = d[np.arange(len(d)), cand] <= -model.thresholds_[cand]
        ok = (cand == index[REAL]) & accepted
        print(f"fold {held}, the model's thresholds: unseen cameras accepted as real "
              f"{np.mean(ok[unseen]):.3f} ({unseen.sum()} images); pseudo-unknowns accepted "
              f"{np.mean(accepted[eval_y < 0]):.3f}, as real {np.mean(ok[eval_y < 0]):.3f}",
              flush=True)
    return fold_rows(tr_e, tr_y, cal_e, cal_y, ev_e, eval_y, len(model.classes_),
                     model.target_accept, unseen, ps_src, held, loss, epochs, args,
                     real_index(list(model.classes_))), seconds


def real_index(classes: list[str]) -> int | None:
    """The index of the real source among ``classes``, if any."""
    return classes.index(REAL) if REAL in classes else None


def fold_rows(tr_e: np.ndarray, tr_y: np.ndarray, cal_e: np.ndarray, cal_y: np.ndarray,
              ev_e: np.ndarray, eval_y: np.ndarray, n_classes: int, target: float,
              unseen: np.ndarray | None, ps_src: list[str], held: list[str], loss: str,
              epochs: int, args: argparse.Namespace, real_index: int | None = None
              ) -> list[dict[str, Any]]:
    """The figures of every (K, score) setting of one fold, from its embeddings."""
    if args.whiten is not None:
        w = whitener(tr_e, tr_y, args.whiten)
        tr_e, cal_e, ev_e = (unit(e @ w) for e in (tr_e, cal_e, ev_e))
    if real_index is not None and (eval_y < 0).any():
        pts, own, thr = known_references(tr_e, tr_y, cal_e, cal_y, n_classes, args.enrol_k,
                                         args.seed, target)
        d = refs.source_distances(ev_e[eval_y < 0], pts, own, n_classes)
        cand = d.argmin(axis=1)
        as_real = float(np.mean((cand == real_index) & (d[np.arange(len(d)), cand] <= thr[cand])))
        print(f"fold {held}: pseudo-unknowns accepted as real {as_real:.3f} (K = "
              f"{args.enrol_k}, thresholds of the calibration half)", flush=True)
    # the enrolment rule's factor, simulated on the calibration half (the fold's validation
    # images), as a model does on its stored validation samples
    args.enrol_scale = (refs.enrolment_scale(cal_e, cal_y, args.enrol_images, args.enrol_k,
                                             args.seed, target)[0]
                        if args.enrol_rule == "scaled-mean" else None)
    if args.enrol_scale is not None:
        print(f"fold {held}: enrolment threshold = {args.enrol_scale:.3f} × the mean "
              "leave-one-out distance", flush=True)
    reach = known_enrolment_reach(ev_e, eval_y, n_classes, args, target)
    print(f"fold {held}: simulated enrolments of the known sources reach recall 0.90 in "
          f"{reach:.3f} of draws", flush=True)
    plain = enrolment(tr_e, tr_y, cal_e, cal_y, ev_e, eval_y, n_classes, args, target, ps_src)
    enrol = enrolment(tr_e, tr_y, cal_e, cal_y, ev_e, eval_y, n_classes, args, target, ps_src,
                      separator=True)
    print(f"fold {held}: enrolment without → with separator: recall {plain['enrol_recall']:.3f} "
          f"→ {enrol['enrol_recall']:.3f} (min {plain['enrol_min_recall']:.3f} → "
          f"{enrol['enrol_min_recall']:.3f}), drop {plain['enrol_drop']:.2f} → "
          f"{enrol['enrol_drop']:.2f} (max {plain['enrol_max_drop']:.2f} → "
          f"{enrol['enrol_max_drop']:.2f}), other held-out taken "
          f"{plain['enrol_other_taken']:.3f} → {enrol['enrol_other_taken']:.3f} (max "
          f"{plain['enrol_other_taken_max']:.3f} → {enrol['enrol_other_taken_max']:.3f}), met "
          f"{plain['enrol_met']} → {enrol['enrol_met']} of {enrol['enrolments']}", flush=True)
    enrol = {**plain, **{f"separator_{k}": v for k, v in enrol.items()},
             "known_enrol_reach": reach}
    if args.enrol_factor:
        f = enrolment_factor(tr_e, tr_y, cal_e, cal_y, n_classes, args, target)
        wide = enrolment(tr_e, tr_y, cal_e, cal_y, ev_e, eval_y, n_classes, args, target,
                         ps_src, factor=f)
        print(f"fold {held}: enrolment factor {f:.2f}; recall {enrol['enrol_recall']:.3f} → "
              f"{wide['enrol_recall']:.3f} (min {enrol['enrol_min_recall']:.3f} → "
              f"{wide['enrol_min_recall']:.3f}), drop {enrol['enrol_drop']:.2f} → "
              f"{wide['enrol_drop']:.2f}, other held-out taken {enrol['enrol_other_taken']:.3f} → "
              f"{wide['enrol_other_taken']:.3f}", flush=True)
        enrol.update({f"factor_{k}": v for k, v in wide.items()}, enrol_factor=f)
    rows = []
    for k in args.ks:
        for score in ("distance", "relative"):
            rows.append({"loss": loss, "epochs": epochs, "k": k, "score": score,
                         **figures(tr_e, tr_y, cal_e, cal_y, ev_e, eval_y, n_classes, k, score,
                                   args.seed, target, unseen), **enrol})
    return rows


def unit(e: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def whitener(emb: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """``--whiten`` (tried, not adopted): the matrix Σ^(-1/2) of the pooled within-source
    covariance of the training embeddings, shrunk towards its mean variance by ``alpha``
    (1 = no whitening)."""
    centred = np.concatenate([emb[y == c] - emb[y == c].mean(axis=0) for c in np.unique(y)])
    cov = centred.T @ centred / len(centred)
    dim = cov.shape[0]
    cov = (1.0 - alpha) * cov + alpha * np.trace(cov) / dim * np.eye(dim)
    vals, vecs = np.linalg.eigh(cov)
    return np.asarray(vecs @ np.diag(vals ** -0.5) @ vecs.T)


def known_enrolment_reach(ev_e: np.ndarray, eval_y: np.ndarray, n_classes: int,
                          args: argparse.Namespace, target_accept: float, draws: int = 20
                          ) -> float:
    """Share of simulated enrolments of the *known* sources that accept ≥ 90% of the source's
    other images: ``--enrol-images`` of a source's validation images of the evaluation half
    (the calibration half set the thresholds and the scaled-mean rule's factor) enrolled by the
    method's rule, ``draws`` random draws per source.

    This is what the rule gives a source the embedding already models well. If the images'
    distances were independent draws of one law, the largest of n held-out distances would
    accept a share of the source distributed as Beta(n, 1), which reaches 0.90 with
    probability 1 − 0.9ⁿ (0.65 for n = 10), and the recall on m further images (beta-binomial)
    would reach 0.90 with probability 0.60–0.65 for the m = 15–18 further images of an
    evaluation half (0.68 for m = 50)."""
    emb, y = ev_e[eval_y >= 0], eval_y[eval_y >= 0]
    reached = [float(np.mean(d <= t)) >= 0.9 for t, d in
               simulated_enrolments(emb, y, n_classes, args, target_accept, draws)]
    return float(np.mean(reached)) if reached else float("nan")


def simulated_enrolments(emb: np.ndarray, y: np.ndarray, n_classes: int,
                         args: argparse.Namespace, target_accept: float, draws: int
                         ) -> Iterator[tuple[float, np.ndarray]]:
    """For each known source with more than ``--enrol-images`` images in ``emb`` and each of
    ``draws`` random draws (seeded by ``--seed``): the enrolment threshold of the drawn images
    and the distances of the source's other images to their reference points
    (:func:`genprint.methods.metric_refs.enrolled_distances`)."""
    n = args.enrol_images
    rng = np.random.default_rng(args.seed)
    for c in range(n_classes):
        e = emb[y == c]
        if len(e) <= n:
            continue
        for _ in range(draws):
            pick = rng.permutation(len(e))
            yield refs.enrolled_distances(e[pick[:n]], e[pick[n:]], args.enrol_k, args.seed,
                                          target_accept, np.ones(1), args.enrol_scale)


def enrolment_factor(tr_e: np.ndarray, tr_y: np.ndarray, cal_e: np.ndarray, cal_y: np.ndarray,
                     n_classes: int, args: argparse.Namespace, target_accept: float,
                     draws: int = 20) -> float:
    """Smallest factor (≥ 1, step 0.01) on the enrolment threshold for which simulated
    enrolments of the known sources (``--enrol-images`` of their calibration images, the rest
    held out) accept ``target_accept`` of the rest, on average."""
    grid = np.round(np.arange(1.0, 3.0001, 0.01), 2)
    acc = [[(d <= g * t).mean() for g in grid] for t, d in
           simulated_enrolments(cal_e, cal_y, n_classes, args, target_accept, draws)]
    mean = np.mean(acc, axis=0)
    return float(grid[np.argmax(mean >= target_accept)] if (mean >= target_accept).any()
                 else grid[-1])


def enrolment(tr_e: np.ndarray, tr_y: np.ndarray, cal_e: np.ndarray, cal_y: np.ndarray,
              ev_e: np.ndarray, eval_y: np.ndarray, n_classes: int, args: argparse.Namespace,
              target_accept: float, pseudo_sources: list[str], factor: float = 1.0,
              separator: bool = False) -> dict[str, float]:
    """Enrol each held-out source from ``--enrol-images`` images (the method's rule, K =
    ``--enrol-k``; the threshold × ``factor``; with ``separator`` (opt-in in the method), one
    fitted against the training and calibration embeddings, as the model keeps them), ``--enrol-draws`` times (draw 0: the
    first images, then random ones): mean recall on its other images, mean drop (points) of the
    knowns' open-set accuracy, the mean share of the other held-out sources' images the new
    source takes, and how many enrolments meet both targets (recall ≥ 0.90, drop < 2)."""
    k = args.enrol_k
    points, owners, thr = known_references(tr_e, tr_y, cal_e, cal_y, n_classes, k, args.seed,
                                           target_accept)
    known = eval_y >= 0
    kn_e, kn_y = ev_e[known], eval_y[known]

    samples = np.concatenate([tr_e, cal_e])
    ps_e = ev_e[~known]
    names = np.array(pseudo_sources)
    give_way = args.give_way is not None
    if give_way:  # each image's distance to the known sources' stored samples, its label before
        rank = args.enrol_images if args.give_way_rank else None
        gw_kn, gw_ps = (known_sample_distance(e, samples, np.concatenate([tr_y, cal_y]),
                                              n_classes, rank) for e in (kn_e, ps_e))
        base_kn, base_ps = (refs.decide_sources(refs.source_distances(e, points, owners,
                                                                      n_classes), thr,
                                                np.zeros(n_classes, bool)) for e in (kn_e, ps_e))

    def open_acc(pts: np.ndarray, own: np.ndarray, t: np.ndarray, e: np.ndarray,
                 y: np.ndarray, sep: np.ndarray | None = None,
                 gw: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> float:
        """Open-set accuracy with the method's rule (the last source, if new, is enrolled);
        ``gw`` (``--give-way``): the enrolment images, ``e``'s distance to the known sources'
        samples and its label before the enrolment."""
        d = refs.source_distances(e, pts, own, len(t))
        enrolled = np.arange(len(t)) >= n_classes
        margins = None if sep is None else refs.separator_margins(e, sep)
        label = refs.decide_sources(d, t, enrolled, margins)
        if gw is not None:
            few, known_dist, base = gw
            yields = (label == n_classes) & (refs.distances(e, few).min(axis=1)
                                             > args.give_way * known_dist)
            label = np.where(yields, base, label)
        return float(np.mean(label == y))

    before = open_acc(points, owners, thr, kn_e, kn_y)
    recalls, drops, taken = [], [], []
    n = args.enrol_images
    for src in sorted(set(pseudo_sources)):
        all_idx = np.flatnonzero(names == src)
        rng = np.random.default_rng(args.seed)
        for draw in range(args.enrol_draws):
            idx = all_idx if draw == 0 else rng.permutation(all_idx)
            few, rest = ps_e[idx[:n]], ps_e[idx[n:]]
            new = refs.enrolment_references(few, np.arange(len(few)), k, args.seed)
            dist, _ = refs.enrolment_threshold(few, np.arange(len(few)), few, k, args.seed,
                                               target_accept, thr, args.enrol_scale)
            dist *= args.give_way_widening if give_way and args.enrol_scale is not None else 1.0
            pts = np.concatenate([points, new])
            own = np.concatenate([owners, np.full(len(new), n_classes)])
            t = np.append(thr, factor * dist)
            sep = None
            if separator:
                sep = np.full((n_classes + 1, few.shape[1] + 1), np.nan)
                sep[n_classes] = refs.fit_separator(samples, few)
            others = names != src
            recalls.append(open_acc(pts, own, t, rest, np.full(len(rest), n_classes), sep,
                                    (few, gw_ps[idx[n:]], base_ps[idx[n:]]) if give_way
                                    else None))
            drops.append(100 * (before - open_acc(pts, own, t, kn_e, kn_y, sep,
                                                  (few, gw_kn, base_kn) if give_way else None)))
            other = ps_e[others]
            if len(other):
                taken.append(open_acc(pts, own, t, other, np.full(len(other), n_classes), sep,
                                      (few, gw_ps[others], base_ps[others]) if give_way
                                      else None))
    return {"enrol_recall": float(np.mean(recalls)), "enrol_min_recall": float(np.min(recalls)),
            "enrol_drop": float(np.mean(drops)), "enrol_max_drop": float(np.max(drops)),
            "enrol_other_taken": float(np.mean(taken)) if taken else 0.0,
            "enrol_other_taken_max": float(np.max(taken)) if taken else 0.0,
            "enrol_met": int(sum(r >= 0.9 and d < 2 for r, d in zip(recalls, drops, strict=True))),
            "enrolments": len(recalls)}


def known_sample_distance(e: np.ndarray, samples: np.ndarray, sample_y: np.ndarray,
                          n_classes: int, rank: int | None) -> np.ndarray:
    """``--give-way`` (tried, not adopted): each row's distance to the known sources' stored
    samples, the nearest of all (``rank`` None), or with ``--give-way-rank``, per source the
    ⌈N_c / rank⌉-th nearest of its N_c samples (the radius holding the same share of them as
    the nearest of ``rank`` enrolment images holds of those), then the smallest over sources."""
    out = np.full(len(e), np.inf)
    for c in range(n_classes):
        d = refs.distances(e, samples[sample_y == c])
        if d.shape[1] == 0:
            continue
        m = 1 if rank is None else min(int(np.ceil(d.shape[1] / rank)), d.shape[1])
        out = np.minimum(out, np.partition(d, m - 1, axis=1)[:, m - 1])
    return out


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
    parser.add_argument("--folds", nargs="+", default=None, metavar="A,B",
                        help="the folds themselves, each a comma-separated group of known "
                             "generators held out together (instead of --hold), e.g. one "
                             "family per fold: ldm-bilinear-s0,ldm-tconv-s0 vae-tconv-s0 "
                             "gan-nearest-s0,gan-pshuffle-s0,gan-tconv-s0")
    parser.add_argument("--enrol-images", type=int, default=10)
    parser.add_argument("--enrol-draws", type=int, default=5,
                        help="draws of the enrolled images (draw 0: the first ones)")
    parser.add_argument("--enrol-k", type=int, default=8, help="reference points per source "
                        "in the enrolment figures")
    parser.add_argument("--reuse", action="store_true",
                        help="use the embeddings a previous run saved in --out (no training)")
    parser.add_argument("--enrol-rule", default="scaled-mean", choices=["scaled-mean", "quantile"],
                        help="enrolment threshold: the method's scaled mean of the leave-one-out "
                             "distances (factor simulated on the calibration images), or the "
                             "earlier rule, their finite-sample 95%% quantile (the largest of 10)")
    parser.add_argument("--give-way", type=float, default=None, metavar="RATIO",
                        help="tried, not adopted: the enrolled source gives way on an image "
                             "(which keeps its label from before the enrolment) when a stored "
                             "sample of a known source is nearer to it than 1/RATIO of its "
                             "distance to the nearest enrolment image")
    parser.add_argument("--give-way-widening", type=float, default=1.0, metavar="F",
                        help="with --give-way: the scaled-mean enrolment threshold × F")
    parser.add_argument("--give-way-rank", action="store_true",
                        help="with --give-way: compare with each known source's ⌈N/n⌉-th "
                             "nearest sample of N (n enrolment images), not the nearest")
    parser.add_argument("--enrol-factor", action="store_true",
                        help="also measure enrolment with the threshold widened by a factor "
                             "calibrated on simulated enrolments of the known sources")
    parser.add_argument("--whiten", type=float, default=None, metavar="ALPHA",
                        help="tried, not adopted: whiten the embeddings by the pooled "
                             "within-source covariance of the training embeddings, shrunk by "
                             "ALPHA (0-1], before the reference points")
    parser.add_argument("--no-origin-classes", action="store_true",
                        help="one loss class per source, even where items name an origin")
    parser.add_argument("--unseen-origin-thresholds", action="store_true",
                        help="the model's opt-in threshold rule for sources with several origins")
    parser.add_argument("--hold-cameras", nargs="*", default=[],
                        help="cameras (origins) of real left out of training and calibration; "
                             "their images are evaluated as known real (unseen cameras)")
    parser.add_argument("--pseudo-sources", type=int, default=0,
                        help="extra loss classes re-synthesised from training images")
    parser.add_argument("--pseudo-kind", default="upsample", choices=["upsample", "filter"],
                        help="operator of the pseudo-sources (metric_pseudo.PSEUDO_KINDS)")
    parser.add_argument("--symmetries", default="none", choices=["none", "flips", "dihedral"],
                        help="pixel-exact views: random one in training, mean over all at "
                             "inference")
    parser.add_argument("--symmetries-at-inference", default="none",
                        choices=["none", "flips", "dihedral"],
                        help="diagnostic: average the views at inference only (training unchanged)")
    parser.add_argument("--extra-real", type=Path, default=None,
                        help="camera bench with random cameras: add their real images")
    parser.add_argument("--extra-real-cameras", type=int, default=24)
    parser.add_argument("--extra-real-per-camera", type=int, default=30)
    parser.add_argument("--layer", default="embedding",
                        help="features the references live in: embedding, stage1..3 or a "
                             "'+'-joined list (pooled, each unit-normalised, then joined)")
    parser.add_argument("--residual-weight", type=float, default=RESIDUAL_WEIGHT,
                        help="join the method's residual statistics to the embedding, with "
                             "this weight (MetricAttributor(residual_weight=...))")
    parser.add_argument("--augment", default="none", choices=["none", "jpeg"],
                        help="training augmentation (MetricAttributor(augment=...))")
    parser.add_argument("--real-gen-weight", type=float, default=0.0,
                        help="weight of a real-vs-generated head on the embedding during "
                             "training (MetricAttributor(real_gen_weight=...))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=None,
                        help="seed of the calibration / evaluation halves (default: --seed), so "
                             "that models of different seeds can be compared on the same halves")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("metric-validation"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.layer != "embedding" and args.residual_weight:
        parser.error("--layer other than embedding reads the network's features alone: add "
                     "--residual-weight 0")
    if args.whiten is not None and not 0.0 < args.whiten <= 1.0:
        parser.error("--whiten takes a shrinkage in (0, 1]")
    if args.init == "camera" and args.camera_ckpt is None:
        from genprint.methods.camera_pretrain import default_camera_checkpoint

        args.camera_ckpt = default_camera_checkpoint()
    known = protocol_view(args.bench, args.protocol).protocol.known
    groups = (folds(list(known), args.hold) if args.folds is None
              else given_folds(list(known), args.folds))
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
                                  "enrol_other_taken", "enrol_factor", "factor_enrol_recall",
                                  "factor_enrol_drop", "factor_enrol_other_taken",
                                  "unseen_camera_accept", "known_enrol_reach")
                        if m in per_fold[0][j]}
                mean["enrol_min_recall"] = float(min(f[j]["enrol_min_recall"] for f in per_fold))
                mean["enrol_max_drop"] = float(max(f[j]["enrol_max_drop"] for f in per_fold))
                for key in ("enrol_met", "separator_enrol_met", "enrolments"):
                    mean[key] = int(sum(f[j][key] for f in per_fold))
                for key in ("separator_enrol_recall", "separator_enrol_other_taken"):
                    mean[key] = float(np.mean([f[j][key] for f in per_fold]))
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
                      + f" other held-out taken={mean['enrol_other_taken']:.3f}"
                      + f" met={mean['enrol_met']}/{mean['enrolments']}"
                      + f" (known sources reach 0.90 in {mean['known_enrol_reach']:.3f})"
                      + " (with --separator: "
                        f"recall {mean['separator_enrol_recall']:.3f}, other taken "
                        f"{mean['separator_enrol_other_taken']:.3f}, met "
                        f"{mean['separator_enrol_met']})"
                      + (f" | factor {mean['enrol_factor']:.2f}: recall "
                         f"{mean['factor_enrol_recall']:.3f} drop {mean['factor_enrol_drop']:.2f}"
                         f" other taken {mean['factor_enrol_other_taken']:.3f}"
                         if "enrol_factor" in mean else "")
                      + f"  folds={[round(a, 3) for a in out['per_fold_auroc']]}"
                      f"  train={np.mean(secs):.0f}s", flush=True)
            (args.out / "metric_validation.json").write_text(
                json.dumps({"folds": groups, "rows": all_rows,
                            "settings": {k: str(v) for k, v in vars(args).items()}}, indent=2),
                encoding="utf-8")


if __name__ == "__main__":
    main()
