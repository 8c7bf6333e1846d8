"""rANS push/pop written inline in numba, with the C core owning the word stacks.

A compiled family loop keeps the head arithmetic in numba (heads is the C array, shared)
and calls C only to emit or take a 32-bit word, i.e. about once per 32 coded bits. The
C hooks are linked by name (llvmlite.add_symbol), which keeps ``cache=True`` usable: the
cached object code refers to the symbol, not to an address of this process.
"""
import llvmlite.binding as _llvm
import numpy as np
from numba import njit, types

from .. import _rans
from ..errors import BitsbackError

for _name, _addr in _rans.c_symbols().items():
    _llvm.add_symbol(_name, _addr)

# void bb_emit(bb_msgs *m, size_t lane, uint32_t word); uint32_t bb_take(bb_msgs *m, size_t lane)
_emit = types.ExternalFunction("bb_emit", types.void(types.uint64, types.intp, types.uint32))
_take = types.ExternalFunction("bb_take", types.uint32(types.uint64, types.intp))

RANS_L = np.uint64(1 << 31)
_W = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)
MAX_PRECISION = _rans.MAX_PRECISION


# The kernels call the scalar forms push_x / advance_x (head in, head out). The array
# forms below are kept for callers outside the families, but must not be used in hot
# loops: numba-IR inlining of a function that takes an array re-binds the array, and
# each re-binding costs an atomic NRT_incref/NRT_decref pair (two calls, plus spills
# around them) per symbol; that was ~20 ns of the ~35 ns/symbol Bernoulli push
# (docs/CODER.md, "Performance").

@njit(inline="always", error_model="numpy")
def push_x(x, addr, lane, start, freq, prec):
    """Head after encoding (start, freq) at precision prec (uint64 args) onto lane's head x."""
    if x >= ((RANS_L >> prec) << _W) * freq:
        _emit(addr, lane, np.uint32(x & _LOW))
        x >>= _W
    q = x // freq                      # one divq: the remainder is x - q * freq
    return (q << prec) + (x - q * freq) + start


@njit(inline="always", error_model="numpy")
def advance_x(x, addr, lane, start, freq, prec, mask):
    """Head after removing (start, freq), whose interval holds the peeked cf = x & mask."""
    x = freq * (x >> prec) + (x & mask) - start
    if x < RANS_L:
        x = (x << _W) | np.uint64(_take(addr, lane))
    return x


@njit(error_model="numpy")
def push_sym(heads, addr, lane, start, freq, prec):
    """Encode (start, freq) at precision prec (uint64 args) onto lane."""
    heads[lane] = push_x(heads[lane], addr, lane, start, freq, prec)


@njit(error_model="numpy")
def peek(heads, lane, mask):
    return heads[lane] & mask


@njit(error_model="numpy")
def advance(heads, addr, lane, start, freq, prec, mask):
    """Second half of a pop: remove (start, freq), whose interval holds the peeked cf."""
    heads[lane] = advance_x(heads[lane], addr, lane, start, freq, prec, mask)


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


def run_lanes(kernel, par_kernel, args, n, D=1):
    """Run a family kernel over lanes 0..n-1: serially (``kernel(*args, 0, n)``), or in
    lane chunks on numba threads (``par_kernel(*args, chunks)``), as chunks_for decides."""
    ch = chunks_for(n, D)
    if ch > 1:
        par_kernel(*args, ch)
    else:
        kernel(*args, 0, n)
