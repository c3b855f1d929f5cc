"""How small images are fed to a ``probe`` backbone, compared on **validation data only**.

A backbone whose native input is 224×224 meets the 32×32 images of the built-in world. Images are
never resized; the choices are a centre crop at the largest valid input that fits (``none``) or
padding up to a larger input by copying pixels (``wrap``: the image repeated periodically;
``reflect``: mirrored at its borders). For each backbone and feed, the probe (one head and
score, default logreg + msp) is fitted on the protocol's training images with its layer and
hyperparameter chosen on validation, and its validation accuracy and leave-one-source-out
AUROC (:mod:`genprint.methods.probe_select`) are printed. Test images are not read.

    python benchmarks/probe_feeds.py --bench BENCH --protocol all \\
        --feed efficientnet-lite0:none efficientnet-lite0:reflect:64 dinov2-s14-onnx:wrap:224
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genprint.io.batches import load_items
from genprint.methods.probe import ProbeAttributor
from genprint.methods.probe_heads import HEADS, SCORES
from genprint.world.protocols import protocol_view

DEFAULT_FEEDS = (
    "efficientnet-lite0:none", "efficientnet-lite0:wrap:64", "efficientnet-lite0:reflect:64",
    "efficientnet-lite0:wrap:128", "efficientnet-lite0:wrap:224",
    "dinov2-s14-onnx:none", "dinov2-s14-onnx:wrap:42", "dinov2-s14-onnx:reflect:42",
    "dinov2-s14-onnx:wrap:56", "dinov2-s14-onnx:wrap:112", "dinov2-s14-onnx:reflect:112",
    "dinov2-s14-onnx:wrap:224",
)


def parse_feed(text: str) -> tuple[str, str, int | None]:
    """``BACKBONE:PAD[:SIZE]`` -> (backbone, pad, input size or None)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected BACKBONE:PAD[:SIZE], got {text!r}")
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--protocol", default="all")
    parser.add_argument("--feed", nargs="+", type=parse_feed,
                        default=[parse_feed(f) for f in DEFAULT_FEEDS])
    parser.add_argument("--head", default="logreg", choices=HEADS)
    parser.add_argument("--score", default="msp", choices=SCORES)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    view = protocol_view(args.bench, args.protocol)
    tr_imgs, tr_kept, _ = load_items([i.path for i in view.train], workers=1)
    va_imgs, va_kept, _ = load_items([i.path for i in view.val], workers=1)
    tr_lab = [view.train[k].source for k in tr_kept]
    va_lab = [view.val[k].source for k in va_kept]
    print(f"validation only: {len(tr_lab)} train / {len(va_lab)} val images, "
          f"{args.head} + {args.score}")
    print("| backbone | feed | input | layer | val acc | val LOSO AUROC | mean | extract s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, pad, size in args.feed:
        model = ProbeAttributor(backbone=name, pad=pad, input_size=size, head=args.head,
                                score=args.score, cache_dir=args.cache_dir)
        sides = min(min(i.shape[:2]) for i in (*tr_imgs, *va_imgs))
        backbone = model.build_backbone(sides)
        t0 = time.perf_counter()
        train_feats, val_feats = model.extract(tr_imgs), model.extract(va_imgs)
        seconds = time.perf_counter() - t0
        model.fit_features(train_feats, tr_lab, val_feats, va_lab)
        row = model.layer_table_[model.layer_index_]
        print(f"| {name} | {pad} | {backbone.preprocessing.input_size} | {row['layer']} | "
              f"{row['val_accuracy']:.3f} | {row['val_loso_auroc']:.3f} | "
              f"{row['criterion']:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
