"""Constants shared by the cdf wrappers and their compiled kernels (no numba here: the
wrappers import this without importing numba; the kernel sources read it at build time)."""

# logistic.py: log-scale clamps (pixel units), mean clamp, smallest precision
LOG_SCALE_MIN = -7.0
LOG_SCALE_MAX = 7.0
MEAN_ABS_MAX = 1e6
MIN_PREC = 9

# latent.py: largest bucket bits; the shipped table has 2^LATENT_RES + 1 edges
MAX_BITS = 16
LATENT_RES = 17
# latent.py (container versions >= 5): the shipped Phi grid, phi_table.npy, spans
# [-PHI_L, PHI_L] (Phi(-9) = 1.1e-19: the clamps outside are negligible) in cells of
# h = 2^-PHI_CELLS_LOG2 (interpolation error <= 1.8e-9; see make_phi_table.py)
PHI_L = 9
PHI_CELLS_LOG2 = 12

# context.py: kernel modes (one kernel per family serves all three)
PUSH, POP, FREQS = 0, 1, 2
