"""Classical lossless codecs on the same images, for side-by-side rates and speeds.

Whole-array codecs (gzip, bz2, lzma, zstd) compress the raw uint8 array in one stream;
image codecs (PNG, WebP lossless, JPEG-XL) compress each image separately, as a dataset
of image files would be stored. Binary images go to PNG as 1-bit images (to WebP and
JPEG-XL as 0/255 greyscale). Every byte of every output is counted.

zstd needs the PyPI package ``zstandard``; JPEG-XL needs ``pillow-jxl-plugin`` (or
``imagecodecs`` built with libjxl); both are in the ``bench`` extra. Codecs whose
package is missing are left out of :func:`available`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import time

import numpy as np


def _whole(fn):
    def run(x: np.ndarray) -> int:
        return len(fn(np.ascontiguousarray(x).tobytes()))

    return run


def _pil(fmt: str, **opts):
    def run(x: np.ndarray) -> int:
        from PIL import Image

        binary = x.max() <= 1
        total = 0
        for img in x:
            im = Image.fromarray((img * 255).astype(np.uint8) if binary else img)
            if binary and fmt == "PNG":
                im = im.convert("1")
            buf = io.BytesIO()
            im.save(buf, format=fmt, **opts)
            total += buf.tell()
        return total

    return run


PNG = "PNG (optimize)"


def available() -> dict:
    """name -> function(images uint8 (N, H, W)) -> compressed bytes; only codecs importable here."""
    codecs = {
        "gzip -9": _whole(lambda b: gzip.compress(b, 9, mtime=0)),
        "bz2 -9": _whole(lambda b: bz2.compress(b, 9)),
        "lzma -9e": _whole(lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)),
    }
    try:
        import zstandard

        codecs["zstd -19"] = _whole(lambda b: zstandard.ZstdCompressor(level=19).compress(b))
    except ImportError:
        pass
    try:
        import PIL  # noqa: F401

        codecs[PNG] = _pil("PNG", optimize=True)
        from PIL import features

        if features.check("webp"):
            codecs["WebP lossless"] = _pil("WEBP", lossless=True, quality=100, method=6)
    except ImportError:
        pass
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow; PyPI pillow-jxl-plugin)

        codecs["JPEG-XL lossless"] = _pil("JXL", lossless=True, effort=7)
    except ImportError:
        try:  # PyPI imagecodecs, when it was built with libjxl
            import imagecodecs

            if imagecodecs.JPEGXL.available:
                codecs["JPEG-XL lossless"] = _per_image(lambda im: imagecodecs.jpegxl_encode(im, lossless=True, effort=7))
        except (ImportError, AttributeError):
            pass
    return codecs


def _per_image(encode):
    def run(x: np.ndarray) -> int:
        binary = x.max() <= 1
        return sum(len(encode(np.ascontiguousarray(img * 255 if binary else img, dtype=np.uint8))) for img in x)

    return run


def measure(images: np.ndarray, names=None) -> list[dict]:
    """Rate (bits/dim) and images/s of each available codec on ``images``."""
    rows = []
    dims = images.size
    for name, fn in available().items():
        if names and name not in names:
            continue
        t0 = time.perf_counter()
        nbytes = fn(images)
        dt = time.perf_counter() - t0
        rows.append({"codec": name, "bytes": nbytes, "bits_per_dim": 8 * nbytes / dims, "images_per_second": len(images) / dt})
    return rows
