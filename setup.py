"""Builds the Cython binding of the C rANS core (csrc/) as bitsback._rans, and, when numba
is importable here, the ahead-of-time compiled CDF kernels as bitsback.cdf._aot (x86-64-v2)
and bitsback.cdf._aot_v3 (x86-64-v3) on x86-64, one generic bitsback.cdf._aot elsewhere
(src/bitsback/cdf/_aot_build.py; the run-time choice is in cdf/_kernels.py).

The AOT modules are optional: without them (numba missing at build time, or their compile
failing) the kernels are JIT-compiled by numba at run time, as before; the build says
why it skipped them and does not fail. BITSBACK_NO_AOT=1 skips them on purpose;
BITSBACK_AOT_CPU=<LLVM CPU name> builds one module (_aot) for that CPU instead (e.g.
"host": this machine only). The kernels are compiled only when a kernel source (or
numba) is newer than the module: ~40 s per module, the modules in parallel.
"""
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.modified import newer_group
except ImportError:   # setuptools < 69
    from distutils.dep_util import newer_group

CDF = os.path.join("src", "bitsback", "cdf")
AOT_BUILDER = os.path.join(CDF, "_aot_build.py")

ext = Extension(
    "bitsback._rans",
    sources=["src/bitsback/_rans.pyx", "csrc/rans.c"],
    include_dirs=["csrc", numpy.get_include()],
    extra_compile_args=["-O3", "-std=c99"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)


def _say(msg):
    print(f"bitsback: {msg}", file=sys.stderr, flush=True)


def _aot_variants():
    """{extension name: LLVM CPU name (None: _aot_build's default)} to build."""
    cpu = os.environ.get("BITSBACK_AOT_CPU")
    if cpu:
        return {"bitsback.cdf._aot": cpu}
    if platform.machine().lower() in ("x86_64", "amd64"):
        return {"bitsback.cdf._aot": "x86-64-v2", "bitsback.cdf._aot_v3": "x86-64-v3"}
    return {"bitsback.cdf._aot": None}


def _aot_depends():
    """What the AOT modules are compiled from: the kernel sources (_sigs.SOURCES), the C
    hooks, numba."""
    spec = importlib.util.spec_from_file_location("_bitsback_sigs", os.path.join(CDF, "_sigs.py"))
    sigs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sigs)
    import numba

    return [os.path.join(CDF, f) for f in sigs.SOURCES + ("_aot_hooks.c",)] + [numba.__file__]


class BuildExt(build_ext):
    """build_ext that adds the AOT kernel modules when they can be built, compiles their
    kernels in parallel subprocesses, and never fails on them."""

    def finalize_options(self):
        mods = self.distribution.ext_modules
        self._aot = {}
        if os.environ.get("BITSBACK_NO_AOT", "") not in ("", "0"):
            _say("BITSBACK_NO_AOT is set: not building the AOT kernels (numba JIT at run time)")
        else:
            try:
                import numba.pycc  # noqa: F401  (the AOT compiler)
            except Exception as e:  # ImportError, or a broken numba install
                _say(f"numba.pycc is not importable ({e!r}): skipping the AOT kernels "
                     "(numba JIT at run time)")
            else:   # sources and flags are filled in by build_extension
                self._aot = _aot_variants()
                for name in self._aot:
                    if not any(e.name == name for e in mods):
                        mods.append(Extension(name, sources=[os.path.join(CDF, "_aot_hooks.c")]))
        super().finalize_options()

    def build_extensions(self):
        # start the kernel compiles of the stale AOT modules together; build_extension links
        self._aot_jobs = {}
        if self._aot:
            try:
                deps = _aot_depends()
            except Exception as e:   # noqa: BLE001
                deps, self._aot_error = None, e
            for name, cpu in self._aot.items():
                target = self.get_ext_fullpath(name)
                if deps is not None and not self.force and os.path.exists(target) and not newer_group(deps, target):
                    self._aot_jobs[name] = "up to date"
                    continue
                obj_dir = os.path.join(self.build_temp, "bitsback-aot", name.rsplit(".", 1)[1])
                cmd = [sys.executable, AOT_BUILDER, obj_dir, "--name", name.rsplit(".", 1)[1]]
                cmd += ["--cpu", cpu] if cpu else []
                self._aot_jobs[name] = (time.time(), subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        try:
            super().build_extensions()
        finally:
            for job in self._aot_jobs.values():
                if isinstance(job, tuple) and job[1].poll() is None:
                    job[1].kill()

    def build_extension(self, ext):
        if ext.name not in self._aot:
            return super().build_extension(ext)
        job = self._aot_jobs.get(ext.name)
        if job == "up to date":
            _say(f"{ext.name} is up to date")
            return
        try:
            if job is None:
                raise RuntimeError(f"cannot list the kernel sources: {self._aot_error!r}")
            t0, proc = job
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{AOT_BUILDER} failed:\n{err[-4000:]}")
            link = json.loads(out.strip().splitlines()[-1])
            t1 = time.time()
            ext.sources = link["sources"]
            ext.define_macros = [tuple(m) for m in link["define_macros"]]
            ext.include_dirs = link["include_dirs"]
            ext.libraries = link["libraries"]
            ext.library_dirs = link["library_dirs"]
            ext.extra_compile_args = link["extra_compile_args"] + ["-O2"]
            ext.extra_link_args = link["extra_link_args"]
            ext.extra_objects = link["extra_objects"]
            ext.depends = link["extra_objects"]     # distutils relinks only when a "depends" is newer
            try:
                super().build_extension(ext)
            finally:
                # The link needs absolute paths (numba's C helpers, the objects in build_temp);
                # the sdist/egg-info manifest written after the build refuses them.
                ext.sources, ext.depends = [os.path.join(CDF, "_aot_hooks.c")], []
            _say(f"built {ext.name} (cpu {link['cpu'] or 'generic'}): kernels {t1 - t0:.0f} s, "
                 f"link {time.time() - t1:.0f} s")
        except Exception as e:  # the AOT modules are an optimisation: never fail the build on them
            _say(f"could not build {ext.name}, the kernels will be JIT-compiled at run time: {e}")
            self.extensions = [x for x in self.extensions if x.name != ext.name]
            try:
                os.remove(self.get_ext_fullpath(ext.name))   # no stale module left behind
            except OSError:
                pass


setup(
    ext_modules=cythonize([ext], language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": BuildExt},
)
