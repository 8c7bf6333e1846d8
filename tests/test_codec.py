"""Exact round trips through the real coder, real onnxruntime sessions and bundled models."""

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bitsback
from bitsback import container, datasets, zoo
from bitsback.errors import FormatError, InputError, IntegrityError, ModelMismatchError

DATA = Path(__file__).resolve().parents[1] / "data" / "t10k-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def grey():
    return datasets.load(DATA)[:400]


# the defaults (causal-context likelihoods) and the paper-architecture models
MODELS = ["mnist-binary", "mnist-grey", "mnist-binary-mlp", "mnist-grey-mlp"]


@pytest.fixture(scope="module")
def images(grey):
    return {m: datasets.binarize(grey) if "binary" in m else grey for m in MODELS}


@pytest.fixture(scope="module")
def codecs():
    return {m: bitsback.load(m, device="cpu") for m in MODELS}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("lanes,n", [(1, 1), (1, 5), (7, 45), (256, 300)])
def test_round_trip(codecs, images, model, lanes, n):
    x = images[model][:n]
    codec = bitsback.load(model, device="cpu", lanes=lanes)
    blob = codec.compress(x)
    header, _ = container.unpack(blob)
    assert header["lanes"] == min(lanes, n) and header["n"] == n
    out = codecs[model].decompress(blob)  # another Codec instance decodes
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert np.array_equal(out, x)


@pytest.mark.parametrize("model", ["mnist-binary", "mnist-grey"])
def test_k_steps_round_trip_and_gain(images, model):
    x = images[model][:30]
    sizes = {}
    for k in (0, 3):
        codec = bitsback.load(model, device="cpu", k_steps=k, lanes=7)
        blob = codec.compress(x)
        assert np.array_equal(bitsback.load(model, device="cpu").decompress(blob), x)
        sizes[k] = len(blob)
    # A few Adam steps on the ELBO should not make the file larger by more than noise.
    assert sizes[3] <= sizes[0] * 1.01


def test_single_image_without_batch_axis(codecs, images):
    x = images["mnist-grey"][3]
    out = codecs["mnist-grey"].decompress(codecs["mnist-grey"].compress(x))
    assert out.shape == (1, 28, 28) and np.array_equal(out[0], x)


def test_decoding_in_a_fresh_process(tmp_path, codecs, images):
    x = images["mnist-grey"][:40]
    (tmp_path / "a.bba").write_bytes(bitsback.load("mnist-grey", device="cpu", lanes=3).compress(x))
    script = textwrap.dedent(f"""
        import numpy as np, bitsback
        out = bitsback.load("mnist-grey", device="cpu", threads=2).decompress(open({str(tmp_path / 'a.bba')!r}, "rb").read())
        np.save({str(tmp_path / 'b.npy')!r}, out)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    assert np.array_equal(np.load(tmp_path / "b.npy"), x)


def test_wrong_model_raises(codecs, images):
    blob = codecs["mnist-grey"].compress(images["mnist-grey"][:5])
    with pytest.raises(ModelMismatchError):
        codecs["mnist-binary"].decompress(blob)


def test_a_changed_model_of_the_same_name_is_refused_and_its_old_folder_decodes(tmp_path, codecs, images):
    """A bundled model may change between versions under the same name: a file made with
    the earlier folder is refused with a hint, and decodes with that folder."""
    import shutil

    old = tmp_path / "mnist-binary"
    shutil.copytree(codecs["mnist-binary"].model.dir, old)
    with np.load(old / "context.npz") as t:     # same tables, other bytes: another sha256
        tables = dict(t)
    np.savez_compressed(old / "context.npz", **tables)
    earlier = bitsback.load(str(old), device="cpu")
    assert earlier.model.name == "mnist-binary" and earlier.model.sha256 != codecs["mnist-binary"].model.sha256
    x = images["mnist-binary"][:5]
    blob = earlier.compress(x)
    with pytest.raises(ModelMismatchError, match="has changed since"):
        codecs["mnist-binary"].decompress(blob)
    assert np.array_equal(earlier.decompress(blob), x)


def test_corrupt_and_truncated_raise(codecs, images):
    blob = codecs["mnist-binary"].compress(images["mnist-binary"][:20])
    with pytest.raises(FormatError):
        codecs["mnist-binary"].decompress(blob[:-1])
    with pytest.raises(FormatError):
        codecs["mnist-binary"].decompress(blob[: len(blob) // 2])
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(FormatError):
        codecs["mnist-binary"].decompress(bytes(bad))


def _reseal(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("where", [0.3, 0.6, 0.95])
def test_tampered_payload_with_valid_checksum_never_returns_wrong_images(codecs, images, where):
    x = images["mnist-grey"][:20]
    blob = codecs["mnist-grey"].compress(x)
    body = bytearray(blob[:-32])
    header, payload = container.unpack(blob)
    start = len(body) - len(payload)
    body[start + int(where * (len(payload) - 1))] ^= 0x5A
    with pytest.raises((FormatError, IntegrityError)):
        codecs["mnist-grey"].decompress(_reseal(bytes(body)))


def test_a_drained_payload_is_corrupt_message_error(images):
    """A lane missing the words its last steps need runs dry: the decode draws initial
    bits from the generator, and the check (every EXHAUSTED_CHECK_STEPS steps and at the
    end) reports it as a corrupt payload, not as wrong images."""
    import struct

    from bitsback.errors import CorruptMessageError

    codec = bitsback.load("mnist-binary", lanes=1, workers=1)
    x = images["mnist-binary"][:150]
    header, payload = container.unpack(codec.compress(x))
    (count, lanes, nbytes, digest), = header["shards"]
    p = bytes(payload)
    words = struct.unpack_from("<I", p, 8)[0]
    cut = p[:8] + struct.pack("<I", words - 2) + p[12 + 8:]    # the two bottom words gone
    header["shards"] = [[count, lanes, len(cut), digest]]
    with pytest.raises(CorruptMessageError, match="payload exhausted"):
        codec.decompress(container.pack(header, cut))


def test_tampered_header_hash_is_integrity_error(codecs, images):
    x = images["mnist-binary"][:10]
    header, payload = container.unpack(codecs["mnist-binary"].compress(x))
    header["data_sha256"] = "0" * 64
    with pytest.raises(IntegrityError):
        codecs["mnist-binary"].decompress(container.pack(header, bytes(payload)))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 28, 27), np.uint8),
        np.zeros((2, 784), np.uint8),
        np.zeros((0, 28, 28), np.uint8),
        np.zeros((2, 28, 28), np.float32) + 0.5,
        np.full((2, 28, 28), 255, np.uint8),  # not binary
    ],
)
def test_bad_input_is_input_error(codecs, bad):
    with pytest.raises(InputError):
        codecs["mnist-binary"].compress(bad)


def test_size_accounting(codecs, images):
    """Every byte is the header, the lanes' messages, or the checksum; nothing else."""
    x = images["mnist-binary"][:100]
    blob = codecs["mnist-binary"].compress(x)
    header, payload = container.unpack(blob)
    assert len(blob) == len(container.prefix(header, len(payload))) + len(payload) + 32


# ------------------------------------------------------------- lockstep shards
@pytest.mark.parametrize("model", ["mnist-binary", "mnist-grey"])
def test_onnxruntime_rows_do_not_depend_on_batch(codecs, images, model):
    """The invariant lockstep shards rest on (DESIGN.md): a row's encoder and decoder
    outputs are bit-identical whatever the batch size and the row's position in it."""
    codec = codecs[model]
    rng = np.random.default_rng(7)
    x = images[model][:64].reshape(64, -1).astype(np.float32)
    centres = codec.step.centres
    z = centres[rng.integers(0, len(centres), (64, codec.model.latent))]
    for net, name, rows in ((codec.encoder, "x", x), (codec.decoder, "z", z)):
        ref = net(**{name: rows})
        perm = rng.permutation(64)
        batches = [(np.array([i]), None) for i in (0, 17, 63)]                # batch 1
        batches += [(np.array(ix), None) for ix in ([5, 6, 7], [63, 0, 31], [9, 40, 9])]  # batch 3
        batches += [(perm, None), (np.arange(64)[::-1], None)]                  # batch 64, moved rows
        for ix, _ in batches:
            out = net(**{name: np.ascontiguousarray(rows[ix])})
            for key, v in ref.items():
                assert np.array_equal(out[key], v[ix]), (net, key, ix[:4])
    # and a batch as large as compression's (all rows at once) against single rows
    x = images[model].reshape(len(images[model]), -1).astype(np.float32)
    z = centres[rng.integers(0, len(centres), (len(x), codec.model.latent))]
    for net, name, rows in ((codec.encoder, "x", x), (codec.decoder, "z", z)):
        ref = net(**{name: rows})
        for i in range(0, len(rows), 7):
            out = net(**{name: rows[i : i + 1]})
            for key, v in ref.items():
                assert np.array_equal(out[key], v[i : i + 1]), (net, key, i)


@pytest.mark.parametrize("model,k", [("mnist-binary", 0), ("mnist-grey", 0), ("mnist-binary", 2)])
def test_shard_bytes_do_not_depend_on_grouping(images, model, k):
    """Shards coded alone, all in one lockstep group, or in uneven groups give the same
    bytes, and decode the same way (K > 0 included: its torch steps see one shard)."""
    x = images[model][:61].reshape(61, -1)
    # one lane per shard at K = 0; with K steps shards hold >= K_SHARD_LANES (16) lanes
    lanes, shards = (7, 7) if k == 0 else (40, 3)
    codec = bitsback.load(model, device="cpu", lanes=lanes, k_steps=k, workers=1)
    plan = codec.plan(len(x))
    assert len(plan) == shards and sum(c for c, _ in plan) == 61
    starts = np.cumsum([0] + [c for c, _ in plan])
    parts = [(x[starts[g] : starts[g + 1]], sl, g) for g, (_, sl) in enumerate(plan)]
    alone = [codec.encode_group([p])[0] for p in parts]
    assert codec.encode_group(parts) == alone
    assert codec.encode_group(parts[:2]) + codec.encode_group(parts[2:]) == alone
    from bitsback.header import shard_digest

    jobs = [(alone[g], c, sl, g, shard_digest(parts[g][0]), int(starts[g])) for g, (c, sl) in enumerate(plan)]
    together = codec.decode_group(jobs)
    for g, y in enumerate(together):
        assert np.array_equal(y, parts[g][0])
        assert np.array_equal(codec.decode_group([jobs[g]])[0], y)


def test_groups_cover_the_plan_in_order(codecs):
    from bitsback.codec import GROUP_MAX_IMAGES

    codec = codecs["mnist-binary"]
    for n in (1, 100, 10_000, 60_000, 300_000):
        plan = codec.plan(n)
        for parts in (1, 2, 3, 16):
            groups = codec.groups(plan, parts)
            assert [i for g in groups for i in g] == list(range(len(plan)))
            assert len(groups) >= min(parts, len(plan))
            assert max(sum(plan[i][0] for i in g) for g in groups) <= max(2 * GROUP_MAX_IMAGES, max(c for c, _ in plan))


def test_plan_makes_small_shards(codecs):
    """Range decode granularity: at 60 000 binary images the default keeps lanes short
    (over 128, one per shard), so no shard holds more than 1/128 of the images; the
    plan's lanes are the ones chosen from N."""
    codec = codecs["mnist-binary"]
    plan = codec.plan(60_000)
    assert codec.choose_lanes(60_000) > 128
    assert max(c for c, _ in plan) <= 60_000 // 128 and len(plan) > 128
    assert sum(sl for _, sl in plan) == codec.choose_lanes(60_000)


@pytest.mark.parametrize("model", ["mnist-binary", "mnist-grey"])
def test_lane_share_depends_on_the_file_size(codecs, model):
    """Below RANGE_MIN_IMAGES (e.g. the 10 000-image test set) lanes are chosen with the
    size share, as the rate figures in BENCHMARKS.md assume; from there on with the larger
    random-access share."""
    from bitsback import codec as C

    codec = codecs[model]
    m = codec.model
    active = m.latent - len(codec.inactive_dims)
    per_lane = C.LANE_HEAD_BITS + C.SHARD_ENTRY_BITS + active * m.precision["latent_bits"]
    for n, share in ((10_000, C.LANE_OVERHEAD_SHARE), (C.RANGE_MIN_IMAGES - 1, C.LANE_OVERHEAD_SHARE),
                     (C.RANGE_MIN_IMAGES, C.RANGE_SHARE), (60_000, C.RANGE_SHARE)):
        want = int(n * m.expected_bits_per_dim * m.dim * share / per_lane)
        assert codec.choose_lanes(n) == max(1, min(want, C.MAX_AUTO_LANES)), n


# ------------------------------------------------------------------- inactive latent dims
@pytest.mark.parametrize("version", [2, 3, 4, 5])
@pytest.mark.parametrize("model", ["mnist-binary", "mnist-grey"])
def test_older_files_still_decode_exactly(model, version):
    """Real files written by the last build of each older version decode to the images
    they were made from: version 2 (framed shard payloads, 128-bit shard digests, every
    latent dim coded), version 3 (header compressed without a dictionary) and version 4
    (float networks, erfc posterior); and version 5, the portable models' files, which
    must decode on every machine. The older files name the float models, which the portable
    rebuild moved to zoo/legacy: ``zoo.for_file`` finds them by the file's sha256, and the
    bundled model of that name refuses the file with ModelMismatchError (a hint, not a
    wrong decode)."""
    fixtures = Path(__file__).parent / "fixtures"
    x = datasets.load(fixtures / "mnist-t10k-first64-idx3-ubyte.gz")
    if "binary" in model:
        x = datasets.binarize(x)
    blob = (fixtures / f"v{version}-{model}-first64-lanes7.bba").read_bytes()
    header = container.unpack(blob)[0]
    assert header["version"] == version
    if version == 5:   # the portable models: decoded on every machine, every run
        assert header["arithmetic"] == {"kind": "portable", "version": 1}
        assert zoo.for_file(model, header["model"]["sha256"]) == model
        assert np.array_equal(bitsback.load(model, device="cpu").decompress(blob), x)
        return
    legacy = zoo.for_file(model, header["model"]["sha256"])
    assert legacy != model and "legacy" in legacy
    assert np.array_equal(bitsback.load(legacy, device="cpu").decompress(blob), x)
    with pytest.raises(ModelMismatchError, match="earlier versions"):
        bitsback.load(model, device="cpu").decompress(blob)


def test_inactive_dims_are_recorded_and_shrink_lanes(codecs, images):
    """The bundled model's collapsed dims are left out; the file records them, a codec set
    otherwise decodes by the file's, and leaving them out saves initial bits per lane."""
    x = images["mnist-binary"][:64]
    codec = codecs["mnist-binary"]
    dims = codec.inactive_dims
    assert 0 < len(dims) < codec.model.latent
    fewer = codec.compress(x)
    assert container.unpack(fewer)[0]["inactive_dims"] == list(dims)
    other = bitsback.load("mnist-binary", device="cpu", lanes=16)
    other.inactive_dims = []
    every = other.compress(x)
    assert container.unpack(every)[0]["inactive_dims"] == []
    assert np.array_equal(codec.decompress(every), x)       # by the file's setting
    assert np.array_equal(other.decompress(fewer), x)
    other.inactive_dims = dims
    assert len(other.compress(x)) < len(every)              # 16 lanes, each without initial bits for the collapsed dims


@pytest.mark.parametrize("bad", [[32], [-1], [1, 1], [1.0], [True], "1", {"a": 1}])
def test_hostile_inactive_dims_are_format_errors(codecs, images, bad):
    header, payload = container.unpack(codecs["mnist-binary"].compress(images["mnist-binary"][:3]))
    header["inactive_dims"] = bad
    with pytest.raises(FormatError):
        codecs["mnist-binary"].decompress(container.pack(header, bytes(payload)))
