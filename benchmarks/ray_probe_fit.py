"""Benchmark: a ``probe`` fit with its feature extraction on Ray Data, against the local fit.

Fits the same ``probe`` twice on the training and validation images of a benchmark protocol
(or of a folder with one sub-folder per source), in the same run:

* local: :func:`genprint.methods.fitting.fit_on_items` in this process (the path of
  ``genprint train probe``), torch with ``--threads`` threads;
* Ray: :func:`genprint.scale.fit_probe_on_ray`, ``--actors`` actors of one CPU each on a
  local Ray started here with ``--actors`` CPUs (or the cluster at ``--address``). Ray's
  start-up (``ray.init``) is timed apart; the Ray figure includes what every fit pays: the
  reading pass, starting the actors and building the backbone in each.

The feature cache is off for both (each fit runs the backbone on every image). It prints
images/s for each, the ratio Ray / local, and how far the two models are apart: chosen layer
and hyperparameter, data digest, and the largest threshold difference.

    python benchmarks/ray_probe_fit.py --bench BENCH [--per-class 100] [--actors 2]
    python benchmarks/ray_probe_fit.py --data my_sources/ --backbone efficientnet-lite0
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from genprint.methods.fitting import fit_on_items
from genprint.methods.probe import ProbeAttributor, cap_per_class


def items(args: argparse.Namespace) -> tuple[list, list]:
    """Training and validation items of ``--bench``'s protocol, or of ``--data`` (its own
    split, else 20% of each source drawn for validation), as ``genprint train`` reads them."""
    from genprint.cli.train import training_items

    return training_items(args.data, args.bench, args.protocol, 0.2, 0, None)


def model(args: argparse.Namespace) -> ProbeAttributor:
    return ProbeAttributor(backbone=args.backbone, pad=args.pad, input_size=args.input_size,
                           per_class=args.per_class, cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=None, help="a built-in benchmark")
    parser.add_argument("--data", type=Path, default=None,
                        help="or your own data: a folder per source, or a manifest")
    parser.add_argument("--protocol", default="all")
    parser.add_argument("--backbone", default="dinov2-s14-onnx")
    parser.add_argument("--pad", default="reflect")
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--per-class", type=int, default=100,
                        help="training images per source (validation images are all used)")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors, one CPU each")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the local fit")
    parser.add_argument("--address", default=None, help="a running Ray cluster")
    args = parser.parse_args()
    if (args.bench is None) == (args.data is None):
        parser.error("give one of --bench or --data")

    import ray

    from genprint.scale import fit_probe_on_ray

    train, val = items(args)
    n = len(cap_per_class([i.source for i in train], args.per_class, 0)) + len(val)
    print(f"{n} images to featurise ({len(train)} training files capped at {args.per_class} "
          f"per source, {len(val)} validation), backbone {args.backbone}, pad {args.pad}, "
          f"input {args.input_size}")

    torch.set_num_threads(args.threads)
    local = model(args)
    t = time.perf_counter()
    fit_on_items(local, train, val)
    local_s = time.perf_counter() - t

    t = time.perf_counter()
    if args.address:
        ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=args.actors, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    startup = time.perf_counter() - t
    on_ray = model(args)
    try:
        t = time.perf_counter()
        fit_probe_on_ray(on_ray, train, val, actors=args.actors)
        ray_s = time.perf_counter() - t
    finally:
        ray.shutdown()

    print(f"local: {n / local_s:7.1f} images/s ({local_s:.1f} s, torch {args.threads} threads)")
    print(f"ray:   {n / ray_s:7.1f} images/s ({ray_s:.1f} s, {args.actors} actor(s) of 1 CPU; "
          "reading pass, actor start-up and backbone building included)")
    print(f"ray / local: {local_s / ray_s:.2f}")
    print(f"ray start-up (ray.init, not in the figure above): {startup:.1f} s")
    same = (local.layer_name_ == on_ray.layer_name_ and local.probe_.hp == on_ray.probe_.hp
            and local.training_info_["data_digest"] == on_ray.training_info_["data_digest"]
            and local.fit_used_ == on_ray.fit_used_)
    print(f"same images, layer ({local.layer_name_}), hyperparameter and data digest: {same}; "
          f"largest threshold difference {np.max(np.abs(local.thresholds_ - on_ray.thresholds_)):.2e}")


if __name__ == "__main__":
    main()
