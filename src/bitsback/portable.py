"""Portable network arithmetic: integer MLPs whose every operation is exact in float32.

A file decodes only where the decoder recomputes the networks' outputs bit for bit. Float
networks do not: onnxruntime's GEMM kernels differ by instruction set (SSE / AVX2+FMA /
AVX-512 / NEON / SME), by release and on CUDA, and so do the last bits of their sums. This
module turns an exported MLP VAE into an *integer network* (Ballé, Johnston & Minnen, ICLR
2019): integer weights and activations, integer accumulation, requantisation by a power of
two, ReLU as a clip. The integers are carried in float32 tensors, and every value that
any kernel can form stays an integer below 2^24 in magnitude, so every product, partial
sum and rounding is exact: the result is the same whatever the summation order, blocking,
vector width, FMA contraction, TF32 inputs or GPU -- there is nothing left to round.

One layer (``a`` integers with |a| <= A_in, ``Wq`` integers with |Wq| <= WEIGHT_MAX)::

    acc = a @ Wq.T + bq                exact: sum_i |Wq[o,i]| * A_in + |bq[o]| < 2^24
    a'  = floor(clip(acc * 2^-s[o], lo, A_out))     2^-s exact (folded into Wq and bq);
                                       floor and clip exact
                                       (lo = 0: ReLU; lo = -A_out: a linear rank factor)

with the rounding offset 2^(s-1) folded into bq. The real activation a'[o] * scale[o]
approximates the float network's; per-channel scales fold into the next layer's weights
before those are rounded, so they cost nothing at run time.

Inputs and outputs:

* encoder: x (raw symbols 0..levels-1) is already an integer. Head: ``mu = acc * t`` with
  t a power of two per channel, folded into the head's weights (exact), and
  ``sigma = SIGMA_TABLE[clip(floor(acc * 2^-q) + k0, 0, len - 1)]``: softplus is a table
  made here once and stored in the graph, so no exp/log runs at coding time.
* decoder: z (the latent buckets' centres, float32 from the shipped table) is rounded in
  the graph to ``floor(z * 2^Z_SHIFT + 1/2)``, exact; its last layer is ``acc * t`` (t
  powers of two folded into the weights, so the GEMM gives it exactly), and the
  original graph's tail (reshape, split, the affine offsets of the likelihood) follows,
  each op one correctly rounded IEEE operation.

Why float32 carriers and not onnxruntime's MatMulInteger: int8 GEMMs on x86 without VNNI
multiply u8 x s8 pairs with vpmaddubsw, whose int16 pair sums saturate, and which operand
is offset to u8 differs between kernels; to be exact on every kernel both operands must fit
in 7 bits (|v| <= 63), which costs rate. Float32 GEMMs are exact for integers up to 2^24
and run at the speed of the float networks (docs/ARCHITECTURE.md has the measurements).

``WEIGHT_MAX`` and ``ACT_MAX`` keep every operand below 2^11, so even a GPU that rounds
GEMM inputs to TF32 (10-bit mantissa) multiplies them exactly.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io.atomic import write_bytes

PORTABLE_VERSION = 1
SCHEME = "int-f32"
# Operands stay below 2^11, so they pass through TF32 (10 explicit mantissa bits)
# unrounded. Activations get 10 bits: a row's sum must stay below 2^24, so the weights of a
# 500-input layer have an L1 budget of about 2^24 / ACT_MAX; measured on the four bundled
# models (10 000 MNIST test images, real files), ACT_MAX 1023 matched the float networks'
# rates to within 0.1 %, 2047 lost up to +0.5 % (mnist-binary-mlp), 511 lost 2.6 %.
WEIGHT_MAX = 2047
ACT_MAX = 1023
# Every partial sum stays below this (2^24 is float32's last exact integer), with margin
# for the bias and the rounding offset.
ACC_LIMIT = (1 << 24) - 1
# The decoder's z rounded to 1/256 and clipped to +-ACT_MAX (+-3.996): 12-bit bucket centres
# lie within +-3.67, so none is clipped (at 16 bits the outermost few are); finer steps
# bought nothing measurable.
Z_SHIFT = 8
# sigma = softplus(s) + 1e-5 tabulated on s in [S_LO, S_HI) with step 2^-S_BITS: a
# relative step of 0.4 % in sigma (for small s), far below what changes a posterior's code.
S_LO, S_HI, S_BITS = -16.0, 8.0, 8
SIGMA_FLOOR = 1e-5


def sigma_table() -> np.ndarray:
    """float32 softplus(s) + SIGMA_FLOOR at s = S_LO + k 2^-S_BITS, k = 0..n-1 (float64 math
    here, at conversion time; the table is stored in the graph)."""
    n = int((S_HI - S_LO) * (1 << S_BITS))
    s = S_LO + np.arange(n, dtype=np.float64) / (1 << S_BITS)
    return (np.logaddexp(0.0, s) + SIGMA_FLOOR).astype(np.float32)


# ------------------------------------------------------------------ reading a float MLP
@dataclass
class Dense:
    """One float layer of an exported MLP: y = x @ w.T + b, then ReLU if ``relu``."""

    w: np.ndarray          # (out, in) float64
    b: np.ndarray          # (out,) float64
    relu: bool


@dataclass
class FloatChain:
    """The Gemm/ReLU chain of an exported encoder or decoder graph and what surrounds it."""

    input: str
    input_scale: float     # the graph's in-graph input scaling (encoder: 1 / (levels - 1))
    layers: list
    output: str            # name of the last Gemm's output (the tail reads it)
    tail: list = field(default_factory=list)        # NodeProtos after the chain
    tail_inits: list = field(default_factory=list)  # initializers the tail reads
    graph: object = None


def _weights(graph) -> dict:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:   # float16-stored weights are Cast back to float32 in-graph
        if n.op_type == "Cast" and n.input[0] in out:
            out[n.output[0]] = out[n.input[0]].astype(np.float32)
        if n.op_type == "Constant":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


# What may follow the chain: data movement, and single IEEE operations on the output (each
# correctly rounded, so identical everywhere). The encoder's Softplus is replaced by a table.
TAIL_OPS = {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Split", "Squeeze", "Constant", "Slice",
            "Add", "Sub", "Mul", "Div", "Clip", "Softplus"}


def read_chain(path) -> FloatChain:
    """The MLP chain of a bitsback-exported float ONNX graph (ValueError when the graph is
    not a chain of Gemm / ReLU layers, e.g. a convolutional model: those stay float)."""
    import onnx

    g = onnx.load(str(path)).graph
    if any(n.op_type in ("Cast",) and n.attribute[0].i != onnx.TensorProto.FLOAT for n in g.node):
        raise ValueError(f"{path}: unexpected Cast; not a float graph exported by bitsback")
    w = _weights(g)
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inp = g.input[0].name
    cur, scale, used = inp, 1.0, set()
    nxt = [n for n in consumers.get(cur, []) if n.op_type != "Shape"]
    if len(nxt) == 1 and nxt[0].op_type == "Mul":
        other = [i for i in nxt[0].input if i != cur][0]
        scale = float(np.asarray(w[other]).reshape(()))
        cur = nxt[0].output[0]
        used.add(id(nxt[0]))
    layers = []
    while True:
        nxt = [n for n in consumers.get(cur, []) if n.op_type != "Shape"]
        gemms = [n for n in nxt if n.op_type == "Gemm"]
        if len(nxt) != 1 or not gemms:
            break
        gm = gemms[0]
        attrs = {a.name: (a.f if a.type == 1 else a.i) for a in gm.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise ValueError(f"{path}: Gemm {gm.name} has attributes {attrs}; expected a plain linear layer")
        W = np.asarray(w[gm.input[1]], np.float64)
        W = W if attrs.get("transB", 0) else W.T
        b = np.asarray(w[gm.input[2]], np.float64) if len(gm.input) > 2 else np.zeros(W.shape[0])
        used.add(id(gm))
        cur = gm.output[0]
        after = consumers.get(cur, [])
        relu = len(after) == 1 and after[0].op_type == "Relu"
        layers.append(Dense(W, b.reshape(-1), relu))
        if relu:
            used.add(id(after[0]))
            cur = after[0].output[0]
    if not layers:
        raise ValueError(f"{path}: no Gemm chain found (only MLP models can be made portable)")
    if layers[-1].relu:
        raise ValueError(f"{path}: the last layer has a ReLU; expected a linear output layer")
    chain_inputs = {i for n in g.node if id(n) in used for i in n.input}
    tail = [n for n in g.node if id(n) not in used and not (n.op_type == "Cast" and n.output[0] in chain_inputs)]
    odd = sorted({n.op_type for n in tail} - TAIL_OPS)
    if odd:
        raise ValueError(f"{path}: ops {odd} follow the Linear/ReLU chain; only MLPs (Linear layers with ReLU "
                         "between them) can be made portable (export with arithmetic 'float' instead)")
    tail_names = {i for n in tail for i in n.input}
    tail_inits = [i for i in g.initializer if i.name in tail_names]
    return FloatChain(inp, scale, layers, cur, tail, tail_inits, g)


def forward_float(chain: FloatChain, x: np.ndarray) -> list:
    """Pre-activations of every layer (float64) for inputs x (calibration)."""
    h = np.asarray(x, np.float64) * chain.input_scale
    pre = []
    for L in chain.layers:
        p = h @ L.w.T + L.b
        pre.append(p)
        h = np.maximum(p, 0.0) if L.relu else p
    return pre


# ------------------------------------------------------------------ quantising
@dataclass
class QLayer:
    """One integer layer: acc = a @ wq.T + bq; requantised by 2^-shift (hidden layers)."""

    wq: np.ndarray         # (out, in) int32, |wq| <= WEIGHT_MAX
    bq: np.ndarray         # (out,) int64, rounding offset included
    shift: np.ndarray      # (out,) int, hidden layers only
    lo: int                # clip bounds of the output integers (hidden layers)
    hi: int
    t: np.ndarray          # (out,) float64: real value of one unit of acc (weights' scale)
    a_in: int              # bound on the input integers


def _weight_scale(w_eff: np.ndarray, b_real: np.ndarray, a_in: int) -> np.ndarray:
    """Smallest per-row scale t with |round(w/t)| <= WEIGHT_MAX and the row's worst sum
    (inputs at +-a_in, plus the bias) below ACC_LIMIT / 2 (the other half: offsets)."""
    l1 = np.abs(w_eff).sum(1)
    n = w_eff.shape[1]
    budget = ACC_LIMIT / 2 - n * a_in    # rounding each weight adds <= 1/2 per input
    t = np.maximum(np.abs(w_eff).max(1) / (WEIGHT_MAX - 0.5), (l1 * a_in + np.abs(b_real)) / budget)
    return np.maximum(t, 1e-30)


def _check_exact(wq, bq, a_in, extra=0):
    worst = np.abs(wq).astype(np.int64).sum(1) * a_in + np.abs(bq) + extra
    if np.abs(wq).max() > WEIGHT_MAX or worst.max() >= 1 << 24:
        raise AssertionError("integer layer can leave float32's exact range")


def quantise(chain: FloatChain, calib: np.ndarray, a_in: int, in_scale: np.ndarray, head=None) -> list:
    """Integer layers for ``chain``, given calibration inputs (float, as the graph takes
    them) whose integer form is bounded by ``a_in`` and has real scale ``in_scale`` per input.

    ``head``: None (decoder: the last layer's acc * t is the output) or ``latent`` Z for an
    encoder, whose last layer's second half is the softplus pre-activation (table index).
    """
    pre = forward_float(chain, calib)
    scale_in = np.asarray(in_scale, np.float64)
    out = []
    for li, (L, p) in enumerate(zip(chain.layers, pre)):
        w_eff = L.w * scale_in[None, :]
        last = li == len(chain.layers) - 1
        t = _weight_scale(w_eff, L.b, a_in)
        if last:
            # powers of two, so the scale folds into the weights exactly and the GEMM itself
            # yields the output (a Mul over the whole output cost ~7 % of the decoder's time)
            t = np.exp2(np.ceil(np.log2(t)))
            shift = np.zeros(len(t), np.int64)
            if head is not None:   # sigma half: t = 2^-S_BITS * 2^-q, idx = floor(acc 2^-q)
                Z = head
                q = np.floor(np.log2((2.0 ** -S_BITS) / t[Z:])).astype(np.int64)
                t[Z:] = 2.0 ** (-S_BITS - q)
                shift[Z:] = q
            wq = np.rint(w_eff / t[:, None]).astype(np.int64)
            bq = np.rint(L.b / t).astype(np.int64)
            if head is not None:
                off = np.where(shift[Z:] > 0, np.left_shift(1, np.maximum(shift[Z:] - 1, 0)), 0)
                bq[Z:] += off
            _check_exact(wq, bq, a_in)
            out.append(QLayer(wq.astype(np.int32), bq, shift, 0, 0, t, a_in))
            break
        a_out = ACT_MAX
        r = (np.maximum(p, 0.0) if L.relu else np.abs(p)).max(0)
        r = np.where(r > 0, r, 1.0)          # dead channel: any scale, its output is 0
        sigma_out = r / a_out                 # real value of one output unit
        s = np.floor(np.log2(sigma_out / t)).astype(np.int64)
        t = sigma_out / np.exp2(s)            # in [t_min, 2 t_min): sigma_out = t 2^s exactly
        wq = np.rint(w_eff / t[:, None]).astype(np.int64)
        bq = np.rint(L.b / t).astype(np.int64) + np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
        _check_exact(wq, bq, a_in)
        out.append(QLayer(wq.astype(np.int32), bq, s, 0 if L.relu else -a_out, a_out, t, a_in))
        scale_in, a_in = t * np.exp2(s), a_out
    return out


# ------------------------------------------------------------------ building the graphs
def _layer_nodes(h, L: QLayer, name: str, last: bool, inits: list, nodes: list, fold=None, out=None) -> str:
    """One integer layer as ONNX nodes. A hidden layer's requantiser 2^-s is folded into its
    weights and bias (Wq 2^-s and bq 2^-s are exact: a power of two times an integer), so
    the GEMM itself yields acc 2^-s, exactly (every partial sum is k 2^-s with |k| < 2^24);
    onnxruntime folds the weights' Cast and Mul once, at load. Clip before Floor gives the
    same integers as after it (the bounds are integers) and fuses into the GEMM."""
    from onnx import helper, numpy_helper

    small = np.abs(L.wq).max() <= 127
    inits.append(numpy_helper.from_array(np.ascontiguousarray(L.wq.T).astype(np.int8 if small else np.int16), f"{name}.wq"))
    nodes.append(helper.make_node("Cast", [f"{name}.wq"], [f"{name}.wint"], to=1, name=f"{name}.cast"))
    if last:   # fold: the head's per-channel power of two (see encoder_graph / decoder_graph)
        fold = np.asarray(fold, np.float64)
        inits.append(numpy_helper.from_array(fold.astype(np.float32), f"{name}.fold"))
        inits.append(numpy_helper.from_array((L.bq * fold).astype(np.float32), f"{name}.bq_scaled"))
        nodes.append(helper.make_node("Mul", [f"{name}.wint", f"{name}.fold"], [f"{name}.w"], name=f"{name}.wscale"))
        nodes.append(helper.make_node("MatMul", [h, f"{name}.w"], [f"{name}.mm"], name=f"{name}.matmul"))
        nodes.append(helper.make_node("Add", [f"{name}.mm", f"{name}.bq_scaled"], [out or f"{name}.acc"], name=f"{name}.bias"))
        return out or f"{name}.acc"
    pow2 = np.exp2(-L.shift.astype(np.float64))
    inits.append(numpy_helper.from_array(pow2.astype(np.float32), f"{name}.pow2"))
    inits.append(numpy_helper.from_array((L.bq * pow2).astype(np.float32), f"{name}.bq_scaled"))
    inits.append(numpy_helper.from_array(np.array(L.lo, np.float32), f"{name}.lo"))
    inits.append(numpy_helper.from_array(np.array(L.hi, np.float32), f"{name}.hi"))
    nodes.append(helper.make_node("Mul", [f"{name}.wint", f"{name}.pow2"], [f"{name}.w"], name=f"{name}.wscale"))
    nodes.append(helper.make_node("MatMul", [h, f"{name}.w"], [f"{name}.mm"], name=f"{name}.matmul"))
    nodes.append(helper.make_node("Add", [f"{name}.mm", f"{name}.bq_scaled"], [f"{name}.scaled"], name=f"{name}.bias"))
    nodes.append(helper.make_node("Clip", [f"{name}.scaled", f"{name}.lo", f"{name}.hi"], [f"{name}.clip"], name=f"{name}.clip"))
    nodes.append(helper.make_node("Floor", [f"{name}.clip"], [f"{name}.out"], name=f"{name}.floor"))
    return f"{name}.out"


def _model(nodes, inits, inputs, outputs, producer):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "bitsback_portable", inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer)
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def encoder_graph(layers: list, dim: int, latent: int):
    """x (B, dim) float32 raw symbols -> mu, sigma (B, latent)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    h = "x"
    head = layers[-1]
    Z = latent
    # mu = acc t (t a power of two) and the sigma index floor(acc 2^-q), both folded into
    # the head's weights: its GEMM gives mu exactly and s * 2^S_BITS before the floor
    fold = np.concatenate([head.t[:Z], np.exp2(-head.shift[Z:].astype(np.float64))])
    for i, L in enumerate(layers):
        h = _layer_nodes(h, L, f"enc{i}", i == len(layers) - 1, inits, nodes, fold=fold)
    table = sigma_table()
    k0 = -int(S_LO * (1 << S_BITS))
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "z0"),
        numpy_helper.from_array(np.array([Z], np.int64), "z1"),
        numpy_helper.from_array(np.array([2 * Z], np.int64), "z2"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array(k0, np.float32), "s.k0"),
        numpy_helper.from_array(np.array(0, np.float32), "s.lo"),
        numpy_helper.from_array(np.array(len(table) - 1, np.float32), "s.hi"),
        numpy_helper.from_array(table, "sigma.table"),
    ]
    nodes += [
        helper.make_node("Slice", [h, "z0", "z1", "ax1"], ["mu"], name="mu.slice"),
        helper.make_node("Slice", [h, "z1", "z2", "ax1"], ["s.scaled"], name="s.slice"),
        helper.make_node("Floor", ["s.scaled"], ["s.floor"], name="s.floor"),
        helper.make_node("Add", ["s.floor", "s.k0"], ["s.shifted"], name="s.offset"),
        helper.make_node("Clip", ["s.shifted", "s.lo", "s.hi"], ["s.idx_f"], name="s.clip"),
        helper.make_node("Cast", ["s.idx_f"], ["s.idx"], to=TensorProto.INT64, name="s.cast"),
        helper.make_node("Gather", ["sigma.table", "s.idx"], ["sigma"], axis=0, name="sigma.lookup"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])]
    outputs = [helper.make_tensor_value_info("mu", TensorProto.FLOAT, ["batch", Z]),
               helper.make_tensor_value_info("sigma", TensorProto.FLOAT, ["batch", Z])]
    return _model(nodes, inits, inputs, outputs, "bitsback.portable")


def decoder_graph(layers: list, chain: FloatChain):
    """z (B, latent) float32 bucket centres -> the float graph's outputs, through the same tail."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    zin = chain.input
    inits += [numpy_helper.from_array(np.array(2.0 ** Z_SHIFT, np.float32), "zq.scale"),
              numpy_helper.from_array(np.array(0.5, np.float32), "zq.half"),
              numpy_helper.from_array(np.array(-ACT_MAX, np.float32), "zq.lo"),
              numpy_helper.from_array(np.array(ACT_MAX, np.float32), "zq.hi")]
    nodes += [helper.make_node("Mul", [zin, "zq.scale"], ["zq.scaled"], name="zq.scale"),
              helper.make_node("Add", ["zq.scaled", "zq.half"], ["zq.half_up"], name="zq.round"),
              helper.make_node("Floor", ["zq.half_up"], ["zq.floor"], name="zq.floor"),
              helper.make_node("Clip", ["zq.floor", "zq.lo", "zq.hi"], ["zq"], name="zq.clip")]
    h = "zq"
    for i, L in enumerate(layers):   # the last layer's scale t (powers of two) folds into its weights
        h = _layer_nodes(h, L, f"dec{i}", i == len(layers) - 1, inits, nodes, fold=layers[-1].t, out=chain.output)
    nodes += list(chain.tail)
    inits += list(chain.tail_inits)
    g = chain.graph
    return _model(nodes, inits, list(g.input), list(g.output), "bitsback.portable")


# ------------------------------------------------------------------ a model folder
def convert(src_dir, out_dir, images: np.ndarray, *, calib: int = 20000, seed: int = 0) -> dict:
    """Write a portable copy of the float MLP model in ``src_dir`` to ``out_dir``.

    ``images``: training images (uint8, N x H x W or N x D, as the model codes them:
    binarised for a binary model) to calibrate the activation ranges with. Returns the
    new manifest. The context tables (context.npz) are copied unchanged: they are inputs
    of the numba likelihoods, which compute in plain IEEE float64.
    """
    src, out = Path(src_dir), Path(out_dir)
    man = json.loads((src / "manifest.json").read_text())
    if (man.get("arithmetic") or {}).get("kind") == "portable":
        raise ValueError(f"{src} is already portable")
    levels, dim, Z = int(man["levels"]), int(man["dim"]), int(man["latent"])
    rng = np.random.default_rng(seed)
    x = np.asarray(images).reshape(len(images), -1)
    if x.shape[1] != dim:
        raise ValueError(f"calibration images have {x.shape[1]} values, the model codes {dim}")
    x = x[rng.permutation(len(x))[:calib]].astype(np.float64)
    if x.max() > levels - 1:
        raise ValueError(f"calibration images exceed the model's {levels} levels (binarise them first)")

    enc = read_chain(src / man["encoder"]["file"])
    dec = read_chain(src / man["decoder"]["file"])
    if dec.input_scale != 1.0:
        raise ValueError("decoder graph scales its input; not a bitsback MLP decoder")
    eq = quantise(enc, x, levels - 1, np.full(dim, enc.input_scale), head=Z)
    # the decoder's calibration inputs: posterior samples of the float encoder, as z
    # values rounded as the graph rounds them
    pe = forward_float(enc, x)[-1]
    mu, sg = pe[:, :Z], np.logaddexp(0.0, pe[:, Z:]) + SIGMA_FLOOR
    z = mu + sg * rng.standard_normal(mu.shape)
    zq = np.clip(np.floor(z * 2.0 ** Z_SHIFT + 0.5), -ACT_MAX, ACT_MAX)
    dq = quantise(dec, zq * 2.0 ** -Z_SHIFT, ACT_MAX, np.full(Z, 2.0 ** -Z_SHIFT))

    out.mkdir(parents=True, exist_ok=True)
    files = {man["encoder"]["file"]: encoder_graph(eq, dim, Z), man["decoder"]["file"]: decoder_graph(dq, dec)}
    for name, proto in files.items():
        write_bytes(out / name, proto.SerializeToString(), force=True)
    for f in man.get("files", {}):
        if f not in files and (src / f).is_file() and src.resolve() != out.resolve():
            shutil.copyfile(src / f, out / f)
    man = dict(man)
    man["arithmetic"] = {"kind": "portable", "scheme": SCHEME, "version": PORTABLE_VERSION,
                         "weight_max": WEIGHT_MAX, "act_max": ACT_MAX, "z_shift": Z_SHIFT,
                         "calibration_images": int(len(x))}
    man["weights_dtype"] = "int8/int16 (integer network, float32 carriers)"
    man["files"] = {f: {"sha256": hashlib.sha256((out / f).read_bytes()).hexdigest(), "bytes": (out / f).stat().st_size}
                    for f in man.get("files", {})}
    write_bytes(out / "manifest.json", (json.dumps(man, indent=2) + "\n").encode(), force=True)
    return man


# ------------------------------------------------------------------ reading a portable graph
def read_layers(path) -> tuple[list, dict]:
    """The integer layers stored in a portable encoder or decoder graph, as float64 arrays
    ({"wq" (out, in), "bq", and for hidden layers "pow2", "lo", "hi"}), and the head's
    constants ({"t"} for a decoder; {"mu.t", "s.pow2", "s.k0", "sigma.table"} for an
    encoder). What :mod:`bitsback.models.integer` rebuilds the torch mirror from."""
    import onnx
    from onnx import numpy_helper

    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    prefix = "enc" if "enc0.wq" in w else "dec"
    layers, i = [], 0
    while f"{prefix}{i}.wq" in w:
        L = {"wq": w[f"{prefix}{i}.wq"].astype(np.float64).T}
        if f"{prefix}{i}.pow2" in w:    # hidden: the bias is stored scaled by 2^-s (exact)
            pow2 = w[f"{prefix}{i}.pow2"].astype(np.float64)
            L.update(bq=w[f"{prefix}{i}.bq_scaled"].astype(np.float64) / pow2, pow2=pow2,
                     lo=float(w[f"{prefix}{i}.lo"]), hi=float(w[f"{prefix}{i}.hi"]))
        else:                           # the head: bias and weights scaled by its fold
            L["bq"] = w[f"{prefix}{i}.bq_scaled"].astype(np.float64) / w[f"{prefix}{i}.fold"].astype(np.float64)
            fold = w[f"{prefix}{i}.fold"]
        layers.append(L)
        i += 1
    if not layers:
        raise ValueError(f"{path}: not a portable bitsback graph")
    head = {k: w[k] for k in ("s.k0", "sigma.table") if k in w}
    if prefix == "enc":
        Z = len(fold) // 2
        head.update({"mu.t": fold[:Z], "s.pow2": fold[Z:]})
    else:
        head["out.t"] = fold
    return layers, head
