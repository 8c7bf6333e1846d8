"""rANS push/pop written inline in numba, with the C core owning the word stacks.

A compiled family loop keeps the head arithmetic in numba (heads is the C array, shared)
and calls C only to emit or take a 32-bit word, i.e. about once per 32 coded bits. The
C hooks are called by name: under the JIT they are linked with llvmlite.add_symbol
(``link``, which keeps ``cache=True`` usable: the cached object code refers to the
symbol, not to an address of this process); in the ahead-of-time module (_aot_build.py)
the same names resolve to _aot_hooks.c, which forwards to the _rans extension's functions.

Only the JIT backend and the AOT build import this module (it imports numba).
"""
import numpy as np
from numba import njit, types

# void bb_emit(bb_msgs *m, size_t lane, uint32_t word); uint32_t bb_take(bb_msgs *m, size_t lane)
_emit = types.ExternalFunction("bb_emit", types.void(types.uint64, types.intp, types.uint32))
_take = types.ExternalFunction("bb_take", types.uint32(types.uint64, types.intp))

RANS_L = np.uint64(1 << 31)
_W = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)


def link(symbols):
    """Make the C hooks (name -> address, from _rans.c_symbols()) visible to the JIT."""
    import llvmlite.binding as llvm

    for name, addr in symbols.items():
        llvm.add_symbol(name, addr)


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
