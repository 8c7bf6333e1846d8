"""Symbol-model families: CDF invariants under adversarial parameters, round trips,
bits-back interleavings across families, and code length against the ideal."""
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitsback import cdf
from bitsback._rans import LANE_OVERHEAD_BITS, Messages
from bitsback.cdf import bernoulli, latent, logistic

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NASTY = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, 3.4e38, -3.4e38, 127.5, 255.0, -7.0, 7.0, 88.0, -88.0]
nasty_f32 = st.one_of(st.sampled_from(NASTY), st.floats(width=32, allow_nan=True, allow_infinity=True))


def assert_valid_starts(t, prec):
    t = t.astype(np.int64)
    assert np.all(t[:, 0] == 0) and np.all(t[:, -1] == 1 << prec)
    assert np.all(np.diff(t, axis=1) >= 1)


@SETTINGS
@given(mean=st.lists(nasty_f32, min_size=1, max_size=8), ls=st.lists(nasty_f32, min_size=1, max_size=8),
       prec=st.sampled_from([9, 10, 12, 16, 20, 24, 31]))
def test_logistic_cdf_invariants(mean, ls, prec):
    k = min(len(mean), len(ls))
    mean, ls = np.array(mean[:k], np.float32), np.array(ls[:k], np.float32)
    assert_valid_starts(logistic.cdf_table(mean, ls, prec), prec)


def test_logistic_cdf_scales_grid():
    scales = np.logspace(-30, 30, 61)
    mean = np.repeat(np.array([-1e30, -300, 0, 0.3, 127.5, 254.9, 1e30], np.float32), 61)
    ls = np.tile(np.log(scales).astype(np.float32), 7)
    for prec in (9, 16, 24, 31):
        assert_valid_starts(logistic.cdf_table(mean, ls, prec), prec)


@SETTINGS
@given(mu=st.lists(nasty_f32, min_size=1, max_size=6), sigma=st.lists(nasty_f32, min_size=1, max_size=6),
       b=st.integers(1, 10), extra=st.integers(0, 20), portable=st.booleans())
def test_latent_cdf_invariants(mu, sigma, b, extra, portable):
    k = min(len(mu), len(sigma))
    prec = min(b + extra, 31)
    t = latent.cdf_table(np.array(mu[:k], np.float32), np.array(sigma[:k], np.float32), prec, b, portable=portable)
    assert_valid_starts(t, prec)


@SETTINGS
@given(logits=st.lists(nasty_f32, min_size=1, max_size=20), prec=st.integers(1, 31))
def test_bernoulli_freqs_valid(logits, prec):
    lg = np.array(logits, np.float32)
    for x in (0, 1):
        s, f = bernoulli.starts_freqs(lg, np.full(lg.shape, x, np.uint8), prec)
        assert np.all(f >= 1) and np.all(s.astype(np.int64) + f == (1 << prec if x else f))


@SETTINGS
@given(M=st.integers(1, 10), seed=st.integers(0, 2**32 - 1), prec=st.sampled_from([9, 12, 16, 24]),
       nasty=st.booleans())
def test_mixture_tiles_exactly(M, seed, prec, nasty):
    rng = np.random.default_rng(seed)
    shape = (1, 256, M)
    lw = rng.normal(size=shape) * 5
    mean = rng.uniform(-50, 300, shape)
    ls = rng.uniform(-8, 8, shape)
    if nasty:
        for a in (lw, mean, ls):
            a.ravel()[rng.integers(0, a.size, a.size // 3)] = rng.choice(NASTY, a.size // 3)
    lw, mean, ls = (np.broadcast_to(a[:, :1], shape).astype(np.float32) for a in (lw, mean, ls))
    x = np.arange(256, dtype=np.uint8)[None]
    s, f = logistic.mixture_starts_freqs(lw, mean, ls, x, prec)
    s, f = s.astype(np.int64)[0], f.astype(np.int64)[0]
    assert s[0] == 0 and np.all(f >= 1) and np.all(s[1:] == s[:-1] + f[:-1]) and s[-1] + f[-1] == 1 << prec


def pixels(rng, mean, ls):
    return np.clip(np.round(mean + rng.logistic(size=mean.shape) * np.exp(np.clip(ls, -7, 7))), 0, 255).astype(np.uint8)


@SETTINGS
@given(lanes=st.integers(1, 8), n=st.integers(1, 8), D=st.integers(0, 60), prec=st.sampled_from([9, 11, 16, 24, 31]),
       seed=st.integers(0, 2**32 - 1), nasty=st.booleans())
def test_logistic_round_trip(lanes, n, D, prec, seed, nasty):
    n = min(n, lanes)
    rng = np.random.default_rng(seed)
    mean = rng.uniform(-20, 275, (n, D)).astype(np.float32)
    ls = rng.uniform(-8, 8, (n, D)).astype(np.float32)
    x = pixels(rng, mean, ls)
    if nasty and mean.size:
        idx = rng.integers(0, mean.size, max(1, mean.size // 4))
        mean.ravel()[idx] = rng.choice(NASTY, idx.size)
        ls.ravel()[idx[::-1]] = rng.choice(NASTY, idx.size)
        x.ravel()[idx] = rng.integers(0, 256, idx.size)     # improbable symbols too
    m = Messages(lanes, seed)
    logistic.push(m, mean, ls, x, prec)
    m2 = Messages.from_bytes(m.to_bytes(), seed)
    np.testing.assert_array_equal(logistic.pop(m2, mean, ls, prec), x)
    assert m2.is_initial()


@SETTINGS
@given(n=st.integers(1, 6), D=st.integers(0, 60), prec=st.integers(1, 31), seed=st.integers(0, 2**32 - 1))
def test_bernoulli_round_trip(n, D, prec, seed):
    rng = np.random.default_rng(seed)
    lg = (rng.normal(size=(n, D)) * 10).astype(np.float32)
    if lg.size:
        lg.ravel()[rng.integers(0, lg.size, 3)] = np.nan
    x = rng.integers(0, 2, (n, D)).astype(np.uint8)
    m = Messages(n + 2, seed)
    bernoulli.push(m, lg, x, prec)
    np.testing.assert_array_equal(bernoulli.pop(m, lg, prec), x)
    assert m.is_initial()


@SETTINGS
@given(n=st.integers(1, 5), D=st.integers(0, 30), M=st.integers(1, 10), prec=st.sampled_from([9, 14, 16, 24]),
       seed=st.integers(0, 2**32 - 1))
def test_mixture_round_trip(n, D, M, prec, seed):
    rng = np.random.default_rng(seed)
    lw = (rng.normal(size=(n, D, M)) * 3).astype(np.float32)
    mean = rng.uniform(-10, 265, (n, D, M)).astype(np.float32)
    ls = rng.uniform(-8, 5, (n, D, M)).astype(np.float32)
    x = rng.integers(0, 256, (n, D)).astype(np.uint8)
    m = Messages(n, seed)
    logistic.push_mixture(m, lw, mean, ls, x, prec)
    np.testing.assert_array_equal(logistic.pop_mixture(m, lw, mean, ls, prec), x)
    assert m.is_initial()


@SETTINGS
@given(n=st.integers(1, 4), H=st.integers(1, 5), W=st.integers(1, 5), prec=st.sampled_from([9, 16, 24]),
       seed=st.integers(0, 2**32 - 1))
def test_channel_ar_round_trip(n, H, W, prec, seed):
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0, 255, (n, 3, H, W)).astype(np.float32)
    ls = rng.uniform(-3, 4, (n, 3, H, W)).astype(np.float32)
    coef = rng.normal(size=(n, 3, H, W)).astype(np.float32) * 0.5
    x = rng.integers(0, 256, (n, 3, H, W)).astype(np.uint8)
    m = Messages(n, seed)
    logistic.push_ar(m, mean, ls, coef, x, prec)
    np.testing.assert_array_equal(logistic.pop_ar(m, mean, ls, coef, prec), x)
    assert m.is_initial()
    # the AR model really conditions on the decoded channels: starts differ from the plain model
    s_ar, _ = logistic.ar_starts_freqs(mean, ls, coef, x, prec)
    s_plain, _ = logistic.starts_freqs(mean, ls, x, prec)
    np.testing.assert_array_equal(s_ar[:, 0], s_plain[:, 0])


def test_channel_ar_matches_explicit_means():
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 255, (2, 3, 2, 2)).astype(np.float32)
    ls = rng.uniform(0, 2, mean.shape).astype(np.float32)
    coef = rng.normal(size=mean.shape).astype(np.float32)
    x = rng.integers(0, 256, mean.shape).astype(np.uint8)
    m2 = mean.astype(np.float64).copy()
    m2[:, 1] += coef[:, 0] * x[:, 0]
    m2[:, 2] += coef[:, 1] * x[:, 0] + coef[:, 2] * x[:, 1]
    s_ar, f_ar = logistic.ar_starts_freqs(mean, ls, coef, x, 16)
    s, f = logistic.starts_freqs(m2.astype(np.float32), ls, x, 16)
    # same up to the float32 rounding of the explicit means
    assert np.mean(s_ar == s) > 0.9


@SETTINGS
@given(n=st.integers(1, 6), Z=st.integers(0, 20), b=st.integers(1, 16), extra=st.integers(0, 12),
       seed=st.integers(0, 2**32 - 1), nasty=st.booleans(), portable=st.booleans())
def test_latent_round_trip(n, Z, b, extra, seed, nasty, portable):
    prec = min(b + extra, 31)
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, Z)).astype(np.float32) * 3
    sigma = np.exp(rng.normal(size=(n, Z)) * 3).astype(np.float32)
    if nasty and mu.size:
        mu.ravel()[0], sigma.ravel()[-1] = rng.choice(NASTY), rng.choice(NASTY)
    m = Messages(n, seed)
    z = latent.pop_posterior(m, mu, sigma, prec, b, portable=portable)   # from the empty stack: initial bits
    assert z.shape == (n, Z) and (z.size == 0 or (z.min() >= 0 and z.max() < 1 << b))
    latent.push_prior(m, z, b)
    m2 = Messages.from_bytes(m.to_bytes(), seed)
    np.testing.assert_array_equal(latent.pop_prior(m2, n, Z, b), z)
    latent.push_posterior(m2, mu, sigma, z, prec, b, portable=portable)
    assert m2.is_initial()


def test_latent_table_and_centres():
    for b in (1, 2, 8, 16):
        e, c = latent.edges(b), latent.centres(b).astype(np.float64)
        assert e.shape == ((1 << b) + 1,) and np.all(np.diff(e) > 0) and np.isneginf(e[0]) and np.isposinf(e[-1])
        assert np.all((c > e[:-1]) & (c < e[1:]))
        np.testing.assert_array_equal(c, -c[::-1])
    assert latent.centres(1)[1] == np.float32(0.6744897501960817)     # median of the upper half
    assert abs(latent.edges(2)[1] + 0.6744897501960817) < 1e-15


# ---- the portable (libm-free) Phi of container versions >= 5 ----------------------------

_LOOPS = {}


def _loop(fn):
    """fn(x, phi), a kernel helper of _nb_latent, compiled (as in the kernels: no
    fastmath) into a loop over a float64 array: many(xs, phi) -> float64 array."""
    if fn not in _LOOPS:
        from numba import njit

        @njit(error_model="numpy")
        def many(xs, phi):
            out = np.empty_like(xs)
            for i in range(xs.size):
                out[i] = fn(xs[i], phi)
            return out

        _LOOPS[fn] = many
    return _LOOPS[fn]


def _grid_phi_many(xs):
    """The kernels' grid_phi at every float64 of xs."""
    from bitsback.cdf._nb_latent import grid_phi

    return _loop(grid_phi)(np.ascontiguousarray(xs, np.float64), latent._PHI)


PHI_ABS_ERR = 1.9e-9    # h^2 / 8 * phi(1) = 1.80e-9 (make_phi_table.py), plus rounding


def _numpy_grid_phi(x):
    """grid_phi's formula in numpy: each IEEE operation of the kernel, one ufunc at a time
    (numpy never fuses them), so a bitwise match shows the kernel uses nothing else."""
    P = latent._PHI
    u = (x + 9.0) * 4096.0
    n = P.size - 1
    out = np.where(u >= n, 1.0, 0.0)          # NaN and below the grid: 0
    inside = (u >= 0) & (u < n)
    k = np.floor(u[inside]).astype(np.int64)
    out[inside] = P[k] + (P[k + 1] - P[k]) * (u[inside] - k)
    return out


def _numpy_cdf_table(mu, sigma, prec, b):
    """latent.cdf_table(portable=True) re-implemented in numpy (the spec of latent.py)."""
    m = np.asarray(mu, np.float32).astype(np.float64).ravel()
    s = np.asarray(sigma, np.float32).astype(np.float64).ravel()
    m = np.clip(np.where(np.isnan(m), 0.0, m), -1e6, 1e6)
    s = np.clip(np.where(np.isnan(s), 1.0, s), 1e-30, 1e30)
    nb = 1 << b
    z = (latent.edges(b)[None, 1:-1] - m[:, None]) / s[:, None]
    F = np.clip(_numpy_grid_phi(z), 0.0, 1.0)
    M = np.float64((1 << prec) - nb)
    t = np.empty((m.size, nb + 1), np.uint64)
    t[:, 0], t[:, -1] = 0, 1 << prec
    t[:, 1:-1] = np.floor(F * M).astype(np.uint64) + np.arange(1, nb, dtype=np.uint64)
    return t.astype(np.uint32)


def test_phi_table_shipped_and_sterbenz():
    """The shipped grid: shape, read-only, ends, non-decreasing, and P[k] <= P[k+1] <= 2 P[k]
    everywhere (far tails included), so the kernel's P[k+1] - P[k] is exact."""
    P = latent._PHI
    assert P.dtype == np.float64 and P.shape == (18 * 4096 + 1,) and not P.flags.writeable
    assert 0 < P[0] < 2e-19 and P[-1] == 1.0 and P[P.size // 2] == 0.5
    assert np.all(P[1:] >= P[:-1]) and np.all(P[1:] <= 2 * P[:-1])
    from fractions import Fraction

    d = P[1:] - P[:-1]
    for k in range(0, P.size - 1, 7):        # exactness itself, on a seventh of the cells
        assert Fraction(P[k + 1]) - Fraction(P[k]) == Fraction(d[k])


def test_phi_table_is_what_make_phi_table_writes():
    """Spot values equal mpmath's Phi, correctly rounded (the generator's formula)."""
    mpmath = pytest.importorskip("mpmath")
    from mpmath.libmp import round_nearest, to_float

    P = latent._PHI
    with mpmath.workdps(40):
        for k in list(range(0, P.size, 997)) + [0, 1, P.size // 2, P.size - 2, P.size - 1]:
            x = mpmath.mpf(k) / 4096 - 9
            assert P[k] == to_float(mpmath.ncdf(x)._mpf_, rnd=round_nearest), k


def test_grid_phi_accurate():
    rng = np.random.default_rng(11)
    xs = np.concatenate([np.linspace(-10, 10, 400001), rng.normal(size=100000) * 3,
                         [-9.0, 9.0, -9 - 1e-12, 9 - 1e-12, 0.0, -0.0]])
    ref = np.array([0.5 * math.erfc(-x / math.sqrt(2)) for x in xs])   # libm: a test reference only
    assert np.max(np.abs(_grid_phi_many(xs) - ref)) < PHI_ABS_ERR
    mpmath = pytest.importorskip("mpmath")
    for x in rng.uniform(-9.5, 9.5, 300):
        assert abs(_grid_phi_many(np.array([x]))[0] - float(mpmath.ncdf(x))) < PHI_ABS_ERR


def test_grid_phi_monotone_across_cells_and_tails():
    """Non-decreasing over a dense sweep, ulp by ulp across every cell boundary of the grid,
    and out to the clamps (NaN -> 0, +-inf)."""
    k = np.arange(18 * 4096 + 1)
    x0 = -9.0 + k / 4096.0                  # every grid point, exact
    steps = [x0]
    lo, hi = x0, x0
    for _ in range(24):                     # 24 ulps either side of each boundary
        lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
        steps += [lo, hi]
    xs = np.sort(np.concatenate(steps + [np.linspace(-40, 40, 800001), [-np.inf, np.inf, -1e308, 1e308]]))
    F = _grid_phi_many(xs)
    assert np.all(np.diff(F) >= 0)
    assert F[0] == 0.0 and F[-1] == 1.0 and np.all((F >= 0) & (F <= 1))
    assert _grid_phi_many(np.array([np.nan]))[0] == 0.0


def _math_calls(ir):
    """Names of the libm functions and FMA intrinsics that LLVM IR calls."""
    import re

    called = set(re.findall(r"call [^@]*@([\w.]+)", ir))
    libm = r"(llvm\.)?(erfc?|exp\w*|log\w*|pow\w*|tanh|sqrt|fma|fmuladd)(\.f64)?"
    return {c for c in called if re.fullmatch(libm, c)}


def _ir_of_loop(fn, phi):
    """LLVM IR of _loop(fn), compiled for phi's type."""
    _loop(fn)(np.zeros(1), phi)
    return "".join(_loop(fn).inspect_llvm().values())


def test_grid_phi_is_plain_ieee():
    """The compiled grid_phi calls no libm function or FMA and carries no fast-math /
    contract flag (which would let LLVM fuse the interpolation into an FMA)."""
    import re

    from bitsback.cdf._nb_latent import grid_phi, phi_of

    ir = _ir_of_loop(grid_phi, latent._PHI)
    assert not _math_calls(ir), _math_calls(ir)
    assert not re.search(r"\bf(add|sub|mul|div) (fast|contract|reassoc|afn)\b", ir)
    assert _math_calls(_ir_of_loop(phi_of, latent._NO_PHI)) == {"erfc"}   # the check sees a libm call


@pytest.mark.parametrize("b,prec", [(1, 1), (4, 12), (8, 20), (12, 24), (16, 31)])
def test_portable_cdf_table_is_the_numpy_formula(b, prec):
    """cdf_table(portable=True) equals the pure-numpy formula bit for bit (nasty parameters
    included): the kernel's Phi uses no libm."""
    rng = np.random.default_rng(b)
    n = max(2 * len(NASTY), min(3000, (1 << 21) >> b))     # rows * buckets <= 2M: the test's memory
    mu = (rng.normal(size=n) * 4).astype(np.float32)
    sigma = np.exp(rng.normal(size=n) * 3).astype(np.float32)
    mu[:len(NASTY)], sigma[-len(NASTY):] = NASTY, NASTY
    sigma[:len(NASTY)] = rng.permutation(np.array(NASTY, np.float32))
    np.testing.assert_array_equal(latent.cdf_table(mu, sigma, prec, b), _numpy_cdf_table(mu, sigma, prec, b))
    s, f = latent.posterior_starts_freqs(mu, sigma, np.zeros(mu.shape, np.int64) + (1 << b) // 2, prec, b)
    t = _numpy_cdf_table(mu, sigma, prec, b).astype(np.int64)
    np.testing.assert_array_equal(s, t[:, (1 << b) // 2])
    np.testing.assert_array_equal(f, t[:, (1 << b) // 2 + 1] - t[:, (1 << b) // 2])


@pytest.mark.parametrize("prec", [1, 12, 24, 31])
def test_portable_freqs_at_least_one_adversarial(prec):
    """Every bucket keeps frequency >= 1 in portable mode for every pair of extreme mu and
    sigma, at every bucket count the precision allows."""
    vals = np.array(NASTY + [1e6, -1e6, 1e-6, 5e-30, 8.999, -8.999, 9.0, -9.0], np.float32)
    mu, sigma = np.repeat(vals, vals.size), np.tile(vals, vals.size)
    for b in (1, 2, 3, 6, 10, 13, 16):
        if b > prec:
            continue
        rows = max(1, (1 << 21) >> b)           # rows a call: tables of <= 2M starts (memory)
        for r in range(0, mu.size, rows):
            assert_valid_starts(latent.cdf_table(mu[r:r + rows], sigma[r:r + rows], prec, b), prec)


def test_portable_and_erfc_modes_nearly_agree():
    """The grid Phi moves a start by at most ceil(1.9e-9 * 2^prec) units against libm's erfc."""
    rng = np.random.default_rng(4)
    mu = (rng.normal(size=4000) * 3).astype(np.float32)
    sigma = np.exp(rng.normal(size=4000)).astype(np.float32)
    for b, prec, rows in [(4, 12, 4000), (12, 24, 400), (16, 31, 40)]:     # rows: the tables' memory
        mu, sigma = mu[:rows], sigma[:rows]
        a = latent.cdf_table(mu, sigma, prec, b).astype(np.int64)
        o = latent.cdf_table(mu, sigma, prec, b, portable=False).astype(np.int64)
        assert np.abs(a - o).max() <= math.ceil(PHI_ABS_ERR * 2 ** prec)
    assert np.any(a != o)       # at 2^31 the two Phis are told apart: the switch reaches the kernel


def test_each_mode_round_trips_on_a_full_stack():
    """Same parameters, both modes: a pop then the push of what it popped returns a stack
    of random words to its exact bytes (bits back, no initial bits drawn)."""
    rng = np.random.default_rng(2)
    n, Z, b, prec = 64, 50, 12, 24
    mu = (rng.normal(size=(n, Z)) * 2).astype(np.float32)
    sigma = np.exp(rng.normal(size=(n, Z)) - 2).astype(np.float32)
    for portable in (True, False):
        m = Messages(n, 7)
        m.push_uniform(rng.integers(0, 1 << 31, (n, 200)).astype(np.uint32), 31)
        before = m.to_bytes()
        z = latent.pop_posterior(m, mu, sigma, prec, b, portable=portable)
        latent.push_posterior(m, mu, sigma, z, prec, b, popped=True, portable=portable)
        assert m.to_bytes() == before


def test_latent_posterior_sampling_is_faithful():
    """Popping from random bits samples q: bucket frequencies match the quantised masses."""
    rng = np.random.default_rng(0)
    m = Messages(64, 1)
    m.push_uniform(rng.integers(0, 1 << 31, (64, 4000)).astype(np.uint32), 31)
    mu = np.full((64, 1000), 0.7, np.float32)
    sigma = np.full((64, 1000), 0.3, np.float32)
    z = latent.pop_posterior(m, mu, sigma, 20, 4)
    t = latent.cdf_table(mu[:1, :1], sigma[:1, :1], 20, 4)[0].astype(np.float64)
    expected = np.diff(t) / 2**20
    got = np.bincount(z.ravel(), minlength=16) / z.size
    assert np.abs(got - expected).max() < 0.01


def test_bits_back_over_families():
    """Three steps of BB-ANS over ragged lane counts: pop posterior, push likelihood, push prior."""
    rng = np.random.default_rng(5)
    L, Z, D, b = 6, 5, 40, 8
    enc = Messages(L, 9)
    steps = []
    for n in (6, 6, 3):
        mu = rng.normal(size=(n, Z)).astype(np.float32)
        sg = np.exp(rng.normal(size=(n, Z)) - 1).astype(np.float32)
        z = latent.pop_posterior(enc, mu, sg, 18, b)
        mean = latent.centres(b)[z].sum(1, keepdims=True) * 30 + 128 + np.zeros((n, D), np.float32)
        ls = np.full((n, D), 1.5, np.float32)
        x = pixels(rng, mean, ls)
        logistic.push(enc, mean, ls, x, 16)
        latent.push_prior(enc, z, b)
        steps.append((mu, sg, z, mean, ls, x))
    dec = Messages.from_bytes(enc.to_bytes(), 9)
    for mu, sg, z, mean, ls, x in reversed(steps):
        n = x.shape[0]
        z2 = latent.pop_prior(dec, n, Z, b)
        np.testing.assert_array_equal(z2, z)
        np.testing.assert_array_equal(logistic.pop(dec, mean, ls, 16), x)
        latent.push_posterior(dec, mu, sg, z2, 18, b)
    assert dec.is_initial()


@pytest.mark.parametrize("family", ["bernoulli", "logistic"])
def test_code_length_near_ideal(family):
    """10^6 symbols cost <= 1.001 x sum(-log2 p_quantised) + the fixed per-lane overhead."""
    rng = np.random.default_rng(3)
    lanes, D, prec = 16, 62500, 16
    m = Messages(lanes, 2)
    if family == "bernoulli":
        lg = (rng.normal(size=(lanes, D)) * 3).astype(np.float32)
        x = (rng.random((lanes, D)) < 1 / (1 + np.exp(-lg))).astype(np.uint8)
        bernoulli.push(m, lg, x, prec)
        ideal = bernoulli.code_length(lg, x, prec)
    else:
        mean = rng.uniform(0, 255, (lanes, D)).astype(np.float32)
        ls = rng.uniform(-1, 3, (lanes, D)).astype(np.float32)
        x = pixels(rng, mean, ls)
        logistic.push(m, mean, ls, x, prec)
        ideal = logistic.code_length(logistic.starts_freqs(mean, ls, x, prec), prec)
    actual = len(m.to_bytes()) * 8
    overhead = 64 + lanes * (LANE_OVERHEAD_BITS + 33)      # header + per lane (fields + head slack)
    assert actual <= 1.001 * ideal + overhead, (actual, ideal)
    assert actual >= ideal - lanes * 64


def test_fast_exp_constants_are_literals_near_the_exact_values():
    """fexp's constants are shipped as literals (no libm at import); each is within 3 ulps
    of the exact value (the literals are glibc's ln2 ** k / k!, whose pow rounds off)."""
    from bitsback.cdf import _exp

    src = Path(_exp.__file__).read_text()
    assert "import math" not in src and "fromhex" in src
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(40):
        ln2 = mpmath.log(2)
        assert _exp._LOG2E == float(1 / ln2) and _exp._LN2 == float(ln2)
        for k, c in enumerate(_exp._C):
            assert abs(c - float(ln2 ** k / mpmath.factorial(k))) <= 3 * np.spacing(c), k


def test_fast_exp_accurate_and_monotone():
    from bitsback.cdf._exp import fexp
    xs = np.linspace(-50, 50, 200001)
    ys = np.array([fexp(v) for v in xs])
    assert np.all(np.diff(ys) >= 0)
    assert np.max(np.abs(ys / np.exp(xs) - 1)) < 1e-10
    assert fexp(1e300) == fexp(700.0) and fexp(-1e300) == fexp(-700.0) > 0
    # across cell boundaries (x = n ln 2), ulp by ulp
    for n in (-5, -1, 0, 1, 3, 40):
        v = np.nextafter(n * math.log(2), -np.inf)
        for _ in range(20):
            v = np.nextafter(v, -np.inf)
        prev = fexp(v)
        for _ in range(60):
            v = np.nextafter(v, np.inf)
            cur = fexp(v)
            assert cur >= prev
            prev = cur


def test_constants_and_errors():
    assert cdf.LOG_SCALE_MIN == -7.0 and cdf.LOG_SCALE_MAX == 7.0
    m = Messages(2, 0)
    with pytest.raises(ValueError):
        logistic.push(m, np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)), 16)   # 3 rows > 2 lanes
    with pytest.raises(ValueError):
        logistic.push(m, np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), 8)    # prec < 9
    with pytest.raises(ValueError):
        bernoulli.push(m, np.zeros((1, 2)), np.array([[0, 2]]), 8)
    with pytest.raises(ValueError):
        latent.push_posterior(m, np.zeros((1, 1)), np.ones((1, 1)), np.array([[16]]), 10, 4)
    with pytest.raises(ValueError):
        latent.centres(17)


@SETTINGS
@given(n=st.integers(1, 5), D=st.sampled_from([1, 7, 255, 256, 257, 600]), prec=st.sampled_from([9, 12, 16, 24, 31]),
       seed=st.integers(0, 2**32 - 1))
def test_family_kernels_match_reference_cdfs(n, D, prec, seed):
    """The blocked/fused push kernels (phase A split into passes) code exactly the
    (start, freq) of the reference per-symbol CDFs: same bytes as the C bulk push."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(-20, 275, (n, D)).astype(np.float32)
    ls = rng.uniform(-8, 8, (n, D)).astype(np.float32)
    lg = (rng.normal(size=(n, D)) * 10).astype(np.float32)
    idx = rng.integers(0, n * D, max(1, n * D // 4))
    mean.ravel()[idx] = rng.choice(NASTY, idx.size)
    ls.ravel()[idx[::-1]] = rng.choice(NASTY, idx.size)
    lg.ravel()[idx] = rng.choice(NASTY, idx.size)
    x = rng.integers(0, 256, (n, D)).astype(np.uint8)
    xb = rng.integers(0, 2, (n, D)).astype(np.uint8)
    for fam_push, ref in [(lambda m: logistic.push(m, mean, ls, x, prec), logistic.starts_freqs(mean, ls, x, prec)),
                          (lambda m: bernoulli.push(m, lg, xb, prec), bernoulli.starts_freqs(lg, xb, prec))]:
        a, b = Messages(n, seed), Messages(n, seed)
        fam_push(a)
        b.push(ref[0], ref[1], prec)
        assert a.to_bytes() == b.to_bytes()
