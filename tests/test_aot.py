"""The ahead-of-time compiled kernels (bitsback.cdf._aot): the coding path runs without
importing numba, and computes exactly what numba's JIT kernels compute.

Skipped where the AOT module is not built (numba missing at build time, or
BITSBACK_NO_AOT) or is stale (kernel sources changed since the build).
"""
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from bitsback._rans import Messages
from bitsback.cdf import _kernels, _sigs, bernoulli, latent, logistic
from bitsback.cdf.context import Context

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"
ZOO = ROOT / "src" / "bitsback" / "zoo"
MODELS = sorted(p.name for p in ZOO.iterdir() if (p / "manifest.json").is_file()) if ZOO.is_dir() else []

AOTS = _kernels.aot_modules()   # also under BITSBACK_JIT=1 (the JIT is then the default)
AOT = AOTS[0] if AOTS else None
pytestmark = pytest.mark.skipif(AOT is None, reason=f"no usable AOT module: {_kernels.reason}")


@pytest.fixture(params=[m.__name__.rsplit(".", 1)[1] for m in AOTS] or ["none"])
def aot(request):
    """Each usable AOT module in turn (_aot_v3 and _aot on an AVX2 machine)."""
    return next(m for m in AOTS if m.__name__.endswith("." + request.param))

NASTY = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, 3e-39, 255.4999, 127.5]


def _env(jit):
    env = {k: v for k, v in os.environ.items() if k != "BITSBACK_JIT"}
    if jit:
        env["BITSBACK_JIT"] = "1"
    env["NUMBA_NUM_THREADS"] = "1"
    return env


ROUND_TRIP = r"""
import hashlib, json, sys
import numpy as np
import bitsback
from bitsback import datasets
from bitsback.cdf import _kernels

names, fixture = json.loads(sys.argv[1]), sys.argv[2]
images = datasets.load(fixture)[:24]
out = {}
for name in names:
    x = datasets.binarize(images) if "binary" in name else images
    codec = bitsback.load(name, device="cpu")
    blob = codec.compress(x)
    assert np.array_equal(codec.decompress(blob), x), name
    out[name] = hashlib.sha256(blob).hexdigest()
print(json.dumps({"blobs": out, "numba": "numba" in sys.modules, "backend": _kernels.backend,
                  "fallbacks": _kernels.jit_fallbacks}))
"""


def _round_trip(jit):
    r = subprocess.run([sys.executable, "-c", ROUND_TRIP, json.dumps(MODELS), str(FIXTURE)], capture_output=True,
                       text=True, timeout=900, cwd=ROOT, env=_env(jit))
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def aot_run():
    if not MODELS:
        pytest.skip("no bundled models")
    return _round_trip(jit=False)


def test_coding_path_does_not_import_numba(aot_run):
    """Fresh interpreter: compress + decompress with every bundled model, AOT kernels."""
    assert aot_run["backend"] == "aot"
    assert not aot_run["fallbacks"], aot_run["fallbacks"]
    assert not aot_run["numba"], "numba was imported on the AOT coding path"


def test_aot_and_jit_files_are_identical(aot_run):
    jit_run = _round_trip(jit=True)
    assert jit_run["backend"] == "jit" and jit_run["numba"]
    assert jit_run["blobs"] == aot_run["blobs"]


# ---- kernel by kernel, in this process: the AOT function against the JIT one ------------

@contextmanager
def backend(kind, module=None):
    """Run the wrappers on one backend ("aot": module, default the preferred one; or "jit")."""
    saved = (_kernels._aot, dict(_kernels._fns))
    _kernels._aot = (module or AOT) if kind == "aot" else None
    _kernels._fns.clear()
    try:
        yield
    finally:
        _kernels._aot = saved[0]
        _kernels._fns.clear()
        _kernels._fns.update(saved[1])


def _both(fn, module):
    """fn() under the AOT module's kernels and under the JIT kernels: (aot result, jit result)."""
    before = dict(_kernels.jit_fallbacks)
    with backend("aot", module):
        a = fn()
    assert _kernels.jit_fallbacks == before, "an AOT call fell back to the JIT"
    with backend("jit"):
        b = fn()
    return a, b


def _same(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    else:
        assert a == b


def _nasty(rng, a):
    idx = rng.integers(0, a.size, max(1, a.size // 5))
    a.ravel()[idx] = rng.choice(NASTY, idx.size)
    return a


def _coded(push, pop, n, seed):
    """push onto fresh lanes, record the bytes, pop back: (bytes, popped, final bytes)."""
    m = Messages(n, seed)
    push(m)
    blob = m.to_bytes()
    return blob, pop(m), m.to_bytes()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("prec", [9, 16, 24, 31])
def test_logistic_kernels(seed, prec, aot):
    rng = np.random.default_rng(seed)
    n, D, K = int(rng.integers(1, 9)), int(rng.choice([1, 7, 255, 256, 257, 700])), int(rng.integers(1, 5))
    mean = _nasty(rng, rng.uniform(-20, 275, (n, D)).astype(np.float32))
    ls = _nasty(rng, rng.uniform(-8, 8, (n, D)).astype(np.float32))
    x = rng.integers(0, 256, (n, D)).astype(np.uint8)
    lw = _nasty(rng, rng.normal(size=(n, D, K)).astype(np.float32) * 3)
    mm = _nasty(rng, rng.uniform(-20, 275, (n, D, K)).astype(np.float32))
    ml = _nasty(rng, rng.uniform(-8, 8, (n, D, K)).astype(np.float32))
    H, W = 3, max(1, D // 30)
    am = _nasty(rng, rng.uniform(-20, 275, (n, 3, H, W)).astype(np.float32))
    al = _nasty(rng, rng.uniform(-8, 8, (n, 3, H, W)).astype(np.float32))
    ac = _nasty(rng, rng.normal(size=(n, 3, H, W)).astype(np.float32))
    ax = rng.integers(0, 256, (n, 3, H, W)).astype(np.uint8)

    def run():
        return [
            _coded(lambda m: logistic.push(m, mean, ls, x, prec), lambda m: logistic.pop(m, mean, ls, prec), n, seed),
            _coded(lambda m: logistic.push_mixture(m, lw, mm, ml, x, prec),
                   lambda m: logistic.pop_mixture(m, lw, mm, ml, prec), n, seed),
            _coded(lambda m: logistic.push_ar(m, am, al, ac, ax, prec),
                   lambda m: logistic.pop_ar(m, am, al, ac, prec), n, seed),
            logistic.cdf_table(mean, ls, prec), logistic.freqs(mean, ls, x, prec),
            logistic.mixture_starts_freqs(lw, mm, ml, x, prec), logistic.ar_starts_freqs(am, al, ac, ax, prec),
        ]

    a, b = _both(run, aot)
    _same(a, b)
    assert np.array_equal(a[0][1], x) and np.array_equal(a[1][1], x) and np.array_equal(a[2][1], ax)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("prec", [1, 12, 24, 31])
def test_bernoulli_kernels(seed, prec, aot):
    rng = np.random.default_rng(seed)
    n, D = int(rng.integers(1, 9)), int(rng.choice([1, 7, 255, 256, 257, 700]))
    lg = _nasty(rng, (rng.normal(size=(n, D)) * 10).astype(np.float32))
    x = rng.integers(0, 2, (n, D)).astype(np.uint8)

    def run():
        return [_coded(lambda m: bernoulli.push(m, lg, x, prec), lambda m: bernoulli.pop(m, lg, prec), n, seed),
                bernoulli.starts_freqs(lg, x, prec), bernoulli.starts_freqs(lg[0], x[0], prec)]

    a, b = _both(run, aot)
    _same(a, b)
    assert np.array_equal(a[0][1], x)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bits,prec", [(1, 1), (4, 12), (8, 20), (16, 31)])
@pytest.mark.parametrize("portable", [True, False])     # the grid Phi (versions >= 5), erfc (<= 4)
def test_latent_kernels(seed, bits, prec, portable, aot):
    rng = np.random.default_rng(seed)
    n, Z = int(rng.integers(1, 9)), int(rng.integers(1, 60))
    mu = _nasty(rng, rng.normal(size=(n, Z)).astype(np.float32) * 3)
    sigma = _nasty(rng, np.exp(rng.normal(size=(n, Z))).astype(np.float32))
    idx = rng.integers(0, 1 << bits, (n, Z))
    u = rng.integers(0, 1 << prec, (n, Z), dtype=np.uint64)

    def run():
        return [_coded(lambda m: latent.push_posterior(m, mu, sigma, idx, prec, bits, portable=portable),
                       lambda m: latent.pop_posterior(m, mu, sigma, prec, bits, portable=portable), n, seed),
                latent.cdf_table(mu, sigma, prec, bits, portable=portable),
                latent.sample_posterior(mu, sigma, u, prec, bits, portable=portable)]

    a, b = _both(run, aot)
    _same(a, b)
    assert np.array_equal(a[0][1], idx)


def _context(lik, rng):
    from bitsback.codec import resolve_model

    name = "mnist-binary" if lik == "bernoulli_context" else "mnist-grey"
    try:
        spec = json.loads((resolve_model(name) / "manifest.json").read_text())["config"]["context"]
    except Exception as e:      # noqa: BLE001  (no bundled model: skip)
        pytest.skip(f"no context spec from {name}: {e}")
    from bitsback.cdf.context import TABLES, n_contexts, n_features

    C, d = n_contexts(spec), n_features(lik, spec)
    if lik == "bernoulli_context":
        tables = {"gain": rng.normal(size=(C, d)), "bias": rng.normal(size=C) * 3}
    else:
        K, J = int(spec["mixture"]), len(spec["lin_offsets"])
        shapes = {"coef": (C, K, J)}
        tables = {k: rng.normal(size=shapes.get(k, (C, K))) * 0.3 for k in TABLES[lik]}
    return Context(lik, spec, {k: v.astype(np.float32) for k, v in tables.items()}), d


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lik", ["bernoulli_context", "logistic_context"])
def test_context_kernels(seed, lik, aot):
    rng = np.random.default_rng(seed)
    ctx, d = _context(lik, rng)
    n = int(rng.integers(1, 7))
    hi = 2 if lik == "bernoulli_context" else 256
    x = rng.integers(0, hi, (n, ctx.D)).astype(np.uint8)
    feats = rng.normal(size=(n, ctx.D, d)).astype(np.float32)
    prec = 24

    def run():
        return [_coded(lambda m: ctx.push(m, feats, x, prec), lambda m: ctx.pop(m, feats, prec), n, seed),
                ctx.code_length(feats, x, prec)]

    a, b = _both(run, aot)
    _same(a, b)
    assert np.array_equal(a[0][1], x)


def test_signature_mismatch_goes_to_the_jit():
    """An argument the AOT function would misread (float64 for float32, a strided array)
    is never passed to it: the call goes to the JIT kernel, with the same result."""
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 255, (3, 40))
    ls = rng.uniform(-3, 3, (3, 40))
    x = rng.integers(0, 256, (3, 40)).astype(np.uint8)
    want = _kernels.jit("logistic_freqs")(mean.astype(np.float32), ls.astype(np.float32), x, 16)
    before = _kernels.jit_fallbacks.get("logistic_freqs", 0)
    f = _kernels._checked("logistic_freqs", AOT.logistic_freqs)
    got = f(mean.astype(np.float32), ls.astype(np.float32)[:, ::-1][:, ::-1], x, 16)   # still C order: AOT
    assert _kernels.jit_fallbacks.get("logistic_freqs", 0) == before
    assert np.array_equal(got, want)
    for bad in [(mean, ls.astype(np.float32), x, 16),                                    # float64
                (mean.astype(np.float32)[:, ::2], ls.astype(np.float32)[:, ::2], x[:, ::2], 16)]:  # strided
        f(*bad)
    assert _kernels.jit_fallbacks.get("logistic_freqs", 0) == before + 2
    _kernels.jit_fallbacks["logistic_freqs"] = before


def test_module_matches_sources():
    for mod in AOTS:
        assert mod.source_hash() == _sigs.source_hash() and mod.cpu_ok() == 1
        for name in _sigs.KERNELS:
            assert callable(getattr(mod, name))
    if "BITSBACK_JIT" not in os.environ:
        assert _kernels.backend == "aot" and _kernels.get("logistic_freqs").__name__ == "logistic_freqs"
