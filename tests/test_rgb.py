"""RGB end to end: ``logistic_ar``, the paper's channel-wise autoregressive discretised
logistic (red, then green given red, then blue given red and green), on a small
random-weight ResNet VAE exported to ONNX and coded by the codec."""
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import bitsback  # noqa: E402
from bitsback.export import export_vae  # noqa: E402
from bitsback.models import OUTPUT_NAMES, build_vae  # noqa: E402
from bitsback.models.likelihoods import logistic_ar_logprob  # noqa: E402

SHAPE = (3, 8, 8)
D = int(np.prod(SHAPE))
LATENT = 8
CFG = {"arch": "resnet", "image_shape": list(SHAPE), "likelihood": "logistic_ar", "levels": 256,
       "latent": LATENT, "channels": 8, "blocks": 1}
# Uniform random pixels cost at best ~8.28 bits under one discretised logistic (scale ~45,
# log 3.8, mean 127.5): a freshly initialised decoder predicts scale ~17 and would spend
# ~10 bits/dim. So the test model's log-scale head is set near that optimum; its mean and
# AR-coefficient heads keep their random weights (coefficients up to ~0.2 in magnitude).
LOG_SCALE = 3.8


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    torch.manual_seed(0)
    enc, dec = build_vae(CFG)
    with torch.no_grad():   # decoder.out channels: mean 0..2, log_scale 3..5, coeffs 6..8
        dec.out.weight[3:6] *= 0.1
        dec.out.bias[3:6] = LOG_SCALE - (math.log(127.5) - 2.0)
    d = tmp_path_factory.mktemp("rgb") / "rgb-resnet"
    man = export_vae(enc, dec, d, likelihood="logistic_ar", image_shape=SHAPE, levels=256, latent=LATENT,
                     name="rgb-resnet-test", preprocess="none", config=CFG)
    assert man["likelihood"] == "logistic_ar" and man["image_shape"] == list(SHAPE)
    return d, enc.eval(), dec.eval()


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *SHAPE), dtype=np.uint8)


def _round_trip(model_dir, x, lanes):
    codec = bitsback.load(str(model_dir), device="cpu", lanes=lanes)
    blob = codec.compress(x)
    y = codec.decompress(blob)
    assert y.dtype == np.uint8 and y.shape == x.shape
    assert np.array_equal(y, x)
    # a fresh codec decodes it too (nothing carried over from the encoding side)
    assert np.array_equal(bitsback.load(str(model_dir), device="cpu").decompress(blob), x)
    bpd = 8 * len(blob) / x.size
    assert math.isfinite(bpd) and bpd > 0
    from bitsback.codec import info

    h = info(blob)
    assert h["likelihood"] == "logistic_ar" and tuple(h["shape"]) == SHAPE and h["n"] == len(x)
    return blob, bpd


def test_logistic_ar_round_trip_two_lanes(rgb_model):
    _round_trip(rgb_model[0], _images(5, 0), lanes=2)


def test_logistic_ar_round_trip_one_image_one_lane(rgb_model):
    _round_trip(rgb_model[0], _images(1, 1), lanes=1)


def test_logistic_ar_rate_on_random_images(rgb_model):
    """Random images cost about 8 bits/dim. Enough images that the header (~250 bytes)
    and each lane's initial latent bits are a small share of the file."""
    x = _images(256, 2)
    _, bpd = _round_trip(rgb_model[0], x, lanes=2)
    assert bpd < 8.5, f"{bpd:.3f} bits/dim for uniform random RGB images"


def _bound_likelihood(model_dir):
    from bitsback.bbans.likelihoods import LIKELIHOODS, for_model

    manifest = json.loads((model_dir / "manifest.json").read_text())
    lik = for_model("logistic_ar", manifest, model_dir, SHAPE)
    assert isinstance(lik, LIKELIHOODS["logistic_ar"])
    assert tuple(lik.outputs) == tuple(OUTPUT_NAMES["logistic_ar"])   # coder and ONNX agree on names
    return lik


def _torch_nll(mean, log_scale, coeffs, x):
    """What training minimises: float32 torch, nats per image."""
    return -logistic_ar_logprob(mean, log_scale, coeffs, torch.as_tensor(x, dtype=torch.float32), levels=256).numpy()


def test_logistic_ar_nll_and_code_length_match_torch(rgb_model):
    model_dir, _, dec = rgb_model
    lik = _bound_likelihood(model_dir)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, LATENT, generator=g) * 2
    with torch.no_grad():
        mean, log_scale, coeffs = dec(z)
    assert mean.shape == (6, D) and log_scale.shape == (6, D) and coeffs.shape == (6, 3, D // 3)
    out = {"mean": mean.numpy(), "log_scale": log_scale.numpy(), "coeffs": coeffs.numpy()}
    rng = np.random.default_rng(4)
    x_rand = rng.integers(0, 256, size=(6, D)).astype(np.uint8)
    x_rand[:, :8] = 0            # the edge bins take the tails
    x_rand[:, 8:16] = 255
    # and images the model finds likely (its own samples: r, then g | r, then b | r, g)
    from bitsback.models.likelihoods import sample

    x_model = sample("logistic_ar", (mean, log_scale, coeffs), generator=g).numpy().astype(np.uint8)
    for x in (x_rand, x_model):
        nll = lik.nll(out, x, 256)
        assert nll.shape == (6,) and np.isfinite(nll).all()
        np.testing.assert_allclose(nll, _torch_nll(mean, log_scale, coeffs, x), rtol=1e-4)
        # the quantised code length (24-bit CDFs, what the coder spends) is the same rate
        bits = lik.code_length(out, x, 24)
        assert math.isfinite(bits)
        assert abs(bits / (nll.sum() / math.log(2)) - 1) < 1e-3, (bits, nll.sum() / math.log(2))


def test_logistic_ar_nll_matches_torch_at_the_extremes(rgb_model):
    """Hand-made outputs: log-scales beyond both clamps, means outside 0..255, coefficients
    near +-1 (the conditional means of green and blue then move far)."""
    lik = _bound_likelihood(rgb_model[0])
    rng = np.random.default_rng(5)
    n = 4
    mean = rng.uniform(-60, 320, size=(n, D)).astype(np.float32)
    log_scale = rng.uniform(-9, 9, size=(n, D)).astype(np.float32)
    coeffs = rng.uniform(-0.999, 0.999, size=(n, 3, D // 3)).astype(np.float32)
    x = rng.integers(0, 256, size=(n, D)).astype(np.uint8)
    out = {"mean": mean, "log_scale": log_scale, "coeffs": coeffs}
    nll = lik.nll(out, x, 256)
    assert np.isfinite(nll).all()
    ref = _torch_nll(torch.from_numpy(mean), torch.from_numpy(log_scale), torch.from_numpy(coeffs), x)
    np.testing.assert_allclose(nll, ref, rtol=1e-4)


def test_logistic_ar_needs_rgb(tmp_path):
    from bitsback.bbans.likelihoods import LIKELIHOODS
    from bitsback.errors import BitsbackError

    with pytest.raises(BitsbackError, match="RGB"):
        LIKELIHOODS["logistic_ar"]({"name": "grey"}, tmp_path, (1, 8, 8))
