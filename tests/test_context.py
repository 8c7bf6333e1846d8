"""Causal-context likelihoods: torch (training) and numba (coding) agree, decoding is exact."""

import numpy as np
import pytest
import torch

from bitsback import datasets
from bitsback._rans import Messages
from bitsback.cdf.context import Context
from bitsback.errors import BitsbackError, ModelMismatchError
from bitsback.models import build_vae
from bitsback.models.context import ContextHead, context_index, make_spec

MNIST = datasets.load(str(__import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "t10k-images-idx3-ubyte.gz"))


def _case(lik, n=12, seed=0):
    """A context head with perturbed tables, plausible features, and real MNIST images."""
    g = torch.Generator().manual_seed(seed)
    spec = make_spec(lik, (28, 28))
    head = ContextHead(lik, spec)
    # perturbed, but not so far that many pixels fall below the 2^-24 probability floor
    scale = 0.2 if lik == "bernoulli_context" else 0.01
    with torch.no_grad():
        for p in head.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    x = MNIST[seed * n:(seed + 1) * n].reshape(n, -1)
    if lik == "bernoulli_context":
        x = datasets.binarize(x).reshape(n, -1)
        feats = torch.randn(n, 784, spec["features"], generator=g)
    else:
        feats = torch.stack([torch.from_numpy(x / 127.5 - 1).float() + 0.05 * torch.randn(n, 784, generator=g),
                             torch.full((n, 784), 1.0), torch.randn(n, 784, generator=g)], -1)
    return spec, head, np.ascontiguousarray(x, np.uint8), feats


@pytest.mark.parametrize("lik", ["bernoulli_context", "logistic_context"])
@pytest.mark.parametrize("lanes", [1, 5, 12])
def test_round_trip_exact(lik, lanes):
    spec, head, x, feats = _case(lik, n=lanes, seed=lanes)
    ctx = Context(lik, spec, head.tables())
    msgs = Messages(lanes, 3)
    ctx.push(msgs, feats.numpy(), x, 24)
    assert not msgs.is_initial()
    y = ctx.pop(msgs, feats.numpy(), 24)
    assert (y == x).all()
    assert msgs.is_initial()


@pytest.mark.parametrize("lanes", [1, 33])
def test_mixture_pop_finds_unlikely_symbols(lanes):
    """Symbols the model finds unlikely (uniform bytes, and 0 / 255 where it expects the
    other end) make most pops miss their guessed bin, on either side and at any distance:
    the lockstep bracket search must still land on exactly the pushed symbol."""
    spec, head, x, feats = _case("logistic_context", n=lanes, seed=7)
    rng = np.random.default_rng(lanes)
    x = rng.integers(0, 256, x.shape, dtype=np.uint8)
    x[:, ::7] = np.where(x[:, ::7] < 128, 255, 0)
    ctx = Context("logistic_context", spec, head.tables())
    msgs = Messages(lanes, 5)
    ctx.push(msgs, feats.numpy(), x, 24)
    y = ctx.pop(msgs, feats.numpy(), 24)
    assert (y == x).all()
    assert msgs.is_initial()


@pytest.mark.parametrize("lik", ["bernoulli_context", "logistic_context"])
def test_quantised_code_length_matches_torch_logprob(lik):
    spec, head, x, feats = _case(lik, n=8)
    levels = 2 if lik == "bernoulli_context" else 256
    torch_bits = -head.logprob(feats, torch.from_numpy(x.astype(np.float32)), levels).detach().numpy() / np.log(2)
    bits = Context(lik, spec, head.tables()).code_length(feats.numpy(), x, 24)
    # quantisation at 24 bits costs far less than 0.1 %; a wrong neighbour or table costs more
    np.testing.assert_allclose(bits, torch_bits, rtol=1e-3)


def _shipped_spec(name):
    import json

    from bitsback.codec import resolve_model

    return json.loads((resolve_model(name) / "manifest.json").read_text())["config"]["context"]


@pytest.mark.parametrize("lik,spec", [
    ("bernoulli_context", None), ("logistic_context", None),
    ("bernoulli_context", "mnist-binary"), ("logistic_context", "mnist-grey"),
])
@pytest.mark.parametrize("step", [1, -1])
def test_row_shift_gives_the_full_context_at_every_pixel(lik, spec, step):
    """The kernels' incremental context (perm of the previous pixel's context plus the
    neighbours read afresh, Context.cx) equals the full sum at every pixel, walking each
    row forward (pop) or backward (push)."""
    spec = make_spec(lik, (28, 28)) if spec is None else _shipped_spec(spec)
    ctx = Context(lik, spec, ContextHead(lik, spec).tables())
    x = MNIST[:6].reshape(6, -1)
    pad = ctx._padded(datasets.binarize(x).reshape(6, -1) if lik == "bernoulli_context" else x).astype(np.int64)
    cdelta, ctab = ctx.cx[0], ctx.cx[1]
    perm, fdelta, ftab = ctx.cx[2:5] if step == 1 else ctx.cx[5:8]
    assert len(perm) and len(fdelta) < len(cdelta)     # the shift saves reads on these specs
    W, Wp, R, P = ctx.geo
    for r in range(ctx.H):
        cols = range(W) if step == 1 else range(W - 1, -1, -1)
        c = None
        for col in cols:
            b = (r + R) * Wp + col + P
            full = sum(ctab[t][pad[:, b + cdelta[t]]] for t in range(len(cdelta)))
            if c is not None:
                c = perm[c] + sum(ftab[u][pad[:, b + fdelta[u]]] for u in range(len(fdelta)))
                assert (c == full).all(), (r, col)
            c = full


def test_row_shift_is_off_for_large_context_sets():
    spec = make_spec("bernoulli_context", (28, 28))
    spec["ctx_offsets"] = [[0, -k] for k in range(1, 4)] + [[-1, k] for k in range(-3, 4)] + [[-2, k] for k in range(-3, 4)]
    spec["thresholds"] = [1]
    assert len(spec["ctx_offsets"]) == 17     # 2^17 contexts: no permutation table
    ctx = Context("bernoulli_context", spec, {"gain": np.zeros((1 << 17, spec["features"]), np.float32), "bias": np.zeros(1 << 17, np.float32)})
    assert len(ctx.cx[2]) == 0 and len(ctx.cx[5]) == 0
    x = datasets.binarize(MNIST[:3]).reshape(3, -1)
    feats = np.random.default_rng(0).normal(size=(3, 784, spec["features"])).astype(np.float32)
    msgs = Messages(3, 1)
    ctx.push(msgs, feats, x, 24)
    assert (ctx.pop(msgs, feats, 24) == x).all() and msgs.is_initial()


def test_context_index_reads_only_earlier_pixels():
    spec = make_spec("logistic_context", (28, 28))
    x = torch.from_numpy(MNIST[:4].reshape(4, -1).astype(np.float32))
    c = context_index(x, spec)
    for j in (0, 29, 400, 783):
        y = x.clone()
        y[:, j:] = torch.randint(0, 256, y[:, j:].shape).float()  # change pixel j and later
        assert (context_index(y, spec)[:, j] == c[:, j]).all()


def test_sample_follows_the_model_it_codes():
    """Samples are drawn pixel by pixel with the coder's formulas: their code length under
    the model equals their torch log-probability."""
    spec, head, _, feats = _case("logistic_context", n=4)
    s = head.sample(feats, 256, torch.Generator().manual_seed(1))
    x = s.numpy().astype(np.uint8)
    bits = Context("logistic_context", spec, head.tables()).code_length(feats.numpy(), x, 24)
    torch_bits = -head.logprob(feats, s, 256).detach().numpy() / np.log(2)
    np.testing.assert_allclose(bits, torch_bits, rtol=1e-3)


def test_non_causal_spec_and_bad_tables_are_refused():
    spec, head, _, _ = _case("bernoulli_context")
    with pytest.raises(ValueError):
        make_spec("bernoulli_context", (28, 28), ctx_offsets=[[0, 1]])
    with pytest.raises(BitsbackError, match="causal"):
        Context("bernoulli_context", {**spec, "ctx_offsets": [[1, 0]] + spec["ctx_offsets"][1:]}, head.tables())
    t = head.tables()
    with pytest.raises(BitsbackError):
        Context("bernoulli_context", spec, {**t, "bias": t["bias"][:-1]})
    with pytest.raises(BitsbackError):
        Context("bernoulli_context", spec, {**t, "bias": np.full_like(t["bias"], np.nan)})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A freshly built (untrained) context VAE, exported like a shipped model."""
    from bitsback import export

    torch.manual_seed(0)
    out = {}
    for lik, levels in (("bernoulli_context", 2), ("logistic_context", 256)):
        cfg = dict(likelihood=lik, levels=levels, image_shape=[28, 28], latent=8, hidden=[64])
        enc, dec = build_vae(cfg)
        d = tmp_path_factory.mktemp(lik)
        export.export_vae(enc, dec, d, likelihood=lik, image_shape=(28, 28), levels=levels,
                          latent=8, config={**cfg, "context": dec.context.spec}, name=lik)
        out[lik] = d
    return out


@pytest.mark.parametrize("lik", ["bernoulli_context", "logistic_context"])
@pytest.mark.parametrize("k_steps", [0, 2])
def test_codec_round_trip_and_model_check(exported, lik, k_steps, tmp_path):
    import shutil

    from bitsback.codec import Codec

    x = MNIST[:9]
    if lik == "bernoulli_context":
        x = datasets.binarize(x)
    codec = Codec(exported[lik], k_steps=k_steps, lanes=4)
    blob = codec.compress(x)
    assert (Codec(exported[lik]).decompress(blob) == x).all()
    # the tables are part of the model: other tables, other model
    other = tmp_path / "other"
    shutil.copytree(exported[lik], other)
    with np.load(other / "context.npz") as z:
        t = {k: z[k] for k in z.files}
    t[next(iter(t))] = t[next(iter(t))] + 0.5
    np.savez(other / "context.npz", **t)
    with pytest.raises(ModelMismatchError):
        Codec(other).decompress(blob)


def test_torch_reload_has_the_shipped_tables(exported):
    from bitsback.models import load_torch

    _, dec, man = load_torch(exported["logistic_context"])
    with np.load(exported["logistic_context"] / "context.npz") as z:
        for k, v in dec.context.tables().items():
            assert (z[k] == v).all()
