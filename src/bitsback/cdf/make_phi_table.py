"""Generate phi_table.npy: P[k] = Phi(-L + k h), k = 0..2 L / h, Phi the N(0, 1) CDF.

Run once (``python -m bitsback.cdf.make_phi_table``); the file is shipped so that the
latent posterior CDF of container versions >= 5 (see _nb_latent.grid_phi) is the same
on every machine: no libm is asked for Phi at encode or decode time, and nothing is
computed from the table at import. Values come from mpmath at 40 significant digits,
rounded once to the nearest float64.

Grid (PHI_L, PHI_CELLS_LOG2 in _const.py): L = 9, h = 2^-12, 73729 entries (576 KiB).
- Tails: Phi(-9) = 1.1e-19 and 1 - Phi(9) = 1.1e-19, so clamping to 0 below the grid
  and to 1 above it is off by at most 1.1e-19, far below the posterior's 2^-31 resolution.
- Interpolation: linear interpolation errs by at most h^2 / 8 * max|Phi''| =
  2^-24 / 8 * phi(1) = 1.8e-9 (2^-29.0), a 33rd of 2^-24 (6.0e-8), so at the usual
  precision 24 a bucket's start moves by at most one unit of 2^-24 against the exact
  Phi. h = 2^-11 would give 7.2e-9, an 8th of 2^-24: h = 2^-12 is chosen for the margin,
  at twice the table's size.
- Sterbenz: every ratio P[k+1] / P[k] is below 2 (largest in the far left tail,
  ~exp(9 h) = 1.0022), so the kernel's P[k+1] - P[k] is exact; generate() asserts it.
"""
from pathlib import Path

import numpy as np

from ._const import PHI_CELLS_LOG2, PHI_L

PATH = Path(__file__).with_name("phi_table.npy")


def generate():
    """float64[2 L 2^PHI_CELLS_LOG2 + 1]: Phi at the grid points, correctly rounded from
    40 digits; checked non-decreasing, with every neighbour ratio < 2 and P[-1] == 1."""
    import mpmath
    from mpmath.libmp import round_nearest, to_float

    mpmath.mp.dps = 40
    per_unit = 1 << PHI_CELLS_LOG2
    n = 2 * PHI_L * per_unit
    p = np.empty(n + 1, dtype=np.float64)
    for k in range(n + 1):
        x = mpmath.mpf(k) / per_unit - PHI_L          # exact: k / 2^12 - 9 is a short binary fraction
        p[k] = to_float(mpmath.ncdf(x)._mpf_, rnd=round_nearest)
    assert p[0] > 0 and p[-1] == 1.0
    assert np.all(np.diff(p) >= 0)
    assert np.all(p[1:] <= 2 * p[:-1])               # Sterbenz: P[k+1] - P[k] is exact
    return p


if __name__ == "__main__":
    table = generate()
    np.save(PATH, table)
    print(f"wrote {PATH} ({table.size} entries)")
