"""Benchmark: member-vs-non-member AUC and false-rejection rate of `invert`, per zoo generator.

For every trained zoo generator (or those named): calibrate (N of its own samples; or reuse the
stored calibration with ``--reuse`` when its settings match), then verify

* members — fresh samples of the generator (seeds disjoint from the calibration's);
* non-members — real camera images (training and held-out cameras) and samples of every other
  trained zoo generator;

and print per generator: AUC of the calibrated score and of the raw loss (members vs all
non-members, vs real only, vs other generators only), the false-rejection rate at α on the
fresh members (should be close to α) and the false-acceptance rate on non-members: all of
them (``far``), real images (``far_real``; ``far_held_out``: those of the held-out cameras)
and other generators' (``far_others``). ``far_noise`` is the share of ``--noise`` images of
pure Gaussian pixel noise per level (σ = 20, 40, 60, 80 grey levels around 128) accepted: a
control that no generator should pass, kept out of every other figure.

    python benchmarks/invert_auc.py [--generators gan-tconv-s0 ...] [--n 200] [--members 100]
                                    [--real 100] [--per-other 20] [--alpha 0.05] [--reuse] [--save [--overwrite]]

With ``--condition jpeg75`` (any size-keeping perturbation of ``genprint.evaluation.perturb``)
every member and non-member goes through that perturbation, and the calibration is made under the
same condition (``--calibrate-clean``: the clean calibration instead, to show what a mismatched
calibration does).

Small check: ``python benchmarks/invert_auc.py --generators gan-tconv-s0 --n 8 --alpha 0.2
--members 8 --real 8 --per-other 2 --noise 2``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from _invert_common import other_samples, real_images, roc_auc, samples
from _invert_common import seed as seed_of

from genprint.verify.calibration import (
    Calibration,
    CalibrationError,
    apply_condition,
    calibrate,
    condition_path,
    detail_by_default,
)
from genprint.verify.generators import resolve_one, trained_zoo_names
from genprint.verify.inversion import InversionSettings, default_settings
from genprint.verify.verifier import Verifier, verify_arrays


def _calibration(gen, n: int, settings: InversionSettings, reuse: bool, save: bool,
                 condition: str | None = None, model_n: int | None = None,
                 detail: bool | None = None, overwrite: bool = False
                 ) -> tuple[Calibration, str]:
    path = gen.calibration_path
    if path is not None:
        path = condition_path(path, condition)
    if reuse and path is not None and path.is_file():
        try:
            cal = Calibration.load(path)
            cal.check(gen, settings, condition)
            wanted = detail_by_default(condition, settings) if detail is None else detail
            if cal.n >= n and (cal.detail is not None) == wanted:
                return cal, f"reused {path.name}"
        except CalibrationError:
            pass
    cal = calibrate(gen, n, settings, condition=condition, model_n=model_n, detail=detail)
    if save and path is not None:
        if path.is_file() and not overwrite:  # e.g. the calibrations shipped with genprint
            raise SystemExit(f"{path} exists (N = {Calibration.load(path).n}); --save replaces "
                             "it only with --overwrite")
        cal.save(path)
        return cal, f"saved {path.name}"
    return cal, "in memory"


def evaluate_generator(name: str, names: list[str], args: argparse.Namespace
                       ) -> dict[str, object]:
    """Calibrate one generator and measure it (see module doc)."""
    gen = resolve_one(f"zoo:{name}")
    settings: InversionSettings = default_settings(gen).with_(**args.settings)
    t0 = time.perf_counter()
    cal_condition = None if args.calibrate_clean else args.condition
    cal, how = _calibration(gen, args.n, settings, args.reuse, args.save, cal_condition,
                            args.model_n, args.detail, args.overwrite)
    t_cal = time.perf_counter() - t0
    prefix = "" if args.split == "test" else "val-"
    mem = samples(name, args.members, prefix + "members")
    real = real_images(args.real, gen.resolution, prefix)
    others, _ = other_samples(name, [o for o in names if o != name], per_other=args.per_other,
                              prefix=prefix)
    images = apply_condition(np.concatenate([mem, real, others]), args.condition,
                             seed_of("condition", name))
    t0 = time.perf_counter()
    rows = verify_arrays([Verifier(gen, cal, args.batch_size)], list(images), alpha=args.alpha)
    t_ver = time.perf_counter() - t0
    shape = (gen.resolution, gen.resolution, 3)
    noise = [np.clip(128 + sigma * np.random.default_rng(seed_of("noise", sigma, k))
                     .standard_normal(shape), 0, 255).astype(np.uint8)
             for sigma in (20, 40, 60, 80) for k in range(args.noise)]
    noise_p = np.array([r.p_value for r in verify_arrays(
        [Verifier(gen, cal, args.batch_size)], noise, alpha=args.alpha)]) if noise else None
    score = np.array([r.calibrated_score for r in rows])
    loss = np.array([r.loss for r in rows])
    p = np.array([r.p_value for r in rows])
    m, k_real = len(mem), len(mem) + len(real)
    non = slice(m, None)
    out: dict[str, object] = {
        "generator": name, "family": gen.obj.family, "calibration": how, "n_calibration": cal.n,
        "condition": args.condition, "calibration_condition": cal_condition,
        "members": m, "real": len(real), "others": len(others),
        "auc": roc_auc(score[:m], score[non]),
        "auc_loss": roc_auc(loss[:m], loss[non]),
        "auc_real": roc_auc(score[:m], score[m:k_real]),
        "auc_others": roc_auc(score[:m], score[k_real:]) if len(others) else float("nan"),
        "frr": float(np.mean(p[:m] < args.alpha)),
        "far": float(np.mean(p[non] >= args.alpha)),
        "far_real": float(np.mean(p[m:k_real] >= args.alpha)),
        "far_held_out": (float(np.mean(p[k_real - args.real // 2:k_real] >= args.alpha))
                         if args.real // 2 else float("nan")),
        "far_others": float(np.mean(p[k_real:] >= args.alpha)) if len(others) else float("nan"),
        "far_noise": (float(np.mean(noise_p >= args.alpha)) if noise_p is not None
                      else float("nan")),
        "calibration_seconds": round(t_cal, 1), "settings": settings.fingerprint(),
        "seconds_per_image": round(t_ver / len(images), 3),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", nargs="+", help="zoo names (default: every trained one)")
    parser.add_argument("--n", type=int, default=200, help="calibration samples")
    parser.add_argument("--members", type=int, default=100, help="fresh member images")
    parser.add_argument("--real", type=int, default=100, help="real camera images")
    parser.add_argument("--per-other", type=int, default=20, help="samples of each other "
                                                                  "generator")
    parser.add_argument("--noise", type=int, default=20, help="pure-noise control images per "
                        "noise level (4 levels; 0: none)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="image set: 'val' draws other seeds, for choosing settings without "
                             "looking at the 'test' figures")
    parser.add_argument("--reuse", action="store_true", help="use stored calibrations whose "
                                                             "settings match")
    parser.add_argument("--save", action="store_true", help="store new calibrations next to the "
                                                            "weights (an existing one, e.g. a "
                                                            "shipped one, only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --save: replace existing calibration files")
    parser.add_argument("--settings", type=json.loads, default={},
                        help="inversion settings overrides as JSON")
    parser.add_argument("--model-n", type=int, default=None, help="stage noise: samples the "
                        "members' noise model is fitted on (default: --n)")
    parser.add_argument("--detail", action=argparse.BooleanOptionalAction, default=None,
                        help="calibrate with (or without) the detail adjustment; default: "
                             "genprint's (on under a condition); reused calibrations must match")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--condition", help="perturb every test image this way (e.g. jpeg75) "
                        "and calibrate under the same condition")
    parser.add_argument("--calibrate-clean", action="store_true", help="with --condition: use "
                        "the clean calibration (the mismatch an unaware user would make)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = trained_zoo_names()
    chosen = args.generators or names
    results = []
    for name in chosen:
        r = evaluate_generator(name, names, args)
        results.append(r)
        if not args.json:
            print(f"done {name}: AUC {r['auc']:.4f}, FRR {r['frr']:.3f}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    cols = ("generator", "family", "auc", "auc_loss", "auc_real", "auc_others", "frr", "far",
            "far_real", "far_held_out", "far_others", "far_noise", "calibration_seconds",
            "seconds_per_image")
    print(" ".join(f"{c:>18}" if k else f"{c:<16}" for k, c in enumerate(cols)))
    for r in results:
        cells = [f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        print(" ".join(f"{c:>18}" if k else f"{c:<16}" for k, c in enumerate(cells)))
    print(f"alpha = {args.alpha}; members {args.members}, real {args.real}, {args.per_other} per "
          f"other generator, {args.noise} noise images per level; calibration n = {args.n}; "
          "test images: "
          f"{args.condition or 'clean'}, calibration: "
          f"{(None if args.calibrate_clean else args.condition) or 'clean'}")
    for r in results:
        print(f"settings of {r['generator']}: {r['settings']}")


if __name__ == "__main__":
    main()
