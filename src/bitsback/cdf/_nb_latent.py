"""numba kernels of the latent (bucketed Gaussian) family (latent.py is the wrapper and
holds the spec). Imported only by the JIT backend (_kernels.py) and the ahead-of-time
build (_aot_build.py). ``table`` is latent.py's shipped edge table, passed in.
"""
import math

import numpy as np
from numba import njit, prange

from ._const import LATENT_RES as _RES
from ._nbcoder import advance_x, push_x

_SQRT1_2 = 0.7071067811865476


@njit(cache=True, inline="always", error_model="numpy")
def params(mu, sigma):
    m = np.float64(mu)
    if m != m:
        m = 0.0
    m = min(max(m, -1e6), 1e6)
    s = np.float64(sigma)
    if s != s:
        s = 1.0
    s = min(max(s, 1e-30), 1e30)
    return m, s


@njit(cache=True, inline="always", error_model="numpy")
def start_of(i, m, s, table, shift, nb, M, one):
    if i <= 0:
        return np.uint64(0)
    if i >= nb:
        return one
    F = 0.5 * math.erfc((m - table[i << shift]) / s * _SQRT1_2)
    F = min(max(F, 0.0), 1.0)
    return np.uint64(math.floor(F * M)) + np.uint64(i)


@njit(cache=True, inline="always", error_model="numpy")
def guess(cf, m, s, table, nb, one):
    """Bucket most likely holding cf: z = mu + sigma Phi^-1(u) (table-interpolated), i = nb Phi(z)."""
    u = (np.float64(cf) + 0.5) / np.float64(one)
    N = table.shape[0] - 1
    pos = u * N
    j = min(max(int(pos), 1), N - 2)
    t = table[j] + (table[j + 1] - table[j]) * (pos - j)
    z = m + s * t
    Fz = 0.5 * math.erfc(-z * _SQRT1_2)
    if not Fz >= 0.0:
        return nb // 2
    return min(int(Fz * nb), nb - 1)


@njit(cache=True, inline="always", error_model="numpy")
def search(cf, k, m, s, table, shift, nb, M, one):
    """(i, start, freq) with start(i) <= cf < start(i+1), galloping from guess k."""
    sk = start_of(k, m, s, table, shift, nb, M, one)
    if sk <= cf:
        lo, s_lo = k, sk
        step = 1
        while True:
            nk = min(k + step, nb)
            sn = start_of(nk, m, s, table, shift, nb, M, one)
            if sn > cf:
                hi, s_hi = nk, sn
                break
            lo, s_lo = nk, sn
            step *= 2
    else:
        hi, s_hi = k, sk
        step = 1
        while True:
            nk = max(k - step, 0)
            sn = start_of(nk, m, s, table, shift, nb, M, one)
            if sn <= cf:
                lo, s_lo = nk, sn
                break
            hi, s_hi = nk, sn
            step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        sm = start_of(mid, m, s, table, shift, nb, M, one)
        if sm <= cf:
            lo, s_lo = mid, sm
        else:
            hi, s_hi = mid, sm
    return lo, s_lo, s_hi - s_lo


@njit(cache=True, nogil=True, error_model="numpy")
def push_post(heads, addr, mu, sigma, idx, prec, b, table, lane_lo, lane_hi):
    n, Z = mu.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    nb = 1 << b
    shift = _RES - b
    M = np.float64(one - np.uint64(nb))
    for j in range(Z - 1, -1, -1):
        for i in range(lane_lo, lane_hi):
            m, s = params(mu[i, j], sigma[i, j])
            k = idx[i, j]
            lo = start_of(k, m, s, table, shift, nb, M, one)
            hi = start_of(k + 1, m, s, table, shift, nb, M, one)
            heads[i] = push_x(heads[i], addr, i, lo, hi - lo, p)


@njit(cache=True, nogil=True, error_model="numpy")
def pop_post(heads, addr, mu, sigma, prec, b, table, out, lane_lo, lane_hi):
    n, Z = mu.shape
    p = np.uint64(prec)
    one = np.uint64(1) << p
    mask = one - np.uint64(1)
    nb = 1 << b
    shift = _RES - b
    M = np.float64(one - np.uint64(nb))
    for j in range(Z):
        for i in range(lane_lo, lane_hi):
            m, s = params(mu[i, j], sigma[i, j])
            cf = heads[i] & mask
            k, st, f = search(cf, guess(cf, m, s, table, nb, one), m, s, table, shift, nb, M, one)
            out[i, j] = k
            heads[i] = advance_x(heads[i], addr, i, st, f, p, mask)


@njit(cache=True, nogil=True, error_model="numpy")
def cdf_table(mu, sigma, prec, b, table):
    one = np.uint64(1) << np.uint64(prec)
    nb = 1 << b
    shift = _RES - b
    M = np.float64(one - np.uint64(nb))
    out = np.empty((mu.size, nb + 1), np.uint32)
    for r in range(mu.size):
        m, s = params(mu[r], sigma[r])
        for i in range(nb + 1):
            out[r, i] = start_of(i, m, s, table, shift, nb, M, one)
    return out



# ---- lane-parallel drivers: lanes are independent, so chunks of lanes run on threads ----

@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def push_post_par(heads, addr, mu, sigma, idx, prec, b, table, chunks):
    n = mu.shape[0]
    for c in prange(chunks):
        push_post(heads, addr, mu, sigma, idx, prec, b, table, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def pop_post_par(heads, addr, mu, sigma, prec, b, table, out, chunks):
    n = mu.shape[0]
    for c in prange(chunks):
        pop_post(heads, addr, mu, sigma, prec, b, table, out, c * n // chunks, (c + 1) * n // chunks)



@njit(cache=True, nogil=True, error_model="numpy")
def sample(mu, sigma, u, prec, b, table):
    n, Z = mu.shape
    one = np.uint64(1) << np.uint64(prec)
    nb = 1 << b
    shift = _RES - b
    M = np.float64(one - np.uint64(nb))
    idx = np.empty((n, Z), np.int64)
    freq = np.empty((n, Z), np.float64)
    for i in range(n):
        for j in range(Z):
            m, s = params(mu[i, j], sigma[i, j])
            cf = np.uint64(u[i, j])
            k, st, f = search(cf, guess(cf, m, s, table, nb, one), m, s, table, shift, nb, M, one)
            idx[i, j] = k
            freq[i, j] = np.float64(f)
    return idx, freq
