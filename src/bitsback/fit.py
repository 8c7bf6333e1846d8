"""``bitsback fit IMAGES... -o MODEL_DIR [--minutes M]``: a model for your own images.

One command from images to a model folder that ``bitsback compress --model MODEL_DIR``
uses, within a wall-clock budget (default 60 minutes):

1. **Read and split.** Every input is read with :func:`bitsback.datasets.load` and
   concatenated (same image shape). A fixed random split (seed 0) keeps ``held-out``
   images out of training for the figures reported at the end, and ``val`` images for
   early stopping and for choosing between candidates; the rest train.
2. **Choose the model from the images.** Values 0/1: ``bernoulli_context``; 0..255:
   ``logistic_context`` (2 mixture components). Colour images are refused until an RGB
   likelihood exists. The context (:mod:`bitsback.models.context`) is fitted to the data
   by :func:`choose_context`: the neighbours' bucket thresholds and how many neighbours
   form the context are those whose count model of the pixels codes held-out training
   pixels in the fewest bits.
3. **Train** (``bitsback train`` stages, run in this process, resumable): the VAE at
   lr 1e-3, the same run continued at lr 3e-4 (optimiser kept), then a smaller encoder
   (256-256, rank-64 input layer) with the reverse half-asleep objective on the frozen
   decoder. The smaller encoder is shipped when its validation rate is within
   ``RHA_TOLERANCE`` of the VAE's own encoder (it codes faster); otherwise the VAE's.
   Each stage owns a fixed share of the budget (``STAGE_SHARES``); time a stage leaves
   unused (early stopping) passes to the next. Budgets leaving less than
   ``ENCODER_MIN_MINUTES`` of training skip the encoder stage and give its share to the VAE.
4. **Export** the chosen checkpoint in the portable arithmetic (files decode bit-exactly on
   every machine), then **report**: the held-out images are compressed to a real file
   with the exported model, decoded and compared, and their bits/dim are printed beside
   PNG, WebP and JPEG-XL on the same images. The report is stored in the manifest's
   metrics ("heldout") and in ``MODEL_DIR/fit.json``.

The budget covers everything (reading, training, export, report); the training stages
stop within one step of their deadline, and a reserve is kept for export and report.
Work lives in ``MODEL_DIR/training/`` (checkpoints, logs, the split's image copies, the
state). Run the same command again after an interruption and it continues where it
stopped; the copies of the images are deleted when the fit has finished.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import datasets
from .cli import show_defaults
from .errors import BitsbackError, InputError
from .io.atomic import write_bytes

DEFAULT_MINUTES = 60.0

# Shares of the training time (the budget less reading and the export/report reserve):
# the VAE at the higher rate, the same run at the lower rate, the smaller encoder.
STAGE_SHARES = (("vae", 0.55), ("vae-finetune", 0.25), ("encoder", 0.20))
LR_HIGH, LR_LOW, LR_ENCODER = 1e-3, 3e-4, 1e-3

# The encoder stage runs only when training gets at least this many minutes. In the
# 60-minute fits it bought no rate (MNIST grey validation 1.1193 against the VAE encoder's
# 1.1189, binary 0.1176 against 0.1173); it buys a smaller, faster encoder, and on a short
# budget its time is worth more to the VAE.
ENCODER_MIN_MINUTES = 20.0

# The RHA encoder ships when its validation bits/dim are at most this fraction above the
# VAE encoder's: it is ~3x smaller, and the coder runs the encoder at every image.
RHA_TOLERANCE = 0.001

# Held-out images (for the report) and validation images (early stopping): 10 % each of
# the input, within these bounds.
HELDOUT = (50, 2000)
VAL = (50, 5000)
MIN_IMAGES = 500
MIN_SIDE, MAX_PIXELS = 8, 128 * 128

# Early stopping: a stage stops after this many validation passes without improvement.
PATIENCE = 8

# Candidates of the context fit (choose_context). Grey: thresholds are picked greedily
# from GREY_THRESHOLDS (3 of them: 4 buckets per neighbour), then the number of neighbours
# from 3..MAX_GREY_NEIGHBOURS; binary: 6..12 neighbours of 2 buckets.
GREY_THRESHOLDS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 208, 224, 240, 248, 252, 254, 255)
N_THRESHOLDS = 3
MAX_GREY_NEIGHBOURS = 7
BINARY_NEIGHBOURS = range(6, 13)
GREY_BINS = 32            # the count model predicts the pixel's value // 8
FIT_PIXELS = 3_000_000    # pixels the context fit counts (then as many to score)
# A bigger context must code held-out pixels in this many fewer bits to be chosen.
CONTEXT_MARGIN = 0.002


# ----------------------------------------------------------------------------- data

def read_images(paths) -> np.ndarray:
    """Every input concatenated: uint8 (N, H, W). InputError for colour images, mixed
    shapes, too few images, or sizes the MLP models do not take."""
    parts = []
    for p in paths:
        x = datasets.load(p)
        if x.ndim == 4 and 1 in (x.shape[1], x.shape[3]):     # one channel, first or last
            x = x.reshape(x.shape[0], *(n for n in x.shape[1:] if n != 1)) if x.shape[1:].count(1) == 1 else x
        if x.ndim != 3:
            raise InputError(f"{p}: images of shape {x.shape[1:]} are colour (or multi-channel); bitsback fit "
                             "takes binary and greyscale images (convert them to greyscale first)")
        if parts and x.shape[1:] != parts[0].shape[1:]:
            raise InputError(f"{p}: images are {x.shape[1]}x{x.shape[2]}, the earlier inputs "
                             f"{parts[0].shape[1]}x{parts[0].shape[2]}: one model codes one image size")
        parts.append(x)
    x = np.concatenate(parts) if len(parts) > 1 else parts[0]
    H, W = x.shape[1:]
    if min(H, W) < MIN_SIDE or H * W > MAX_PIXELS:
        raise InputError(f"images are {H}x{W}; bitsback fit takes sides of at least {MIN_SIDE} pixels and at most "
                         f"{MAX_PIXELS} pixels per image")
    if len(x) < MIN_IMAGES:
        raise InputError(f"{len(x)} images; bitsback fit needs at least {MIN_IMAGES} (it holds some out)")
    return np.ascontiguousarray(x, np.uint8)


def _share(n: int, bounds) -> int:
    return int(min(max(round(0.1 * n), bounds[0]), bounds[1]))


def split(n: int, seed: int = 0):
    """(train, val, heldout) index arrays of a fixed random split of n images."""
    perm = np.random.default_rng(seed).permutation(n)
    nh, nv = _share(n, HELDOUT), _share(n, VAL)
    return np.sort(perm[nh + nv:]), np.sort(perm[nh:nh + nv]), np.sort(perm[:nh])


def data_digest(x: np.ndarray) -> str:
    h = hashlib.sha256(str(x.shape).encode())
    h.update(x.reshape(-1))
    return h.hexdigest()


# ----------------------------------------------------------------------------- context fit

def neighbour_values(x: np.ndarray, offsets) -> np.ndarray:
    """(J, N*H*W) uint8: the value of each causal neighbour of every pixel (0 outside)."""
    N, H, W = x.shape
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    p = np.zeros((N, H + pad, W + 2 * pad), np.uint8)
    p[:, pad:, pad:pad + W] = x
    return np.stack([p[:, pad + dy:pad + dy + H, pad + dx:pad + dx + W].reshape(-1) for dy, dx in offsets])


def _cross_entropy(ctx_fit, y_fit, ctx_score, y_score, n_ctx: int, n_sym: int) -> float:
    """Bits per pixel of y_score under the count model p(y | ctx) of the fit pixels
    (add-1/2 smoothing): the held-out code length of the context, as a number to compare."""
    counts = np.bincount(ctx_fit * n_sym + y_fit, minlength=n_ctx * n_sym).reshape(n_ctx, n_sym) + 0.5
    logp = np.log2(counts) - np.log2(counts.sum(1, keepdims=True))
    return float(-logp[ctx_score, y_score].mean())


def _contexts(nb: np.ndarray, thresholds, J: int) -> np.ndarray:
    Q = len(thresholds) + 1
    bucket = np.searchsorted(np.asarray(thresholds), np.arange(256), side="right").astype(np.int64)
    ctx = np.zeros(nb.shape[1], np.int64)
    for j in range(J):
        ctx += bucket[nb[j]] * Q ** j
    return ctx


def choose_context(x: np.ndarray, binary: bool, seed: int = 0) -> dict:
    """The context of a model for images ``x`` (training images, uint8 (N, H, W)), fitted
    to them: {"thresholds", "neighbours", "scores"}. ``neighbours`` is how many of
    models.context.NEIGHBOURS (nearest first) form the context.

    Each candidate is scored by the bits per pixel that a table of counts p(pixel |
    context) from half of the images gives the pixels of the other half: it favours
    thresholds that separate what the neighbours say about a pixel, and stops adding
    neighbours when their contexts become too rare to learn from these images. The VAE's
    context tables are smoother than counts (a few parameters per context), so this
    errs towards smaller contexts.
    """
    from .models.context import NEIGHBOURS

    rng = np.random.default_rng(seed)
    per_image = x.shape[1] * x.shape[2]
    n = min(len(x), max(2, 2 * FIT_PIXELS // per_image))
    pick = rng.permutation(len(x))[:n]
    half = n // 2
    nb = neighbour_values(x[pick], NEIGHBOURS)
    y = x[pick].reshape(-1).astype(np.int64)
    cut = half * per_image
    if binary:
        ys = y
        n_sym, thresholds = 2, [1]
        candidates = list(BINARY_NEIGHBOURS)
    else:
        ys = y * GREY_BINS // 256
        n_sym = GREY_BINS
        thresholds = []
        for _ in range(N_THRESHOLDS):    # greedy: the threshold that helps most, given those chosen
            scores = {}
            for t in GREY_THRESHOLDS:
                if t in thresholds:
                    continue
                th = sorted(thresholds + [t])
                c = _contexts(nb, th, 3)
                scores[t] = _cross_entropy(c[:cut], ys[:cut], c[cut:], ys[cut:], (len(th) + 1) ** 3, n_sym)
            thresholds = sorted(thresholds + [min(scores, key=scores.get)])
        candidates = list(range(3, MAX_GREY_NEIGHBOURS + 1))
    Q = len(thresholds) + 1
    scores = {}
    for J in candidates:
        c = _contexts(nb, thresholds, J)
        scores[J] = _cross_entropy(c[:cut], ys[:cut], c[cut:], ys[cut:], Q ** J, n_sym)
    best = candidates[0]
    for J in candidates[1:]:   # a bigger context must pay for itself
        if scores[J] < scores[best] - CONTEXT_MARGIN:
            best = J
    return {"thresholds": [int(t) for t in thresholds], "neighbours": int(best),
            "scores_bits_per_pixel": {str(k): round(v, 5) for k, v in scores.items()},
            "images_counted": int(n)}


# ----------------------------------------------------------------------------- plan

# Grey images whose best context leaves more than this many bits per pixel (the count
# model's code length of value // 8; MNIST 0.69, grey Tiny ImageNet 3.62) are "hard": they
# get 3 mixture components and 12 linear neighbours instead of 2 and 6. After 300 steps on
# 10 000 grey Tiny ImageNet images, validation -ELBO 5.876 against 5.975 (12 linear
# neighbours alone: 5.959); easy images keep the faster decoder.
HARD_BITS = 2.0


def is_hard(context: dict) -> bool:
    return min(context["scores_bits_per_pixel"].values()) > HARD_BITS


def model_flags(binary: bool, shape, context: dict) -> list[str]:
    """``bitsback train vae`` flags of the model fit trains for these images."""
    H, W = shape
    flags = ["--latent", "32", "--hidden", "500", "--depth", "2", "--preprocess", "none",
             "--ctx-neighbours", str(context["neighbours"]), "--ctx-thresholds", ",".join(map(str, context["thresholds"]))]
    if H * W > 1024:   # the decoder's output layer (500 x d*H*W) at rank 128 for big images
        flags += ["--head-rank", "128"]
    if binary:
        return ["--likelihood", "bernoulli_context", "--features", "4", "--levels", "2", *flags]
    # grey context tables learn at the network's rate: at 10x they start faster (after 300
    # steps on 10 000 images, validation -ELBO 1.241 against 1.501 on MNIST, 5.756 against
    # 5.975 on grey Tiny ImageNet) but then stall (MNIST 1.2444 at epoch 2, 1.2356 at epoch
    # 4), as the bundled mnist-grey's trials found (docs/MODELS.md); binary ones at 10x
    mixture, lin = (3, 12) if is_hard(context) else (2, 6)
    return ["--likelihood", "logistic_context", "--mixture", str(mixture), "--levels", "256",
            "--lin-neighbours", str(lin), "--context-lr-scale", "1", *flags]


def reserve_seconds(budget_s: float, n_heldout: int) -> float:
    """Seconds kept for export and report: ~1 min plus the classical codecs' time on the
    held-out images, at most a quarter of the budget."""
    return min(0.25 * budget_s, 60.0 + 0.03 * n_heldout)


# ----------------------------------------------------------------------------- state

class State:
    """``training/state.json``: what a fit has done, rewritten atomically as it goes."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data
        self.run_start = time.time()
        self.spent_before = float(data.get("spent_s", 0.0))
        self._saved = 0.0

    @classmethod
    def load(cls, path: Path):
        return cls(path, json.loads(path.read_text()))

    def spent(self) -> float:
        return self.spent_before + time.time() - self.run_start

    def save(self, force: bool = True) -> None:
        now = time.time()
        if force or now - self._saved > 15:
            self.data["spent_s"] = round(self.spent(), 2)
            write_bytes(self.path, (json.dumps(self.data, indent=2) + "\n").encode(), force=True)
            self._saved = now


class Progress:
    """One bar for the whole fit: seconds of the budget spent, the stage, its best rate."""

    def __init__(self, state: State, budget_s: float, enabled: bool):
        from tqdm import tqdm

        self.state, self.budget = state, budget_s
        self.bar = tqdm(total=round(budget_s), initial=min(round(state.spent()), round(budget_s)), unit="s",
                        file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                        bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} s [{elapsed} this run, ETA {remaining}]")
        self._last = 0.0
        # redrawn every second on a terminal; every 30 s into a log file
        self.every = 1.0 if sys.stderr.isatty() else 30.0

    def stage(self, text: str) -> None:
        self.bar.set_description_str(text)
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last > self.every:
            self.bar.n = min(round(self.state.spent()), round(self.budget))
            self.bar.refresh()
            self._last = now
            self.state.save(force=False)

    def close(self) -> None:
        self.tick(force=True)
        self.bar.close()


def _say(text: str) -> None:
    print(f"bitsback fit: {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the fit

def fit(inputs, model_dir, *, minutes: float = DEFAULT_MINUTES, name: str | None = None, threads: int = 0,
        progress: bool = True, restart: bool = False) -> dict:
    """Fit, export and report a model for the images in ``inputs`` (see the module doc);
    returns the report (also in ``model_dir/fit.json``)."""
    import torch

    out = Path(model_dir)
    work = out / "training"
    state_path = work / "state.json"
    if restart and work.exists():
        shutil.rmtree(work)
        for f in ("manifest.json", "fit.json"):
            (out / f).unlink(missing_ok=True)
    if out.exists() and not state_path.exists() and any(out.iterdir()):
        raise BitsbackError(f"{out} exists and is not a bitsback fit folder: give a new or empty folder to -o")
    if minutes <= 0:
        raise InputError("--minutes must be positive")
    x = read_images(inputs)
    digest = data_digest(x)
    if state_path.exists():
        state = State.load(state_path)
        if state.data["data_sha256"] != digest:
            raise BitsbackError(f"{out} holds a fit of other images (sha256 {state.data['data_sha256'][:12]}…, these are "
                                f"{digest[:12]}…): give another -o, or --restart to start this one afresh")
        if state.data.get("finished"):
            _say(f"{out} is already fitted to these images; its report:")
            return json.loads((out / "fit.json").read_text())
        if state.data["minutes"] != minutes:
            _say(f"budget changed from {state.data['minutes']} to {minutes} minutes")
            state.data["minutes"] = minutes
        _say(f"resuming: {state.spent() / 60:.1f} of {minutes} minutes spent")
    else:
        work.mkdir(parents=True, exist_ok=True)
        state = State(state_path, {"inputs": [str(Path(p).resolve()) for p in inputs], "data_sha256": digest,
                                   "minutes": minutes, "spent_s": 0.0, "stages": {}, "finished": False})
    budget = 60.0 * minutes
    from .train import default_threads

    threads = threads or default_threads()
    torch.set_num_threads(threads)
    state.data.setdefault("threads", []).append(threads)
    torch.set_flush_denormal(True)
    bar = Progress(state, budget, progress)
    try:
        report = _fit(x, out, work, state, bar, budget, name or out.resolve().name, threads)
    finally:
        bar.close()
        state.save()
    return report


def _fit(x, out, work, state, bar, budget, name, threads):
    from . import export, train

    binary = int(x.max()) <= 1
    tr, va, ho = split(len(x))
    data_dir = work / "data"
    data_dir.mkdir(exist_ok=True)
    trainval = data_dir / "trainval.npy"
    heldout = data_dir / "heldout.npy"
    # the stages split trainval themselves (train.split_train_val, seed 0): its last len(va)
    # are not the validation images, but a fixed random len(va) of them are
    if not trainval.exists():
        datasets.save(trainval, x[np.concatenate([tr, va])])
    if not heldout.exists():
        datasets.save(heldout, x[ho])
    S = state.data
    if "context" not in S:
        bar.stage("fitting the context")
        S["context"] = choose_context(x[tr], binary)
        S["kind"] = "binary" if binary else "grey"
        S["split"] = {"train": int(len(tr)), "val": int(len(va)), "heldout": int(len(ho))}
        state.save()
        _say(f"{len(x)} {S['kind']} images {x.shape[1]}x{x.shape[2]}: {len(tr)} train, {len(va)} validation, "
             f"{len(ho)} held out; context: {S['context']['neighbours']} neighbours, thresholds "
             f"{S['context']['thresholds']}")
    mflags = model_flags(binary, x.shape[1:], S["context"])
    reserve = reserve_seconds(budget, len(ho))
    start = state.spent()
    train_s = max(0.0, budget - reserve - (S.get("train_start_s") or start))
    S.setdefault("train_start_s", start)
    shares = dict(STAGE_SHARES)
    if train_s < 60 * ENCODER_MIN_MINUTES:   # short budgets: the VAE gets the encoder's share
        shares = {k: (0.0 if k == "encoder" else v / (1 - shares["encoder"])) for k, v in shares.items()}
    deadline, t_at = {}, S["train_start_s"]
    for stage, share in shares.items():
        t_at += share * train_s
        deadline[stage] = t_at
    common = ["--data", str(trainval), "--n-val", str(len(va)), "--batch", "128", "--epochs", "100000",
              "--patience", str(PATIENCE), "--no-progress", "--resume", "--threads", str(threads)]
    vae_dir, enc_dir = work / "vae", work / "encoder"
    commands = []

    def run(stage, cmd, flags):
        """Run one stage until its deadline and record how it ended."""
        left = max(1e-3, (deadline[stage] - state.spent()) / 60)
        done = train.run_stage(cmd, [*flags, "--max-minutes", f"{left:.3f}"], bar.tick)
        S["stages"][stage] = {"best_val_bpd": done.get("best_val_bpd"), "reason": done.get("reason"),
                              "ended_at_s": round(state.spent(), 1)}
        state.save()

    # -- the VAE, then the same run at the lower rate ---------------------------------------
    for stage, lr in (("vae", LR_HIGH), ("vae-finetune", LR_LOW)):
        flags = ["--out", str(vae_dir), *mflags, "--lr", str(lr), *common]
        commands.append("bitsback train vae " + " ".join(flags))
        if stage in S["stages"]:
            continue
        bar.stage(f"{stage} (lr {lr:g})")
        run(stage, "vae", flags)
    # -- the smaller encoder, reverse half-asleep ---------------------------------------------
    eflags = ["--init", str(vae_dir / "best.pt"), "--out", str(enc_dir), "--objective", "rha", "--alpha", "0.5",
              "--samples", "prior", "--lr", str(LR_ENCODER), "--enc-hidden", "256,256", "--enc-rank", "64", *common]
    commands.append("bitsback train encoder " + " ".join(eflags))
    if "encoder" not in S["stages"] and deadline["encoder"] - state.spent() > 5:
        bar.stage("encoder (reverse half-asleep)")
        run("encoder", "encoder", eflags)
    # the fine-tune continues the VAE's run, best.pt and its best included: its best is the VAE's
    vae_val = S["stages"]["vae-finetune"]["best_val_bpd"]
    rha_val = S["stages"].get("encoder", {}).get("best_val_bpd")
    use_rha = rha_val is not None and rha_val <= vae_val * (1 + RHA_TOLERANCE)
    S["encoder"] = {"shipped": "rha" if use_rha else "vae", "vae_val_bpd": vae_val, "rha_val_bpd": rha_val,
                    "tolerance": RHA_TOLERANCE}
    ckpt = (enc_dir if use_rha else vae_dir) / "best.pt"
    # -- export (portable), into a folder of its own first: MODEL_DIR never holds half a model
    if not S.get("exported"):
        bar.stage("exporting (portable arithmetic)")
        tmp = work / "export"
        if tmp.exists():
            shutil.rmtree(tmp)
        cmdline = "bitsback fit " + " ".join(S["inputs"]) + f" -o {out} --minutes {S['minutes']:g}"
        export.export_checkpoint(ckpt, tmp, name=name, weights="float32", inactive_data=str(trainval),
                                 commands=[cmdline, *commands], command=cmdline)
        man = json.loads((tmp / "manifest.json").read_text())
        for f in man["files"]:
            shutil.copyfile(tmp / f, out / f)
        shutil.copyfile(tmp / "manifest.json", out / "manifest.json")   # last: the folder is a model from here
        shutil.rmtree(tmp)
        # what the coder plans lanes by (bbans.model): the shipped encoder's validation -ELBO
        export.update_metrics(out, "test_elbo_bpd", rha_val if use_rha else vae_val)
        S["exported"] = True
        state.save()
    # -- report ------------------------------------------------------------------------------------
    bar.stage("measuring held-out files")
    report = measure_heldout(out, heldout, work)
    report.update({"images": S["split"], "kind": S["kind"], "shape": list(x.shape[1:]), "context": S["context"],
                   "encoder": S["encoder"], "stages": S["stages"], "minutes_budget": S["minutes"],
                   "minutes_spent": round(state.spent() / 60, 2)})
    export.update_metrics(out, "heldout", {k: report[k] for k in ("n_images", "bits_per_dim", "exact", "classical")})
    write_bytes(out / "fit.json", (json.dumps(report, indent=2) + "\n").encode(), force=True)
    shutil.rmtree(data_dir)
    S["finished"] = True
    state.save()
    return report


def measure_heldout(model_dir: Path, heldout: Path, work: Path) -> dict:
    """Real files of the held-out images with the exported model, decoded and compared;
    their bits/dim beside the classical codecs' on the same images."""
    from . import baselines, engine

    x = datasets.load(heldout)
    bba, dec = work / "heldout.bba", work / "heldout-decoded.npy"
    for f in (bba, dec):
        f.unlink(missing_ok=True)
    res = engine.compress([str(heldout)], bba, model=str(model_dir))
    engine.decompress(bba, dec, model=str(model_dir))
    exact = bool(np.array_equal(np.load(dec), x))
    for f in (bba, dec):
        f.unlink(missing_ok=True)
    names = [baselines.PNG, "WebP lossless", "JPEG-XL lossless"]
    classical = {r["codec"]: round(r["bits_per_dim"], 5) for r in baselines.measure(x, names)}
    return {"n_images": int(len(x)), "bits_per_dim": round(res["bits_per_dim"], 5), "exact": exact,
            "classical": classical, "missing_codecs": [n for n in names if n not in classical]}


# ----------------------------------------------------------------------------- CLI

def print_report(r: dict, out) -> None:
    print(f"model folder: {out}  ({r['kind']} {r['shape'][0]}x{r['shape'][1]}, {r['minutes_spent']:.1f} of "
          f"{r['minutes_budget']:g} minutes)")
    print(f"held-out images: {r['n_images']} (never trained on); round trip {'exact' if r['exact'] else 'NOT EXACT'}")
    print(f"  {'bitsback (' + out.name + ')':<28} {r['bits_per_dim']:.4f} bits/dim")
    for codec, v in sorted(r["classical"].items(), key=lambda kv: kv[1]):
        print(f"  {codec:<28} {v:.4f} bits/dim")
    for codec in r.get("missing_codecs", []):
        print(f"  {codec:<28} (not installed: pip install 'bitsback[bench]')")
    e = r["encoder"]
    rha = "not trained" if e["rha_val_bpd"] is None else f"{e['rha_val_bpd']:.4f}"
    which = "the smaller reverse-half-asleep one" if e["shipped"] == "rha" else "the VAE's own"
    print(f"encoder shipped: {which} (validation bits/dim: VAE encoder {e['vae_val_bpd']:.4f}, RHA encoder {rha})")
    print(f"use it: bitsback compress IMAGES -o FILE.bba --model {out}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bitsback fit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", help="training images: .idx/.idx.gz, .npy, .npz, CIFAR batches, a folder "
                    "of PNGs (several are concatenated; binary 0/1 or greyscale 0..255)")
    ap.add_argument("-o", "--output", required=True, help="model folder to create (rerun to resume)")
    ap.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                    help="wall-clock budget for everything; more time gives smaller files")
    ap.add_argument("--name", default=None, help="model name recorded in its files (default: the folder's name)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: the cores not already busy, by the load average; train.default_threads)")
    ap.add_argument("--restart", action="store_true", help="discard an unfinished or finished fit in the folder")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return show_defaults(ap)


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        r = fit(a.images, a.output, minutes=a.minutes, name=a.name, threads=a.threads, progress=not a.quiet,
                restart=a.restart)
    except KeyboardInterrupt:
        print("bitsback fit: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except (BitsbackError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"bitsback: error: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(r))
    else:
        print_report(r, Path(a.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
