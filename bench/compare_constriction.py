"""Our coder vs constriction on the same data, in one process, end to end.

Bernoulli: our logits -> quantised Bernoulli vs constriction's Bernoulli with per-symbol p.
Logistic: our 256-level discretised logistic (mean, log_scale) vs constriction's
QuantizedGaussian over 0..255 (mean, std). Both from parameter arrays to bytes and back;
constriction gets its parameters precomputed in its own form (untimed), so the comparison
favours it. Timing = median of REPS repetitions. Last stdout line: one JSON object with
ratio = constriction time / our time.

    .venv/bin/python bench/compare_constriction.py [--symbols 1000000] [--lanes 16] [--reps 7]
"""
import argparse
import datetime
import json
import os
import time

import constriction
import numpy as np

from bitsback import cdf
from bitsback._rans import Messages


def median_time(fn, reps):
    ts, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=10**6)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--prec", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="lane-parallel threads for our coder")
    a = ap.parse_args()
    cdf.set_threads(a.threads)
    n, D = a.lanes, a.symbols // a.lanes
    N = n * D
    rng = np.random.default_rng(0)
    report = {}
    load0 = os.getloadavg()

    # ---- Bernoulli ----
    logits = (rng.normal(size=(n, D)) * 3).astype(np.float32)
    p1 = (1.0 / (1.0 + np.exp(-logits.astype(np.float64))))
    x = (rng.random((n, D)) < p1).astype(np.uint8)
    p1_flat = p1.ravel().astype(np.float64)
    x32 = x.ravel().astype(np.int32)
    fam = constriction.stream.model.Bernoulli(perfect=False)

    def ours_enc():
        m = Messages(n, 1)
        cdf.bernoulli.push(m, logits, x, a.prec)
        return m.to_bytes()

    def ours_dec(blob):
        return cdf.bernoulli.pop(Messages.from_bytes(blob, 1), logits, a.prec)

    def c_enc():
        c = constriction.stream.stack.AnsCoder()
        c.encode_reverse(x32, fam, p1_flat)
        return c.get_compressed().tobytes()

    def c_dec(blob):
        c = constriction.stream.stack.AnsCoder(np.frombuffer(blob, dtype=np.uint32).copy())
        return c.decode(fam, p1_flat)

    report["bernoulli"] = compare(ours_enc, ours_dec, c_enc, c_dec, x, x32, N, a.reps)

    # ---- logistic (256 levels) vs QuantizedGaussian ----
    mean = rng.uniform(0, 255, (n, D)).astype(np.float32)
    log_scale = rng.uniform(-1, 3, (n, D)).astype(np.float32)
    xl = np.clip(np.round(mean + rng.logistic(size=(n, D)) * np.exp(log_scale)), 0, 255).astype(np.uint8)
    means = mean.ravel().astype(np.float64)
    stds = (np.exp(log_scale) * np.pi / np.sqrt(3)).ravel().astype(np.float64)   # same variance
    xl32 = xl.ravel().astype(np.int32)
    gfam = constriction.stream.model.QuantizedGaussian(0, 255)

    def ours_enc_l():
        m = Messages(n, 1)
        cdf.logistic.push(m, mean, log_scale, xl, a.prec)
        return m.to_bytes()

    def ours_dec_l(blob):
        return cdf.logistic.pop(Messages.from_bytes(blob, 1), mean, log_scale, a.prec)

    def c_enc_l():
        c = constriction.stream.stack.AnsCoder()
        c.encode_reverse(xl32, gfam, means, stds)
        return c.get_compressed().tobytes()

    def c_dec_l(blob):
        c = constriction.stream.stack.AnsCoder(np.frombuffer(blob, dtype=np.uint32).copy())
        return c.decode(gfam, means, stds)

    report["logistic"] = compare(ours_enc_l, ours_dec_l, c_enc_l, c_dec_l, xl, xl32, N, a.reps)
    # wall-clock ratios on a shared machine: say how loaded it was (not part of the JSON)
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')} loadavg at start {load0}, "
          f"at end {os.getloadavg()}, {os.cpu_count()} CPUs")
    print(json.dumps(report))


def compare(ours_enc, ours_dec, c_enc, c_dec, x, x32, N, reps):
    """Interleave the four timings rep by rep so that load from other processes on this
    shared machine hits both coders alike; report medians."""
    ours_dec(ours_enc())                       # compile / warm up
    c_dec(c_enc())
    T = {"oe": [], "od": [], "ce": [], "cd": []}
    for _ in range(reps):
        t, blob = median_time(ours_enc, 1); T["oe"].append(t)
        t, cblob = median_time(c_enc, 1); T["ce"].append(t)
        t, y = median_time(lambda: ours_dec(blob), 1); T["od"].append(t)
        t, cy = median_time(lambda: c_dec(cblob), 1); T["cd"].append(t)
        assert np.array_equal(y, x), "our round trip failed"
        assert np.array_equal(cy, x32), "constriction round trip failed"
    te, td, ce, cd = (float(np.median(T[k])) for k in ("oe", "od", "ce", "cd"))
    r = {"encode_ratio": round(ce / te, 3), "decode_ratio": round(cd / td, 3),
         "ns_per_symbol_encode": round(te / N * 1e9, 2), "ns_per_symbol_decode": round(td / N * 1e9, 2),
         "constriction_ns_per_symbol_encode": round(ce / N * 1e9, 2),
         "constriction_ns_per_symbol_decode": round(cd / N * 1e9, 2),
         "bits_per_symbol": round(len(blob) * 8 / N, 4), "constriction_bits_per_symbol": round(len(cblob) * 8 / N, 4)}
    print(json.dumps(r))
    return r


if __name__ == "__main__":
    main()
