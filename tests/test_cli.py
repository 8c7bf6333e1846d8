"""The `bitsback` command end to end, through a subprocess in a fresh temp dir."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitsback import datasets

DATA = Path(__file__).resolve().parents[1] / "data" / "t10k-images-idx3-ubyte.gz"


def run(*args, cwd, check=True):
    p = subprocess.run([sys.executable, "-m", "bitsback", *args], cwd=cwd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"bitsback {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    x = datasets.load(DATA)[:60]
    np.save(d / "in.npy", x)
    return d, x


def test_compress_decompress_info_json(work):
    d, x = work
    p = run("compress", "in.npy", "-o", "g.bba", "--model", "mnist-grey", "--json", "--verify", "--lanes", "4", cwd=d)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ("n_images", "bytes", "bits_per_dim", "seconds", "images_per_second"):
        assert key in res
    assert res["n_images"] == 60 and res["bytes"] == (d / "g.bba").stat().st_size and res["verified"]
    p = run("compress", "in.npy", "-o", "h.bba", "--model", "mnist-grey", "--json", "--no-verify", "--lanes", "4", cwd=d)
    assert json.loads(p.stdout.strip().splitlines()[-1])["verified"] is False   # on CPU: only when asked
    assert (d / "h.bba").read_bytes() == (d / "g.bba").read_bytes()
    run("decompress", "g.bba", "-o", "out.npy", cwd=d)
    assert np.array_equal(np.load(d / "out.npy"), x)
    info = json.loads(run("info", "g.bba", "--json", cwd=d).stdout.strip().splitlines()[-1])
    assert info["n"] == 60 and info["model"]["name"] == "mnist-grey"


def test_binarize_and_idx_output(work):
    d, x = work
    run("compress", "in.npy", "-o", "b.bba", "--model", "mnist-binary", "--binarize", "-q", cwd=d)
    run("decompress", "b.bba", "-o", "b.idx.gz", cwd=d)
    assert np.array_equal(datasets.load(d / "b.idx.gz"), datasets.binarize(x))


def test_binary_model_rejects_grey_input_without_binarize(work):
    d, _ = work
    p = run("compress", "in.npy", "-o", "nb.bba", "--model", "mnist-binary", cwd=d, check=False)
    assert p.returncode == 1 and "binarize" in p.stderr
    assert not (d / "nb.bba").exists()


def test_existing_output_is_kept_without_force(work):
    d, _ = work
    (d / "keep.bba").write_bytes(b"precious")
    p = run("compress", "in.npy", "-o", "keep.bba", "--model", "mnist-grey", cwd=d, check=False)
    assert p.returncode == 1 and (d / "keep.bba").read_bytes() == b"precious"
    run("compress", "in.npy", "-o", "keep.bba", "--model", "mnist-grey", "--force", cwd=d)
    assert (d / "keep.bba").read_bytes() != b"precious"


def test_corrupt_file_is_a_clean_error(work):
    d, _ = work
    (d / "junk.bba").write_bytes(b"BBANS\x00" + b"\x01" * 40)
    p = run("decompress", "junk.bba", "-o", "junk.npy", cwd=d, check=False)
    assert p.returncode == 1 and "error" in p.stderr and "Traceback" not in p.stderr
    assert not (d / "junk.npy").exists()


def test_models_json(work):
    d, _ = work
    out = run("models", "--json", cwd=d).stdout
    names = json.dumps(json.loads(out))
    assert "mnist-binary" in names and "mnist-grey" in names
