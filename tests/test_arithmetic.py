"""The networks' arithmetic in the file (container version 5): what a header records, how a
float file's fingerprint is checked before decoding, and the error a runtime change gets.

A float network's outputs depend on the machine (instruction set, onnxruntime release,
provider), and a file decodes exactly only where they are bit-identical to the encoder's.
Version 5 headers say which arithmetic made the file: "portable" (identical everywhere) or
"float" with a fingerprint of the networks' outputs on a fixed probe, compared with this
machine's before any payload is decoded. Older files record none; a failed decode of one
on another runtime is blamed on the runtime, not on the file.

The bundled models are being rebuilt as portable networks, so these tests make their own
model folders from a bundled one (a copy whose manifest says what each test needs) and
never rely on the bundled manifests' arithmetic.
"""

import copy
import dataclasses
import hashlib
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bitsback
from bitsback import cli, container, datasets, engine, runtime, zoo
from bitsback import codec as codec_module
from bitsback.bbans import shards
from bitsback.bbans.model import PORTABLE_VERSIONS, Model
from bitsback.bbans.step import Step
from bitsback.errors import (BitsbackError, CorruptMessageError, FormatError, IntegrityError,
                             RuntimeMismatchError)
from bitsback.runtime import Network

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import fuzz  # noqa: E402  (bench/fuzz.py: re-sealing headers in an older version)

from _models import bundled  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
OTHER_RUNTIME = {"onnxruntime": "1.18.1", "provider": "CPUExecutionProvider", "numpy": "1.26.4",
                 "machine": "aarch64", "isa": "asimd asimddp"}
FP = "0123456789abcdef"


# --------------------------------------------------------------------------- helpers
def float_source(name="mnist-binary") -> Path:
    """A float model folder named ``name``: the bundled one, or while that is portable, its
    earlier float version kept in the zoo (else the bundled one all the same)."""
    for manifest in sorted(Path(zoo.__file__).parent.rglob("manifest.json")):
        man = json.loads(manifest.read_text())
        if man.get("name") == name and (man.get("arithmetic") or {}).get("kind") != "portable":
            return manifest.parent
    return Path(bundled(name))


def model_copy(dest: Path, arithmetic=None, src=None) -> Path:
    """A copy of a model folder (default: the bundled mnist-binary) whose manifest records
    ``arithmetic`` (None: no record, i.e. a float model as every model before portable
    networks)."""
    shutil.copytree(src or Path(bundled("mnist-binary")), dest)
    man = json.loads((dest / "manifest.json").read_text())
    man.pop("arithmetic", None)
    if arithmetic is not None:
        man["arithmetic"] = arithmetic
    (dest / "manifest.json").write_text(json.dumps(man))
    return dest


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    return model_copy(tmp_path_factory.mktemp("float") / "m", src=float_source())


def bundled_arithmetic(name="mnist-binary") -> dict:
    return json.loads((Path(bundled(name)) / "manifest.json").read_text()).get("arithmetic") or {"kind": "float"}


@pytest.fixture(scope="module")
def portable_dir(tmp_path_factory):
    """A portable model: the bundled one when it is portable already (its record as it is),
    else a copy that only says so (enough for K = 0: the record decides the header)."""
    a = bundled_arithmetic()
    if a["kind"] != "portable":
        a = {"kind": "portable", "scheme": "int-f32", "version": 1}
    return model_copy(tmp_path_factory.mktemp("portable") / "m", a)


@pytest.fixture(scope="module")
def images():
    return datasets.binarize(datasets.load(FIXTURES / "mnist-t10k-first64-idx3-ubyte.gz"))[:12]


@pytest.fixture(scope="module")
def float_codec(float_dir):
    return bitsback.load(float_dir, device="cpu", lanes=3)


@pytest.fixture(scope="module")
def float_blob(float_codec, images):
    return float_codec.compress(images)


def repack(blob: bytes, **fields) -> bytes:
    """blob with header fields replaced, re-packed by the container (a valid checksum)."""
    header, payload = container.unpack(blob)
    header.update(fields)
    return container.pack(header, bytes(payload))


def no_decoding(monkeypatch):
    """Make any payload decode fail the test: the checks under test come before it."""
    def refuse(*a, **k):
        raise AssertionError("a payload was decoded")

    monkeypatch.setattr(shards, "decode_group", refuse)


def blames_the_runtime(msg: str, recorded: dict, here: dict) -> None:
    assert runtime.summary(recorded) in msg and runtime.summary(here) in msg, msg
    assert "corrupt" not in msg.lower() and "exhausted" not in msg.lower(), msg


def zoo_model_for(header: dict) -> Path:
    """The model folder under the zoo (current or kept earlier versions) whose networks a
    file was made with; skip when it is not there."""
    for manifest in Path(zoo.__file__).parent.rglob("manifest.json"):
        if Model(manifest.parent).sha256 == header["model"]["sha256"]:
            return manifest.parent
    pytest.skip(f"the model {header['model']['name']} ({header['model']['sha256'][:12]}) of this file is not in the zoo")


def perturbed(src: Path, dst: Path, feeds: dict, ulps: int = 1, every: bool = False) -> Network:
    """A session over the graph ``src`` with one weight (the largest of the first weight
    tensor for which this changes the outputs on ``feeds``) moved by ``ulps`` units in
    the last place, written to ``dst``: what another machine's arithmetic looks like to
    the coder, on this machine. ``every``: move every weight of that tensor."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    want = Network(src, "cpu")(**feeds)
    m = onnx.load(str(src))
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype not in (np.float32, np.float16) or a.size < 2:     # a weight, not a constant
            continue
        b = a.copy()
        flat = b.reshape(-1)
        j = slice(None) if every else int(np.argmax(np.abs(flat)))
        for _ in range(ulps):
            flat[j] = np.nextafter(flat[j], np.array(np.inf, b.dtype))
        init.CopyFrom(numpy_helper.from_array(b, init.name))
        onnx.save(m, str(dst))
        net = Network(dst, "cpu")
        if any(not np.array_equal(net(**feeds)[k], want[k]) for k in want):
            return net
        init.CopyFrom(numpy_helper.from_array(a, init.name))
    pytest.fail(f"no weight of {src} moved by {ulps} ulp changes its outputs")


def feeds_for(codec, network: str) -> dict:
    rng = np.random.default_rng(7)
    m = codec.model
    if network == "encoder":
        return {"x": rng.integers(0, m.levels, (16, m.dim)).astype(np.float32)}
    return {"z": codec.step.centres[rng.integers(0, len(codec.step.centres), (16, m.latent))]}


def with_network(codec, network: str, net: Network):
    """codec with one of its networks replaced (the model, its sha256, stays the same)."""
    if network == "encoder":
        return codec.with_settings(codec.settings, encoder=net)
    other = copy.copy(codec)
    other.step = Step(codec.model, codec.encoder, net, codec.settings)
    return other


# --------------------------------------------------------------------------- the header field
def header(**over):
    h = {
        "model": {"name": "m", "sha256": "0" * 64}, "likelihood": "bernoulli", "shape": [28, 28], "dtype": "uint8",
        "levels": 2, "n": 10, "lanes": 2, "shards": [[10, 2, 3, "a" * 16]],
        "precision": {"likelihood": 24, "posterior": 24, "latent_bits": 12}, "latent": 32, "k_steps": 0,
        "lr": 0.005, "seed": 0, "runtime": {"onnxruntime": "x"}, "data_sha256": "1" * 64,
        "arithmetic": {"kind": "float", "fingerprint": FP},
    }
    h.update(over)
    return h


@pytest.mark.parametrize("arithmetic", [{"kind": "float", "fingerprint": FP}, {"kind": "portable", "version": 1},
                                        {"kind": "portable", "version": 7}])
def test_header_round_trip_with_both_kinds(arithmetic):
    h0 = header(arithmetic=arithmetic)
    h, p = container.unpack(container.pack(h0, b"abc"))
    assert h == {**h0, "version": 5} and h["arithmetic"] == arithmetic and bytes(p) == b"abc"


@pytest.mark.parametrize("arithmetic", [
    None, [], "float", 1,
    {}, {"kind": None}, {"kind": "Float", "fingerprint": FP}, {"kind": "fixed", "version": 1},
    {"kind": "float"}, {"kind": "float", "fingerprint": FP[:-1]}, {"kind": "float", "fingerprint": FP + "0"},
    {"kind": "float", "fingerprint": FP.upper()}, {"kind": "float", "fingerprint": "g" * 16},
    {"kind": "float", "fingerprint": 123}, {"kind": "float", "fingerprint": FP, "extra": 1},
    {"kind": "float", "fingerprint": FP, "version": 1},
    {"kind": "portable"}, {"kind": "portable", "version": 0}, {"kind": "portable", "version": -1},
    {"kind": "portable", "version": True}, {"kind": "portable", "version": "1"}, {"kind": "portable", "version": 1.0},
    {"kind": "portable", "version": 1, "scheme": "int-f32"}, {"kind": "portable", "version": 1, "fingerprint": FP},
])
def test_hostile_arithmetic_records_are_format_errors(arithmetic):
    with pytest.raises(FormatError, match="arithmetic"):
        container.unpack(container.pack(header(arithmetic=arithmetic), b"abc"))


def test_a_version_5_header_must_record_its_arithmetic():
    h = header()
    del h["arithmetic"]
    with pytest.raises(FormatError, match="arithmetic"):
        container.unpack(container.pack(h, b"abc"))


def test_portable_arithmetic_with_k_steps_is_a_format_error():
    with pytest.raises(FormatError, match="k_steps"):
        container.unpack(container.pack(header(k_steps=2, arithmetic={"kind": "portable", "version": 1}), b"abc"))


@pytest.mark.parametrize("value", [None, "x", {"kind": "nonsense"}])
def test_older_versions_have_no_arithmetic_field(value):
    """Before version 5 "arithmetic" is not a field: absent is fine, and anything there is
    ignored as unknown fields are (a reader of such a file records no arithmetic)."""
    from bitsback import header as hdr

    h = header(arithmetic=value)
    if value is None:
        del h["arithmetic"]
    body = fuzz.forge(json.dumps(h).encode(), b"abc", version=4)
    got, _ = container.unpack(body)
    assert got["version"] == 4 and hdr.arithmetic_of(got) is None


# --------------------------------------------------------------------------- the model's record
def test_model_arithmetic_from_the_manifest(float_dir, portable_dir, tmp_path):
    assert Model(float_dir).arithmetic == {"kind": "float"}
    a = Model(portable_dir).arithmetic
    assert a["kind"] == "portable" and a["version"] == 1
    for bad, words in (({"kind": "fixed-point"}, "unknown network arithmetic"), ("portable", "unknown network arithmetic"),
                       ({"kind": "portable", "version": max(PORTABLE_VERSIONS) + 1}, "newer bitsback"),
                       ({"kind": "portable"}, "version None")):
        d = model_copy(tmp_path / str(len(list(tmp_path.iterdir()))), bad)
        with pytest.raises(BitsbackError) as e:
            Model(d)
        assert str(d) in str(e.value) and words in str(e.value), e.value


def test_the_converter_writes_a_version_this_build_decodes():
    try:
        from bitsback import portable
    except ImportError:
        pytest.skip("bitsback.portable is not in this tree")
    assert portable.PORTABLE_VERSION in PORTABLE_VERSIONS


# --------------------------------------------------------------------------- writing
def test_float_file_records_the_fingerprint_and_decodes(float_dir, float_codec, float_blob, images):
    h = container.unpack(float_blob)[0]
    assert h["version"] == container.VERSION == 5
    assert h["arithmetic"] == {"kind": "float", "fingerprint": float_codec.fingerprint}
    assert h["runtime"]["isa"] == runtime.isa()
    # a fresh codec (fresh sessions) computes the same fingerprint: the file decodes
    fresh = bitsback.load(float_dir, device="cpu")
    assert fresh.fingerprint == float_codec.fingerprint
    assert np.array_equal(fresh.decompress(float_blob), images)


def test_portable_file_records_its_version_and_computes_no_fingerprint(portable_dir, images, monkeypatch):
    def never(step):
        raise AssertionError("a portable K = 0 file needs no fingerprint")

    monkeypatch.setattr(codec_module, "fingerprint", never)
    c = bitsback.load(portable_dir, device="cpu", lanes=2)
    blob = c.compress(images[:4])
    assert container.unpack(blob)[0]["arithmetic"] == {"kind": "portable", "version": 1}
    assert np.array_equal(c.decompress(blob), images[:4])


def test_k_step_files_record_float_arithmetic_even_with_a_portable_model(portable_dir, images):
    pytest.importorskip("torch")
    if bundled_arithmetic()["kind"] != "portable":
        pytest.skip("the bundled model is not portable: its K-step mirror would not be either")
    c = bitsback.load(portable_dir, device="cpu", k_steps=1, lanes=1)
    blob = c.compress(images[:2])
    h = container.unpack(blob)[0]
    assert h["arithmetic"] == {"kind": "float", "fingerprint": c.fingerprint}
    assert c.fingerprint != bitsback.load(portable_dir, device="cpu").fingerprint   # the K steps are in it
    assert "torch" in h["runtime"]
    assert np.array_equal(bitsback.load(portable_dir, device="cpu").decompress(blob), images[:2])


def test_fingerprint_is_computed_once_per_settings_and_thread_safe(float_dir, monkeypatch):
    calls = []
    real = codec_module.fingerprint

    def counted(step):
        calls.append(step.settings)
        time.sleep(0.05)            # widen the window two threads could both compute in
        return real(step)

    monkeypatch.setattr(codec_module, "fingerprint", counted)
    c = bitsback.load(float_dir, device="cpu")
    got = []
    threads = [threading.Thread(target=lambda: got.append(c.fingerprint)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(got)) == 1 and len(got) == 6
    same = c.with_settings(c.settings)
    assert same.fingerprint == got[0] and len(calls) == 1          # copies share the cache
    other = c.with_settings(dataclasses.replace(c.settings, seed=5))
    assert other.fingerprint == got[0] and len(calls) == 2         # K = 0: the seed is not in it, but asked anew


# --------------------------------------------------------------------------- reading
def test_tampered_fingerprint_is_a_runtime_mismatch_before_any_decode(float_codec, float_blob, tmp_path, monkeypatch):
    h = container.unpack(float_blob)[0]
    bad = "f" * 16 if h["arithmetic"]["fingerprint"] != "f" * 16 else "e" * 16
    for rt in (h["runtime"], OTHER_RUNTIME):
        forged = repack(float_blob, arithmetic={"kind": "float", "fingerprint": bad}, runtime=rt)
        no_decoding(monkeypatch)
        with pytest.raises(RuntimeMismatchError) as e:
            float_codec.decompress(forged)
        msg = str(e.value)
        blames_the_runtime(msg, rt, float_codec.runtime)
        assert msg.startswith("this file was made with float network arithmetic on ")
        assert ("recorded alike" in msg) == (rt is h["runtime"]), msg
        # the engine (the CLI's path) checks before it starts a worker or writes anything
        src, dst = tmp_path / "f.bba", tmp_path / "out.npy"
        src.write_bytes(forged)
        with pytest.raises(RuntimeMismatchError):
            engine.decompress(src, dst, str(float_codec.model.dir), workers=1, device="cpu")
        assert not dst.exists()


@pytest.mark.parametrize("network", ["encoder", "decoder"])
def test_a_network_that_computes_differently_is_a_runtime_mismatch(float_codec, float_blob, images, network,
                                                                   tmp_path, monkeypatch):
    """Another runtime, simulated for real: the same model (folder, files, sha256) whose
    encoder or decoder computes one weight one ulp away from this machine's.

    A model folder with the changed weight would not do: the file names its model by the
    sha256 of its network files, so a changed file is another model and is refused as such
    (ModelMismatchError, rightly). Another CPU or onnxruntime release keeps the model's
    bytes and changes what they compute; so the codec here keeps the model and runs a
    session over a graph with one weight moved by one ulp: the outputs differ in their
    last bits, as between AVX2 and SSE kernels. The fingerprint catches it before any
    payload is decoded, and the codec with the changed network still decodes its own files
    (the files are fine; the machines differ)."""
    net = perturbed(float_codec.model.dir / f"{network}.onnx", tmp_path / f"{network}.onnx", feeds_for(float_codec, network))
    other = with_network(float_codec, network, net)
    assert other.model.sha256 == float_codec.model.sha256
    assert other.fingerprint != float_codec.fingerprint
    with monkeypatch.context() as mp:
        no_decoding(mp)
        with pytest.raises(RuntimeMismatchError) as e:
            other.decompress(float_blob)
    blames_the_runtime(str(e.value), container.unpack(float_blob)[0]["runtime"], other.runtime)
    theirs = other.compress(images[:5])
    assert np.array_equal(other.decompress(theirs), images[:5])
    with pytest.raises(RuntimeMismatchError):
        float_codec.decompress(theirs)


def test_unknown_portable_version_in_a_file_is_a_format_error(portable_dir, images):
    c = bitsback.load(portable_dir, device="cpu")
    blob = repack(c.compress(images[:3]), arithmetic={"kind": "portable", "version": 99})
    with pytest.raises(FormatError, match="portable arithmetic version 99"):
        c.decompress(blob)


def test_portable_file_is_not_fingerprinted_on_decode(portable_dir, images, monkeypatch):
    """A portable file decodes wherever its model is, whatever runtime it records."""
    c = bitsback.load(portable_dir, device="cpu")
    blob = repack(c.compress(images[:3]), runtime=OTHER_RUNTIME)
    monkeypatch.setattr(codec_module, "fingerprint", lambda step: pytest.fail("fingerprint computed"))
    assert np.array_equal(bitsback.load(portable_dir, device="cpu").decompress(blob), images[:3])


# --------------------------------------------------------------------------- files before version 5
def older(version, model):
    blob = (FIXTURES / f"v{version}-{model}-first64-lanes7.bba").read_bytes()
    x = datasets.load(FIXTURES / "mnist-t10k-first64-idx3-ubyte.gz")
    return blob, (datasets.binarize(x) if "binary" in model else x)


@pytest.mark.parametrize("version", [2, 3, 4])
@pytest.mark.parametrize("model", ["mnist-binary", "mnist-grey"])
def test_older_files_still_decode(version, model):
    blob, x = older(version, model)
    h = container.unpack(blob)[0]
    assert h["version"] == version and "arithmetic" not in h
    assert np.array_equal(bitsback.load(zoo_model_for(h), device="cpu").decompress(blob), x)


def test_older_file_failing_on_another_runtime_is_blamed_on_the_runtime(tmp_path):
    """A version-4 file records no fingerprint, so it is decoded as before; when the decode
    fails (here: its encoder computes differently, a weight tensor moved) and the runtime it
    records differs from this one, the error names both runtimes instead of calling the
    file corrupt. With the runtime recorded as this one, the file is the suspect."""
    blob, x = older(4, "mnist-binary")
    h = container.unpack(blob)[0]
    base = bitsback.load(zoo_model_for(h), device="cpu")
    net = perturbed(base.model.dir / "encoder.onnx", tmp_path / "encoder.onnx", feeds_for(base, "encoder"), ulps=64,
                    every=True)
    other = base.with_settings(base.settings, encoder=net)
    here = other.runtime
    head, payload = fuzz.split(blob)

    def resealed(rt):
        return fuzz.forge(json.dumps({**json.loads(head), "runtime": rt}).encode(), payload, version=4)

    with pytest.raises(RuntimeMismatchError) as e:
        other.decompress(resealed(OTHER_RUNTIME))
    msg = str(e.value)
    blames_the_runtime(msg, OTHER_RUNTIME, here)
    assert "format version 4" in msg and "records no fingerprint" in msg
    same = {k: here[k] for k in ("onnxruntime", "provider", "numpy", "machine")}   # recorded before "isa" was
    with pytest.raises((IntegrityError, CorruptMessageError)) as e:
        other.decompress(resealed(same))
    assert not isinstance(e.value, RuntimeMismatchError)
    # another runtime recorded does not stop a decode that passes its checks
    assert np.array_equal(base.decompress(resealed(OTHER_RUNTIME)), x)


def test_decode_failure_of_a_fingerprinted_file_is_an_integrity_error(float_codec, float_blob):
    """With the fingerprint matched, a failed decode is the file's (forged here: another
    data hash), even when the runtime it records differs: IntegrityError naming both."""
    forged = repack(float_blob, runtime=OTHER_RUNTIME, data_sha256=hashlib.sha256(b"x").hexdigest())
    with pytest.raises(IntegrityError) as e:
        float_codec.decompress(forged)
    assert runtime.summary(OTHER_RUNTIME) in str(e.value)


# --------------------------------------------------------------------------- the runtime record
def test_runtime_records_the_instruction_set():
    d = runtime.describe("CPUExecutionProvider")
    assert set(d) >= {"onnxruntime", "provider", "numpy", "machine", "isa"}
    if d["machine"] in ("x86_64", "AMD64") and Path(runtime.CPUINFO).exists():
        assert d["isa"].split()[0] in ("x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4")


CPUINFO_CASES = {
    "flags : fpu sse sse2 lm": "x86-64-v1",
    "flags : cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx": "x86-64-v2 avx",
    ("flags : cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave "
     "avx512f avx512bw avx512cd avx512dq avx512vl avx512_vnni"): "x86-64-v4 avx avx2 fma avx512f avx512_vnni",
    "Features : fp asimd evtstrm aes crc32 asimddp sve i8mm bf16": "asimd asimddp sve bf16 i8mm",
    "processor : 0": "unknown",
}


@pytest.mark.parametrize("text", list(CPUINFO_CASES))
def test_instruction_set_from_cpuinfo(text, tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor : 0\n{text}\n\nprocessor : 1\n{text}\n")
    assert runtime.isa_from(str(p)) == CPUINFO_CASES[text]
    assert runtime.isa_from(str(tmp_path / "absent")) == "unknown"


def test_instruction_set_agrees_with_the_aot_kernels_cpu_check():
    """The AOT kernels test x86-64-v3 by cpuid in C; /proc/cpuinfo must tell the same."""
    from bitsback.cdf import _kernels

    if not runtime.isa().startswith("x86-64"):
        pytest.skip("not an x86-64 Linux machine")
    try:
        import importlib

        v3 = importlib.import_module("bitsback.cdf._aot_v3")
    except ImportError:
        pytest.skip("the x86-64-v3 AOT module is not built")
    level = int(runtime.isa().split()[0][-1])       # x86-64-vN
    assert bool(v3.cpu_ok()) == (level >= 3), (runtime.isa(), _kernels.reason)


def test_runtime_differences_compare_only_what_was_recorded():
    here = runtime.describe("CPUExecutionProvider")
    old = {k: here[k] for k in ("onnxruntime", "provider", "numpy", "machine")}
    assert runtime.differences(old, here) == []
    assert runtime.differences({**old, "onnxruntime": "0.1"}, here) == ["onnxruntime"]
    assert runtime.differences("not a dict", here) == []


# --------------------------------------------------------------------------- the command line
def test_cli_runtime_mismatch_is_one_line_and_exit_status_3(float_dir, float_blob, tmp_path, capsys):
    forged = repack(float_blob, arithmetic={"kind": "float", "fingerprint": "0" * 16}, runtime=OTHER_RUNTIME)
    src = tmp_path / "f.bba"
    src.write_bytes(forged)
    assert cli.main(["decompress", str(src), "-o", str(tmp_path / "o.npy"), "--model", str(float_dir), "-q"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bitsback: error: this file was made with float network arithmetic")
    assert "Traceback" not in err and "aarch64" in err
    assert cli.main(["info", str(src)]) == 0
    out = capsys.readouterr().out
    assert "arithmetic  float, fingerprint 0000000000000000" in out and "aarch64" in out


def test_cli_info_arithmetic_line_for_each_kind(portable_dir, images, tmp_path, capsys):
    blob = bitsback.load(portable_dir, device="cpu").compress(images[:2])
    (tmp_path / "p.bba").write_bytes(blob)
    assert cli.main(["info", str(tmp_path / "p.bba")]) == 0
    assert "arithmetic  portable (version 1): decodes on any machine" in capsys.readouterr().out
    assert cli.main(["info", str(FIXTURES / "v4-mnist-binary-first64-lanes7.bba")]) == 0
    assert "arithmetic  float, no fingerprint (before version 5)" in capsys.readouterr().out
