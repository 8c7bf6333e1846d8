"""``bitsback bench``: rate, throughput, per-image latency, the K sweep and classical codecs.

One command measures what the codec costs and where the bits go, for one model on one
dataset (by default the shipped MNIST test images with the model's preprocessing)::

    bitsback bench --model mnist-grey --json --plots out/

Sections (each is a key of the JSON object printed as the last stdout line with --json):

rate
    The real file size in bits/dim and its split: container header, per-lane overhead
    (96 bits of head + word count per lane), initial bits (the generator words the first
    pops of each lane draw, ``Messages.words_drawn() * 32``; those images get no bits
    back), and the coded content. Beside it the model's rate computed from the networks
    alone (numpy + onnxruntime, no torch): the continuous -ELBO (analytic KL, one seeded
    reparameterised sample) and the *quantised* code length -log2 p(x|centre(z)) - log2 p(z)
    + log2 q(z|x) with z drawn from the quantised posterior (seeded), i.e. exactly what the
    coder pays per image in expectation. Discretisation loss = content - continuous -ELBO.
throughput
    ``Codec.compress`` / ``decompress`` of all N images with the codec's lane count and
    shard plan; images/s and MB/s of raw pixels (N * dim bytes), median of R repeats.
    Pillow's PNG encoder (optimize=True) runs on the same N images inside each repeat;
    ``vs_png`` is the ratio of the medians (the issue's 2x-PNG criterion, one command).
latency
    Per image, p50/p90/p99/max: (a) ``single``: one public API call per image
    (``codec.compress(x[i])`` then ``codec.decompress(blob)``, container included);
    (b) ``chained``: the paper's Figure 8 protocol, one lane, images coded one after the
    other in one message; each image's compress step (encoder, pop z, decoder, push x,
    push z) and decompress step are timed separately by a loop that mirrors
    ``Codec.encode_group`` / ``decode_group`` for one shard call for call, except that
    the encoder runs per step (the codec runs it once up front at K = 0; onnxruntime rows
    are batch-invariant, so the bytes are the same and are checked equal to
    ``Codec.compress``'s). Every image is timed in ``--latency-repeats``
    passes and keeps its fastest (stats of all passes are reported too).
k_sweep
    K = 0..K_max Adam steps of per-image inference (Algorithm 2) on the first ``--k-n``
    images: bits/dim of the real file and compress / decompress seconds per image, for the
    shipped encoder and for a baseline encoder when the model ships one.
classical
    gzip, bz2, lzma, zstd, PNG, WebP lossless, JPEG-XL lossless (what is installed) on the
    same images: bits/dim and images/s (see ``bitsback.baselines``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from dataclasses import replace

from . import cdf, container, datasets
from . import header as hdr
from ._rans import Messages
from .bbans.plan import LANE_HEAD_BITS, shard_seed
from .cli import show_defaults
from .codec import Codec

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "t10k-images-idx3-ubyte.gz"
PERCENTILES = (50, 90, 99)


# ----------------------------------------------------------------------------- helpers

def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _stats(seconds) -> dict:
    a = np.asarray(seconds, dtype=np.float64)
    out = {"n": int(a.size), "mean": float(a.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(a, p))
    out["max"] = float(a.max())
    return out


def _versions() -> dict:
    from importlib import metadata

    v = {"python": platform.python_version()}
    for pkg in ("bitsback", "numpy", "numba", "onnxruntime-gpu", "onnxruntime", "torch", "pillow",
                "zstandard", "pillow-jxl-plugin"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return v


def _machine(device_provider: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    m = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "provider": device_provider}
    try:
        m["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return m


def preprocess(model, images: np.ndarray) -> np.ndarray:
    """The model's preprocessing: binarise 8-bit data for 2-level (Bernoulli) models."""
    x = np.asarray(images)
    if x.ndim == 2 and x.shape[1] == model.dim:
        x = x.reshape((len(x), *model.shape))
    pre = model.manifest.get("preprocess")
    if (model.levels == 2 or pre == "binarize") and x.size and x.max() > 1:
        x = datasets.binarize(x)
    return np.ascontiguousarray(x, dtype=np.uint8)


def find_baseline_encoder(model_dir: Path, manifest: dict) -> Path | None:
    """An extra (baseline, ELBO-trained) encoder shipped beside the model, if any.

    Looked up as ``manifest["baseline_encoder"]`` (a file name, or a dict with "file"),
    then ``encoder-baseline.onnx``, ``encoder_baseline.onnx``, ``baseline/encoder.onnx``.
    """
    ref = manifest.get("baseline_encoder")
    if isinstance(ref, dict):
        ref = ref.get("file") or ref.get("path")
    cands = [ref] if isinstance(ref, str) else []
    cands += ["encoder-baseline.onnx", "encoder_baseline.onnx", "baseline/encoder.onnx"]
    for c in cands:
        p = Path(c) if Path(c).is_absolute() else model_dir / c
        if p.is_dir():
            p = p / "encoder.onnx"
        if p.is_file():
            return p
    return None


def _with_encoder(codec: Codec, k_steps: int, encoder=None) -> Codec:
    """``codec`` sharing its sessions, with another K (and optionally another encoder)."""
    return codec.with_settings(replace(codec.settings, k_steps=k_steps), encoder)


# ------------------------------------------------- instrumented mirror of the lane loop

def encode_steps(codec: Codec, x: np.ndarray, lanes: int, shard: int = 0, timer=None):
    """Codec.encode_group for one shard, step by step (encoder included in each step's
    time), timing each step; returns (bytes, msgs, seconds)."""
    step = codec.step
    msgs = Messages(lanes, shard_seed(codec.seed, shard))
    zbuf = step.z_rows(lanes)
    times = []
    clock = time.perf_counter
    for t in range(-(-len(x) // lanes)):
        t0 = clock()
        xs = x[t * lanes : (t + 1) * lanes]
        mu, sigma = step.posterior(xs, (shard << 32) | t)
        step.encode(msgs, xs, step.active(mu), step.active(sigma), zbuf)
        times.append(clock() - t0)
    return hdr.payload_of(msgs.to_bytes(), codec.settings), msgs, times


def decode_steps(codec: Codec, payload: bytes, n: int, lanes: int, shard: int = 0):
    """Codec.decode_group for one shard, call for call, timing each step; returns
    (images (n, dim), seconds in image order)."""
    m, step = codec.model, codec.step
    msgs = Messages.from_bytes(hdr.wire_of(payload, lanes, codec.settings), shard_seed(codec.seed, shard))
    zbuf = step.z_rows(lanes)
    x = np.empty((n, m.dim), np.uint8)
    steps = -(-n // lanes)
    times = [0.0] * steps
    clock = time.perf_counter
    for t in reversed(range(steps)):
        t0 = clock()
        lo, hi = t * lanes, min(n, (t + 1) * lanes)
        xs, za = step.decode(msgs, hi - lo, zbuf)
        mu, sigma = step.posterior(xs, (shard << 32) | t)
        step.push_posterior(msgs, step.active(mu), step.active(sigma), za)
        x[lo:hi] = xs
        times[t] = clock() - t0
    if not msgs.is_initial():
        raise RuntimeError("instrumented decode did not end in the initial state")
    return x, times


# ------------------------------------------------------------ model rate without torch

def model_rate(codec: Codec, x: np.ndarray, seed: int = 0, batch: int = 500) -> dict:
    """-ELBO (continuous, one seeded sample, analytic KL) and the expected quantised code length, bits/dim."""
    m = codec.model
    prec = m.precision
    b = prec["latent_bits"]
    centres = codec.step.centres
    rng = np.random.default_rng(seed)
    flat = x.reshape(len(x), m.dim)
    cont = np.empty(len(x))
    quant = {"likelihood": 0.0, "prior": 0.0, "posterior": 0.0}
    for lo in range(0, len(x), batch):
        xs = flat[lo : lo + batch]
        enc = codec.encoder(x=xs.astype(np.float32))
        mu, sigma = enc["mu"].astype(np.float64), enc["sigma"].astype(np.float64)
        # continuous -ELBO: one reparameterised sample + analytic KL(q || N(0, I))
        z = (mu + sigma * rng.standard_normal(mu.shape)).astype(np.float32)
        nll = m.lik.nll(codec.decoder(z=z), xs, m.levels)
        kl = 0.5 * (mu**2 + sigma**2 - 1.0 - 2.0 * np.log(np.maximum(sigma, 1e-30))).sum(1)
        cont[lo : lo + len(xs)] = (nll + kl) / math.log(2)
        # quantised: z ~ quantised q, decoder at the bucket centres, exact frequencies
        u = rng.integers(0, 1 << prec["posterior"], size=mu.shape, dtype=np.uint64)
        idx, fq = cdf.latent.sample_posterior(enc["mu"], enc["sigma"], u, prec["posterior"], b,
                                              portable=codec.step.portable)     # the coder's Phi
        quant["likelihood"] += m.lik.code_length(codec.decoder(z=centres[idx]), xs, prec["likelihood"])
        quant["prior"] += float(b * idx.size)
        quant["posterior"] += float(prec["posterior"] * fq.size - np.log2(fq).sum())  # -log2 q, given back
    dims = x.size
    q_bits = quant["likelihood"] + quant["prior"] - quant["posterior"]
    return {
        "neg_elbo_bpd": float(cont.sum() / dims),
        "neg_elbo_bpd_note": "continuous -ELBO, analytic KL, one reparameterised sample per image (seeded)",
        "quantised_code_length_bpd": q_bits / dims,
        "quantised_split_bpd": {
            "likelihood": quant["likelihood"] / dims,
            "prior": quant["prior"] / dims,
            "bits_back": -quant["posterior"] / dims,
        },
    }


# ------------------------------------------------------------------------ sections

def measure_rate(codec: Codec, x: np.ndarray, blob: bytes, seed: int) -> dict:
    m = codec.model
    n, dims = len(x), x.size
    header, payload = container.unpack(blob)
    flat = x.reshape(n, m.dim)
    # Re-encode each shard through the instrumented mirror to read its counters; its
    # bytes must equal the codec's (guards the mirror used for the chained latencies).
    lane_bits = initial = 0
    offset = 0
    start = 0
    for g, shard in enumerate(header["shards"]):
        count, lanes, nbytes = shard[:3]  # [images, lanes, payload bytes, ...]
        data, msgs, _ = encode_steps(codec, flat[start : start + count], lanes, g)
        if data != bytes(payload[offset : offset + nbytes]):
            raise RuntimeError("instrumented encoder disagrees with Codec.compress")
        lane_bits += LANE_HEAD_BITS * lanes
        initial += 32 * int(msgs.words_drawn().sum())
        offset += nbytes
        start += count
    file_bits = 8 * len(blob)
    container_bits = 8 * (len(blob) - len(payload))
    content = file_bits - container_bits - lane_bits - initial
    r = model_rate(codec, x, seed)
    manifest_bpd = (m.manifest.get("metrics") or {}).get("test_elbo_bpd")
    return {
        "n_images": n,
        "file_bytes": len(blob),
        "file_bpd": file_bits / dims,
        **r,
        "manifest_test_elbo_bpd": manifest_bpd,
        "overhead": {
            "container_header_bytes": (container_bits // 8),
            "container_header_bpd": container_bits / dims,
            "lanes": int(header["lanes"]),
            "lane_head_bits": lane_bits,
            "lane_head_bpd": lane_bits / dims,
            "initial_bits": initial,
            "initial_bits_bpd": initial / dims,
            "content_bpd": content / dims,
            "discretisation_loss_bpd": content / dims - r["neg_elbo_bpd"],
            "coder_vs_quantised_bpd": content / dims - r["quantised_code_length_bpd"],
        },
    }


def measure_throughput(codec: Codec, x: np.ndarray, repeats: int):
    """Compress and decompress all of x, ``repeats`` times; medians. Pillow's PNG encoder
    (optimize=True, one file per image, as baselines) runs on the same images inside each
    repeat, so that the ratios compare numbers taken minutes apart at most, not runs of
    different load: on a shared machine PNG's own speed moves as much as ours does."""
    from . import baselines

    n = len(x)
    raw = x.size  # bytes of uint8 pixels
    png = baselines.available().get(baselines.PNG)
    comp, decomp, pngs, blob = [], [], [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        blob = codec.compress(x, verify=False)   # the round trip is checked below, untimed
        comp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        y = codec.decompress(blob)
        decomp.append(time.perf_counter() - t0)
        if not np.array_equal(y, x):
            raise RuntimeError("round trip failed")
        if png:
            t0 = time.perf_counter()
            png(x)
            pngs.append(time.perf_counter() - t0)
    tc, td = float(np.median(comp)), float(np.median(decomp))
    res = {
        "n_images": n,
        "repeats": repeats,
        "lanes": sum(sl for _, sl in codec.plan(n)),
        "plan": [list(p) for p in codec.plan(n)],
        "workers": codec.workers or os.cpu_count(),
        "compress": {"seconds": tc, "seconds_all": comp, "images_per_second": n / tc, "MB_per_second": raw / tc / 1e6},
        "decompress": {"seconds": td, "seconds_all": decomp, "images_per_second": n / td, "MB_per_second": raw / td / 1e6},
    }
    if png:
        tp = float(np.median(pngs))
        res["png"] = {"codec": baselines.PNG, "seconds": tp, "seconds_all": pngs, "images_per_second": n / tp}
        res["vs_png"] = {"compress": tp / tc, "decompress": tp / td}
    return res, blob


def measure_latency(codec: Codec, x: np.ndarray, repeats: int = 3) -> dict:
    """Per-image times; each image is timed in ``repeats`` passes and its fastest pass is
    kept (a preempted pass on a shared machine says nothing about the codec). The stats of
    every pass are reported too, under ``*_all_passes``."""
    n = len(x)
    repeats = max(1, int(repeats))
    one = _with_encoder(codec, codec.k_steps)
    one.lanes = 1
    one.compress(x[0])  # warm-up
    flat = x.reshape(n, codec.model.dim)
    ref = bytes(container.unpack(one.compress(x))[1])
    tc, td, ctimes, dtimes = [], [], [], []
    for _ in range(repeats):
        # (a) single-image API calls, container and checks included
        pc, pd = [], []
        for i in range(n):
            t0 = time.perf_counter()
            blob = one.compress(x[i])
            t1 = time.perf_counter()
            y = one.decompress(blob)
            t2 = time.perf_counter()
            pc.append(t1 - t0)
            pd.append(t2 - t1)
            if not np.array_equal(y[0], x[i]):
                raise RuntimeError("single-image round trip failed")
        tc.append(pc)
        td.append(pd)
        # (b) chained: one lane, one message, per-step times
        data, _, ct = encode_steps(one, flat, 1, 0)
        if data != ref:
            raise RuntimeError("instrumented encoder disagrees with Codec.compress")
        y, dt = decode_steps(one, data, n, 1, 0)
        if not np.array_equal(y, flat):
            raise RuntimeError("chained round trip failed")
        ctimes.append(ct)
        dtimes.append(dt)

    def block(passes):
        a = np.asarray(passes)
        best = a.min(0)
        return _stats(best), best.tolist(), _stats(a.ravel())

    out = {"n_images": n, "repeats": repeats, "statistic": f"per image, the fastest of {repeats} passes"}
    for mode, pcs, pds in (("single", tc, td), ("chained", ctimes, dtimes)):
        c, call, cp = block(pcs)
        d, dall, dp = block(pds)
        out[mode] = {"compress": c, "decompress": d, "compress_all": call, "decompress_all": dall,
                     "compress_all_passes": cp, "decompress_all_passes": dp}
    out["chained"]["bits_per_dim"] = 8 * len(ref) / x.size
    return out


def out_lanes(codec: Codec, n: int) -> int:
    return sum(sl for _, sl in codec.plan(n))


def measure_k_sweep(codec: Codec, x: np.ndarray, k_max: int, baseline: Path | None, device: str) -> dict:
    from .runtime import Network

    encoders = {"shipped": None}
    if baseline is not None:
        encoders["baseline"] = Network(baseline, device)
    if k_max > 0:
        codec.step.refiner.load()  # torch: only on this path
    if k_max > 0:  # warm-up: torch's first backward pass is slow and would land on K = 1
        _with_encoder(codec, 1).compress(x[: min(len(x), 2 * out_lanes(codec, len(x)))])
    n, dims = len(x), x.size
    out = {"n_images": n, "lanes": sum(sl for _, sl in codec.plan(n)), "k_max": k_max, "encoders": {}}
    for name, enc in encoders.items():
        rows = []
        for k in range(k_max + 1):
            c = _with_encoder(codec, k, enc)
            t0 = time.perf_counter()
            blob = c.compress(x)
            t1 = time.perf_counter()
            y = c.decompress(blob)
            t2 = time.perf_counter()
            if not np.array_equal(y, x):
                raise RuntimeError(f"K={k} round trip failed")
            rows.append({"k": k, "bits_per_dim": 8 * len(blob) / dims,
                         "compress_s_per_image": (t1 - t0) / n, "decompress_s_per_image": (t2 - t1) / n})
            _log(f"K sweep {name}: K={k} {rows[-1]['bits_per_dim']:.4f} bits/dim, {rows[-1]['compress_s_per_image'] * 1e3:.3f} ms/image")
        base_t = rows[0]["compress_s_per_image"]
        for r in rows:
            r["compress_time_increase_pct"] = 100.0 * (r["compress_s_per_image"] / base_t - 1.0)
        out["encoders"][name] = rows
    out["note"] = ("shipped encoder and baseline encoder" if baseline is not None else
                   "only the shipped encoder: the model directory ships no baseline encoder")
    return out


def measure_classical(codec: Codec, x: np.ndarray, n: int | None = None) -> dict:
    """Classical codecs on the first n images, and bitsback's file on the same images."""
    from . import baselines

    xs = x[:n] if n else x
    t0 = time.perf_counter()
    blob = codec.compress(xs)
    dt = time.perf_counter() - t0
    ours = {"codec": f"bitsback {codec.model.name}", "bytes": len(blob), "bits_per_dim": 8 * len(blob) / xs.size,
            "images_per_second": len(xs) / dt}
    return {"n_images": len(xs), "rows": baselines.measure(xs), "bitsback": ours}


# ---------------------------------------------------------------------------- driver

def run(model="mnist-binary", data=None, n=None, k_max=8, k_n=1000, latency_n=1000, latency_repeats=3, classical_n=2000,
        device="auto", lanes=None, repeats=3, seed=0, threads=None, workers=None, baseline_encoder=None,
        sections=("rate", "throughput", "latency", "k_sweep", "classical")) -> dict:
    """Run the benchmark and return its result dict (what ``--json`` prints)."""
    t_start = time.perf_counter()
    codec = Codec(model, device=device, lanes=lanes, seed=seed, threads=threads, workers=workers)
    m = codec.model
    src = Path(data) if data else DEFAULT_DATA
    x = preprocess(m, datasets.load(src))
    if n:
        x = x[:n]
    res = {
        "command": "bitsback bench",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": {"name": m.name, "path": str(m.dir), "likelihood": m.likelihood, "shape": list(m.shape),
                  "levels": m.levels, "latent": m.latent, "precision": m.precision, "sha256": m.sha256},
        "data": {"path": str(src), "n_images": int(len(x)), "dims": int(x.size),
                 "sha256": hashlib.sha256(x.tobytes()).hexdigest()},
        "device": device,
        "machine": _machine(codec.encoder.provider),
        "versions": _versions(),
    }
    _log(f"{m.name} on {len(x)} images from {src.name}; provider {codec.encoder.provider}")
    blob = None
    if "throughput" in sections or "rate" in sections:
        codec.decompress(codec.compress(x[: min(len(x), 64)]))  # JIT warm-up, both directions
        t0 = time.perf_counter()
        res["throughput"], blob = measure_throughput(codec, x, repeats if "throughput" in sections else 1)
        _log(f"throughput done ({time.perf_counter() - t0:.1f} s)")
        if "throughput" not in sections:
            del res["throughput"]
    if "rate" in sections:
        t0 = time.perf_counter()
        res["rate"] = measure_rate(codec, x, blob, seed)
        _log(f"rate done ({time.perf_counter() - t0:.1f} s)")
    if "latency" in sections:
        t0 = time.perf_counter()
        res["latency"] = measure_latency(codec, x[:latency_n], latency_repeats)
        _log(f"latency done ({time.perf_counter() - t0:.1f} s)")
    if "k_sweep" in sections:
        t0 = time.perf_counter()
        base = Path(baseline_encoder) if baseline_encoder else find_baseline_encoder(m.dir, m.manifest)
        if base is not None and base.is_dir():
            base = base / "encoder.onnx"
        res["k_sweep"] = measure_k_sweep(codec, x[:k_n], k_max, base, device)
        res["k_sweep"]["baseline_encoder"] = str(base) if base else None
        _log(f"K sweep done ({time.perf_counter() - t0:.1f} s)")
    if "classical" in sections:
        t0 = time.perf_counter()
        res["classical"] = measure_classical(codec, x, classical_n)
        _log(f"classical codecs done ({time.perf_counter() - t0:.1f} s)")
    try:
        res["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    res["wall_seconds"] = time.perf_counter() - t_start
    return res


# ---------------------------------------------------------------------------- output

def _ms(s):
    return f"{1e3 * s:8.3f}"


def format_table(res: dict) -> str:
    L = []
    mo, d, mc = res["model"], res["data"], res["machine"]
    L.append(f"bitsback bench — model {mo['name']} ({mo['likelihood']}, {mo['levels']} levels, latent {mo['latent']}), "
             f"{d['n_images']} images of {d['path']}")
    L.append(f"machine: {mc['cpu']}, {mc['cores']} cores, provider {mc['provider']}; {res['date']}")
    if "rate" in res:
        r, o = res["rate"], res["rate"]["overhead"]
        L.append("")
        L.append("rate (bits/dim)")
        L.append(f"  file                         {r['file_bpd']:.4f}   ({r['file_bytes']} bytes)")
        L.append(f"  -ELBO (continuous, 1 sample) {r['neg_elbo_bpd']:.4f}")
        L.append(f"  quantised code length        {r['quantised_code_length_bpd']:.4f}")
        if r.get("manifest_test_elbo_bpd"):
            L.append(f"  manifest test -ELBO          {r['manifest_test_elbo_bpd']:.4f}")
        L.append(f"  container header             {o['container_header_bpd']:.5f}   ({o['container_header_bytes']} bytes)")
        L.append(f"  lane heads                   {o['lane_head_bpd']:.5f}   ({o['lanes']} lanes x {LANE_HEAD_BITS} bits)")
        L.append(f"  initial bits                 {o['initial_bits_bpd']:.5f}   ({o['initial_bits']} bits)")
        L.append(f"  discretisation loss          {o['discretisation_loss_bpd']:.5f}   (content - continuous -ELBO)")
        L.append(f"  coder vs quantised length    {o['coder_vs_quantised_bpd']:.5f}")
    if "throughput" in res:
        t = res["throughput"]
        L.append("")
        L.append(f"throughput ({t['n_images']} images, {t['lanes']} lanes, shards {t['plan']}, "
                 f"{t['workers']} workers, median of {t['repeats']})")
        for k in ("compress", "decompress"):
            L.append(f"  {k:<10} {t[k]['images_per_second']:10.1f} images/s  {t[k]['MB_per_second']:7.3f} MB/s  "
                     f"({t[k]['seconds']:.3f} s)")
        if "png" in t:
            L.append(f"  {t['png']['codec']:<10} {t['png']['images_per_second']:10.1f} images/s, same images, each repeat: "
                     f"bitsback {t['vs_png']['compress']:.2f}x compress, {t['vs_png']['decompress']:.2f}x decompress")
    if "latency" in res:
        lt = res["latency"]
        L.append("")
        L.append(f"latency per image, ms ({lt['n_images']} images, fastest of {lt['repeats']} passes)      p50      p90      p99      max")
        for mode in ("single", "chained"):
            for k in ("compress", "decompress"):
                s = lt[mode][k]
                L.append(f"  {mode + ' ' + k:<56}{_ms(s['p50'])} {_ms(s['p90'])} {_ms(s['p99'])} {_ms(s['max'])}")
    if "k_sweep" in res:
        ks = res["k_sweep"]
        L.append("")
        L.append(f"K sweep ({ks['n_images']} images, {ks['lanes']} lanes; {ks['note']})")
        L.append("  encoder    K   bits/dim   compress ms/img  decompress ms/img  time +%")
        for name, rows in ks["encoders"].items():
            for r in rows:
                L.append(f"  {name:<9} {r['k']:2d}   {r['bits_per_dim']:.4f}   {_ms(r['compress_s_per_image'])}"
                         f"         {_ms(r['decompress_s_per_image'])}        {r['compress_time_increase_pct']:+7.1f}")
    if "classical" in res:
        c = res["classical"]
        L.append("")
        L.append(f"classical codecs ({c['n_images']} images)         bits/dim    images/s")
        for r in c["rows"]:
            L.append(f"  {r['codec']:<34} {r['bits_per_dim']:8.4f} {r['images_per_second']:11.1f}")
        b = c["bitsback"]
        L.append(f"  {b['codec']:<34} {b['bits_per_dim']:8.4f} {b['images_per_second']:11.1f}")
    L.append("")
    L.append(f"wall time {res['wall_seconds']:.1f} s")
    return "\n".join(L)


def write_plots(res: dict, out_dir) -> list[str]:
    """PNG figures: rate vs K (time on a second axis), latency CDFs, bits/dim per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    name = res["model"]["name"]
    if "k_sweep" in res:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        ax2 = ax.twinx()
        for i, (enc, rows) in enumerate(res["k_sweep"]["encoders"].items()):
            ks = [r["k"] for r in rows]
            ax.plot(ks, [r["bits_per_dim"] for r in rows], "o-", color=f"C{i}", label=f"{enc}: bits/dim")
            ax2.plot(ks, [1e3 * r["compress_s_per_image"] for r in rows], "s--", color=f"C{i}", alpha=0.6,
                     label=f"{enc}: compress ms/image")
        ax.set_xlabel("K (Adam steps of per-image inference)")
        ax.set_ylabel("bits/dim (file)")
        ax2.set_ylabel("compress time per image (ms)")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center")
        ax.set_title(f"{name}: rate and time vs K\n({res['k_sweep']['n_images']} images, {res['k_sweep']['lanes']} lanes)", fontsize=10)
        fig.tight_layout()
        p = out / "rate_vs_k.png"
        fig.savefig(p)
        plt.close(fig)
        written.append(str(p))
    if "latency" in res:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for mode in ("single", "chained"):
            for k, ls in (("compress", "-"), ("decompress", "--")):
                a = np.sort(np.asarray(res["latency"][mode][f"{k}_all"])) * 1e3
                ax.plot(a, np.arange(1, len(a) + 1) / len(a), ls, label=f"{mode} {k}")
        ax.set_xscale("log")
        ax.set_xlabel("time per image (ms)")
        ax.set_ylabel("fraction of images")
        ax.set_title(f"{name}: per-image latency CDF\n({res['latency']['n_images']} images)", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = out / "latency_cdf.png"
        fig.savefig(p)
        plt.close(fig)
        written.append(str(p))
    if "classical" in res:
        rows = [(r["codec"], r["bits_per_dim"]) for r in res["classical"]["rows"]]
        rows.append((res["classical"]["bitsback"]["codec"], res["classical"]["bitsback"]["bits_per_dim"]))
        rows.sort(key=lambda r: r[1])
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        colors = ["C3" if n.startswith("bitsback") else "C0" for n, _ in rows]
        ax.barh([n for n, _ in rows], [v for _, v in rows], color=colors)
        for i, (_, v) in enumerate(rows):
            ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
        ax.set_xlabel("bits/dim")
        ax.set_title(f"{name}: bits/dim per codec\n(first {res['classical']['n_images']} images)", fontsize=10)
        ax.set_xlim(0, max(v for _, v in rows) * 1.2)
        fig.tight_layout()
        p = out / "codecs_bpd.png"
        fig.savefig(p)
        plt.close(fig)
        written.append(str(p))
    return written


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bitsback bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist-binary", help="bundled model name or model directory (default mnist-binary)")
    ap.add_argument("--data", default=None, help="images in any format bitsback reads (default: the shipped MNIST test images)")
    ap.add_argument("-n", type=int, default=None, help="use the first N images (default: all)")
    ap.add_argument("--k-max", type=int, default=8, help="largest K of the K sweep (default 8; 0: K = 0 only, no torch)")
    ap.add_argument("--k-n", type=int, default=1000, help="images in the K sweep (default 1000)")
    ap.add_argument("--latency-n", type=int, default=1000, help="images timed one by one (default 1000)")
    ap.add_argument("--latency-repeats", type=int, default=3, help="passes over the latency images; each image "
                    "keeps its fastest pass (default 3)")
    ap.add_argument("--classical-n", type=int, default=2000, help="first images given to the classical codecs, "
                    "and to bitsback for the same comparison (default 2000; 0: all)")
    ap.add_argument("--baseline-encoder", default=None, help="a baseline encoder .onnx (or model dir) for the K sweep; "
                    "default: the one the model directory ships, if any")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--lanes", type=int, default=None, help="lane count (default: chosen from N)")
    ap.add_argument("--repeats", type=int, default=3, help="throughput repeats, the median is reported (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="ignored (the networks run on one thread; see Codec)")
    ap.add_argument("--workers", type=int, default=None, help="shard threads (default: cores)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: rate,throughput,latency,k_sweep,classical")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object on the last stdout line")
    ap.add_argument("--plots", default=None, metavar="DIR", help="write PNG figures into DIR (needs matplotlib)")
    return show_defaults(ap)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    all_sections = ("rate", "throughput", "latency", "k_sweep", "classical")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(all_sections)
    if unknown:
        print(f"bitsback bench: unknown section(s) {sorted(unknown)}; choose from {', '.join(all_sections)}", file=sys.stderr)
        return 2
    sections = [s for s in all_sections if s not in skip]
    needs = (["torch", "onnx"] if "k_sweep" in sections and args.k_max > 0 else []) + (["matplotlib"] if args.plots else [])
    for name in needs:      # say so now, not after the sections before the one that needs it
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"bitsback bench needs {name} (or --skip k_sweep)", name=name)
    res = run(model=args.model, data=args.data, n=args.n, k_max=args.k_max, k_n=args.k_n, latency_n=args.latency_n,
              latency_repeats=args.latency_repeats, classical_n=args.classical_n, device=args.device, lanes=args.lanes, repeats=max(1, args.repeats),
              seed=args.seed, threads=args.threads, workers=args.workers, baseline_encoder=args.baseline_encoder,
              sections=tuple(s for s in all_sections if s not in skip))
    if args.plots:
        res["plots"] = write_plots(res, args.plots)
    print(format_table(res))
    if res.get("plots"):
        print("plots: " + ", ".join(res["plots"]))
    if args.json:
        print(json.dumps(res, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
