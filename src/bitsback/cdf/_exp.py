"""A monotone, libm-free exp for the quantised CDFs.

exp(x) = 2^n * P(r), with y = x / ln 2, n = floor(y), r = y - n in [0, 1) (exact), and
P the degree-11 Taylor polynomial of 2^r = e^(r ln 2) (relative error <= 3e-11);
2^n is built from its bits, so there is no table lookup and the loops vectorise.

Why not math.exp: (1) it costs ~10 ns here, three of them per logistic symbol, and it
blocks vectorisation; (2) glibc's exp can differ between versions/machines, this one is
plain IEEE arithmetic (numba does not contract to FMA without fastmath), so encoder and
decoder on different machines build the same CDFs; (3) it is monotone by construction:
within a cell every operation is monotone (Horner with positive coefficients on
r >= 0), and across cells P(1-) underestimates 2 by ~1e-11, far more than rounding, so
the value never drops at a cell boundary. Monotone F keeps every quantised frequency >= 1.
"""
import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)
_C = tuple(_LN2 ** k / math.factorial(k) for k in range(12))
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11 = _C


@intrinsic
def _bits_to_f64(typingctx, v):
    """Reinterpret int64 bits as a float64."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@njit(cache=True, inline="always", error_model="numpy")
def fexp(x):
    """exp(x) for finite x, argument clamped into [-700, 700]. NaN must not be passed."""
    x = min(max(x, -700.0), 700.0)
    y = x * _LOG2E
    f = np.floor(y)           # float floor (vroundpd); math.floor would return an int64
    r = y - f
    p = _C0 + r * (_C1 + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * (
        _C7 + r * (_C8 + r * (_C9 + r * (_C10 + r * _C11))))))))))
    # f in [-1010, 1010]: the int32 conversion vectorises (vcvttpd2dq), int64 needs AVX-512
    return _bits_to_f64(np.int64(np.int32(f) + np.int32(1023)) << 52) * p
