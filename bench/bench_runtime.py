"""pytest-benchmark suites for the onnxruntime networks (encoder and decoder) at several batch sizes.

    .venv/bin/python -m pytest bench/bench_runtime.py --benchmark-only

Batch 1 is the chained per-image path; 9-32 are the codec's per-step batches (one image
per lane); 1000 is a throughput ceiling for the networks alone. Divide by the batch for
time per image (``extra_info["batch"]``).
"""
import numpy as np
import pytest

from bitsback import cdf
from bitsback.runtime import Network

from bench_codec import KINDS, model_for
from bitsback.codec import resolve_model

BATCHES = [1, 12, 1000]


@pytest.fixture(scope="module", params=sorted(KINDS))
def nets(request, tmp_path_factory):
    d = resolve_model(model_for(request.param, tmp_path_factory))
    return request.param, Network(d / "encoder.onnx", "cpu"), Network(d / "decoder.onnx", "cpu")


@pytest.mark.parametrize("batch", BATCHES)
def test_encoder(benchmark, nets, batch):
    name, enc, _ = nets
    levels = KINDS[name]["levels"]
    x = np.random.default_rng(0).integers(0, levels, (batch, 784)).astype(np.float32)
    benchmark.extra_info.update(model=name, batch=batch)
    out = benchmark(lambda: enc(x=x))
    assert out["mu"].shape[0] == batch


@pytest.mark.parametrize("batch", BATCHES)
def test_decoder(benchmark, nets, batch):
    name, _, dec = nets
    c = cdf.latent.centres(12)
    z = c[np.random.default_rng(0).integers(0, len(c), (batch, 32))].astype(np.float32)
    benchmark.extra_info.update(model=name, batch=batch)
    out = benchmark(lambda: dec(z=z))
    assert next(iter(out.values())).shape[0] == batch
