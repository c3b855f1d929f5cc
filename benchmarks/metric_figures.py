"""Figures of the ``metric`` method: every protocol × both inits, and enrolment.

For each protocol and init (``camera``: from a camera-identification checkpoint; ``scratch``),
trains ``metric`` on the protocol's known sources (thresholds from validation only), evaluates it
on the test split with ``genprint.evaluation.evaluate`` and records the headline metrics and the
training time. Then, on protocol ``all`` with the first init, each unknown source is enrolled
from ``--enrol-images`` of its test images; its recall on the rest of its test images and the
known sources' accuracy before / after are recorded, and the share of the protocol's *other*
unknown sources' test images the enrolled source takes (an unseen generator wrongly attributed
to the new one). Which 10 images are enrolled matters (the
new threshold rests on them), so this is repeated for ``--enrol-draws`` draws: draw 0 is the
first images of the source in manifest order (the figure earlier releases reported), the others
random subsets (seeded); the table gives draw 0 and the mean / worst over all draws.

Writes ``OUT/metric_figures.json`` and ``OUT/metric_figures.md`` (a markdown table) and prints
the table. Models are kept in ``OUT/models/<protocol>-<init>`` (``--reuse`` loads them instead of
training again).

    genprint bench build BENCH                     # attribution benchmark (needs the zoo)
    genprint bench build CAMBENCH --task camera
    genprint pretrain camera --bench CAMBENCH --out CKPT
    python benchmarks/metric_figures.py --bench BENCH --camera-ckpt CKPT --out OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

import genprint
from genprint.evaluation.evaluate import evaluate
from genprint.io.batches import load_items
from genprint.methods import metric_refs as refs
from genprint.methods.fitting import fit_on_items
from genprint.methods.metric import RESIDUAL_WEIGHT, MetricAttributor
from genprint.world.protocols import protocol_view

COLUMNS = (("closed_set_accuracy", "closed acc"), ("macro_f1", "macro-F1"), ("auroc", "AUROC"),
           ("tnr_at_tpr95", "TNR@95"), ("oscr", "OSCR"), ("train_seconds", "train s"))


def mark_validation_samples(model: MetricAttributor, bench: Path, protocol: str) -> None:
    """Mark which stored samples of a model saved before genprint marked them are validation
    images (their embeddings match those of the protocol's validation images), so that its
    enrolments use the scaled-mean rule as a model trained now would. In memory only."""
    view = protocol_view(bench, protocol)
    items = [i for i in view.val if i.source in model.classes_]
    images, _, _ = load_items([i.path for i in items], min_size=model.min_size)
    val = model.embed(images)
    flags = np.zeros(len(model.samples_), bool)
    for start in range(0, len(val), 256):
        d = refs.distances(model.samples_, val[start:start + 256])
        flags |= (d < 1e-4).any(axis=1)
    model.sample_validation_ = flags
    print(f"note: the model was saved before validation samples were marked; {flags.sum()} of "
          f"its {len(flags)} samples match its {len(val)} validation images and are marked "
          "(in memory) for the scaled-mean enrolment rule", flush=True)


def train_or_load(bench: Path, protocol: str, init: str, args: argparse.Namespace
                  ) -> tuple[MetricAttributor, float]:
    """The model of (protocol, init), trained now (or loaded with ``--reuse``); seconds spent."""
    path = args.out / "models" / f"{protocol}-{init}"
    if args.reuse and (path / "card.json").is_file():
        model = genprint.load(path)
        assert isinstance(model, MetricAttributor)
        saved = {"augment": model.augment, "residual_weight": model.effective_residual_weight,
                 "real_gen_weight": float(model.real_gen_weight),
                 "epochs": model.epochs, "loss": model.loss, "refs_per_class": model.refs_per_class}
        asked = {"augment": args.augment, "residual_weight": float(args.residual_weight),
                 "real_gen_weight": float(args.real_gen_weight),
                 "epochs": args.epochs, "loss": args.loss, "refs_per_class": args.refs_per_class}
        if saved != asked:
            raise SystemExit(f"{path} was trained with {saved}, not {asked}: use another --out "
                             "or drop --reuse")
        if model.samples_ is not None and model.sample_validation_ is None:
            mark_validation_samples(model, bench, protocol)
        return model, float(model.training_info_.get("train_seconds", math.nan))
    view = protocol_view(bench, protocol)
    model = MetricAttributor(
        loss=args.loss, epochs=args.epochs, refs_per_class=args.refs_per_class, init=init,
        camera_ckpt=str(args.camera_ckpt) if init == "camera" else None, seed=args.seed,
        residual_weight=args.residual_weight, augment=args.augment,
        real_gen_weight=args.real_gen_weight,
        **(arch_of(args.camera_ckpt) if init == "camera" else {}))
    model.training_info_ = {"bench": str(bench), "protocol": protocol}
    t0 = time.perf_counter()
    fit_on_items(model, view.train, view.val)
    seconds = time.perf_counter() - t0
    model.save(path, overwrite=True)
    return model, seconds


def arch_of(ckpt: Path) -> dict[str, int]:
    """The architecture settings of a camera checkpoint."""
    from genprint.methods.camera_pretrain import checkpoint_architecture

    cfg = checkpoint_architecture(ckpt)
    return {"width": cfg.width, "embedding_dim": cfg.embedding_dim,
            "patch_size": cfg.patch_size, "blocks": cfg.blocks}


def test_images(model: MetricAttributor, bench: Path, protocol: str
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """The readable test images of ``protocol`` and the source of each."""
    view = protocol_view(bench, protocol)
    images, kept, _ = load_items([i.path for i in view.test], min_size=model.min_size)
    return images, np.array([view.test[k].source for k in kept])


def enrolment(model: MetricAttributor, images: list[np.ndarray], sources: np.ndarray,
              unknown: list[str], n: int, draws: int = 1, separator: bool = False,
              threshold_rule: str = "scaled-mean") -> list[dict[str, Any]]:
    """Enrol every ``unknown`` source from ``n`` of its test images (see doc); ``images`` and
    ``sources``: :func:`test_images`."""
    known = np.isin(sources, model.classes_)
    known_imgs = [images[k] for k in np.flatnonzero(known)]

    def accuracy(m: MetricAttributor) -> tuple[float, float]:
        res = m.attribute_arrays(known_imgs)
        truth = sources[known]
        return (float(np.mean([r.label == t for r, t in zip(res, truth, strict=True)])),
                float(np.mean([r.candidate == t for r, t in zip(res, truth, strict=True)])))

    def other_unknown(source: str) -> np.ndarray:
        """The test images of the protocol's *other* unknown sources."""
        return np.flatnonzero(~known & (sources != source))

    before_open, before_closed = accuracy(model)
    rows = []
    for source in unknown:
        idx = np.flatnonzero(sources == source)
        if len(idx) <= n:
            continue
        per_draw = []
        for d in range(max(1, draws)):
            sel = idx if d == 0 else np.random.default_rng(d).permutation(idx)
            enrolled = copy.deepcopy(model)
            record = enrolled.enroll([images[k] for k in sel[:n]], source, separator=separator,
                                     threshold_rule=threshold_rule)
            rest = enrolled.attribute_arrays([images[k] for k in sel[n:]])
            after_open, after_closed = accuracy(enrolled)
            other_idx = other_unknown(source)
            others = enrolled.attribute_arrays([images[k] for k in other_idx])
            taken = np.array([r.label == source for r in others])
            per_draw.append({
                "recall": float(np.mean([r.label == source for r in rest])),
                "known_accuracy_after": after_open,
                "known_accuracy_drop_points": 100 * (before_open - after_open),
                "known_closed_accuracy_after": after_closed,
                "other_unknown_taken": float(np.mean(taken)),
                # which unseen generators: a sibling seed of the same architecture, or others
                "other_unknown_taken_by": {
                    str(o): float(np.mean(taken[sources[other_idx] == o]))
                    for o in np.unique(sources[other_idx])},
                "threshold": record["threshold"], "threshold_rule": record["threshold_rule"],
                "separator": record.get("separator"),
                "loo_recall": record.get("loo_recall"),
                "overlap_taken": record.get("overlap_taken"),
                "overlap_share": record.get("overlap_share"),
            })
        recalls = [p["recall"] for p in per_draw]
        drops = [p["known_accuracy_drop_points"] for p in per_draw]
        rows.append({
            "source": source, "n_enrolled": n, "n_test": len(idx) - n, **per_draw[0],
            "known_accuracy_before": before_open,
            "known_closed_accuracy_before": before_closed,
            "draws": len(per_draw), "recall_mean": float(np.mean(recalls)),
            "recall_min": float(np.min(recalls)), "drop_mean": float(np.mean(drops)),
            "drop_max": float(np.max(drops)),
            "other_unknown_taken_mean": float(np.mean([p["other_unknown_taken"]
                                                       for p in per_draw])),
            "other_unknown_taken_by_mean": {
                o: float(np.mean([p["other_unknown_taken_by"][o] for p in per_draw]))
                for o in per_draw[0]["other_unknown_taken_by"]},
            "met_share": float(np.mean([r >= 0.9 and dr < 2 for r, dr in zip(recalls, drops)])),
            "per_draw": per_draw,
        })
    return rows


def enrolment_checks(enrol: list[dict[str, Any]]) -> str:
    """How well the enrolment checks predicted the test figures, over every (source, draw)."""
    draws = [p for e in enrol for p in e["per_draw"]]
    lines = []
    loo = [(p["loo_recall"], p["recall"]) for p in draws if p.get("loo_recall") is not None]
    if len(loo) >= 3:
        a, b = np.array(loo).T
        lines.append(f"- leave-one-out self-check vs test recall ({len(loo)} draws): means "
                     f"{a.mean():.3f} vs {b.mean():.3f}, mean absolute error "
                     f"{np.abs(a - b).mean():.3f}, correlation {np.corrcoef(a, b)[0, 1]:.2f}")
    over = [(p["overlap_share"], p["known_accuracy_drop_points"]) for p in draws
            if p.get("overlap_share") is not None]
    if len(over) >= 3:
        a, b = np.array(over).T
        r = np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else float("nan")
        lines.append(f"- overlap check (share of stored samples of the other sources taken) vs "
                     f"known-accuracy drop ({len(over)} draws): correlation {r:.2f}; drop "
                     f"mean {b[a > 0].mean() if (a > 0).any() else float('nan'):.2f} points "
                     f"where the check saw an overlap, {b[a == 0].mean() if (a == 0).any() else float('nan'):.2f} "
                     "where it saw none")
    return "\n\nEnrolment checks against the test split:\n\n" + "\n".join(lines) + "\n" if lines else ""


def fmt(v: Any) -> str:
    """A table cell."""
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


def markdown(rows: list[dict[str, Any]], enrol: list[dict[str, Any]]) -> str:
    """The two tables as markdown."""
    lines = ["| protocol | init | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['init']} | "
                     + " | ".join(fmt(r.get(k, math.nan)) for k, _ in COLUMNS) + " |")
    if enrol:
        lines += ["", ("| enrolled source | images | recall (draw 0) | known acc before | after | "
                       "drop (points) | draws | recall mean / min | drop mean / max | "
                       "other unknowns taken (mean) | draws meeting both targets |"),
                  "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"]
        for e in enrol:
            lines.append(f"| {e['source']} | {e['n_enrolled']} | {fmt(e['recall'])} | "
                         f"{fmt(e['known_accuracy_before'])} | {fmt(e['known_accuracy_after'])} | "
                         f"{e['known_accuracy_drop_points']:.2f} | {e['draws']} | "
                         f"{e['recall_mean']:.3f} / {e['recall_min']:.3f} | "
                         f"{e['drop_mean']:.2f} / {e['drop_max']:.2f} | "
                         f"{e.get('other_unknown_taken_mean', math.nan):.3f} | "
                         f"{e['met_share']:.2f} |")
        taken = []
        for e in enrol:
            by = {o: v for o, v in e.get("other_unknown_taken_by_mean", {}).items() if v > 0}
            if by:
                taken.append(f"- {e['source']}: "
                             + ", ".join(f"{o} {v:.3f}" for o, v in by.items()))
        if taken:
            lines += ["", ("Other unknowns taken, by source (mean over draws; sources taking "
                           "none left out):"), "", *taken]
    return "\n".join(lines) + "\n"


def known_reach(model: MetricAttributor, images: list[np.ndarray], sources: np.ndarray, n: int,
                draws: int = 5, threshold_rule: str = "scaled-mean") -> dict[str, float]:
    """What the enrolment rule gives a source the model already knows: for each known source,
    ``draws`` random sets of ``n`` of its test images (``images``, ``sources``:
    :func:`test_images`) are enrolled by the method's threshold rule alone
    (:func:`genprint.methods.metric_refs.enrolled_distances`), and the share of its other test
    images within that threshold is measured. Returns, per source and ``"all"``, the share of
    draws reaching 0.90.

    If the images' distances were independent draws of one law, the largest of n held-out
    distances would accept a share of the source distributed as Beta(n, 1), which reaches 0.90
    with probability 1 − 0.9ⁿ (0.65 for n = 10), and the recall on m further images (a
    beta-binomial law) would reach 0.90 with probability ≈ 0.66–0.70 for m = 190–30: what the
    rule gives a source as compact as independent draws."""
    known = np.isin(sources, model.classes_)
    emb = model.embed([img for img, k in zip(images, known, strict=True) if k])
    sources = sources[known]
    # the rule's factor for n images (None: the quantile rule)
    scale = model.enrolment_scale(n)[0] if threshold_rule == "scaled-mean" else None
    out: dict[str, float] = {}
    reached_all: list[bool] = []
    for source in model.classes_:
        e = emb[sources == source]
        if len(e) <= n:
            continue
        rng = np.random.default_rng(0)
        reached = []
        for _ in range(draws):
            pick = rng.permutation(len(e))
            t, d = refs.enrolled_distances(e[pick[:n]], e[pick[n:]], model.refs_per_class,
                                           model.seed, model.target_accept,
                                           -np.asarray(model.thresholds_), scale)
            reached.append(bool(np.mean(d <= t) >= 0.9))
        out[str(source)] = float(np.mean(reached))
        reached_all += reached
    out["all"] = float(np.mean(reached_all)) if reached_all else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--camera-ckpt", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("metric-figures"))
    parser.add_argument("--protocols", nargs="+", default=["seed", "architecture", "family", "all"])
    parser.add_argument("--inits", nargs="+", default=["camera", "scratch"])
    parser.add_argument("--loss", default="proxy-anchor")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--refs-per-class", type=int, default=8)
    parser.add_argument("--residual-weight", type=float, default=RESIDUAL_WEIGHT,
                        help="weight of the residual statistics joined to the embedding")
    parser.add_argument("--augment", default="none", choices=["none", "jpeg"],
                        help="training augmentation (MetricAttributor(augment=...))")
    parser.add_argument("--real-gen-weight", type=float, default=0.0,
                        help="weight of a real-vs-generated head during training")
    parser.add_argument("--enrol-images", type=int, default=10)
    parser.add_argument("--enrol-draws", type=int, default=5,
                        help="draws of the enrolled images (draw 0: the first in manifest order)")
    parser.add_argument("--enrol-separator", action="store_true",
                        help="enrol with the opt-in separator (genprint enroll --separator)")
    parser.add_argument("--enrol-rule", default="scaled-mean", choices=["scaled-mean", "quantile"],
                        help="the enrolment threshold rule (genprint enroll --threshold-rule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="load models already in OUT")
    args = parser.parse_args()
    if "camera" in args.inits and args.camera_ckpt is None:
        from genprint.methods.camera_pretrain import default_camera_checkpoint

        args.camera_ckpt = default_camera_checkpoint()
        if args.camera_ckpt is None:
            raise SystemExit("--camera-ckpt is needed for init 'camera' (genprint pretrain camera)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows, enrol = [], []
    reach: dict[str, float] = {}
    for protocol in args.protocols:
        for init in args.inits:
            model, seconds = train_or_load(args.bench, protocol, init, args)
            run = evaluate(model, args.bench, protocol)
            rows.append({**run.metrics, "init": init, "train_seconds": seconds})
            print(markdown(rows[-1:], []).splitlines()[-1], flush=True)
            if protocol == "all" and init == args.inits[0]:
                images, sources = test_images(model, args.bench, protocol)
                unknown = list(protocol_view(args.bench, protocol).protocol.unknown)
                enrol = enrolment(model, images, sources, unknown, args.enrol_images,
                                  args.enrol_draws, args.enrol_separator, args.enrol_rule)
                reach = known_reach(model, images, sources, args.enrol_images,
                                    max(args.enrol_draws, 20), args.enrol_rule)
                print(f"known sources enrolled again from {args.enrol_images} test images "
                      f"(the threshold rule alone): draws reaching recall 0.90, "
                      f"{json.dumps({k: round(v, 2) for k, v in reach.items()})}", flush=True)
    table = markdown(rows, enrol) + enrolment_checks(enrol)
    (args.out / "metric_figures.md").write_text(table, encoding="utf-8")
    (args.out / "metric_figures.json").write_text(
        json.dumps({"runs": rows, "enrolment": enrol, "known_reach": reach, "settings": {
            k: str(v) for k, v in vars(args).items()}}, indent=2, default=str), encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
