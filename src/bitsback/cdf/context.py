"""Causal-context families: each pixel's model reads already-coded pixels of its image.

The formulas are those of :mod:`bitsback.models.context` (the module doc there is the
spec). Decoding runs in raster order, pixel-major with lanes inside, so that pixel j of a
lane is decoded after every pixel it reads; encoding pushes in the reverse order and may
read any pixel (all are known), and computes the same float64 numbers from the same
float32 inputs, so both sides build identical CDFs.

Invariant kept here: context offsets are causal (checked by :class:`Context`), so the
decoder never reads a pixel it has not decoded yet.
"""
import functools

import numpy as np

from ..errors import BitsbackError, FormatError
from . import _kernels
from ._coder import check_prec, done, f32, lanes_of
from ._const import FREQS, MIN_PREC, POP, PUSH  # noqa: F401  (PUSH, POP, FREQS: public here)

# The kernels (bern and mix: one per family, serving push, pop and code lengths; the
# padded-image geometry ``geo`` and the row-shift tables ``cx`` they read) are in
# _nb_context.py, with the comments that define geo and cx; _kernels.py runs them
# ahead-of-time compiled or JIT.


@functools.cache
def sigmoid_table():
    """The Bernoulli-context sigmoid table (see _nb_context.py), built once on first use
    (not at import: under the JIT, loading the compiled builder costs ~0.15 s)."""
    return _kernels.get("context_sigmoid_table")()


_NO_FREQS = np.zeros((1, 1), np.uint32)

TABLES = {
    "bernoulli_context": ("gain", "bias"),
    "logistic_context": ("mgain", "coef", "mbias", "lscale", "wbias", "wgain"),
}


def n_features(likelihood: str, spec: dict) -> int:
    """d, the decoder's features per pixel."""
    return int(spec.get("features", 1)) if likelihood == "bernoulli_context" else 3


def n_contexts(spec: dict) -> int:
    """Q ** len(ctx_offsets), Q = len(thresholds) + 1: the rows of every context table."""
    return (len(spec["thresholds"]) + 1) ** len(spec["ctx_offsets"])


def causal_offsets(spec: dict, key: str) -> np.ndarray:
    """spec[key] as int64 (J, 2), checked to lie before the pixel in raster order."""
    offs = np.asarray(spec.get(key, []), np.int64).reshape(-1, 2)
    for dy, dx in offs:
        if not (dy < 0 or (dy == 0 and dx < 0)):
            raise FormatError(f"context {key}: ({dy}, {dx}) is not a causal neighbour")
    return offs


ROW_SHIFT_MAX_CONTEXTS = 1 << 16


def _row_shift(offs, Q, cdelta, ctab, step):
    """(perm, fdelta, ftab) for moving one pixel along a row (step +1: to the next pixel,
    -1: to the previous one); see cx in _nb_context.py. Neighbour t of the new pixel is neighbour
    (dy, dx + step) of the old one when that offset is in the list: its digit (base Q,
    weight Q**t) is carried over; the others are read afresh. perm is empty (every
    context computed in full) when there are more than ROW_SHIFT_MAX_CONTEXTS contexts."""
    T = len(offs)
    C = Q ** T
    if C > ROW_SHIFT_MAX_CONTEXTS:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros((0, 256), np.int32)
    where = {(int(dy), int(dx)): t for t, (dy, dx) in enumerate(offs)}
    digits = (np.arange(C)[:, None] // Q ** np.arange(T)[None, :]) % Q
    perm, fresh = np.zeros(C, np.int64), []
    for t, (dy, dx) in enumerate(offs):
        src = where.get((int(dy), int(dx) + step))
        if src is None:
            fresh.append(t)
        else:
            perm += digits[:, src] * Q ** t
    return (np.ascontiguousarray(perm, np.int32), np.ascontiguousarray(cdelta[fresh], np.int64),
            np.ascontiguousarray(ctab[fresh], np.int32))


class Context:
    """One causal-context likelihood: its spec and tables, with push/pop over lanes.

    ``feats`` is the decoder's (n, D, d) float32 output, d = n_features(likelihood, spec).
    """

    def __init__(self, likelihood: str, spec: dict, tables):
        if likelihood not in TABLES:
            raise BitsbackError(f"not a context likelihood: {likelihood!r}")
        self.likelihood = likelihood
        H, W = (int(s) for s in spec["shape"])
        offs, self.lin = causal_offsets(spec, "ctx_offsets"), causal_offsets(spec, "lin_offsets")
        allo = np.concatenate([offs, self.lin])
        R, P = int(-allo[:, 0].min()), int(np.abs(allo[:, 1]).max())
        self.H, self.D, Wp = H, H * W, W + 2 * P
        self.geo = (W, Wp, R, P)
        cdelta = np.ascontiguousarray(offs[:, 0] * Wp + offs[:, 1])
        self.ldelta = np.ascontiguousarray(self.lin[:, 0] * Wp + self.lin[:, 1])
        thr = np.asarray(spec["thresholds"], np.int64).reshape(-1)
        if thr.size > 8:
            raise BitsbackError("context: at most 8 thresholds")
        Q, C = thr.size + 1, n_contexts(spec)
        if C > 1 << 24:
            raise BitsbackError(f"context: {Q}**{len(offs)} contexts is too many")
        bucket = (np.arange(256)[:, None] >= thr[None, :]).sum(1)
        ctab = np.ascontiguousarray((Q ** np.arange(len(offs)))[:, None] * bucket[None, :], np.int32)
        self.cx = (cdelta, ctab, *_row_shift(offs, Q, cdelta, ctab, +1), *_row_shift(offs, Q, cdelta, ctab, -1))
        self.ulut = np.arange(256) / 127.5 - 1.0     # u = n / 127.5 - 1, the linear neighbour input
        self.tables = tuple(np.ascontiguousarray(tables[name], np.float32) for name in TABLES[likelihood])
        for name, t in zip(TABLES[likelihood], self.tables):
            if t.shape[0] != C or not np.isfinite(t).all():
                raise BitsbackError(f"context table {name} has shape {t.shape}; expected {C} finite rows")
        self.d = n_features(likelihood, spec)
        if likelihood == "bernoulli_context":
            if self.tables[0].shape != (C, self.d) or self.tables[1].shape != (C,):
                raise BitsbackError(f"context tables gain/bias have shapes {self.tables[0].shape}/{self.tables[1].shape}")
        else:
            K = int(spec["mixture"])
            want = {"coef": (C, K, len(self.lin))}
            for name, t in zip(TABLES[likelihood], self.tables):
                if t.shape != want.get(name, (C, K)):
                    raise BitsbackError(f"context table {name} has shape {t.shape}; expected {want.get(name, (C, K))}")

    def _feats(self, feats):
        feats = f32(feats, 3, "features")
        if feats.shape[1:] != (self.D, self.d):
            raise ValueError(f"features must be (n, {self.D}, {self.d}); got {feats.shape}")
        return feats

    def _x(self, x, n):
        x = np.ascontiguousarray(x, np.uint8)
        if not x.flags.writeable:   # one kernel reads or writes x (push / pop): type it mutable
            x = x.copy()
        if x.shape != (n, self.D):
            raise ValueError(f"symbols must be ({n}, {self.D}); got {x.shape}")
        if self.likelihood == "bernoulli_context" and x.size and x.max() > 1:
            raise ValueError("Bernoulli symbols must be 0 or 1")
        return x

    def _padded(self, x=None, n=0):
        """Zero-padded image buffers (n, (H + R) * Wp), holding x when given."""
        W, Wp, R, P = self.geo
        if x is None:
            return np.zeros((n, (self.H + R) * Wp), np.uint8)
        pad = np.zeros((len(x), self.H + R, Wp), np.uint8)
        pad[:, R:, P:P + W] = x.reshape(len(x), self.H, W)
        return pad.reshape(len(x), -1)

    def _args(self):
        if self.likelihood == "bernoulli_context":
            return (self.geo, self.cx, sigmoid_table(), *self.tables)
        return (self.geo, self.cx, self.ulut, self.ldelta, self.tables)

    def _prec(self, prec):
        return check_prec(prec, MIN_PREC if self.likelihood == "logistic_context" else 1)

    def _run(self, msgs, feats, x, pad, prec, mode, fr):
        heads, addr = (msgs.heads, np.uint64(msgs.address)) if msgs is not None else (np.zeros(len(x), np.uint64), np.uint64(0))
        name = "context_bern" if self.likelihood == "bernoulli_context" else "context_mix"
        args = (heads, addr, feats, x, pad, *self._args(), prec, mode, fr)
        if mode == FREQS:
            _kernels.get(name)(*args, 0, len(x))
        else:
            _kernels.run_lanes(name, args, feats.shape[0], self.D)

    def push(self, msgs, feats, x, prec):
        """Push symbols x (uint8 (n, D)) onto lanes 0..n-1."""
        prec, feats = self._prec(prec), self._feats(feats)
        x = self._x(x, feats.shape[0])
        lanes_of(msgs, feats.shape[0])
        self._run(msgs, feats, x, self._padded(x), prec, PUSH, _NO_FREQS)
        done(msgs)

    def pop(self, msgs, feats, prec):
        """Pop uint8 (n, D) symbols, pixel 0 first, from lanes 0..n-1."""
        prec, feats = self._prec(prec), self._feats(feats)
        lanes_of(msgs, feats.shape[0])
        out = np.zeros((feats.shape[0], self.D), np.uint8)
        self._run(msgs, feats, out, self._padded(None, len(out)), prec, POP, _NO_FREQS)
        return out

    def code_length(self, feats, x, prec):
        """Ideal code length in bits of x under the quantised model, per image (n,)."""
        prec, feats = self._prec(prec), self._feats(feats)
        x = self._x(x, feats.shape[0])
        f = np.empty(x.shape, np.uint32)
        self._run(None, feats, x, self._padded(x), prec, FREQS, f)
        return prec * self.D - np.log2(f.astype(np.float64)).sum(1)
