"""Lazy dataset readers: images read by index range, in order, without loading the whole set.

``open_source`` picks one by the path: a memory-mapped .npy, a gzip IDX file streamed (and
checked to its stream's end), a folder of PNGs read file by file, several inputs one after
another; other formats are loaded whole by ``datasets.load``. The engine reads each group
of shards straight into a worker's shared slot through ``Source.read(lo, hi, out)``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .. import datasets
from ..errors import DatasetError


class Source:
    """Images read by index range, in increasing order, without loading the whole set."""

    n: int
    shape: tuple

    def read(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """Images lo..hi-1 (uint8) written into ``out``, a contiguous uint8 array of
        (hi - lo) * prod(shape) elements; returns ``out`` shaped (hi - lo, *shape)."""
        raise NotImplementedError


class ArraySource(Source):
    def __init__(self, array):
        self.array, self.n, self.shape = array, len(array), tuple(array.shape[1:])

    def read(self, lo, hi, out):
        out = out.reshape((hi - lo, *self.shape))
        out[...] = self.array[lo:hi]
        return out


class GzipIdxSource(Source):
    """A gzip IDX file read sequentially (gzip cannot seek cheaply). The stream's end
    (its CRC and length, and nothing after the last image) is checked when the last image
    is read, so a corrupt file fails before its output is written."""

    def __init__(self, path):
        self.path = Path(path)
        self.f = datasets.gzip_open(self.path)
        try:
            head = self.f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08:
                raise DatasetError(f"{self.path}: not an unsigned-byte IDX file")
            dims = struct.unpack(f">{head[3]}I", self.f.read(4 * head[3]))
        except (*datasets.GZIP_ERRORS, struct.error) as e:
            raise DatasetError(f"{self.path}: unreadable IDX header ({e})") from None
        if len(dims) < 2:
            raise DatasetError(f"{self.path}: IDX file holds no images")
        self.n, self.shape, self.pos = dims[0], tuple(dims[1:]), 0
        self.size = int(np.prod(self.shape))

    def read(self, lo, hi, out):
        if lo != self.pos:
            raise ValueError("GzipIdxSource reads in order")
        out = out.reshape(-1)
        try:
            got = self.f.readinto(out)
            rest = self.f.read(1) if hi == self.n and got == out.size else b""
        except datasets.GZIP_ERRORS as e:
            raise DatasetError(f"{self.path}: corrupt or truncated gzip stream ({e})") from None
        if got != out.size:
            raise DatasetError(f"{self.path}: truncated (expected {self.n} images)")
        if rest:
            raise DatasetError(f"{self.path}: data after the {self.n} images its header declares")
        self.pos = hi
        return out.reshape((hi - lo, *self.shape))


class ConcatSource(Source):
    def __init__(self, parts):
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise DatasetError(f"inputs have different image shapes: {sorted(shapes)}")
        self.parts, self.shape = parts, shapes.pop()
        self.starts = np.cumsum([0] + [p.n for p in parts])
        self.n = int(self.starts[-1])

    def read(self, lo, hi, out):
        out, size = out.reshape(-1), int(np.prod(self.shape))
        for p, s in zip(self.parts, self.starts[:-1]):
            a, b = max(lo, s), min(hi, s + p.n)
            if a < b:
                p.read(a - s, b - s, out[(a - lo) * size : (b - lo) * size])
        return out.reshape((hi - lo, *self.shape))


def open_source(path) -> Source:
    """A lazy reader for .npy (memory-mapped), raw or gzip IDX, or a folder of PNGs;
    other formats are loaded whole."""
    if isinstance(path, (list, tuple)):
        parts = [open_source(p) for p in path]
        return parts[0] if len(parts) == 1 else ConcatSource(parts)
    p = Path(path)
    name = p.name.lower()
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if name.endswith(".npy"):
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DatasetError(f"{p}: not a readable .npy file ({e})") from None
        if a.dtype != np.uint8:
            a = datasets.load(p)
        return ArraySource(a)
    if name.endswith(".gz") and not name.endswith(".tar.gz") and is_gzip_idx(p):
        return GzipIdxSource(p)
    if p.is_dir():
        return PngFolderSource(p)
    return ArraySource(datasets.load(p))


def is_gzip_idx(p: Path) -> bool:
    try:
        with datasets.gzip_open(p) as f:
            h = f.read(3)
        return h == b"\0\0\x08"
    except datasets.GZIP_ERRORS:
        return False


class PngFolderSource(Source):
    def __init__(self, path):
        self.files = datasets.png_files(path)
        self.n, self.shape = len(self.files), datasets.read_png(self.files[0]).shape

    def read(self, lo, hi, out):
        out = out.reshape((hi - lo, *self.shape))
        for i, f in enumerate(self.files[lo:hi]):
            a = datasets.read_png(f)
            if a.shape != self.shape:
                raise DatasetError(f"{f}: shape {a.shape} differs from {self.shape} (shape mismatch)")
            out[i] = a
        return out
