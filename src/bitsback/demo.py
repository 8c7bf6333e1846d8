"""`make demo`: compress the shipped MNIST test images with both bundled models, decompress
in a fresh pass, verify bit-exactness, and print rates and speeds beside classical codecs.

Usage: python -m bitsback.demo [IMAGES] [-n N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "data" / "t10k-images-idx3-ubyte.gz"


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    import bitsback
    from bitsback import baselines, datasets

    p = argparse.ArgumentParser(prog="python -m bitsback.demo")
    p.add_argument("images", nargs="?", default=str(DEFAULT_IMAGES))
    p.add_argument("-n", type=int, default=None, help="use only the first N images")
    a = p.parse_args(argv)
    grey = datasets.load(a.images)[: a.n]
    sets = {"binary": (datasets.binarize(grey), ("mnist-binary", "mnist-binary-mlp")),
            "grey": (grey, ("mnist-grey", "mnist-grey-mlp"))}
    print(f"{len(grey)} MNIST test images from {a.images} (bitsback timed after a 100-image warm-up call)\n")
    print(f"{'data':<8} {'codec':<26} {'bits/dim':>9} {'compress img/s':>15} {'decompress img/s':>17}")
    for label, (x, models) in sets.items():
        for model in models:
            codec, fresh = bitsback.load(model), bitsback.load(model)
            fresh.decompress(codec.compress(x[:100]))  # warm-up: compiled coder and sessions load on first use
            blob, tc = _timed(codec.compress, x)
            back, td = _timed(fresh.decompress, blob)
            if not np.array_equal(back, x):
                print(f"{model}: round trip FAILED", file=sys.stderr)
                return 1
            print(f"{label:<8} {'bitsback ' + model:<26} {8 * len(blob) / x.size:>9.4f} {len(x) / tc:>15.0f} {len(x) / td:>17.0f}   exact")
        for row in baselines.measure(x):
            print(f"{label:<8} {row['codec']:<26} {row['bits_per_dim']:>9.4f} {row['images_per_second']:>15.0f} {'':>17}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
