"""Generate latent_table.npy: T[j] = Phi^-1(j / 2^17), j = 0..2^17, for N(0, 1).

Run once (``python -m bitsback.cdf.make_latent_table``); the file is shipped so that no
library version can change the bucket edges. Values come from mpmath at 30 significant
digits, rounded once to float64; T[0] = -inf, T[2^17] = +inf, and T is exactly
antisymmetric (T[2^17 - j] = -T[j]).

For b <= 16 bits: edges_b[i] = T[i << (17 - b)] (i = 0..2^b), and the bucket centre
(its conditional median) is centres_b[i] = T[(2 i + 1) << (16 - b)].
"""
from pathlib import Path

import numpy as np

RES_BITS = 17
PATH = Path(__file__).with_name("latent_table.npy")


def generate():
    import mpmath

    mpmath.mp.dps = 30
    N = 1 << RES_BITS
    t = np.empty(N + 1, dtype=np.float64)
    t[0], t[N // 2], t[N] = -np.inf, 0.0, np.inf
    for j in range(1, N // 2):
        v = float(mpmath.sqrt(2) * mpmath.erfinv(mpmath.mpf(2 * j) / N - 1))
        t[j], t[N - j] = v, -v
    return t


if __name__ == "__main__":
    table = generate()
    assert np.all(np.diff(table) > 0)
    np.save(PATH, table)
    print(f"wrote {PATH} ({table.size} entries)")
