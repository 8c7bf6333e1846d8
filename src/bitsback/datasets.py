"""Image dataset readers and writers (numpy only; no torch).

``load(path)`` returns a uint8 array shaped (N, H, W) or (N, C, H, W), dispatching on the
file format; ``save(path, images)`` writes .npy, .npz, .idx / .idx.gz or a folder of PNGs
atomically. Every malformed input raises :class:`bitsback.errors.DatasetError` naming the file.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .io.atomic import write_bytes

__all__ = ["load", "save", "binarize", "binarize_stochastic", "DatasetError"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_ELEMS = 1 << 34  # refuse headers claiming absurd sizes before allocating

try:    # ISA-L's inflate reads the same gzip streams about twice as fast as zlib's
    from isal import igzip as _gunzip
    from isal.isal_zlib import error as _InflateError
except ImportError:  # pragma: no cover - isal is a dependency; a platform without its wheel
    _gunzip, _InflateError = gzip, zlib.error

# What reading a corrupt or truncated gzip stream raises, whichever inflater reads it.
GZIP_ERRORS = (OSError, EOFError, zlib.error, _InflateError)


def gzip_open(path):
    """A gzip file opened for binary reading (errors: GZIP_ERRORS)."""
    return _gunzip.open(path, "rb")


def binarize(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Threshold binarisation as in the paper's code: ``np.round(x / 255.)`` as uint8,
    written into ``out`` (a uint8 array of x's shape; may be x itself) when given."""
    x = np.asarray(x)
    if x.dtype == np.uint8:  # the same values without a float copy: v / 255 rounds up iff v >= 128
        if out is None:
            return (x >= 128).view(np.uint8)
        np.greater_equal(x, 128, out=out.view(np.bool_))
        return out
    if out is None:
        return np.round(x / 255.0).astype(np.uint8)
    out[...] = np.round(x / 255.0)
    return out


def binarize_stochastic(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Bernoulli(x / 255) binarisation with a fixed seed (reproducible), as uint8."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    return (rng.random(x.shape) < x / 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- readers
def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = _gunzip.decompress(raw)
            except GZIP_ERRORS as e:
                raise DatasetError(f"{path}: corrupt or truncated gzip stream ({e})") from e
        return raw
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    n = math.prod(shape)  # python ints: no overflow on hostile headers
    if n > _MAX_ELEMS:
        raise DatasetError(f"{path}: header claims {n} elements")
    need = 4 + 4 * ndim + n * dtype.itemsize
    if len(raw) < need:
        raise DatasetError(f"{path}: truncated IDX data ({len(raw)} of {need} bytes)")
    if len(raw) > need:
        raise DatasetError(f"{path}: {len(raw) - need} trailing bytes after IDX data (shape mismatch)")
    arr = np.frombuffer(raw, dtype=dtype, count=n, offset=4 + 4 * ndim).reshape(shape)
    return arr


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer) and arr.size and (arr.min() < 0 or arr.max() > 255):
        raise DatasetError(f"{path}: integer values outside 0..255")
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255
                         or np.any(arr != np.round(arr))):
            raise DatasetError(f"{path}: float data is not integral in 0..255")
    return arr.astype(np.uint8)


def _check_images(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim not in (3, 4):
        raise DatasetError(f"{path}: expected images (N,H,W) or (N,C,H,W), got shape {arr.shape}")
    return _to_uint8(arr, path)


def _load_amat(path: Path) -> np.ndarray:
    """Larochelle binarised MNIST: one image per line, 784 whitespace-separated 0/1."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read .amat ({e})") from e
    rows = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not rows:
        raise DatasetError(f"{path}: empty .amat file")
    width = len(rows[0])
    side = int(round(width ** 0.5))
    if side * side != width or any(len(r) != width for r in rows):
        raise DatasetError(f"{path}: .amat rows must all hold the same square number of values")
    try:
        arr = np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise DatasetError(f"{path}: non-numeric value in .amat ({e})") from e
    if not np.all((arr == 0) | (arr == 1)):
        raise DatasetError(f"{path}: .amat values must be 0 or 1")
    return arr.astype(np.uint8).reshape(len(rows), side, side)


def _load_cifar(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # noqa: S301 - the user's own dataset file
    except Exception as e:  # pickle raises many types on garbage
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({e})") from e
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: CIFAR batch is not a dict")
    data = d.get(b"data", d.get("data"))
    if data is None:
        raise DatasetError(f"{path}: CIFAR batch has no 'data' entry")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: CIFAR data must be (N, 3072), got {data.shape}")
    return _to_uint8(data, path).reshape(-1, 3, 32, 32)


def png_files(path: Path) -> list[Path]:
    """The .png files of a folder, sorted by name (the order of the dataset's images)."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise DatasetError(f"{path}: folder holds no .png files")
    return files


def read_png(p: Path) -> np.ndarray:
    """One PNG as uint8 (H, W) or (C, H, W)."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover
        raise DatasetError(f"{p}: reading PNG files needs pillow") from e
    try:
        with Image.open(p) as im:
            a = np.asarray(im)
    except Exception as e:
        raise DatasetError(f"{p}: cannot decode PNG ({e})") from e
    if a.ndim == 3:
        a = a.transpose(2, 0, 1)
    return _to_uint8(a, p)


def _load_png_dir(path: Path) -> np.ndarray:
    imgs = []
    for p in png_files(path):
        a = read_png(p)
        if imgs and a.shape != imgs[0].shape:
            raise DatasetError(f"{p}: shape {a.shape} differs from {imgs[0].shape} (shape mismatch)")
        imgs.append(a)
    return np.stack(imgs)


def load(path) -> np.ndarray:
    """Load an image dataset as uint8 (N, H, W) or (N, C, H, W).

    Formats: IDX (raw or .gz; MNIST / Fashion-MNIST), Larochelle ``.amat``, CIFAR-10 python
    pickle batches (``data_batch_*``, ``test_batch``), ``.npy`` / ``.npz`` (first array, or
    the key ``images`` / ``x``), and a folder of PNG files (sorted by name).

    Raises
    ------
    DatasetError
        Missing file, wrong magic, truncated data, shape mismatch, values outside 0..255.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.is_dir():
        return _load_png_dir(path)
    name = path.name.lower()
    if name.endswith(".amat"):
        return _load_amat(path)
    if name.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:
            raise DatasetError(f"{path}: not a valid .npy file ({e})") from e
        return _check_images(arr, path)
    if name.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if not keys:
                    raise DatasetError(f"{path}: empty .npz")
                key = next((k for k in ("images", "x") if k in keys), keys[0])
                arr = z[key]
        except DatasetError:
            raise
        except Exception as e:
            raise DatasetError(f"{path}: not a valid .npz file ({e})") from e
        return _check_images(arr, path)
    if name.startswith(("data_batch", "test_batch")) or name.endswith((".pkl", ".pickle")):
        return _load_cifar(path)
    raw = _read_bytes(path)
    if raw[:6] == b"\x93NUMPY":
        return _check_images(np.load(io.BytesIO(raw), allow_pickle=False), path)
    arr = _parse_idx(raw, path)
    return _check_images(arr, path)


# ----------------------------------------------------------------------------- writers
def _write(path: Path, data: bytes) -> None:
    """``data`` to ``path`` by the atomic-write rule (bitsback.io.atomic), creating missing
    folders; an existing file is replaced. Not flushed to disk one by one: a folder of
    PNGs is many small files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data, force=True, durable=False)


def _idx_bytes(images: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, images.ndim]) + struct.pack(">" + "I" * images.ndim, *images.shape)
    return head + np.ascontiguousarray(images, dtype=np.uint8).tobytes()


def save(path, images: np.ndarray) -> None:
    """Write uint8 images, each file atomically (bitsback.io.atomic: complete or not at all).

    The format follows the suffix: ``.npy``, ``.npz`` (key ``images``), ``.idx``,
    ``.idx.gz`` / ``-ubyte.gz`` (gzip IDX), ``*-ubyte`` (IDX), or a path ending in ``/``
    or without suffix -> folder of PNGs named 000000.png, ...
    """
    path = Path(path)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = _to_uint8(images, path)
    if images.ndim not in (3, 4):
        raise DatasetError(f"{path}: expected images (N,H,W) or (N,C,H,W), got shape {images.shape}")
    name = path.name.lower()
    if name.endswith(".npy"):
        buf = io.BytesIO()
        np.save(buf, images)
        _write(path, buf.getvalue())
    elif name.endswith(".npz"):
        buf = io.BytesIO()
        np.savez_compressed(buf, images=images)
        _write(path, buf.getvalue())
    elif name.endswith(".gz"):
        _write(path, gzip.compress(_idx_bytes(images), compresslevel=9, mtime=0))
    elif name.endswith(".idx") or name.endswith("-ubyte"):
        _write(path, _idx_bytes(images))
    elif str(path).endswith(os.sep) or path.suffix == "" or path.is_dir():
        _save_png_dir(path, images)
    else:
        raise DatasetError(f"{path}: unknown output format (use .npy, .npz, .idx, .idx.gz or a folder)")


def _save_png_dir(path: Path, images: np.ndarray) -> None:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(images) - 1)))
    for i, im in enumerate(images):
        if im.ndim == 3:
            im = im.transpose(1, 2, 0)
            if im.shape[2] == 1:
                im = im[:, :, 0]
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(im)).save(buf, format="PNG")
        _write(path / f"{i:0{width}d}.png", buf.getvalue())
