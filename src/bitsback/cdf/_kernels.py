"""Which compiled kernels the cdf wrappers call: ahead-of-time (bitsback.cdf._aot) or JIT.

The kernels are the numba functions of the _nb_*.py modules. setup.py compiles them
ahead of time, with the signatures of _sigs.KERNELS, into the extensions bitsback.cdf._aot
(x86-64-v2) and _aot_v3 (x86-64-v3) when numba is there at build time (_aot_build.py).
At run time:

- an AOT module is used when it imports, its cpu_ok() accepts this CPU, and it was built
  from these very sources (its source_hash() equals _sigs.source_hash()): _aot_v3 first,
  then _aot; unless BITSBACK_JIT is set (not "" / "0"). numba is then never imported on
  the serial coding path;
- otherwise the kernels are numba's JIT functions, exactly as without the AOT module.

Every AOT call is checked against its signature first (dtype, ndim, C order of every
array: the extension would reinterpret, not convert, a wrong one); a call that does not
fit goes to the JIT kernel instead, and is counted in ``jit_fallbacks``. The
numba-parallel lane drivers (``set_threads`` != 1 and a big enough batch) are JIT only.
Both backends compute the same bits (no fastmath; tests/test_aot.py compares them).
"""
import importlib
import os

import numpy as np

from .. import _rans
from . import _sigs
from ._coder import chunks_for

backend = "jit"          # "aot" or "jit": what get() returns
reason = ""              # why the AOT module is not used (empty when it is)
jit_fallbacks = {}       # kernel name -> AOT calls that went to the JIT (arguments did not fit)

_aot = None              # the AOT module when it is the backend
_aot_checked = None      # aot_modules()'s answer
_jit_linked = False
_fns = {}


VARIANTS = ("_aot_v3", "_aot")    # in order of preference (x86-64-v3, then x86-64-v2 / generic)


def _usable(name):
    """(module, None) if the AOT module bitsback.cdf.<name> imports, runs on this CPU and
    was built from these sources; else (None, why not)."""
    try:
        mod = importlib.import_module(f"{__package__}.{name}")
    except ImportError as e:
        return None, f"{name} not built ({e})"
    cpu_ok = getattr(mod, "cpu_ok", None)      # asked first: C code that runs on any CPU
    if cpu_ok is not None and not cpu_ok():
        return None, f"{name}: this CPU lacks features it was compiled for (see _aot_build.py)"
    if cpu_ok is None or mod.source_hash() != _sigs.source_hash():
        return None, f"{name} was built from other sources than these (rebuild: setup.py build_ext)"
    return mod, None


def aot_modules():
    """Every usable AOT module (see _usable), in order of preference."""
    global _aot_checked, reason
    if _aot_checked is None:
        found, why = [], []
        for name in VARIANTS:
            mod, no = _usable(name)
            if mod is None:
                why.append(no)
            else:
                hooks = _rans.c_symbols()
                mod.link_hooks(np.uint64(hooks["bb_emit"]), np.uint64(hooks["bb_take"]))
                found.append(mod)
        _aot_checked = found
        if not found:
            reason = "; ".join(why)
    return list(_aot_checked)


def aot_module():
    """The preferred usable AOT module, whatever BITSBACK_JIT says; None if there is none
    (``reason`` says why)."""
    mods = aot_modules()
    return mods[0] if mods else None


def _select():
    global _aot, backend, reason
    if os.environ.get("BITSBACK_JIT", "") not in ("", "0"):
        reason = "BITSBACK_JIT is set"
    elif aot_module() is not None:
        _aot, backend, reason = aot_module(), "aot", ""


def jit(name):
    """The numba JIT kernel called name (imports numba and the kernel module)."""
    global _jit_linked
    par = name.endswith("_par")
    module, fn = _sigs.KERNELS[name[:-4] if par else name][:2]
    if not _jit_linked:
        from . import _nbcoder

        _nbcoder.link(_rans.c_symbols())
        _jit_linked = True
    return getattr(importlib.import_module(f"{__package__}.{module}"), fn + ("_par" if par else ""))


_DTYPES = {"f32": np.float32, "f64": np.float64, "u8": np.uint8, "u32": np.uint32, "u64": np.uint64,
           "i32": np.int32, "i64": np.int64}


def _conditions(spec, v, out, env):
    """Append to ``out`` the Python conditions under which expression ``v`` fits the _sigs
    type spec (as the AOT function takes it); constants they name go into ``env``."""
    if isinstance(spec, tuple):
        out.append(f"type({v}) is tuple and len({v}) == {len(spec)}")
        for i, s in enumerate(spec):
            _conditions(s, f"{v}[{i}]", out, env)
    elif spec in ("i64", "u64"):
        lo, hi = (-(1 << 63), (1 << 63) - 1) if spec == "i64" else (0, (1 << 64) - 1)
        out.append(f"(type({v}) is int or isinstance({v}, _npint)) and {lo} <= {v} <= {hi}")
    else:
        dtype, rest = spec.split("[")
        name = f"_dt_{dtype}"
        env[name] = np.dtype(_DTYPES[dtype])    # == not is: an array made from a buffer format (the heads) has an equal, other dtype object
        out.append(f"isinstance({v}, _nd) and {v}.dtype == {name} and {v}.ndim == {int(rest.split(']')[0])} "
                   f"and {v}.flags.c_contiguous")


def _checked(name, fn):
    """fn behind a check of its arguments, compiled once into one straight-line expression
    (a generic loop over the specs cost ~15 us a call, a third of a small kernel's time)."""
    specs = _sigs.args_of(name)
    args = [f"a{i}" for i in range(len(specs))]
    conds, env = [], {"_nd": np.ndarray, "_npint": np.integer}
    for spec, a in zip(specs, args):
        _conditions(spec, a, conds, env)
    code = f"def fits({', '.join(args)}):\n    return " + (" and ".join(f"({c})" for c in conds) or "True") + "\n"
    exec(code, env)     # noqa: S102 - the code is built from _sigs' fixed specs only
    fits, n = env["fits"], len(specs)

    def call(*args):
        if len(args) == n and fits(*args):
            return fn(*args)
        jit_fallbacks[name] = jit_fallbacks.get(name, 0) + 1
        return jit(name)(*args)

    call.__name__ = call.__qualname__ = name
    return call


def get(name):
    """The kernel called name (a key of _sigs.KERNELS), from the backend in use."""
    f = _fns.get(name)
    if f is None:
        f = _checked(name, getattr(_aot, name)) if _aot is not None else jit(name)
        _fns[name] = f
    return f


def run_lanes(name, args, n, D=1):
    """Run lane kernel name over lanes 0..n-1: serially (``kernel(*args, 0, n)``), or in
    lane chunks on numba threads (``<name>_par(*args, chunks)``, JIT), as chunks_for decides."""
    ch = chunks_for(n, D)
    if ch > 1:
        jit(name + "_par")(*args, ch)
    else:
        get(name)(*args, 0, n)


_select()
