/* rANS core for bitsback: 64-bit state, 32-bit renormalisation words (rans64 style),
 * one independent message ("lane") per image slot, each with its own growable stack.
 *
 * Invariants (kept by every function here):
 *   - a lane's head x lies in [BB_RANS_L, 2^63) between operations;
 *   - a push emits at most one word and a pop consumes at most one word, because
 *     precision <= BB_RANS_MAX_PREC (31) keeps x >> prec >= 1 after renormalisation;
 *   - a pop from an empty stack takes the next word of a counter-based generator
 *     (splitmix64 of the lane's key and a counter; the key is a hash of the seed and the
 *     lane index the lane was made with): the "initial bits". They are never stored.
 *   - no function reads or writes outside the buffers it owns or is given with a size.
 */
#ifndef BB_RANS_H
#define BB_RANS_H
#include <stddef.h>
#include <stdint.h>

#define BB_RANS_L (1ull << 31)      /* lower bound of the normalised head interval */
#define BB_RANS_MAX_PREC 31u         /* largest precision (bits) of one coded symbol */

typedef struct {
    uint32_t *words;  /* stack: words[0..size-1], top is words[size-1] */
    size_t size, cap;
    uint64_t drawn;   /* generator words consumed by pops from the empty stack */
} bb_stack;

typedef struct {
    size_t lanes;
    uint64_t seed;
    uint64_t *heads;  /* heads[lane]; a flat array so compiled callers can code inline */
    uint64_t *keys;   /* keys[lane]: the lane's generator key, fixed when the lane is made
                       * (from seed and lane index) and kept when a lane is gathered */
    bb_stack *stacks;
    int err;          /* sticky: 1 after an allocation failure (the message is then invalid) */
} bb_msgs;

/* Status codes of bb_msgs_from_bytes. */
enum { BB_OK = 0, BB_ENOMEM = 1, BB_EFORMAT = 2 };

bb_msgs *bb_msgs_new(size_t lanes, uint64_t seed);
void bb_msgs_free(bb_msgs *m);
bb_msgs *bb_msgs_copy(const bb_msgs *m);
/* A new message set of n lanes: lane k copies lane lanes[k] of srcs[k] (head, stack,
 * generator key and draw count). NULL if a source is NULL, in error, or lacks the lane,
 * or on allocation failure. Lets lanes of several message sets be coded together. */
bb_msgs *bb_msgs_gather(bb_msgs *const *srcs, const size_t *lanes, size_t n);

uint64_t bb_initial_head(uint64_t seed, uint64_t lane);
uint32_t bb_gen_word(uint64_t seed, uint64_t lane, uint64_t counter);

/* Word-level hooks for compiled (numba) loops that keep the head arithmetic inline.
 * Addresses are exported through the Cython module. */
void bb_emit(bb_msgs *m, size_t lane, uint32_t word);
uint32_t bb_take(bb_msgs *m, size_t lane);

/* Single-symbol operations (one lane). */
void bb_push(bb_msgs *m, size_t lane, uint32_t start, uint32_t freq, uint32_t prec);
uint32_t bb_peek(const bb_msgs *m, size_t lane, uint32_t prec);
void bb_advance(bb_msgs *m, size_t lane, uint32_t start, uint32_t freq, uint32_t prec);

/* Bulk operations over lanes 0..n-1, symbols laid out [n][S] row-major; pushes run
 * columns S-1..0 so that pops return column 0 first. Precondition (checked by the
 * binding): 1 <= prec <= 31, start + freq <= 2^prec, freq >= 1. */
void bb_push_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *starts,
                  const uint32_t *freqs, uint32_t prec);
void bb_push_uniform_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *syms, uint32_t prec);
void bb_pop_uniform_bulk(bb_msgs *m, size_t n, size_t S, uint32_t *syms, uint32_t prec);
/* Pop with a shared quantised CDF table cdf[0..K] (cdf[0]=0, cdf[K]=2^prec, increasing). */
void bb_pop_table_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *cdf, size_t K,
                       uint32_t prec, uint32_t *syms);

/* Serialisation. Wire format (little-endian):
 *   "BBR1" | u32 lanes | per lane: u64 head, u32 nwords, nwords x u32 (bottom first). */
size_t bb_serialized_size(const bb_msgs *m);
size_t bb_to_bytes(const bb_msgs *m, uint8_t *out, size_t cap);
int bb_msgs_from_bytes(const uint8_t *data, size_t len, uint64_t seed, size_t max_lanes,
                       bb_msgs **out);
uint64_t bb_lane_bits(const bb_msgs *m, size_t lane);
/* 1 iff lane is back in its initial state: head == initial head and the stack holds
 * exactly generator words 0..size-1 with word 0 on top. */
int bb_lane_is_initial(const bb_msgs *m, size_t lane);

#endif
