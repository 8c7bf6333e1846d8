"""What running two jobs on two processes gains on this machine, without bitsback.

    python bench/machine_scaling.py [--repeats 2]

Times one job on one process, then two identical jobs on two processes (spawned and warmed
first), for a pure-Python loop and for a single-threaded float32 GEMM loop shaped like the
codec's network layers (64 x 500 by 500 x 500). Prints the throughput gain 2 * t1 / t2 of
each run: the ceiling against which the codec's two-worker efficiency (docs/SCALING.md)
should be read.
"""
import argparse
import multiprocessing as mp
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def python_job(_):
    s = 0
    for i in range(6_000_000):
        s += i * i % 7
    return s


def gemm_job(_):
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((64, 500), dtype=np.float32)
    w = rng.random((500, 500), dtype=np.float32)
    for _ in range(6000):
        a = np.maximum(a @ w * 0.001, 0) + 0.1
    return float(a.sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    for name, job in (("python", python_job), ("gemm", gemm_job)):
        for _ in range(a.repeats):
            with ctx.Pool(2) as pool:
                pool.map(job, [0, 0])                      # warm both processes
                t = time.perf_counter()
                pool.map(job, [0])
                t1 = time.perf_counter() - t
                t = time.perf_counter()
                pool.map(job, [0, 0])
                t2 = time.perf_counter() - t
            print(f"{name}: one job {t1:.2f} s, two jobs on two processes {t2:.2f} s: gain {2 * t1 / t2:.2f}x", flush=True)


if __name__ == "__main__":
    main()
