"""ResNet conv VAE for 3x32x32 with a discretised logistic + channel-wise linear AR.

Defined (and tested on a tiny batch) but not trained or bundled here. Encoder input is the
flattened raw image (B, 3*32*32) in 0..255 (channel-major), matching the ONNX interface.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .likelihoods import LOG_SCALE_MAX, LOG_SCALE_MIN


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F.elu(self.c1(F.elu(x))))


class ResNetEncoder(nn.Module):
    def __init__(self, latent: int = 64, ch: int = 64, blocks: int = 2, image_shape=(3, 32, 32)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        C, H, W = self.image_shape
        layers = [nn.Conv2d(C, ch, 3, padding=1)]
        for _ in range(2):  # 32 -> 16 -> 8
            layers += [ResBlock(ch) for _ in range(blocks)] + [nn.Conv2d(ch, ch, 4, 2, 1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch * (H // 4) * (W // 4), 2 * latent)
        self.latent = latent

    def forward(self, x):
        B = x.shape[0]
        h = self.body((x / 127.5 - 1.0).view(B, *self.image_shape))
        mu, s = self.head(F.elu(h).flatten(1)).chunk(2, -1)
        return mu, F.softplus(s) + 1e-5


class ResNetDecoder(nn.Module):
    """z -> (mean, log_scale) (B, 3*H*W) in pixel units and coeffs (B, 3, H*W) in (-1, 1)."""

    likelihood = "logistic_ar"

    def __init__(self, latent: int = 64, ch: int = 64, blocks: int = 2, image_shape=(3, 32, 32)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        C, H, W = self.image_shape
        self.h0, self.w0, self.ch = H // 4, W // 4, ch
        self.fc = nn.Linear(latent, ch * self.h0 * self.w0)
        layers = []
        for _ in range(2):
            layers += [ResBlock(ch) for _ in range(blocks)] + [nn.ConvTranspose2d(ch, ch, 4, 2, 1)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(ch, 3 * C, 3, padding=1)  # mean, log_scale, coeff per channel

    def forward(self, z):
        B = z.shape[0]
        h = self.fc(z).view(B, self.ch, self.h0, self.w0)
        o = self.out(F.elu(self.body(h)))
        C = self.image_shape[0]
        m, ls, c = o[:, :C], o[:, C:2 * C], o[:, 2 * C:]
        mean = (127.5 + 127.5 * m).flatten(1)
        log_scale = torch.clamp(ls + math.log(127.5) - 2.0, LOG_SCALE_MIN, LOG_SCALE_MAX).flatten(1)
        coeffs = torch.tanh(c).flatten(2)
        return mean, log_scale, coeffs
