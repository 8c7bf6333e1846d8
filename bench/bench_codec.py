"""pytest-benchmark suites for the end-to-end codec: batch and single-image compress/decompress.

    .venv/bin/python -m pytest bench/bench_codec.py --benchmark-only

Uses the bundled models when they are installed, else a seeded random-init MLP VAE of the
same architecture exported to a temp dir (same shapes and coder work; the rate differs).
``extra_info`` records which model ran, the image count and bits/dim.
"""
import numpy as np
import pytest

import bitsback
from bitsback import datasets, zoo
from bitsback.bench import DEFAULT_DATA, preprocess

N_BATCH = 1000
KINDS = {
    "mnist-binary": {"likelihood": "bernoulli_context", "levels": 2, "mixture": 1, "preprocess": "binarize"},
    "mnist-grey": {"likelihood": "logistic_context", "levels": 256, "mixture": 3, "preprocess": "none"},
    "mnist-binary-mlp": {"likelihood": "bernoulli", "levels": 2, "mixture": 1, "preprocess": "binarize"},
    "mnist-grey-mlp": {"likelihood": "logistic_mixture", "levels": 256, "mixture": 2, "preprocess": "none"},
}


def model_for(name: str, tmp_path_factory) -> str:
    """The bundled model ``name`` if installed, else a random-init stand-in (needs torch)."""
    if name in zoo.list_models():
        return name
    torch = pytest.importorskip("torch")
    from bitsback.export import export_vae
    from bitsback.models import build_vae

    k = KINDS[name]
    cfg = {"arch": "mlp", "image_shape": [28, 28], "levels": k["levels"], "likelihood": k["likelihood"],
           "latent": 32, "hidden": [500, 500], "mixture": k["mixture"]}
    torch.manual_seed(0)
    enc, dec = build_vae(cfg)
    out = tmp_path_factory.mktemp("bench-models") / f"{name}-random"
    export_vae(enc, dec, out, likelihood=k["likelihood"], image_shape=(28, 28), levels=k["levels"],
               name=f"{name}-random", config=cfg, mixture=k["mixture"], preprocess=k["preprocess"])
    return str(out)


_IMAGES = {}


def images_for(codec, n):
    key = (codec.model.levels, n)
    if key not in _IMAGES:
        _IMAGES[key] = preprocess(codec.model, datasets.load(DEFAULT_DATA)[:n])
    return _IMAGES[key]


@pytest.fixture(scope="module", params=sorted(KINDS))
def codec(request, tmp_path_factory):
    return bitsback.load(model_for(request.param, tmp_path_factory), device="cpu")


def _info(benchmark, codec, n, blob=None):
    benchmark.extra_info.update(model=codec.model.name, images=n, lanes=sum(sl for _, sl in codec.plan(n)))
    if blob is not None:
        benchmark.extra_info["bits_per_dim"] = 8 * len(blob) / (n * codec.model.dim)


def test_compress_batch(benchmark, codec):
    x = images_for(codec, N_BATCH)
    codec.compress(x[:64])  # JIT warm-up
    blob = benchmark.pedantic(codec.compress, args=(x,), rounds=3, iterations=1, warmup_rounds=0)
    _info(benchmark, codec, N_BATCH, blob)


def test_decompress_batch(benchmark, codec):
    x = images_for(codec, N_BATCH)
    blob = codec.compress(x)
    y = benchmark.pedantic(codec.decompress, args=(blob,), rounds=3, iterations=1, warmup_rounds=0)
    assert np.array_equal(y, x)
    _info(benchmark, codec, N_BATCH, blob)


def test_compress_single_image(benchmark, codec):
    x = images_for(codec, 1)[0]
    blob = benchmark.pedantic(codec.compress, args=(x,), rounds=200, iterations=1, warmup_rounds=5)
    _info(benchmark, codec, 1, blob)


def test_decompress_single_image(benchmark, codec):
    x = images_for(codec, 1)[0]
    blob = codec.compress(x)
    y = benchmark.pedantic(codec.decompress, args=(blob,), rounds=200, iterations=1, warmup_rounds=5)
    assert np.array_equal(y[0], x)
    _info(benchmark, codec, 1, blob)
