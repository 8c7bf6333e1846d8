import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from bitsback import datasets, zoo  # noqa: E402
from bitsback.export import export_vae, sha256_file  # noqa: E402
from bitsback.models import build_vae, decoder_logprob, load_torch  # noqa: E402

ort.set_default_logger_severity(3)
FIX = Path(__file__).parent / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"
ROOT = Path(__file__).resolve().parents[1]


def _sess(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("cfg,weights", [
    (dict(likelihood="bernoulli", levels=2, preprocess="binarize"), "float32"),
    (dict(likelihood="logistic", levels=256, preprocess="none"), "float32"),
    (dict(likelihood="logistic_mixture", levels=256, mixture=2, preprocess="none"), "float16"),
    (dict(likelihood="bernoulli", levels=2, preprocess="binarize", head_rank=8), "float16"),
    (dict(likelihood="bernoulli", levels=2, preprocess="binarize", enc_hidden=[48, 40], enc_rank=8), "float16"),
])
def test_export_parity_and_load_torch(tmp_path, cfg, weights):
    torch.manual_seed(0)
    pre = cfg.pop("preprocess")
    cfg = {"hidden": [64, 64], "latent": 6, "image_shape": [28, 28], **cfg}
    enc, dec = build_vae(cfg)
    man = export_vae(enc, dec, tmp_path, likelihood=cfg["likelihood"], image_shape=(28, 28), levels=cfg["levels"],
                     preprocess=pre, mixture=cfg.get("mixture", 1), config=cfg, weights=weights)
    assert man["latent"] == 6 and man["likelihood"] == cfg["likelihood"]
    for f, info in man["files"].items():
        assert sha256_file(tmp_path / f) == info["sha256"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == man

    x = datasets.load(FIX)[:5].reshape(5, -1)
    if cfg["levels"] == 2:
        x = datasets.binarize(x)
    x = x.astype(np.float32)
    es, ds = _sess(tmp_path / "encoder.onnx"), _sess(tmp_path / "decoder.onnx")
    assert [i.name for i in es.get_inputs()] == ["x"] and [o.name for o in es.get_outputs()] == ["mu", "sigma"]
    mu, sigma = es.run(None, {"x": x})
    assert mu.shape == (5, 6) and (sigma > 0).all()
    outs = ds.run(None, {"z": mu})
    assert [o.name for o in ds.get_outputs()] == list(man["decoder"]["outputs"])
    # the same batch through torch (export rounded the weights in place for float16)
    with torch.no_grad():
        tmu, tsig = enc(torch.from_numpy(x))
        touts = dec(torch.from_numpy(mu))
    touts = (touts,) if isinstance(touts, torch.Tensor) else touts
    np.testing.assert_allclose(mu, tmu.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sigma, tsig.numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(outs, touts):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-3)
    # dynamic batch: a different batch size works and rows do not depend on it
    mu1, _ = es.run(None, {"x": x[:1]})
    np.testing.assert_allclose(mu1[0], mu[0], rtol=1e-5, atol=1e-5)
    # load_torch rebuilds identical modules from the ONNX initializers
    enc2, dec2, man2 = load_torch(tmp_path)
    with torch.no_grad():
        m2, _ = enc2(torch.from_numpy(x))
        o2 = dec2(torch.from_numpy(mu))
    o2 = (o2,) if isinstance(o2, torch.Tensor) else o2
    np.testing.assert_allclose(m2.numpy(), mu, rtol=1e-4, atol=1e-4)
    for a, b in zip(outs, o2):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-3)
    lp = decoder_logprob(man2["likelihood"], o2, torch.from_numpy(x))
    assert torch.isfinite(lp).all()


def test_fp16_export_is_smaller(tmp_path):
    cfg = {"likelihood": "logistic", "levels": 256, "hidden": [128, 128], "latent": 6, "image_shape": [28, 28]}
    sizes = {}
    for w in ("float32", "float16"):
        enc, dec = build_vae(cfg)
        man = export_vae(enc, dec, tmp_path / w, likelihood="logistic", image_shape=(28, 28), levels=256,
                         config=cfg, weights=w)
        sizes[w] = sum(v["bytes"] for v in man["files"].values())
    assert sizes["float16"] < 0.6 * sizes["float32"]


def test_byo_example(tmp_path):
    out = tmp_path / "byo"
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "byo_vae.py"), str(out)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = zoo.manifest(str(out))
    assert m["name"] == "my-vae" and m["likelihood"] == "bernoulli"
    assert zoo.verify(str(out))


def test_zoo_registry_is_torch_free_and_lists_models():
    code = ("import sys, json, io, contextlib; import bitsback.zoo as z; buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf): z.models_main(['--json'])\n"
            "rows = json.loads(buf.getvalue()); assert isinstance(rows, list)\n"
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules; print(len(rows))")
    r = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in zoo.list_models():
        s = zoo.summary(name)
        assert s["bytes"] < 11_000_000
        assert zoo.verify(name)
    with pytest.raises(zoo.UnknownModelError):
        zoo.model_dir("no-such-model")


def test_mark_inactive_finds_the_shipped_collapsed_dims(tmp_path):
    """On 64 test images, the collapsed latent dims of the bundled binary model are the
    ones its manifest records (found on 10 000 training images), and they are written to
    the manifest the codec reads."""
    import shutil

    from bitsback.export import mark_inactive

    src = Path(zoo.model_dir("mnist-binary"))
    shutil.copytree(src, tmp_path / "m")
    shipped = json.loads((src / "manifest.json").read_text())["inactive_dims"]
    x = datasets.binarize(datasets.load(FIX)).reshape(64, -1).astype(np.float32)
    assert mark_inactive(tmp_path / "m", x) == shipped
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["inactive_dims"] == shipped
    assert mark_inactive(tmp_path / "m", x, kl_bits=-1.0) == []


def test_export_cli_from_a_checkpoint(tmp_path, capsys):
    """`bitsback export` ships a training checkpoint: the manifest records the commands,
    the checkpoint's meta, the coder's default precisions and the collapsed latent dims."""
    from bitsback import export
    from bitsback.bbans.model import DEFAULT_PRECISION
    from bitsback.models.checkpoints import save_ckpt

    torch.manual_seed(0)
    cfg = dict(likelihood="bernoulli", levels=2, hidden=[16], latent=3, image_shape=[28, 28])
    enc, dec = build_vae(cfg)
    ck = tmp_path / "best.pt"
    save_ckpt(ck, config=cfg, encoder=enc.state_dict(), decoder=dec.state_dict(), epoch=4, val_bpd=0.5,
              meta={"stage": "vae", "args": {"lr": 1e-3}, "preprocess": "binarize"})
    out = tmp_path / "m"
    argv = ["--ckpt", str(ck), "--out", str(out), "--name", "tiny", "--inactive-data", str(FIX),
            "--recipe", "bitsback train vae A", "--recipe", "bitsback train encoder B"]
    assert export.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == "tiny" and m["preprocess"] == "binarize" and m["latent_size"] == 3
    assert m["recommended_precision"] == DEFAULT_PRECISION
    t = m["training"]
    assert t["commands"] == ["bitsback train vae A", "bitsback train encoder B"]
    assert t["export_command"] == "bitsback export " + " ".join(argv)
    assert t["checkpoint_meta"]["args"] == {"lr": 1e-3} and t["epochs"] == 4 and t["val_bpd"] == 0.5
    assert isinstance(m["inactive_dims"], list) and set(m["inactive_dims"]) <= {0, 1, 2}
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "manifest.json"]


def test_export_does_not_import_train():
    code = "import sys, bitsback.export; assert 'bitsback.train' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
