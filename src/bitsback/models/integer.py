"""torch mirrors of portable (integer) networks, for K-step inference and evaluation.

A portable model ships integer layers (see :mod:`bitsback.portable`). Here they run in
torch: the forward pass is the same exact integer arithmetic (float32 carriers, every
value an integer below 2^24, so torch's matmul is exact too), and the backward pass treats
floor as the identity (straight-through), so gradients are those of the dequantised float
network: what K-step optimal inference (Algorithm 2) needs from the decoder.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


class _Floor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, g):
        return g


class IntegerChain(nn.Module):
    """``scale_in`` * input -> integer layers -> last layer's ``acc * t_out`` (float32)."""

    def __init__(self, layers: list, t_out, in_scale: float, in_round: bool, in_max: float):
        super().__init__()
        self.in_scale, self.in_round, self.in_max = float(in_scale), bool(in_round), float(in_max)
        self.ws = nn.ParameterList()
        self.bs = nn.ParameterList()
        self.pow2 = nn.ParameterList()
        self.bounds = []
        for L in layers:
            self.ws.append(nn.Parameter(torch.from_numpy(L["wq"].T.astype(np.float32)), requires_grad=False))
            self.bs.append(nn.Parameter(torch.from_numpy(L["bq"].astype(np.float32)), requires_grad=False))
            if "pow2" in L:
                self.pow2.append(nn.Parameter(torch.from_numpy(L["pow2"].astype(np.float32)), requires_grad=False))
                self.bounds.append((L["lo"], L["hi"]))
        self.t_out = nn.Parameter(torch.tensor(np.asarray(t_out, np.float32)), requires_grad=False)

    def acc(self, x: torch.Tensor) -> torch.Tensor:
        a = x * self.in_scale
        if self.in_round:
            a = torch.clamp(_Floor.apply(a + 0.5), -self.in_max, self.in_max)
        for i, (w, b) in enumerate(zip(self.ws, self.bs)):
            acc = a @ w + b
            if i == len(self.ws) - 1:
                return acc
            lo, hi = self.bounds[i]
            a = torch.clamp(_Floor.apply(acc * self.pow2[i]), lo, hi)
        raise AssertionError("unreachable")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.acc(x) * self.t_out


class PortableEncoder(nn.Module):
    """x raw symbols -> (mu, sigma) exactly as the portable encoder graph computes them."""

    def __init__(self, layers: list, head: dict, latent: int):
        super().__init__()
        Z = latent
        self.latent = Z
        self.chain = IntegerChain(layers, np.ones(2 * Z), 1.0, False, 0.0)
        self.mu_t = nn.Parameter(torch.from_numpy(head["mu.t"].astype(np.float32)), requires_grad=False)
        self.s_pow2 = nn.Parameter(torch.from_numpy(head["s.pow2"].astype(np.float32)), requires_grad=False)
        self.k0 = float(head["s.k0"])
        self.table = nn.Parameter(torch.from_numpy(head["sigma.table"].astype(np.float32)), requires_grad=False)

    def forward(self, x: torch.Tensor):
        acc = self.chain.acc(x)
        Z = self.latent
        idx = torch.clamp(torch.floor(acc[:, Z:] * self.s_pow2) + self.k0, 0, len(self.table) - 1).long()
        return acc[:, :Z] * self.mu_t, self.table[idx]


def install(encoder: nn.Module, decoder: nn.Module, enc_graph, dec_graph, z_shift: int, act_max: int):
    """Replace the float layers of rebuilt torch MLP modules by the portable graphs' integer
    layers (the decoder keeps its likelihood tail and context tables). Returns (encoder,
    decoder)."""
    from ..portable import read_layers

    e_layers, e_head = read_layers(enc_graph)
    d_layers, d_head = read_layers(dec_graph)
    enc = PortableEncoder(e_layers, e_head, encoder.latent)
    decoder.body = IntegerChain(d_layers, d_head["out.t"], 2.0 ** z_shift, True, act_max)
    decoder.head = nn.Identity()
    return enc.eval(), decoder.eval()
