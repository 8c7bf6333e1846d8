"""The first minutes of a new user: the command picks a model that fits the input, every
documented output works, a missing optional package is one line (no traceback), `info`
is a short summary, and the provider notice is said only when asked."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bitsback import datasets

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"


def run(*args, cwd, check=True, prelude=""):
    """The command in a fresh interpreter; ``prelude`` runs first (e.g. to hide a package)."""
    code = f"import sys\n{prelude}\nfrom bitsback.cli import main\nsys.exit(main(sys.argv[1:]))"
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"bitsback {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.mark.parametrize("binary", [False, True])
def test_compress_without_model_picks_the_model_that_fits(tmp_path, binary):
    x = datasets.load(FIXTURE)
    src = tmp_path / "in.npy"
    np.save(src, datasets.binarize(x) if binary else x)
    p = run("compress", str(src), "-o", "a.bba", "--json", "-q", cwd=tmp_path)
    assert json.loads(p.stdout.strip().splitlines()[-1])["model"] == ("mnist-binary" if binary else "mnist-grey")
    assert "Traceback" not in p.stderr and "onnxruntime on" not in p.stderr
    run("decompress", "a.bba", "-o", "out", "-q", cwd=tmp_path)          # a PNG folder
    back = datasets.load(tmp_path / "out")
    assert np.array_equal(back, datasets.binarize(x) if binary else x)


def test_compress_of_images_no_model_fits_is_one_line(tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((4, 3, 32, 32), np.uint8))
    p = run("compress", "rgb.npy", "-o", "a.bba", cwd=tmp_path, check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "3x32x32" in lines[0] and "mnist-grey (28x28, values 0..255)" in lines[0]
    assert not (tmp_path / "a.bba").exists()


@pytest.mark.parametrize("missing,args", [
    ("torch", ["bench", "--model", "mnist-grey"]),
    ("matplotlib", ["bench", "--model", "mnist-grey", "--skip", "k_sweep", "--plots", "figs"]),
    ("torch", ["train", "vae", "--help"]),
    ("torch", ["export", "--help"]),
    ("onnx", ["bench", "--model", "mnist-grey"]),
])
def test_a_missing_optional_package_is_one_line(tmp_path, missing, args):
    """The package is hidden from the interpreter (None in sys.modules: importing it raises
    ModuleNotFoundError, as when it is not installed)."""
    p = run(*args, cwd=tmp_path, check=False, prelude=f"sys.modules[{missing!r}] = None")
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert missing in line and "pip install 'bitsback[" in line
    assert not (tmp_path / "figs").exists()


def test_info_is_a_short_summary_whatever_the_shards(tmp_path):
    x = datasets.binarize(datasets.load(ROOT / "data" / "t10k-images-idx3-ubyte.gz")[:600])
    np.save(tmp_path / "in.npy", x)
    run("compress", "in.npy", "-o", "a.bba", "--lanes", "300", "-q", cwd=tmp_path)
    out = run("info", "a.bba", cwd=tmp_path).stdout
    assert len(out.splitlines()) <= 20 and len(out) < 2000
    assert "mnist-binary" in out and "600 × 28x28" in out and "300 in 150 shards" in out and "bits/dim" in out
    header = json.loads(run("info", "a.bba", "--json", cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert len(header["shards"]) == 150 and header["n"] == 600


def test_provider_notice_only_when_asked(tmp_path):
    quiet = run("compress", str(FIXTURE), "-o", "q.bba", "-q", cwd=tmp_path)
    loud = run("-v", "compress", str(FIXTURE), "-o", "v.bba", "-q", cwd=tmp_path)
    assert "onnxruntime on" not in quiet.stderr
    assert "onnxruntime on" in loud.stderr


def test_load_for_picks_by_shape_and_levels():
    import bitsback

    x = datasets.load(FIXTURE)[:3]
    assert bitsback.load_for(x, device="cpu").model.name == "mnist-grey"
    assert bitsback.load_for(datasets.binarize(x), device="cpu").model.name == "mnist-binary"
    assert bitsback.load_for(x[0], device="cpu").model.name == "mnist-grey"
    code = textwrap.dedent("""
        import numpy as np, bitsback
        from bitsback.zoo import UnknownModelError
        try:
            bitsback.load_for(np.zeros((2, 5, 5), np.uint8))
        except UnknownModelError as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("no bundled model codes images of shape 5x5")
