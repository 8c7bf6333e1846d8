"""Pinned bytes: what the codec writes for fixed inputs must not change when the code is
reorganised. Each case's digest covers the header (all of it but the ``runtime`` field,
which names package versions) and the payload.

The digests were recorded by ``python tests/test_pinned_bytes.py --write`` on the machine
named in ``fixtures/pinned_bytes.json``. The bundled models are portable (integer networks,
bitsback.portable), so the K = 0 cases must give these bytes on every machine and are
checked everywhere. K > 0 runs torch in float arithmetic, whose results depend on the
instruction set and the library releases (docs/RELIABILITY.md): a machine whose
fingerprint differs skips those cases and says why instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import bundled  # noqa: E402

import bitsback  # noqa: E402
from bitsback import container, datasets, engine  # noqa: E402

PINS = Path(__file__).resolve().parent / "fixtures" / "pinned_bytes.json"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"
DATA = ROOT / "data" / "t10k-images-idx3-ubyte.gz"
MODELS = ("mnist-binary", "mnist-grey", "mnist-binary-mlp", "mnist-grey-mlp")


def fingerprint() -> dict:
    """What the float networks' results depend on here: onnxruntime's release and the
    vector extensions its kernels pick by."""
    import platform

    import onnxruntime

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = sorted(f for f in flags if f in {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512bw", "amx_tile"})
    return {"onnxruntime": onnxruntime.__version__, "machine": platform.machine(), "isa": isa}


def digest(blob: bytes) -> str:
    header, payload = container.unpack(blob)
    header = {k: v for k, v in header.items() if k != "runtime"}
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    h.update(payload)
    return h.hexdigest()


def images(model: str, n: int) -> np.ndarray:
    x = datasets.load(FIXTURE if n <= 64 else DATA)[:n]
    return datasets.binarize(x) if "binary" in model else x


def cases():
    """(case id, function returning the bytes) for every pinned case."""
    out = []
    for model in MODELS:
        for lanes in (1, 7, None):
            for n in (1, 64):
                out.append((f"{model}/lanes={lanes}/n={n}", (model, dict(lanes=lanes), n)))
    # K = 2 (torch replay; one shard's step per optimiser batch)
    out.append(("mnist-binary/k=2/n=64", ("mnist-binary", dict(k_steps=2), 64)))
    out.append(("mnist-grey/k=2/lanes=7/n=64", ("mnist-grey", dict(k_steps=2, lanes=7), 64)))
    # groups of shards with several lanes each (300 lanes > 256 shards: 2 lanes a shard)
    out.append(("mnist-binary/lanes=300/n=600", ("mnist-binary", dict(lanes=300), 600)))
    out.append(("mnist-grey/n=600/workers=1", ("mnist-grey", dict(workers=1), 600)))
    out.append(("mnist-grey/n=600/workers=2", ("mnist-grey", dict(workers=2), 600)))
    return out


def make(spec) -> bytes:
    model, args, n = spec
    return bitsback.load(bundled(model), device="cpu", **args).compress(images(model, n), verify=False)


def make_engine(tmp: Path, workers: int) -> bytes:
    dst = tmp / f"engine{workers}.bba"
    engine.compress([str(DATA)], dst, bundled("mnist-grey"), workers=workers, device="cpu", lanes=20, force=True)
    return dst.read_bytes()


def _pins(case: str) -> dict:
    pins = json.loads(PINS.read_text())
    if "/k=" in case and pins["fingerprint"] != fingerprint():
        pytest.skip(f"pinned on {pins['fingerprint']}, this machine is {fingerprint()}: K > 0 is float arithmetic")
    return pins["cases"]


@pytest.mark.parametrize("case,spec", cases(), ids=[c for c, _ in cases()])
def test_codec_bytes_are_pinned(case, spec):
    blob = make(spec)
    assert digest(blob) == _pins(case)[case]
    x = images(spec[0], spec[2])
    assert np.array_equal(bitsback.load(bundled(spec[0]), device="cpu").decompress(blob), x)


@pytest.mark.parametrize("workers", [1, 2])
def test_engine_bytes_are_pinned(tmp_path, workers):
    case = "engine/mnist-grey/lanes=20/n=10000"
    assert digest(make_engine(tmp_path, workers)) == _pins(case)[case]


def write() -> None:
    import tempfile

    out = {c: digest(make(spec)) for c, spec in cases()}
    with tempfile.TemporaryDirectory() as tmp:
        e = {w: digest(make_engine(Path(tmp), w)) for w in (1, 2)}
    assert e[1] == e[2], "engine bytes depend on the worker count"
    out["engine/mnist-grey/lanes=20/n=10000"] = e[1]
    assert out["mnist-grey/n=600/workers=1"] == out["mnist-grey/n=600/workers=2"]
    PINS.write_text(json.dumps({"fingerprint": fingerprint(), "cases": out}, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_pinned_bytes.py --write")
    write()
