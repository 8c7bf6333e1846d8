"""Time two models (bundled names or model folders) against each other in one process.

Both compress and decompress the same images, alternating A/B and B/A from one repeat to
the next so that the machine's drift falls on both alike; prints each file's size and the
paired median of the time ratios (A's time / B's time: > 1 means B is faster).

    python bench/ab_models.py OLD_DIR mnist-binary --data data/t10k-images-idx3-ubyte.gz \\
        --workers 1 --lanes 24 --repeats 6

A model from an earlier commit: ``git archive COMMIT src/bitsback/zoo/mnist-binary | tar -x -C /tmp/old``
(then ``/tmp/old/src/bitsback/zoo/mnist-binary``).
"""
import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from alternate import alternating_times

import bitsback
from bitsback import datasets

DATA = Path(__file__).resolve().parents[1] / "data" / "t10k-images-idx3-ubyte.gz"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--lanes", type=int, default=None, help="the same lane count for both (default: each model's own)")
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args(argv)
    codecs = {k: bitsback.load(m, workers=args.workers, lanes=args.lanes) for k, m in (("A", args.a), ("B", args.b))}
    x = datasets.load(args.data)
    if codecs["A"].model.levels == 2:
        x = datasets.binarize(x)
    blobs = {}
    for k, c in codecs.items():
        blobs[k] = c.compress(x)
        if not np.array_equal(c.decompress(blobs[k]), x):
            raise SystemExit(f"model {k}: round trip failed")
        print(f"{k}: {len(blobs[k])} B, {len(blobs[k]) * 8 / x.size:.6f} bits/dim, {sum(l for _, l in c.plan(len(x)))} lanes")
    times = alternating_times(codecs, x, blobs, args.repeats)
    for what in ("compress", "decompress"):
        a, b = times["A"][what], times["B"][what]
        ratio = statistics.median(p / q for p, q in zip(a, b))
        print(f"{what}: A median {statistics.median(a):.3f} s, B median {statistics.median(b):.3f} s, "
              f"paired median A/B {ratio:.3f} ({len(x) / statistics.median(b):.0f} images/s for B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
