"""Shards, streaming, parallel workers and the Ray engine: same bytes, exact images."""

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from bitsback import container, datasets, engine
from bitsback.errors import DatasetError, FormatError, IntegrityError

DATA = Path(__file__).resolve().parents[1] / "data" / "t10k-images-idx3-ubyte.gz"
MODEL = "mnist-binary"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    x = datasets.binarize(datasets.load(DATA)[:700])
    np.save(d / "x.npy", x)
    # the same images as a gzip IDX file and split over two raw IDX files
    datasets.save(d / "x.idx.gz", x)
    datasets.save(d / "a.idx", x[:300])
    datasets.save(d / "b.idx", x[300:])
    datasets.save(d / "png", x)     # a folder of PNGs
    return d, x


@pytest.fixture(scope="module")
def one_worker(work):
    d, _ = work
    engine.compress(d / "x.npy", d / "w1.bba", MODEL, workers=1, lanes=24)
    return (d / "w1.bba").read_bytes()


def test_plan_has_several_shards(one_worker):
    header, _ = container.unpack(one_worker)
    assert len(header["shards"]) >= 2 and header["lanes"] == 24


def test_workers_and_inputs_do_not_change_the_bytes(work, one_worker):
    d, _ = work
    engine.compress(d / "x.npy", d / "w2.bba", MODEL, workers=2, lanes=24)
    engine.compress(d / "x.idx.gz", d / "gz.bba", MODEL, workers=2, lanes=24)
    engine.compress([d / "a.idx", d / "b.idx"], d / "ab.bba", MODEL, workers=1, lanes=24)
    engine.compress(d / "png", d / "png.bba", MODEL, workers=2, lanes=24)
    for name in ("w2.bba", "gz.bba", "ab.bba", "png.bba"):
        assert (d / name).read_bytes() == one_worker, name


def test_decompress_whole_and_ranges(work, one_worker):
    d, x = work
    engine.decompress(d / "w1.bba", d / "out.npy", workers=2)
    assert np.array_equal(np.load(d / "out.npy"), x)
    for lo, hi, name in ((0, 1, "r0.npy"), (250, 520, "r1.npy"), (699, 700, "r2.idx.gz")):
        engine.decompress(d / "w1.bba", d / name, start=lo, stop=hi, workers=1)
        assert np.array_equal(datasets.load(d / name), x[lo:hi]), name


def test_range_decode_reads_only_its_shards(work, one_worker):
    """Corrupting another shard's bytes does not affect a range in the first shard, while
    the whole-file decode refuses the file."""
    d, x = work
    header, payload = container.unpack(one_worker)
    body = bytearray(one_worker[:-32])
    last = len(body) - header["shards"][-1][2] // 2
    body[last] ^= 0xFF
    bad = bytes(body) + hashlib.sha256(bytes(body)).digest()
    (d / "bad.bba").write_bytes(bad)
    engine.decompress(d / "bad.bba", d / "first.npy", start=0, stop=10, workers=1)
    assert np.array_equal(np.load(d / "first.npy"), x[:10])
    with pytest.raises((IntegrityError, FormatError)):
        engine.decompress(d / "bad.bba", d / "all.npy", start=header["n"] - 5, workers=1)
    assert not (d / "all.npy").exists()


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_two_workers_pass_images_through_shared_slots(work, one_worker, monkeypatch):
    """Forked workers get a group's images and return a decode's through shared memory
    slots (a spy counts them): same bytes, exact images, a worker's failure still a typed
    error with no output, and the slots released with the pool."""
    d, x = work
    made, real = [], engine._Slots.__init__

    def spy(self, count, size):
        made.append((count, size))
        real(self, count, size)

    monkeypatch.setattr(engine._Slots, "__init__", spy)
    engine.compress(d / "x.npy", d / "s.bba", MODEL, workers=2, lanes=24, force=True)
    engine.decompress(d / "s.bba", d / "s.npy", workers=2, force=True)
    assert (d / "s.bba").read_bytes() == one_worker and np.array_equal(np.load(d / "s.npy"), x)
    header, _ = container.unpack(one_worker)
    biggest = max(c for c, _, _, _ in header["shards"]) * 784
    assert [c for c, _ in made] == [4, 4] and all(size >= biggest for _, size in made)
    assert engine._slots is None
    body = bytearray(one_worker[:-32])
    body[len(body) - header["shards"][-1][2] // 2] ^= 0xFF      # inside the last shard
    (d / "bad2.bba").write_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    with pytest.raises((IntegrityError, FormatError)):
        engine.decompress(d / "bad2.bba", d / "bad2.npy", start=0, workers=2)
    assert not (d / "bad2.npy").exists() and engine._slots is None and len(made) == 3


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_workers_pickle_when_slots_cannot_be_mapped(work, one_worker, monkeypatch):
    """A header may claim shards too big to map: the pool then falls back to pickles."""
    d, x = work

    def refuse(self, count, size):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(engine._Slots, "__init__", refuse)
    engine.compress(d / "x.npy", d / "p.bba", MODEL, workers=2, lanes=24, force=True)
    engine.decompress(d / "p.bba", d / "p.npy", workers=2, force=True)
    assert (d / "p.bba").read_bytes() == one_worker and np.array_equal(np.load(d / "p.npy"), x)
    assert engine._slots is None


def test_existing_output_kept(work, one_worker):
    d, _ = work
    (d / "keep.npy").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        engine.decompress(d / "w1.bba", d / "keep.npy")
    assert (d / "keep.npy").read_bytes() == b"keep"


def test_truncated_file(work, one_worker):
    d, _ = work
    (d / "t.bba").write_bytes(one_worker[:-100])
    with pytest.raises(FormatError):
        engine.decompress(d / "t.bba", d / "t.npy")
    assert not (d / "t.npy").exists()


def _broken_gzips(raw: bytes) -> dict:
    """The gzip file ``raw`` cut short, with a flipped bit inside its deflate stream, with
    a wrong CRC in its trailer, and with bytes after its end."""
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x10
    bad_crc = bytearray(raw)
    bad_crc[-6] ^= 0x01
    return {"truncated": raw[: len(raw) * 2 // 3], "flipped": bytes(flipped), "bad_crc": bytes(bad_crc),
            "trailing": raw + b"more bytes"}


@pytest.mark.parametrize("kind", ["truncated", "flipped", "bad_crc", "trailing"])
def test_broken_gzip_input_is_refused_and_writes_nothing(work, kind):
    """The last image is followed by the stream's end check: a corrupt input fails with a
    typed error naming it, whichever part is broken, and leaves no output."""
    d, _ = work
    src = d / f"broken_{kind}.idx.gz"
    src.write_bytes(_broken_gzips((d / "x.idx.gz").read_bytes())[kind])
    with pytest.raises(DatasetError, match=src.name):
        engine.compress(src, d / f"broken_{kind}.bba", MODEL, workers=1, lanes=24)
    assert not list(d.glob(f"*broken_{kind}.bba*"))


def test_broken_png_in_a_folder_is_refused_and_writes_nothing(work, tmp_path):
    d, x = work
    datasets.save(tmp_path / "png", x[:40])
    (tmp_path / "png" / "000017.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="000017.png"):
        engine.compress(tmp_path / "png", tmp_path / "p.bba", MODEL, workers=2, lanes=4)
    assert not list(tmp_path.glob("*p.bba*"))


def test_ray_engine_writes_the_same_bytes(work, one_worker):
    ray = pytest.importorskip("ray")
    d, x = work
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        engine.compress(d / "x.npy", d / "ray.bba", MODEL, engine="ray", lanes=24)
        assert (d / "ray.bba").read_bytes() == one_worker
        engine.decompress(d / "ray.bba", d / "ray.npy", engine="ray")
        assert np.array_equal(np.load(d / "ray.npy"), x)
    finally:
        ray.shutdown()


def test_compress_verifies_by_default_on_cuda_only(work, one_worker, monkeypatch):
    """Batch invariance is measured on CPU, not on CUDA: there compress decodes its output
    before writing it unless told otherwise; on CPU it does not unless told."""
    from bitsback.codec import Codec

    d, x = work
    checks = []
    real = engine.decompress
    monkeypatch.setattr(engine, "decompress", lambda *a, **k: checks.append(a[0]) or real(*a, **k))
    assert not engine.compress(d / "x.npy", d / "cpu.bba", MODEL, workers=1, lanes=24, force=True)["verified"]
    assert checks == []
    monkeypatch.setattr(Codec, "verifies_by_default", property(lambda self: True))   # as on CUDA
    res = engine.compress(d / "x.npy", d / "gpu.bba", MODEL, workers=1, lanes=24, force=True)
    assert res["verified"] and len(checks) == 1 and (d / "gpu.bba").read_bytes() == one_worker
    assert not engine.compress(d / "x.npy", d / "off.bba", MODEL, workers=1, lanes=24, force=True, verify=False)["verified"]
    assert len(checks) == 1
    codec = Codec(MODEL, workers=1, lanes=24)
    decodes = []
    monkeypatch.setattr(codec, "decompress", lambda blob: decodes.append(len(blob)) or Codec.decompress(codec, blob))
    blob = codec.compress(x[:50])
    assert decodes == [len(blob)]
    codec.compress(x[:50], verify=False)
    assert decodes == [len(blob)]
