"""Argument checks and lane bookkeeping shared by the family wrappers (no numba here).

The compiled kernels themselves (numba JIT, or the ahead-of-time extension built from
the same sources) are reached through _kernels.py; the inline rANS push/pop they share
is in _nbcoder.py.
"""
import numpy as np

from .. import _rans
from ..errors import BitsbackError

MAX_PRECISION = _rans.MAX_PRECISION


def lanes_of(msgs, n):
    """(heads, address) of msgs after checking that n rows fit its lanes."""
    if n > msgs.lanes:
        raise ValueError(f"{n} rows but the message set has only {msgs.lanes} lanes")
    return msgs.heads, np.uint64(msgs.address)


def check_prec(prec, lo=1, hi=MAX_PRECISION):
    prec = int(prec)
    if not lo <= prec <= hi:
        raise ValueError(f"precision must be in [{lo}, {hi}], got {prec}")
    return prec


def f32(a, ndim, name):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def done(msgs):
    msgs.raise_if_error()


class SymbolError(BitsbackError, ValueError):
    """A symbol to push is outside its alphabet."""


_threads = 1
PARALLEL_MIN_SYMBOLS = 1 << 16


def set_threads(k=None):
    """Threads used by the bulk family operations (default 1: serial; None: numba default)."""
    global _threads
    _threads = None if k is None else max(1, int(k))


def chunks_for(n, D=1):
    """How many lane chunks to run in parallel for an (n, D) operation (1 = serial)."""
    if n < 2 or n * D < PARALLEL_MIN_SYMBOLS or _threads == 1:
        return 1  # decided before asking numba: get_num_threads costs ~µs a call, per shard and step
    import numba

    t = numba.get_num_threads() if _threads is None else min(_threads, numba.get_num_threads())
    if t <= 1:
        return 1
    return min(t, n)
