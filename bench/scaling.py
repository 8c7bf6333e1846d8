"""Scaling measurements for docs/SCALING.md.

    python bench/scaling.py ../shared/data/mnist/train-images-idx3-ubyte.gz [--model mnist-binary]
        [--repeats 3] [--ray] [--range-lanes 128] [--json]

Measures, on one dataset file, in fresh processes of the `bitsback` command (so every
figure includes what a user pays: start-up, reading, writing):
  * compress and decompress throughput with 1 and 2 worker processes of one thread each
    (parallel efficiency = t1 / t2), and that both write identical bytes;
  * optionally the Ray engine on a local cluster (same bytes);
  * a 100-image range decode against a full decode, through the command (start-up of
    Python, numba and onnxruntime included) and in one warm process (``engine.decompress``
    with the codec already loaded: what a service embedding the codec pays), for the
    default file and for a file made with more, shorter lanes (--range-lanes);
  * compress / decompress throughput with 1 and 2 workers inside one process, after a
    warm-up (no interpreter start-up);
  * the shard/lane trade-off: bits/dim, shards and header bytes for several lane counts.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bitsback(*args):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bitsback", *args, "-q", "--json"], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"bitsback {' '.join(args)} failed:\n{p.stderr}")
    return dt, json.loads(p.stdout.strip().splitlines()[-1])


def median_time(args, repeats):
    times, res = [], None
    for _ in range(repeats):
        dt, res = bitsback(*args)
        times.append(dt)
    return statistics.median(times), times, res


def in_process(path, repeats):
    """Full vs 100-image range decode by one loaded codec (``Codec.decompress(blob,
    start=, stop=)``, one worker): what a service that keeps the codec pays per request."""
    from bitsback import container
    from bitsback.codec import Codec

    blob = Path(path).read_bytes()
    header, _ = container.unpack(blob)
    codec = Codec(header["model"]["name"], workers=1)
    codec.decompress(blob, start=0, stop=1)  # warm-up: numba's compiled functions
    res = {}
    for name, rng in (("full", (None, None)), ("range_100", (30000, 30100))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            codec.decompress(blob, start=rng[0], stop=rng[1])
            times.append(time.perf_counter() - t0)
        res[name] = {"seconds": statistics.median(times), "runs": times}
    res["share_of_full_decode"] = res["range_100"]["seconds"] / res["full"]["seconds"]
    return res


def in_process_throughput(data, model, binarize, repeats):
    """engine.compress / decompress with 1 and 2 workers in this process, after a warm-up,
    alternating: the workers' throughput without the interpreter's start-up (imports, numba's cache,
    onnxruntime sessions of the parent), which a CLI run pays once whatever its size."""
    from bitsback import engine

    res, runs = {}, {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        r = engine.compress(data, d / "warm.bba", model=model, workers=1, binarize=binarize, force=True)
        engine.decompress(d / "warm.bba", None, workers=1)
        # 1 and 2 workers alternate within each repeat, so that the machine's drift (large
        # on a shared VM) falls on both alike instead of on whichever ran later
        for _ in range(repeats):
            for kind in ("compress", "decompress"):
                for w in (1, 2):
                    t0 = time.perf_counter()
                    if kind == "compress":
                        engine.compress(data, d / f"w{w}.bba", model=model, workers=w, binarize=binarize, force=True)
                    else:
                        engine.decompress(d / f"w{w}.bba", None, workers=w)
                    runs.setdefault(f"{kind}_w{w}", []).append(time.perf_counter() - t0)
        for key, times in runs.items():
            t = statistics.median(times)
            res[key] = {"seconds": t, "runs": times, "images_per_second": r["n_images"] / t}
        res["efficiency_compress"] = res["compress_w1"]["seconds"] / res["compress_w2"]["seconds"]
        res["efficiency_decompress"] = res["decompress_w1"]["seconds"] / res["decompress_w2"]["seconds"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--model", default="mnist-binary")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ray", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--range-lanes", type=int, default=128, help="lanes of the random-access file")
    a = ap.parse_args(argv)
    binarize = ["--binarize"] if "binary" in a.model else []
    out = {"data": a.data, "model": a.model, "cores": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        runs, last = {}, {}
        for _ in range(a.repeats):  # 1 and 2 workers alternate (see in_process_throughput)
            for w in (1, 2):
                dt, last[f"compress_w{w}"] = bitsback("compress", a.data, "-o", str(d / f"w{w}.bba"), "--model", a.model,
                                                      "--workers", str(w), "--force", *binarize)
                runs.setdefault(f"compress_w{w}", []).append(dt)
            for w in (1, 2):
                dt, last[f"decompress_w{w}"] = bitsback("decompress", str(d / f"w{w}.bba"), "-o", str(d / f"w{w}.npy"),
                                                        "--workers", str(w), "--force")
                runs.setdefault(f"decompress_w{w}", []).append(dt)
        for key, times in runs.items():
            t, res = statistics.median(times), last[key]
            out[key] = {"seconds": t, "runs": times, "images_per_second": res["n_images"] / t}
            if key.startswith("compress"):
                out[key].update(bits_per_dim=res["bits_per_dim"], lanes=res["lanes"], shards=res["shards"])
        out["identical_bytes_w1_w2"] = (d / "w1.bba").read_bytes() == (d / "w2.bba").read_bytes()
        out["efficiency_compress"] = out["compress_w1"]["seconds"] / out["compress_w2"]["seconds"]
        out["efficiency_decompress"] = out["decompress_w1"]["seconds"] / out["decompress_w2"]["seconds"]
        t_full = out["decompress_w1"]["seconds"]
        t_range, times, _ = median_time(["decompress", str(d / "w1.bba"), "-o", str(d / "r.npy"), "--range", "30000:30100", "--workers", "1", "--force"], a.repeats)
        out["range_100"] = {"seconds": t_range, "runs": times, "share_of_full_decode": t_range / t_full}
        out["in_process"] = in_process(d / "w1.bba", a.repeats)
        out["in_process_throughput"] = in_process_throughput(a.data, a.model, bool(binarize), a.repeats)
        # A file made for random access: more, shorter lanes (a range decode decodes whole lanes).
        _, res = bitsback("compress", a.data, "-o", str(d / "ra.bba"), "--model", a.model, "--lanes", str(a.range_lanes),
                          "--force", *binarize)
        out["random_access_file"] = {"lanes": res["lanes"], "bits_per_dim": res["bits_per_dim"], "bytes": res["bytes"],
                                     "in_process": in_process(d / "ra.bba", a.repeats)}
        if a.ray:
            t, times, res = median_time(["compress", a.data, "-o", str(d / "ray.bba"), "--model", a.model, "--engine", "ray", "--force", *binarize], 1)
            out["ray_compress"] = {"seconds": t, "images_per_second": res["n_images"] / t,
                                   "identical_bytes": (d / "ray.bba").read_bytes() == (d / "w1.bba").read_bytes()}
        sweep = []
        for lanes in (1, 8, 32, 128, 512):
            _, res = bitsback("compress", a.data, "-o", str(d / "l.bba"), "--model", a.model, "--lanes", str(lanes), "--force", *binarize)
            head = struct.unpack_from("<I", (d / "l.bba").read_bytes(), 8)[0]
            sweep.append({"lanes": res["lanes"], "shards": res["shards"], "bits_per_dim": res["bits_per_dim"], "bytes": res["bytes"],
                          "header_bytes": head})
        out["lane_sweep"] = sweep
    if not a.json:
        for k, v in out.items():
            print(f"{k}: {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
