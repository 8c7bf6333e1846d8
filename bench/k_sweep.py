"""Rate of the real file against K (Algorithm 2's Adam steps), all images, one process.

    python bench/k_sweep.py MODEL K_MAX N [SEED]     # e.g. mnist-binary-mlp 10 10000

Compresses the first N shipped MNIST test images (binarized for binary models) with
K = 0..K_MAX and prints one JSON line per K: file bytes, bits/dim and the CPU seconds of
the compress call (time.process_time: robust to other load on the machine, but it counts
both cores when the shards run on two threads; here workers=1).
"""
import json
import sys
import time

import bitsback
from bitsback import datasets

model, kmax, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0     # the file's seed (initial bits, K-step noise)
x = datasets.load("data/t10k-images-idx3-ubyte.gz")[:n]
if "binary" in model:
    x = datasets.binarize(x)
for k in range(kmax + 1):
    c = bitsback.load(model, device="cpu", k_steps=k, workers=1, seed=seed)
    t = time.process_time()
    blob = c.compress(x)
    dt = time.process_time() - t
    print(json.dumps({"model": model, "k": k, "n": n, "seed": seed, "bytes": len(blob), "bpd": 8 * len(blob) / x.size, "cpu_s": dt}), flush=True)
