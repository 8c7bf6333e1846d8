"""The paper's MLP VAE for 28x28 images (784 -> 500 -> 500 [-> 500] -> latent)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .context import ContextHead, n_features
from .likelihoods import LOG_SCALE_MAX, LOG_SCALE_MIN


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x (B, D) raw symbols -> (mu, sigma), each (B, Z); sigma = softplus(.) + 1e-5 > 0.

    Inputs are divided by ``levels - 1`` inside the graph, so callers pass 0/1 or 0..255.
    ``rank`` > 0 makes the input layer a rank-r product (D -> r -> hidden[0]): the
    D x hidden[0] matrix is most of the encoder's cost, and a decode runs the encoder
    at every step.
    """

    def __init__(self, dim: int, latent: int, hidden: Sequence[int] = (500, 500), levels: int = 2, rank: int = 0):
        super().__init__()
        self.scale = 1.0 / float(levels - 1)
        self.body = _mlp([dim, *hidden])
        if rank:
            self.body[0] = nn.Sequential(nn.Linear(dim, rank), nn.Linear(rank, hidden[0]))
        self.head = nn.Linear(hidden[-1], 2 * latent)
        self.latent = latent

    def forward(self, x: torch.Tensor):
        h = self.body(x * self.scale)
        mu, s = self.head(h).chunk(2, dim=-1)
        return mu, F.softplus(s) + 1e-5


class MLPDecoder(nn.Module):
    """z (B, Z) -> likelihood parameters (see ``likelihoods.OUTPUT_NAMES``).

    logistic(_mixture) outputs are in pixel units: mean = 127.5 + 127.5 * out, and
    log_scale = clamp(out + log(127.5)) -- the clamp lives in the graph so the coder and the
    training loss see the same numbers.
    """

    def __init__(self, dim: int, latent: int, hidden: Sequence[int] = (500, 500),
                 likelihood: str = "bernoulli", mixture: int = 1, context: dict | None = None,
                 head_rank: int = 0):
        super().__init__()
        self.likelihood = likelihood
        self.dim = dim
        self.mixture = mixture
        self.body = _mlp([latent, *hidden])
        if likelihood == "bernoulli":
            nout = 1
        elif likelihood == "logistic":
            nout = 2
        elif likelihood == "logistic_mixture":
            nout = 3 * mixture
        elif likelihood.endswith("_context"):
            nout = self.features = n_features(likelihood, context)
            self.context = ContextHead(likelihood, context)
        else:
            raise ValueError(f"MLPDecoder does not support likelihood {likelihood!r}")
        # head_rank > 0: the output layer as a rank-r product (hidden -> r -> outputs), for
        # wide outputs (context features: 4 x 784) where the full matrix dominates the
        # decoder's cost at the small batches of coding.
        out = nn.Linear(head_rank or hidden[-1], nout * dim)
        self.head = nn.Sequential(nn.Linear(hidden[-1], head_rank), out) if head_rank else out
        if likelihood != "bernoulli":
            with torch.no_grad():  # start with moderate scales
                out.bias.zero_()

    def forward(self, z: torch.Tensor):
        out = self.head(self.body(z))
        B = z.shape[0]
        if self.likelihood == "bernoulli":
            return out
        if self.likelihood == "bernoulli_context":
            return out.view(B, self.dim, self.features), self.context
        ls_off = math.log(127.5) - 2.0
        if self.likelihood == "logistic":
            m, ls = out.view(B, 2, self.dim).unbind(1)
            return 127.5 + 127.5 * m, torch.clamp(ls + ls_off, LOG_SCALE_MIN, LOG_SCALE_MAX)
        if self.likelihood == "logistic_context":
            m, s, g = out.view(B, self.dim, 3).unbind(-1)
            return torch.stack([m, s + ls_off, g], -1), self.context
        M = self.mixture
        w, m, ls = out.view(B, 3, self.dim, M).unbind(1)
        return w, 127.5 + 127.5 * m, torch.clamp(ls + ls_off, LOG_SCALE_MIN, LOG_SCALE_MAX)
