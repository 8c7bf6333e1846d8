import hashlib
import json
import struct
import zlib

import pytest

from bitsback import container
from bitsback.errors import FormatError, LimitError

SH = "a" * 16      # a shard digest: 64 bits in version 3
SH_V2 = "a" * 32   # 128 bits in versions 1 and 2
ZDICT_SHA256 = "de6b73d679611dab31ff6557a963f8918150fc2287ee2096e7192987b0f9e3f7"  # container.ZDICT, frozen with version 4
ZDICT_V5_SHA256 = "f9d01b6efbdc4767be462b7d48784b100092af0bed93a532c83db8eb7ff23a23"  # container.ZDICT_V5, frozen with version 5


def header(**over):
    h = {
        "model": {"name": "m", "sha256": "0" * 64},
        "likelihood": "bernoulli",
        "shape": [28, 28],
        "dtype": "uint8",
        "levels": 2,
        "n": 10,
        "lanes": 2,
        "shards": [[10, 2, 3, SH]],
        "precision": {"likelihood": 24, "posterior": 24, "latent_bits": 12},
        "latent": 32,
        "k_steps": 0,
        "lr": 0.005,
        "seed": 0,
        "runtime": {"onnxruntime": "x"},
        "data_sha256": "1" * 64,
        "arithmetic": {"kind": "float", "fingerprint": "0123456789abcdef"},    # version 5 on
    }
    h.update(over)
    return h


def forge(h, payload=b"abc", raw_header=None, version=container.VERSION):
    """A container with a valid checksum around an arbitrary (possibly hostile) header.
    Version 1 stores the header bytes as they are (plain JSON), later versions zlib them
    (container.deflate); a raw_header is stored as given (hostile zlib streams are the point)."""
    head = raw_header if raw_header is not None else json.dumps(h).encode()
    if version >= 2 and raw_header is None:
        head = container.deflate(head, version)
    body = struct.pack("<6sHI", container.MAGIC, version, len(head)) + head + struct.pack("<Q", len(payload)) + payload
    return body + hashlib.sha256(body).digest()


def test_round_trip():
    h0 = header(shards=[[4, 1, 5, SH], [6, 1, 8, SH]])
    blob = container.pack(h0, b"payload-bytes")
    h, p = container.unpack(blob)
    assert h == {**h0, "version": container.VERSION} and bytes(p) == b"payload-bytes"


def test_every_truncation_and_bit_flip_is_rejected():
    blob = container.pack(header(shards=[[10, 2, 50, SH]]), bytes(range(50)))
    for cut in range(len(blob)):
        with pytest.raises(FormatError):
            container.unpack(blob[:cut])
    for i in range(0, len(blob), 7):
        bad = bytearray(blob)
        bad[i] ^= 0x10
        with pytest.raises(FormatError):
            container.unpack(bytes(bad))


def test_extension_is_rejected():
    with pytest.raises(FormatError):
        container.unpack(container.pack(header(), b"xyz") + b"\0")


@pytest.mark.parametrize(
    "over",
    [
        {"n": 1 << 40},
        {"lanes": 1 << 30, "n": 1 << 31},
        {"shape": [1 << 20, 1 << 20]},
        {"latent": 1 << 30},
    ],
)
def test_hostile_sizes_raise_limit_error(over):
    with pytest.raises(LimitError):
        container.unpack(forge(header(**over)))


@pytest.mark.parametrize(
    "over",
    [
        {"n": 0},
        {"n": "10"},
        {"n": True},
        {"shape": [28, -1]},
        {"shape": []},
        {"lanes": 11},
        {"dtype": "float32"},
        {"precision": {"likelihood": 24}},
        {"precision": {"likelihood": 40, "posterior": 24, "latent_bits": 12}},
        {"model": {"name": 3}},
        {"shards": []},
        {"shards": [[10, 2, 3]]},
        {"shards": [[10, 2, 3, "abc"]]},
        {"shards": [[5, 1, 3, SH], [5, 1, 1, SH]]},
        {"shards": [[10, 11, 3, SH]]},
        {"shards": [[9, 2, 3, SH]]},
        {"shards": [[10, 2, 4, SH]]},
    ],
)
def test_malformed_fields(over):
    with pytest.raises(FormatError):
        container.unpack(forge(header(**over)))


def test_missing_field_and_bad_json():
    h = header()
    del h["data_sha256"]
    with pytest.raises(FormatError, match="data_sha256"):
        container.unpack(forge(h))
    with pytest.raises(FormatError, match="JSON"):
        container.unpack(forge(None, raw_header=b"{not json", version=1))
    with pytest.raises(FormatError):
        container.unpack(forge(None, raw_header=b"[1, 2]", version=1))


def test_header_length_limit_checked_before_reading():
    blob = struct.pack("<6sHI", container.MAGIC, container.VERSION, 0xFFFFFFFF) + b"x" * 10
    with pytest.raises(LimitError):
        container.unpack(blob)


def test_wrong_version():
    blob = bytearray(container.pack(header(), b"xyz"))
    blob[6] = 99
    with pytest.raises(FormatError, match="version"):
        container.unpack(bytes(blob))


def test_version_1_plain_json_headers_are_still_read():
    h0 = header(shards=[[4, 1, 1, SH_V2], [6, 1, 2, SH_V2]])
    h, p = container.unpack(forge(h0, b"abc", version=1))
    assert h == {**h0, "version": 1} and bytes(p) == b"abc"
    h, p = container.unpack(forge(h0, b"abc", version=2))
    assert h == {**h0, "version": 2}


@pytest.mark.parametrize("version,digest", [(1, SH), (3, SH_V2), (3, "A" * 16), (3, "g" * 16)])
def test_shard_digests_have_their_version_s_length(version, digest):
    with pytest.raises(FormatError, match="shard"):
        container.unpack(forge(header(shards=[[10, 2, 3, digest]]), version=version))


def test_new_files_have_a_compressed_header():
    h0 = header(shards=[[1, 1, 0, SH]] * 10)
    blob = container.pack(h0, b"")
    assert struct.unpack_from("<H", blob, 6)[0] == container.VERSION == 5
    assert struct.unpack_from("<I", blob, 8)[0] < len(json.dumps(h0))


def test_version_4_headers_use_the_pinned_dictionary():
    """ZDICT is part of format 4: a changed byte would make every version-4 file
    unreadable. Compressing against it must beat plain zlib on a typical header."""
    assert hashlib.sha256(container.ZDICT).hexdigest() == ZDICT_SHA256
    h0 = header(shards=[[4, 1, 5, SH], [6, 1, 8, SH]])
    blob = container.pack(h0, b"payload-bytes")
    hlen = struct.unpack_from("<I", blob, 8)[0]
    plain = zlib.compress(json.dumps(h0, sort_keys=True, separators=(",", ":")).encode(), 9)
    assert hlen < len(plain) - 50
    # a version-3 reader (no dictionary) cannot read it: the version number says which
    with pytest.raises(FormatError, match="zlib"):
        container.unpack(blob[:6] + struct.pack("<H", 3) + blob[8:-32] + hashlib.sha256(blob[:6] + struct.pack("<H", 3) + blob[8:-32]).digest())


def test_version_5_headers_use_their_pinned_dictionary():
    """ZDICT_V5 is part of format 5 (ZDICT after the strings version 5 added): pinned, and
    a version-5 header with its new fields compresses smaller against it than against
    ZDICT; a version-4 reader's dictionary cannot read it."""
    assert hashlib.sha256(container.ZDICT_V5).hexdigest() == ZDICT_V5_SHA256
    assert container.ZDICT_V5.endswith(container.ZDICT)
    h0 = header(shards=[[4, 1, 5, SH], [6, 1, 8, SH]], arithmetic={"kind": "float", "fingerprint": "e5efc14e44d6def1"},
                runtime={"isa": "x86-64-v3 avx avx2 fma", "machine": "x86_64", "numpy": "2.4.6", "onnxruntime": "1.31.1",
                         "provider": "CPUExecutionProvider"})
    blob = container.pack(h0, b"payload-bytes")
    hlen = struct.unpack_from("<I", blob, 8)[0]
    assert hlen == len(container.deflate(json.dumps(h0, sort_keys=True, separators=(",", ":")).encode(), 5))
    assert hlen < len(container.deflate(json.dumps(h0, sort_keys=True, separators=(",", ":")).encode(), 4)) - 30
    as4 = blob[:6] + struct.pack("<H", 4) + blob[8:-32]
    with pytest.raises(FormatError, match="zlib"):
        container.unpack(as4 + hashlib.sha256(as4).digest())


def test_version_3_headers_without_a_dictionary_are_still_read():
    h0 = header(shards=[[4, 1, 5, SH], [6, 1, 8, SH]])
    h, p = container.unpack(forge(h0, b"payload-bytes", version=3))
    assert h == {**h0, "version": 3} and bytes(p) == b"payload-bytes"


@pytest.mark.parametrize(
    "head, error",
    [
        (b"{not zlib", FormatError),
        (zlib.compress(b'{"a": 1}')[:-3], FormatError),                    # truncated stream
        (zlib.compress(b'{"a": 1}') + b"junk", FormatError),               # trailing bytes
        (zlib.compress(b" " * ((1 << 20) + 1), 9), LimitError),           # inflates past the limit
        (zlib.compress(b" " * (1 << 26), 9), LimitError),                 # a zlib bomb
        (zlib.compress(b"\xff\xfe"), FormatError),                        # not UTF-8
        (zlib.compress(b"[1, 2]"), FormatError),
    ],
)
def test_hostile_compressed_headers_raise_typed_errors(head, error):
    with pytest.raises(error):
        container.unpack(forge(None, raw_header=head, version=2))
