"""Build-time compiler of bitsback.cdf._aot: the numba kernels, compiled ahead of time.

setup.py runs this file as a script in a fresh interpreter (numba must be importable):

    python src/bitsback/cdf/_aot_build.py BUILD_DIR [--cpu NAME] [--name MODULE]

It compiles every kernel of _sigs.KERNELS, with exactly those signatures, by numba.pycc
into one object file and prints (last line, JSON) what to link it with: numba's pycc
module glue (modulemixin.c, NRT) and _aot_hooks.c. Three extra exports: ``source_hash()``
(the _sigs.source_hash() of the sources compiled), ``link_hooks(emit, take)`` and
``cpu_ok()``.

The compile flags are those of the JIT kernels (nopython, nogil, error_model="numpy";
never fastmath), so the module computes bit for bit what the JIT does. The CPU target
is never the build host's CPU (a wheel built here must run elsewhere). On x86-64,
setup.py builds two modules: _aot for "x86-64-v2" (SSE4.2, 2009 on) and _aot_v3 for
"x86-64-v3" (AVX2, 2013 on; the vectorised loops run ~1.2-1.7x faster than on v2 here,
at the JIT's speed). Each module's ``cpu_ok()`` (C, compiled for any x86-64) checks the
running CPU: _kernels.py takes _aot_v3, else _aot, else the JIT. Other targets get one
module for their generic CPU. ``--cpu host`` (or BITSBACK_AOT_CPU=host for setup.py)
builds one module for this machine only: not checked at run time, not for wheels.

Not imported at run time.
"""
import argparse
import importlib
import json
import os
import sys
import tempfile
import types as pytypes
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = "_aot"         # the extension's default name (bitsback.cdf._aot)


def _import_kernels():
    """Import bitsback.cdf's kernel modules without running the package __init__s (which
    need the _rans extension, perhaps not built yet)."""
    for name, path in (("bitsback", HERE.parent), ("bitsback.cdf", HERE)):
        if name not in sys.modules:
            pkg = pytypes.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    return importlib.import_module("bitsback.cdf._sigs")


def _numba_type(spec):
    from numba import types

    if spec is None:
        return types.void
    if isinstance(spec, tuple):
        return types.Tuple([_numba_type(s) for s in spec])
    scalars = {"i64": types.int64, "u64": types.uint64}
    if spec in scalars:
        return scalars[spec]
    dtype, rest = spec.split("[")
    ndim, flag = rest.split("]")
    dt = {"f32": types.float32, "f64": types.float64, "u8": types.uint8, "u32": types.uint32,
          "u64": types.uint64, "i32": types.int32, "i64": types.int64}[dtype]
    return types.Array(dt, int(ndim), "C", readonly=(flag == "ro"))


# Target options every exported kernel must have (as its JIT dispatcher does).
_OPTIONS = {"nopython": True, "nogil": True, "error_model": "numpy"}


def _check_options(name, disp):
    """The kernel's JIT options must be those the AOT build compiles with."""
    opts = {k: v for k, v in disp.targetoptions.items() if k not in ("cache", "nogil")}
    extra = {k: v for k, v in opts.items() if k not in _OPTIONS and v}
    if extra or opts.get("error_model") != "numpy" or not opts.get("nopython", True):
        raise RuntimeError(f"kernel {name}: options {disp.targetoptions} differ from the AOT build's {_OPTIONS}")


def exports(sigs):
    """(name, signature, python function) of every export."""
    from numba import types
    from numba.core import typing

    out = []
    for name, (module, fn, _, ret, _) in sigs.KERNELS.items():
        disp = getattr(importlib.import_module(f"bitsback.cdf.{module}"), fn)
        _check_options(name, disp)
        sig = typing.signature(_numba_type(ret), *[_numba_type(a) for a in sigs.args_of(name)])
        out.append((name, sig, disp.py_func))

    h = sigs.source_hash()

    def source_hash():
        return h

    out.append(("source_hash", typing.signature(types.int64), source_hash))
    set_hooks = types.ExternalFunction("bb_aot_set_hooks", types.void(types.uint64, types.uint64))

    def link_hooks(emit, take):
        set_hooks(emit, take)

    out.append(("link_hooks", typing.signature(types.void, types.uint64, types.uint64), link_hooks))
    cpu_ok_c = types.ExternalFunction("bb_aot_cpu_ok", types.int64())

    def cpu_ok():
        return cpu_ok_c()

    out.append(("cpu_ok", typing.signature(types.int64), cpu_ok))
    return out


# CPU names with a run-time check in _aot_hooks.c (BB_AOT_X86_LEVEL); others are not checked
X86_LEVELS = {"x86-64": 1, "x86-64-v2": 2, "x86-64-v3": 3}


def default_cpu():
    """x86-64-v2 on x86-64 (about 1.3x faster than plain x86-64 here: SSE4.1 rounds
    floats in one instruction; ~ the JIT's speed), else the target's generic CPU."""
    import platform

    return "x86-64-v2" if platform.machine().lower() in ("x86_64", "amd64") else ""


def compile_object(build_dir, cpu=None, module=MODULE):
    """Compile the exports into BUILD_DIR/<module>.o; return (object path, link settings)."""
    cpu = default_cpu() if cpu is None else cpu
    sigs = _import_kernels()
    from numba.core import compiler as nbcompiler
    from numba.core.registry import cpu_target
    from numba.pycc import CC
    from numba.pycc import compiler as pycc_compiler

    class Flags(nbcompiler.Flags):
        """pycc compiles every export with one fresh Flags(): make it the JIT kernels'."""

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            cpu_target.options.parse_as_flags(self, dict(_OPTIONS))

    cc = CC(module, source_module=sys.modules["bitsback.cdf._sigs"])
    cc.target_cpu = cpu
    for name, sig, fn in exports(sigs):
        cc.export(name, sig)(fn)

    def compile_extra(typingctx, targetctx, func, args, return_type, flags, locals, **kws):
        """pycc shares one Flags between its exports, and a compile may change it (numba's
        inliner turns SSA off): give every export its own copy, as the JIT does."""
        return compile_extra_(typingctx, targetctx, func, args, return_type, flags.copy(), locals, **kws)

    os.makedirs(build_dir, exist_ok=True)
    saved, compile_extra_ = pycc_compiler.Flags, pycc_compiler.compile_extra
    pycc_compiler.Flags, pycc_compiler.compile_extra = Flags, compile_extra
    try:
        compiler = pycc_compiler.ModuleCompiler(cc._export_entries, module, cc.use_nrt, cpu_name=cpu)
        compiler.external_init_function = cc._init_function
        obj = os.path.join(build_dir, module + ".o")
        compiler.write_native_object(obj, wrap=True)
    finally:
        pycc_compiler.Flags, pycc_compiler.compile_extra = saved, compile_extra_
    tc = cc._toolchain
    link = {
        "sources": list(cc._get_mixin_sources()) + [str(HERE / "_aot_hooks.c")],
        "define_macros": [list(m) for m in cc._get_mixin_defines()] + [["BB_AOT_X86_LEVEL", X86_LEVELS.get(cpu, 0)]],
        "include_dirs": tc.get_python_include_dirs(),
        "libraries": tc.get_python_libraries(),
        "library_dirs": tc.get_python_library_dirs(),
        "extra_compile_args": cc._get_extra_cflags(),
        "extra_link_args": cc._get_extra_ldflags(),
        "extra_objects": [obj],
        "source_hash": sigs.source_hash(),
        "cpu": cpu,
    }
    return obj, link


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir")
    ap.add_argument("--cpu", default=None, help="LLVM CPU name (default: x86-64-v2 on x86-64, else generic)")
    ap.add_argument("--name", default=MODULE, help=f"module name in bitsback.cdf (default {MODULE}; _kernels.py "
                    "loads _aot_v3, then _aot)")
    a = ap.parse_args(argv)
    # numba JIT-compiles the inlined helpers while typing them: keep that cache out of the tree
    with tempfile.TemporaryDirectory(prefix="bitsback-aot-numba-cache-") as cache:
        os.environ.setdefault("NUMBA_CACHE_DIR", cache)
        _, link = compile_object(a.build_dir, a.cpu, a.name)
    print(json.dumps(link))


if __name__ == "__main__":
    main()
