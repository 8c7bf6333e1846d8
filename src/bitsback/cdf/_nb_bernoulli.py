"""numba kernels of the Bernoulli family (bernoulli.py is the wrapper; see its doc).

Imported only by the JIT backend (_kernels.py) and the ahead-of-time build (_aot_build.py).
"""
import numpy as np
from numba import njit, prange

from ._exp import fexp
from ._nbcoder import advance_x, push_x


@njit(cache=True, inline="always", error_model="numpy")
def arg(logit):
    l = np.float64(logit)
    return 0.0 if l != l else l   # NaN -> fair coin


@njit(cache=True, inline="always", error_model="numpy")
def quant(e, prec):
    """freq0 from e = fexp(logit)."""
    p0 = 1.0 / (1.0 + e)
    one = np.float64(np.int64(1) << np.int64(prec))
    f = np.floor(p0 * one + 0.5)
    f = min(max(f, 1.0), one - 1.0)
    # 1 <= f < 2^31: the int32 conversion vectorises (AVX2 has no double -> int64)
    return np.uint64(np.int32(f))


@njit(cache=True, inline="always", error_model="numpy")
def freq0(logit, prec):
    """Quantised frequency of symbol 0 (uint64) for one float logit."""
    return quant(fexp(arg(logit)), prec)


@njit(cache=True, inline="always", error_model="numpy")
def block_freq0(logits, i, j0, w, prec, e, r):
    """r[t] = freq0(logits[i, j0 + t]) for t < w, in two short passes (exp, then the
    divide and rounding) so that the core overlaps iterations (see logistic.block_starts);
    e is float64 scratch of length >= w."""
    for t in range(w):
        e[t] = fexp(arg(logits[i, j0 + t]))
    for t in range(w):
        r[t] = quant(e[t], prec)


BLOCK = 256   # columns per block: phase A (vectorisable CDF maths) then phase B (coding)


@njit(cache=True, nogil=True, error_model="numpy")
def push(heads, addr, logits, x, prec, lane_lo, lane_hi):
    n, D = logits.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    f0s = np.empty((lane_hi - lane_lo, BLOCK), np.uint64)
    e = np.empty(BLOCK)
    j1 = D
    while j1 > 0:
        j0 = max(j1 - BLOCK, 0)
        for i in range(lane_lo, lane_hi):
            block_freq0(logits, i, j0, j1 - j0, p, e, f0s[i - lane_lo])
        for t in range(j1 - j0 - 1, -1, -1):
            for i in range(lane_lo, lane_hi):
                f0 = f0s[i - lane_lo, t]
                bit = x[i, j0 + t] != 0    # branch-free select: the bits are unpredictable
                heads[i] = push_x(heads[i], addr, i, f0 if bit else np.uint64(0),
                                  one - f0 if bit else f0, p)
        j1 = j0


@njit(cache=True, nogil=True, error_model="numpy")
def pop(heads, addr, logits, prec, out, lane_lo, lane_hi):
    n, D = logits.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    mask = one - np.uint64(1)
    f0s = np.empty((lane_hi - lane_lo, BLOCK), np.uint64)
    e = np.empty(BLOCK)
    for j0 in range(0, D, BLOCK):
        j1 = min(j0 + BLOCK, D)
        for i in range(lane_lo, lane_hi):
            block_freq0(logits, i, j0, j1 - j0, p, e, f0s[i - lane_lo])
        for t in range(j1 - j0):
            for i in range(lane_lo, lane_hi):
                f0 = f0s[i - lane_lo, t]
                x = heads[i]
                bit = (x & mask) >= f0      # branch-free select: the bits are unpredictable
                out[i, j0 + t] = 1 if bit else 0
                heads[i] = advance_x(x, addr, i, f0 if bit else np.uint64(0),
                                     one - f0 if bit else f0, p, mask)


@njit(cache=True, nogil=True, error_model="numpy")
def starts_freqs(logits, x, prec):
    p = np.uint64(prec)
    one = np.uint64(1) << p
    s = np.empty(logits.shape, np.uint32)
    f = np.empty(logits.shape, np.uint32)
    fl, xl, sl, ff = logits.ravel(), x.ravel(), s.ravel(), f.ravel()
    for k in range(fl.size):
        f0 = freq0(fl[k], p)
        sl[k] = f0 if xl[k] else 0
        ff[k] = one - f0 if xl[k] else f0
    return s, f



# ---- lane-parallel drivers: lanes are independent, so chunks of lanes run on threads ----

@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def push_par(heads, addr, logits, x, prec, chunks):
    n = logits.shape[0]
    for c in prange(chunks):
        push(heads, addr, logits, x, prec, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def pop_par(heads, addr, logits, prec, out, chunks):
    n = logits.shape[0]
    for c in prange(chunks):
        pop(heads, addr, logits, prec, out, c * n // chunks, (c + 1) * n // chunks)
