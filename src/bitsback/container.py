"""The .bba container: a versioned header, the lanes' rANS messages, a checksum.

Layout (all integers little-endian)::

    0       8 bytes   magic b"BBANS\\x00" + u16 format version
    8       u32       header length H (<= Limits.max_header_bytes)
    12      H bytes   header: UTF-8 JSON (fields: see HEADER_FIELDS), zlib-compressed
                      against a preset dictionary (version 5: ZDICT_V5, version 4: ZDICT;
                      versions 2-3 without one, version 1 uncompressed: all still read)
    12+H    u64       payload length P (must equal what is left before the checksum)
    20+H    P bytes   payload: the serialised messages of all lanes (bitsback._rans)
    end-32  32 bytes  sha256 of every byte before it

Every size is checked against the file and against :class:`Limits` before anything is
allocated from it; any violation raises :class:`~bitsback.errors.FormatError`.

The header's "arithmetic" record (version 5 on; what it means: ``header.py``) is one of::

    {"kind": "portable", "version": V}        V an integer >= 1; only with k_steps = 0
    {"kind": "float", "fingerprint": F}       F 16 lowercase hex (FINGERPRINT_CHARS)

and nothing else: any other key, kind or value raises FormatError.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import zlib
from dataclasses import dataclass

from .errors import FormatError, LimitError

MAGIC = b"BBANS\x00"
# Version 2 zlib-compresses the JSON header (a file lists one entry per shard, and shards
# are small so that a range decode is cheap); version 1 (plain JSON) is still read.
# Version 3 drops each shard payload's 8-byte message frame and halves the shard digests
# (see codec.py); the reader reports the version as header["version"].
# Version 4 compresses the header against ZDICT: 250 bytes less per file, which is most of
# a one-image file's header and 0.2 % of 10 000 binary MNIST images.
# Version 5 records the networks' arithmetic (portable, or float with a fingerprint of
# the networks' outputs; see ARITHMETIC_KINDS) and its latent posterior uses a libm-free
# Phi (cdf.latent); its headers are compressed against ZDICT_V5, which knows the strings
# version 5 added (against ZDICT they cost about 55 bytes a file: 5 % of 64 binary images).
VERSION = 5
READ_VERSIONS = (1, 2, 3, 4, 5)
_PREFIX = struct.Struct("<6sHI")
_U64 = struct.Struct("<Q")
_DIGEST = 32

# zlib preset dictionary of version-4 headers: the field names and common values, the most
# frequent last (zlib reaches back into it as into text already seen). It is part of the
# format: changing a byte makes every version-4 header unreadable, so a new dictionary
# needs a new version (a test pins its sha256).
ZDICT = (
    b'"logistic_mixture","logistic","bernoulli","machine":"aarch64","machine":"arm64","machine":"AMD64",'
    b'"provider":"CUDAExecutionProvider","mnist-grey-mlp","mnist-binary-mlp","likelihood":"logistic_context",'
    b'"inactive_dims":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31],'
    b'{"data_sha256":"","dtype":"uint8","inactive_dims":[],"k_steps":0,"lanes":1,"latent":32,"levels":256,'
    b'"likelihood":"bernoulli_context","lr":0.005,"model":{"name":"mnist-grey","sha256":""},"n":1,'
    b'"precision":{"latent_bits":12,"likelihood":24,"posterior":24},"runtime":{"machine":"x86_64","numpy":"2.",'
    b'"onnxruntime":"1.","provider":"CPUExecutionProvider"},"seed":0,"shape":[28,28],"shards":[[1,1,'
)
# Version 5's: the strings version 5 added (the arithmetic record, the runtime's
# instruction set and, for K-step files, torch), then all of ZDICT (still the most
# frequent last). Frozen with version 5 as ZDICT is with version 4 (a test pins it).
ZDICT_V5 = (
    b'"torch":"2.","isa":"asimd asimddp sve i8mm bf16","isa":"x86-64-v4 avx avx2 fma avx512f avx512_vnni",'
    b'"isa":"x86-64-v2 avx","arithmetic":{"kind":"portable","version":1},"isa":"x86-64-v3 avx avx2 fma",'
    b'"arithmetic":{"fingerprint":"","kind":"float"},'
) + ZDICT

# name -> (type, since): the field is required in every version from ``since`` on (None:
# optional). A field from a later version than the file's is not part of its format and
# is ignored, like unknown fields (forward compatibility within a version).
HEADER_FIELDS = {
    "model": (dict, 1),             # {"name": str, "sha256": str}; models not bundled also "dir": str, the folder at compress time (a hint for finding it; never trusted)
    "likelihood": (str, 1),
    "shape": (list, 1),             # per-image shape, e.g. [28, 28]
    "dtype": (str, 1),
    "levels": (int, 1),             # symbol alphabet size per pixel
    "n": (int, 1),
    "lanes": (int, 1),
    "shards": (list, 1),            # [[images, lanes, payload bytes, images sha256 prefix: 16 hex (32 before v3)], ...]
    "precision": (dict, 1),         # {"likelihood": int, "posterior": int, "latent_bits": int}
    "latent": (int, 1),
    "k_steps": (int, 1),
    "lr": (float, 1),
    "seed": (int, 1),
    "inactive_dims": (list, None),  # latent dims the coder leaves out (codec.py); written from version 3
    "runtime": (dict, 1),           # the encoding machine (runtime.describe); informative, never trusted
    "data_sha256": (str, 1),
    "arithmetic": (dict, 5),        # the networks' arithmetic: see the module docstring
}

# The kinds of network arithmetic a version-5 header records: "portable" (integer
# arithmetic carried exactly in float32: identical on every machine) or "float" (exact
# only where the networks' outputs are bit-identical; the fingerprint says whether they are).
ARITHMETIC_KINDS = ("portable", "float")
FINGERPRINT_CHARS = 16


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what a header may claim; raise them for unusually large datasets."""

    max_header_bytes: int = 1 << 20
    max_images: int = 1 << 28
    max_lanes: int = 1 << 16
    max_shards: int = 1 << 16
    max_pixels_per_image: int = 1 << 24
    max_latent: int = 1 << 16
    # K-step files cost K optimiser steps per image to decode; the paper uses K <= 10.
    max_k_steps: int = 100
    # Decoded bytes per payload byte: a legitimate file of near-empty images stays far
    # below this; a 2 kB hostile file cannot make the decoder allocate gigabytes.
    max_expansion: int = 1 << 12


DEFAULT_LIMITS = Limits()


def pack(header: dict, payload: bytes) -> bytes:
    """Serialise a header and payload into container bytes."""
    body = b"".join((prefix(header, len(payload)), payload))
    return body + hashlib.sha256(body).digest()


def prefix(header: dict, payload_len: int) -> bytes:
    """Everything before the payload: magic, version, header length, header, payload length."""
    header = {k: v for k, v in header.items() if k != "version"}  # the prefix holds it
    head = deflate(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    return b"".join((_PREFIX.pack(MAGIC, VERSION, len(head)), head, _U64.pack(payload_len)))


def unpack(blob: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[dict, memoryview]:
    """Parse and check container bytes; return ``(header, payload)``.

    Raises
    ------
    FormatError
        Not a bitsback file, unknown version, truncated, checksum mismatch, or a header
        that is malformed or claims sizes beyond ``limits``.
    """
    view = memoryview(blob)
    header, pstart, plen = read_header(io.BytesIO(view[: _PREFIX.size + limits.max_header_bytes + _U64.size]), len(view), limits)
    body = view[: len(view) - _DIGEST]
    if hashlib.sha256(body).digest() != bytes(view[len(view) - _DIGEST :]):
        raise FormatError("checksum mismatch: the file is corrupt or truncated")
    return header, body[pstart:]


def read_header(f, size: int, limits: Limits = DEFAULT_LIMITS) -> tuple[dict, int, int]:
    """Read and check the header from a binary file object positioned at the start of a
    container of ``size`` bytes; return ``(header, payload offset, payload length)``.

    Reads at most the header's claimed length (itself bounded by ``limits``); the
    checksum is not verified here (see :func:`verify_checksum`).
    """
    first = f.read(_PREFIX.size)
    if len(first) < _PREFIX.size or first[:6] != MAGIC:
        raise FormatError("not a bitsback file (bad magic)")
    _, version, hlen = _PREFIX.unpack(first)
    if version not in READ_VERSIONS:
        raise FormatError(f"unsupported container version {version} (this build reads {', '.join(map(str, READ_VERSIONS))})")
    if hlen > limits.max_header_bytes:
        raise LimitError(f"header claims {hlen} bytes, above the limit {limits.max_header_bytes}")
    if size < _PREFIX.size + hlen + _U64.size + _DIGEST:
        raise FormatError("file is truncated (shorter than its header claims)")
    raw = f.read(hlen + _U64.size)
    if len(raw) < hlen + _U64.size:
        raise FormatError("file is truncated inside its header")
    text = raw[:hlen]
    if version >= 2:
        text = inflate(text, limits.max_header_bytes, version)
    try:
        header = json.loads(text.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"header is not valid JSON: {type(e).__name__}") from None
    (plen,) = _U64.unpack_from(raw, hlen)
    pstart = _PREFIX.size + hlen + _U64.size
    if plen != size - _DIGEST - pstart:
        raise FormatError(f"payload length {plen} does not match the file ({size - _DIGEST - pstart} bytes)")
    check_header(header, limits, version)
    header["version"] = version
    if sum(s[2] for s in header["shards"]) != plen:
        raise FormatError("shard byte counts do not add up to the payload length")
    decoded = header["n"] * _prod(header["shape"])
    if decoded > limits.max_expansion * max(plen, 1):
        raise LimitError(
            f"header claims {decoded} decoded bytes from a {plen}-byte payload "
            f"(more than Limits.max_expansion = {limits.max_expansion} times)"
        )
    return header, pstart, plen


def zdict(version: int) -> bytes | None:
    """The preset dictionary a version's headers are compressed against (None before 4)."""
    return None if version < 4 else ZDICT if version == 4 else ZDICT_V5


def deflate(text: bytes, version: int = VERSION) -> bytes:
    """Header bytes as a version (>= 2) stores them: zlib, against :func:`zdict` from 4."""
    z = zlib.compressobj(9, zdict=zdict(version)) if version >= 4 else zlib.compressobj(9)
    return z.compress(text) + z.flush()


def inflate(data: bytes, limit: int, version: int = VERSION) -> bytes:
    """The inverse of :func:`deflate`, never to more than ``limit`` bytes (no zlib bombs)."""
    d = zlib.decompressobj(zdict=zdict(version)) if version >= 4 else zlib.decompressobj()
    try:
        out = d.decompress(data, limit)
        if d.unconsumed_tail:
            raise LimitError(f"header inflates to more than {limit} bytes (Limits.max_header_bytes)")
        out += d.flush()
    except zlib.error as e:
        raise FormatError(f"header is not valid zlib data: {e}") from None
    if not d.eof or d.unused_data:
        raise FormatError("header is not one complete zlib stream")
    if len(out) > limit:
        raise LimitError(f"header inflates to more than {limit} bytes (Limits.max_header_bytes)")
    return out


def verify_checksum(f, size: int, chunk: int = 1 << 20) -> None:
    """Stream a container file through sha256 in bounded memory; raise FormatError on mismatch."""
    f.seek(0)
    h, left = hashlib.sha256(), size - _DIGEST
    while left > 0:
        b = f.read(min(chunk, left))
        if not b:
            raise FormatError("file is truncated")
        h.update(b)
        left -= len(b)
    if h.digest() != f.read(_DIGEST):
        raise FormatError("checksum mismatch: the file is corrupt or truncated")


def check_header(header: object, limits: Limits = DEFAULT_LIMITS, version: int = VERSION) -> None:
    """Validate field presence, types and ranges; raise FormatError / LimitError."""
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    for name, (typ, since) in HEADER_FIELDS.items():
        if since is not None and since > version:
            continue
        if name not in header:
            if since is not None:
                raise FormatError(f"header lacks field {name!r}")
            continue
        value = header[name]
        ok = isinstance(value, (int, float)) if typ is float else isinstance(value, typ)
        if typ is int and isinstance(value, bool):
            ok = False
        if not ok:
            raise FormatError(f"header field {name!r} has type {type(value).__name__}, expected {typ.__name__}")
    shape = header["shape"]
    if not (1 <= len(shape) <= 4) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise FormatError(f"header shape {shape!r} is not a list of positive integers")
    pixels = 1
    for s in shape:
        pixels *= s
        if pixels > limits.max_pixels_per_image:
            raise LimitError(f"image shape {shape} exceeds {limits.max_pixels_per_image} pixels")
    _range("n", header["n"], 1, limits.max_images)
    _range("lanes", header["lanes"], 1, limits.max_lanes)
    if header["lanes"] > header["n"]:
        raise FormatError("header claims more lanes than images")
    _range("latent", header["latent"], 1, limits.max_latent)
    _range("k_steps", header["k_steps"], 0, limits.max_k_steps)
    _range("levels", header["levels"], 2, 1 << 16)
    if not (math.isfinite(header["lr"]) and 0 <= header["lr"] <= 1e6):
        raise FormatError(f"header lr = {header['lr']!r} is not a finite learning rate in [0, 1e6]")
    if header["dtype"] != "uint8":
        raise FormatError(f"unsupported dtype {header['dtype']!r}")
    prec = header["precision"]
    for key in ("likelihood", "posterior", "latent_bits"):
        v = prec.get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise FormatError(f"header precision lacks integer {key!r}")
    # What the coder accepts: b <= 16 bucket bits, posterior precision >= b, and a
    # likelihood precision that leaves every one of `levels` symbols a frequency >= 1.
    _range("precision.latent_bits", prec["latent_bits"], 1, 16)
    _range("precision.posterior", prec["posterior"], prec["latent_bits"], 31)
    min_lik = 9 if header["levels"] > 2 else 1
    _range("precision.likelihood", prec["likelihood"], min_lik, 31)
    shards = header["shards"]
    if not 1 <= len(shards) <= min(limits.max_shards, header["lanes"]):
        raise FormatError(f"header lists {len(shards)} shards for {header['lanes']} lanes")
    images = lanes = 0
    for s in shards:
        if not (
            isinstance(s, list)
            and len(s) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in s[:3])
            and isinstance(s[3], str)
            and len(s[3]) == (32 if version < 3 else 16)
            and all(c in "0123456789abcdef" for c in s[3])
        ):
            raise FormatError(f"malformed shard entry {str(s)[:80]}")
        count, sl, nbytes, _ = s
        if not (1 <= sl <= count and nbytes >= 0):
            raise FormatError(f"shard entry {s!r} is inconsistent")
        images += count
        lanes += sl
    if images != header["n"] or lanes != header["lanes"]:
        raise FormatError("shard entries do not add up to the header's n and lanes")
    model = header["model"]
    if not isinstance(model.get("name"), str) or not isinstance(model.get("sha256"), str):
        raise FormatError("header model must have string 'name' and 'sha256'")
    if version >= 5:
        _check_arithmetic(header["arithmetic"], header["k_steps"])


def _check_arithmetic(a: dict, k_steps: int) -> None:
    """The "arithmetic" record's shape (see the module docstring); whether this build can
    decode it is the reader's question (codec.Codec.check_arithmetic)."""
    kind = a.get("kind")
    if kind == "portable":
        v = a.get("version")
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise FormatError(f"header arithmetic: portable 'version' must be an integer >= 1, not {str(v)[:20]!r}")
        # K > 0 runs torch's float optimiser on every image: such a file is never portable
        if k_steps:
            raise FormatError("header arithmetic is portable but k_steps > 0 (K-step files use float arithmetic)")
        keys = {"kind", "version"}
    elif kind == "float":
        fp = a.get("fingerprint")
        if not (isinstance(fp, str) and len(fp) == FINGERPRINT_CHARS and all(c in "0123456789abcdef" for c in fp)):
            raise FormatError(f"header arithmetic: 'fingerprint' must be {FINGERPRINT_CHARS} lowercase hex digits")
        keys = {"kind", "fingerprint"}
    else:
        raise FormatError(f"header arithmetic kind {str(kind)[:20]!r} is not one of {', '.join(ARITHMETIC_KINDS)}")
    if set(a) != keys:
        raise FormatError(f"header arithmetic has keys {sorted(map(str, a))[:5]}, expected {sorted(keys)}")


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        exc = LimitError if value > hi else FormatError
        raise exc(f"header field {name} = {value} outside [{lo}, {hi}]")
