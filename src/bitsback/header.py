"""What a .bba header says, beyond its bytes: the coding settings, the shard index, and
every switch by format version.

``container`` owns the byte layout and the checks of each field's type and range; this
module owns the meaning: which model and settings made the file (``Settings``, a frozen
value compared whole), how a version stores each shard (with or without the messages'
8-byte frame; 128- or 64-bit digests), and which shards hold an image range.

    version   shard payload                      shard digest       latent posterior  arithmetic
    1, 2      the messages' wire bytes (framed)  32 hex (128 bits)  libm's erfc       not recorded
    3, 4      the wire bytes after the frame     16 hex (64 bits)   libm's erfc       not recorded
    5         the wire bytes after the frame     16 hex (64 bits)   libm-free Phi     recorded

(Version 4 differs from 3 only in how the header is compressed: ``container``.)

The arithmetic record (:func:`arithmetic_of`) says how the networks compute, which
decides where a file decodes: "portable" networks compute integers exactly in float32
and give the same outputs everywhere; "float" networks give the encoder's outputs only
where the runtime computes bit-identically, so a float file carries a fingerprint of the
networks' outputs on a fixed probe (``codec.fingerprint``) that the decoder compares with
its own before decoding (``Codec.check_arithmetic``). Files before version 5 record
none: they are float files without a fingerprint, and a failed decode of one on another
runtime is blamed on the runtime (``bbans.shards.public_error``).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import container
from .errors import FormatError, ModelMismatchError

# The messages' wire format (bitsback._rans.Messages.to_bytes) opens with this frame:
# magic and lane count, both known from the header, so files from version 3 on leave it out.
WIRE_MAGIC = b"BBR1"
FRAME_BYTES = 8


@dataclass(frozen=True)
class Precision:
    """Coding precisions in bits: the likelihood's CDFs, the posterior over the buckets,
    and log2 of the number of latent buckets."""

    likelihood: int = 24
    posterior: int = 24
    latent_bits: int = 12

    def as_dict(self) -> dict:
        return {"likelihood": self.likelihood, "posterior": self.posterior, "latent_bits": self.latent_bits}


@dataclass(frozen=True)
class Settings:
    """How a file was coded, beyond its model. Encoder and decoder must agree on all of it:
    the encoder takes it from its arguments and the model's manifest, the decoder from
    the file (:func:`settings_of`)."""

    k_steps: int = 0
    lr: float = 5e-3
    seed: int = 0
    inactive_dims: tuple = ()
    precision: Precision = field(default_factory=Precision)
    version: int = container.VERSION

    @property
    def framed(self) -> bool:
        """Whether shard payloads keep the messages' frame (files before version 3)."""
        return self.version < 3

    @property
    def digest_chars(self) -> int:
        """Hex characters of a shard's image digest in this version."""
        return 32 if self.version < 3 else 16


def inactive_dims(dims, latent: int) -> tuple:
    """Sorted distinct latent dims, each in [0, latent); FormatError otherwise."""
    dims = list(dims) if isinstance(dims, (list, tuple)) else None
    if dims is None or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise FormatError("inactive latent dims must be a list of integers")
    out = tuple(sorted(set(dims)))
    if out and not (0 <= out[0] and out[-1] < latent) or len(out) != len(dims):
        raise FormatError(f"inactive latent dims must be distinct integers in [0, {latent}); got {list(dims)!r}")
    return out


def sha256(images: np.ndarray) -> str:
    """Hex sha256 of an array's bytes in C order (hashed in place, no copy when contiguous)."""
    return hashlib.sha256(np.ascontiguousarray(images).reshape(-1)).hexdigest()


def shard_digest(images: np.ndarray, chars: int = 16) -> str:
    """A shard's image digest: the first ``chars`` hex of their sha256 (the file also holds
    the full sha256 of all images)."""
    return sha256(images)[:chars]


def payload_of(wire: bytes, settings: Settings) -> bytes:
    """A shard's stored payload from its messages' wire bytes."""
    return wire if settings.framed else wire[FRAME_BYTES:]


def wire_of(payload: bytes, lanes: int, settings: Settings) -> bytes:
    """The messages' wire bytes of a stored shard payload (inverse of :func:`payload_of`)."""
    return payload if settings.framed else WIRE_MAGIC + struct.pack("<I", lanes) + payload


def build(model, settings: Settings, n: int, plan, payload_lens, digests, data_sha256: str, runtime: dict,
          arithmetic: dict) -> dict:
    """The container header for n images coded with ``settings`` in the shards ``plan``,
    on ``runtime`` (runtime.describe) with network ``arithmetic`` (see :func:`arithmetic_of`)."""
    return {
        # a model of one's own also records its folder, where decompress looks for it first
        "model": {"name": model.name, "sha256": model.sha256,
                  **({} if model.bundled else {"dir": str(model.dir.resolve())})},
        "likelihood": model.likelihood,
        "shape": list(model.shape),
        "dtype": "uint8",
        "levels": model.levels,
        "n": n,
        "lanes": sum(sl for _, sl in plan),
        "shards": [[c, sl, nb, d] for (c, sl), nb, d in zip(plan, payload_lens, digests)],
        "precision": settings.precision.as_dict(),
        "latent": model.latent,
        "k_steps": settings.k_steps,
        "lr": settings.lr,
        "seed": settings.seed,
        "inactive_dims": list(settings.inactive_dims),
        "runtime": runtime,
        "data_sha256": data_sha256,
        "arithmetic": arithmetic,
    }


def arithmetic_of(header: dict) -> dict | None:
    """A checked header's network arithmetic: ``{"kind": "portable", "version": V}`` or
    ``{"kind": "float", "fingerprint": F}``; None for files before version 5, which record
    none (float, no fingerprint; an "arithmetic" field in such a header is not theirs)."""
    if header.get("version", container.VERSION) < 5:
        return None
    return header["arithmetic"]


def settings_of(header: dict, model) -> Settings:
    """The settings a file was coded with, after checking that it names ``model``
    (ModelMismatchError) and agrees with it (FormatError)."""
    if header["model"]["sha256"] != model.sha256:
        raise ModelMismatchError(
            f"file was compressed with model {header['model']['name']!r} "
            f"(sha256 {header['model']['sha256'][:12]}…); this codec holds {model.name!r} ({model.sha256[:12]}…)"
            + ("; the model of that name has changed since the file was made: decode with the folder it was "
               "made with (--model DIR; for the bundled models docs/MODELS.md says where earlier versions are kept)"
               if header["model"]["name"] == model.name else "")
        )
    if tuple(header["shape"]) != model.shape or header["latent"] != model.latent or header["likelihood"] != model.likelihood:
        raise FormatError("header shape/latent/likelihood disagree with the model it names")
    p = header["precision"]
    return Settings(
        k_steps=header["k_steps"],
        lr=float(header["lr"]),
        seed=header["seed"],
        inactive_dims=inactive_dims(header.get("inactive_dims", []), model.latent),  # absent before version 3
        precision=Precision(p["likelihood"], p["posterior"], p["latent_bits"]),
        version=header.get("version", container.VERSION),
    )


class ShardRef(NamedTuple):
    """One shard of a file: its index, images, lanes, payload bytes and digest, the index
    of its first image, and its payload's offset from the payload's start."""

    index: int
    count: int
    lanes: int
    nbytes: int
    digest: str
    first: int
    offset: int


def image_range(header: dict, start=None, stop=None) -> tuple[int, int]:
    """[lo, hi) of the file's images selected by ``start``/``stop`` (slice rules, no step)."""
    lo, hi, _ = slice(start, stop).indices(header["n"])
    return lo, max(lo, hi)


def shard_refs(header: dict, lo: int, hi: int) -> list[ShardRef]:
    """The shards that hold any image of [lo, hi), in file order."""
    out, first, offset = [], 0, 0
    for g, (count, lanes, nbytes, digest) in enumerate(header["shards"]):
        if first < hi and first + count > lo:
            out.append(ShardRef(g, count, lanes, nbytes, digest, first, offset))
        first += count
        offset += nbytes
    return out


def info(blob) -> dict:
    """The header of a .bba file plus sizes, without decoding."""
    header, payload = container.unpack(blob)
    header = dict(header)
    header["file_bytes"] = len(blob)
    header["payload_bytes"] = len(payload)
    header["bits_per_dim"] = 8 * len(blob) / (header["n"] * math.prod(header["shape"]))
    return header
