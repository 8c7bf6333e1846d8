"""numba kernels of the latent (bucketed Gaussian) family (latent.py is the wrapper and
holds the spec). Imported only by the JIT backend (_kernels.py) and the ahead-of-time
build (_aot_build.py). ``table`` is latent.py's shipped edge table, passed in; ``phi`` is
its shipped Phi grid (container versions >= 5), or an empty array for the erfc formula of
versions <= 4 (see phi_of). One kernel per operation serves both.
"""
import math

import numpy as np
from numba import njit, prange

from ._const import LATENT_RES as _RES
from ._const import PHI_CELLS_LOG2, PHI_L
from ._nbcoder import advance_x, push_x

_SQRT1_2 = 0.7071067811865476
_PHI_LO = float(PHI_L)                     # grid start: x_k = -L + k h
_PHI_SCALE = float(1 << PHI_CELLS_LOG2)    # 1 / h, a power of two: multiplying by it is exact


@njit(cache=True, inline="always", error_model="numpy")
def params(mu, sigma):
    """Sanitised (m, s) as float64: mu NaN -> 0, clamped to +-1e6; sigma NaN -> 1,
    clamped into [1e-30, 1e30] (so (edge - m) / s is finite for every finite edge)."""
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
def grid_phi(x, phi):
    """Phi(x), the N(0, 1) CDF, from the shipped grid phi[k] = Phi(-L + k h) (non-empty)
    with plain IEEE float64 operations only: no libm, so the same bits on every machine.

    0 below the grid and for NaN, 1 at and above its end; inside, with u = (x + L) / h,
    k = floor(u), f = u - k: F = P[k] + (P[k+1] - P[k]) * f (linear interpolation; error
    <= 1.8e-9, make_phi_table.py).

    Monotone (non-decreasing) in x, which keeps every quantised frequency >= 1:
    - u: x + L is rounded monotonically and * 2^12 is exact, so u is non-decreasing in x;
      k = floor(u) too, and f = u - k is exact (k = 0: f = u; k >= 1: k <= u < k + 1 <= 2k,
      Sterbenz), so f is u's fraction, in [0, 1).
    - within a cell (fixed k), d = P[k+1] - P[k] >= 0 is fixed, and d * f then P[k] + (d f)
      are each correctly rounded operations monotone in their argument: F is
      non-decreasing in f, so in x.
    - across a boundary: d is exact (Sterbenz: P[k] <= P[k+1] <= 2 P[k] over the whole
      grid, asserted by make_phi_table and tests/test_cdf.py), so with f < 1,
      d * f <= d after rounding (d is representable), and P[k] + round(d f) <= P[k] + d =
      P[k+1], a float, so it rounds to <= P[k+1]: the last value of cell k never exceeds
      the first of cell k + 1 (P[k+1], f = 0).
    - ends: 0 <= P[0] below the grid; P[N] = 1.0 exactly, the value above it.
    numba contracts nothing to FMA without fastmath (the kernels never set it), so each
    operation is rounded on its own, as this argument and the pure-numpy reference of
    tests/test_cdf.py assume.
    """
    u = (x + _PHI_LO) * _PHI_SCALE
    if not u >= 0.0:
        return 0.0
    n = phi.shape[0] - 1
    if u >= n:
        return 1.0
    k = int(u)                  # u >= 0: truncation is floor
    f = u - k
    p = phi[k]
    return p + (phi[k + 1] - p) * f


@njit(cache=True, inline="always", error_model="numpy")
def phi_of(x, phi):
    """Phi(x): grid_phi when phi is the shipped grid (container versions >= 5); when phi is
    empty, the erfc formula of versions <= 4 (libm's erfc, kept bit for bit for their
    files: 0.5 erfc(-x / sqrt 2), where -x is exactly the (m - edge) / s they computed)."""
    if phi.shape[0] == 0:
        return 0.5 * math.erfc(-x * _SQRT1_2)
    return grid_phi(x, phi)


@njit(cache=True, inline="always", error_model="numpy")
def start_of(i, m, s, table, phi, shift, nb, M, one):
    """Quantised start of bucket i: floor(Phi((edge_i - m) / s) * M) + i, 0 and one at the
    ends. (edge_i - m) / s is exactly -((m - edge_i) / s) (IEEE negation, and a - b =
    -(b - a) under rounding to nearest), so the erfc mode computes what versions <= 4 did."""
    if i <= 0:
        return np.uint64(0)
    if i >= nb:
        return one
    F = phi_of((table[i << shift] - m) / s, phi)
    F = min(max(F, 0.0), 1.0)
    return np.uint64(math.floor(F * M)) + np.uint64(i)


@njit(cache=True, inline="always", error_model="numpy")
def guess(cf, m, s, table, phi, nb, one):
    """Bucket most likely holding cf: z = mu + sigma Phi^-1(u) (table-interpolated), i = nb Phi(z).
    Only a starting point for search (whose answer does not depend on it); Phi here is
    phi_of's, in the same mode as the CDF, so the erfc mode runs exactly as before."""
    u = (np.float64(cf) + 0.5) / np.float64(one)
    N = table.shape[0] - 1
    pos = u * N
    j = min(max(int(pos), 1), N - 2)
    t = table[j] + (table[j + 1] - table[j]) * (pos - j)
    z = m + s * t
    Fz = phi_of(z, phi)
    if not Fz >= 0.0:
        return nb // 2
    return min(int(Fz * nb), nb - 1)


@njit(cache=True, inline="always", error_model="numpy")
def search(cf, k, m, s, table, phi, shift, nb, M, one):
    """(i, start, freq) with start(i) <= cf < start(i+1), galloping from guess k."""
    sk = start_of(k, m, s, table, phi, shift, nb, M, one)
    if sk <= cf:
        lo, s_lo = k, sk
        step = 1
        while True:
            nk = min(k + step, nb)
            sn = start_of(nk, m, s, table, phi, shift, nb, M, one)
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
            sn = start_of(nk, m, s, table, phi, shift, nb, M, one)
            if sn <= cf:
                lo, s_lo = nk, sn
                break
            hi, s_hi = nk, sn
            step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        sm = start_of(mid, m, s, table, phi, shift, nb, M, one)
        if sm <= cf:
            lo, s_lo = mid, sm
        else:
            hi, s_hi = mid, sm
    return lo, s_lo, s_hi - s_lo


@njit(cache=True, nogil=True, error_model="numpy")
def push_post(heads, addr, mu, sigma, idx, prec, b, table, phi, lane_lo, lane_hi):
    """Push idx[i, j] under the quantised posterior (mu, sigma)[i, j] onto lanes
    lane_lo..lane_hi-1, last column first; phi selects the CDF (phi_of)."""
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
            lo = start_of(k, m, s, table, phi, shift, nb, M, one)
            hi = start_of(k + 1, m, s, table, phi, shift, nb, M, one)
            heads[i] = push_x(heads[i], addr, i, lo, hi - lo, p)


@njit(cache=True, nogil=True, error_model="numpy")
def pop_post(heads, addr, mu, sigma, prec, b, table, phi, out, lane_lo, lane_hi):
    """Pop out[i, j] (bucket indices) under the quantised posterior from lanes
    lane_lo..lane_hi-1, column 0 first (push_post's mirror); phi as in push_post."""
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
            k, st, f = search(cf, guess(cf, m, s, table, phi, nb, one), m, s, table, phi, shift, nb, M, one)
            out[i, j] = k
            heads[i] = advance_x(heads[i], addr, i, st, f, p, mask)


@njit(cache=True, nogil=True, error_model="numpy")
def cdf_table(mu, sigma, prec, b, table, phi):
    """uint32[N, 2^b + 1]: every start_of of each flattened (mu, sigma); phi selects the CDF."""
    one = np.uint64(1) << np.uint64(prec)
    nb = 1 << b
    shift = _RES - b
    M = np.float64(one - np.uint64(nb))
    out = np.empty((mu.size, nb + 1), np.uint32)
    for r in range(mu.size):
        m, s = params(mu[r], sigma[r])
        for i in range(nb + 1):
            out[r, i] = start_of(i, m, s, table, phi, shift, nb, M, one)
    return out



# ---- lane-parallel drivers: lanes are independent, so chunks of lanes run on threads ----

@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def push_post_par(heads, addr, mu, sigma, idx, prec, b, table, phi, chunks):
    n = mu.shape[0]
    for c in prange(chunks):
        push_post(heads, addr, mu, sigma, idx, prec, b, table, phi, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def pop_post_par(heads, addr, mu, sigma, prec, b, table, phi, out, chunks):
    n = mu.shape[0]
    for c in prange(chunks):
        pop_post(heads, addr, mu, sigma, prec, b, table, phi, out, c * n // chunks, (c + 1) * n // chunks)



@njit(cache=True, nogil=True, error_model="numpy")
def sample(mu, sigma, u, prec, b, table, phi):
    """(bucket holding u[i, j], its frequency as float64), by pop_post's own search."""
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
            k, st, f = search(cf, guess(cf, m, s, table, phi, nb, one), m, s, table, phi, shift, nb, M, one)
            idx[i, j] = k
            freq[i, j] = np.float64(f)
    return idx, freq
