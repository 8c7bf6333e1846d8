/* rANS core for bitsback; see rans.h for the invariants and the wire format. */
#include "rans.h"
#include <stdlib.h>
#include <string.h>

#define MAGIC "BBR1"
#define HEADER_BYTES 8u   /* magic + u32 lanes */
#define LANE_BYTES 12u    /* u64 head + u32 nwords */

/* splitmix64 finaliser: a bijection on 64 bits with good avalanche. */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t lane_key(uint64_t seed, uint64_t lane) {
    return mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ (lane * 0xd1b54a32d192ed03ull + 1));
}

/* Counter-based: word c of a lane never depends on how many were drawn before. */
static inline uint32_t key_word(uint64_t key, uint64_t counter) {
    return (uint32_t)(mix64(key + (counter + 1) * 0x9e3779b97f4a7c15ull) >> 32);
}

/* In [L, 2L): 31 random low bits so the very first pops already sample, while the head
 * costs at most 32 bits of information that the file has to carry. */
static inline uint64_t key_head(uint64_t key) {
    return BB_RANS_L | (mix64(key ^ 0x5851f42d4c957f2dull) & (BB_RANS_L - 1));
}

uint32_t bb_gen_word(uint64_t seed, uint64_t lane, uint64_t counter) {
    return key_word(lane_key(seed, lane), counter);
}

uint64_t bb_initial_head(uint64_t seed, uint64_t lane) {
    return key_head(lane_key(seed, lane));
}

static int stack_reserve(bb_stack *s, size_t need) {
    if (need <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof(uint32_t)) return -1;
        cap *= 2;
    }
    uint32_t *w = (uint32_t *)realloc(s->words, cap * sizeof(uint32_t));
    if (!w) return -1;
    s->words = w;
    s->cap = cap;
    return 0;
}

bb_msgs *bb_msgs_new(size_t lanes, uint64_t seed) {
    if (lanes == 0 || lanes > SIZE_MAX / sizeof(bb_stack)) return NULL;
    bb_msgs *m = (bb_msgs *)calloc(1, sizeof(bb_msgs));
    if (!m) return NULL;
    m->lanes = lanes;
    m->seed = seed;
    m->heads = (uint64_t *)malloc(lanes * sizeof(uint64_t));
    m->keys = (uint64_t *)malloc(lanes * sizeof(uint64_t));
    m->stacks = (bb_stack *)calloc(lanes, sizeof(bb_stack));
    if (!m->heads || !m->keys || !m->stacks) { bb_msgs_free(m); return NULL; }
    for (size_t i = 0; i < lanes; i++) {
        m->keys[i] = lane_key(seed, i);
        m->heads[i] = key_head(m->keys[i]);
    }
    return m;
}

/* Lane k of the result is a copy of lane lanes[k] of srcs[k], generator key included, so
 * it codes exactly as it would have in its own message set. */
bb_msgs *bb_msgs_gather(bb_msgs *const *srcs, const size_t *lanes, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (!srcs[k] || lanes[k] >= srcs[k]->lanes || srcs[k]->err) return NULL;
    bb_msgs *c = bb_msgs_new(n, 0);
    if (!c) return NULL;
    for (size_t k = 0; k < n; k++) {
        const bb_stack *s = &srcs[k]->stacks[lanes[k]];
        c->keys[k] = srcs[k]->keys[lanes[k]];
        c->heads[k] = srcs[k]->heads[lanes[k]];
        c->stacks[k].drawn = s->drawn;
        if (s->size) {
            if (stack_reserve(&c->stacks[k], s->size)) { bb_msgs_free(c); return NULL; }
            memcpy(c->stacks[k].words, s->words, s->size * sizeof(uint32_t));
            c->stacks[k].size = s->size;
        }
    }
    return c;
}

void bb_msgs_free(bb_msgs *m) {
    if (!m) return;
    if (m->stacks)
        for (size_t i = 0; i < m->lanes; i++) free(m->stacks[i].words);
    free(m->stacks);
    free(m->heads);
    free(m->keys);
    free(m);
}

bb_msgs *bb_msgs_copy(const bb_msgs *m) {
    bb_msgs *c = bb_msgs_new(m->lanes, m->seed);
    if (!c) return NULL;
    for (size_t i = 0; i < m->lanes; i++) {
        const bb_stack *s = &m->stacks[i];
        c->keys[i] = m->keys[i];
        c->heads[i] = m->heads[i];
        c->stacks[i].drawn = s->drawn;
        if (s->size) {
            if (stack_reserve(&c->stacks[i], s->size)) { bb_msgs_free(c); return NULL; }
            memcpy(c->stacks[i].words, s->words, s->size * sizeof(uint32_t));
            c->stacks[i].size = s->size;
        }
    }
    c->err = m->err;
    return c;
}

void bb_emit(bb_msgs *m, size_t lane, uint32_t word) {
    bb_stack *s = &m->stacks[lane];
    if (s->size == s->cap && stack_reserve(s, s->size + 1)) { m->err = 1; return; }
    s->words[s->size++] = word;
}

uint32_t bb_take(bb_msgs *m, size_t lane) {
    bb_stack *s = &m->stacks[lane];
    if (s->size) return s->words[--s->size];
    return key_word(m->keys[lane], s->drawn++);   /* initial bits */
}

/* x -> C(x, s): emit the low word first if the result would leave [L, 2^63). */
static inline uint64_t push1(bb_msgs *m, size_t lane, uint64_t x, uint32_t start,
                             uint32_t freq, uint32_t prec) {
    uint64_t x_max = ((BB_RANS_L >> prec) << 32) * freq;   /* prec <= 31 keeps this > 0 */
    if (x >= x_max) { bb_emit(m, lane, (uint32_t)x); x >>= 32; }
    return ((x / freq) << prec) + (x % freq) + start;       /* < 2^63 because x < x_max */
}

static inline uint64_t advance1(bb_msgs *m, size_t lane, uint64_t x, uint32_t start,
                                uint32_t freq, uint32_t prec) {
    uint64_t mask = (1ull << prec) - 1;
    x = freq * (x >> prec) + (x & mask) - start;
    /* x >> prec >= 1 since x >= L >= 2^prec, so one word always restores x >= L. */
    if (x < BB_RANS_L) x = (x << 32) | bb_take(m, lane);
    return x;
}

void bb_push(bb_msgs *m, size_t lane, uint32_t start, uint32_t freq, uint32_t prec) {
    m->heads[lane] = push1(m, lane, m->heads[lane], start, freq, prec);
}

uint32_t bb_peek(const bb_msgs *m, size_t lane, uint32_t prec) {
    return (uint32_t)(m->heads[lane] & ((1ull << prec) - 1));
}

void bb_advance(bb_msgs *m, size_t lane, uint32_t start, uint32_t freq, uint32_t prec) {
    m->heads[lane] = advance1(m, lane, m->heads[lane], start, freq, prec);
}

/* Bulk loops run lanes innermost: the lanes' dependency chains are independent, so the
 * divisions of neighbouring lanes overlap in the pipeline. */
void bb_push_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *starts,
                  const uint32_t *freqs, uint32_t prec) {
    for (size_t j = S; j-- > 0;)
        for (size_t i = 0; i < n; i++)
            m->heads[i] = push1(m, i, m->heads[i], starts[i * S + j], freqs[i * S + j], prec);
}

void bb_push_uniform_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *syms, uint32_t prec) {
    uint64_t x_max = (BB_RANS_L >> prec) << 32;
    for (size_t j = S; j-- > 0;)
        for (size_t i = 0; i < n; i++) {
            uint64_t x = m->heads[i];
            if (x >= x_max) { bb_emit(m, i, (uint32_t)x); x >>= 32; }
            m->heads[i] = (x << prec) | (syms[i * S + j] & ((1u << prec) - 1u));
        }
}

void bb_pop_uniform_bulk(bb_msgs *m, size_t n, size_t S, uint32_t *syms, uint32_t prec) {
    uint64_t mask = (1ull << prec) - 1;
    for (size_t j = 0; j < S; j++)
        for (size_t i = 0; i < n; i++) {
            uint64_t x = m->heads[i];
            syms[i * S + j] = (uint32_t)(x & mask);
            x >>= prec;
            if (x < BB_RANS_L) x = (x << 32) | bb_take(m, i);
            m->heads[i] = x;
        }
}

void bb_pop_table_bulk(bb_msgs *m, size_t n, size_t S, const uint32_t *cdf, size_t K,
                       uint32_t prec, uint32_t *syms) {
    for (size_t j = 0; j < S; j++)
        for (size_t i = 0; i < n; i++) {
            uint32_t cf = bb_peek(m, i, prec);
            size_t lo = 0, hi = K;               /* cdf[lo] <= cf < cdf[hi] */
            while (hi - lo > 1) {
                size_t mid = (lo + hi) / 2;
                if (cdf[mid] <= cf) lo = mid; else hi = mid;
            }
            syms[i * S + j] = (uint32_t)lo;
            bb_advance(m, i, cdf[lo], cdf[lo + 1] - cdf[lo], prec);
        }
}

static void put32(uint8_t *p, uint32_t v) { for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k)); }
static void put64(uint8_t *p, uint64_t v) { for (int k = 0; k < 8; k++) p[k] = (uint8_t)(v >> (8 * k)); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int k = 3; k >= 0; k--) v = (v << 8) | p[k]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int k = 7; k >= 0; k--) v = (v << 8) | p[k]; return v; }

uint64_t bb_lane_bits(const bb_msgs *m, size_t lane) {
    return 8ull * LANE_BYTES + 32ull * (uint64_t)m->stacks[lane].size;
}

size_t bb_serialized_size(const bb_msgs *m) {
    size_t total = HEADER_BYTES;
    for (size_t i = 0; i < m->lanes; i++) {
        size_t w = m->stacks[i].size;
        if (w > UINT32_MAX) return 0;   /* not representable on the wire */
        if (w > (SIZE_MAX - total - LANE_BYTES) / 4) return 0;
        total += LANE_BYTES + 4 * w;
    }
    return total;
}

size_t bb_to_bytes(const bb_msgs *m, uint8_t *out, size_t cap) {
    size_t need = bb_serialized_size(m);
    if (need == 0 || need > cap || m->lanes > UINT32_MAX) return 0;
    memcpy(out, MAGIC, 4);
    put32(out + 4, (uint32_t)m->lanes);
    uint8_t *p = out + HEADER_BYTES;
    for (size_t i = 0; i < m->lanes; i++) {
        const bb_stack *s = &m->stacks[i];
        put64(p, m->heads[i]);
        put32(p + 8, (uint32_t)s->size);
        p += LANE_BYTES;
        for (size_t k = 0; k < s->size; k++, p += 4) put32(p, s->words[k]);
    }
    return need;
}

int bb_msgs_from_bytes(const uint8_t *data, size_t len, uint64_t seed, size_t max_lanes,
                       bb_msgs **out) {
    *out = NULL;
    if (len < HEADER_BYTES || memcmp(data, MAGIC, 4) != 0) return BB_EFORMAT;
    size_t lanes = get32(data + 4);
    /* Every claimed size is checked against the bytes actually present before allocating. */
    if (lanes == 0 || lanes > max_lanes || lanes > (len - HEADER_BYTES) / LANE_BYTES) return BB_EFORMAT;
    size_t pos = HEADER_BYTES;
    for (size_t i = 0; i < lanes; i++) {
        if (len - pos < LANE_BYTES) return BB_EFORMAT;
        uint64_t head = get64(data + pos);
        size_t w = get32(data + pos + 8);
        if (head < BB_RANS_L || head >= (1ull << 63)) return BB_EFORMAT;
        pos += LANE_BYTES;
        if (w > (len - pos) / 4) return BB_EFORMAT;
        pos += 4 * w;
    }
    if (pos != len) return BB_EFORMAT;   /* trailing garbage */
    bb_msgs *m = bb_msgs_new(lanes, seed);
    if (!m) return BB_ENOMEM;
    pos = HEADER_BYTES;
    for (size_t i = 0; i < lanes; i++) {
        size_t w = get32(data + pos + 8);
        m->heads[i] = get64(data + pos);
        pos += LANE_BYTES;
        if (w && stack_reserve(&m->stacks[i], w)) { bb_msgs_free(m); return BB_ENOMEM; }
        for (size_t k = 0; k < w; k++, pos += 4) m->stacks[i].words[k] = get32(data + pos);
        m->stacks[i].size = w;
    }
    *out = m;
    return BB_OK;
}

int bb_lane_is_initial(const bb_msgs *m, size_t lane) {
    const bb_stack *s = &m->stacks[lane];
    if (m->heads[lane] != key_head(m->keys[lane])) return 0;
    for (size_t c = 0; c < s->size; c++)
        if (s->words[s->size - 1 - c] != key_word(m->keys[lane], c)) return 0;
    return 1;
}
