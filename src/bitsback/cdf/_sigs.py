"""The compiled kernels the wrappers call, with the argument types they pass (no numba).

Each entry: name -> (kernel module, function, argument types, return type). A type is a
scalar ("i64": Python int, "u64": numpy.uint64), a C-contiguous array "<dtype>[<ndim>]"
(suffix "ro": typed read-only), a tuple of types, or None (no return value). The
ahead-of-time build (_aot_build.py) exports exactly these signatures; at run time
_kernels.py checks every call against them before calling the AOT function (an argument
of another type would be reinterpreted, not converted), and calls the JIT kernel instead
when a check fails. A lane kernel ("lanes": True) takes lane_lo, lane_hi last, and has a
numba-parallel twin <function>_par(..., chunks) (JIT only).

SOURCES lists the files the AOT module is compiled from; source_hash() (stored in the
module at build time) tells a stale module from a current one.
"""
import hashlib
from pathlib import Path

I, U = "i64", "u64"
HEADS, ADDR = "u64[1]", U
CX = ("i64[1]", "i32[2]", "i32[1]", "i64[1]", "i32[2]", "i32[1]", "i64[1]", "i32[2]")
GEO = (I, I, I, I)
TABLE = "f64[1]ro"      # latent.py's shipped edge table (read-only)
PHI = "f64[1]ro"        # latent.py's shipped Phi grid, or its empty array (erfc formula; read-only)

KERNELS = {
    # name: (module, function, args, returns, lanes)
    "bernoulli_push": ("_nb_bernoulli", "push", (HEADS, ADDR, "f32[2]", "u8[2]", I), None, True),
    "bernoulli_pop": ("_nb_bernoulli", "pop", (HEADS, ADDR, "f32[2]", I, "u8[2]"), None, True),
    "bernoulli_starts_freqs": ("_nb_bernoulli", "starts_freqs", ("f32[1]", "u8[1]", I), ("u32[1]", "u32[1]"), False),
    "logistic_push": ("_nb_logistic", "push", (HEADS, ADDR, "f32[2]", "f32[2]", "u8[2]", I), None, True),
    "logistic_pop": ("_nb_logistic", "pop", (HEADS, ADDR, "f32[2]", "f32[2]", I, "u8[2]"), None, True),
    "logistic_cdf_table": ("_nb_logistic", "cdf_table", ("f32[1]", "f32[1]", I), "u32[2]", False),
    "logistic_freqs": ("_nb_logistic", "freqs", ("f32[2]", "f32[2]", "u8[2]", I), "u32[2]", False),
    "logistic_push_ar": ("_nb_logistic", "push_ar", (HEADS, ADDR, "f32[4]", "f32[4]", "f32[4]", "u8[4]", I), None, True),
    "logistic_pop_ar": ("_nb_logistic", "pop_ar", (HEADS, ADDR, "f32[4]", "f32[4]", "f32[4]", I, "u8[4]"), None, True),
    "logistic_ar_starts_freqs": ("_nb_logistic", "ar_starts_freqs", ("f32[4]", "f32[4]", "f32[4]", "u8[4]", I),
                                 ("u32[4]", "u32[4]"), False),
    "logistic_push_mix": ("_nb_logistic", "push_mix", (HEADS, ADDR, "f32[3]", "f32[3]", "f32[3]", "u8[2]", I), None, True),
    "logistic_pop_mix": ("_nb_logistic", "pop_mix", (HEADS, ADDR, "f32[3]", "f32[3]", "f32[3]", I, "u8[2]"), None, True),
    "logistic_mix_starts_freqs": ("_nb_logistic", "mix_starts_freqs", ("f32[3]", "f32[3]", "f32[3]", "u8[2]", I),
                                  ("u32[2]", "u32[2]"), False),
    "latent_push_post": ("_nb_latent", "push_post", (HEADS, ADDR, "f32[2]", "f32[2]", "i64[2]", I, I, TABLE, PHI),
                         None, True),
    "latent_pop_post": ("_nb_latent", "pop_post", (HEADS, ADDR, "f32[2]", "f32[2]", I, I, TABLE, PHI, "i64[2]"),
                        None, True),
    "latent_cdf_table": ("_nb_latent", "cdf_table", ("f32[1]", "f32[1]", I, I, TABLE, PHI), "u32[2]", False),
    "latent_sample": ("_nb_latent", "sample", ("f32[2]", "f32[2]", "u64[2]", I, I, TABLE, PHI), ("i64[2]", "f64[2]"),
                      False),
    "context_sigmoid_table": ("_nb_context", "sigmoid_table", (), "f64[1]", False),
    "context_bern": ("_nb_context", "bern", (HEADS, ADDR, "f32[3]", "u8[2]", "u8[2]", GEO, CX, "f64[1]", "f32[2]", "f32[1]",
                                             I, I, "u32[2]"), None, True),
    "context_mix": ("_nb_context", "mix", (HEADS, ADDR, "f32[3]", "u8[2]", "u8[2]", GEO, CX, "f64[1]", "i64[1]",
                                           ("f32[2]", "f32[3]", "f32[2]", "f32[2]", "f32[2]", "f32[2]"),
                                           I, I, "u32[2]"), None, True),
}

# Python files only (every install has them; _aot_hooks.c, also compiled in, is a build
# dependency in setup.py but is not shipped in wheels).
SOURCES = ("_const.py", "_exp.py", "_nbcoder.py", "_nb_bernoulli.py", "_nb_logistic.py", "_nb_latent.py",
           "_nb_context.py", "_sigs.py", "_aot_build.py")


def args_of(name):
    """The full argument types of kernel name (lane kernels: with lane_lo, lane_hi)."""
    _, _, args, _, lanes = KERNELS[name]
    return args + (I, I) if lanes else args


def source_hash():
    """63-bit hash of the kernel sources (SOURCES, in order)."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in SOURCES:
        data = (here / name).read_bytes()
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return int.from_bytes(h.digest()[:8], "little") >> 1
