"""Parallel efficiency of the Python API (1 against 2 workers) at several lane counts.

    python bench/workers_efficiency.py DATA [--model mnist-binary] [--lanes 194,64] [--repeats 4]

One process, codecs loaded and warmed up first; for each lane count, compress and decompress
all images of DATA with ``workers=1`` and ``workers=2`` (threads), the two alternating from
one repeat to the next. Prints medians, the efficiency t1 / t2 of the medians and the median
of the paired ratios.
"""
import argparse
import statistics

from alternate import alternating_times

import bitsback
from bitsback import datasets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--model", default="mnist-binary")
    ap.add_argument("--lanes", default="0", help="comma-separated lane counts; 0: the codec's choice")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args(argv)
    x = datasets.load(args.data)
    if bitsback.load(args.model).model.levels == 2:
        x = datasets.binarize(x)
    for lanes in (int(v) or None for v in args.lanes.split(",")):
        codecs = {w: bitsback.load(args.model, workers=w, lanes=lanes) for w in (1, 2)}
        blob = codecs[1].compress(x)
        codecs[1].decompress(blob)
        times = alternating_times(codecs, x, {1: blob, 2: blob}, args.repeats)
        line = [f"lanes {sum(l for _, l in codecs[1].plan(len(x)))}, {len(blob) * 8 / x.size:.5f} bits/dim"]
        for what in ("compress", "decompress"):
            t1, t2 = times[1][what], times[2][what]
            paired = statistics.median(a / b for a, b in zip(t1, t2))
            line.append(f"{what} w1 {statistics.median(t1):.2f} s, w2 {statistics.median(t2):.2f} s, "
                        f"efficiency {statistics.median(t1) / statistics.median(t2):.2f} (paired {paired:.2f})")
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
