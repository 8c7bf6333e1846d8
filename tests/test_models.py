import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitsback.models import LOG_SCALE_MAX, LOG_SCALE_MIN, build_vae, decoder_logprob, sample  # noqa: E402
from bitsback.models.likelihoods import discretized_logistic_logprob_elementwise  # noqa: E402


def _ref_logistic_bins(mean, log_scale):
    """Reference: probabilities of all 256 bins from the CDF at the bin edges (float64)."""
    s = math.exp(min(max(log_scale, LOG_SCALE_MIN), LOG_SCALE_MAX))
    F = lambda e: 0.5 * (1.0 + math.tanh(0.5 * (e - mean) / s))  # noqa: E731  (no overflow)
    edges = [F(k + 0.5) for k in range(255)]
    p = [edges[0]] + [edges[k] - edges[k - 1] for k in range(1, 255)] + [1.0 - edges[-1]]
    return np.array(p)


@pytest.mark.parametrize("mean,log_scale", [(0.0, 0.0), (127.3, 2.0), (300.0, 1.0), (-40.0, 3.0),
                                            (200.0, -5.0), (10.0, 6.9), (50.0, -9.0), (50.0, 9.0)])
def test_discretized_logistic_matches_cdf_differences(mean, log_scale):
    k = torch.arange(256, dtype=torch.float64)
    lp = discretized_logistic_logprob_elementwise(torch.full_like(k, mean), torch.full_like(k, log_scale), k)
    p = lp.exp().numpy()
    ref = _ref_logistic_bins(mean, log_scale)
    assert abs(p.sum() - 1.0) < 1e-9
    mask = ref > 1e-12
    np.testing.assert_allclose(p[mask], ref[mask], rtol=1e-6, atol=1e-12)
    assert np.all(np.isfinite(lp.numpy()))


def test_mixture_of_identical_components_equals_single():
    torch.manual_seed(0)
    mean = torch.rand(3, 5) * 255
    ls = torch.randn(3, 5)
    x = torch.randint(0, 256, (3, 5)).float()
    single = decoder_logprob("logistic", (mean, ls), x)
    mix = decoder_logprob("logistic_mixture", (torch.randn(3, 5, 1).expand(3, 5, 2).contiguous(),
                                               mean.unsqueeze(-1).expand(3, 5, 2), ls.unsqueeze(-1).expand(3, 5, 2)), x)
    torch.testing.assert_close(single, mix)


@pytest.mark.parametrize("cfg", [
    dict(likelihood="bernoulli", levels=2),
    dict(likelihood="logistic", levels=256),
    dict(likelihood="logistic_mixture", levels=256, mixture=3),
    dict(likelihood="bernoulli", levels=2, hidden=[50, 50, 50], latent=4),
])
def test_mlp_shapes_and_grad(cfg):
    torch.manual_seed(0)
    cfg = {"hidden": [64, 64], "latent": 8, **cfg}
    enc, dec = build_vae(cfg)
    x = torch.randint(0, cfg["levels"], (4, 784)).float()
    mu, sigma = enc(x)
    assert mu.shape == (4, cfg["latent"]) and bool((sigma > 0).all())
    out = dec(mu + sigma * torch.randn_like(mu))
    lp = decoder_logprob(cfg["likelihood"], out, x)
    assert lp.shape == (4,) and bool(torch.isfinite(lp).all())
    lp.sum().backward()
    assert all(p.grad is not None for p in list(enc.parameters()) + list(dec.parameters()))
    xs = sample(cfg["likelihood"], dec(mu), cfg["levels"])
    assert xs.shape == x.shape and float(xs.min()) >= 0 and float(xs.max()) <= cfg["levels"] - 1
    if cfg["likelihood"] != "bernoulli":
        ls = out[-1].detach()
        assert float(ls.min()) >= LOG_SCALE_MIN and float(ls.max()) <= LOG_SCALE_MAX


def test_resnet_forward_backward_tiny():
    torch.manual_seed(0)
    enc, dec = build_vae(dict(arch="resnet", image_shape=[3, 32, 32], levels=256, likelihood="logistic_ar",
                              latent=8, channels=8, blocks=1))
    x = torch.randint(0, 256, (2, 3 * 32 * 32)).float()
    mu, sigma = enc(x)
    mean, ls, coeffs = dec(mu + sigma * torch.randn_like(mu))
    assert mean.shape == (2, 3072) and ls.shape == (2, 3072) and coeffs.shape == (2, 3, 1024)
    lp = decoder_logprob("logistic_ar", (mean, ls, coeffs), x)
    assert lp.shape == (2,) and bool(torch.isfinite(lp).all())
    (-lp.mean()).backward()
    assert enc.head.weight.grad is not None and dec.out.weight.grad is not None


def test_ar_logprob_uses_observed_channels():
    # with coefficient 1 on g|r and the green mean offset by -x_r, green is centred at its value
    B, HW = 1, 4
    x = torch.tensor([[10., 20, 30, 40, 15, 25, 35, 45, 0, 0, 0, 0]])
    mean = torch.tensor([[10., 20, 30, 40, 5, 5, 5, 5, 0, 0, 0, 0]])
    ls = torch.full((B, 12), -3.0)
    coeffs = torch.zeros(B, 3, HW)
    coeffs[:, 0] = 1.0
    lp = decoder_logprob("logistic_ar", (mean, ls, coeffs), x)
    assert float(lp) > -1e-3  # all mass on the observed values


def test_log_scale_clamps_are_the_coders():
    from bitsback.bbans import likelihoods

    assert (LOG_SCALE_MIN, LOG_SCALE_MAX) == (likelihoods.LOG_SCALE_MIN, likelihoods.LOG_SCALE_MAX)
