"""Latents coded by bucket index: 2^b equal-mass buckets of N(0, 1), 1 <= b <= 16.

Bucket edges come from the shipped table latent_table.npy (see make_latent_table.py):
edges_b[i] = Phi^-1(i / 2^b). The decoder network sees ``centres(b)``, each bucket's
conditional median Phi^-1((i + 1/2) / 2^b).

Posterior q(z|x) = N(mu, sigma^2) per dimension, quantised per bucket with
M = 2^prec - 2^b::

    start(0) = 0,  start(2^b) = 2^prec,
    start(i) = floor(Phi((edge_i - mu) / sigma) * M) + i     for i = 1..2^b - 1,

so every bucket has frequency >= 1. mu: NaN -> 0, clamped to +-1e6; sigma: NaN -> 1,
clamped into [1e-30, 1e30]. Precision must satisfy b <= prec <= 31.
Prior: uniform over the 2^b buckets (a b-bit uniform symbol).
"""
import math
from pathlib import Path

import numpy as np
from numba import njit, prange

from ._coder import run_lanes, advance_x, check_prec, done, f32, lanes_of, push_x

MAX_BITS = 16
_RES = 17
_TABLE = np.load(Path(__file__).with_name("latent_table.npy"))
assert _TABLE.shape == ((1 << _RES) + 1,) and _TABLE.dtype == np.float64
_TABLE.setflags(write=False)
_SQRT1_2 = 0.7071067811865476


def _check_bits(b):
    b = int(b)
    if not 1 <= b <= MAX_BITS:
        raise ValueError(f"bucket bits must be in [1, {MAX_BITS}], got {b}")
    return b


def edges(b):
    """float64[2^b + 1] bucket edges (first -inf, last +inf)."""
    b = _check_bits(b)
    return _TABLE[:: 1 << (_RES - b)].copy()


def centres(b):
    """float32[2^b]: value the decoder network sees for each bucket (conditional median)."""
    b = _check_bits(b)
    return _TABLE[1 << (_RES - b - 1):: 1 << (_RES - b)].astype(np.float32)


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
def _push_post(heads, addr, mu, sigma, idx, prec, b, table, lane_lo, lane_hi):
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
def _pop_post(heads, addr, mu, sigma, prec, b, table, out, lane_lo, lane_hi):
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
def _cdf_table(mu, sigma, prec, b, table):
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
def _push_post_par(heads, addr, mu, sigma, idx, prec, b, table, chunks):
    n = mu.shape[0]
    for c in prange(chunks):
        _push_post(heads, addr, mu, sigma, idx, prec, b, table, c * n // chunks, (c + 1) * n // chunks)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _pop_post_par(heads, addr, mu, sigma, prec, b, table, out, chunks):
    n = mu.shape[0]
    for c in prange(chunks):
        _pop_post(heads, addr, mu, sigma, prec, b, table, out, c * n // chunks, (c + 1) * n // chunks)


def _args(mu, sigma, prec, b):
    b = _check_bits(b)
    prec = check_prec(prec, b)
    mu, sigma = f32(mu, 2, "mu"), f32(sigma, 2, "sigma")
    if mu.shape != sigma.shape:
        raise ValueError("mu and sigma must have the same shape")
    return mu, sigma, prec, b


def _idx(idx, shape, b, popped=False):
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if idx.shape != shape:
        raise ValueError(f"idx has shape {idx.shape}, expected {shape}")
    if not popped and idx.size and (idx.min() < 0 or idx.max() >= (1 << b)):
        raise ValueError("bucket index out of range")
    return idx


def push_posterior(msgs, mu, sigma, idx, prec, b, popped=False):
    """Push bucket indices idx[n, Z] under q = N(mu, sigma^2) (float32[n, Z]) quantised per bucket.

    popped=True says idx was returned by a pop at the same b (pop_prior or
    pop_posterior), so it is known to be in range and only its shape is checked.
    """
    mu, sigma, prec, b = _args(mu, sigma, prec, b)
    idx = _idx(idx, mu.shape, b, popped)
    heads, addr = lanes_of(msgs, mu.shape[0])
    run_lanes(_push_post, _push_post_par, (heads, addr, mu, sigma, idx, prec, b, _TABLE), *mu.shape[:2])
    done(msgs)


def pop_posterior(msgs, mu, sigma, prec, b):
    """Pop int64[n, Z] bucket indices sampled from q (column 0 first)."""
    mu, sigma, prec, b = _args(mu, sigma, prec, b)
    heads, addr = lanes_of(msgs, mu.shape[0])
    out = np.empty(mu.shape, np.int64)
    run_lanes(_pop_post, _pop_post_par, (heads, addr, mu, sigma, prec, b, _TABLE, out), *mu.shape[:2])
    return out


def cdf_table(mu, sigma, prec, b):
    """uint32[N, 2^b + 1] quantised starts of the posterior for flattened (mu, sigma)."""
    b = _check_bits(b)
    prec = check_prec(prec, b)
    mu = np.ascontiguousarray(mu, dtype=np.float32).ravel()
    sigma = np.ascontiguousarray(sigma, dtype=np.float32).ravel()
    return _cdf_table(mu, sigma, prec, b, _TABLE)


@njit(cache=True, nogil=True, error_model="numpy")
def _sample(mu, sigma, u, prec, b, table):
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


def sample_posterior(mu, sigma, u, prec, b):
    """Bucket indices int64[n, Z] drawn from the quantised q by uniform integers u in
    [0, 2^prec) (the bucket whose range holds u, found by the decoder's own search), and
    their frequencies float64[n, Z]: what a pop would give, without a message (rates)."""
    mu, sigma, prec, b = _args(mu, sigma, prec, b)
    u = np.ascontiguousarray(u, dtype=np.uint64)
    if u.shape != mu.shape:
        raise ValueError(f"u has shape {u.shape}, parameters have {mu.shape}")
    return _sample(mu, sigma, u, prec, b, _TABLE)


def posterior_starts_freqs(mu, sigma, idx, prec, b):
    t = cdf_table(mu, sigma, prec, b)
    k = np.asarray(idx, dtype=np.intp).ravel()
    r = np.arange(k.size)
    s = t[r, k]
    return s.reshape(np.shape(idx)), (t[r, k + 1] - s).reshape(np.shape(idx))


def push_prior(msgs, idx, b, popped=False):
    """Push idx[n, Z] under the uniform prior over 2^b buckets (popped: as in push_posterior)."""
    b = _check_bits(b)
    msgs.push_uniform(_idx(idx, np.shape(idx), b, popped).astype(np.uint32), b)


def pop_prior(msgs, n, Z, b):
    """Pop int64[n, Z] bucket indices under the uniform prior."""
    b = _check_bits(b)
    return msgs.pop_uniform(int(n), int(Z), b).astype(np.int64)
