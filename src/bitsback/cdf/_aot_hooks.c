/* The C hooks of the ahead-of-time kernel module (bitsback.cdf._aot).
 *
 * The kernels call bb_emit / bb_take by name (_nbcoder.py). In the AOT module those names
 * resolve here, and forward to the _rans extension's own functions, whose addresses
 * _kernels.py passes in (link_hooks -> bb_aot_set_hooks) before any kernel runs. So a
 * message set (bb_msgs, allocated by _rans) is only ever read, grown or freed by the
 * code of the extension that made it: one struct layout, one allocator, whatever the
 * two modules were built from. Hidden: nothing outside this module links against them.
 *
 * bb_aot_cpu_ok says whether this CPU runs the kernels' code: they are compiled for the
 * LLVM CPU named at build time, BB_AOT_X86_LEVEL 2 for "x86-64-v2" (SSE3, SSSE3, SSE4.1,
 * SSE4.2, POPCNT, CMPXCHG16B, LAHF-SAHF), 3 for "x86-64-v3" (v2 and AVX, AVX2, BMI1, BMI2,
 * F16C, FMA, LZCNT, MOVBE, with the OS saving YMM state), 1 for "x86-64" (any x86-64),
 * 0: not checked.
 * This file is compiled by the C compiler's defaults, so it runs on any CPU.
 */
#include <stddef.h>
#include <stdint.h>
#if defined(__GNUC__)
#define BB_HIDDEN __attribute__((visibility("hidden")))
#else
#define BB_HIDDEN
#endif
#if BB_AOT_X86_LEVEL >= 2
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

typedef void (*bb_emit_fn)(uint64_t m, size_t lane, uint32_t word);
typedef uint32_t (*bb_take_fn)(uint64_t m, size_t lane);

static bb_emit_fn emit_hook;
static bb_take_fn take_hook;

BB_HIDDEN void bb_aot_set_hooks(uint64_t emit, uint64_t take) {
    emit_hook = (bb_emit_fn)(uintptr_t)emit;
    take_hook = (bb_take_fn)(uintptr_t)take;
}

BB_HIDDEN void bb_emit(uint64_t m, size_t lane, uint32_t word) {
    emit_hook(m, lane, word);
}

BB_HIDDEN uint32_t bb_take(uint64_t m, size_t lane) {
    return take_hook(m, lane);
}

#if BB_AOT_X86_LEVEL >= 2
static void cpuid(uint32_t leaf, uint32_t r[4]) {
#if defined(_MSC_VER)
    int v[4];
    __cpuid(v, (int)leaf);
    for (int k = 0; k < 4; k++) r[k] = (uint32_t)v[k];
#else
    __cpuid(leaf, r[0], r[1], r[2], r[3]);
#endif
}
#endif

#if BB_AOT_X86_LEVEL >= 3
static void cpuid7(uint32_t r[4]) {
#if defined(_MSC_VER)
    int v[4];
    __cpuidex(v, 7, 0);
    for (int k = 0; k < 4; k++) r[k] = (uint32_t)v[k];
#else
    __cpuid_count(7, 0, r[0], r[1], r[2], r[3]);
#endif
}

static uint64_t xgetbv0(void) {
#if defined(_MSC_VER)
    return _xgetbv(0);
#else
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
#endif
}
#endif

BB_HIDDEN int64_t bb_aot_cpu_ok(void) {
#if BB_AOT_X86_LEVEL >= 2
    uint32_t r[4];
    cpuid(0, r);
    uint32_t top = r[0];
    if (top < 1) return 0;
    cpuid(1, r);
    uint32_t ecx1 = r[2];
    /* ECX: SSE3 0, SSSE3 9, CMPXCHG16B 13, SSE4.1 19, SSE4.2 20, POPCNT 23 */
    const uint32_t v2 = (1u << 0) | (1u << 9) | (1u << 13) | (1u << 19) | (1u << 20) | (1u << 23);
    if ((ecx1 & v2) != v2) return 0;
    cpuid(0x80000000u, r);
    if (r[0] < 0x80000001u) return 0;
    cpuid(0x80000001u, r);
    uint32_t ecx81 = r[2];
    if (!(ecx81 & 1u)) return 0;          /* LAHF-SAHF in 64-bit mode */
#if BB_AOT_X86_LEVEL >= 3
    /* ECX of leaf 1: FMA 12, MOVBE 22, OSXSAVE 27, AVX 28, F16C 29 */
    const uint32_t v3 = (1u << 12) | (1u << 22) | (1u << 27) | (1u << 28) | (1u << 29);
    if ((ecx1 & v3) != v3 || !(ecx81 & (1u << 5)) || top < 7) return 0;   /* LZCNT: 0x80000001 ECX 5 */
    cpuid7(r);
    const uint32_t v3b = (1u << 3) | (1u << 5) | (1u << 8);              /* EBX: BMI1, AVX2, BMI2 */
    if ((r[1] & v3b) != v3b) return 0;
    if ((xgetbv0() & 6u) != 6u) return 0;                                 /* the OS saves XMM and YMM */
#endif
    return 1;
#else
    return 1;
#endif
}
