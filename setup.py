"""Builds the Cython binding of the C rANS core (csrc/) as bitsback._rans."""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

ext = Extension(
    "bitsback._rans",
    sources=["src/bitsback/_rans.pyx", "csrc/rans.c"],
    include_dirs=["csrc", numpy.get_include()],
    extra_compile_args=["-O3", "-std=c99"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(ext_modules=cythonize([ext], language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}))
