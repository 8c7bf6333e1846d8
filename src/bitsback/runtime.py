"""onnxruntime sessions: provider choice, thread settings, IO binding on CUDA.

The codec runs the VAE's encoder and decoder through :class:`Network`. Coding is only
exact when encoder and decoder see bit-identical network outputs, so the runtime that made
a file (provider, onnxruntime version, machine and instruction set) is recorded in its
header (``describe``), and a decoder's failure names both runtimes (``summary``).
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import onnxruntime as ort

# onnxruntime-gpu logs two CUDA-missing lines on a CPU-only machine; the fallback is
# reported once by us instead.
ort.set_default_logger_severity(3)

DEVICES = ("auto", "cpu", "cuda")
_cuda_usable: bool | None = None  # learnt from the first session that asks for CUDA
_announced: set[str] = set()
_announce_lock = threading.Lock()
# Which provider runs the networks is said only when asked (``bitsback -v``,
# BITSBACK_VERBOSE=1): on a CPU-only machine it would open every command's output.
# A request that cannot be met (device="cuda" without CUDA) is always said.
verbose = os.environ.get("BITSBACK_VERBOSE", "") not in ("", "0")


def _announce(msg: str, always: bool = True) -> None:
    if not (always or verbose):
        return
    with _announce_lock:
        if msg in _announced:
            return
        _announced.add(msg)
    print(f"bitsback: {msg}", file=sys.stderr)


# One intra-op thread, always: a session's outputs define the coder's CDFs, so a row must
# come out the same whatever batch it is in, and compress and decompress batch the rows
# differently (the encoder runs over all rows at once when compressing, over one step's
# rows when decompressing; lockstep groups follow the worker count). With more threads
# onnxruntime splits an element-wise kernel into blocks by the tensor's size, and an
# element's value can depend on the block that computes it: with 2 threads,
# mnist-binary's encoder gave rows 166 and 250 of a 500-row batch another sigma (its
# Softplus) than batches of 1, 2 or 24 did, and a 500-image file did not decode. With one
# thread rows are batch-invariant (test_onnxruntime_rows_do_not_depend_on_batch).
# Parallelism comes from workers: lanes coded in other threads or processes.
THREADS = 1


def ignored_threads(threads) -> None:
    """Say once that a thread count other than 1 (argument or BITSBACK_THREADS) is ignored."""
    env = os.environ.get("BITSBACK_THREADS")
    for what, value in (("threads", threads), ("BITSBACK_THREADS", env)):
        if value not in (None, "", 1, "1"):
            _announce(f"{what}={value} ignored: the networks run on one thread (rows must not "
                      "depend on the batch); use workers for parallelism")


class Network:
    """One ONNX graph in one onnxruntime session.

    Calls are thread-safe (onnxruntime sessions allow concurrent ``run``).
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto"):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        global _cuda_usable
        want_cuda = device in ("auto", "cuda") and _cuda_usable is not False
        want_cuda = want_cuda and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        if want_cuda and _cuda_usable is None:
            # onnxruntime-gpu logs an error for each CUDA library it cannot load before it
            # falls back to CPU; the probe is silent and its outcome is said once below.
            ort.set_default_logger_severity(4)
            try:
                self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            finally:
                ort.set_default_logger_severity(3)
        else:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        got = self.session.get_providers()
        if want_cuda:
            _cuda_usable = got[0] == "CUDAExecutionProvider"
        self.cuda = got[0] == "CUDAExecutionProvider"
        if device == "cuda" and not self.cuda:
            _announce("CUDA was requested but its execution provider did not initialise; using CPU")
        elif device == "auto":
            _announce("onnxruntime on CUDA" if self.cuda else "onnxruntime on CPU (no usable CUDA provider)", always=False)
        self.provider = got[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        if self.cuda:
            binding = self.session.io_binding()
            for k, v in feeds.items():
                binding.bind_cpu_input(k, v)
            for name in self.output_names:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            outs = binding.copy_outputs_to_cpu()
        else:
            outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs))


def describe(provider: str, torch: bool = False) -> dict:
    """What is recorded in a container header about the runtime that made it: the
    onnxruntime release and provider, numpy, the machine type and its instruction set
    (:func:`isa`), and with ``torch`` (files coded with K-step inference) torch's release.

    Informative: a decoder compares it with its own to explain a failure, never to refuse
    a file. Keys are only ever added (readers of older files look up the ones they know)."""
    import platform

    out = {
        "onnxruntime": ort.__version__,
        "provider": provider,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "isa": isa(),
    }
    if torch:
        import torch as _torch  # the K-step path has imported it already

        out["torch"] = _torch.__version__.split("+")[0]
    return out


# The x86-64 psABI levels, by the names /proc/cpuinfo gives their flags (SSE3 is "pni",
# LZCNT "abm"): which GEMM kernels onnxruntime's MLAS picks (SSE, AVX, AVX2+FMA, AVX-512)
# follows the same features, and with them the last bits of a float network's outputs.
X86_LEVELS = (
    ("x86-64-v2", ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3")),
    ("x86-64-v3", ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")),
    ("x86-64-v4", ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")),
)
# Flags named after the level: those that select another kernel within a level (AVX on a
# v2 machine, the VNNI dot products).
X86_NOTABLE = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni")
AARCH64_NOTABLE = ("asimddp", "sve", "sve2", "sme", "bf16", "i8mm")
CPUINFO = "/proc/cpuinfo"
_isa: str | None = None


def isa() -> str:
    """This CPU's instruction set as the header records it: on x86-64 the psABI level and
    the notable flags ("x86-64-v3 avx avx2 fma"), on aarch64 "asimd" and the notable
    features ("asimd asimddp i8mm"); "unknown" where /proc/cpuinfo does not say (not
    Linux, another machine type). Read once: the first CPU's line of /proc/cpuinfo.

    (The AOT kernels of ``bitsback.cdf`` test the x86-64-v3 features by cpuid inside their
    compiled modules, which answer only "runs here or not" for their own level; this is
    the readable whole.)"""
    global _isa
    if _isa is None:
        _isa = isa_from(CPUINFO)
    return _isa


def isa_from(path: str) -> str:
    """:func:`isa` as the /proc/cpuinfo-format file at ``path`` says it ("unknown" when
    it cannot be read or names no flags)."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "flags":              # x86: the first processor's flags
                    flags = set(value.split())
                    level = "x86-64-v1"
                    for name, need in X86_LEVELS:
                        if not flags.issuperset(need):
                            break
                        level = name
                    return " ".join([level, *(f for f in X86_NOTABLE if f in flags)])
                if key == "features":           # aarch64
                    flags = set(value.split())
                    return " ".join(["asimd" if "asimd" in flags else "no-asimd", *(f for f in AARCH64_NOTABLE if f in flags)])
    except OSError:
        pass
    return "unknown"


def summary(record: object) -> str:
    """A header's runtime record (or this machine's, :func:`describe`) in one phrase:
    "x86_64 (x86-64-v3 avx avx2 fma), onnxruntime 1.17.1, CPUExecutionProvider, numpy 1.26.4".
    Any record is accepted (a header's is only checked to be a dict); long values are cut."""
    if not isinstance(record, dict):
        return "an unrecorded runtime"

    def v(key):
        return str(record[key])[:60]

    parts = []
    if "machine" in record:
        parts.append(v("machine") + (f" ({v('isa')})" if "isa" in record else ""))
    elif "isa" in record:
        parts.append(v("isa"))
    if "onnxruntime" in record:
        parts.append(f"onnxruntime {v('onnxruntime')}")
    if "provider" in record:
        parts.append(v("provider"))
    for key in ("torch", "numpy"):
        if key in record:
            parts.append(f"{key} {v(key)}")
    known = ("machine", "isa", "onnxruntime", "provider", "torch", "numpy")
    parts += [f"{str(k)[:20]} {v(k)}" for k in list(record)[:8] if k not in known]
    return ", ".join(parts) or "an unrecorded runtime"


def differences(recorded: object, here: dict) -> list[str]:
    """The keys of a header's runtime record whose value differs from this machine's
    (``here``: :func:`describe`). Keys the record lacks are not compared: a file made
    before a key was recorded says nothing about it."""
    if not isinstance(recorded, dict):
        return []
    return [str(k) for k in recorded if recorded[k] != here.get(k)]
