"""Benchmark: ``genprint serve`` throughput over HTTP against the local ``attribute`` path.

Writes ``--n`` 32×32 PNGs to a temporary folder, starts the server (uvicorn, in this process, on
a free localhost port) and times, on the same files:

* local: ``Attributor.attribute(paths)`` (files read from disk, the CLI's path);
* HTTP: the files uploaded in requests of ``--per-request`` files, ``--clients`` at a time,
  each answered with the same rows (the bytes are read into memory first, so disk time is not
  counted for HTTP).

It prints images/s for each and the ratio HTTP / local, measured in the same run, and checks
that both gave the same labels. The model is ``--model`` (any saved attributor whose inputs are
32×32 or smaller) or, by default, an untrained ``metric`` network of the default architecture
(throughput does not depend on the weights).

    python benchmarks/serve_throughput.py [--model DIR] [--n 2000] [--per-request 64] [--clients 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from metric_throughput import smooth, untrained_model
from PIL import Image

import genprint
from genprint.serve import ServeLimits, create_app
from genprint.serve.app import serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a saved attributor")
    parser.add_argument("--n", type=int, default=2000, help="number of 32×32 PNGs")
    parser.add_argument("--per-request", type=int, default=64, help="files per request")
    parser.add_argument("--clients", type=int, default=2, help="requests in flight at once")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = genprint.load(args.model) if args.model else untrained_model()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.n):
            p = Path(tmp) / f"{i:05d}.png"
            Image.fromarray(smooth(rng, 32)).save(p)
            paths.append(p)
        blobs = [(p.name, p.read_bytes()) for p in paths]

        model.attribute(paths[:64])  # warm-up
        t = time.perf_counter()
        local = model.attribute(paths)
        local_s = time.perf_counter() - t

        app = create_app(model, ServeLimits(max_files=args.per_request))
        requests = [blobs[i : i + args.per_request] for i in range(0, args.n, args.per_request)]
        with serving(app) as base, httpx.Client() as client:
            url = f"{base}/attribute"

            def post(files: list[tuple[str, bytes]]) -> list[dict]:
                answer = client.post(url, files=[("files", f) for f in files], timeout=600)
                answer.raise_for_status()
                return answer.json()["results"]

            post(requests[0])  # warm-up
            t = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                answers = [row for rows in pool.map(post, requests) for row in rows]
            http_s = time.perf_counter() - t

    same = sum(a["label"] == r.label for a, r in zip(answers, local, strict=True))
    local_rate, http_rate = args.n / local_s, args.n / http_s
    print(f"model: {model.method}, {args.n} 32×32 PNGs, torch threads {torch.get_num_threads()}")
    print(f"local attribute (files):             {local_rate:8.0f} img/s")
    print(f"HTTP, {args.per_request} files/request, {args.clients} client(s): "
          f"{http_rate:8.0f} img/s  (ratio HTTP / local {http_rate / local_rate:.2f})")
    print(f"same label for {same} of {args.n} images")


if __name__ == "__main__":
    main()
