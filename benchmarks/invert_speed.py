"""Benchmark: seconds per verified image, reference schedule vs genprint's default, same images.

The reference schedule is the published one (RONAN's code): one image at a time, 8 random
restarts, 2000 Adam steps at lr 0.01, no early stopping, score = lowest loss. Its 8 restarts of
one image run as one batch of 8 (the fastest form of the reference; ``--sequential-restarts``
runs them one by one, as the published loop does, which makes the reference slower still).
genprint's default inverts all images × restarts as one batch with its schedule, early stopping,
restart pruning and encoder start where the generator has an encoder.

Both runs are in this process, on the same images (members: fresh samples of the generator;
non-members: half real camera images, half samples of other trained zoo generators) and the same
generator. Printed: seconds per verified image, the ratio, and member-vs-non-member AUC of the
loss (the default score) and of the complexity-normalised score (``--complexity``). Target: ratio ≥ 20 with AUC not lower.

    python benchmarks/invert_speed.py [--generator gan-tconv-s0] [--members 10] [--non-members 10]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from _invert_common import other_samples, real_images, roc_auc, samples, seed

from genprint.verify.calibration import calibrated_scores
from genprint.verify.generators import resolve_one, trained_zoo_names
from genprint.verify.inversion import REFERENCE, InversionSettings, default_settings, invert


def run_reference(gen, images: np.ndarray, seeds: list[int], sequential: bool
                  ) -> tuple[np.ndarray, float, int]:
    """One image at a time; returns losses, seconds and decoder passes."""
    losses, steps = [], 0
    t0 = time.perf_counter()
    for img, s in zip(images, seeds, strict=True):
        if sequential:
            per = []
            for r in range(REFERENCE.restarts):
                one = REFERENCE.with_(restarts=1)
                res = invert(gen, img[None], one, seeds=[s * 8 + r])
                per.append(res.loss[0])
                steps += res.sample_steps
            losses.append(min(per))
        else:
            res = invert(gen, img[None], REFERENCE, seeds=[s])
            losses.append(res.loss[0])
            steps += res.sample_steps
    return np.array(losses), time.perf_counter() - t0, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="gan-tconv-s0", help="trained zoo generator")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--non-members", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both runs)")
    parser.add_argument("--sequential-restarts", action="store_true",
                        help="reference restarts one by one instead of as a batch of 8")
    parser.add_argument("--settings", type=json.loads, default={},
                        help='genprint settings overrides as JSON, e.g. \'{"steps": 200}\'')
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = resolve_one(f"zoo:{args.generator}")
    others = [n for n in trained_zoo_names() if n != args.generator]
    mem = samples(args.generator, args.members, "members")
    n_real = args.non_members // 2 if others else args.non_members
    non = [real_images(n_real, gen.resolution)]
    if others:
        non.append(other_samples(args.generator, others, args.non_members - n_real)[0])
    images = np.concatenate([mem, *non])
    n_mem = len(mem)
    seeds = [seed("restart", i) for i in range(len(images))]
    ours_settings: InversionSettings = default_settings(gen).with_(**args.settings)
    invert(gen, images[:2], InversionSettings(steps=2, restarts=2))  # warm-up

    ours = invert(gen, images, ours_settings, seeds=seeds)
    ref_loss, ref_s, ref_steps = run_reference(gen, images, seeds, args.sequential_restarts)
    n = len(images)
    figures = {"generator": args.generator, "members": n_mem, "non_members": n - n_mem,
               "threads": args.threads, "reference_restarts": "sequential"
               if args.sequential_restarts else "batched (8 per image)"}
    for key, loss, secs, steps in (("reference", ref_loss, ref_s, ref_steps),
                                   ("genprint", ours.loss, ours.seconds, ours.sample_steps)):
        cal = calibrated_scores(loss, images, complexity=True)
        figures[key] = {
            "seconds_per_image": secs / n, "decoder_passes_per_image": steps / n,
            "auc_loss": roc_auc(loss[:n_mem], loss[n_mem:]),
            "auc_complexity": roc_auc(cal[:n_mem], cal[n_mem:]),
        }
    figures["genprint"]["settings"] = ours_settings.fingerprint()
    ratio = figures["reference"]["seconds_per_image"] / figures["genprint"]["seconds_per_image"]
    figures["speed_ratio"] = ratio
    figures["target_met"] = bool(ratio >= 20 and figures["genprint"]["auc_loss"]
                                 >= figures["reference"]["auc_loss"])
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"generator {args.generator}: {n_mem} members, {n - n_mem} non-members, "
          f"{args.threads} thread(s); reference restarts {figures['reference_restarts']}")
    print(f"{'schedule':<10} {'s/image':>9} {'passes/image':>13} {'AUC loss':>9} {'AUC C(x)':>9}")
    for key in ("reference", "genprint"):
        f = figures[key]
        print(f"{key:<10} {f['seconds_per_image']:>9.3f} {f['decoder_passes_per_image']:>13.0f} "
              f"{f['auc_loss']:>9.4f} {f['auc_complexity']:>9.4f}")
    print(f"speed ratio {ratio:.1f}× (target ≥ 20× with AUC not lower): "
          f"{'met' if figures['target_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
