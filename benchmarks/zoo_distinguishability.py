"""Is every source of the built-in world distinguishable? A small CNN, closed set.

Trains a small CNN (4 conv layers, random crops/flips of the full 32×32 images, no resizing) on
the train split of a protocol's known sources and prints its closed-set accuracy on their test
split, per source and overall. The world issue asks for ≥ 95 % on protocol ``all``;
``--protocol every`` uses every source of the benchmark (real + all generators).

    python benchmarks/zoo_distinguishability.py --bench genprint-demo/bench --protocol all
    python benchmarks/zoo_distinguishability.py --per-class 300        # builds a benchmark first
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genprint.io.batches import load_items
from genprint.world.bench import BenchSettings, build_bench
from genprint.world.protocols import protocol_view


def small_cnn(n_classes: int) -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    return nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64),
                         *block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, n_classes))


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bench", type=Path, help="existing benchmark folder")
    ap.add_argument("--per-class", type=int, default=300, help="when building a benchmark")
    ap.add_argument("--protocol", default="all", help="protocol name, or 'every' for all sources")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    bench = args.bench
    if bench is None:
        bench = Path(tempfile.mkdtemp()) / "bench"
        t0 = time.perf_counter()
        build_bench(bench, BenchSettings(per_class=args.per_class, seed=args.seed))
        print(f"built {bench} in {time.perf_counter() - t0:.0f} s")
    view = protocol_view(bench, "all")
    if args.protocol == "every":
        known = sorted({i.source for i in view.train + view.test if i.source})
        train = [i for i in view.train if i.source in known]
        test = [i for i in view.test if i.source in known and i.split == "test"]
        # unknown sources only have test rows in a protocol view: split them 60/40 here
        for src in view.protocol.unknown:
            rows = [i for i in view.test if i.source == src]
            cut = int(len(rows) * 0.6)
            train += rows[:cut]
            test += rows[cut:]
        known = sorted({i.source for i in train})
    else:
        view = protocol_view(bench, args.protocol)
        known = list(view.protocol.known)
        train = view.train
        test = [i for i in view.test if i.source in known]
    index = {s: k for k, s in enumerate(known)}
    tr_imgs, tr_idx, _ = load_items([i.path for i in train])
    te_imgs, te_idx, _ = load_items([i.path for i in test])
    x_tr, y_tr = to_tensor(tr_imgs), torch.tensor([index[train[k].source] for k in tr_idx])
    x_te, y_te = to_tensor(te_imgs), torch.tensor([index[test[k].source] for k in te_idx])
    model = small_cnn(len(known))
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    steps = args.epochs * (len(x_tr) // 64 + 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=steps)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x_tr), (64,), generator=g)
        xb = x_tr[idx]
        flip = torch.rand(64, generator=g) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        loss = nn.functional.cross_entropy(model(xb), y_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_te[k : k + 256]).argmax(1) for k in range(0, len(x_te), 256)])
    acc = float((pred == y_te).float().mean())
    print(f"trained on {len(x_tr)} images of {len(known)} sources in "
          f"{time.perf_counter() - t0:.0f} s ({steps} steps)")
    for s, k in index.items():
        m = y_te == k
        print(f"  {s:18s} test accuracy {float((pred[m] == k).float().mean()):.3f} (n={int(m.sum())})")
    print(f"closed-set accuracy ({args.protocol}): {acc:.4f} on {len(x_te)} test images")


if __name__ == "__main__":
    main()
