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
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

# The constants are literals, not computed at import: math.log and float ** int (C pow)
# are libm calls whose last bit may differ between C libraries, and the JIT would bake
# that machine's bits into every CDF. These are the values glibc gave for
# 1 / log(2), log(2) and log(2) ** k / k! (k = 0..11) when the format was fixed (every
# file so far was coded with them); float.fromhex is exact, so each is that very double.
_LOG2E = float.fromhex("0x1.71547652b82fep+0")
_LN2 = float.fromhex("0x1.62e42fefa39efp-1")
_C = tuple(float.fromhex(h) for h in (
    "0x1.0000000000000p+0", "0x1.62e42fefa39efp-1", "0x1.ebfbdff82c58ep-3", "0x1.c6b08d704a0bfp-5",
    "0x1.3b2ab6fba4e77p-7", "0x1.5d87fe78a6730p-10", "0x1.430912f86c786p-13", "0x1.ffcbfc588b0c5p-17",
    "0x1.62c0223a5c822p-20", "0x1.b5253d395e7c1p-24", "0x1.e4cf5158b8ec7p-28", "0x1.e8cac7351bb22p-32"))
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


@intrinsic
def _f64_to_bits(typingctx, v):
    """Reinterpret a float64's bits as an int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return sig, codegen


_MANT = np.int64((1 << 52) - 1)
_ONE_BITS = np.int64(1023 << 52)


@njit(cache=True, inline="always", error_model="numpy")
def flog_guess(v):
    """log(v) for finite normal v > 0, relative error ~1e-6, no libm call.

    Only for *guesses* that are corrected against the quantised CDF (the logistic
    decoder's first bin): it is not monotone-checked and must not define a CDF.
    v = 2^e * m, m in [1, 2): log v = e ln 2 + 2 atanh((m - 1) / (m + 1)) (series to s^9).
    """
    b = _f64_to_bits(v)
    e = np.float64((b >> 52) - 1023)
    m = _bits_to_f64((b & _MANT) | _ONE_BITS)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    return e * _LN2 + 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (0.2 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))))
