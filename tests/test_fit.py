"""``bitsback fit``: images in, a model folder out (tiny budget, real data, real coder)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from bitsback import datasets, engine, fit  # noqa: E402
from bitsback.errors import InputError  # noqa: E402
from bitsback.zoo import UnknownModelError  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"


def shifted_digits():
    """576 real digits: the 64 fixture images, each also shifted by 1-2 pixels (fit needs
    at least fit.MIN_IMAGES images)."""
    x = datasets.load(FIX)
    shifts = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (0, 2), (2, 0)]
    return np.concatenate([np.roll(x, s, axis=(1, 2)) for s in shifts])


def bitsback(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "bitsback", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=env)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model fitted for one minute on the shifted digits (threads: 1)."""
    d = tmp_path_factory.mktemp("fit")
    datasets.save(d / "digits.npy", shifted_digits())
    r = bitsback("fit", d / "digits.npy", "-o", d / "model", "--minutes", "1", "--threads", "1", "-q", "--json", cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, json.loads(r.stdout.strip().splitlines()[-1])


def test_fit_end_to_end_then_compress_and_find_the_model(fitted, tmp_path):
    d, report = fitted
    model = d / "model"
    assert report["exact"] and report["n_images"] == len(fit.split(576)[2]) and report["kind"] == "grey"
    assert 0 < report["bits_per_dim"] < 8
    man = json.loads((model / "manifest.json").read_text())
    assert man["arithmetic"]["kind"] == "portable"
    assert man["metrics"]["heldout"]["exact"] is True
    assert man["context"]["thresholds"] == report["context"]["thresholds"]
    assert not (model / "training" / "data").exists()         # the image copies are gone once finished
    # compress with the new model; decompress finds it without --model (recorded folder)
    x = datasets.load(FIX)[:20]
    datasets.save(tmp_path / "x.npy", x)
    r = bitsback("compress", tmp_path / "x.npy", "-o", tmp_path / "x.bba", "--model", model, "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = bitsback("decompress", tmp_path / "x.bba", "-o", tmp_path / "y.npy", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), x)
    # the same command again: nothing to do, the same report
    r = bitsback("fit", d / "digits.npy", "-o", model, "--minutes", "1", "-q", "--json", cwd=d)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1]) == report


def test_decompress_search_path_and_missing_model_message(fitted, tmp_path, monkeypatch):
    d, _ = fitted
    x = datasets.load(FIX)[:8]
    datasets.save(tmp_path / "x.npy", x)
    engine.compress([str(tmp_path / "x.npy")], tmp_path / "x.bba", model=str(d / "model"), workers=1)
    moved = tmp_path / "elsewhere" / "mine"
    moved.parent.mkdir()
    import shutil

    shutil.copytree(d / "model", moved, ignore=shutil.ignore_patterns("training"))
    # the recorded folder no longer holds it (a copy elsewhere, the original renamed away)
    (d / "model").rename(d / "model-away")
    try:
        monkeypatch.delenv("BITSBACK_MODEL_PATH", raising=False)
        with pytest.raises(UnknownModelError, match="--model DIR"):
            engine.decompress(tmp_path / "x.bba", tmp_path / "y.npy", workers=1)
        assert not (tmp_path / "y.npy").exists()
        monkeypatch.setenv("BITSBACK_MODEL_PATH", str(moved.parent))
        engine.decompress(tmp_path / "x.bba", tmp_path / "y.npy", workers=1)
        assert np.array_equal(np.load(tmp_path / "y.npy"), x)
    finally:
        (d / "model-away").rename(d / "model")


def test_choose_context_fits_the_data():
    x = shifted_digits()
    grey = fit.choose_context(x, binary=False)
    assert len(grey["thresholds"]) == fit.N_THRESHOLDS
    assert set(grey["thresholds"]) <= set(fit.GREY_THRESHOLDS)
    assert 3 <= grey["neighbours"] <= fit.MAX_GREY_NEIGHBOURS
    binary = fit.choose_context(datasets.binarize(x), binary=True)
    assert binary["thresholds"] == [1] and binary["neighbours"] in fit.BINARY_NEIGHBOURS
    # more neighbours are not free: a context that never repeats scores worse than none
    noise = np.random.default_rng(0).integers(0, 256, (600, 16, 16), dtype=np.uint8)
    assert fit.choose_context(noise, binary=False)["neighbours"] == 3


def test_split_is_disjoint_and_fixed():
    tr, va, ho = fit.split(1000)
    assert len(set(tr) | set(va) | set(ho)) == 1000 and len(ho) == 100 and len(va) == 100
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, ho), fit.split(1000)))


def test_bad_inputs_are_clean_errors(tmp_path):
    datasets.save(tmp_path / "rgb.npy", np.zeros((600, 3, 16, 16), np.uint8))
    datasets.save(tmp_path / "few.npy", np.zeros((40, 28, 28), np.uint8))
    with pytest.raises(InputError, match="colour"):
        fit.read_images([tmp_path / "rgb.npy"])
    with pytest.raises(InputError, match="at least"):
        fit.read_images([tmp_path / "few.npy"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    for args, says in ((["few.npy", "-o", "m"], "at least"), (["missing.npy", "-o", "m"], "missing.npy"),
                       (["few.npy", "-o", "busy"], "not a bitsback fit folder")):
        r = bitsback("fit", *args, cwd=tmp_path)
        assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_a_recorded_folder_is_only_a_hint(monkeypatch, tmp_path):
    """The folder a header records comes from the file: anything but a plain string is
    ignored, and a folder is used only when its model's name and sha256 match."""
    from bitsback.bbans.model import find, search_places

    monkeypatch.delenv("BITSBACK_MODEL_PATH", raising=False)
    assert search_places(123) == [] and search_places({"a": 1}) == [] and search_places("x\0y") == []
    assert search_places("/some/where", tmp_path) == [Path("/some/where"), tmp_path]
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "manifest.json").write_text('{"name": "m"}')
    assert find("m", "0" * 64, [tmp_path, "/nonexistent"]) is None
