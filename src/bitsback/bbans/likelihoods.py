"""Likelihood families: p(x | the decoder's outputs), one class each, and their registry.

A family names the decoder outputs it reads (the ONNX graph's output names), the symbol
levels it codes, and gives push / pop / code length over lanes through its ``cdf`` module,
whose single CDF function serves all three (so encoder, decoder and rate accounting cannot
disagree). ``nll`` is the continuous -log p(x|z) in nats, the training objective's value
in numpy (bench reports it beside the quantised length).

Adding a family: its numba kernels in ``cdf/``, one class here registered in
``LIKELIHOODS``, and its log-probability in ``models/likelihoods.py`` (torch, training).
The constants torch shares with the coder (log-scale clamps) are imported from here.
"""

from __future__ import annotations

import math

import numpy as np

from .. import cdf
from ..cdf.logistic import LOG_SCALE_MAX, LOG_SCALE_MIN, MIN_PREC
from ..errors import BitsbackError

__all__ = ["LIKELIHOODS", "Likelihood", "LOG_SCALE_MIN", "LOG_SCALE_MAX", "for_model"]


class Likelihood:
    """One family bound to one model. ``out`` is the decoder's output dict, ``x`` the
    images as uint8 (n, D) rows in the model's flattened order."""

    name = ""
    outputs: tuple = ()
    levels = 256            # default when the manifest does not say
    min_precision = MIN_PREC
    files: tuple = ()       # what the model folder holds for it beside the ONNX graphs (hashed)

    def __init__(self, manifest: dict, directory, shape: tuple):
        self.shape = tuple(shape)

    def push(self, msgs, out: dict, x: np.ndarray, prec: int) -> None:
        raise NotImplementedError

    def pop(self, msgs, out: dict, prec: int) -> np.ndarray:
        raise NotImplementedError

    def code_length(self, out: dict, x: np.ndarray, prec: int) -> float:
        """Exact ideal bits of x under the quantised model (all rows together)."""
        raise NotImplementedError

    def nll(self, out: dict, x: np.ndarray, levels: int) -> np.ndarray:
        """Continuous -log p(x | z) per row, in nats (the training formula, numpy)."""
        raise NotImplementedError


def _log_sigmoid(a):
    return -np.logaddexp(0.0, -a)


def _logistic_logprob(mean, log_scale, x, levels):
    """Per-element log P(x) of the discretised logistic (models/likelihoods.py's formula)."""
    ls = np.clip(log_scale.astype(np.float64), LOG_SCALE_MIN, LOG_SCALE_MAX)
    inv_s = np.exp(-ls)
    a = (x - 0.5 - mean) * inv_s
    b = (x + 0.5 - mean) * inv_s
    log_cdf_b = _log_sigmoid(b)
    log_sf_a = _log_sigmoid(-a)
    mid = log_cdf_b + log_sf_a + np.log(-np.expm1(-inv_s))
    return np.where(x <= 0.0, log_cdf_b, np.where(x >= levels - 1, log_sf_a, mid))


class Bernoulli(Likelihood):
    name, outputs, levels, min_precision = "bernoulli", ("logits",), 2, 1

    def push(self, msgs, out, x, prec):
        cdf.bernoulli.push(msgs, out["logits"], x, prec)

    def pop(self, msgs, out, prec):
        return cdf.bernoulli.pop(msgs, out["logits"], prec)

    def code_length(self, out, x, prec):
        return cdf.bernoulli.code_length(out["logits"], x, prec)

    def nll(self, out, x, levels):
        lg = out["logits"].astype(np.float64)
        return (np.logaddexp(0.0, lg) - x.astype(np.float64) * lg).sum(1)


class Logistic(Likelihood):
    name, outputs = "logistic", ("mean", "log_scale")

    def push(self, msgs, out, x, prec):
        cdf.logistic.push(msgs, out["mean"], out["log_scale"], x, prec)

    def pop(self, msgs, out, prec):
        return cdf.logistic.pop(msgs, out["mean"], out["log_scale"], prec)

    def code_length(self, out, x, prec):
        return cdf.logistic.code_length((None, cdf.logistic.freqs(out["mean"], out["log_scale"], x, prec)), prec)

    def nll(self, out, x, levels):
        lp = _logistic_logprob(out["mean"].astype(np.float64), out["log_scale"], x.astype(np.float64), levels)
        return -lp.sum(1)


class LogisticMixture(Likelihood):
    name, outputs = "logistic_mixture", ("logit_weights", "mean", "log_scale")

    def push(self, msgs, out, x, prec):
        cdf.logistic.push_mixture(msgs, out["logit_weights"], out["mean"], out["log_scale"], x, prec)

    def pop(self, msgs, out, prec):
        return cdf.logistic.pop_mixture(msgs, out["logit_weights"], out["mean"], out["log_scale"], prec)

    def code_length(self, out, x, prec):
        sf = cdf.logistic.mixture_starts_freqs(out["logit_weights"], out["mean"], out["log_scale"], x, prec)
        return cdf.logistic.code_length(sf, prec)

    def nll(self, out, x, levels):
        lp = _logistic_logprob(out["mean"].astype(np.float64), out["log_scale"], x.astype(np.float64)[..., None], levels)
        w = out["logit_weights"].astype(np.float64)
        logw = w - np.logaddexp.reduce(w, axis=-1, keepdims=True)
        return -np.logaddexp.reduce(lp + logw, axis=-1).sum(1)


class LogisticAR(Likelihood):
    """RGB, channel-wise linear autoregression (the paper's CIFAR likelihood): images
    (3, H, W) channel-major; the decoder gives mean, log_scale (n, 3HW) and coeffs
    (n, 3, HW) = c(g|r), c(b|r), c(b|g); green's and blue's means add the coefficients
    times the pixel's already-coded red (and green)."""

    name, outputs = "logistic_ar", ("mean", "log_scale", "coeffs")

    def __init__(self, manifest, directory, shape):
        super().__init__(manifest, directory, shape)
        if len(self.shape) != 3 or self.shape[0] != 3:
            raise BitsbackError(f"logistic_ar codes RGB images (3, H, W); the model's shape is {self.shape}")

    def _args(self, out):
        s = (-1, *self.shape)
        return out["mean"].reshape(s), out["log_scale"].reshape(s), out["coeffs"].reshape(s)

    def push(self, msgs, out, x, prec):
        cdf.logistic.push_ar(msgs, *self._args(out), x.reshape(-1, *self.shape), prec)

    def pop(self, msgs, out, prec):
        return cdf.logistic.pop_ar(msgs, *self._args(out), prec).reshape(len(out["mean"]), -1)

    def code_length(self, out, x, prec):
        sf = cdf.logistic.ar_starts_freqs(*self._args(out), x.reshape(-1, *self.shape), prec)
        return cdf.logistic.code_length(sf, prec)

    def nll(self, out, x, levels):
        mean, ls, coef = (a.astype(np.float64) for a in self._args(out))
        xs = x.reshape(-1, *self.shape).astype(np.float64)
        mean = mean.copy()
        mean[:, 1] += coef[:, 0] * xs[:, 0]
        mean[:, 2] += coef[:, 1] * xs[:, 0] + coef[:, 2] * xs[:, 1]
        return -_logistic_logprob(mean, ls, xs, levels).reshape(len(xs), -1).sum(1)


class _ContextFamily(Likelihood):
    """Causal-context families: the decoder gives per-pixel features, and each pixel's
    parameters read its already-coded neighbours through tables shipped in context.npz."""

    outputs = ("features",)
    files = ("context.npz",)

    def __init__(self, manifest, directory, shape):
        super().__init__(manifest, directory, shape)
        try:
            with np.load(directory / "context.npz", allow_pickle=False) as tables:
                self.context = cdf.context.Context(self.name, manifest["context"], tables)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise BitsbackError(f"model {manifest.get('name', directory.name)}: bad context spec or tables: {e}") from None

    def push(self, msgs, out, x, prec):
        self.context.push(msgs, out["features"], x, prec)

    def pop(self, msgs, out, prec):
        return self.context.pop(msgs, out["features"], prec)

    def code_length(self, out, x, prec):
        return float(self.context.code_length(out["features"], x, prec).sum())

    def nll(self, out, x, levels):
        # the context families' "continuous" rate: the coder's own model at 2^-30 resolution
        return self.context.code_length(out["features"], x, 30) * math.log(2)


class BernoulliContext(_ContextFamily):
    name, levels, min_precision = "bernoulli_context", 2, 1


class LogisticContext(_ContextFamily):
    name = "logistic_context"


LIKELIHOODS = {c.name: c for c in (Bernoulli, Logistic, LogisticMixture, LogisticAR, BernoulliContext, LogisticContext)}


def for_model(name: str, manifest: dict, directory, shape) -> Likelihood:
    """The family ``name`` bound to a model directory (BitsbackError if unknown)."""
    cls = LIKELIHOODS.get(name)
    if cls is None:
        raise BitsbackError(f"model {manifest.get('name', '?')}: unsupported likelihood {name!r} "
                            f"(this build codes {', '.join(LIKELIHOODS)})")
    return cls(manifest, directory, shape)
