"""Benchmark: peak memory of a ``probe`` fit, in two passes over the files against every image
decoded at once.

Writes ``--n`` random ``--side``×``--side`` PNGs of three toy sources to a temporary folder and
fits the same ``probe`` on them twice, each in a fresh process so that the peaks do not mix:

* ``two passes``: :func:`genprint.methods.fitting.fit_on_items`, what ``genprint train probe``
  runs (shapes and fingerprints first, then features a few batches of decoded images at a
  time; :mod:`genprint.methods.two_pass`), keeping no decoded pixels between the passes
  (``keep_decoded_bytes=0``: every image decoded twice, the least memory);
* ``two passes, kept``: the same with the default budget of decoded pixels kept from the
  first pass (1 GiB: data up to that size is decoded once);
* ``all decoded``: every image read with :func:`genprint.io.batches.load_items`, then
  :meth:`ProbeAttributor.fit <genprint.methods.probe.ProbeAttributor.fit>` on the arrays (the
  Python API on arrays, and what ``train probe`` did before the two passes).

It prints each process's peak resident memory (``ru_maxrss``), the ratio, the seconds and
whether the two models agree (same images used, layer, thresholds within 1e-5). The backbone
is genprint's own small forensic CNN (``--backbone`` for another), features uncached.

    python benchmarks/probe_fit_memory.py [--n 1500] [--side 256] [--backbone forensic-cnn]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(folder: Path, n: int, side: int) -> None:
    """``n`` PNGs of three toy sources (``folder/SOURCE/k.png``), noise of three strengths."""
    rng = np.random.default_rng(0)
    for k in range(n):
        src = ("alpha", "beta", "gamma")[k % 3]
        (folder / src).mkdir(parents=True, exist_ok=True)
        base = rng.integers(40, 216, (1, 1, 3))
        noise = rng.normal(0, (4, 8, 16)[k % 3], (side, side, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(
            folder / src / f"{k:05d}.png")


def fit(folder: str, way: str, backbone: str) -> dict[str, object]:
    """Fit in this process; what happened, and the peak memory."""
    import torch

    from genprint.io.batches import load_items
    from genprint.io.sources import Item
    from genprint.methods.fitting import fit_on_items
    from genprint.methods.probe import ProbeAttributor

    torch.set_num_threads(1)
    paths = sorted(Path(folder).rglob("*.png"))
    items = [Item(p, p.parent.name, "val" if k % 5 == 0 else "train")
             for k, p in enumerate(paths)]
    train = [i for i in items if i.split == "train"]
    val = [i for i in items if i.split == "val"]
    model = ProbeAttributor(backbone=backbone, cache=False, grid=[1.0])
    t = time.perf_counter()
    if way == "two passes":
        fit_on_items(model, train, val, keep_decoded_bytes=0)
    elif way == "two passes, kept":
        fit_on_items(model, train, val)
    else:
        tr, _, _ = load_items([i.path for i in train])
        va, _, _ = load_items([i.path for i in val])
        model.fit(tr, [i.source for i in train], va, [i.source for i in val])
    return {"seconds": time.perf_counter() - t,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "used": model.fit_used_, "layer": model.layer_name_,
            "thresholds": model.thresholds_.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--backbone", default="forensic-cnn")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one fit, in its own process
        print(json.dumps(fit(args.child[0], args.child[1], args.backbone)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), args.n, args.side)
        decoded_mb = args.n * args.side * args.side * 3 / 2**20
        print(f"{args.n} PNGs of {args.side}×{args.side} ({decoded_mb:.0f} MB decoded), "
              f"backbone {args.backbone}")
        out = {}
        for way in ("two passes", "two passes, kept", "all decoded"):
            run = subprocess.run([sys.executable, __file__, "--backbone", args.backbone,
                                  "--child", tmp, way], capture_output=True, text=True,
                                 check=True)
            out[way] = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{way:17s} peak {out[way]['peak_mb']:7.0f} MB, {out[way]['seconds']:.1f} s")
    b = out["all decoded"]
    for way in ("two passes", "two passes, kept"):
        a = out[way]
        same = (a["used"] == b["used"] and a["layer"] == b["layer"]
                and np.allclose(a["thresholds"], b["thresholds"], atol=1e-5))
        print(f"{way} / all decoded: peak memory {a['peak_mb'] / b['peak_mb']:.2f}, time "
              f"{a['seconds'] / b['seconds']:.2f}; same images, layer and thresholds: {same}")


if __name__ == "__main__":
    main()
