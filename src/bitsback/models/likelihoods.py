"""Likelihood log-probabilities in torch, identical to what the coder quantises.

Every function returns log p(x | decoder outputs) summed over the pixel axis, shape (B,),
in nats. ``x`` holds the raw symbol values as floats (0/1 or 0..255).

Discretised logistic (pixel units): bin k covers [k - 0.5, k + 0.5]; bin 0 absorbs
(-inf, 0.5] and bin 255 absorbs [254.5, inf). log_scale is clamped to
[LOG_SCALE_MIN, LOG_SCALE_MAX] -- the coder's constants, imported from
:mod:`bitsback.bbans.likelihoods`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..bbans.likelihoods import LIKELIHOODS as _FAMILIES
from ..bbans.likelihoods import LOG_SCALE_MAX, LOG_SCALE_MIN

# The families and their decoder.onnx output names (the public interface) are the coder's
# registry (bitsback.bbans.likelihoods); this module adds each one's torch log-probability
# (decoder_logprob) and sampler (sample).
LIKELIHOODS = tuple(_FAMILIES)
OUTPUT_NAMES = {name: family.outputs for name, family in _FAMILIES.items()}


def bernoulli_logprob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x | sigmoid(logits)) summed over the last axis."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def discretized_logistic_logprob_elementwise(
    mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, levels: int = 256
) -> torch.Tensor:
    """Per-element log P(x) of the 256-level discretised logistic in pixel units.

    Uses sigma(b) - sigma(a) = sigma(b) sigma(-a) (1 - exp(a - b)) with b - a = 1/s, which
    is exact and stable for all scales (no pdf fallback needed).
    """
    log_scale = torch.clamp(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX)
    inv_s = torch.exp(-log_scale)
    a = (x - 0.5 - mean) * inv_s  # lower edge, standardised
    b = (x + 0.5 - mean) * inv_s  # upper edge
    log_cdf_b = F.logsigmoid(b)  # bin 0: P = sigma(b)
    log_sf_a = F.logsigmoid(-a)  # bin top: P = 1 - sigma(a)
    mid = log_cdf_b + log_sf_a + torch.log(-torch.expm1(-inv_s))
    top = float(levels - 1)
    return torch.where(x <= 0.0, log_cdf_b, torch.where(x >= top, log_sf_a, mid))


def logistic_logprob(mean, log_scale, x, levels: int = 256):
    return discretized_logistic_logprob_elementwise(mean, log_scale, x, levels).sum(-1)


def logistic_mixture_logprob(logit_weights, mean, log_scale, x, levels: int = 256):
    """Mixture over the last axis M; inputs (B, D, M), x (B, D)."""
    lp = discretized_logistic_logprob_elementwise(mean, log_scale, x.unsqueeze(-1), levels)
    return torch.logsumexp(lp + F.log_softmax(logit_weights, dim=-1), dim=-1).sum(-1)


def logistic_ar_logprob(mean, log_scale, coeffs, x, channels: int = 3, levels: int = 256):
    """Channel-wise linear autoregression (PixelCNN++-style, paper section 4).

    mean, log_scale, x: (B, C*H*W) channel-major; coeffs: (B, 3, H*W) holding
    (g|r, b|r, b|g). The conditional mean of channel c adds coefficients times the
    *observed* earlier channels, so the coder can decode r, then g, then b.
    """
    B = x.shape[0]
    xm = x.view(B, channels, -1)
    m = mean.view(B, channels, -1)
    m_g = m[:, 1] + coeffs[:, 0] * xm[:, 0]
    m_b = m[:, 2] + coeffs[:, 1] * xm[:, 0] + coeffs[:, 2] * xm[:, 1]
    m = torch.stack([m[:, 0], m_g, m_b], 1).view(B, -1)
    return logistic_logprob(m, log_scale, x, levels)


def decoder_logprob(likelihood: str, outputs, x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """log p(x | z) from the decoder's output tuple (ONNX output order), shape (B,)."""
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    if likelihood == "bernoulli":
        return bernoulli_logprob(outputs[0], x)
    if likelihood == "logistic":
        return logistic_logprob(outputs[0], outputs[1], x, levels)
    if likelihood == "logistic_mixture":
        return logistic_mixture_logprob(outputs[0], outputs[1], outputs[2], x, levels)
    if likelihood == "logistic_ar":
        return logistic_ar_logprob(outputs[0], outputs[1], outputs[2], x, levels=levels)
    if likelihood.endswith("_context"):   # outputs = (features, ContextHead)
        return outputs[1].logprob(outputs[0], x, levels)
    raise ValueError(f"unknown likelihood {likelihood!r}")


def decoder_nll(likelihood: str, outputs, x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """-log p(x | z) in nats, shape (B,)."""
    return -decoder_logprob(likelihood, outputs, x, levels)


@torch.no_grad()
def sample(likelihood: str, outputs, levels: int = 256, generator=None) -> torch.Tensor:
    """Draw x ~ p(x|z) as raw symbol values (float), shape (B, D)."""
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    if likelihood.endswith("_context"):
        return outputs[1].sample(outputs[0], levels, generator)
    if likelihood == "bernoulli":
        p = torch.sigmoid(outputs[0])
        return (torch.rand(p.shape, generator=generator, device=p.device) < p).float()

    def _logistic(mean, log_scale):
        u = torch.rand(mean.shape, generator=generator, device=mean.device).clamp(1e-6, 1 - 1e-6)
        s = torch.exp(torch.clamp(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX))
        return torch.round(mean + s * (torch.log(u) - torch.log1p(-u))).clamp(0, levels - 1)

    if likelihood == "logistic":
        return _logistic(outputs[0], outputs[1])
    if likelihood == "logistic_mixture":
        w, mean, ls = outputs
        idx = torch.distributions.Categorical(logits=w).sample().unsqueeze(-1)
        return _logistic(mean.gather(-1, idx).squeeze(-1), ls.gather(-1, idx).squeeze(-1))
    if likelihood == "logistic_ar":
        mean, ls, coeffs = outputs
        B = mean.shape[0]
        m = mean.view(B, 3, -1)
        l = ls.view(B, 3, -1)
        r = _logistic(m[:, 0], l[:, 0])
        g = _logistic(m[:, 1] + coeffs[:, 0] * r, l[:, 1])
        b = _logistic(m[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g, l[:, 2])
        return torch.stack([r, g, b], 1).view(B, -1)
    raise ValueError(f"unknown likelihood {likelihood!r}")


LN2 = math.log(2.0)
