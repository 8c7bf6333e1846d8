"""Encode and decode .bba files in one interpreter, for the cross-ISA checks.

tests/test_cross_isa.py and bench/portability.py run this script in another process,
usually under user-mode emulation of another x86-64 CPU
(``qemu-x86_64 -cpu Nehalem python tests/xisa_worker.py ...``), or with another
interpreter (an older onnxruntime). It is a script, not a test module: the emulated
interpreter imports bitsback and nothing from the test suite.

    xisa_worker.py [--decode DIR] [--encode DIR --images PATH [--n N] [--offset K] [--lanes L]]
                   [--models mnist-grey,mnist-binary]

--decode DIR: decompress DIR/<model>.bba for each model and compare with DIR/<model>.npy
(a file made with an earlier version of a bundled model is decoded with that version from
zoo/legacy, as `bitsback decompress` does).
--encode DIR: compress images[offset:offset+n] of the dataset PATH (binarised for binary
models) with each model, write DIR/<model>.bba and the originals to DIR/<model>.npy.
Decoding runs first, so one process can check the other side's files and make its own.

Prints one JSON line: ``env`` (what this process runs on: the CPU features numpy detects,
LLVM's name for the host CPU, the CDF kernels in use, the library versions), ``decoded``
(model -> result: "exact", "WRONG", or the exception as "Type: message"; the model folder
used) and ``encoded`` (model -> bytes, images, dims, the payload's sha256). ``env`` is what lets a caller see
that an emulated run really ran on the other CPU, so that a pass is not vacuous.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def environment():
    """What this interpreter runs on, as the libraries that pick kernels by CPU see it."""
    import bitsback
    import llvmlite.binding as llvm
    import numba
    import onnxruntime
    from bitsback.cdf import _kernels

    try:    # numpy's runtime dispatch table (CPUID): the emulated CPU's features under qemu
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:     # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as feats
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_features": sorted(k for k, v in feats.items() if v),
        "llvm_cpu": llvm.get_host_cpu_name(),
        "kernels": _kernels._aot.__name__.rsplit(".", 1)[-1] if _kernels.backend == "aot" else "jit",
        "kernels_reason": _kernels.reason,
        "versions": {"bitsback": bitsback.__version__, "numpy": np.__version__, "numba": numba.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "bitsback_path": os.path.dirname(bitsback.__file__),
    }


def _error(e):
    return f"{type(e).__name__}: {str(e)[:300]}"


def model_for(name, blob):
    """The model folder that decodes blob, as `bitsback decompress` picks it: an earlier
    version of the bundled model kept in zoo/legacy when the file names that one (files
    made before the models were rebuilt), else the bundled model itself."""
    from bitsback import container, zoo

    for_file = getattr(zoo, "for_file", None)      # absent before the legacy folder existed
    if for_file is None:
        return name
    try:
        m = container.unpack(blob)[0]["model"]
    except Exception:       # noqa: BLE001 - decompress reports a bad file itself
        return name
    return for_file(m["name"], m["sha256"])


def decode(d, models):
    import bitsback

    out = {}
    for name in models:
        ref = np.load(os.path.join(d, f"{name}.npy"))
        with open(os.path.join(d, f"{name}.bba"), "rb") as f:
            blob = f.read()
        model = model_for(name, blob)
        t = time.perf_counter()
        try:
            y = bitsback.load(model, device="cpu").decompress(blob)
            res = "exact" if np.array_equal(np.asarray(y).reshape(ref.shape), ref) else "WRONG"
        except Exception as e:      # noqa: BLE001 - the result names it; a caller judges it
            res = _error(e)
        out[name] = {"result": res, "seconds": round(time.perf_counter() - t, 2), "model": os.path.basename(model)}
    return out


def payload_hash(blob):
    """sha256 of the coded payload without the header (which records the runtime, so it
    differs between machines even when the arithmetic, and so the payload, does not)."""
    import hashlib

    from bitsback import container

    return hashlib.sha256(bytes(container.unpack(blob)[1])).hexdigest()


def encode(d, models, images, n, offset, lanes):
    import bitsback
    from bitsback import datasets

    x = datasets.load(images)[offset:offset + n]
    os.makedirs(d, exist_ok=True)
    out = {}
    for name in models:
        data = datasets.binarize(x) if "binary" in name else x
        t = time.perf_counter()
        blob = bitsback.load(name, device="cpu", lanes=lanes).compress(data)
        secs = time.perf_counter() - t
        with open(os.path.join(d, f"{name}.bba"), "wb") as f:
            f.write(blob)
        np.save(os.path.join(d, f"{name}.npy"), data)
        out[name] = {"bytes": len(blob), "images": int(data.shape[0]), "dims": int(data[0].size),
                     "seconds": round(secs, 2), "payload_sha256": payload_hash(blob)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--decode", metavar="DIR")
    p.add_argument("--encode", metavar="DIR")
    p.add_argument("--images", metavar="PATH", help="dataset to encode (bitsback.datasets.load)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--lanes", type=int, default=None, help="default: the codec chooses")
    p.add_argument("--models", default="mnist-grey,mnist-binary")
    a = p.parse_args(argv)
    models = a.models.split(",")
    res = {"env": environment()}
    if a.decode:
        res["decoded"] = decode(a.decode, models)
    if a.encode:
        if not a.images:
            p.error("--encode needs --images")
        res["encoded"] = encode(a.encode, models, a.images, a.n, a.offset, a.lanes)
    from bitsback.cdf import _kernels

    res["env"]["jit_fallbacks"] = dict(_kernels.jit_fallbacks)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
