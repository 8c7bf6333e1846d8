"""One Codec shared by 8 threads, each compressing and decompressing its own batches.

Batches vary in size, lane count is left to the codec (so some calls take the lane-parallel
numba paths and the shard thread pool while others are serial), and every thread checks
every round trip exactly. Each thread also decodes another thread's file, so a decode never
depends on which thread made it.
"""

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import fuzz  # noqa: E402

import bitsback  # noqa: E402
from bitsback import datasets  # noqa: E402

DATA = ROOT / "data" / "t10k-images-idx3-ubyte.gz"
THREADS = 8


from _models import bundled  # noqa: E402


@pytest.fixture(scope="module")
def grey():
    return datasets.load(DATA)[:2400]


def _hammer(codec, batches, rounds):
    barrier = threading.Barrier(len(batches))
    blobs = [None] * len(batches)

    def work(i):
        barrier.wait()                        # start together to maximise overlap
        x = batches[i]
        for r in range(rounds):
            blob = codec.compress(x)
            blobs[i] = blob
            out = codec.decompress(blob)
            assert out.shape == x.shape and np.array_equal(out, x), f"thread {i} round {r}"
        barrier.wait()
        j = (i + 1) % len(batches)             # decode a file another thread made
        assert np.array_equal(codec.decompress(blobs[j]), batches[j])
        return len(blobs[i])

    with ThreadPoolExecutor(len(batches)) as pool:
        sizes = list(pool.map(work, range(len(batches))))
    return sizes, blobs


@pytest.mark.parametrize("lanes", [None, 100], ids=["auto-lanes", "100-lanes"])
@pytest.mark.parametrize("name", ["mnist-binary", "mnist-grey"])
def test_one_codec_shared_by_8_threads(grey, name, lanes):
    # 100 lanes x 784 pixels is above cdf's PARALLEL_MIN_SYMBOLS: numba's parallel kernels
    # are then launched from 8 Python threads at once.
    model = bundled(name)
    x = datasets.binarize(grey) if name == "mnist-binary" else grey
    codec = bitsback.load(model, device="cpu", lanes=lanes)
    # sizes 1 .. 300: batch-of-one, ragged ends, and batches big enough for the parallel paths
    sizes = [1, 3, 17, 64, 100, 150, 200, 300]
    starts = np.cumsum([0] + sizes[:-1])
    batches = [np.ascontiguousarray(x[s : s + n]) for s, n in zip(starts, sizes)]
    _, blobs = _hammer(codec, batches, rounds=3)
    # the same batches compressed serially give the same bytes (no cross-thread state)
    for b, blob in zip(batches, blobs):
        assert codec.compress(b) == blob


def test_shared_codec_with_k_steps(grey):
    pytest.importorskip("torch")
    model = bundled("mnist-binary")
    x = datasets.binarize(grey)
    codec = bitsback.load(model, device="cpu", k_steps=2, lanes=2)
    batches = [np.ascontiguousarray(x[3 * i : 3 * i + 3]) for i in range(THREADS)]
    _hammer(codec, batches, rounds=1)


def test_shared_codec_mixed_with_decode_errors(grey):
    """Threads feeding corrupt files do not disturb threads doing real work."""
    from bitsback.errors import BitsbackError

    model = bundled("mnist-binary")
    x = datasets.binarize(grey)
    codec = bitsback.load(model, device="cpu")
    good = codec.compress(x[:40])
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 1
    bad = bytes(bad)

    def work(i):
        for _ in range(5):
            if i % 2:
                with pytest.raises(BitsbackError):
                    codec.decompress(bad)
            else:
                assert np.array_equal(codec.decompress(good), x[:40])

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(THREADS)))
