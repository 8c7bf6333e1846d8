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

# context.py: kernel modes (one kernel per family serves all three)
PUSH, POP, FREQS = 0, 1, 2
