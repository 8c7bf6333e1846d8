"""The measurements behind the portable-arithmetic design (docs/ARCHITECTURE.md, Decisions).

    python bench/portable_design.py gemm                       # one 500x500 layer, three ways
    python bench/portable_design.py rate MODEL TRAIN TEST      # real-file rate, float / portable / 7-bit
    python bench/portable_design.py profile MODEL ROWS         # onnxruntime's per-op time, float / portable

``gemm``: one 500 -> 500 layer on one onnxruntime thread, batch 64 and 4096, as a float32
MatMul (how the portable networks carry their integers), as MatMulInteger u8 x s8 (x86's
fast int8 path, whose int16 pair sums saturate without VNNI) and as s8 x s8 (the only
MatMulInteger type CUDA runs). Two passes each, in turn; ns per row.

``rate``: real files of the TEST images (IDX, binarised for a binary model) with the float
model kept in zoo/legacy, its portable conversion (calibrated on TRAIN), and a conversion
with weights and activations cut to 7 bits (|v| <= 127), which is what MatMulInteger needs
to be exact on every kernel (u8 activations below 128 against s8 weights keep vpmaddubsw's
pair sums below 2^15).
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def gemm() -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    W = rng.integers(-60, 60, (500, 500))

    def session(kind):
        if kind == "float":
            node = helper.make_node("MatMul", ["a", "W"], ["y"])
            init, ta, ty = numpy_helper.from_array(W.astype(np.float32), "W"), TensorProto.FLOAT, TensorProto.FLOAT
        else:
            node = helper.make_node("MatMulInteger", ["a", "W"], ["y"])
            init, ty = numpy_helper.from_array(W.astype(np.int8), "W"), TensorProto.INT32
            ta = TensorProto.UINT8 if kind == "u8s8" else TensorProto.INT8
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", ta, ["b", 500])],
                              [helper.make_tensor_value_info("y", ty, ["b", 500])], [init])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    dtypes = {"float": np.float32, "u8s8": np.uint8, "s8s8": np.int8}
    for B in (64, 4096):
        res = {k: [] for k in dtypes}
        for _ in range(2):
            for kind, dt in dtypes.items():
                s = session(kind)
                x = rng.integers(0, 63, (B, 500)).astype(dt)
                s.run(None, {"a": x})
                n = max(3, 20000 // B)
                t = time.perf_counter()
                for _ in range(n):
                    s.run(None, {"a": x})
                res[kind].append((time.perf_counter() - t) / n / B * 1e9)
        print(f"batch {B}: " + ", ".join(f"{k} {', '.join(f'{v:.0f}' for v in vs)} ns/row" for k, vs in res.items()))


def rate(model: str, train: str, test: str) -> None:
    import bitsback
    from bitsback import datasets, portable, zoo

    tr, te = datasets.load(train), datasets.load(test)
    if "binary" in model:
        tr, te = datasets.binarize(tr), datasets.binarize(te)
    src = next(p for p in zoo.LEGACY_DIR.iterdir() if p.name.startswith(model + "@"))
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"float": src, "portable": Path(tmp) / "portable", "7-bit": Path(tmp) / "seven"}
        portable.convert(src, dirs["portable"], tr)
        act, wmax = portable.ACT_MAX, portable.WEIGHT_MAX
        portable.ACT_MAX = portable.WEIGHT_MAX = 127
        try:
            portable.convert(src, dirs["7-bit"], tr)
        finally:
            portable.ACT_MAX, portable.WEIGHT_MAX = act, wmax
        for name, d in dirs.items():
            codec = bitsback.load(str(d), device="cpu")
            blob = codec.compress(te)
            assert np.array_equal(codec.decompress(blob), te)
            print(f"{model} {name}: {len(blob)} bytes, {8 * len(blob) / te.size:.5f} bits/dim")


def profile(model: str, rows: int) -> None:
    """Per-call time of the float (zoo/legacy) and portable networks by op, from onnxruntime's
    profiler: one thread, 200 calls of ROWS random rows."""
    import collections
    import json
    import os

    import onnxruntime as ort

    from bitsback import zoo

    rng = np.random.default_rng(0)
    levels = zoo.manifest(model)["levels"]
    sides = {"float": next(p for p in zoo.LEGACY_DIR.iterdir() if p.name.startswith(model + "@")),
             "portable": zoo.model_dir(model)}
    inputs = {"encoder": {"x": rng.integers(0, levels, (rows, 784)).astype(np.float32)},
              "decoder": {"z": rng.standard_normal((rows, 32)).astype(np.float32)}}
    with tempfile.TemporaryDirectory() as tmp:
        for side, d in sides.items():
            for net, feed in inputs.items():
                so = ort.SessionOptions()
                so.enable_profiling, so.intra_op_num_threads = True, 1
                so.profile_file_prefix = os.path.join(tmp, f"{side}-{net}")
                s = ort.InferenceSession(str(d / f"{net}.onnx"), so, providers=["CPUExecutionProvider"])
                for _ in range(200):
                    s.run(None, feed)
                by_op = collections.Counter()
                for e in json.load(open(s.end_profiling())):
                    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                        by_op[e["args"]["op_name"]] += e["dur"] / 200
                print(f"{model} {side} {net}: {sum(by_op.values()):.0f} us a call; "
                      + ", ".join(f"{k} {v:.0f}" for k, v in by_op.most_common(6)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["gemm"]:
        gemm()
    elif sys.argv[1:2] == ["rate"] and len(sys.argv) == 5:
        rate(*sys.argv[2:])
    elif sys.argv[1:2] == ["profile"] and len(sys.argv) == 4:
        profile(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
