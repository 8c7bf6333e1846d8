"""Determinism: files decode exactly in a fresh process under other thread settings, for
K = 0 and K > 0; a file whose recorded runtime differs and whose data hash fails raises
IntegrityError naming both runtimes -- never garbage."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import fuzz  # noqa: E402

import bitsback  # noqa: E402
from bitsback import container, datasets  # noqa: E402
from bitsback.errors import IntegrityError  # noqa: E402

DATA = ROOT / "data" / "t10k-images-idx3-ubyte.gz"


from _models import bundled  # noqa: E402


@pytest.fixture(scope="module")
def grey():
    return datasets.load(DATA)[:120]


def images_for(name, grey):
    return datasets.binarize(grey) if name == "mnist-binary" else grey


def decode_in_fresh_process(tmp_path, model, blob, threads=None, env_threads=None, numba_threads=None):
    """Decode blob in a new interpreter; return the images (or raise with its stderr)."""
    src, dst = tmp_path / "in.bba", tmp_path / "out.npy"
    src.write_bytes(blob)
    env = dict(os.environ)
    env.pop("BITSBACK_THREADS", None)
    if env_threads is not None:
        env["BITSBACK_THREADS"] = str(env_threads)
    if numba_threads is not None:
        env["NUMBA_NUM_THREADS"] = str(numba_threads)
    code = f"""
        import numpy as np, bitsback
        codec = bitsback.load({model!r}, device="cpu", threads={threads!r})
        np.save({str(dst)!r}, codec.decompress(open({str(src)!r}, "rb").read()))
    """
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return np.load(dst)


@pytest.mark.parametrize("name", ["mnist-binary", "mnist-grey"])
@pytest.mark.parametrize("enc,dec", [
    ({"lanes": 1, "threads": 1}, {"threads": 2}),
    ({"lanes": 7, "threads": 2}, {"env_threads": 1}),
    ({"lanes": 64, "threads": 1}, {"env_threads": 3, "numba_threads": 1}),
    ({"lanes": 120, "threads": 3}, {"threads": 1, "numba_threads": 2}),
])
def test_decode_in_fresh_process_with_other_thread_counts(tmp_path, grey, name, enc, dec):
    model = bundled(name)
    x = images_for(name, grey)
    blob = bitsback.load(model, device="cpu", **enc).compress(x)
    assert container.unpack(blob)[0]["lanes"] == enc["lanes"]
    assert np.array_equal(decode_in_fresh_process(tmp_path, model, blob, **dec), x)


def test_networks_run_on_one_thread_whatever_is_asked(capsys, monkeypatch):
    """With 2 onnxruntime threads, mnist-binary's encoder gave rows 166 and 250 of a
    500-row batch another sigma than smaller batches did: 500 images in one lane (encoder
    over all rows when compressing, one row per step when decompressing) did not decode.
    The codec now ignores threads, and says so."""
    x = datasets.binarize(datasets.load(DATA)[:500])
    monkeypatch.setattr(bitsback.runtime, "_announced", set())   # notes are said once a process
    codec = bitsback.load(bundled("mnist-binary"), device="cpu", threads=2, lanes=1, workers=1)
    assert "threads=2 ignored" in capsys.readouterr().err
    for net in (codec.encoder, codec.decoder):
        assert net.session.get_session_options().intra_op_num_threads == 1
    assert np.array_equal(codec.decompress(codec.compress(x)), x)


def test_compress_twice_gives_identical_bytes(grey):
    """Same input, same settings, any thread count: byte-identical files (the output is a
    function of the input, so content-addressed storage and caching work)."""
    model = bundled("mnist-binary")
    x = images_for("mnist-binary", grey)
    blobs = {bitsback.load(model, device="cpu", lanes=9, threads=t).compress(x) for t in (1, 2, 4)}
    assert len(blobs) == 1


@pytest.mark.parametrize("name", ["mnist-binary", "mnist-grey"])
def test_k_steps_decode_in_fresh_process(tmp_path, grey, name):
    pytest.importorskip("torch")
    model = bundled(name)
    x = images_for(name, grey)[:6]
    blob = bitsback.load(model, device="cpu", k_steps=2, lanes=3, threads=1).compress(x)
    h = container.unpack(blob)[0]
    assert h["k_steps"] == 2
    # The decoder takes K, lr and seed from the file, whatever it was constructed with.
    assert np.array_equal(decode_in_fresh_process(tmp_path, model, blob, threads=2), x)
    assert np.array_equal(decode_in_fresh_process(tmp_path, model, blob, env_threads=3, numba_threads=1), x)


def _reseal(blob, **fields):
    head, payload = fuzz.split(blob)
    h = json.loads(head)
    h.update(fields)
    return fuzz.forge(json.dumps(h).encode(), payload)


OTHER_RUNTIME = {"onnxruntime": "1.99.0", "provider": "CUDAExecutionProvider", "numpy": "9.9", "machine": "aarch64"}


def test_runtime_mismatch_with_failed_hash_is_a_clear_integrity_error(grey):
    model = bundled("mnist-binary")
    x = images_for("mnist-binary", grey)[:10]
    codec = bitsback.load(model, device="cpu", lanes=3)
    blob = codec.compress(x)
    # What a GPU-made file that decodes differently here looks like: another runtime in the
    # header and a data hash the CPU decode does not reproduce.
    forged = _reseal(blob, runtime=OTHER_RUNTIME, data_sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(IntegrityError) as e:
        codec.decompress(forged)
    msg = str(e.value)
    assert "CUDAExecutionProvider" in msg and "1.99.0" in msg, msg
    assert "CPUExecutionProvider" in msg, msg
    assert "runtime" in msg


def test_runtime_mismatch_with_wrong_payload_is_an_integrity_error_not_garbage(grey):
    """A decode that goes wrong mid-stream (as different network floats would make it) is
    caught by the final-state / hash checks and blamed on the runtime difference."""
    model = bundled("mnist-binary")
    x = images_for("mnist-binary", grey)[:10]
    codec = bitsback.load(model, device="cpu", lanes=2)
    blob = codec.compress(x)
    head, payload = fuzz.split(blob)
    count, lanes, tail = fuzz.split_lanes(payload)
    h0, w0 = lanes[0]
    lanes[0] = (h0 ^ (1 << 40), w0)            # the head a slightly different decoder would reach
    h = json.loads(head)
    h["runtime"] = OTHER_RUNTIME
    forged = fuzz.forge(json.dumps(h).encode(), fuzz.join_lanes(lanes) + tail)
    with pytest.raises(IntegrityError) as e:
        codec.decompress(forged)
    assert "1.99.0" in str(e.value)


def test_runtime_recorded_but_not_trusted(grey):
    """Another runtime in the header does not stop a decode that passes its checks."""
    model = bundled("mnist-binary")
    x = images_for("mnist-binary", grey)[:10]
    codec = bitsback.load(model, device="cpu")
    blob = codec.compress(x)
    assert container.unpack(blob)[0]["runtime"]["provider"] == "CPUExecutionProvider"
    assert np.array_equal(codec.decompress(_reseal(blob, runtime=OTHER_RUNTIME)), x)
