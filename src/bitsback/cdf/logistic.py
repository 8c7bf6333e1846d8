"""Discretised logistic over 256 levels (pixel units), mixtures, and channel-wise AR for RGB.

Bin k in 0..255 covers [k - 1/2, k + 1/2]; bins 0 and 255 absorb the tails. With
F the logistic CDF, M = 2^prec - 256 and edge k - 1/2 between bins k-1 and k::

    start(0) = 0,  start(256) = 2^prec,
    start(k) = floor(F(k - 1/2) * M) + k        for k = 1..255,

so the starts rise strictly (every frequency >= 1) and end exactly at 2^prec. mean and
log_scale are in pixel units; log_scale is clamped into [LOG_SCALE_MIN, LOG_SCALE_MAX];
a NaN mean becomes 127.5, a NaN log_scale becomes LOG_SCALE_MAX, means are clamped to
+-1e6. Precision must be in [9, 31].

Decoding guesses the bin from the logistic inverse of cf / 2^prec and then corrects it
against the quantised starts by a galloping + binary search (at most ~16 evaluations).
"""
import numpy as np

from . import _kernels
from ._coder import check_prec, done, f32, lanes_of
from ._const import LOG_SCALE_MAX, LOG_SCALE_MIN, MEAN_ABS_MAX, MIN_PREC  # noqa: F401  (public here)

# The kernels (the quantised CDF, guess and search, the blocked push / pop, mixtures, the
# channel AR) are in _nb_logistic.py; _kernels.py runs them ahead-of-time compiled or JIT.


# ---- Python entry points ----------------------------------------------------------------

def _u8(x, shape):
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.shape != shape:
        raise ValueError(f"x has shape {x.shape}, parameters have {shape}")
    return x


def _pair(mean, log_scale, ndim):
    mean, log_scale = f32(mean, ndim, "mean"), f32(log_scale, ndim, "log_scale")
    if mean.shape != log_scale.shape:
        raise ValueError("mean and log_scale must have the same shape")
    return mean, log_scale


def push(msgs, mean, log_scale, x, prec):
    """Push uint8[n, D] pixels under discretised logistics (float32[n, D] mean, log_scale)."""
    prec = check_prec(prec, MIN_PREC)
    mean, log_scale = _pair(mean, log_scale, 2)
    x = _u8(x, mean.shape)
    heads, addr = lanes_of(msgs, mean.shape[0])
    _kernels.run_lanes("logistic_push", (heads, addr, mean, log_scale, x, prec), *mean.shape[:2])
    done(msgs)


def pop(msgs, mean, log_scale, prec):
    """Pop uint8[n, D] pixels (column 0 first)."""
    prec = check_prec(prec, MIN_PREC)
    mean, log_scale = _pair(mean, log_scale, 2)
    heads, addr = lanes_of(msgs, mean.shape[0])
    out = np.empty(mean.shape, np.uint8)
    _kernels.run_lanes("logistic_pop", (heads, addr, mean, log_scale, prec, out), *mean.shape[:2])
    return out


def cdf_table(mean, log_scale, prec):
    """uint32[N, 257] quantised starts (last column 2^prec) for flattened parameters."""
    prec = check_prec(prec, MIN_PREC)
    mean = np.ascontiguousarray(mean, dtype=np.float32).ravel()
    log_scale = np.ascontiguousarray(log_scale, dtype=np.float32).ravel()
    return _kernels.get("logistic_cdf_table")(mean, log_scale, prec)


def starts_freqs(mean, log_scale, x, prec):
    """(starts, freqs) uint32 of symbols x (any shape) under the quantised model."""
    t = cdf_table(mean, log_scale, prec)
    k = np.ascontiguousarray(x, dtype=np.uint8).ravel().astype(np.intp)
    r = np.arange(k.size)
    s = t[r, k]
    return s.reshape(np.shape(x)), (t[r, k + 1] - s).reshape(np.shape(x))


def freqs(mean, log_scale, x, prec):
    """uint32[n, D] quantised frequencies of pixels x under the discretised logistics
    (the same starts as push / pop, without the 257-entry table of ``starts_freqs``)."""
    prec = check_prec(prec, MIN_PREC)
    mean, log_scale = _pair(mean, log_scale, 2)
    return _kernels.get("logistic_freqs")(mean, log_scale, _u8(x, mean.shape), prec)


def _ar_args(mean, log_scale, coef):
    mean, log_scale = _pair(mean, log_scale, 4)
    coef = f32(coef, 4, "coef")
    if mean.shape[1] != 3 or coef.shape != mean.shape:
        raise ValueError("channel AR needs (n, 3, H, W) mean, log_scale and coef")
    return mean, log_scale, coef


def push_ar(msgs, mean, log_scale, coef, x, prec):
    """Push uint8[n, 3, H, W] RGB images under channel-wise autoregressive logistics.

    coef[:, 0] = c(g|r), coef[:, 1] = c(b|r), coef[:, 2] = c(b|g), pixel units:
    mean_g += c(g|r) x_r ; mean_b += c(b|r) x_r + c(b|g) x_g. Order in a lane: raster
    over (h, w), and r, g, b at each pixel.
    """
    prec = check_prec(prec, MIN_PREC)
    mean, log_scale, coef = _ar_args(mean, log_scale, coef)
    x = _u8(x, mean.shape)
    heads, addr = lanes_of(msgs, mean.shape[0])
    _kernels.run_lanes("logistic_push_ar", (heads, addr, mean, log_scale, coef, x, prec), *mean.shape[:2])
    done(msgs)


def pop_ar(msgs, mean, log_scale, coef, prec):
    """Pop uint8[n, 3, H, W]; dependent means are formed from the channels just decoded."""
    prec = check_prec(prec, MIN_PREC)
    mean, log_scale, coef = _ar_args(mean, log_scale, coef)
    heads, addr = lanes_of(msgs, mean.shape[0])
    out = np.zeros(mean.shape, np.uint8)
    _kernels.run_lanes("logistic_pop_ar", (heads, addr, mean, log_scale, coef, prec, out), *mean.shape[:2])
    return out


def ar_starts_freqs(mean, log_scale, coef, x, prec):
    prec = check_prec(prec, MIN_PREC)
    mean, log_scale, coef = _ar_args(mean, log_scale, coef)
    return _kernels.get("logistic_ar_starts_freqs")(mean, log_scale, coef, _u8(x, mean.shape), prec)


def _mix_args(lw, mean, log_scale):
    lw = f32(lw, 3, "logit_weights")
    mean, log_scale = _pair(mean, log_scale, 3)
    if lw.shape != mean.shape or mean.shape[2] < 1:
        raise ValueError("logit_weights, mean, log_scale must all be (n, D, M), M >= 1")
    return lw, mean, log_scale


def push_mixture(msgs, logit_weights, mean, log_scale, x, prec):
    """Push uint8[n, D] under mixtures of M discretised logistics ((n, D, M) parameters).

    CDF = sum_m softmax(logit_weights)_m F_m, with the same edges and quantisation.
    """
    prec = check_prec(prec, MIN_PREC)
    lw, mean, log_scale = _mix_args(logit_weights, mean, log_scale)
    x = _u8(x, mean.shape[:2])
    heads, addr = lanes_of(msgs, mean.shape[0])
    _kernels.run_lanes("logistic_push_mix", (heads, addr, lw, mean, log_scale, x, prec), *mean.shape[:2])
    done(msgs)


def pop_mixture(msgs, logit_weights, mean, log_scale, prec):
    """Pop uint8[n, D] under mixtures of logistics (guess, then search the quantised CDF)."""
    prec = check_prec(prec, MIN_PREC)
    lw, mean, log_scale = _mix_args(logit_weights, mean, log_scale)
    heads, addr = lanes_of(msgs, mean.shape[0])
    out = np.empty(mean.shape[:2], np.uint8)
    _kernels.run_lanes("logistic_pop_mix", (heads, addr, lw, mean, log_scale, prec, out), *mean.shape[:2])
    return out


def mixture_starts_freqs(logit_weights, mean, log_scale, x, prec):
    prec = check_prec(prec, MIN_PREC)
    lw, mean, log_scale = _mix_args(logit_weights, mean, log_scale)
    return _kernels.get("logistic_mix_starts_freqs")(lw, mean, log_scale, _u8(x, mean.shape[:2]), prec)


def code_length(starts_freqs_result, prec):
    """Ideal bits, sum of -log2(freq / 2^prec), of a (starts, freqs) pair."""
    f = np.asarray(starts_freqs_result[1], dtype=np.float64)
    return float(int(prec) * f.size - np.log2(f).sum())
