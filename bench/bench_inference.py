"""pytest-benchmark suites for K-step optimal inference (Algorithm 2, torch on CPU).

    .venv/bin/python -m pytest bench/bench_inference.py --benchmark-only

One call = K Adam steps on (mu, rho) for a batch of images, as the codec runs it per step
(batch = lanes). Divide by K * batch for time per image per step (``extra_info``).
"""
import numpy as np
import pytest

pytest.importorskip("torch")

from bitsback import datasets  # noqa: E402
from bitsback.bench import DEFAULT_DATA  # noqa: E402
from bitsback.codec import Model, resolve_model  # noqa: E402
from bitsback.inference import Optimiser  # noqa: E402
from bitsback.runtime import Network  # noqa: E402

from bench_codec import KINDS, model_for  # noqa: E402

K = 8


@pytest.fixture(scope="module", params=sorted(KINDS))
def setup(request, tmp_path_factory):
    d = resolve_model(model_for(request.param, tmp_path_factory))
    m = Model(d)
    x = datasets.load(DEFAULT_DATA)[:32].reshape(32, -1)
    if m.levels == 2:
        x = datasets.binarize(x)
    enc = Network(d / "encoder.onnx", "cpu")
    out = enc(x=x.astype(np.float32))
    return request.param, Optimiser(d, m.likelihood), x, out["mu"], out["sigma"]


@pytest.mark.parametrize("batch", [1, 12])
def test_k_steps(benchmark, setup, batch):
    name, opt, x, mu, sigma = setup
    xs, ms, ss = x[:batch], mu[:batch], sigma[:batch]
    benchmark.extra_info.update(model=name, batch=batch, k=K)
    mu_k, sigma_k = benchmark.pedantic(opt, args=(xs, ms, ss), kwargs=dict(k=K, lr=5e-3, seed=0, step=0),
                                       rounds=10, iterations=1, warmup_rounds=1)
    assert mu_k.shape == ms.shape and np.isfinite(sigma_k).all()
