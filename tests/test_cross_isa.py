"""Files decode on other x86-64 CPUs: native <-> qemu-x86_64 -cpu Nehalem / Haswell.

A .bba file must decode bit-exactly on any machine, but onnxruntime (MLAS) and the CDF
kernels choose their code paths by CPUID, so a file made with AVX2+FMA is decoded by
other float code on an SSE4.2-only CPU. User-mode emulation (Debian package qemu-user)
runs this very interpreter and venv as another CPU: ``qemu-x86_64 -cpu Nehalem`` has no
AVX/FMA, ``-cpu Haswell`` has AVX2+FMA (qemu's TCG emulates nothing wider: AVX-512 and
VNNI are dropped from every CPU model, so those paths cannot be checked here).

For each default model, a few fixture images (several lanes) are encoded here and
decoded under each emulated CPU, and encoded under each emulated CPU and decoded here;
the images must come back exactly, and both CPUs must code the same payload bytes.
tests/xisa_worker.py does the emulated side and
reports what it ran on, so that each pass is checked not to be vacuous: the emulated CPU
must show its own features (no AVX under Nehalem) and use the ahead-of-time kernels
built for it (the JIT would compile for minutes under emulation).

Skipped, with the reason, where qemu-x86_64 is missing or the host is not x86-64, and
where the AOT kernel modules are missing or stale (``make build`` rebuilds them).
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import bitsback
from bitsback.cdf import _kernels

import xisa_worker

HERE = Path(__file__).resolve().parent
WORKER = HERE / "xisa_worker.py"
FIXTURE = HERE / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"
MODELS = ["mnist-grey", "mnist-binary"]     # the defaults (bitsback.load_for picks these)
N, LANES = 32, 4                            # small, but several lanes and a few steps each
QEMU = shutil.which("qemu-x86_64")
TIMEOUT = 600                               # the JIT path (not expected) would take minutes

# What each emulated CPU must show (numpy's CPUID table, LLVM's host CPU name, the AOT
# module _kernels picks), whatever the host is: the control that the emulation took.
CPUS = {
    "Nehalem": {"has": {"SSE42"}, "lacks": {"AVX", "AVX2", "FMA3", "AVX512F"}, "llvm": "nehalem", "kernels": "_aot"},
    "Haswell": {"has": {"AVX2", "FMA3"}, "lacks": {"AVX512F"}, "llvm": "haswell", "kernels": "_aot_v3"},
}


def _skip_reason():
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"cross-ISA checks emulate x86-64 CPUs with this interpreter: host is {platform.machine()}"
    if QEMU is None:
        return ("qemu-x86_64 not found: install the Debian package qemu-user "
                "(apt-get install qemu-user; `make test` does it when run as root)")
    if _kernels.aot_module() is None:
        return (f"no usable AOT kernel module ({_kernels.reason}); numba's JIT under emulation "
                "would take minutes: `make build` builds them")
    return None


SKIP = _skip_reason()
if SKIP:    # pytest -q hides skip reasons; a warning shows in the summary
    warnings.warn(f"tests/test_cross_isa.py skipped: {SKIP}", stacklevel=1)
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def _emulated(cpu, tmp, *args):
    """Start the worker under qemu-x86_64 -cpu <cpu> (_report reads its JSON report)."""
    numba_cache = tmp / f"numba-{cpu}"
    numba_cache.mkdir(exist_ok=True)
    # Nothing is written into the checkout: byte code off, numba's cache per CPU (a cache
    # made for one CPU must not be loaded on another), cwd outside the tree.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache), PYTHONDONTWRITEBYTECODE="1")
    env.pop("BITSBACK_JIT", None)
    cmd = [QEMU, "-cpu", cpu, sys.executable, str(WORKER), *map(str, args)]
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(cpu, proc):
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"worker under -cpu {cpu} ran past {TIMEOUT} s: {err[-2000:]}")
    # qemu warns on stderr about features its TCG lacks; only a failed run's stderr matters
    assert proc.returncode == 0, f"worker under -cpu {cpu} exited {proc.returncode}:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Native files, then every emulated CPU's run (concurrently: each is mostly start-up):
    ``{"native": (dir, env + what it encoded), cpu: (dir, report)}``."""
    tmp = tmp_path_factory.mktemp("xisa")
    native = tmp / "native"
    made = xisa_worker.encode(native, MODELS, FIXTURE, N, 0, LANES)
    procs = {cpu: _emulated(cpu, tmp, "--decode", native, "--encode", tmp / cpu, "--images", FIXTURE,
                            "--n", N, "--lanes", LANES, "--models", ",".join(MODELS)) for cpu in CPUS}
    try:
        res = {cpu: (tmp / cpu, _report(cpu, p)) for cpu, p in procs.items()}
    finally:    # one failed: do not leave the others running
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    res["native"] = (native, dict(xisa_worker.environment(), encoded=made))
    return res


def _where(env):
    return f"{env['llvm_cpu']}, kernels {env['kernels']}, onnxruntime {env['versions']['onnxruntime']}"


@pytest.mark.parametrize("cpu", CPUS)
def test_emulated_cpu_is_that_cpu(runs, cpu):
    """Control: the worker saw the emulated CPU's features and used its AOT kernels, so a
    pass below means that CPU decoded the file, not this one."""
    env, want = runs[cpu][1]["env"], CPUS[cpu]
    feats = set(env["cpu_features"])
    assert want["has"] <= feats and not (want["lacks"] & feats), f"-cpu {cpu}: numpy sees {sorted(feats)}"
    assert env["llvm_cpu"] == want["llvm"], env
    assert env["kernels"] == want["kernels"], f"-cpu {cpu}: kernels {env['kernels']} ({env['kernels_reason']})"
    assert env["jit_fallbacks"] == {}, env["jit_fallbacks"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("cpu", CPUS)
def test_native_file_decodes_on_emulated_cpu(runs, cpu, model):
    res = runs[cpu][1]["decoded"][model]["result"]
    assert res == "exact", (f"{model}: made natively ({_where(runs['native'][1])}), "
                            f"decoded under -cpu {cpu} ({_where(runs[cpu][1]['env'])}): {res}")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("cpu", CPUS)
def test_emulated_file_decodes_natively(runs, cpu, model):
    d, report = runs[cpu]
    ref = np.load(d / f"{model}.npy")
    assert ref.shape[0] == N and report["encoded"][model]["images"] == N
    try:
        out = bitsback.load(model, device="cpu").decompress((d / f"{model}.bba").read_bytes())
    except bitsback.BitsbackError as e:     # typed, as it must be; still a failure
        err = f"{type(e).__name__}: {e}"
    else:
        err = None if np.array_equal(out, ref) else "WRONG images"
    assert err is None, (f"{model}: made under -cpu {cpu} ({_where(report['env'])}), decoded natively "
                         f"({_where(runs['native'][1])}): {err}")


@pytest.mark.parametrize("cpu", CPUS)
def test_emulated_cpu_codes_the_same_payload(runs, cpu):
    """Same arithmetic, same bytes: the payloads coded there equal those coded here (the
    headers differ: they record the runtime)."""
    native, there = runs["native"][1]["encoded"], runs[cpu][1]["encoded"]
    differ = [m for m in MODELS if native[m]["payload_sha256"] != there[m]["payload_sha256"]]
    assert not differ, f"-cpu {cpu} coded other payloads than this CPU for {differ}"
