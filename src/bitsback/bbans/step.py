"""The BB-ANS step on a set of lanes, and the posterior it codes with.

Compression of one step (one image per lane)::

    mu, sigma = encoder(x)            [K Adam steps on (mu, rho) if k_steps > 0]
    z  <- pop  q(z|x)                 (bits back; the lane's first pop reads initial bits;
                                       the model's inactive (collapsed) dims are not coded)
    push x ~ p(x | centre(z))
    push z ~ uniform over 2^b equal-mass buckets of N(0, 1)

Decompression runs the mirror: :meth:`Step.decode` pops z and x, the caller computes
the posterior of the decoded x, and :meth:`Step.push_posterior` returns the borrowed bits.
The lane loops (``shards``) and bench's instrumented mirror both call these, so there is
one BB-ANS step in the code.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import cdf
from ..header import Settings

# The encoder runs ENCODER_CHUNK rows a call (memory; rows are batch-invariant).
ENCODER_CHUNK = 4096


class Refiner:
    """K-step optimal inference (Algorithm 2) for one model; torch is imported on first
    use only, so the K = 0 path never loads it. Shared by every Step of a codec."""

    def __init__(self, model):
        self.model = model
        self._optimiser = None
        self._lock = threading.Lock()

    def load(self):
        """The torch optimiser, created (and torch imported) on the first call."""
        with self._lock:
            if self._optimiser is None:
                from ..inference import Optimiser  # torch is imported only on this path

                self._optimiser = Optimiser(self.model.dir, self.model.likelihood)
        return self._optimiser

    def __call__(self, x, mu, sigma, settings: Settings, step: int):
        mu, sigma = self.load()(x, mu, sigma, k=settings.k_steps, lr=settings.lr, seed=settings.seed, step=step)
        return np.ascontiguousarray(mu, np.float32), np.ascontiguousarray(sigma, np.float32)


class Step:
    """The BB-ANS step of one model under one set of coding settings.

    A Step holds no per-call state and may be shared by threads. ``with_settings`` gives
    another Step sharing the networks and the K-step optimiser (a file's settings).

    Latent dims in ``settings.inactive_dims`` are never coded: they hold the prior's
    median bucket in every image, known to both sides. A collapsed dim (posterior = prior
    whatever the image) tells the decoder nothing and nets zero bits per image, but its
    pop still needs latent_bits on the stack, so each lane's first image would borrow
    them as initial bits: leaving it out saves that per lane. The step methods work on
    active columns only: ``za`` (rows, active) bucket indices, and mu / sigma as
    :meth:`active` selects them.
    """

    def __init__(self, model, encoder, decoder, settings: Settings, refiner: Refiner | None = None):
        self.model, self.encoder, self.decoder, self.settings = model, encoder, decoder, settings
        self.refiner = refiner or Refiner(model)
        self.precision = settings.precision
        bits = self.precision.latent_bits
        self.centres = cdf.latent.centres(bits).astype(np.float32)
        inactive = settings.inactive_dims
        # a list, not np.setdiff1d: that loads numpy's set routines, 35 ms of a small command
        self.free = np.array([d for d in range(model.latent) if d not in inactive], np.intp) if inactive else None
        self.active_latent = model.latent - len(inactive)
        # The posterior's Phi (cdf/latent.py): the libm-free grid from container version 5
        # on; files of versions <= 4 were coded with libm's erfc and decode only with it.
        self.portable = settings.version >= 5

    def with_settings(self, settings: Settings, encoder=None) -> "Step":
        """This step under other settings (and optionally another encoder network)."""
        return Step(self.model, encoder or self.encoder, self.decoder, settings, self.refiner)

    # ------------------------------------------------------------------ the latent
    def active(self, a: np.ndarray) -> np.ndarray:
        """The coded (active) columns of a (n, latent) array."""
        return a if self.free is None else a[:, self.free]

    def z_rows(self, rows: int) -> np.ndarray:
        """A (rows, latent) float32 buffer for the decoder's z, inactive columns at the
        median bucket's centre (one per group: steps write only the active columns)."""
        z = np.empty((rows, self.model.latent), np.float32)
        z[:] = self.centres[1 << (self.precision.latent_bits - 1)]
        return z

    def decoder_z(self, za: np.ndarray, buf: np.ndarray) -> np.ndarray:
        """The decoder's input for a step's buckets za: their centres, inactive dims at the
        median bucket (taken from buf, a :meth:`z_rows` buffer)."""
        if self.free is None:
            return self.centres[za]
        z = buf[: len(za)]
        z[:, self.free] = self.centres[za]
        return z

    # ------------------------------------------------------------------ the posterior
    def encode_rows(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The amortized posterior (encoder) of rows x, all latent columns, in chunks of
        ENCODER_CHUNK rows. onnxruntime gives a row the same output whatever batch it is
        in (tested), so this equals running the encoder on any split of the rows."""
        mu, sigma = [], []
        for a in range(0, len(x), ENCODER_CHUNK):
            out = self.encoder(x=x[a : a + ENCODER_CHUNK].astype(np.float32))
            mu.append(out["mu"])
            sigma.append(out["sigma"])
        mu = mu[0] if len(mu) == 1 else np.concatenate(mu)
        sigma = sigma[0] if len(sigma) == 1 else np.concatenate(sigma)
        return np.ascontiguousarray(mu, np.float32), np.ascontiguousarray(sigma, np.float32)

    def refine(self, x, mu, sigma, step: int):
        """K Adam steps on one shard's rows of one step (Algorithm 2); identity for K = 0.
        torch CPU is not batch-invariant, so this must always see exactly one shard's
        step, at encode and at decode."""
        if not self.settings.k_steps:
            return mu, sigma
        return self.refiner(x, mu, sigma, self.settings, step)

    def posterior(self, x: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """One shard's step: the encoder on its rows, then the K steps."""
        mu, sigma = self.encode_rows(x)
        return self.refine(x, mu, sigma, step)

    # ------------------------------------------------------------------ the step
    def encode(self, msgs, xs, mu, sigma, zbuf) -> None:
        """One encode step on rows 0..len(xs)-1 of msgs, given the posterior's active
        columns: z popped from the posterior (bits back), x pushed under the decoder, z
        pushed under the prior."""
        p = self.precision
        za = cdf.latent.pop_posterior(msgs, mu, sigma, p.posterior, p.latent_bits, portable=self.portable)
        self.model.lik.push(msgs, self.decoder(z=self.decoder_z(za, zbuf)), xs, p.likelihood)
        cdf.latent.push_prior(msgs, za, p.latent_bits, popped=True)

    def decode(self, msgs, n: int, zbuf) -> tuple[np.ndarray, np.ndarray]:
        """The first half of a decode step on rows 0..n-1: z popped under the prior, x
        under the decoder. Returns (x, za); the caller pushes za back under the posterior
        of x (:meth:`push_posterior`)."""
        p = self.precision
        za = cdf.latent.pop_prior(msgs, n, self.active_latent, p.latent_bits)
        return self.model.lik.pop(msgs, self.decoder(z=self.decoder_z(za, zbuf)), p.likelihood), za

    def push_posterior(self, msgs, mu, sigma, za) -> None:
        """The decode step's second half, given the posterior's active columns: za pushed
        under the posterior (the bits back)."""
        p = self.precision
        cdf.latent.push_posterior(msgs, mu, sigma, za, p.posterior, p.latent_bits, popped=True,
                                  portable=self.portable)
