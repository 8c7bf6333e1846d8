import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from bitsback import datasets
from bitsback.errors import BitsbackError, DatasetError

FIX = Path(__file__).parent / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"


def test_fixture_loads():
    x = datasets.load(FIX)
    assert x.shape == (64, 28, 28) and x.dtype == np.uint8
    assert x.max() == 255 and x.min() == 0


def test_binarize_matches_paper_convention():
    x = datasets.load(FIX)
    b = datasets.binarize(x)
    assert b.dtype == np.uint8 and set(np.unique(b)) <= {0, 1}
    np.testing.assert_array_equal(b, np.round(x / 255.0))
    assert np.all(b[x >= 128] == 1) and np.all(b[x < 128] == 0)
    every = np.arange(256, dtype=np.uint8)   # the uint8 fast path against the float formula
    np.testing.assert_array_equal(datasets.binarize(every), np.round(every / 255.0).astype(np.uint8))
    np.testing.assert_array_equal(datasets.binarize(every.astype(np.float32)), datasets.binarize(every))


def test_binarize_stochastic_is_seeded():
    x = datasets.load(FIX)[:4]
    a, b = datasets.binarize_stochastic(x, 1), datasets.binarize_stochastic(x, 1)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0, 1}
    assert np.all(a[x == 0] == 0) and np.all(a[x == 255] == 1)


@pytest.mark.parametrize("name", ["a.npy", "a.npz", "a.idx", "a.idx.gz", "pngs"])
def test_save_load_roundtrip(tmp_path, name):
    x = datasets.load(FIX)[:5]
    datasets.save(tmp_path / name, x)
    np.testing.assert_array_equal(datasets.load(tmp_path / name), x)


def test_roundtrip_rgb(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    for name in ("c.npy", "c.idx.gz", "cpng"):
        datasets.save(tmp_path / name, x)
        np.testing.assert_array_equal(datasets.load(tmp_path / name), x)


def test_amat(tmp_path):
    x = datasets.binarize(datasets.load(FIX)[:3])
    p = tmp_path / "b.amat"
    p.write_text("\n".join(" ".join(str(v) for v in im.ravel()) for im in x) + "\n")
    np.testing.assert_array_equal(datasets.load(p), x)
    p.write_text("0 1 0\n")
    with pytest.raises(DatasetError, match="b.amat"):
        datasets.load(p)
    p.write_text("0 1 0 2\n")
    with pytest.raises(DatasetError):
        datasets.load(p)


def test_cifar_batch(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1, 2, 3]}))
    x = datasets.load(p)
    assert x.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(x.reshape(4, -1), data)
    p.write_bytes(pickle.dumps({b"data": data[:, :100]}))
    with pytest.raises(DatasetError, match="data_batch_1"):
        datasets.load(p)


def _idx(shape, payload=None):
    n = int(np.prod(shape))
    payload = bytes(n) if payload is None else payload
    return bytes([0, 0, 8, len(shape)]) + struct.pack(">" + "I" * len(shape), *shape) + payload


@pytest.mark.parametrize("raw,msg", [
    (b"\x00\x00\x07\x03" + bytes(12), "magic"),            # bad dtype code
    (b"PK\x03\x04" + bytes(20), "magic"),                  # not IDX at all
    (b"\x00\x00\x08\x03\x00\x00", "truncated"),            # header cut
    (_idx((2, 4, 4))[:-5], "truncated"),                    # data cut
    (_idx((2, 4, 4)) + b"xx", "trailing"),                  # shape mismatch
    (_idx((16,)), "shape"),                                 # not images
])
def test_malformed_idx(tmp_path, raw, msg):
    p = tmp_path / "bad-ubyte"
    p.write_bytes(raw)
    with pytest.raises(DatasetError, match=msg) as e:
        datasets.load(p)
    assert "bad-ubyte" in str(e.value)
    assert isinstance(e.value, BitsbackError)


def test_truncated_gzip(tmp_path):
    raw = gzip.compress(_idx((2, 4, 4), bytes(range(32))))
    p = tmp_path / "t.idx.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="t.idx.gz"):
        datasets.load(p)


def test_corrupt_deflate_stream(tmp_path):
    raw = bytearray(gzip.compress(_idx((64, 8, 8), bytes(range(256)) * 16)))
    raw[10:18] = b"\xff" * 8        # the deflate stream's first bytes, right after the 10-byte gzip header
    p = tmp_path / "c.idx.gz"
    p.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="c.idx.gz"):
        datasets.load(p)


def test_huge_header_refused(tmp_path):
    p = tmp_path / "huge.idx"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31, 2**31, 2**31))
    with pytest.raises(DatasetError):
        datasets.load(p)


def test_bad_npy_and_missing(tmp_path):
    p = tmp_path / "x.npy"
    p.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match="x.npy"):
        datasets.load(p)
    np.save(p, np.zeros((3, 4)))  # 2-D: not images
    with pytest.raises(DatasetError, match="shape"):
        datasets.load(p)
    np.save(p, np.full((1, 2, 2), 300, dtype=np.int32))
    with pytest.raises(DatasetError, match="0..255"):
        datasets.load(p)
    with pytest.raises(DatasetError, match="no such"):
        datasets.load(tmp_path / "missing.idx")


def test_png_folder_shape_mismatch(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(d / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(d / "b.png")
    with pytest.raises(DatasetError, match="shape mismatch"):
        datasets.load(d)
    (d / "c.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError):
        datasets.load(d)


def test_save_is_atomic_and_rejects_unknown(tmp_path):
    x = datasets.load(FIX)[:2]
    with pytest.raises(DatasetError):
        datasets.save(tmp_path / "a.jpeg", x)
    datasets.save(tmp_path / "a.npy", x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
