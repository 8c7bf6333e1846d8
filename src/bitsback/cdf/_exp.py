"""A monotone, libm-free exp for the quantised CDFs.

exp(x) = 2^(n/32) * P(r), n = floor(32 x / ln 2), r = (32 x / ln 2 - n) ln 2 / 32 in
[0, ln 2 / 32), P = degree-5 Taylor polynomial of e^r (relative error <= 1.5e-13).

Why not math.exp: (1) it costs ~10 ns here, three of them per logistic symbol;
(2) glibc's exp can differ between versions/machines, this one is plain IEEE
arithmetic (numba does not contract to FMA without fastmath), so encoder and decoder
on different machines build the same CDFs; (3) it is monotone by construction: within
a cell every operation is monotone (Horner with positive coefficients on r >= 0), and
across cells P underestimates e^r by ~1e-13, far more than the 1e-16 rounding of the
2^(j/32) table, so the value never drops at a cell boundary. Monotone F is what keeps
every quantised frequency >= 1.
"""
import math

import numpy as np
from numba import njit

_K = 32.0 / math.log(2.0)
_R = math.log(2.0) / 32.0
# 2^(j/32), j = 0..31, correctly rounded (tests check them against mpmath)
_T = np.array([float.fromhex(h) for h in (
    "0x1.0000000000000p+0", "0x1.059b0d3158574p+0", "0x1.0b5586cf9890fp+0", "0x1.11301d0125b51p+0",
    "0x1.172b83c7d517bp+0", "0x1.1d4873168b9aap+0", "0x1.2387a6e756238p+0", "0x1.29e9df51fdee1p+0",
    "0x1.306fe0a31b715p+0", "0x1.371a7373aa9cbp+0", "0x1.3dea64c123422p+0", "0x1.44e086061892dp+0",
    "0x1.4bfdad5362a27p+0", "0x1.5342b569d4f82p+0", "0x1.5ab07dd485429p+0", "0x1.6247eb03a5585p+0",
    "0x1.6a09e667f3bcdp+0", "0x1.71f75e8ec5f74p+0", "0x1.7a11473eb0187p+0", "0x1.82589994cce13p+0",
    "0x1.8ace5422aa0dbp+0", "0x1.93737b0cdc5e5p+0", "0x1.9c49182a3f090p+0", "0x1.a5503b23e255dp+0",
    "0x1.ae89f995ad3adp+0", "0x1.b7f76f2fb5e47p+0", "0x1.c199bdd85529cp+0", "0x1.cb720dcef9069p+0",
    "0x1.d5818dcfba487p+0", "0x1.dfc97337b9b5fp+0", "0x1.ea4afa2a490dap+0", "0x1.f50765b6e4540p+0",
)])
# 2^e for e = -1024..1023 (normal range only is reached: |x| <= 700 gives |e| <= 1010)
_P2 = np.array([math.ldexp(1.0, e) for e in range(-1024, 1024)])


@njit(cache=True, inline="always", error_model="numpy")
def fexp(x):
    """exp(x) for finite x, argument clamped into [-700, 700]. NaN must not be passed."""
    if x > 700.0:
        x = 700.0
    elif x < -700.0:
        x = -700.0
    y = x * _K
    f = math.floor(y)
    r = (y - f) * _R
    n = np.int64(f)
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0)))))
    return _P2[(n >> 5) + 1024] * _T[n & 31] * p
