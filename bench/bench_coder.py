"""pytest-benchmark suites for the rANS core and each symbol family.

    .venv/bin/python -m pytest bench/bench_coder.py --benchmark-only

Each benchmark codes N symbols over LANES lanes; divide the reported time by N for
ns/symbol (the `extra_info` of each benchmark holds N).
"""
import numpy as np
import pytest

from bitsback import cdf
from bitsback._rans import Messages
from bitsback.cdf import bernoulli, latent, logistic

LANES, D = 16, 1 << 14
N = LANES * D
rng = np.random.default_rng(0)
LOGITS = (rng.normal(size=(LANES, D)) * 3).astype(np.float32)
XB = (rng.random((LANES, D)) < 1 / (1 + np.exp(-LOGITS))).astype(np.uint8)
MEAN = rng.uniform(0, 255, (LANES, D)).astype(np.float32)
LS = rng.uniform(-1, 3, (LANES, D)).astype(np.float32)
XL = np.clip(np.round(MEAN + rng.logistic(size=(LANES, D)) * np.exp(LS)), 0, 255).astype(np.uint8)
U16 = rng.integers(0, 1 << 16, (LANES, D)).astype(np.uint32)
CDF = np.concatenate([[0], np.sort(rng.choice(np.arange(1, 1 << 16), 255, replace=False)), [1 << 16]]).astype(np.uint32)
XC = rng.integers(0, 256, (LANES, D))


def encoded(push):
    m = Messages(LANES, 0)
    push(m)
    return m.to_bytes()


def run(benchmark, fn):
    benchmark.extra_info["symbols"] = N
    return benchmark(fn)


def test_uniform_push(benchmark):
    run(benchmark, lambda: encoded(lambda m: m.push_uniform(U16, 16)))


def test_uniform_pop(benchmark):
    blob = encoded(lambda m: m.push_uniform(U16, 16))
    out = run(benchmark, lambda: Messages.from_bytes(blob, 0).pop_uniform(LANES, D, 16))
    assert np.array_equal(out, U16)


def test_categorical_push(benchmark):
    run(benchmark, lambda: encoded(lambda m: m.push(CDF[XC], CDF[XC + 1] - CDF[XC], 16)))


def test_categorical_pop_table(benchmark):
    blob = encoded(lambda m: m.push(CDF[XC], CDF[XC + 1] - CDF[XC], 16))
    out = run(benchmark, lambda: Messages.from_bytes(blob, 0).pop_table(CDF, LANES, D, 16))
    assert np.array_equal(out, XC)


def test_bernoulli_push(benchmark):
    run(benchmark, lambda: encoded(lambda m: bernoulli.push(m, LOGITS, XB, 16)))


def test_bernoulli_pop(benchmark):
    blob = encoded(lambda m: bernoulli.push(m, LOGITS, XB, 16))
    out = run(benchmark, lambda: bernoulli.pop(Messages.from_bytes(blob, 0), LOGITS, 16))
    assert np.array_equal(out, XB)


def test_logistic_push(benchmark):
    run(benchmark, lambda: encoded(lambda m: logistic.push(m, MEAN, LS, XL, 16)))


def test_logistic_pop(benchmark):
    blob = encoded(lambda m: logistic.push(m, MEAN, LS, XL, 16))
    out = run(benchmark, lambda: logistic.pop(Messages.from_bytes(blob, 0), MEAN, LS, 16))
    assert np.array_equal(out, XL)


MIX = 5
LW3 = rng.normal(size=(LANES, D // 16, MIX)).astype(np.float32)
M3 = rng.uniform(0, 255, (LANES, D // 16, MIX)).astype(np.float32)
LS3 = rng.uniform(-1, 3, (LANES, D // 16, MIX)).astype(np.float32)
XM = rng.integers(0, 256, (LANES, D // 16)).astype(np.uint8)


def test_mixture5_push(benchmark):
    benchmark.extra_info["symbols"] = XM.size
    benchmark(lambda: encoded(lambda m: logistic.push_mixture(m, LW3, M3, LS3, XM, 16)))


def test_mixture5_pop(benchmark):
    blob = encoded(lambda m: logistic.push_mixture(m, LW3, M3, LS3, XM, 16))
    benchmark.extra_info["symbols"] = XM.size
    out = benchmark(lambda: logistic.pop_mixture(Messages.from_bytes(blob, 0), LW3, M3, LS3, 16))
    assert np.array_equal(out, XM)


AR_SHAPE = (LANES, 3, 32, 32)
AM = rng.uniform(0, 255, AR_SHAPE).astype(np.float32)
AL = rng.uniform(0, 3, AR_SHAPE).astype(np.float32)
AC = (rng.normal(size=AR_SHAPE) * 0.3).astype(np.float32)
XA = rng.integers(0, 256, AR_SHAPE).astype(np.uint8)


def test_channel_ar_push(benchmark):
    benchmark.extra_info["symbols"] = XA.size
    benchmark(lambda: encoded(lambda m: logistic.push_ar(m, AM, AL, AC, XA, 16)))


def test_channel_ar_pop(benchmark):
    blob = encoded(lambda m: logistic.push_ar(m, AM, AL, AC, XA, 16))
    benchmark.extra_info["symbols"] = XA.size
    out = benchmark(lambda: logistic.pop_ar(Messages.from_bytes(blob, 0), AM, AL, AC, 16))
    assert np.array_equal(out, XA)


Z = D // 16
MU = rng.normal(size=(LANES, Z)).astype(np.float32)
SG = np.exp(rng.normal(size=(LANES, Z)) - 2).astype(np.float32)


@pytest.mark.parametrize("b", [8, 12])
def test_latent_pop_posterior(benchmark, b):
    benchmark.extra_info["symbols"] = MU.size
    benchmark(lambda: latent.pop_posterior(Messages(LANES, 0), MU, SG, 20, b))


@pytest.mark.parametrize("b", [8, 12])
def test_latent_push_posterior(benchmark, b):
    z = latent.pop_posterior(Messages(LANES, 0), MU, SG, 20, b)
    benchmark.extra_info["symbols"] = MU.size
    benchmark(lambda: encoded(lambda m: latent.push_posterior(m, MU, SG, z, 20, b)))


def test_cdf_table_logistic(benchmark):
    benchmark.extra_info["symbols"] = 4096 * 257
    benchmark(lambda: logistic.cdf_table(MEAN.ravel()[:4096], LS.ravel()[:4096], 16))


@pytest.fixture(autouse=True)
def _serial():
    cdf.set_threads(1)
