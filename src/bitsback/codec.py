"""BB-ANS over lanes: the paper's Algorithm 1, and Algorithm 2 when ``k_steps > 0``.

Images are dealt to L lanes (independent rANS messages): step t codes images
``t*L .. t*L+L-1``, one per lane, as one onnxruntime batch; the last step may use only a
prefix of the lanes. Within a lane images are chained, so every image after the first
gets its posterior bits back. Compression of one step::

    mu, sigma = encoder(x)            [K Adam steps on (mu, rho) if k_steps > 0]
    z  <- pop  q(z|x)                 (bits back; the lane's first pop reads initial bits;
                                       the model's inactive (collapsed) dims are not coded)
    push x ~ p(x | centre(z))
    push z ~ uniform over 2^b equal-mass buckets of N(0, 1)

Decompression runs the exact mirror over the steps in reverse, then checks that every
lane is back in its initial state and that the sha256 of the images matches the header.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import cdf, container
from ._rans import Messages
from .errors import BitsbackError, CorruptMessageError, FormatError, InputError, IntegrityError, ModelMismatchError
from .runtime import Network, describe, ignored_threads

LIKELIHOODS = ("bernoulli", "logistic", "logistic_mixture", "bernoulli_context", "logistic_context")
DEFAULT_PRECISION = {"likelihood": 24, "posterior": 24, "latent_bits": 12}
# Target share of the file spent on per-lane overhead when the lane count is chosen from N.
# A lane costs its final head and word count (LANE_HEAD_BITS), its shard's header entry
# (about SHARD_ENTRY_BITS compressed) and the initial bits its first image borrows to pop
# its active latent dims (at most latent_bits each; inactive dims cost nothing). More lanes
# mean larger network batches and more lanes per worker (faster); the share keeps the
# file within 1 % of -ELBO with the rest of the overhead (header, discretisation):
# 10 000 binary MNIST images get 24 lanes, the file +0.92 % over -ELBO; 19 lanes (share
# 0.6 %) gave +0.80 % and coded 11-12 % fewer images/s with 2 workers (docs/BENCHMARKS.md).
LANE_OVERHEAD_SHARE = 0.0075
LANE_HEAD_BITS = 96
SHARD_ENTRY_BITS = 120
MAX_AUTO_LANES = 256
# Random access: a range decode decodes whole lanes one row per step, so it costs a
# lane's length (about N / lanes steps at batch 1) against N for a full decode. From
# RANGE_MIN_IMAGES images on (where a full decode takes seconds) the default spends up to
# RANGE_SHARE of the file on lanes instead of LANE_OVERHEAD_SHARE: shorter lanes, faster
# range decodes, a slightly larger file (docs/SCALING.md has the trade-off).
RANGE_MIN_IMAGES = 1 << 15
RANGE_SHARE = 0.01
# Shards are the unit of range decoding: ceil(lanes / MAX_SHARDS) lanes each (one lane
# each up to MAX_SHARDS lanes), and no shard above SHARD_MAX_IMAGES images. They are coded
# in lockstep groups whose lanes share one message set, so a step is one network batch and
# one compiled call per coder family whatever the shard size; at most GROUP_MAX_IMAGES
# images per group (memory); the encoder runs ENCODER_CHUNK rows a call.
MAX_SHARDS = 256
K_SHARD_LANES = 16
SHARD_MAX_IMAGES = 1 << 15
GROUP_MAX_IMAGES = 1 << 15
ENCODER_CHUNK = 4096
# A decode checks every EXHAUSTED_CHECK_STEPS steps that no lane ran out of payload.
EXHAUSTED_CHECK_STEPS = 64


class Model:
    """A VAE exported for coding: ``manifest.json``, ``encoder.onnx``, ``decoder.onnx``."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        manifest = self.dir / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.dir} has no manifest.json: not a bitsback model directory")
        self.manifest = json.loads(manifest.read_text())
        m = self.manifest
        self.name = str(m.get("name", self.dir.name))
        self.likelihood = m["likelihood"]
        if self.likelihood not in LIKELIHOODS:
            raise BitsbackError(f"model {self.name}: unsupported likelihood {self.likelihood!r}")
        self.shape = tuple(int(s) for s in m["image_shape"])
        self.dim = int(np.prod(self.shape))
        self.levels = int(m.get("levels", 2 if self.likelihood == "bernoulli" else 256))
        self.latent = int(m["latent_size"])
        files = ["encoder.onnx", "decoder.onnx"]
        self.context = None
        if self.likelihood.endswith("_context"):
            files.append("context.npz")
            try:
                with np.load(self.dir / "context.npz", allow_pickle=False) as tables:
                    self.context = cdf.context.Context(self.likelihood, m["context"], tables)
            except (OSError, KeyError, ValueError, TypeError) as e:
                raise BitsbackError(f"model {self.name}: bad context spec or tables: {e}") from None
        digest = hashlib.sha256()
        for f in files:
            digest.update(hashlib.sha256((self.dir / f).read_bytes()).digest())
        self.sha256 = digest.hexdigest()
        rec = m.get("precision") or m.get("recommended_precision") or {}
        self.precision = {k: int(rec.get(k, v)) for k, v in DEFAULT_PRECISION.items()}
        self.expected_bits_per_dim = _expected_bpd(m, self.levels)


def _expected_bpd(manifest: dict, levels: int) -> float:
    metrics = manifest.get("metrics") or {}
    for key in ("test_elbo_bpd", "test_bpd"):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    return 0.15 if levels == 2 else 1.5


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A bundled model's name (``mnist-binary``) or a directory holding an exported model."""
    p = Path(name_or_path)
    if (p / "manifest.json").is_file():
        return p
    from . import zoo

    try:
        return Path(zoo.model_dir(str(name_or_path)))
    except KeyError:
        raise BitsbackError(
            f"unknown model {name_or_path!r}: not a bundled model ({', '.join(zoo.names())}) "
            "nor a directory with manifest.json"
        ) from None


class _Failed(Exception):
    """A shard failed a decode-time check; turned into IntegrityError with context."""


class _Exhausted(CorruptMessageError):
    """A shard's decode ran out of payload: corrupt or forged, or decoded by a runtime
    whose network floats differ from the encoder's (then reported as IntegrityError)."""


def _sha256(images: np.ndarray) -> str:
    """Hex sha256 of an array's bytes in C order (hashed in place, no copy when contiguous)."""
    return hashlib.sha256(np.ascontiguousarray(images).reshape(-1)).hexdigest()


def _digest(images: np.ndarray, chars: int = 16) -> str:
    """Hex digest of a shard's images: 64 bits (128 in files before version 3); the file
    also holds the full sha256 of all images."""
    return _sha256(images)[:chars]


# A shard's payload is its messages' wire format (bitsback._rans) without the 8-byte
# frame (magic and lane count, both known from the header); files before version 3 keep it.
_FRAME = 8


def _shard_bytes(msgs: Messages) -> bytes:
    return msgs.to_bytes()[_FRAME:]


def _shard_messages(payload: bytes, lanes: int, seed: int, framed: bool) -> Messages:
    if not framed:
        payload = b"BBR1" + struct.pack("<I", lanes) + payload
    return Messages.from_bytes(payload, seed)


class _Layout:
    """Where the lanes of a group of shards sit in the group's message set, and which
    images each step codes.

    Shard s with L lanes and n images deals its images to its lanes in order (step t
    holds its images t*L .. t*L+L-1), so its lane j codes images j, L+j, 2L+j, ... The
    group's rows are all lanes of all shards, sorted by decreasing image count (stably),
    so that the lanes still coding at step t are always rows 0..k-1: the coder families
    work on a prefix of rows.
    """

    def __init__(self, shards):  # [(n, lanes, shard index), ...]
        self.shard = [g for _, _, g in shards]
        self.base = np.cumsum([0] + [n for n, _, _ in shards])
        self.total = int(self.base[-1])
        lanes = [(s, j, len(range(j, n, L))) for s, (n, L, _) in enumerate(shards) for j in range(L)]
        lanes.sort(key=lambda e: -e[2])
        self.lanes = [(s, j) for s, j, _ in lanes]
        self.count = np.array([c for _, _, c in lanes], np.int64)
        self.steps = int(self.count[0]) if len(lanes) else 0
        self.first = np.array([self.base[s] + j for s, j, _ in lanes], np.int64)   # image of step 0
        self.stride = np.array([shards[s][1] for s, _, _ in lanes], np.int64)
        self.of = np.array([s for s, _, _ in lanes], np.int64)
        self._images = [self.first[: self.active(t)] + t * self.stride[: self.active(t)] for t in range(self.steps)]

    def active(self, t: int) -> int:
        """Rows still coding at step t (a prefix)."""
        return int(np.searchsorted(-self.count, -t, side="left"))

    def images(self, t: int) -> np.ndarray:
        """Group image index of each active row at step t."""
        return self._images[t]

    def rows_of(self, s: int) -> np.ndarray:
        """Rows of shard s, in its lane order (the sort is stable and a shard's earlier
        lanes hold at least as many images)."""
        return np.flatnonzero(self.of == s)

    def active_rows(self, t: int):
        """(shard, its active rows in lane order) for every shard coding at step t."""
        k = self.active(t)
        for s in np.unique(self.of[:k]):
            yield int(s), np.flatnonzero(self.of[:k] == s)


def _inactive_dims(dims, latent: int) -> tuple:
    """Sorted distinct latent dims, each in [0, latent); FormatError otherwise."""
    dims = list(dims) if isinstance(dims, (list, tuple)) else None
    if dims is None or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise FormatError("inactive latent dims must be a list of integers")
    out = tuple(sorted(set(dims)))
    if out and not (0 <= out[0] and out[-1] < latent) or len(out) != len(dims):
        raise FormatError(f"inactive latent dims must be distinct integers in [0, {latent}); got {list(dims)!r}")
    return out


def _shard_seed(seed: int, shard: int) -> int:
    return (seed * 0x9E3779B97F4A7C15 + shard) & 0xFFFFFFFFFFFFFFFF


class Codec:
    """Compress and decompress batches of images with one VAE.

    Parameters
    ----------
    model : str or path
        Bundled model name (see ``bitsback models``) or an exported model directory.
    device : {"auto", "cpu", "cuda"}
        Where onnxruntime runs the networks; "auto" takes CUDA when its provider initialises.
    k_steps : int
        Adam steps of per-image posterior optimisation before coding (Algorithm 2).
        0 (the default) is the fast amortized path and never imports torch.
    lr : float
        Adam learning rate of the K-step optimisation (the paper uses 5e-3 on MNIST).
    lanes : int, optional
        Number of independent rANS messages. Default: chosen from N so that per-lane
        overhead stays near 0.75 % of the file, or near 1 % from 32 768 images on
        (shorter lanes for range decodes).
    seed : int
        Seed of the initial bits and of the K-step noise; stored in the file.
    threads : int, optional
        Accepted for compatibility and ignored (a note on stderr when not 1): the networks
        run on one thread, because with more onnxruntime rounds some rows differently by
        batch and the file would not decode (runtime.THREADS). Parallelism: ``workers``.
    workers : int, optional
        Threads coding shards in parallel (default: the machine's cores). The output
        does not depend on it.

    A Codec holds no per-call state and may be shared by threads.

    Examples
    --------
    >>> import bitsback
    >>> codec = bitsback.load("mnist-binary")
    >>> blob = codec.compress(images)           # images: uint8 (N, 28, 28) of 0/1
    >>> assert (codec.decompress(blob) == images).all()
    """

    def __init__(self, model="mnist-binary", device="auto", k_steps=0, lr=5e-3, lanes=None, seed=0, threads=None, workers=None):
        self.model = Model(resolve_model(model))
        self.device = device
        self.k_steps = int(k_steps)
        if not 0 <= self.k_steps <= container.DEFAULT_LIMITS.max_k_steps:
            raise ValueError(f"k_steps must be in [0, {container.DEFAULT_LIMITS.max_k_steps}]")
        self.lr = float(lr)
        if not (math.isfinite(self.lr) and 0 <= self.lr <= 1e6):
            raise ValueError("lr must be a finite number in [0, 1e6]")
        self.lanes = lanes
        self.seed = int(seed)
        if not 0 <= self.seed < 2**63:
            raise ValueError("seed must be in [0, 2**63)")
        self.workers = workers
        ignored_threads(threads)
        self.encoder = Network(self.model.dir / "encoder.onnx", device)
        self.decoder = Network(self.model.dir / "decoder.onnx", device)
        self.inactive_dims = self.model.manifest.get("inactive_dims", [])
        self._framed = False  # shard payloads with the messages' frame (files before version 3)
        self.centres = {}
        self._optimiser = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def choose_lanes(self, n: int) -> int:
        """Lanes for n images: as many as keep per-lane overhead near LANE_OVERHEAD_SHARE
        of the file, or RANGE_SHARE from RANGE_MIN_IMAGES images on (random access)."""
        if self.lanes:
            return max(1, min(int(self.lanes), n))
        m = self.model
        active = m.latent - len(self.inactive_dims)
        per_lane = LANE_HEAD_BITS + SHARD_ENTRY_BITS + active * m.precision["latent_bits"]
        share = RANGE_SHARE if n >= RANGE_MIN_IMAGES else LANE_OVERHEAD_SHARE
        lanes = math.floor(n * m.expected_bits_per_dim * m.dim * share / per_lane)
        return max(1, min(lanes, MAX_AUTO_LANES, n))

    def _centres(self, bits: int) -> np.ndarray:
        c = self.centres.get(bits)
        if c is None:
            c = self.centres[bits] = cdf.latent.centres(bits).astype(np.float32)
        return c

    # A step's latent. Latent dims in inactive_dims are never coded: they hold the prior's
    # median bucket in every image, known to both sides. A collapsed dim (posterior = prior
    # whatever the image) tells the decoder nothing and nets zero bits per image, but its
    # pop still needs latent_bits on the stack, so each lane's first image would borrow
    # them as initial bits: leaving it out saves that per lane. The step functions work on
    # active columns only: ``za`` (rows, active) bucket indices, and mu / sigma as
    # ``_active`` selects them; ``_decoder_z`` builds the decoder's full z.
    def _active(self, a: np.ndarray) -> np.ndarray:
        """The coded (active) columns of a (n, latent) array, C-contiguous."""
        return a if self._free is None else a[:, self._free]

    def _z_rows(self, rows: int, bits: int) -> np.ndarray:
        """A (rows, latent) float32 buffer for _decoder_z, inactive columns at the median
        bucket's centre (one per group: steps write only the active columns)."""
        z = np.empty((rows, self.model.latent), np.float32)
        z[:] = self._centres(bits)[1 << (bits - 1)]
        return z

    def _decoder_z(self, za: np.ndarray, bits: int, buf: np.ndarray) -> np.ndarray:
        """The decoder's input for a step's buckets za: their centres, inactive dims at the
        median bucket (taken from buf, a _z_rows buffer)."""
        centres = self._centres(bits)
        if self._free is None:
            return centres[za]
        z = buf[: len(za)]
        z[:, self._free] = centres[za]
        return z

    def _encode_step(self, msgs, xs, mu, sigma, prec, zbuf) -> None:
        """One BB-ANS encode step on rows 0..len(xs)-1 of msgs, given the posterior's
        active columns: z popped from the posterior (bits back), x pushed under the
        decoder, z pushed under the prior."""
        bits = prec["latent_bits"]
        za = cdf.latent.pop_posterior(msgs, mu, sigma, prec["posterior"], bits)
        self._push_x(msgs, self.decoder(z=self._decoder_z(za, bits, zbuf)), xs, prec["likelihood"])
        cdf.latent.push_prior(msgs, za, bits, popped=True)

    def _decode_step(self, msgs, n, prec, zbuf) -> tuple[np.ndarray, np.ndarray]:
        """The first half of a decode step on rows 0..n-1: z popped under the prior, x
        under the decoder. Returns (x, za); the caller pushes za back under the
        posterior of x (_push_posterior)."""
        bits = prec["latent_bits"]
        za = cdf.latent.pop_prior(msgs, n, self.model.latent - len(self._inactive), bits)
        return self._pop_x(msgs, self.decoder(z=self._decoder_z(za, bits, zbuf)), prec["likelihood"]), za

    def _push_posterior(self, msgs, mu, sigma, za, prec) -> None:
        """The decode step's second half, given the posterior's active columns: za pushed
        under the posterior (the bits back)."""
        cdf.latent.push_posterior(msgs, mu, sigma, za, prec["posterior"], prec["latent_bits"], popped=True)

    @property
    def inactive_dims(self) -> tuple:
        """Latent dims the coder leaves out (the model's manifest ``inactive_dims``; a
        file records its own)."""
        return self._inactive

    @inactive_dims.setter
    def inactive_dims(self, dims) -> None:
        self._inactive = _inactive_dims(dims, self.model.latent)
        active = np.setdiff1d(np.arange(self.model.latent), self._inactive).astype(np.intp)
        self._free = active if self._inactive else None

    def _posterior(self, x: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """One shard's step: encoder on its rows, then the K steps (what encode_group does)."""
        mu, sigma = self._encode_rows(x)
        return self._refine(x, mu, sigma, step)

    def _optimise(self, x, mu, sigma, step):
        with self._lock:
            if self._optimiser is None:
                from .inference import Optimiser  # torch is imported only on this path

                self._optimiser = Optimiser(self.model.dir, self.model.likelihood)
        return self._optimiser(x, mu, sigma, k=self.k_steps, lr=self.lr, seed=self.seed, step=step)

    def _push_x(self, msgs, out, x, prec):
        lik = self.model.likelihood
        if self.model.context:
            self.model.context.push(msgs, out["features"], x, prec)
        elif lik == "bernoulli":
            cdf.bernoulli.push(msgs, out["logits"], x, prec)
        elif lik == "logistic":
            cdf.logistic.push(msgs, out["mean"], out["log_scale"], x, prec)
        else:
            cdf.logistic.push_mixture(msgs, out["logit_weights"], out["mean"], out["log_scale"], x, prec)

    def _pop_x(self, msgs, out, prec):
        lik = self.model.likelihood
        if self.model.context:
            return self.model.context.pop(msgs, out["features"], prec)
        if lik == "bernoulli":
            return cdf.bernoulli.pop(msgs, out["logits"], prec)
        if lik == "logistic":
            return cdf.logistic.pop(msgs, out["mean"], out["log_scale"], prec)
        return cdf.logistic.pop_mixture(msgs, out["logit_weights"], out["mean"], out["log_scale"], prec)

    def _check_images(self, images) -> np.ndarray:
        m = self.model
        x = np.asarray(images)
        if x.shape == m.shape:
            x = x[None]
        if x.ndim != len(m.shape) + 1 or x.shape[1:] != m.shape:
            raise InputError(f"model {m.name} codes images of shape {m.shape}; got array of shape {x.shape}")
        if x.shape[0] == 0:
            raise InputError("no images to compress")
        if x.dtype != np.uint8:
            if x.dtype == np.bool_ or (np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255):
                x = x.astype(np.uint8)
            else:
                raise InputError(f"images must be uint8 (or integers in 0..255); got dtype {x.dtype}")
        if x.max() >= m.levels:
            hint = " (threshold first: bitsback.datasets.binarize, or --binarize on the command line)" if m.levels == 2 else ""
            raise InputError(f"model {m.name} codes {m.levels} levels per pixel; images contain {int(x.max())}{hint}")
        return np.ascontiguousarray(x)

    def plan(self, n: int) -> list[tuple[int, int]]:
        """Shards for n images as (images, lanes) pairs, in image order.

        Lanes are independent, so they are grouped into shards stored with their own byte
        ranges: a range decode decodes only the shards that hold the range. Shards are
        small (ceil(lanes / MAX_SHARDS) lanes each) and are coded several at a time in
        lockstep (see :meth:`encode_group`), so small shards do not mean small
        network batches. With K-step inference a shard holds at least K_SHARD_LANES lanes:
        the torch optimiser must see exactly one shard's step (its results depend on the
        batch), so one-lane shards would run it one image at a time. The plan depends only
        on n and the codec's settings, never on the number of workers or on how shards are
        grouped, so output bytes do not either.
        """
        lanes = self.choose_lanes(n)
        per = -(-lanes // MAX_SHARDS)  # ceil(lanes / MAX_SHARDS) lanes per shard
        if self.k_steps:
            per = max(per, min(lanes, K_SHARD_LANES))
        g = -(-lanes // per)
        g = max(g, -(-n // SHARD_MAX_IMAGES))
        lanes = max(lanes, g)
        lane_split = [lanes // g + (i < lanes % g) for i in range(g)]
        plan, done_imgs, done_lanes = [], 0, 0
        for sl in lane_split:
            done_lanes += sl
            end = n * done_lanes // lanes
            plan.append((end - done_imgs, sl))
            done_imgs = end
        return plan

    def groups(self, plan, parts: int, max_images: int = GROUP_MAX_IMAGES) -> list[list[int]]:
        """Split shard indices 0..len(plan)-1 into consecutive groups coded in lockstep:
        at least ``parts`` groups (one per worker) and at most ``max_images`` images per
        group (memory), with about equal image counts. A runtime choice: the bytes do not
        depend on it."""
        total = sum(c for c, _ in plan)
        parts = max(1, int(parts))
        k = max(parts, -(-total // max(1, max_images)))
        k = max(1, min(len(plan), -(-k // parts) * parts))
        out, start = [[] for _ in range(k)], 0
        for i, (c, _) in enumerate(plan):
            out[min(k - 1, (2 * start + c) * k // (2 * total))].append(i)  # by the shard's middle image
            start += c
        return [g for g in out if g]

    def _encode_rows(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The amortized posterior (encoder) of rows x, in chunks of ENCODER_CHUNK rows.
        onnxruntime gives a row the same output whatever batch it is in (tested), so this
        equals running the encoder on any split of the rows."""
        mu, sigma = [], []
        for a in range(0, len(x), ENCODER_CHUNK):
            out = self.encoder(x=x[a : a + ENCODER_CHUNK].astype(np.float32))
            mu.append(out["mu"])
            sigma.append(out["sigma"])
        mu = mu[0] if len(mu) == 1 else np.concatenate(mu)
        sigma = sigma[0] if len(sigma) == 1 else np.concatenate(sigma)
        return np.ascontiguousarray(mu, np.float32), np.ascontiguousarray(sigma, np.float32)

    def _refine(self, x, mu, sigma, step):
        """K Adam steps on one shard's rows of one step (Algorithm 2); identity for K = 0.
        torch CPU is not batch-invariant, so the optimiser always sees exactly one shard's
        step, at encode and at decode."""
        if not self.k_steps:
            return mu, sigma
        mu, sigma = self._optimise(x, mu, sigma, step)
        return np.ascontiguousarray(mu, np.float32), np.ascontiguousarray(sigma, np.float32)

    def encode_shard(self, x: np.ndarray, lanes: int, shard: int, progress=None) -> bytes:
        """Code one shard: images x (n, dim) uint8 over ``lanes`` lanes; return its messages."""
        return self.encode_group([(x, lanes, shard)], progress)[0]

    def encode_group(self, parts, progress=None) -> list[bytes]:
        """Code several shards in lockstep; ``parts`` is a list of ``(x, lanes, shard)``.

        Each shard's lanes keep their own generator keys (seeded by the shard index) and
        their own chains of images, exactly as if the shard were coded alone; the lanes of
        all shards are gathered into one message set so that each step is one encoder /
        decoder batch and one compiled call per coder family. onnxruntime's per-row
        outputs do not depend on the batch, so the bytes do not depend on the grouping.
        """
        prec = self.model.precision
        own = [Messages(lanes, _shard_seed(self.seed, shard)) for _, lanes, shard in parts]
        lay = _Layout([(len(x), lanes, shard) for x, lanes, shard in parts])
        group = Messages.gather([(own[s], j) for s, j in lay.lanes])
        x_all = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        mu_all, sigma_all = self._encode_rows(x_all)
        if not self.k_steps:
            mu_all, sigma_all = self._active(mu_all), self._active(sigma_all)
        zbuf = self._z_rows(len(lay.lanes), prec["latent_bits"])
        for t in range(lay.steps):
            idx = lay.images(t)
            xs, mu, sigma = x_all[idx], mu_all[idx], sigma_all[idx]
            if self.k_steps:
                mu, sigma = self._refine_step(lay, t, xs, mu, sigma)
                mu, sigma = self._active(mu), self._active(sigma)
            self._encode_step(group, xs, mu, sigma, prec, zbuf)
            if progress:
                progress(len(idx))
        return [_shard_bytes(Messages.gather([(group, r) for r in lay.rows_of(s)])) for s in range(len(parts))]

    def encode_digest(self, parts, progress=None) -> tuple[list[bytes], list[str]]:
        """:meth:`encode_group` plus each shard's digest for the header, both computed where
        the group is coded (a worker), not in the process that gathers them."""
        return self.encode_group(parts, progress), [_digest(x) for x, _, _ in parts]

    def _refine_step(self, lay, t, xs, mu, sigma):
        """K Adam steps, one shard's rows of step t at a time (as when coded alone)."""
        mu, sigma = mu.copy(), sigma.copy()
        for s, rows in lay.active_rows(t):
            mu[rows], sigma[rows] = self._refine(xs[rows], mu[rows], sigma[rows], (lay.shard[s] << 32) | t)
        return mu, sigma

    def decode_shard(self, payload: bytes, n: int, lanes: int, shard: int, prec: dict, progress, digest: str, first: int) -> np.ndarray:
        """Decode one shard's messages into images (n, dim); raises _Failed on a failed check."""
        return self.decode_group([(payload, n, lanes, shard, digest, first)], prec, progress)[0]

    def decode_group(self, parts, prec: dict, progress=None) -> list[np.ndarray]:
        """Decode several shards in lockstep (the mirror of :meth:`encode_group`); ``parts``
        is a list of ``(payload, n, lanes, shard, digest, first)``. Returns each shard's
        images (n, dim); raises _Failed when a shard fails its final checks."""
        m = self.model
        own = []
        for payload, n, lanes, shard, digest, first in parts:
            try:
                msgs = _shard_messages(payload, lanes, _shard_seed(self.seed, shard), self._framed)
            except CorruptMessageError:
                raise
            except (ValueError, MemoryError) as e:
                raise CorruptMessageError(f"shard {shard}: payload is malformed: {e}") from None
            if msgs.lanes != lanes:
                raise FormatError(f"shard {shard} holds {msgs.lanes} lanes, header says {lanes}")
            own.append(msgs)
        lay = _Layout([(n, lanes, shard) for _, n, lanes, shard, _, _ in parts])
        group = Messages.gather([(own[s], j) for s, j in lay.lanes])
        x_all = np.empty((lay.total, m.dim), np.uint8)
        zbuf = self._z_rows(len(lay.lanes), prec["latent_bits"])
        for t in reversed(range(lay.steps)):
            idx = lay.images(t)
            xs, za = self._decode_step(group, len(idx), prec, zbuf)
            x_all[idx] = xs
            mu, sigma = self._encode_rows(xs)
            if self.k_steps:
                mu, sigma = self._refine_step(lay, t, xs, mu, sigma)
            self._push_posterior(group, self._active(mu), self._active(sigma), za, prec)
            if progress:
                progress(len(idx))
            if t % EXHAUSTED_CHECK_STEPS == 0:
                self._check_drawn(group, lay, t)
        initial = group.lanes_initial()
        out = []
        for s, (_, n, _, shard, digest, first) in enumerate(parts):
            if not initial[lay.rows_of(s)].all():
                raise _Failed(f"shard {shard} did not end in its initial state")
            x = x_all[lay.base[s] : lay.base[s] + n]
            if _digest(x, len(digest)) != digest:
                raise _Failed(f"shard {shard} (images {first}..{first + n - 1}) does not match its recorded hash")
            out.append(x)
        return out

    @staticmethod
    def _check_drawn(group, lay, t) -> None:
        """A correct decode only takes words the encoder emitted; a lane that drew from
        the generator ran out of payload: corrupt or forged. Checked every
        EXHAUSTED_CHECK_STEPS steps and at the last (step 0), not every step: a lane that
        ran dry goes on, boundedly, on generator words until the check."""
        drawn = group.words_drawn()
        if drawn.any():
            raise _Exhausted(f"shard {lay.shard[lay.lanes[int(np.argmax(drawn > 0))][0]]}: payload exhausted (found at step {t})")

    def _workers(self, jobs: int) -> int:
        return max(1, min(self.workers or os.cpu_count() or 1, jobs))

    def _map(self, fn, jobs):
        workers = self._workers(len(jobs))
        if workers <= 1:
            return [fn(*j) for j in jobs]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda j: fn(*j), jobs))

    # ------------------------------------------------------------------ public API
    @property
    def verifies_by_default(self) -> bool:
        """Whether compress checks its output by decoding it when not told: on CUDA. The
        codec needs a row's network output not to depend on its batch (the two sides batch
        rows differently); that is tested on CPU with one thread, not measured on CUDA,
        where cuBLAS picks kernels by shape (docs/RELIABILITY.md)."""
        return self.encoder.cuda or self.decoder.cuda

    def compress(self, images, progress=None, verify=None) -> bytes:
        """Compress uint8 images of the model's shape, (N, *shape) or one image; return bytes.

        ``verify``: decode the result and check it before returning it (IntegrityError if
        it does not decode to the images); None: on CUDA only (``verifies_by_default``)."""
        x = self._check_images(images)
        m = self.model
        n = x.shape[0]
        flat = x.reshape(n, m.dim)
        plan = self.plan(n)
        starts = np.cumsum([0] + [c for c, _ in plan])
        groups = self.groups(plan, self._workers(len(plan)))
        parts = [[(flat[starts[g] : starts[g + 1]], plan[g][1], g) for g in group] for group in groups]
        done = self._map(self.encode_digest, [(ps, progress) for ps in parts])
        payloads = [p for ps, _ in done for p in ps]
        digests = [d for _, ds in done for d in ds]
        header = self.header(n, plan, [len(p) for p in payloads], digests, _sha256(x))
        blob = container.pack(header, b"".join(payloads))
        if verify is None:
            verify = self.verifies_by_default
        if verify:
            self.decompress(blob)       # checks the images' sha256 and each lane's final state
        return blob

    def decompress(self, blob, limits: container.Limits = container.DEFAULT_LIMITS, progress=None, start=None, stop=None) -> np.ndarray:
        """Decode bytes made by :meth:`compress`; return uint8 images (N, *shape).

        ``start``/``stop`` select an image range: only the shards that hold it are
        decoded (and each is checked against its own hash).

        Raises FormatError (corrupt/truncated/hostile), ModelMismatchError (made with
        another model) or IntegrityError (decoded data failed its checks); never returns
        wrong images.
        """
        header, payload = container.unpack(blob, limits)
        m = self.model
        dec = self.for_header(header)
        n, prec = header["n"], header["precision"]
        lo, hi, _ = slice(start, stop).indices(n)
        hi = max(lo, hi)
        whole = (lo, hi) == (0, n)
        jobs, offset, first = [], 0, 0
        for g, (count, lanes, nbytes, digest) in enumerate(header["shards"]):
            if first < hi and first + count > lo or (whole and count):
                jobs.append((bytes(payload[offset : offset + nbytes]), count, lanes, g, digest, first))
            offset += nbytes
            first += count
        if not jobs:
            return np.empty((0, *m.shape), np.uint8)
        groups = dec.groups([(j[1], j[2]) for j in jobs], dec._workers(len(jobs)))
        try:
            parts = [x for xs in dec._map(dec.decode_group, [([jobs[i] for i in gr], prec, progress) for gr in groups]) for x in xs]
        except _Failed as e:
            raise self._integrity_error(header, str(e)) from None
        except _Exhausted as e:
            raise self._exhausted(header, e) from None
        images = np.concatenate(parts).reshape((-1, *m.shape))
        if whole:
            if _sha256(images) != header["data_sha256"]:
                raise self._integrity_error(header, "the decoded images do not match the recorded sha256")
            return images
        base = jobs[0][5]
        return images[lo - base : hi - base]

    def header(self, n: int, plan, payload_lens, digests, data_sha256: str) -> dict:
        """The container header for n images coded by this codec with the given shards."""
        m = self.model
        return {
            "model": {"name": m.name, "sha256": m.sha256},
            "likelihood": m.likelihood,
            "shape": list(m.shape),
            "dtype": "uint8",
            "levels": m.levels,
            "n": n,
            "lanes": sum(sl for _, sl in plan),
            "shards": [[c, sl, nb, d] for (c, sl), nb, d in zip(plan, payload_lens, digests)],
            "precision": dict(m.precision),
            "latent": m.latent,
            "k_steps": self.k_steps,
            "lr": self.lr,
            "seed": self.seed,
            "inactive_dims": list(self.inactive_dims),
            "runtime": describe(self.encoder.provider),
            "data_sha256": data_sha256,
        }

    def for_header(self, header: dict) -> "Codec":
        """Check that a file's header names this codec's model; return a codec with the
        file's K-step settings (sharing this one's sessions)."""
        m = self.model
        if header["model"]["sha256"] != m.sha256:
            raise ModelMismatchError(
                f"file was compressed with model {header['model']['name']!r} "
                f"(sha256 {header['model']['sha256'][:12]}…); this codec holds {m.name!r} ({m.sha256[:12]}…)"
                + ("; the model of that name has changed since the file was made: decode with the folder it was "
                   "made with (--model DIR; for the bundled models docs/MODELS.md says where earlier versions are kept)"
                   if header["model"]["name"] == m.name else "")
            )
        if tuple(header["shape"]) != m.shape or header["latent"] != m.latent or header["likelihood"] != m.likelihood:
            raise FormatError("header shape/latent/likelihood disagree with the model it names")
        inactive = _inactive_dims(header.get("inactive_dims", []), m.latent)  # absent before version 3
        framed = header["version"] < 3
        if (header["k_steps"], float(header["lr"]), header["seed"], inactive, framed) != (self.k_steps, self.lr, self.seed, self.inactive_dims, self._framed):
            return self._replica(header["k_steps"], float(header["lr"]), header["seed"], inactive, framed)
        return self

    def _integrity_error(self, header, what) -> IntegrityError:
        here, there = describe(self.encoder.provider), header["runtime"]
        why = (
            f"; the file was made with {there} and is decoded with {here}: float networks "
            "are not guaranteed to agree across runtimes"
            if there != here
            else ""
        )
        return IntegrityError(f"decoded data failed its integrity check: {what}{why}")

    def _exhausted(self, header, e: "_Exhausted") -> BitsbackError:
        """Payload exhaustion: corruption, unless the file was made with another runtime
        (a decoder whose floats differ drifts off the encoder's path and runs dry)."""
        if header["runtime"] != describe(self.encoder.provider):
            return self._integrity_error(header, str(e))
        return CorruptMessageError(str(e))

    def _replica(self, k_steps, lr, seed, inactive_dims, framed=False) -> "Codec":
        """This codec with a file's coding settings (K steps, seed, inactive dims), sharing sessions."""
        other = object.__new__(Codec)
        other.__dict__.update(self.__dict__)
        other.k_steps, other.lr, other.seed = k_steps, lr, seed
        other.inactive_dims = inactive_dims
        other._framed = framed
        return other

    def compress_file(self, src, dst, force=False, binarize=False, progress=None) -> dict:
        """Compress a dataset file (any format ``bitsback.datasets.load`` reads) to ``dst``."""
        from . import datasets

        images = datasets.load(src)
        if binarize:
            images = datasets.binarize(images)
        blob = self.compress(images, progress=progress)
        write_atomic(dst, blob, force=force, inputs=(src,))
        return {"n_images": int(len(images)), "bytes": len(blob)}

    def decompress_file(self, src, dst, force=False, progress=None) -> dict:
        """Decompress ``src`` and write the images to ``dst`` (.npy, .npz, .idx[.gz] or a folder)."""
        from . import datasets

        images = self.decompress(Path(src).read_bytes(), progress=progress)
        if Path(dst).exists() and not force:
            raise FileExistsError(f"{dst} exists; pass force=True (--force) to overwrite")
        if _same_file(src, dst):
            raise BitsbackError("output would overwrite the input")
        datasets.save(dst, images)
        return {"n_images": int(len(images))}


def info(blob) -> dict:
    """The header of a .bba file plus sizes, without decoding."""
    header, payload = container.unpack(blob)
    header = dict(header)
    header["file_bytes"] = len(blob)
    header["payload_bytes"] = len(payload)
    dims = header["n"] * int(np.prod(header["shape"]))
    header["bits_per_dim"] = 8 * len(blob) / dims
    return header


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_atomic(dst, data: bytes, force: bool = False, inputs=()) -> None:
    """Write ``data`` to ``dst`` via a temp file in the same folder and ``os.replace``.

    A crash at any point leaves either no file or the complete file; an existing file is
    kept unless ``force``; an input is never overwritten.
    """
    dst = Path(dst)
    for src in inputs:
        if _same_file(src, dst):
            raise BitsbackError(f"output {dst} is the input file; refusing to overwrite it")
    if dst.exists() and not force:
        raise FileExistsError(f"{dst} exists; pass force=True (--force) to overwrite")
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

