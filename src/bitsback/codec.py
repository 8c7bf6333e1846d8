"""``Codec``: compress and decompress batches of images with one VAE (BB-ANS over lanes,
the paper's Algorithm 1, and Algorithm 2 when ``k_steps > 0``).

A thin front over the coding core (``bitsback.bbans``): it checks the settings, plans the
shards (``bbans.plan``), codes groups of them on threads (``bbans.shards``, each step
``bbans.step``), and packs the result with its header (``header``, ``container``).
Decompression checks every lane's final state and each shard's digest, and for a whole
file the sha256 of all images, so it never returns wrong images. Before any of that it
checks that this machine's networks compute what the file's did (the file's arithmetic
record: ``header.arithmetic_of``; :func:`fingerprint` for float networks).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from . import container
from . import header as hdr
from .bbans import plan as planning
from .bbans import shards
from .bbans.model import DEFAULT_PRECISION, PORTABLE_VERSIONS, Model, resolve_model
from .bbans.plan import (GROUP_MAX_IMAGES, LANE_HEAD_BITS, LANE_OVERHEAD_SHARE, MAX_AUTO_LANES,  # noqa: F401  (re-exported)
                         RANGE_MIN_IMAGES, RANGE_SHARE, SHARD_ENTRY_BITS)
from .bbans.step import Step
from .errors import FormatError
from .header import info  # noqa: F401  (re-exported: bitsback.codec.info)
from .io.atomic import write_bytes as write_atomic  # noqa: F401  (re-exported)
from .runtime import Network, describe, ignored_threads

__all__ = ["Codec", "Model", "resolve_model", "info", "write_atomic", "DEFAULT_PRECISION", "fingerprint"]

# The probe of the float-arithmetic fingerprint: PROBE_ROWS rows drawn by PCG64(PROBE_SEED).
# Part of format 5: a file records the digest of the networks' outputs on this probe, so
# changing either makes every float file's fingerprint mismatch.
PROBE_ROWS = 8
PROBE_SEED = 20250705


def fingerprint(step: Step) -> str:
    """The fingerprint of a step's float network arithmetic: the first
    container.FINGERPRINT_CHARS hex of the sha256 of the networks' outputs on a fixed probe.

    The probe: x, PROBE_ROWS rows of symbols in [0, levels) from PCG64(PROBE_SEED), through
    the encoder (as float32, as the coder feeds it); z, the centres (cdf.latent.centres,
    those the coder feeds the decoder) of as many random buckets per latent dim, through
    the decoder; and with k_steps > 0 the K-step refinement of the encoder's posterior of
    x (torch, Algorithm 2; the K = 0 fingerprint never imports it). Each output's name,
    shape and raw float32 bytes are hashed, in the networks' output order. Two machines
    with the same fingerprint computed the same bits on the probe (runtime.THREADS makes a
    row's outputs independent of its batch, so the probe stands for the coder's batches);
    different bits mean a float file made on one may not decode on the other, and it is
    refused there before decoding rather than failing somewhere in its payload.
    """
    m = step.model
    rng = np.random.Generator(np.random.PCG64(PROBE_SEED))
    x = rng.integers(0, m.levels, size=(PROBE_ROWS, m.dim))
    z = step.centres[rng.integers(0, len(step.centres), size=(PROBE_ROWS, m.latent))]
    enc = step.encoder(x=x.astype(np.float32))
    outputs = [("encoder", enc), ("decoder", step.decoder(z=z))]
    if step.settings.k_steps:
        mu, sigma = step.refine(x.astype(np.uint8), np.ascontiguousarray(enc["mu"], np.float32),
                                np.ascontiguousarray(enc["sigma"], np.float32), 0)
        outputs.append(("refined", {"mu": mu, "sigma": sigma}))
    h = hashlib.sha256()
    for network, outs in outputs:
        for name, a in outs.items():
            a = np.ascontiguousarray(a, np.float32)
            h.update(f"{network}.{name}{list(a.shape)}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[: container.FINGERPRINT_CHARS]


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
        k_steps, lr, seed = int(k_steps), float(lr), int(seed)
        if not 0 <= k_steps <= container.DEFAULT_LIMITS.max_k_steps:
            raise ValueError(f"k_steps must be in [0, {container.DEFAULT_LIMITS.max_k_steps}]")
        if not (math.isfinite(lr) and 0 <= lr <= 1e6):
            raise ValueError("lr must be a finite number in [0, 1e6]")
        if not 0 <= seed < 2**63:
            raise ValueError("seed must be in [0, 2**63)")
        ignored_threads(threads)
        self.model = Model(resolve_model(model))
        self.device, self.lanes, self.workers = device, lanes, workers
        m = self.model
        settings = hdr.Settings(k_steps, lr, seed, hdr.inactive_dims(m.inactive_dims, m.latent),
                                hdr.Precision(**m.precision))
        self.step = Step(m, Network(m.dir / "encoder.onnx", device), Network(m.dir / "decoder.onnx", device), settings)
        # (networks, settings) -> fingerprint, shared with this codec's with_settings copies;
        # computed once per key, under the lock
        self._fingerprints: dict = {}
        self._fingerprint_lock = threading.Lock()

    # ------------------------------------------------------------------ settings
    # the settings and networks, read through the Step that codes with them
    settings = property(lambda self: self.step.settings, doc="The coding settings (header.Settings).")
    encoder = property(lambda self: self.step.encoder, doc="The encoder's onnxruntime session.")
    decoder = property(lambda self: self.step.decoder, doc="The decoder's onnxruntime session.")
    k_steps = property(lambda self: self.settings.k_steps)
    lr = property(lambda self: self.settings.lr)
    seed = property(lambda self: self.settings.seed)

    @property
    def inactive_dims(self) -> tuple:
        """Latent dims the coder leaves out (the model's manifest ``inactive_dims``; a
        file records its own)."""
        return self.settings.inactive_dims

    @inactive_dims.setter
    def inactive_dims(self, dims) -> None:
        self.step = self.step.with_settings(replace(self.settings, inactive_dims=hdr.inactive_dims(dims, self.model.latent)))

    @property
    def runtime(self) -> dict:
        """What a header records about the runtime this codec's networks run on (with
        torch's release when its settings run K-step inference)."""
        return describe(self.encoder.provider, torch=bool(self.k_steps))

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of this codec's networks under its settings, computed on
        first use and cached (thread-safe)."""
        step = self.step
        key = (step.encoder, step.decoder, step.settings)   # a copy may hold another encoder
        with self._fingerprint_lock:
            fp = self._fingerprints.get(key)
            if fp is None:
                fp = self._fingerprints[key] = fingerprint(step)
        return fp

    @property
    def arithmetic(self) -> dict:
        """The arithmetic record of the files this codec writes (``header.arithmetic_of``):
        portable when the model's networks are and K = 0; else float, with this machine's
        fingerprint. K > 0 is float even with a portable model: the K steps are torch's
        float gradients."""
        a = self.model.arithmetic
        if a["kind"] == "portable" and not self.k_steps:
            return {"kind": "portable", "version": a["version"]}
        return {"kind": "float", "fingerprint": self.fingerprint}

    def check_arithmetic(self, header: dict) -> None:
        """Check, before decoding anything, that this codec (with the file's settings:
        :meth:`for_header`) computes what the file's encoder did: a float file's fingerprint
        must equal this machine's (RuntimeMismatchError naming both runtimes), a portable
        file's version must be one this build knows (FormatError naming it). Files before
        version 5 record nothing to check."""
        a = hdr.arithmetic_of(header)
        if a is None:
            return
        if a["kind"] == "portable":
            if a["version"] not in PORTABLE_VERSIONS:
                raise FormatError(
                    f"this file's networks use portable arithmetic version {str(a['version'])[:20]}; this build of "
                    f"bitsback decodes version {', '.join(map(str, PORTABLE_VERSIONS))}: decode it with a newer bitsback")
            return
        if a["fingerprint"] != self.fingerprint:
            raise shards.arithmetic_mismatch(header, self.runtime)

    @property
    def verifies_by_default(self) -> bool:
        """Whether compress checks its output by decoding it when not told: on CUDA. The
        codec needs a row's network output not to depend on its batch (the two sides batch
        rows differently); that is tested on CPU with one thread, not measured on CUDA,
        where cuBLAS picks kernels by shape (docs/RELIABILITY.md)."""
        return self.encoder.cuda or self.decoder.cuda

    def with_settings(self, settings: hdr.Settings, encoder: Network | None = None) -> "Codec":
        """This codec under other coding settings (and optionally another encoder
        network), sharing its sessions and K-step optimiser."""
        other = copy.copy(self)
        other.step = self.step.with_settings(settings, encoder)
        return other

    def for_header(self, header: dict) -> "Codec":
        """Check that a file's header names this codec's model and that its networks
        compute here what they did for the file (:meth:`check_arithmetic`); return a codec
        with the file's settings (K steps, seed, inactive dims, precision, format version)."""
        settings = hdr.settings_of(header, self.model)
        dec = self if settings == self.settings else self.with_settings(settings)
        dec.check_arithmetic(header)
        return dec

    # ------------------------------------------------------------------ planning
    def choose_lanes(self, n: int) -> int:
        """Lanes for n images (``lanes`` if set, else chosen from n: ``bbans.plan``)."""
        return planning.choose_lanes(n, self.model, self.inactive_dims, self.lanes)

    def plan(self, n: int) -> list[tuple[int, int]]:
        """Shards for n images as (images, lanes) pairs, in image order; a function of n
        and the settings only, so output bytes do not depend on workers or grouping."""
        return planning.plan(n, self.choose_lanes(n), self.k_steps)

    def groups(self, plan, parts: int, max_images: int = GROUP_MAX_IMAGES) -> list[list[int]]:
        """Consecutive shard groups coded in lockstep (``bbans.plan.groups``)."""
        return planning.groups(plan, parts, max_images)

    # ------------------------------------------------------------------ groups of shards
    def encode_group(self, parts, progress=None) -> list[bytes]:
        """Code shards ``[(x (n, dim) uint8, lanes, shard index), ...]`` in lockstep;
        return each one's payload (``bbans.shards.encode_group``)."""
        return shards.encode_group(self.step, parts, progress)

    def encode_digest(self, parts, progress=None) -> tuple[list[bytes], list[str]]:
        """:meth:`encode_group` and each shard's digest."""
        return shards.encode_digest(self.step, parts, progress)

    def decode_group(self, parts, progress=None) -> list[np.ndarray]:
        """Decode shards ``[(payload, n, lanes, shard, digest, first), ...]`` in lockstep;
        raises ``shards.ShardFailed`` / ``shards.PayloadExhausted`` on a failed check."""
        return shards.decode_group(self.step, parts, progress)

    def _map(self, fn, jobs):
        workers = self._workers(len(jobs))
        if workers <= 1:
            return [fn(*j) for j in jobs]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda j: fn(*j), jobs))

    def _workers(self, jobs: int) -> int:
        return max(1, min(self.workers or os.cpu_count() or 1, jobs))

    # ------------------------------------------------------------------ public API
    def compress(self, images, progress=None, verify=None) -> bytes:
        """Compress uint8 images of the model's shape, (N, *shape) or one image; return bytes.

        ``verify``: decode the result and check it before returning it (IntegrityError if
        it does not decode to the images); None: on CUDA only (``verifies_by_default``)."""
        x = self.model.check_images(images)
        n = x.shape[0]
        flat = x.reshape(n, self.model.dim)
        plan = self.plan(n)
        starts = np.cumsum([0] + [c for c, _ in plan])
        groups = self.groups(plan, self._workers(len(plan)))
        parts = [[(flat[starts[g] : starts[g + 1]], plan[g][1], g) for g in group] for group in groups]
        done = self._map(self.encode_digest, [(ps, progress) for ps in parts])
        payloads = [p for ps, _ in done for p in ps]
        digests = [d for _, ds in done for d in ds]
        header = self.header(n, plan, [len(p) for p in payloads], digests, hdr.sha256(x))
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
        another model), RuntimeMismatchError (the networks compute differently here than
        where the file was made: before decoding for a float file of version 5, on a failed
        decode for older files) or IntegrityError (decoded data failed its checks); never
        returns wrong images.
        """
        header, payload = container.unpack(blob, limits)
        m = self.model
        dec = self.for_header(header)
        lo, hi = hdr.image_range(header, start, stop)
        refs = hdr.shard_refs(header, lo, hi)
        if not refs:
            return np.empty((0, *m.shape), np.uint8)
        jobs = [(bytes(payload[r.offset : r.offset + r.nbytes]), r.count, r.lanes, r.index, r.digest, r.first) for r in refs]
        groups = planning.groups([(j[1], j[2]) for j in jobs], dec._workers(len(jobs)))
        try:
            parts = [x for xs in dec._map(dec.decode_group, [([jobs[i] for i in gr], progress) for gr in groups]) for x in xs]
        except (shards.ShardFailed, shards.PayloadExhausted) as e:
            raise shards.public_error(e, header, dec.runtime) from None
        images = np.concatenate(parts).reshape((-1, *m.shape))
        if (lo, hi) == (0, header["n"]):
            if hdr.sha256(images) != header["data_sha256"]:
                raise shards.integrity_error("the decoded images do not match the recorded sha256", header, dec.runtime)
            return images
        base = refs[0].first
        return images[lo - base : hi - base]

    def header(self, n: int, plan, payload_lens, digests, data_sha256: str) -> dict:
        """The container header for n images coded by this codec with the given shards."""
        return hdr.build(self.model, self.settings, n, plan, payload_lens, digests, data_sha256, self.runtime,
                         self.arithmetic)
