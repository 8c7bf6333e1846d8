"""The C rANS core through its binding: round trips, bits-back interleavings, wire format."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitsback._rans import HEADER_BYTES, LANE_OVERHEAD_BITS, MAX_PRECISION, Messages
from bitsback.errors import CorruptMessageError, FormatError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_cdf(rng, K, prec):
    """Strictly increasing cdf[0..K] from 0 to 2^prec."""
    inner = np.sort(rng.choice(np.arange(1, 1 << prec), size=K - 1, replace=False))
    return np.concatenate([[0], inner, [1 << prec]]).astype(np.uint32)


@SETTINGS
@given(lanes=st.integers(1, 9), n=st.integers(0, 9), S=st.integers(0, 50),
       prec=st.integers(1, MAX_PRECISION), seed=st.integers(0, 2**64 - 1))
def test_uniform_round_trip(lanes, n, S, prec, seed):
    n = min(n, lanes)
    rng = np.random.default_rng(seed % 2**32)
    x = rng.integers(0, 1 << prec, (n, S), dtype=np.uint64).astype(np.uint32)
    m = Messages(lanes, seed)
    m.push_uniform(x, prec)
    m2 = Messages.from_bytes(m.to_bytes(), seed)
    np.testing.assert_array_equal(m2.pop_uniform(n, S, prec), x)
    assert m2.is_initial()


@SETTINGS
@given(lanes=st.integers(1, 6), S=st.integers(1, 40), K=st.integers(2, 40),
       prec=st.integers(6, 24), seed=st.integers(0, 2**32 - 1))
def test_categorical_push_pop_table(lanes, S, K, prec, seed):
    rng = np.random.default_rng(seed)
    cdf = random_cdf(rng, K, prec)
    x = rng.integers(0, K, (lanes, S))
    m = Messages(lanes, seed)
    m.push(cdf[x], cdf[x + 1] - cdf[x], prec)
    np.testing.assert_array_equal(m.pop_table(cdf, lanes, S, prec), x)
    assert m.is_initial()


def test_peek_advance_two_phase():
    rng = np.random.default_rng(1)
    cdf = random_cdf(rng, 10, 12)
    x = rng.integers(0, 10, (5, 30))
    m = Messages(5, 7)
    m.push(cdf[x], cdf[x + 1] - cdf[x], 12)
    for j in range(30):
        cf = m.peek(5, 12)
        k = np.searchsorted(cdf, cf, side="right") - 1
        np.testing.assert_array_equal(k, x[:, j])
        m.advance(cdf[k], cdf[k + 1] - cdf[k], 12)
    assert m.is_initial()


ops = st.lists(st.tuples(st.sampled_from(["pop_u", "push_u", "push_c", "pop_c"]),
                         st.integers(1, 8), st.integers(0, 30), st.integers(1, 24)), max_size=25)


@SETTINGS
@given(ops=ops, lanes=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_bits_back_interleavings(ops, lanes, seed):
    """Encoder runs arbitrary pushes and pops (pops may hit the empty stack and draw initial
    bits); the decoder undoes them in reverse from the bytes and must end in the initial state."""
    rng = np.random.default_rng(seed)
    enc = Messages(lanes, seed)
    log = []
    for kind, n, S, prec in ops:
        n = min(n, lanes)
        cdf = random_cdf(rng, min(7, 1 << prec), prec) if prec >= 3 else np.arange((1 << prec) + 1, dtype=np.uint32)
        K = len(cdf) - 1
        if kind == "pop_u":
            log.append((kind, enc.pop_uniform(n, S, prec), prec, None))
        elif kind == "pop_c":
            log.append((kind, enc.pop_table(cdf, n, S, prec), prec, cdf))
        elif kind == "push_u":
            x = rng.integers(0, 1 << prec, (n, S)).astype(np.uint32)
            enc.push_uniform(x, prec)
            log.append((kind, x, prec, None))
        else:
            x = rng.integers(0, K, (n, S))
            enc.push(cdf[x], cdf[x + 1] - cdf[x], prec)
            log.append((kind, x, prec, cdf))
    blob = enc.to_bytes()
    assert len(blob) * 8 == enc.total_bits()
    dec = Messages.from_bytes(blob, seed)
    for kind, x, prec, cdf in reversed(log):
        n, S = x.shape
        if kind == "pop_u":
            dec.push_uniform(x, prec)
        elif kind == "pop_c":
            dec.push(cdf[x], cdf[x + 1] - cdf[x], prec)
        elif kind == "push_u":
            np.testing.assert_array_equal(dec.pop_uniform(n, S, prec), x)
        else:
            np.testing.assert_array_equal(dec.pop_table(cdf, n, S, prec), x)
    assert dec.is_initial()
    assert dec.words_drawn().sum() == 0     # an honest decode never needs the generator


def test_initial_state_detects_tampering():
    m = Messages(3, 5)
    a = m.pop_uniform(3, 10, 16)
    m.push_uniform(a, 16)
    assert m.is_initial()
    a[1, 3] ^= 1
    m = Messages(3, 5)
    m.pop_uniform(3, 10, 16)
    m.push_uniform(a, 16)
    assert list(m.lanes_initial()) == [True, False, True]


def test_lane_bits_and_overhead():
    m = Messages(4, 0)
    assert list(m.lane_bits()) == [LANE_OVERHEAD_BITS] * 4
    m.push_uniform(np.zeros((2, 100), np.uint32), 16)
    assert m.total_bits() == 8 * len(m.to_bytes())
    assert m.total_bits() == 8 * HEADER_BYTES + int(m.lane_bits().sum())
    # 1600 bits pushed per lane fill 50 words (the head keeps at most 32 more bits)
    assert 49 * 32 <= int(m.lane_bits()[0]) - LANE_OVERHEAD_BITS <= 51 * 32


def test_argument_checks():
    m = Messages(2, 0)
    with pytest.raises(ValueError):
        m.push_uniform(np.zeros((3, 1), np.uint32), 8)    # more rows than lanes
    with pytest.raises(ValueError):
        m.push_uniform(np.full((1, 1), 256, np.uint32), 8)
    with pytest.raises(ValueError):
        m.push(np.zeros((1, 1)), np.zeros((1, 1)), 8)     # freq 0
    with pytest.raises(ValueError):
        m.push(np.full((1, 1), 200), np.full((1, 1), 100), 8)   # start + freq > 2^prec
    with pytest.raises(ValueError):
        m.pop_uniform(1, 1, MAX_PRECISION + 1)
    with pytest.raises(ValueError):
        Messages(0, 0)


def valid_blob(seed=3):
    m = Messages(3, seed)
    rng = np.random.default_rng(seed)
    m.push_uniform(rng.integers(0, 1 << 20, (3, 20)).astype(np.uint32), 20)
    return m.to_bytes()


def test_malformed_fixed_cases():
    blob = valid_blob()
    bad = [b"", b"BBR1", blob[:-1], blob + b"\0", b"XXXX" + blob[4:],
           blob[:4] + (0).to_bytes(4, "little") + blob[8:],                   # zero lanes
           blob[:4] + (2**32 - 1).to_bytes(4, "little") + blob[8:],           # huge lane count
           blob[:16] + (2**32 - 1).to_bytes(4, "little") + blob[20:],         # huge word count
           blob[:8] + (0).to_bytes(8, "little") + blob[16:],                  # head below L
           blob[:8] + (2**64 - 1).to_bytes(8, "little") + blob[16:]]          # head >= 2^63
    for b in bad:
        with pytest.raises(CorruptMessageError):
            Messages.from_bytes(b, 3)
    assert issubclass(CorruptMessageError, FormatError) and issubclass(CorruptMessageError, ValueError)
    with pytest.raises(CorruptMessageError):
        Messages.from_bytes(blob, 3, max_lanes=2)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash(data):
    try:
        m = Messages.from_bytes(b"BBR1" + data, 0)
    except CorruptMessageError:
        return
    m.pop_uniform(m.lanes, 40, 31)     # decoding garbage is allowed, crashing is not
    m.to_bytes()


@SETTINGS
@given(pos=st.integers(0, 10**6), bit=st.integers(0, 7), cut=st.integers(0, 10**6))
def test_mutated_and_truncated_messages(pos, bit, cut):
    blob = bytearray(valid_blob())
    blob[pos % len(blob)] ^= 1 << bit
    for b in (bytes(blob), bytes(blob[: cut % len(blob)])):
        try:
            m = Messages.from_bytes(b, 3)
        except CorruptMessageError:
            continue
        m.pop_uniform(3, 30, 20)


def test_copy_is_independent():
    m = Messages(2, 1)
    m.push_uniform(np.arange(20, dtype=np.uint32).reshape(2, 10), 8)
    c = m.copy()
    c.pop_uniform(2, 10, 8)
    assert m.to_bytes() != c.to_bytes()
    np.testing.assert_array_equal(m.pop_uniform(2, 10, 8), np.arange(20).reshape(2, 10))


def test_precision_31_checks_use_python_ints():
    """start + freq = 2^31 at prec 31 is valid (the check once used a C int 1 << 31)."""
    m = Messages(1, 0)
    m.push(np.array([[2**31 - 1, 0]], np.uint32), np.array([[1, 2**31]], np.uint32), 31)
    assert m.peek(1, 31).dtype == np.uint32
    cdf = np.array([0, 5, 2**31], np.uint32)
    m.pop_table(cdf, 1, 1, 31)
    with pytest.raises(ValueError):
        m.push(np.array([[2**31 - 1]], np.uint32), np.array([[2]], np.uint32), 31)
