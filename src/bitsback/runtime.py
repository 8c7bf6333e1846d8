"""onnxruntime sessions: provider choice, thread settings, IO binding on CUDA.

The codec runs the VAE's encoder and decoder through :class:`Network`. Coding is only
exact when encoder and decoder see bit-identical network outputs, so the runtime that made
a file (provider, onnxruntime version) is recorded in its header; see ``describe``.
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


def describe(provider: str) -> dict:
    """What is recorded in a container header about the runtime that made it."""
    import platform

    return {
        "onnxruntime": ort.__version__,
        "provider": provider,
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
