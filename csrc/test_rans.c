/* Stand-alone driver for the C core, built with AddressSanitizer + UBSan by `make asan`:
 * round trips, pops from empty stacks, (de)serialisation, and hostile bytes (truncated,
 * bit-flipped, random, huge claimed sizes). Exit status 0 iff every check passed. */
#include "rans.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d %s\n", __FILE__, __LINE__, #c); return 1; } } while (0)

int main(void) {
    const size_t L = 5, S = 3000;
    for (uint32_t prec = 1; prec <= BB_RANS_MAX_PREC; prec++) {
        bb_msgs *m = bb_msgs_new(L, prec);
        uint32_t *pre = malloc(L * 7 * 4), *sym = malloc(L * S * 4), *out = malloc(L * S * 4);
        uint32_t *st = malloc(L * S * 4), *fr = malloc(L * S * 4);
        bb_pop_uniform_bulk(m, L, 7, pre, prec);                 /* initial bits */
        for (size_t k = 0; k < L * S; k++) {
            uint64_t one = 1ull << prec;
            uint64_t a = next() % one, b = next() % one;
            if (a > b) { uint64_t t = a; a = b; b = t; }
            if (a == b) { if (b < one) b++; else a--; }
            st[k] = (uint32_t)a; fr[k] = (uint32_t)(b - a);
        }
        bb_push_bulk(m, L, S, st, fr, prec);
        size_t n = bb_serialized_size(m);
        uint8_t *buf = malloc(n);
        CHECK(bb_to_bytes(m, buf, n) == n);
        bb_msgs *d = NULL;
        CHECK(bb_msgs_from_bytes(buf, n, prec, 1 << 20, &d) == BB_OK);
        for (size_t j = 0; j < S; j++)
            for (size_t i = 0; i < L; i++) {
                uint32_t cf = bb_peek(d, i, prec), s = st[i * S + j], f = fr[i * S + j];
                CHECK(cf >= s && cf - s < f);
                bb_advance(d, i, s, f, prec);
            }
        bb_push_uniform_bulk(d, L, 7, pre, prec);
        for (size_t i = 0; i < L; i++) CHECK(bb_lane_is_initial(d, i));
        /* hostile inputs: every truncation, bit flips, random bytes, huge sizes */
        for (size_t cut = 0; cut < n; cut += 1 + n / 200) {
            bb_msgs *x = NULL;
            uint8_t *t = malloc(cut ? cut : 1);
            memcpy(t, buf, cut);
            CHECK(bb_msgs_from_bytes(t, cut, 0, 1 << 20, &x) == BB_EFORMAT && x == NULL);
            free(t);
        }
        for (int r = 0; r < 200; r++) {
            uint8_t *t = malloc(n);
            memcpy(t, buf, n);
            t[next() % n] ^= (uint8_t)(1u << (next() % 8));
            if (r % 3 == 0) for (size_t k = 4; k < n && k < 40; k++) t[k] = (uint8_t)next();
            bb_msgs *x = NULL;
            if (bb_msgs_from_bytes(t, n, 0, 1 << 20, &x) == BB_OK) {
                bb_pop_uniform_bulk(x, x->lanes, S / 10 < 50 ? S / 10 : 50, out, prec);
                bb_msgs_free(x);
            }
            free(t);
        }
        uint8_t huge[32] = {'B', 'B', 'R', '1', 0xff, 0xff, 0xff, 0xff};
        bb_msgs *x = NULL;
        CHECK(bb_msgs_from_bytes(huge, sizeof huge, 0, 1 << 20, &x) == BB_EFORMAT);
        huge[4] = 1; huge[5] = huge[6] = huge[7] = 0;
        huge[8 + 7] = 0x40;  memset(huge + 16, 0xff, 4);          /* head ok, nwords 2^32-1 */
        CHECK(bb_msgs_from_bytes(huge, 20, 0, 1 << 20, &x) == BB_EFORMAT);
        bb_msgs *c = bb_msgs_copy(m);
        CHECK(c && bb_serialized_size(c) == n);
        bb_msgs_free(c);
        /* gather: lanes of two sets coded together equal the lanes coded alone */
        {
            bb_msgs *a = bb_msgs_new(2, 11), *b = bb_msgs_new(3, 12);
            bb_msgs *a2 = bb_msgs_new(2, 11), *b2 = bb_msgs_new(3, 12);
            bb_msgs *srcs[3] = {b, a, b};
            size_t idx[3] = {2, 0, 0};
            bb_msgs *g = bb_msgs_gather(srcs, idx, 3);
            CHECK(g != NULL);
            uint32_t w[3 * 5];
            bb_pop_uniform_bulk(g, 3, 5, w, 7);            /* draws initial bits */
            for (size_t k = 0; k < 5; k++) {
                CHECK(w[0 * 5 + k] == bb_peek(b2, 2, 7)); bb_advance(b2, 2, w[k], 1, 7);
                CHECK(w[1 * 5 + k] == bb_peek(a2, 0, 7)); bb_advance(a2, 0, w[5 + k], 1, 7);
            }
            bb_push_uniform_bulk(g, 3, 5, w, 7);
            for (size_t k = 0; k < 3; k++) CHECK(bb_lane_is_initial(g, k));
            size_t bad[1] = {3};
            CHECK(bb_msgs_gather(srcs, bad, 1) == NULL);
            bb_msgs_free(g); bb_msgs_free(a); bb_msgs_free(b); bb_msgs_free(a2); bb_msgs_free(b2);
        }
        free(buf); free(pre); free(sym); free(out); free(st); free(fr);
        bb_msgs_free(m); bb_msgs_free(d);
    }
    printf("rans C core: all checks passed\n");
    return 0;
}
