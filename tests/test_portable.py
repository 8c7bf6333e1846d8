"""Portable network arithmetic (bitsback.portable): the bundled models' graphs are exact by
construction, onnxruntime computes them exactly as integer arithmetic says, and the torch
mirror (K-step inference) agrees bit for bit."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bitsback import datasets, portable, zoo
from bitsback.runtime import Network

FIX = Path(__file__).parent / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"
MODELS = ["mnist-grey", "mnist-binary", "mnist-grey-mlp", "mnist-binary-mlp"]
# Every op a portable graph may hold: each is exact on integers below 2^24 (MatMul, Add,
# Mul by a power of two, Floor, Clip, Cast of integers, Gather, Slice), or a single
# correctly rounded IEEE operation on the dequantised output (the likelihood's tail), or
# moves data (Shape ... Concat).
EXACT_OPS = {"MatMul", "Add", "Mul", "Floor", "Clip", "Cast", "Gather", "Slice", "Shape", "Unsqueeze",
             "Concat", "Reshape", "Split", "Squeeze", "Constant"}


def _images(name, n=64):
    x = datasets.load(FIX)[:n].reshape(n, -1)
    return datasets.binarize(x) if "binary" in name else x


@pytest.mark.parametrize("name", MODELS)
def test_bundled_models_are_portable_and_exact_by_construction(name):
    """Each layer's worst-case partial sum stays below 2^24 and every operand below 2^11
    (exact in float32, and in TF32 on a GPU), requantisers are powers of two, and the
    graph holds no op outside EXACT_OPS (no Softplus, Exp, Gemm with alpha...)."""
    d = zoo.model_dir(name)
    man = zoo.manifest(name)
    assert man["arithmetic"]["kind"] == "portable" and man["arithmetic"]["version"] == portable.PORTABLE_VERSION
    for f in (man["encoder"]["file"], man["decoder"]["file"]):
        g = onnx.load(str(d / f)).graph
        assert {n.op_type for n in g.node} <= EXACT_OPS, f
        layers, head = portable.read_layers(d / f)
        a_in = man["levels"] - 1 if f.startswith("enc") else portable.ACT_MAX
        for L in layers:
            wq, bq = L["wq"], L["bq"]
            assert np.all(wq == np.rint(wq)) and np.abs(wq).max() <= portable.WEIGHT_MAX
            assert (np.abs(wq).sum(1) * a_in + np.abs(bq)).max() < 2**24
            if "pow2" in L:
                m, e = np.frexp(L["pow2"])
                assert np.all(m == 0.5), "requantisation must be by a power of two"
                a_in = max(abs(L["lo"]), abs(L["hi"]))
                assert a_in <= portable.ACT_MAX


@pytest.mark.parametrize("name", ["mnist-grey", "mnist-binary-mlp"])
def test_onnxruntime_equals_the_integer_reference(name):
    """The encoder's outputs equal an int64 numpy evaluation of the same integer network
    bit for bit (a float kernel that rounded anything would differ)."""
    d = zoo.model_dir(name)
    x = _images(name)
    out = Network(d / "encoder.onnx", "cpu")(x=x.astype(np.float32))
    layers, head = portable.read_layers(d / "encoder.onnx")
    a = x.astype(np.int64)
    for L in layers:
        acc = a @ L["wq"].T.astype(np.int64) + L["bq"].astype(np.int64)
        if "pow2" in L:
            a = np.clip(np.floor(acc * L["pow2"]), L["lo"], L["hi"]).astype(np.int64)
    Z = zoo.manifest(name)["latent"]
    assert np.array_equal(out["mu"], acc[:, :Z].astype(np.float32) * head["mu.t"])
    idx = np.clip(np.floor(acc[:, Z:] * head["s.pow2"].astype(np.float64)) + head["s.k0"], 0,
                  len(head["sigma.table"]) - 1).astype(np.int64)
    assert np.array_equal(out["sigma"], head["sigma.table"][idx])


@pytest.mark.parametrize("name", ["mnist-binary", "mnist-grey-mlp"])
def test_torch_mirror_equals_onnxruntime(name):
    """K-step inference rebuilds the portable networks in torch (models/integer.py): same
    outputs, bit for bit, and a usable gradient (straight-through floor)."""
    torch = pytest.importorskip("torch")
    from bitsback.models import load_torch

    d = zoo.model_dir(name)
    enc, dec, man = load_torch(d)
    x = _images(name).astype(np.float32)
    out = Network(d / "encoder.onnx", "cpu")(x=x)
    with torch.no_grad():
        mu, sigma = enc(torch.from_numpy(x))
    assert np.array_equal(mu.numpy(), out["mu"]) and np.array_equal(sigma.numpy(), out["sigma"])
    z = torch.from_numpy(out["mu"]).requires_grad_(True)
    want = Network(d / "decoder.onnx", "cpu")(z=out["mu"])
    got = dec(z)
    first = got[0] if isinstance(got, tuple) else got
    name0 = man["decoder"]["outputs"][0]
    assert np.array_equal(first.detach().numpy().reshape(want[name0].shape), want[name0])
    first.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_convert_round_trip_and_refusals(tmp_path):
    """convert() makes a model folder the codec uses exactly, refuses a second conversion,
    and refuses images outside the model's levels."""
    import bitsback

    src = zoo.LEGACY_DIR / next(p.name for p in zoo.LEGACY_DIR.iterdir() if p.name.startswith("mnist-binary@"))
    x = _images("mnist-binary")
    man = portable.convert(src, tmp_path / "m", x)
    assert man["arithmetic"]["kind"] == "portable"
    codec = bitsback.load(tmp_path / "m", device="cpu", lanes=2)
    assert np.array_equal(codec.decompress(codec.compress(x.reshape(-1, 28, 28))), x.reshape(-1, 28, 28))
    with pytest.raises(ValueError, match="already portable"):
        portable.convert(tmp_path / "m", tmp_path / "m2", x)
    with pytest.raises(ValueError, match="levels"):
        portable.convert(src, tmp_path / "m3", _images("mnist-grey"))


def test_non_mlp_models_are_refused(tmp_path):
    """A network with another activation (here Tanh) cannot be made portable: a clear
    ValueError naming the ops, never a silently wrong graph."""
    torch = pytest.importorskip("torch")
    from bitsback.export import export_vae

    class Enc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.Tanh(), torch.nn.Linear(32, 8))

        def forward(self, x):
            mu, s = self.net(x).chunk(2, -1)
            return mu, torch.nn.functional.softplus(s) + 1e-4

    dec = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 784))
    export_vae(Enc(), dec, tmp_path / "m", likelihood="bernoulli", image_shape=(28, 28), levels=2,
               preprocess="binarize")
    with pytest.raises(ValueError, match="Tanh"):
        portable.convert(tmp_path / "m", tmp_path / "p", _images("mnist-binary"))


def test_export_command_is_portable_by_default(tmp_path):
    """`bitsback export` of a trained checkpoint converts to portable arithmetic unless told
    otherwise, calibrating on --inactive-data; the result codes exactly; without images
    to calibrate on it says what to pass."""
    pytest.importorskip("torch")
    import bitsback
    from bitsback import export, train

    common = ["--data", str(FIX), "--batch", "16", "--n-val", "16", "--threads", "1", "--no-progress"]
    ck = tmp_path / "vae"
    assert train.main(["vae", "--out", str(ck), "--epochs", "1", "--latent", "4", "--hidden", "32",
                       "--likelihood", "logistic", "--preprocess", "none", "--levels", "256", *common]) == 0
    out = tmp_path / "model"
    assert export.main(["--ckpt", str(ck / "best.pt"), "--out", str(out), "--inactive-data", str(FIX)]) == 0
    assert zoo.manifest(str(out))["arithmetic"]["kind"] == "portable"
    x = datasets.load(FIX)[:16]
    codec = bitsback.load(out, device="cpu", lanes=2)
    blob = codec.compress(x)
    assert bitsback.container.unpack(blob)[0]["arithmetic"]["kind"] == "portable"
    assert np.array_equal(codec.decompress(blob), x)
    flt = tmp_path / "float"
    assert export.main(["--ckpt", str(ck / "best.pt"), "--out", str(flt), "--arithmetic", "float"]) == 0
    assert "arithmetic" not in zoo.manifest(str(flt))
    with pytest.raises(ValueError, match="calib"):
        export.export_checkpoint(ck / "best.pt", tmp_path / "none")
