import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitsback import datasets, train  # noqa: E402
from bitsback.models import build_vae  # noqa: E402
from bitsback.models.checkpoints import load_ckpt, read_ckpt, save_ckpt  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"
ROOT = Path(__file__).resolve().parents[1]
CFGS = {
    "bernoulli": dict(likelihood="bernoulli", levels=2, hidden=[32, 32], latent=4),
    "logistic_mixture": dict(likelihood="logistic_mixture", levels=256, hidden=[32, 32], latent=4, mixture=2),
}


def _data(levels, n=8):
    x = datasets.load(FIX)[:n].reshape(n, -1)
    if levels == 2:
        x = datasets.binarize(x)
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("lik", list(CFGS))
@pytest.mark.parametrize("objective", ["rha", "rs", "sleep", "denoise", "elbo"])
@pytest.mark.parametrize("samples", ["prior", "posterior"])
def test_encoder_objective_loss_and_grad(lik, objective, samples):
    torch.manual_seed(0)
    cfg = CFGS[lik]
    enc, dec = build_vae(cfg)
    for p in dec.parameters():
        p.requires_grad_(False)
    x = _data(cfg["levels"])
    loss = train.encoder_loss(objective, enc, dec, x, cfg, alpha=0.5, sigma_noise=0.2, source=samples, x_train=x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in dec.parameters())  # decoder frozen


def test_rha_interpolates_elbo_and_reverse_sleep():
    torch.manual_seed(0)
    cfg = CFGS["bernoulli"]
    enc, dec = build_vae(cfg)
    x = _data(2)

    def at(obj, alpha=0.5):
        torch.manual_seed(1)
        return float(train.encoder_loss(obj, enc, dec, x, cfg, alpha=alpha).detach())

    assert at("rha", 0.0) == pytest.approx(at("elbo"))
    assert at("rha", 1.0) == pytest.approx(at("rs"))


def test_neg_elbo_grad_and_bpd():
    torch.manual_seed(0)
    cfg = CFGS["bernoulli"]
    enc, dec = build_vae(cfg)
    x = _data(2)
    ne = train.neg_elbo(enc, dec, x, "bernoulli", 2)
    assert ne.shape == (8,) and bool((ne > 0).all())
    ne.mean().backward()
    assert enc.head.weight.grad is not None and dec.head.weight.grad is not None
    assert train.bpd(np.array([784 * np.log(2)]), 784) == pytest.approx(1.0)


def test_iwae_and_optimal_bound_elbo():
    torch.manual_seed(0)
    cfg = {**CFGS["bernoulli"], "image_shape": [28, 28]}
    enc, dec = build_vae(cfg)
    x = _data(2)
    elbo = train.eval_neg_elbo(enc, dec, x, cfg, n_samples=50)
    iw = train.eval_iwae(enc, dec, x, cfg, k=64, chunk=16, progress=False)
    opt = train.eval_optimal(enc, dec, x, cfg, steps=30, lr=5e-2, n_eval_samples=50, progress=False)
    assert iw.shape == (8,) and opt.shape == (8,)
    assert iw.mean() <= elbo.mean() + 1e-3  # IWAE is a tighter bound
    assert opt.mean() < elbo.mean()  # per-image optimisation improves the ELBO


def test_eval_does_not_reset_training_rng():
    cfg = CFGS["bernoulli"]
    enc, dec = build_vae(cfg)
    x = _data(2)
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    train.eval_neg_elbo(enc, dec, x, cfg)
    b = torch.rand(3)
    torch.testing.assert_close(a, b)
    c = torch.rand(3)
    assert not torch.equal(b, c)


def test_cli_vae_resume_encoder_eval(tmp_path, capsys):
    common = ["--data", str(FIX), "--batch", "16", "--n-val", "16", "--threads", "1", "--no-progress"]
    out = tmp_path / "vae"
    assert train.main(["vae", "--out", str(out), "--epochs", "1", "--latent", "4", "--hidden", "32",
                       "--resume", *common]) == 0
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    assert train.main(["vae", "--out", str(out), "--epochs", "2", "--latent", "4", "--hidden", "32",
                       "--resume", *common]) == 0
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]  # resumed, not restarted
    enc_out = tmp_path / "rha"
    assert train.main(["encoder", "--init", str(out / "best.pt"), "--out", str(enc_out), "--epochs", "1",
                       "--objective", "rha", *common]) == 0
    capsys.readouterr()
    assert train.main(["eval", "--model", str(enc_out / "best.pt"), "--data", str(FIX), "--limit", "8",
                       "--iwae-k", "8", "--optimal-steps", "2", "--threads", "1"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n_images"] == 8 and res["iwae_bpd"] > 0 and res["optimal_bpd"] > 0 and res["neg_elbo_bpd"] > 0


def test_low_rank_head_from_a_trained_vae(tmp_path):
    """--init with --head-rank factorises the trained output layer by truncated SVD: at full
    rank the decoder computes the same outputs, at lower rank its layer is the closest
    rank-r matrix; training then continues and exports like any other model."""
    common = ["--data", str(FIX), "--batch", "16", "--n-val", "16", "--threads", "1", "--no-progress"]
    full = tmp_path / "full"
    assert train.main(["vae", "--out", str(full), "--epochs", "1", "--latent", "4", "--hidden", "32", *common]) == 0
    _, dec, ck = load_ckpt(full / "best.pt")
    W = dec.head.weight.detach()
    z = torch.randn(5, 4)
    for r in (32, 3):
        low = build_vae({**ck["config"], "head_rank": r})[1]
        train.load_decoder(low, dict(dec.state_dict()))
        product = low.head[1].weight @ low.head[0].weight
        assert product.shape == W.shape and torch.linalg.matrix_rank(product) <= r
        if r == 32:
            torch.testing.assert_close(low(z), dec(z), rtol=1e-4, atol=1e-4)
        else:
            S = torch.linalg.svdvals(W)
            torch.testing.assert_close(torch.linalg.norm(W - product), torch.linalg.norm(S[r:]), rtol=1e-4, atol=1e-5)
    out = tmp_path / "r3"
    assert train.main(["vae", "--init", str(full / "best.pt"), "--head-rank", "3", "--out", str(out),
                       "--epochs", "1", *common]) == 0
    _, dec3, ck3 = load_ckpt(out / "best.pt")
    assert ck3["config"]["head_rank"] == 3 and dec3.head[0].weight.shape == (3, 32)
    # back to full rank: the product, exactly what the rank-3 decoder computes
    back = build_vae({**ck3["config"], "head_rank": 0})[1]
    train.load_decoder(back, dict(dec3.state_dict()))
    torch.testing.assert_close(back(z), dec3(z), rtol=1e-4, atol=1e-4)


def test_smaller_encoder_from_a_trained_vae(tmp_path):
    """train encoder --enc-rank / --enc-hidden: a rank-r input layer starts from the
    truncated SVD of the trained one (at full rank: the same encoder), other hidden sizes
    start afresh; the decoder stays frozen and the new shape is in the checkpoint."""
    common = ["--data", str(FIX), "--batch", "16", "--n-val", "16", "--threads", "1", "--no-progress"]
    full = tmp_path / "full"
    assert train.main(["vae", "--out", str(full), "--epochs", "1", "--latent", "4", "--hidden", "32", *common]) == 0
    enc, dec, ck = load_ckpt(full / "best.pt")
    x = _data(2)
    cfg, same = train.resized_encoder(enc, ck["config"], rank=32)
    assert cfg["enc_rank"] == 32
    for a, b in zip(same(x), enc(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    _, low = train.resized_encoder(enc, ck["config"], rank=3)
    W, product = enc.body[0].weight, low.body[0][1].weight @ low.body[0][0].weight
    S = torch.linalg.svdvals(W)
    torch.testing.assert_close(torch.linalg.norm(W - product), torch.linalg.norm(S[3:]), rtol=1e-4, atol=1e-5)
    out = tmp_path / "small"
    assert train.main(["encoder", "--init", str(full / "best.pt"), "--out", str(out), "--epochs", "1",
                       "--enc-hidden", "16,8", "--enc-rank", "4", *common]) == 0
    enc2, dec2, ck2 = load_ckpt(out / "best.pt")
    assert ck2["config"]["enc_hidden"] == [16, 8] and ck2["config"]["enc_rank"] == 4
    assert enc2.body[0][0].weight.shape == (4, 784) and enc2.head.weight.shape == (8, 8)
    for k, v in dec.state_dict().items():
        assert torch.equal(v, dec2.state_dict()[k]), k


def test_fewer_mixture_components_from_a_trained_vae(tmp_path):
    """train vae --init --mixture k cuts a logistic_context mixture to each context's k
    heaviest components: a component with no weight anywhere is the one dropped, and the
    smaller model then gives every image the same likelihood; training goes on from it."""
    common = ["--data", str(FIX), "--batch", "16", "--n-val", "16", "--threads", "1", "--no-progress"]
    full = tmp_path / "k3"
    assert train.main(["vae", "--out", str(full), "--epochs", "1", "--latent", "4", "--hidden", "32",
                       "--likelihood", "logistic_context", "--mixture", "3", "--preprocess", "none",
                       "--levels", "256", *common]) == 0
    ck = torch.load(full / "best.pt", map_location="cpu", weights_only=False)
    ck["decoder"]["context.wbias"][:, 1] = -1e4     # component 1 never carries weight
    x = _data(256)
    cfg, state = train.fewer_components(ck, 2, x)
    assert cfg["mixture"] == 2 and cfg["context"]["mixture"] == 2
    assert torch.equal(state["context.coef"], ck["decoder"]["context.coef"][:, [0, 2]])
    enc, dec3 = build_vae(ck["config"])
    enc.load_state_dict(ck["encoder"])
    train.load_decoder(dec3, dict(ck["decoder"]))
    dec2 = build_vae(cfg)[1]
    train.load_decoder(dec2, state)
    with torch.no_grad():
        z = enc(x)[0]
        f3, h3 = dec3(z)
        f2, h2 = dec2(z)
        torch.testing.assert_close(h2.logprob(f2, x), h3.logprob(f3, x), rtol=1e-5, atol=1e-4)
    bad = {**ck, "config": {**ck["config"], "likelihood": "logistic_mixture"}}
    with pytest.raises(SystemExit, match="logistic_context"):
        train.fewer_components(bad, 2, x)
    path = tmp_path / "with-dead.pt"
    torch.save(ck, path)
    out = tmp_path / "k2"
    assert train.main(["vae", "--init", str(path), "--mixture", "2", "--out", str(out), "--epochs", "1", *common]) == 0
    _, dec_k2, ck2 = load_ckpt(out / "best.pt")
    assert ck2["config"]["mixture"] == 2 and dec_k2.context.coef.shape[1] == 2


def test_checkpoint_holds_plain_data_only(tmp_path):
    """save_ckpt writes tensors and plain data, replacing the file atomically (no temporary
    left behind), and refuses a function (what early checkpoints pickled) before writing."""
    path = tmp_path / "c.pt"
    for epoch in (1, 2):
        save_ckpt(path, epoch=epoch, weights=torch.ones(2), meta={"args": {"lr": 1e-3, "out": "x"}})
    assert read_ckpt(path)["epoch"] == 2 and [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    with pytest.raises(TypeError, match=r"\['meta'\]\['args'\]\['func'\]"):
        save_ckpt(path, epoch=3, meta={"args": {"func": train.cmd_vae}})
    assert read_ckpt(path)["epoch"] == 2 and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# An early checkpoint, written as `python -m bitsback.train` wrote it: that program was
# __main__, and its options (argparse's Namespace as a dict) held func = __main__.cmd_vae.
_EARLY_CHECKPOINT = """
import sys, torch
from bitsback.models import build_vae

def cmd_vae(args):
    pass

cfg = dict(likelihood="bernoulli", levels=2, hidden=[8], latent=2, image_shape=[28, 28])
enc, dec = build_vae(cfg)
args = {"cmd": "vae", "lr": 1e-3, "func": cmd_vae}
torch.save(dict(config=cfg, encoder=enc.state_dict(), decoder=dec.state_dict(), epoch=1,
                meta={"stage": "vae", "args": args, "preprocess": "binarize"}), sys.argv[1])
"""


def test_early_checkpoint_with_main_function_loads(tmp_path):
    """A checkpoint that pickled a function of its writer's __main__ loads without that
    entry, and without touching this program's __main__."""
    import __main__

    path = tmp_path / "early.pt"
    r = subprocess.run([sys.executable, "-c", _EARLY_CHECKPOINT, str(path)], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert b"__main__" in path.read_bytes()             # really a reference into __main__
    with pytest.raises(AttributeError, match="cmd_vae"):  # which a plain load cannot resolve
        torch.load(path, weights_only=False)
    had = hasattr(__main__, "cmd_vae")
    enc, dec, ck = load_ckpt(path)
    assert ck["meta"]["args"] == {"cmd": "vae", "lr": 1e-3}
    assert enc(torch.zeros(1, 784))[0].shape == (1, 2) and dec(torch.zeros(1, 2)).shape == (1, 784)
    assert hasattr(__main__, "cmd_vae") == had


def test_finished_stage_is_skipped_unless_resumed_with_new_options(tmp_path):
    """Rerunning a finished stage's command does nothing; a time-budget stop resumed at a
    new --lr continues the same run with its optimiser (Adam's step count goes on)."""
    common = ["--data", str(FIX), "--batch", "16", "--n-val", "16", "--threads", "1", "--no-progress",
              "--latent", "4", "--hidden", "32", "--epochs", "50", "--resume"]
    out = tmp_path / "vae"
    # a budget this small stops after the first step (checked after every step, not per epoch)
    assert train.main(["vae", "--out", str(out), "--max-minutes", "0.00001", *common]) == 0
    done = json.loads((out / "DONE").read_text())
    assert done["reason"] == "time_budget" and done["lr"] == 3e-4
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["partial"] and log[0]["images"] == 16
    steps = read_ckpt(out / "last.pt")["optimizer"]["state"][0]["step"]
    # the same command: skipped
    assert train.main(["vae", "--out", str(out), "--max-minutes", "0.00001", *common]) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    # a new learning rate: continued, optimiser state kept, at the new rate
    assert train.main(["vae", "--out", str(out), "--max-minutes", "0.00001", "--lr", "1e-4", *common]) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    ck = read_ckpt(out / "last.pt")
    assert ck["optimizer"]["state"][0]["step"] == steps + 1
    assert ck["optimizer"]["param_groups"][0]["lr"] == 1e-4
    assert json.loads((out / "DONE").read_text())["lr"] == 1e-4


def test_every_option_shows_its_default(capsys):
    with pytest.raises(SystemExit):
        train.main(["vae", "--help"])
    text = capsys.readouterr().out
    assert "--epochs EPOCHS       (default: 100)" in text and "(default: 0.0003)" in text
    with pytest.raises(SystemExit):
        train.main(["eval", "--model", "m", "--what", "elbo,bogus"])
    assert "elbo, iwae, optimal" in capsys.readouterr().err
