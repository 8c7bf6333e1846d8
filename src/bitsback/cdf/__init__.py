"""Quantised symbol models ("families") that push/pop whole (lanes x symbols) arrays.

Every family builds its quantised CDF through one numba function used by both the
encoder (symbol -> start, freq) and the decoder (cf -> symbol, start, freq), so both
sides see identical distributions from identical float inputs.
"""
from . import bernoulli, context, latent, logistic, uniform
from ._coder import set_threads
from .logistic import LOG_SCALE_MAX, LOG_SCALE_MIN

__all__ = ["bernoulli", "context", "logistic", "latent", "uniform", "LOG_SCALE_MIN", "LOG_SCALE_MAX", "set_threads"]
