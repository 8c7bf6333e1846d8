"""K-step optimal inference (the paper's Algorithm 2), replayed identically at decode.

Starting from the amortized posterior N(mu, softplus(rho)^2) given by the ONNX encoder,
take K Adam steps on (mu, rho) per image, maximising a one-sample reparameterised ELBO
with the analytic KL to N(0, I). The decoder's weights are frozen.

Exact replay is what makes this usable for coding: the decoder sees the same x, the same
(mu, sigma) from the same onnxruntime encoder, the same noise (a generator seeded by
(seed, step, iteration)), the same batch composition (torch CPU results depend on batch
shape) and one torch thread (so results do not depend on the machine's core count).
Only this module and bitsback.models import torch.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import torch.nn.functional as F

from .bbans.likelihoods import LIKELIHOODS
from .models import load_torch
from .models.likelihoods import decoder_nll


class Optimiser:
    """Callable ``(x, mu, sigma, k, lr, seed, step) -> (mu_K, sigma_K)`` for one model."""

    def __init__(self, model_dir, likelihood: str):
        _, decoder, manifest = load_torch(model_dir)
        decoder.eval()
        for p in decoder.parameters():
            p.requires_grad_(False)
        self.decoder = decoder
        self.likelihood = likelihood
        self.levels = int(manifest.get("levels", LIKELIHOODS[likelihood].levels))
        self._lock = threading.Lock()

    def __call__(self, x, mu, sigma, k: int, lr: float, seed: int, step: int):
        with self._lock, _one_thread():
            xt = torch.from_numpy(np.asarray(x, np.float32))
            mu_t = torch.from_numpy(np.array(mu, np.float32)).requires_grad_(True)
            sig = torch.from_numpy(np.array(sigma, np.float32)).clamp_min(1e-20)
            # softplus^-1(s) = s + log(-expm1(-s)), stable for small and large s.
            rho_t = (sig + torch.log(-torch.expm1(-sig))).detach().requires_grad_(True)
            opt = torch.optim.Adam([mu_t, rho_t], lr=lr)
            gen = torch.Generator()
            for i in range(k):
                gen.manual_seed(((seed * 1_000_003 + step) * 1009 + i) % (1 << 63))
                eps = torch.randn(mu_t.shape, generator=gen)
                s = F.softplus(rho_t)
                z = mu_t + s * eps
                kl = 0.5 * (mu_t**2 + s**2 - 1.0) - torch.log(s)
                loss = decoder_nll(self.likelihood, self.decoder(z), xt, self.levels).sum() + kl.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                return mu_t.detach().numpy().astype(np.float32), F.softplus(rho_t).detach().numpy().astype(np.float32)


class _one_thread:
    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)
