"""Bernoulli from logits: freq0 = clamp(floor(sigmoid(-logit) * 2^prec + 1/2), 1, 2^prec - 1).

Symbol 0 has start 0 and frequency freq0; symbol 1 has start freq0.
"""
import math

import numpy as np
from numba import njit, prange

from ._exp import fexp
from ._coder import run_lanes, advance_x, check_prec, done, f32, lanes_of, push_x


@njit(cache=True, inline="always", error_model="numpy")
def _arg(logit):
    l = np.float64(logit)
    return 0.0 if l != l else l   # NaN -> fair coin


@njit(cache=True, inline="always", error_model="numpy")
def _quant(e, prec):
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
    return _quant(fexp(_arg(logit)), prec)


@njit(cache=True, inline="always", error_model="numpy")
def block_freq0(logits, i, j0, w, prec, e, r):
    """r[t] = freq0(logits[i, j0 + t]) for t < w, in two short passes (exp, then the
    divide and rounding) so that the core overlaps iterations (see logistic.block_starts);
    e is float64 scratch of length >= w."""
    for t in range(w):
        e[t] = fexp(_arg(logits[i, j0 + t]))
    for t in range(w):
        r[t] = _quant(e[t], prec)


BLOCK = 256   # columns per block: phase A (vectorisable CDF maths) then phase B (coding)


@njit(cache=True, nogil=True, error_model="numpy")
def _push(heads, addr, logits, x, prec, lane_lo, lane_hi):
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
def _pop(heads, addr, logits, prec, out, lane_lo, lane_hi):
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
def _starts_freqs(logits, x, prec):
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
def _push_par(heads, addr, logits, x, prec, chunks):
    n = logits.shape[0]
    for c in prange(chunks):
        _push(heads, addr, logits, x, prec, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _pop_par(heads, addr, logits, prec, out, chunks):
    n = logits.shape[0]
    for c in prange(chunks):
        _pop(heads, addr, logits, prec, out, c * n // chunks, (c + 1) * n // chunks)


def _bits(x):
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.size and x.max() > 1:
        raise ValueError("Bernoulli symbols must be 0 or 1")
    return x


def push(msgs, logits, x, prec):
    """Push binary symbols x (uint8[n, D]) with logits (float32[n, D]) onto lanes 0..n-1."""
    prec = check_prec(prec)
    logits = f32(logits, 2, "logits")
    x = _bits(x)
    if x.shape != logits.shape:
        raise ValueError("x and logits must have the same shape")
    heads, addr = lanes_of(msgs, logits.shape[0])
    run_lanes(_push, _push_par, (heads, addr, logits, x, prec), *logits.shape[:2])
    done(msgs)


def pop(msgs, logits, prec):
    """Pop uint8[n, D] binary symbols (column 0 first) given float32[n, D] logits."""
    prec = check_prec(prec)
    logits = f32(logits, 2, "logits")
    heads, addr = lanes_of(msgs, logits.shape[0])
    out = np.empty(logits.shape, np.uint8)
    run_lanes(_pop, _pop_par, (heads, addr, logits, prec, out), *logits.shape[:2])
    return out


def starts_freqs(logits, x, prec):
    """(starts, freqs) uint32 arrays of the quantised model for symbols x (any shape)."""
    prec = check_prec(prec)
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    x = _bits(x)
    return _starts_freqs(logits, x.reshape(logits.shape), prec)


def code_length(logits, x, prec):
    """Exact ideal code length in bits, sum of -log2 p under the quantised model."""
    _, f = starts_freqs(logits, x, prec)
    return float(int(prec) * f.size - np.log2(f.astype(np.float64)).sum())
