# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin binding of the C rANS core (csrc/rans.c): a set of independent lanes (messages).

Every bulk operation takes arrays whose first dimension n <= lanes and applies to
lanes 0..n-1. Pushing an (n, S) array pushes columns S-1..0 so that pops return
column 0 first.
"""
import numpy as np
cimport numpy as cnp
from libc.stdlib cimport free, malloc
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t

from bitsback.errors import CorruptMessageError

cnp.import_array()

cdef extern from "rans.h":
    ctypedef struct bb_stack:
        uint32_t *words
        size_t size
        size_t cap
        uint64_t drawn
    ctypedef struct bb_msgs:
        size_t lanes
        uint64_t seed
        uint64_t *heads
        uint64_t *keys
        bb_stack *stacks
        int err
    int BB_OK, BB_ENOMEM, BB_EFORMAT
    unsigned int BB_RANS_MAX_PREC
    bb_msgs *bb_msgs_new(size_t lanes, uint64_t seed) nogil
    void bb_msgs_free(bb_msgs *m) nogil
    bb_msgs *bb_msgs_copy(const bb_msgs *m) nogil
    bb_msgs *bb_msgs_gather(bb_msgs **srcs, const size_t *lanes, size_t n) nogil
    uint32_t bb_gen_word(uint64_t seed, uint64_t lane, uint64_t counter) nogil
    uint64_t bb_initial_head(uint64_t seed, uint64_t lane) nogil
    void bb_emit(bb_msgs *m, size_t lane, uint32_t word) nogil
    uint32_t bb_take(bb_msgs *m, size_t lane) nogil
    void bb_push(bb_msgs *m, size_t lane, uint32_t start, uint32_t freq, uint32_t prec) nogil
    uint32_t bb_peek(const bb_msgs *m, size_t lane, uint32_t prec) nogil
    void bb_advance(bb_msgs *m, size_t lane, uint32_t start, uint32_t freq, uint32_t prec) nogil
    void bb_push_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *starts,
                      const uint32_t *freqs, uint32_t prec) nogil
    void bb_push_uniform_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *syms, uint32_t prec) nogil
    void bb_pop_uniform_bulk(bb_msgs *m, size_t n, size_t S, uint32_t *syms, uint32_t prec) nogil
    void bb_pop_table_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *cdf, size_t K,
                           uint32_t prec, uint32_t *syms) nogil
    size_t bb_serialized_size(const bb_msgs *m) nogil
    size_t bb_to_bytes(const bb_msgs *m, uint8_t *out, size_t cap) nogil
    int bb_msgs_from_bytes(const uint8_t *data, size_t len, uint64_t seed, size_t max_lanes,
                           bb_msgs **out) nogil
    uint64_t bb_lane_bits(const bb_msgs *m, size_t lane) nogil
    int bb_lane_is_initial(const bb_msgs *m, size_t lane) nogil

#: Largest precision (bits) of one coded symbol.
MAX_PRECISION = BB_RANS_MAX_PREC
#: Fixed serialised bits per lane besides its words (u64 head + u32 word count).
LANE_OVERHEAD_BITS = 96
#: Serialised bytes of the message-set header (magic + u32 lane count).
HEADER_BYTES = 8
#: Largest lane count accepted by from_bytes unless told otherwise.
DEFAULT_MAX_LANES = 1 << 20


cdef inline object _pow2(int prec):
    # a Python int: with a C int, 1 << 31 overflows (the check rejected valid prec-31 input)
    return (<object>1) << prec


def c_symbols():
    """Addresses of the word-level C hooks, for compiled callers (numba) to link against.

    Returns a dict name -> int address: ``bb_emit(msgs*, lane, word)`` pushes one 32-bit
    word on a lane's stack; ``bb_take(msgs*, lane) -> word`` pops one (or draws the next
    initial-bits word when the stack is empty).
    """
    return {"bb_emit": <uintptr_t>&bb_emit, "bb_take": <uintptr_t>&bb_take}


cdef inline void _check_prec(int prec) except *:
    if prec < 1 or prec > BB_RANS_MAX_PREC:
        raise ValueError(f"precision must be in [1, {BB_RANS_MAX_PREC}], got {prec}")


cdef class Messages:
    """L independent rANS messages (lanes) with 64-bit heads and 32-bit word stacks.

    Parameters
    ----------
    lanes : int
        Number of lanes (>= 1).
    seed : int
        Seed of the counter-based generator that supplies the initial bits: a pop that
        finds a lane's stack empty takes word ``c`` of ``splitmix64(seed, lane, c)``.
        The decoder must use the same seed.
    """
    cdef bb_msgs *m
    cdef object _heads

    def __cinit__(self, lanes=None, seed=0):
        self.m = NULL
        if lanes is None:      # internal: filled in by from_bytes / copy
            return
        if lanes < 1 or lanes > (1 << 32) - 1:
            raise ValueError("lanes must be in [1, 2^32)")
        self.m = bb_msgs_new(<size_t>lanes, <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF))
        if self.m == NULL:
            raise MemoryError()
        self._wrap()

    cdef _wrap(self):
        self._heads = np.asarray(<uint64_t[:self.m.lanes]> self.m.heads)

    def __dealloc__(self):
        bb_msgs_free(self.m)

    cdef inline void _ok(self) except *:
        if self.m.err:
            raise MemoryError("rANS word stack could not grow; message set is invalid")

    @property
    def lanes(self):
        return self.m.lanes

    @property
    def seed(self):
        return self.m.seed

    @property
    def heads(self):
        """uint64[lanes] view of the heads (shared memory; for compiled callers)."""
        return self._heads

    @property
    def address(self):
        """Address of the C ``bb_msgs`` struct (for compiled callers; valid while self lives)."""
        return <uintptr_t>self.m

    def raise_if_error(self):
        """Raise MemoryError if a stack failed to grow during a compiled bulk operation."""
        self._ok()

    def copy(self):
        cdef Messages c = Messages.__new__(Messages)
        c.m = bb_msgs_copy(self.m)
        if c.m == NULL:
            raise MemoryError()
        c._wrap()
        return c

    @staticmethod
    def gather(parts):
        """A new message set whose lane k copies lane ``parts[k][1]`` of the message set
        ``parts[k][0]``, generator key included: a lane codes exactly as it would in its
        own set, so lanes of several sets can be coded together and split apart again
        (``Messages.gather([(group, k), ...])``)."""
        parts = list(parts)
        cdef size_t n = len(parts), k
        cdef bb_msgs *out = NULL
        if n < 1:
            raise ValueError("gather needs at least one lane")
        cdef bb_msgs **ptrs = <bb_msgs **>malloc(n * sizeof(bb_msgs *))
        cdef size_t *lanes = <size_t *>malloc(n * sizeof(size_t))
        cdef Messages src
        try:
            if ptrs == NULL or lanes == NULL:
                raise MemoryError()
            for k in range(n):
                src = <Messages?>parts[k][0]
                lane = parts[k][1]
                if src.m == NULL or lane < 0 or lane >= src.m.lanes:
                    raise IndexError(f"lane {lane} is not a lane of that message set")
                src._ok()
                ptrs[k] = src.m
                lanes[k] = lane
            out = bb_msgs_gather(ptrs, lanes, n)
        finally:
            free(ptrs)
            free(lanes)
        cdef Messages c = Messages.__new__(Messages)
        c.m = out
        if c.m == NULL:
            raise MemoryError()
        c._wrap()
        return c

    cdef size_t _n(self, size_t n) except? 0:
        if n > self.m.lanes:
            raise ValueError(f"{n} rows but only {self.m.lanes} lanes")
        return n

    def push(self, starts, freqs, int prec):
        """Push symbols given by their quantised (start, freq) pairs, shape (n, S)."""
        _check_prec(prec)
        cdef cnp.ndarray[uint32_t, ndim=2, mode="c"] s = np.ascontiguousarray(starts, dtype=np.uint32)
        cdef cnp.ndarray[uint32_t, ndim=2, mode="c"] f = np.ascontiguousarray(freqs, dtype=np.uint32)
        if s.shape[0] != f.shape[0] or s.shape[1] != f.shape[1]:
            raise ValueError("starts and freqs must have the same shape")
        if f.size and (f.min() == 0 or int((s.astype(np.uint64) + f).max()) > _pow2(prec)):
            raise ValueError("need freq >= 1 and start + freq <= 2^prec")
        cdef size_t n = self._n(s.shape[0]), S = s.shape[1]
        with nogil:
            bb_push_bulk(self.m, n, S, &s[0, 0] if n * S else NULL, &f[0, 0] if n * S else NULL, prec)
        self._ok()

    def push_uniform(self, symbols, int prec):
        """Push (n, S) symbols uniform over [0, 2^prec)."""
        _check_prec(prec)
        cdef cnp.ndarray[uint32_t, ndim=2, mode="c"] x = np.ascontiguousarray(symbols, dtype=np.uint32)
        if x.size and int(x.max()) >> prec:
            raise ValueError("symbol out of range for the precision")
        cdef size_t n = self._n(x.shape[0]), S = x.shape[1]
        with nogil:
            bb_push_uniform_bulk(self.m, n, S, &x[0, 0] if n * S else NULL, prec)
        self._ok()

    def pop_uniform(self, size_t n, size_t S, int prec):
        """Pop (n, S) symbols uniform over [0, 2^prec); returns uint32[n, S]."""
        _check_prec(prec)
        self._n(n)
        cdef cnp.ndarray[uint32_t, ndim=2, mode="c"] x = np.empty((n, S), dtype=np.uint32)
        with nogil:
            bb_pop_uniform_bulk(self.m, n, S, &x[0, 0] if n * S else NULL, prec)
        return x

    def pop_table(self, cdf, size_t n, size_t S, int prec):
        """Pop (n, S) symbols of one categorical given by its quantised CDF (length K+1)."""
        _check_prec(prec)
        self._n(n)
        cdef cnp.ndarray[uint32_t, ndim=1, mode="c"] c = np.ascontiguousarray(cdf, dtype=np.uint32)
        if c.shape[0] < 2 or c[0] != 0 or int(c[c.shape[0] - 1]) != _pow2(prec) or np.any(np.diff(c.astype(np.int64)) <= 0):
            raise ValueError("cdf must rise strictly from 0 to 2^prec")
        cdef cnp.ndarray[uint32_t, ndim=2, mode="c"] x = np.empty((n, S), dtype=np.uint32)
        with nogil:
            bb_pop_table_bulk(self.m, n, S, &c[0], c.shape[0] - 1, prec, &x[0, 0] if n * S else NULL)
        return x

    def peek(self, size_t n, int prec):
        """Cumulative frequencies cf = head mod 2^prec of lanes 0..n-1 (no state change)."""
        _check_prec(prec)
        self._n(n)
        return (self._heads[:n] & np.uint64(_pow2(prec) - 1)).astype(np.uint32)

    def advance(self, starts, freqs, int prec):
        """Second phase of a pop: remove the symbols (start, freq), shape (n,), from lanes 0..n-1."""
        _check_prec(prec)
        cdef cnp.ndarray[uint32_t, ndim=1, mode="c"] s = np.ascontiguousarray(starts, dtype=np.uint32)
        cdef cnp.ndarray[uint32_t, ndim=1, mode="c"] f = np.ascontiguousarray(freqs, dtype=np.uint32)
        if s.shape[0] != f.shape[0]:
            raise ValueError("starts and freqs must have the same shape")
        cdef size_t n = self._n(s.shape[0]), i
        cf = self.peek(n, prec)
        if n and (f.min() == 0 or np.any(cf < s) or np.any(cf.astype(np.uint64) >= s.astype(np.uint64) + f)):
            raise ValueError("(start, freq) does not contain the peeked cf")
        with nogil:
            for i in range(n):
                bb_advance(self.m, i, s[i], f[i], prec)

    def to_bytes(self):
        """Serialise: b"BBR1" | u32 lanes | per lane (u64 head, u32 nwords, words), little-endian."""
        cdef size_t size = bb_serialized_size(self.m)
        if size == 0:
            raise OverflowError("a lane is too long to serialise (>= 2^32 words)")
        out = bytearray(size)
        cdef uint8_t[::1] buf = out
        with nogil:
            size = bb_to_bytes(self.m, &buf[0], size)
        if size == 0:
            raise OverflowError("serialisation failed")
        return bytes(out)

    @staticmethod
    def from_bytes(data, seed, max_lanes=DEFAULT_MAX_LANES):
        """Parse ``to_bytes`` output; raises CorruptMessageError on malformed input."""
        cdef const uint8_t[::1] buf = memoryview(data).cast("B")
        cdef bb_msgs *out = NULL
        cdef int rc
        cdef size_t ln = buf.shape[0]
        cdef size_t ml = max_lanes
        cdef uint64_t sd = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
        if ln == 0:
            raise CorruptMessageError("empty rANS message")
        with nogil:
            rc = bb_msgs_from_bytes(&buf[0], ln, sd, ml, &out)
        if rc == BB_ENOMEM:
            raise MemoryError()
        if rc != BB_OK:
            raise CorruptMessageError("malformed or truncated rANS message")
        cdef Messages c = Messages.__new__(Messages)
        c.m = out
        c._wrap()
        return c

    def lane_bits(self):
        """uint64[lanes]: exact serialised bits of each lane (96 + 32 * words)."""
        cdef cnp.ndarray[uint64_t, ndim=1] b = np.empty(self.m.lanes, dtype=np.uint64)
        cdef size_t i
        for i in range(self.m.lanes):
            b[i] = bb_lane_bits(self.m, i)
        return b

    def total_bits(self):
        """Exact bits of ``to_bytes()`` (header included)."""
        return 8 * HEADER_BYTES + int(self.lane_bits().sum())

    def words_drawn(self):
        """uint64[lanes]: initial-bits words drawn from the generator by pops on empty stacks."""
        cdef cnp.ndarray[uint64_t, ndim=1] b = np.empty(self.m.lanes, dtype=np.uint64)
        cdef size_t i
        for i in range(self.m.lanes):
            b[i] = self.m.stacks[i].drawn
        return b

    def stack_sizes(self):
        cdef cnp.ndarray[uint64_t, ndim=1] b = np.empty(self.m.lanes, dtype=np.uint64)
        cdef size_t i
        for i in range(self.m.lanes):
            b[i] = self.m.stacks[i].size
        return b

    def lanes_initial(self):
        """bool[lanes]: lane is back in its initial state (head == initial head and the
        stack holds exactly the generator's words 0..size-1, word 0 on top), which is
        where a complete, correct decode ends."""
        out = np.empty(self.m.lanes, dtype=bool)
        cdef size_t i
        for i in range(self.m.lanes):
            out[i] = bb_lane_is_initial(self.m, i) != 0
        return out

    def is_initial(self):
        return bool(self.lanes_initial().all())

    def __repr__(self):
        return f"Messages(lanes={self.m.lanes}, seed={self.m.seed}, bits={self.total_bits()})"


def initial_head(seed, lane):
    return bb_initial_head(<uint64_t>(seed & 0xFFFFFFFFFFFFFFFF), lane)


def generator_word(seed, lane, counter):
    return bb_gen_word(<uint64_t>(seed & 0xFFFFFFFFFFFFFFFF), lane, counter)
