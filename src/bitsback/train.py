"""Training and evaluation of the VAEs (torch; never imported by the K = 0 coding path).

Subcommands (``bitsback train <cmd>`` or ``python -m bitsback.train <cmd>``):

vae      amortized ELBO training of encoder and decoder (early stopping on a held-out
         split of the training images; never on test).
encoder  encoder-only objectives on a frozen decoder: ``rha`` (reverse half-asleep, Eq. 21-22),
         ``rs`` (reverse sleep, alpha = 1), ``sleep`` (forward KL, Eq. 17), ``denoise``
         (Eq. 23) and ``elbo`` (alpha = 0, the standard objective, as a control).
eval     test -ELBO bits/dim, importance-weighted -log p(x) (k samples), and "optimal
         inference" bits/dim (per-image posterior optimisation, Eq. 13, bounded steps).

Bits/dim = nats / (D ln 2). Checkpoints (models/checkpoints.py): <out>/last.pt (resume)
and <out>/best.pt.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import datasets, export
from .cli import show_defaults
from .io.atomic import write_bytes
from .models import build_vae, decoder_logprob, load_torch, make_spec, sample
from .models.checkpoints import (PREPROCESS, build_modules, load_ckpt, load_images, plain_args, read_ckpt,
                                 save_ckpt)
from .models.likelihoods import LN2

# ----------------------------------------------------------------------------- data

def split_train_val(x: torch.Tensor, n_val: int, seed: int = 0):
    """Deterministic held-out split of the *training* set (for early stopping)."""
    if n_val <= 0:
        return x, x[:0]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    return x[perm[n_val:]], x[perm[:n_val]]


def default_mnist(name: str) -> str:
    root = os.environ.get("BITSBACK_MNIST")
    if not root:
        raise SystemExit("give the dataset path (or set BITSBACK_MNIST to the MNIST folder)")
    return str(Path(root) / name)


def default_threads() -> int:
    """torch threads for training (``--threads 0``, ``bitsback fit``): the cores this process may use less those already busy
    (the 1-minute load average), at least 1. A training step waits for its slowest thread,
    so a thread whose core is taken by another process stalls every step: with two other
    processes on this 2-core machine, 2 threads took 340-1886 ms per step and 1 thread
    202-225 ms (bench/fit_steps.py, docs/MODELS.md "Training speed")."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, cores - int(round(busy)))


# ----------------------------------------------------------------------------- objectives

def gaussian_logprob(z, mu, sigma):
    return (-0.5 * ((z - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)


def std_normal_logprob(z):
    return (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)


def kl_std_normal(mu, sigma):
    return 0.5 * (mu ** 2 + sigma ** 2 - 1.0 - 2.0 * torch.log(sigma)).sum(-1)


def neg_elbo(enc, dec, x, likelihood: str, levels: int, n_samples: int = 1, x_enc=None):
    """Per-image -ELBO in nats, (B,). Analytic KL; reparameterised reconstruction term.

    ``x_enc`` (optional) is what the encoder sees (the denoising objective feeds x + eps)
    while the likelihood is always evaluated on ``x``.
    """
    mu, sigma = enc(x if x_enc is None else x_enc)
    rec = 0.0
    for _ in range(n_samples):
        z = mu + sigma * torch.randn_like(mu)
        rec = rec + decoder_logprob(likelihood, dec(z), x, levels)
    return kl_std_normal(mu, sigma) - rec / n_samples


@torch.no_grad()
def model_samples(enc, dec, n, latent, likelihood, levels, device, source="prior", x_train=None):
    """x' ~ p(x|z'), z' ~ p(z) (``prior``) or z' ~ q(z|x), x ~ training data (``posterior``)."""
    if source == "prior":
        z = torch.randn(n, latent, device=device)
    else:
        idx = torch.randint(0, len(x_train), (n,))
        mu, sigma = enc(x_train[idx].to(device))
        z = mu + sigma * torch.randn_like(mu)
    return sample(likelihood, dec(z), levels)


def encoder_loss(objective, enc, dec, x, cfg, alpha=0.5, sigma_noise=0.2, source="prior", x_train=None):
    """Loss (mean nats per image) of an encoder-only objective on a frozen decoder."""
    lik, levels, latent = cfg["likelihood"], cfg["levels"], cfg["latent"]
    B = x.shape[0]
    if objective in ("rha", "rs", "elbo"):
        a = {"rha": alpha, "rs": 1.0, "elbo": 0.0}[objective]
        loss = 0.0
        if a < 1.0:
            loss = loss + (1.0 - a) * neg_elbo(enc, dec, x, lik, levels).mean()
        if a > 0.0:
            xs = model_samples(enc, dec, B, latent, lik, levels, x.device, source, x_train)
            loss = loss + a * neg_elbo(enc, dec, xs, lik, levels).mean()
        return loss
    if objective == "sleep":  # Eq. 17: max E_{p(x,z)} log q(z|x)
        with torch.no_grad():
            z = torch.randn(B, latent, device=x.device)
            xs = sample(lik, dec(z), levels)
        mu, s = enc(xs)
        return -gaussian_logprob(z, mu, s).mean()
    if objective == "denoise":  # Eq. 23; noise sigma in units of the full pixel range
        noise = torch.randn_like(x) * sigma_noise * (levels - 1)
        return (alpha * neg_elbo(enc, dec, x, lik, levels, x_enc=x + noise).mean()
                + (1 - alpha) * neg_elbo(enc, dec, x, lik, levels).mean())
    raise ValueError(f"unknown objective {objective!r}")


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def eval_neg_elbo(enc, dec, x, cfg, batch=1000, n_samples=1, device="cpu", seed=0):
    """Per-image -ELBO in nats (numpy, (N,)). Seeds a forked RNG: the training stream is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _eval_neg_elbo(enc, dec, x, cfg, batch, n_samples, device)


@torch.no_grad()
def _eval_neg_elbo(enc, dec, x, cfg, batch, n_samples, device):
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(device)
        out.append(neg_elbo(enc, dec, xb, cfg["likelihood"], cfg["levels"], n_samples).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def eval_iwae(enc, dec, x, cfg, k=1000, batch=100, chunk=250, device="cpu", seed=0, progress=True):
    """Importance-weighted estimate of -log p(x) per image (nats), k samples from q(z|x)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    lik, levels = cfg["likelihood"], cfg["levels"]
    out = []
    for i in tqdm(range(0, len(x), batch), desc="iwae", file=sys.stderr, disable=not progress, mininterval=10):
        xb = x[i:i + batch].to(device)
        mu, sigma = enc(xb)
        logw = []
        for j in range(0, k, chunk):
            c = min(chunk, k - j)
            z = mu.unsqueeze(0) + sigma.unsqueeze(0) * torch.randn(c, *mu.shape, device=device)
            zf = z.reshape(-1, mu.shape[1])
            xr = xb.unsqueeze(0).expand(c, *xb.shape).reshape(-1, xb.shape[1])
            lw = (decoder_logprob(lik, dec(zf), xr, levels) + std_normal_logprob(zf)
                  - gaussian_logprob(zf, mu.repeat(c, 1), sigma.repeat(c, 1)))
            logw.append(lw.view(c, -1))
        logw = torch.cat(logw, 0)
        out.append(-(torch.logsumexp(logw, 0) - math.log(k)).cpu())
    return torch.cat(out).numpy()


def eval_optimal(enc, dec, x, cfg, steps=300, lr=1e-2, batch=1000, n_eval_samples=10, device="cpu",
                 seed=0, progress=True):
    """Per-image posterior optimisation (Eq. 13): Adam on (mu, log sigma) of each test image,
    initialised from the encoder, ``steps`` steps on the single-sample -ELBO; returns the
    per-image -ELBO (nats) of the optimised posteriors (``n_eval_samples`` samples)."""
    torch.manual_seed(seed)
    lik, levels = cfg["likelihood"], cfg["levels"]
    flags = [p.requires_grad for p in dec.parameters()]
    for p in dec.parameters():
        p.requires_grad_(False)
    try:
        return _eval_optimal(enc, dec, x, lik, levels, steps, lr, batch, n_eval_samples, device, progress)
    finally:
        for p, f in zip(dec.parameters(), flags):
            p.requires_grad_(f)


def _eval_optimal(enc, dec, x, lik, levels, steps, lr, batch, n_eval_samples, device, progress):
    from tqdm import tqdm

    out = []
    for i in tqdm(range(0, len(x), batch), desc="optimal", file=sys.stderr, disable=not progress, mininterval=10):
        xb = x[i:i + batch].to(device)
        with torch.no_grad():
            mu0, s0 = enc(xb)
        mu = mu0.clone().requires_grad_(True)
        rho = torch.log(s0).clone().requires_grad_(True)
        opt = torch.optim.Adam([mu, rho], lr=lr)
        for _ in range(steps):
            s = torch.exp(rho)
            z = mu + s * torch.randn_like(mu)
            loss = (kl_std_normal(mu, s) - decoder_logprob(lik, dec(z), xb, levels)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            s = torch.exp(rho)
            rec = 0.0
            for _ in range(n_eval_samples):
                z = mu + s * torch.randn_like(mu)
                rec = rec + decoder_logprob(lik, dec(z), xb, levels)
            out.append((kl_std_normal(mu, s) - rec / n_eval_samples).cpu())
    return torch.cat(out).numpy()


def bpd(nats: np.ndarray, dim: int) -> float:
    return float(np.mean(nats) / (dim * LN2))


# ----------------------------------------------------------------------------- loops

def _write_text(path, text: str) -> None:
    """Write ``text`` to ``path``, replacing it, by the atomic-write rule: a run stopped
    mid-write leaves no half file (a DONE marker, an evaluation cache) for the next to read."""
    write_bytes(path, text.encode(), force=True)


def _log(out_dir: Path, rec: dict):
    line = json.dumps(rec)
    print(line, flush=True)
    with open(out_dir / "log.jsonl", "a") as f:
        f.write(line + "\n")


def _epochs(args, out, enc, dec, params, step_fn, val_fn, cfg, extra_state):
    """Shared epoch loop: Adam, time/epoch budget, val-based best.pt, last.pt for resume.

    A resumed run (--resume and <out>/last.pt) keeps the optimiser's state and continues at
    the learning rates of this command line. ``args._tick`` (optional, set by :func:`run_stage`
    for a driver such as ``bitsback fit``; not a command-line option) is called after every
    step."""
    tick = getattr(args, "_tick", None)
    from tqdm import tqdm

    opt = torch.optim.Adam(params, lr=args.lr)
    start_epoch, best, history = 0, float("inf"), []
    last = out / "last.pt"
    if args.resume and last.exists():
        ck = read_ckpt(last, args.device)
        enc.load_state_dict(ck["encoder"])
        dec.load_state_dict(ck["decoder"])
        lrs = [g["lr"] for g in opt.param_groups]
        opt.load_state_dict(ck["optimizer"])
        for g, lr in zip(opt.param_groups, lrs):  # a resumed run may continue at another --lr
            g["lr"] = lr
        start_epoch, best, history = ck["epoch"], ck["best_val_bpd"], ck.get("history", [])
        torch.set_rng_state(ck["rng"])
        print(f"resumed from {last} at epoch {start_epoch}", file=sys.stderr)
    t0 = time.time()
    x_train = extra_state["x_train"]
    n = len(x_train)
    bad = 0
    for epoch in range(start_epoch, args.epochs):
        enc.train(); dec.train()
        perm = torch.randperm(n)
        tot, cnt = 0.0, 0
        out_of_time = False
        te, batch_s = time.time(), []
        for i in tqdm(range(0, n, args.batch), desc=f"epoch {epoch + 1}", file=sys.stderr,
                      mininterval=30, disable=not args.progress):
            tb = time.perf_counter()
            xb = x_train[perm[i:i + args.batch]].to(args.device)
            loss = step_fn(xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(xb); cnt += len(xb)
            batch_s.append(time.perf_counter() - tb)
            if tick is not None:
                tick()
            # the budget is checked after every step, not only at epoch ends: a stage
            # overshoots its --max-minutes by at most one step and one validation pass
            if args.max_minutes and (time.time() - t0) / 60 > args.max_minutes:
                out_of_time = True
                break
        enc.eval(); dec.eval()
        val = val_fn()
        rec = {"epoch": epoch + 1, "train_loss_bpd": tot / max(cnt, 1) / (cfg["dim"] * LN2), "val_bpd": val,
               "minutes": round((time.time() - t0) / 60, 2), "epoch_seconds": round(time.time() - te, 1),
               "step_ms_median": round(1000 * float(np.median(batch_s)), 1) if batch_s else None,
               "images": cnt}
        if out_of_time:
            rec["partial"] = True
        history.append(rec)
        _log(out, rec)
        state = dict(config=cfg["model"], encoder=enc.state_dict(), decoder=dec.state_dict(),
                     meta=extra_state["meta"], epoch=epoch + 1, val_bpd=val, history=history)
        if val < best:
            best, bad = val, 0
            save_ckpt(out / "best.pt", **state, best_val_bpd=best)
        else:
            bad += 1
        save_ckpt(last, **state, optimizer=opt.state_dict(), best_val_bpd=best, rng=torch.get_rng_state())
        if args.patience and bad >= args.patience:
            print(f"early stop: no val improvement for {bad} epochs", file=sys.stderr)
            args._stop_reason = "early_stop"
            break
        if out_of_time or (args.max_minutes and (time.time() - t0) / 60 > args.max_minutes):
            print("time budget reached", file=sys.stderr)
            args._stop_reason = "time_budget"
            break
    return best


def cmd_vae(args):
    if _already_done(args):
        return
    torch.manual_seed(args.seed)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    init = read_ckpt(args.init) if args.init else None
    if init:  # continue a trained VAE (its architecture), with the output layer at --head-rank
        rank = init["config"].get("head_rank", 0) if args.head_rank is None else args.head_rank
        model_cfg = {**init["config"], "head_rank": rank}
        args.likelihood, args.levels = model_cfg["likelihood"], model_cfg["levels"]
        args.preprocess = init.get("meta", {}).get("preprocess", args.preprocess)
    else:
        model_cfg = dict(arch="mlp", image_shape=None, levels=args.levels, likelihood=args.likelihood,
                         latent=args.latent, hidden=[args.hidden] * args.depth, mixture=args.mixture or 1,
                         head_rank=args.head_rank or 0)
    x = load_images(args.data, args.preprocess)
    raw = datasets.load(args.data)
    model_cfg["image_shape"] = list(raw.shape[1:])
    x_train, x_val = split_train_val(x, args.n_val, seed=0)
    init_decoder = dict(init["decoder"]) if init else None
    if init and args.mixture and args.mixture != model_cfg.get("mixture", 1):
        model_cfg, init_decoder = fewer_components(init, args.mixture, x_train[:FEWER_COMPONENTS_IMAGES])
    if args.likelihood.endswith("_context") and not init:
        from .models.context import NEIGHBOURS

        over = ({"mixture": args.mixture or 1} if args.likelihood == "logistic_context"
                else {"features": args.features})
        if args.ctx_neighbours:
            over["ctx_offsets"] = NEIGHBOURS[:args.ctx_neighbours]
        if args.ctx_thresholds:
            over["thresholds"] = [int(t) for t in args.ctx_thresholds.split(",")]
        if args.lin_neighbours and args.likelihood == "logistic_context":
            over["lin_offsets"] = NEIGHBOURS[:args.lin_neighbours]
        model_cfg["context"] = make_spec(args.likelihood, model_cfg["image_shape"], **over)
    enc, dec = build_vae(model_cfg)
    if init:
        enc.load_state_dict(init["encoder"])
        load_decoder(dec, init_decoder)
    enc.to(args.device); dec.to(args.device)
    dim = x.shape[1]
    cfg = {"model": model_cfg, "dim": dim, **model_cfg}

    def step(xb):
        return neg_elbo(enc, dec, xb, args.likelihood, args.levels).mean()

    def val():
        if len(x_val) == 0:
            return float("nan")
        return bpd(eval_neg_elbo(enc, dec, x_val, cfg, device=args.device), dim)

    meta = {"stage": "vae", "argv": sys.argv, "args": plain_args(args), "preprocess": args.preprocess}
    # The context tables are sparse (one row per context) and start far from their optimum:
    # they may learn with a larger step (--context-lr-scale).
    ctx = [p for n, p in dec.named_parameters() if n.startswith("context.")]
    rest = [p for n, p in dec.named_parameters() if not n.startswith("context.")] + list(enc.parameters())
    params = [{"params": rest}] + ([{"params": ctx, "lr": args.context_lr_scale * args.lr}] if ctx else [])
    best = _epochs(args, out, enc, dec, params, step, val, cfg,
                   {"x_train": x_train, "meta": meta})
    _finish(out, best, args)


FEWER_COMPONENTS_IMAGES = 10000


@torch.no_grad()
def fewer_components(init: dict, k: int, x: torch.Tensor) -> tuple[dict, dict]:
    """(config, decoder state) of checkpoint ``init``, a logistic_context model, with its
    mixture cut to k components: in each context the k that carry the most weight
    (softmax weights summed over the pixels of images x in that context, z at the
    posterior mean, plus the weights at feature g = 0), kept in their order. Components
    are per-context table columns, so any choice per context is a valid smaller model:
    training goes on from there."""
    from .cdf.context import TABLES
    from .models.context import context_index

    cfg = init["config"]
    K = int(cfg.get("mixture", 1))
    if cfg["likelihood"] != "logistic_context" or not 1 <= k <= K:
        raise SystemExit(f"--mixture {k}: --init must be a logistic_context model with at least {k} components "
                         f"(it is {cfg['likelihood']} with {K})")
    enc, dec = build_modules(init)
    enc.eval(); dec.eval()
    spec = cfg["context"]
    weight = torch.softmax(dec.context.wbias.double(), -1)   # one pixel at g = 0: contexts x never visits
    for a in range(0, len(x), 500):
        xb = x[a : a + 500]
        feats, head = dec(enc(xb)[0])
        logits, _, _ = head.mixture(feats, xb)
        weight.index_add_(0, context_index(xb, spec).reshape(-1), torch.softmax(logits, -1).reshape(-1, K).double())
    keep = torch.sort(torch.argsort(weight, dim=1, descending=True, stable=True)[:, :k], 1).values
    rows = torch.arange(len(keep))[:, None]
    state = dict(init["decoder"])
    for name in TABLES["logistic_context"]:
        state[f"context.{name}"] = state[f"context.{name}"][rows, keep].clone()
    return {**cfg, "mixture": k, "context": {**spec, "mixture": k}}, state


def load_decoder(dec, state: dict) -> None:
    """Load a decoder state whose output layer may have another form: full (head.weight,
    head.bias) or rank r (head.0 then head.1). A change of form or rank goes through the
    full matrix W (and bias) and, for a rank-r head, its truncated SVD W ~ (U_r S_r) V_r^T,
    the closest rank-r matrix."""
    own = dec.state_dict()
    shapes = lambda sd: {k: tuple(v.shape) for k, v in sd.items() if k.startswith("head.")}
    if shapes(state) != shapes(own):
        if "head.weight" in state:
            W, b = state.pop("head.weight"), state.pop("head.bias")
        else:
            A, a, B = state.pop("head.0.weight"), state.pop("head.0.bias"), state.pop("head.1.weight")
            W, b = B @ A, state.pop("head.1.bias") + B @ a
        if "head.weight" in own:
            state["head.weight"], state["head.bias"] = W, b
        else:
            _factorised(state, "head", W, b, own["head.0.weight"].shape[0])
    dec.load_state_dict(state)


def _factorised(state: dict, prefix: str, W, b, r: int) -> None:
    """state's ``prefix.0`` / ``prefix.1`` layers: x -> W x + b as a rank-r product, the
    closest rank-r matrix to W by truncated SVD, W ~ (U_r S_r) V_r^T."""
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    state[f"{prefix}.0.weight"] = Vh[:r].contiguous()
    state[f"{prefix}.0.bias"] = torch.zeros(r)
    state[f"{prefix}.1.weight"] = (U[:, :r] * S[:r]).contiguous()
    state[f"{prefix}.1.bias"] = b


# The options of a stage that decide when it stops and how it steps: DONE records them, and
# a --resume with other values continues the finished run (see _already_done).
STOP_OPTIONS = ("epochs", "lr", "max_minutes", "patience")


def _finish(out: Path, best: float, args=None):
    reason = getattr(args, "_stop_reason", "epochs")
    rec = {"best_val_bpd": best, "reason": reason, **{k: getattr(args, k, None) for k in STOP_OPTIONS}}
    _write_text(out / "DONE", json.dumps(rec) + "\n")
    print(json.dumps({"best_val_bpd": best, "checkpoint": str(out / "best.pt")}))


def _already_done(args) -> bool:
    """True when ``--resume`` names a finished stage and this command would not change it.

    Rerunning the very command of a finished stage does nothing (so a recipe's finished
    stages are skipped). The same stage with other stopping or stepping options continues
    the run from last.pt, optimiser included: more epochs, a new --max-minutes after a
    time-budget stop, a lower --lr after an early stop."""
    done = Path(args.out) / "DONE"
    if not (args.resume and done.exists()):
        return False
    info = json.loads(done.read_text())
    recorded = {k: info[k] for k in STOP_OPTIONS if k in info}
    if "lr" not in info:     # a DONE written before the options were recorded: epochs only
        if info.get("reason") == "epochs" and (info.get("epochs") or 0) < args.epochs:
            return False
    elif any(getattr(args, k) != v for k, v in recorded.items()):
        print(f"{args.out}: continuing the finished stage with new options "
              f"({', '.join(f'{k} {recorded[k]} -> {getattr(args, k)}' for k in recorded if getattr(args, k) != recorded[k])})",
              file=sys.stderr)
        return False
    print(f"{args.out}: stage already finished ({done.read_text().strip()}); skipping", file=sys.stderr)
    return True


def resized_encoder(enc, model_cfg: dict, hidden=None, rank=None):
    """(config, encoder) with other hidden sizes and / or input-layer rank. Layers whose
    shapes are kept start from enc's weights; a rank-r input layer starts from the
    truncated SVD of enc's input matrix (W ~ (U_r S_r) V_r^T, the closest rank-r matrix);
    other layers start afresh."""
    cfg = dict(model_cfg)
    if hidden is not None:
        cfg["enc_hidden"] = [int(h) for h in hidden.split(",")]
    if rank is not None:
        cfg["enc_rank"] = int(rank)
    new = build_vae(cfg)[0]
    old, state = enc.state_dict(), new.state_dict()
    for k, v in old.items():
        if k in state and state[k].shape == v.shape:
            state[k] = v.clone()
    W = old.get("body.0.weight")        # enc's input layer, when it is one full matrix
    if cfg.get("enc_rank") and W is not None and W.shape[0] == state["body.0.1.weight"].shape[0]:
        _factorised(state, "body.0", W, old["body.0.bias"].clone(), cfg["enc_rank"])
    new.load_state_dict(state)
    return cfg, new


def cmd_encoder(args):
    if _already_done(args):
        return
    torch.manual_seed(args.seed)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    enc, dec, ck = load_ckpt(args.init, args.device)
    model_cfg = ck["config"]
    if args.enc_hidden is not None or args.enc_rank is not None:
        model_cfg, enc = resized_encoder(enc, model_cfg, args.enc_hidden, args.enc_rank)
        enc.to(args.device)
    pre = ck["meta"].get("preprocess", "none")
    x = load_images(args.data, pre)
    x_train, x_val = split_train_val(x, args.n_val, seed=0)
    dim = x.shape[1]
    cfg = {"model": model_cfg, "dim": dim, **model_cfg}
    for p in dec.parameters():
        p.requires_grad_(False)
    dec.eval()

    def step(xb):
        return encoder_loss(args.objective, enc, dec, xb, cfg, args.alpha, args.sigma, args.samples, x_train)

    def val():
        return bpd(eval_neg_elbo(enc, dec, x_val, cfg, device=args.device), dim)

    meta = {**ck["meta"], "stage": "encoder", "objective": args.objective, "alpha": args.alpha,
            "init": str(args.init), "argv2": sys.argv, "encoder_args": plain_args(args), "preprocess": pre}
    best = _epochs(args, out, enc, dec, list(enc.parameters()), step, val, cfg,
                   {"x_train": x_train, "meta": meta})
    _finish(out, best, args)


def evaluate(enc, dec, model_cfg, x, iwae_k=1000, optimal_steps=300, n_samples=1, device="cpu",
             what=("elbo", "iwae", "optimal"), seed=0):
    """Dict of bits/dim metrics on images ``x`` (float (N, D))."""
    dim = x.shape[1]
    cfg = {"model": model_cfg, "dim": dim, **model_cfg}
    enc.eval(); dec.eval()
    res = {"n_images": int(len(x))}
    if "elbo" in what:
        res["neg_elbo_bpd"] = bpd(eval_neg_elbo(enc, dec, x, cfg, n_samples=n_samples, device=device, seed=seed), dim)
    if "iwae" in what and iwae_k:
        res["iwae_bpd"] = bpd(eval_iwae(enc, dec, x, cfg, k=iwae_k, device=device, seed=seed), dim)
        res["iwae_k"] = iwae_k
    if "optimal" in what and optimal_steps:
        res["optimal_bpd"] = bpd(eval_optimal(enc, dec, x, cfg, steps=optimal_steps, device=device, seed=seed), dim)
        res["optimal_steps"] = optimal_steps
    return res


def cmd_eval(args):
    torch.manual_seed(args.seed)
    if Path(args.model).is_dir():
        enc, dec, man = load_torch(args.model)
        model_cfg = man["config"]
        pre = man["preprocess"]
    else:
        enc, dec, ck = load_ckpt(args.model, args.device)
        model_cfg = ck["config"]
        pre = ck["meta"].get("preprocess", "none")
    enc.to(args.device); dec.to(args.device)
    x = load_images(args.data, pre, args.limit)
    what = args.what
    res = evaluate(enc, dec, model_cfg, x, args.iwae_k, args.optimal_steps, args.samples, args.device, what, args.seed)
    res["model"] = str(args.model)
    res["data"] = str(args.data)
    print(json.dumps(res))
    if args.json_out:
        _write_text(args.json_out, json.dumps(res, indent=2))


# ----------------------------------------------------------------------------- recipes
# The bundled models, one command each: `bitsback train recipe <name>` runs every stage
# (skipping finished ones: each stage writes <dir>/DONE), exports the shipped model into
# src/bitsback/zoo/<name>/ and records the test metrics in its manifest.

RECIPES = {
    # The defaults: the paper's MLP VAE whose pixels also see their causal neighbours
    # (models/context.py). Evaluated by -ELBO only (IWAE and optimal inference would need
    # k * 784 sequential pixel steps per image for sampling-free bounds; not run).
    "mnist-binary": {
        "prefix": "binctx4r64e256",
        "vae_dir": "binctx4-vae",
        "vae": ["--likelihood", "bernoulli_context", "--features", "4", "--preprocess", "binarize", "--levels", "2",
                "--latent", "32", "--lr", "1e-3", "--epochs", "30", "--patience", "0"],
        "finetune": ["--lr", "3e-4", "--epochs", "34"],
        # then the decoder's 500 -> 4 x 784 output layer at rank 64 (truncated SVD of the
        # trained one, fine-tuned): 1.7x faster coding at batch 11, same held-out -ELBO
        "derived": [("binctx4r64-vae", ["--head-rank", "64", "--lr", "3e-4", "--epochs", "10", "--patience", "0"])],
        # the shipped encoder is smaller than the VAE's (784 -> 64 -> 256 -> 256, trained
        # afresh on the frozen decoder): a decode runs it at every step, and with 5 active
        # latent dims the posterior carries ~9 bits per image
        "encoder": ["--objective", "rha", "--alpha", "0.5", "--samples", "prior", "--lr", "1e-3",
                    "--epochs", "30", "--patience", "0", "--enc-hidden", "256,256", "--enc-rank", "64"],
        "seeds": [0],
        "weights": "float16",
        "evals": "elbo",
    },
    "mnist-grey": {
        "prefix": "greyctxk2e256",
        "vae_dir": "greyctx-vae2",
        "vae": ["--likelihood", "logistic_context", "--mixture", "3", "--context-lr-scale", "1", "--preprocess", "none",
                "--levels", "256", "--latent", "32", "--lr", "1e-3", "--epochs", "17", "--patience", "0"],
        "finetune": ["--lr", "3e-4", "--epochs", "20"],
        # the 500 -> 3 x 784 output layer at rank 64, as for mnist-binary
        "derived": [("greyctxr64-vae", ["--head-rank", "64", "--context-lr-scale", "1", "--lr", "3e-4", "--epochs", "6",
                                        "--patience", "0"]),
                    # 2 mixture components instead of 3 (each context keeps its 2 heaviest): the
                    # context kernel is its decoder's main cost, and ~1/4 faster with 2
                    ("greyctxk2-vae", ["--mixture", "2", "--context-lr-scale", "1", "--lr", "3e-4", "--epochs", "22",
                                       "--patience", "0"])],
        # a smaller encoder, as for mnist-binary
        "encoder": ["--objective", "rha", "--alpha", "0.5", "--samples", "prior", "--lr", "1e-3",
                    "--epochs", "16", "--patience", "0", "--enc-hidden", "256,256", "--enc-rank", "64"],
        "seeds": [0],
        "weights": "float16",
        "evals": "elbo",
    },
    # The paper-architecture models (pixels independent given z): the fast choice.
    "mnist-binary-mlp": {
        "prefix": "bin",
        "vae_dir": "bin-vae",
        "vae": ["--likelihood", "bernoulli", "--preprocess", "binarize", "--levels", "2", "--latent", "32",
                "--lr", "1e-3", "--epochs", "54", "--patience", "10", "--max-minutes", "30"],
        "encoder": ["--objective", "rha", "--alpha", "0.5", "--samples", "prior", "--lr", "3e-4",
                    "--epochs", "8", "--patience", "0"],
        "seeds": [0, 1, 2],
        "weights": "float32",
    },
    "mnist-grey-mlp": {
        "prefix": "grey",
        "vae_dir": "grey-mix2",
        "vae": ["--likelihood", "logistic_mixture", "--mixture", "2", "--preprocess", "none", "--levels", "256",
                "--latent", "32", "--lr", "1e-3", "--epochs", "24", "--patience", "10", "--max-minutes", "40"],
        "encoder": ["--objective", "rha", "--alpha", "0.5", "--samples", "prior", "--lr", "3e-4",
                    "--epochs", "3", "--patience", "0"],
        "seeds": [0],
        "weights": "float16",
    },
}


def _cached_eval(path: Path, fn):
    if path.exists():
        return json.loads(path.read_text())
    res = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, json.dumps(res, indent=2))
    return res


def run_stage(cmd: str, flags: list[str], tick=None) -> dict:
    """Run the training stage ``bitsback train <cmd> <flags>`` in this process and return
    what its DONE file records ({} when it wrote none). A recipe's stages, and those of
    ``bitsback fit``, run from the very flags recorded as their commands, so that the
    record and the run cannot differ. ``tick`` is called after every training step."""
    args = build_parser().parse_args([cmd, *flags])
    args._tick = tick
    args.func(args)
    done = Path(args.out) / "DONE"
    return json.loads(done.read_text()) if done.exists() else {}


def cmd_recipe(args):
    r = RECIPES[args.name]
    W = Path(args.work)
    pre, vae_dir = r["prefix"], W / r["vae_dir"]
    torch.set_num_threads(args.threads or 1)
    thr = ["--threads", str(args.threads or 1)]     # recorded in each stage's checkpoint options
    train_data = ["--data", str(args.data)]
    run_stage("vae", ["--out", str(vae_dir), *r["vae"], *train_data, *thr, "--resume"])
    if r.get("finetune"):  # more epochs of the same run at a lower rate (later flags win)
        run_stage("vae", ["--out", str(vae_dir), *r["vae"], *r["finetune"], *train_data, *thr, "--resume"])
    derived = []
    for name, flags in r.get("derived", []):  # new runs, each from the last: output layer factorised, ...
        derived.append(["--init", str(vae_dir / "best.pt"), "--out", str(W / name), *flags])
        run_stage("vae", [*derived[-1], *train_data, *thr, "--resume"])
        vae_dir = W / name
    for seed in r["seeds"]:
        run_stage("encoder", ["--init", str(vae_dir / "best.pt"), "--out", str(W / f"{pre}-rha-s{seed}"),
                               *r["encoder"], "--seed", str(seed), *train_data, *thr, "--resume"])
    if args.stop_after_training:
        return
    zoo_out = Path(args.zoo) / args.name
    cmdline = ("bitsback train recipe " + args.name + " --work " + str(args.work) + " --data $BITSBACK_MNIST/"
               + Path(args.data).name)
    stages = [f"bitsback train vae --out {W / r['vae_dir']} {' '.join(r['vae'])} --resume"]
    if r.get("finetune"):
        stages.append(f"bitsback train vae --out {W / r['vae_dir']} {' '.join(r['vae'] + r['finetune'])} --resume")
    stages += ["bitsback train vae " + " ".join(d) + " --resume" for d in derived]
    stages += [
        f"bitsback train encoder --init {vae_dir}/best.pt --out {W}/{pre}-rha-s{s} {' '.join(r['encoder'])} --seed {s} --resume"
        for s in r["seeds"]]
    exports = {"baseline": W / f"{pre}-baseline-export"}
    for seed in r["seeds"]:
        exports[f"rha-s{seed}"] = zoo_out if seed == r["seeds"][0] else W / f"{pre}-rha-s{seed}-export"
    for tag, out in exports.items():
        ck = vae_dir / "best.pt" if tag == "baseline" else W / f"{pre}-{tag}" / "best.pt"
        if out == zoo_out or not (out / "manifest.json").exists():
            model_name = args.name if out == zoo_out else f"{args.name}-{tag}"
            commands = [cmdline, *stages]
            command = (f"bitsback export --ckpt {ck} --out {out} --name {model_name} --weights {r['weights']} "
                       f"--inactive-data {args.data}" + "".join(f" --recipe {c}" for c in commands))
            man = export.export_checkpoint(ck, out, name=model_name, weights=r["weights"], inactive_data=args.data,
                                           commands=commands, command=command)
            print(json.dumps({"out": str(out), "files": man["files"]}, indent=2))

    metrics = {}
    for n, tag_all in ((1000, "test_first1000"), (0, "test_all10000")):
        res = {}
        for tag, out in exports.items():
            enc, dec, man = load_torch(out)
            x = load_images(args.test_data, man["preprocess"], n or None)
            what = ("elbo",)
            k, steps = 0, 0
            full = r.get("evals") != "elbo"
            if full and tag == "baseline":  # optimal inference starts from the baseline encoder (paper protocol)
                what = ("elbo", "optimal")
                steps = args.optimal_steps if n else args.full_optimal_steps
            if full and tag == f"rha-s{r['seeds'][0]}":  # IWAE with the shipped encoder as proposal
                what = ("elbo", "iwae")
                k = args.iwae_k if n else args.full_iwae_k
            files = man.get("files", {})
            sig = "".join(files.get(f, {}).get("sha256", "")[:8] for f in sorted(files))  # cache per exact model
            cache = W / "eval" / f"{args.name}-{tag}-{tag_all}-k{k}-s{steps}-{sig}.json"
            res[tag] = _cached_eval(cache, lambda: evaluate(enc, dec, man["config"], x, iwae_k=k, optimal_steps=steps,
                                                              what=what, n_samples=args.samples))
            print(tag_all, tag, res[tag], file=sys.stderr, flush=True)
        rha = [res[f"rha-s{s}"]["neg_elbo_bpd"] for s in r["seeds"]]
        s0 = res[f"rha-s{r['seeds'][0]}"]
        metrics[tag_all] = {
            "n_images": s0["n_images"],
            "baseline_neg_elbo_bpd": res["baseline"]["neg_elbo_bpd"],
            "rha_neg_elbo_bpd": s0["neg_elbo_bpd"],
            "rha_neg_elbo_bpd_seeds": rha,
            "rha_neg_elbo_bpd_mean": float(np.mean(rha)),
            "rha_neg_elbo_bpd_std": float(np.std(rha)),
            "optimal_inference_bpd": res["baseline"].get("optimal_bpd"),
            "optimal_inference_steps": res["baseline"].get("optimal_steps"),
            "iwae_bpd": s0.get("iwae_bpd"),
            "iwae_k": s0.get("iwae_k"),
            "elbo_samples_per_image": args.samples,
        }
        export.update_metrics(zoo_out, tag_all, metrics[tag_all])
        if not n:  # the headline number the codec reads: shipped encoder, all test images
            export.update_metrics(zoo_out, "test_elbo_bpd", s0["neg_elbo_bpd"])
    print(json.dumps(metrics, indent=2))


# ----------------------------------------------------------------------------- CLI

def _common(p):
    p.add_argument("--data", default=None, help="training images (IDX[.gz], npy, ...); default $BITSBACK_MNIST/train-images-idx3-ubyte.gz")
    p.add_argument("--out", required=True, help="output folder (checkpoints, log.jsonl)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-val", type=int, default=5000, help="held-out training images for early stopping")
    p.add_argument("--patience", type=int, default=0, help="stop after this many epochs without val improvement (0: never)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop after this wall time (0: no limit)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt if present")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the cores not already busy)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the descriptions' line breaks (options' defaults: :func:`show_defaults`)."""


EVAL_WHAT = ("elbo", "iwae", "optimal")


def _what(text: str) -> tuple:
    parts = tuple(p for p in text.split(",") if p)
    bad = [p for p in parts if p not in EVAL_WHAT]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"--what takes a comma-separated list of {', '.join(EVAL_WHAT)}; got {text!r}")
    return parts


def build_parser():
    ap = argparse.ArgumentParser(prog="bitsback train", description=__doc__, formatter_class=HelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("vae", help="ELBO training of encoder + decoder")
    _common(p)
    p.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "logistic", "logistic_mixture",
                                                                      "bernoulli_context", "logistic_context"])
    p.add_argument("--preprocess", default="binarize", choices=sorted(PREPROCESS))
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--mixture", type=int, default=None,
                   help="mixture components (default 1); with --init of a logistic_context model, fewer "
                        "than it has: keep each context's heaviest (train.fewer_components)")
    p.add_argument("--features", type=int, default=4, help="bernoulli_context: decoder features per pixel")
    p.add_argument("--ctx-neighbours", type=int, default=0,
                   help="context likelihoods: the first N of models.context.NEIGHBOURS form the context (0: default)")
    p.add_argument("--lin-neighbours", type=int, default=0,
                   help="logistic_context: the first N of NEIGHBOURS enter the means linearly (0: default)")
    p.add_argument("--ctx-thresholds", default=None,
                   help="context likelihoods: comma-separated bucket thresholds of a neighbour's value "
                        "(default: models.context.DEFAULT_SPECS'; bitsback fit chooses them from the data)")
    p.add_argument("--context-lr-scale", type=float, default=10.0,
                   help="context tables learn at this multiple of --lr")
    p.add_argument("--head-rank", type=int, default=None,
                   help="decoder output layer as a rank-R product (0: full; default: full, or --init's); "
                        "from --init by truncated SVD")
    p.add_argument("--init", default=None,
                   help="start from this trained VAE checkpoint (its architecture flags win)")
    p.set_defaults(func=cmd_vae)
    p = sub.add_parser("encoder", help="encoder-only objective on a frozen decoder")
    _common(p)
    p.add_argument("--init", required=True, help="checkpoint (best.pt) of the trained VAE")
    p.add_argument("--objective", default="rha", choices=["rha", "rs", "sleep", "denoise", "elbo"])
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--sigma", type=float, default=0.2, help="denoising noise std (fraction of pixel range)")
    p.add_argument("--samples", default="prior", choices=["prior", "posterior"],
                   help="model samples from z ~ p(z) or z ~ q(z|x_train) (paper's CIFAR variant)")
    p.add_argument("--enc-hidden", default=None, help="new encoder hidden sizes, e.g. 256,256 (default: --init's)")
    p.add_argument("--enc-rank", type=int, default=None,
                   help="new encoder's input layer at this rank (from --init's by truncated SVD when its shape allows)")
    p.set_defaults(func=cmd_encoder)
    p = sub.add_parser("eval", help="test metrics of a checkpoint or exported model folder")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=None, help="default $BITSBACK_MNIST/t10k-images-idx3-ubyte.gz")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    p.add_argument("--what", default="elbo,iwae,optimal", type=_what,
                   help=f"comma-separated metrics, any of: {', '.join(EVAL_WHAT)}")
    p.add_argument("--iwae-k", type=int, default=1000)
    p.add_argument("--optimal-steps", type=int, default=300)
    p.add_argument("--samples", type=int, default=1, help="z samples per image for -ELBO")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json-out", default=None)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("recipe", help="train, export and evaluate a bundled model in one command")
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--work", default="runs", help="folder for checkpoints and evaluation caches")
    p.add_argument("--zoo", default=str(Path(__file__).resolve().parent / "zoo"))
    p.add_argument("--data", default=None, help="training images; default $BITSBACK_MNIST/train-images-idx3-ubyte.gz")
    p.add_argument("--test-data", default=None, help="default $BITSBACK_MNIST/t10k-images-idx3-ubyte.gz")
    p.add_argument("--iwae-k", type=int, default=1000)
    p.add_argument("--full-iwae-k", type=int, default=1000, help="IWAE k on all 10 000 test images")
    p.add_argument("--optimal-steps", type=int, default=300)
    p.add_argument("--full-optimal-steps", type=int, default=300)
    p.add_argument("--samples", type=int, default=1, help="z samples per image for -ELBO")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--stop-after-training", action="store_true")
    p.set_defaults(func=cmd_recipe)
    return show_defaults(ap)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads or default_threads())
    if args.data is None:
        args.data = default_mnist("t10k-images-idx3-ubyte.gz" if args.cmd == "eval" else "train-images-idx3-ubyte.gz")
    if getattr(args, "test_data", "unset") is None:
        args.test_data = default_mnist("t10k-images-idx3-ubyte.gz")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
