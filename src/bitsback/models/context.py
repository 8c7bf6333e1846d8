"""Causal-context likelihoods (torch side): pixels see their already-decoded neighbours.

The decoder network runs once per image and gives ``features`` (B, D, d): a function of z
only. Pixel i's likelihood parameters then combine its features with the pixels before it
in raster order, through tables indexed by a *context*: the quantised values of a few
causal neighbours. The coder (:mod:`bitsback.cdf.context`) evaluates exactly these
formulas pixel by pixel while decoding; training evaluates them all at once on the known
image (teacher forcing).

Spec (stored in the model's manifest as ``context``)::

    shape        [H, W]
    ctx_offsets  [[dy, dx], ...]   causal neighbours (dy < 0, or dy == 0 and dx < 0)
    thresholds   [t1, ...]         bucket of a value v = number of thresholds <= v
    lin_offsets  [[dy, dx], ...]   neighbours entering the means linearly (logistic only)
    mixture      K                 logistic components (logistic only)

Neighbours outside the image read as 0. With Q = len(thresholds) + 1 buckets, the context
of pixel i is ``sum_j bucket(x[i + off_j]) * Q**j`` (0 .. Q**len(ctx_offsets) - 1).

bernoulli_context, d = spec["features"] features f:
    logit = sum_k gain[c, k] * f_k + bias[c]
logistic_context, features (m, s, g), per component k; u_j = n_j / 127.5 - 1 with n_j the
raw values of the lin_offsets neighbours:
    mean_k      = 127.5 + 127.5 * (mgain[c, k] * m + sum_j coef[c, k, j] * u_j + mbias[c, k])
    log_scale_k = clamp(lscale[c, k] + s, LOG_SCALE_MIN, LOG_SCALE_MAX)
    logit_k     = wbias[c, k] + wgain[c, k] * g
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cdf.context import TABLES, causal_offsets, n_contexts, n_features
from .likelihoods import LOG_SCALE_MAX, LOG_SCALE_MIN, discretized_logistic_logprob_elementwise

# Twelve causal neighbours, nearest first: W, N, NW, NE, WW, NN, NWW, NNW, NNE, NEE, WWW, NNN.
NEIGHBOURS = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-1, -2), (-2, -1),
              (-2, 1), (-1, 2), (0, -3), (-3, 0))

DEFAULT_SPECS = {
    "bernoulli_context": {"ctx_offsets": NEIGHBOURS, "thresholds": (1,), "features": 4},
    "logistic_context": {"ctx_offsets": NEIGHBOURS[:5], "thresholds": (1, 128, 252),
                         "lin_offsets": NEIGHBOURS[:6], "mixture": 3},
}


def make_spec(likelihood: str, shape, **over) -> dict:
    """The default spec of a context likelihood for images of ``shape``, with overrides
    (FormatError, a ValueError, for a non-causal neighbour)."""
    spec = {k: [list(o) for o in v] if k.endswith("offsets") else (list(v) if isinstance(v, tuple) else v)
            for k, v in {**DEFAULT_SPECS[likelihood], **over}.items()}
    spec["shape"] = [int(s) for s in shape]
    for key in ("ctx_offsets", "lin_offsets"):
        causal_offsets(spec, key)
    return spec


def _shifted(img: torch.Tensor, offsets, pad: int) -> torch.Tensor:
    """(B, H, W) -> (B, J, H*W): value of neighbour j of every pixel (0 outside the image)."""
    B, H, W = img.shape
    p = F.pad(img, (pad, pad, pad, 0))
    views = [p[:, pad + dy: pad + dy + H, pad + dx: pad + dx + W] for dy, dx in offsets]
    return torch.stack(views, 1).reshape(B, len(offsets), H * W)


def context_index(x: torch.Tensor, spec: dict) -> torch.Tensor:
    """Context of every pixel of x (B, D) raw values -> (B, D) int64."""
    H, W = spec["shape"]
    offs = spec["ctx_offsets"]
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offs)
    nb = _shifted(x.view(-1, H, W), offs, pad)                           # (B, J, D)
    thr = torch.tensor(spec["thresholds"], dtype=x.dtype, device=x.device)
    buckets = (nb.unsqueeze(-1) >= thr).sum(-1)                           # (B, J, D)
    Q = len(spec["thresholds"]) + 1
    weights = torch.tensor([Q ** j for j in range(len(offs))], device=x.device).view(1, -1, 1)
    return (buckets * weights).sum(1)


def linear_neighbours(x: torch.Tensor, spec: dict) -> torch.Tensor:
    """(B, D, J) raw values of the linear neighbours of every pixel."""
    H, W = spec["shape"]
    offs = spec["lin_offsets"]
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offs)
    return _shifted(x.view(-1, H, W), offs, pad).transpose(1, 2)


class ContextHead(nn.Module):
    """The learned context tables of one causal-context likelihood (see module doc)."""

    def __init__(self, likelihood: str, spec: dict):
        super().__init__()
        self.likelihood, self.spec = likelihood, spec
        C = n_contexts(spec)
        if likelihood == "bernoulli_context":
            gain = 0.1 * torch.randn(C, n_features(likelihood, spec))
            gain[:, 0] = 1.0
            self.gain = nn.Parameter(gain)
            self.bias = nn.Parameter(torch.zeros(C))
            return
        K, J = int(spec["mixture"]), len(spec["lin_offsets"])
        # Component k starts as a different predictor: the network's mean, then the west
        # and north neighbours, ... (breaks the symmetry between components).
        mgain = torch.zeros(C, K)
        coef = torch.zeros(C, K, J)
        mgain[:, 0] = 1.0
        for k in range(1, K):
            coef[:, k, (k - 1) % J] = 1.0
        self.mgain = nn.Parameter(mgain)
        self.coef = nn.Parameter(coef)
        self.mbias = nn.Parameter(torch.zeros(C, K))
        self.lscale = nn.Parameter(torch.zeros(C, K))
        self.wbias = nn.Parameter(torch.zeros(C, K))
        self.wgain = nn.Parameter(torch.zeros(C, K))

    def tables(self) -> dict:
        """{name: float32 numpy array} in TABLES order (what context.npz stores)."""
        return {n: getattr(self, n).detach().cpu().float().numpy() for n in TABLES[self.likelihood]}

    def load_tables(self, arrays) -> None:
        with torch.no_grad():
            for n in TABLES[self.likelihood]:
                getattr(self, n).copy_(torch.as_tensor(np.asarray(arrays[n], np.float32)))

    # -- parameters of every pixel given the whole image (teacher forcing) ----------------
    def logit(self, feats, x):
        c = context_index(x, self.spec)
        return (self.gain[c] * feats).sum(-1) + self.bias[c]

    def mixture(self, feats, x):
        """(logit_weights, mean, log_scale), each (B, D, K)."""
        c = context_index(x, self.spec)                                   # (B, D)
        u = linear_neighbours(x, self.spec) / 127.5 - 1.0                 # (B, D, J)
        m, s, g = feats.unbind(-1)
        mean = 127.5 + 127.5 * (self.mgain[c] * m.unsqueeze(-1) + (self.coef[c] * u.unsqueeze(-2)).sum(-1)
                                + self.mbias[c])
        log_scale = torch.clamp(self.lscale[c] + s.unsqueeze(-1), LOG_SCALE_MIN, LOG_SCALE_MAX)
        logits = self.wbias[c] + self.wgain[c] * g.unsqueeze(-1)
        return logits, mean, log_scale

    def logprob(self, feats: torch.Tensor, x: torch.Tensor, levels: int = 256) -> torch.Tensor:
        """log p(x | features) summed over pixels, (B,), nats."""
        if self.likelihood == "bernoulli_context":
            return -F.binary_cross_entropy_with_logits(self.logit(feats, x), x, reduction="none").sum(-1)
        lw, mean, ls = self.mixture(feats, x)
        lp = discretized_logistic_logprob_elementwise(mean, ls, x.unsqueeze(-1), levels)
        return torch.logsumexp(lp + F.log_softmax(lw, -1), -1).sum(-1)

    @torch.no_grad()
    def sample(self, feats: torch.Tensor, levels: int = 256, generator=None) -> torch.Tensor:
        """x ~ p(x | features) under the coder's quantised model, (B, D) raw values.

        Decoding random bits is sampling: the coder pops every pixel, in raster order,
        from fresh messages whose words come from a seeded generator.
        """
        from .._rans import Messages
        from ..cdf.context import Context

        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        feats_np = feats.detach().cpu().float().numpy()
        ctx = Context(self.likelihood, self.spec, self.tables())
        x = ctx.pop(Messages(len(feats_np), seed), feats_np, 24)
        return torch.from_numpy(x.astype(np.float32)).to(feats.device)
