"""Latents coded by bucket index: 2^b equal-mass buckets of N(0, 1), 1 <= b <= 16.

Bucket edges come from the shipped table latent_table.npy (see make_latent_table.py):
edges_b[i] = Phi^-1(i / 2^b). The decoder network sees ``centres(b)``, each bucket's
conditional median Phi^-1((i + 1/2) / 2^b).

Posterior q(z|x) = N(mu, sigma^2) per dimension, quantised per bucket with
M = 2^prec - 2^b::

    start(0) = 0,  start(2^b) = 2^prec,
    start(i) = floor(Phi((edge_i - mu) / sigma) * M) + i     for i = 1..2^b - 1,

so every bucket has frequency >= 1 (Phi is monotone). mu: NaN -> 0, clamped to +-1e6;
sigma: NaN -> 1, clamped into [1e-30, 1e30]. Precision must satisfy b <= prec <= 31.
Prior: uniform over the 2^b buckets (a b-bit uniform symbol).

Phi, by ``portable`` (every posterior function takes it; container versions >= 5 code
with True, versions <= 4 with False):

- portable=True: Phi(x) linearly interpolated in the shipped grid phi_table.npy
  (make_phi_table.py): P[k] = Phi(-9 + k 2^-12); u = (x + 9) 2^12, k = floor(u),
  Phi(x) = P[k] + (P[k+1] - P[k]) (u - k), 0 below the grid, 1 above. Plain IEEE float64
  operations, no libm: the same bits on every machine (error <= 1.8e-9; monotone, proof
  at _nb_latent.grid_phi).
- portable=False: Phi(x) = 0.5 erfc((mu - edge_i) / sigma / sqrt 2) with the C library's
  erfc, as versions <= 4 wrote their files (decodes them exactly on a machine whose erfc
  gives the same bits as the encoder's).
"""
from pathlib import Path

import numpy as np

from . import _kernels
from ._coder import check_prec, done, f32, lanes_of
from ._const import LATENT_RES as _RES
from ._const import MAX_BITS, PHI_CELLS_LOG2, PHI_L

_TABLE = np.load(Path(__file__).with_name("latent_table.npy"))
assert _TABLE.shape == ((1 << _RES) + 1,) and _TABLE.dtype == np.float64
_TABLE.setflags(write=False)

_PHI = np.load(Path(__file__).with_name("phi_table.npy"))
assert _PHI.shape == (2 * PHI_L * (1 << PHI_CELLS_LOG2) + 1,) and _PHI.dtype == np.float64
_PHI.setflags(write=False)
# The kernels' "no grid" argument: an empty phi selects the erfc formula (versions <= 4).
# Read-only like _PHI, so both modes share one compiled JIT specialisation.
_NO_PHI = np.empty(0, np.float64)
_NO_PHI.setflags(write=False)

# The kernels (the quantised CDF, guess and search, push / pop, sampling) are in
# _nb_latent.py; _kernels.py runs them ahead-of-time compiled or JIT.


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


def _args(mu, sigma, prec, b):
    b = _check_bits(b)
    prec = check_prec(prec, b)
    mu, sigma = f32(mu, 2, "mu"), f32(sigma, 2, "sigma")
    if mu.shape != sigma.shape:
        raise ValueError("mu and sigma must have the same shape")
    return mu, sigma, prec, b


def _phi(portable):
    """The kernels' phi argument for ``portable`` (the grid, or empty for the erfc formula)."""
    return _PHI if portable else _NO_PHI


def _idx(idx, shape, b, popped=False):
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if idx.shape != shape:
        raise ValueError(f"idx has shape {idx.shape}, expected {shape}")
    if not popped and idx.size and (idx.min() < 0 or idx.max() >= (1 << b)):
        raise ValueError("bucket index out of range")
    return idx


def push_posterior(msgs, mu, sigma, idx, prec, b, popped=False, portable=True):
    """Push bucket indices idx[n, Z] under q = N(mu, sigma^2) (float32[n, Z]) quantised per bucket.

    popped=True says idx was returned by a pop at the same b (pop_prior or
    pop_posterior), so it is known to be in range and only its shape is checked.
    portable: which Phi (module docstring): True for the grid (versions >= 5), False for
    the erfc formula (versions <= 4).
    """
    mu, sigma, prec, b = _args(mu, sigma, prec, b)
    idx = _idx(idx, mu.shape, b, popped)
    heads, addr = lanes_of(msgs, mu.shape[0])
    _kernels.run_lanes("latent_push_post", (heads, addr, mu, sigma, idx, prec, b, _TABLE, _phi(portable)),
                       *mu.shape[:2])
    done(msgs)


def pop_posterior(msgs, mu, sigma, prec, b, portable=True):
    """Pop int64[n, Z] bucket indices sampled from q (column 0 first); portable as in
    push_posterior (a pop and the push that undoes it must agree on it)."""
    mu, sigma, prec, b = _args(mu, sigma, prec, b)
    heads, addr = lanes_of(msgs, mu.shape[0])
    out = np.empty(mu.shape, np.int64)
    _kernels.run_lanes("latent_pop_post", (heads, addr, mu, sigma, prec, b, _TABLE, _phi(portable), out),
                       *mu.shape[:2])
    return out


def cdf_table(mu, sigma, prec, b, portable=True):
    """uint32[N, 2^b + 1] quantised starts of the posterior for flattened (mu, sigma);
    portable as in push_posterior."""
    b = _check_bits(b)
    prec = check_prec(prec, b)
    mu = np.ascontiguousarray(mu, dtype=np.float32).ravel()
    sigma = np.ascontiguousarray(sigma, dtype=np.float32).ravel()
    return _kernels.get("latent_cdf_table")(mu, sigma, prec, b, _TABLE, _phi(portable))


def sample_posterior(mu, sigma, u, prec, b, portable=True):
    """Bucket indices int64[n, Z] drawn from the quantised q by uniform integers u in
    [0, 2^prec) (the bucket whose range holds u, found by the decoder's own search), and
    their frequencies float64[n, Z]: what a pop would give, without a message (rates).
    portable as in push_posterior."""
    mu, sigma, prec, b = _args(mu, sigma, prec, b)
    u = np.ascontiguousarray(u, dtype=np.uint64)
    if u.shape != mu.shape:
        raise ValueError(f"u has shape {u.shape}, parameters have {mu.shape}")
    return _kernels.get("latent_sample")(mu, sigma, u, prec, b, _TABLE, _phi(portable))


def posterior_starts_freqs(mu, sigma, idx, prec, b, portable=True):
    """(starts, freqs), each uint32 of idx's shape: the quantised range of bucket idx under
    the posterior of the matching flattened (mu, sigma); portable as in push_posterior."""
    t = cdf_table(mu, sigma, prec, b, portable)
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
