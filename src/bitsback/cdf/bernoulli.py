"""Bernoulli from logits: freq0 = clamp(floor(sigmoid(-logit) * 2^prec + 1/2), 1, 2^prec - 1).

Symbol 0 has start 0 and frequency freq0; symbol 1 has start freq0.
"""
import numpy as np

from . import _kernels
from ._coder import check_prec, done, f32, lanes_of

# The kernels (freq0, the blocked push / pop) are in _nb_bernoulli.py; _kernels.py runs
# them ahead-of-time compiled or JIT.


def _bits(x):
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.size and x.max() > 1:
        raise ValueError("Bernoulli symbols must be 0 or 1")
    return x


def push(msgs, logits, x, prec):
    """Push binary symbols x (uint8[n, D]) with logits (float32[n, D]) onto lanes 0..n-1."""
    prec = check_prec(prec)
    logits = f32(logits, 2, "logits")
    x = _bits(x)
    if x.shape != logits.shape:
        raise ValueError("x and logits must have the same shape")
    heads, addr = lanes_of(msgs, logits.shape[0])
    _kernels.run_lanes("bernoulli_push", (heads, addr, logits, x, prec), *logits.shape[:2])
    done(msgs)


def pop(msgs, logits, prec):
    """Pop uint8[n, D] binary symbols (column 0 first) given float32[n, D] logits."""
    prec = check_prec(prec)
    logits = f32(logits, 2, "logits")
    heads, addr = lanes_of(msgs, logits.shape[0])
    out = np.empty(logits.shape, np.uint8)
    _kernels.run_lanes("bernoulli_pop", (heads, addr, logits, prec, out), *logits.shape[:2])
    return out


def starts_freqs(logits, x, prec):
    """(starts, freqs) uint32 arrays of the quantised model for symbols x (any shape)."""
    prec = check_prec(prec)
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    x = _bits(x).reshape(logits.shape)
    s, f = _kernels.get("bernoulli_starts_freqs")(logits.reshape(-1), x.reshape(-1), prec)
    return s.reshape(logits.shape), f.reshape(logits.shape)


def code_length(logits, x, prec):
    """Exact ideal code length in bits, sum of -log2 p under the quantised model."""
    _, f = starts_freqs(logits, x, prec)
    return float(int(prec) * f.size - np.log2(f.astype(np.float64)).sum())
