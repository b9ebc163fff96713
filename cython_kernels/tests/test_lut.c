/* test_lut.c — C-level test of the TL1 / TL2 LUT kernels of every SIMD level built for this
 * target (x86-64: avx2 and avx512 when the CPU has them; aarch64: neon) against the scalar kernels.
 * Built and run by run_lut_c_tests.sh (natively, or cross-compiled and run under qemu-aarch64:
 * the only way to execute lut_neon.c on an x86 machine). Calls the per-ISA functions of
 * bl_lut.h directly (no dispatcher), so it links only the lut_*.c files.
 *
 * Checks per level:
 *   1. LUT construction: scalar tables == the entry formula (known answer) for random rows
 *      with -128 and 127 planted; the level's tables == scalar, byte for byte, for several K
 *      and BK (with and without a pair tail);
 *   2. GEMV on random valid packed data (random indices, random sign plane) for several legal
 *      tilings, full and partial row ranges: out == scalar, rows outside the range untouched;
 *   3. known answer: every weight -1 and every activation -128 gives out[r] = 128*K exactly
 *      (the int16 stages see their largest sums; BK = 256 for TL1, BK = 240 for TL2);
 *   4. an invalid index planted: same status (count, first byte) as scalar, and as expected.
 * Prints one line per level and check group; exits non-zero on the first failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bl_lut.h"

/* The fault-injection mask (mad_dispatch.c in the extension; this test links the LUT files only). */
volatile int bl_mad_fault_mask = 0;

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

typedef struct {
    const char *name;
    bl_tl1_build_lut_fn tl1_build;
    bl_tl2_build_lut_fn tl2_build;
    bl_tl1_gemv_fn tl1_gemv;
    bl_tl2_gemv_fn tl2_gemv;
} level;

#define FAIL(...)                         \
    do {                                  \
        printf("FAIL [%s] ", lv->name);   \
        printf(__VA_ARGS__);              \
        printf("\n");                     \
        return 1;                         \
    } while (0)

typedef struct {
    int64_t M, K, BM, BK, bm;
} shape;

/* Legal tilings (bitnet_lab.quant.tiling rules), small M. */
static const shape TL1_SHAPES[] = {
    {64, 256, 64, 256, 32},   /* BK = 256: the widest int16 span, bm = 32 */
    {128, 512, 128, 256, 64}, /* BK = 256, bm = 64: mid-tile widening */
    {96, 192, 96, 64, 32},    /* 3 sub-tiles per tile */
    {128, 384, 64, 128, 64},  /* 2 M-tiles */
    {64, 40, 64, 8, 32},      /* BK = by */
    {640, 64, 640, 64, 32},   /* 20 sub-tiles in one M-tile: sub-tile groups of 16 + 4 */
    {1024, 32, 1024, 16, 64}, /* 16 sub-tiles of 64 rows: one full group */
};
static const shape TL2_SHAPES[] = {
    {64, 288, 64, 96, 32},   /* no tail */
    {64, 320, 32, 96, 32},   /* two_k = 32 */
    {32, 256, 32, 192, 32},  /* two_k = 64 */
    {96, 464, 96, 216, 32},  /* two_k = 32, 3 sub-tiles */
    {64, 480, 64, 240, 32},  /* BK = 240: the widest triple span */
    {64, 704, 32, 240, 32},  /* two_k = 224: the widest tail */
    {640, 256, 640, 192, 32}, /* 20 sub-tiles in one M-tile, tail of 64 */
};

static int64_t tl2_data_bytes(const shape *s) {
    const int64_t K3 = s->K / s->BK * s->BK, K2 = s->K - K3;
    return s->M * K3 / 6 + s->M * K3 / 24 + s->M * K2 / 4;
}

/* Random valid TL1 bytes: both nibbles in 0..8. */
static void random_tl1(uint8_t *d, int64_t n) {
    for (int64_t i = 0; i < n; ++i) d[i] = (uint8_t)((rnd() % 9) << 4 | (rnd() % 9));
}

/* Random valid TL2 bytes: magnitudes 0..13, any sign bits, tail indices 0..8. */
static void random_tl2(uint8_t *d, const shape *s) {
    const int64_t K3 = s->K / s->BK * s->BK;
    const int64_t n_idx = s->M * K3 / 6, n_sign = s->M * K3 / 24, n = tl2_data_bytes(s);
    for (int64_t i = 0; i < n_idx; ++i) d[i] = (uint8_t)((rnd() % 14) << 4 | (rnd() % 14));
    for (int64_t i = n_idx; i < n_idx + n_sign; ++i) d[i] = (uint8_t)rnd();
    random_tl1(d + n_idx + n_sign, n - n_idx - n_sign);
}

static void random_q(int8_t *q, int64_t K) {
    for (int64_t k = 0; k < K; ++k) q[k] = (int8_t)(rnd() & 0xFF);
    if (K > 1) { q[0] = -128; q[1] = 127; }
}

static int entry(const uint8_t *lut, int64_t j, int e) {
    return (int16_t)(uint16_t)(lut[32 * j + e] | (lut[32 * j + 16 + e] << 8));
}

/* 1. LUT construction. */
static int check_luts(const level *lv) {
    enum { KMAX = 1024 };
    static int8_t q[KMAX];
    static uint8_t a[KMAX * 16], b[KMAX * 16];
    const int64_t Ks[] = {2, 8, 96, 256, 1000};
    for (size_t i = 0; i < sizeof Ks / sizeof Ks[0]; ++i) {
        const int64_t K = Ks[i];
        random_q(q, K);
        bl_tl1_build_lut_scalar(q, K, a);
        for (int64_t j = 0; j < K / 2; ++j) /* known answer: entry 3*t0 + t1 + 4 */
            for (int e = 0; e < 16; ++e) {
                const int want = e <= 8 ? (e / 3 - 1) * q[2 * j] + (e % 3 - 1) * q[2 * j + 1] : 0;
                if (entry(a, j, e) != want) FAIL("tl1 scalar table %lld entry %d: %d != %d", (long long)j, e, entry(a, j, e), want);
            }
        memset(b, 0xA5, sizeof b);
        lv->tl1_build(q, K, b);
        if (memcmp(a, b, (size_t)(16 * K)) != 0) FAIL("tl1_build_lut K=%lld differs from scalar", (long long)K);
    }
    const int64_t K2s[][2] = {{288, 96}, {320, 96}, {256, 192}, {704, 240}, {1000, 216}};
    for (size_t i = 0; i < sizeof K2s / sizeof K2s[0]; ++i) {
        const int64_t K = K2s[i][0], BK = K2s[i][1], K3 = K / BK * BK;
        random_q(q, K);
        bl_tl2_build_lut_scalar(q, K, BK, a);
        for (int64_t j = 0; j < K3 / 3; ++j) /* known answer: balanced digits of m */
            for (int m = 0; m < 16; ++m) {
                int want = 0;
                if (m <= 13) {
                    int v = m, t[3];
                    for (int p = 2; p >= 0; --p) {
                        t[p] = ((v + 1) % 3) - 1;
                        v = (v - t[p]) / 3;
                    }
                    want = t[0] * q[3 * j] + t[1] * q[3 * j + 1] + t[2] * q[3 * j + 2];
                }
                if (entry(a, j, m) != want) FAIL("tl2 scalar table %lld entry %d: %d != %d", (long long)j, m, entry(a, j, m), want);
            }
        const int64_t nbytes = BL_TL2_LUT_BYTES(K, BK);
        memset(b, 0x5A, sizeof b);
        lv->tl2_build(q, K, BK, b);
        if (memcmp(a, b, (size_t)nbytes) != 0) FAIL("tl2_build_lut K=%lld BK=%lld differs from scalar", (long long)K, (long long)BK);
        if (b[nbytes] != 0x5A) FAIL("tl2_build_lut wrote past %lld bytes", (long long)nbytes);
    }
    printf("ok   [%s] LUT construction\n", lv->name);
    return 0;
}

enum { MMAX = 1024, KMAX = 1024 };
static uint8_t data[MMAX * KMAX / 2];
static uint8_t lut[KMAX * 16];
static int8_t q[KMAX];
static int32_t want[MMAX], got[MMAX];

static int compare_rows(const level *lv, const char *what, const shape *s, int64_t r0, int64_t r1) {
    for (int64_t r = 0; r < s->M; ++r) {
        const int in = r >= r0 && r < r1;
        if (in && got[r] != want[r])
            FAIL("%s (M=%lld K=%lld BM=%lld BK=%lld bm=%lld) rows [%lld,%lld): row %lld: %d != scalar %d", what,
                 (long long)s->M, (long long)s->K, (long long)s->BM, (long long)s->BK, (long long)s->bm,
                 (long long)r0, (long long)r1, (long long)r, got[r], want[r]);
        if (!in && got[r] != -7) FAIL("%s wrote row %lld outside [%lld,%lld)", what, (long long)r, (long long)r0, (long long)r1);
    }
    return 0;
}

/* 2 + 3 + 4 for TL1. */
static int check_tl1(const level *lv) {
    for (size_t i = 0; i < sizeof TL1_SHAPES / sizeof TL1_SHAPES[0]; ++i) {
        const shape *s = &TL1_SHAPES[i];
        const int64_t n = s->M * s->K / 4;
        for (int trial = 0; trial < 3; ++trial) {
            if (trial < 2) {
                random_tl1(data, n);
                random_q(q, s->K);
            } else { /* every pair (-1, -1): index 0; every q = -128 -> each entry +256 */
                memset(data, 0x00, (size_t)n);
                memset(q, 0x80, (size_t)s->K);
            }
            bl_tl1_build_lut_scalar(q, s->K, lut);
            const int64_t ranges[3][2] = {{0, s->M}, {s->bm, s->M}, {s->bm, s->M - s->bm}};
            for (int rg = 0; rg < 3; ++rg) {
                const int64_t r0 = ranges[rg][0], r1 = ranges[rg][1];
                for (int64_t r = 0; r < s->M; ++r) want[r] = got[r] = -7;
                bl_lut_status sw = bl_tl1_gemv_scalar(data, lut, s->M, s->K, s->BM, s->BK, s->bm, r0, r1, want);
                bl_lut_status sg = lv->tl1_gemv(data, lut, s->M, s->K, s->BM, s->BK, s->bm, r0, r1, got);
                if (sw.n_bad || sg.n_bad) FAIL("tl1 valid data reported bad (%lld, %lld)", (long long)sw.n_bad, (long long)sg.n_bad);
                if (compare_rows(lv, "tl1_gemv", s, r0, r1)) return 1;
                if (trial == 2)
                    for (int64_t r = r0; r < r1; ++r)
                        if (got[r] != 128 * s->K) FAIL("tl1 known answer row %lld: %d != %lld", (long long)r, got[r], (long long)(128 * s->K));
            }
        }
        /* 4. plant bad nibbles: a high one late, a low one early */
        random_tl1(data, n);
        const int64_t b1 = n - 1 - (int64_t)(rnd() % (uint32_t)(n / 2)), b2 = (int64_t)(rnd() % (uint32_t)(n / 2));
        data[b1] = (uint8_t)(0xF0 | (data[b1] & 0x0F));
        data[b2] = (uint8_t)((data[b2] & 0xF0) | 0x09);
        bl_lut_status sw = bl_tl1_gemv_scalar(data, lut, s->M, s->K, s->BM, s->BK, s->bm, 0, s->M, want);
        bl_lut_status sg = lv->tl1_gemv(data, lut, s->M, s->K, s->BM, s->BK, s->bm, 0, s->M, got);
        if (sw.n_bad != 2 || sw.first_bad_byte != b2) FAIL("tl1 scalar status (%lld, %lld), expected (2, %lld)", (long long)sw.n_bad, (long long)sw.first_bad_byte, (long long)b2);
        if (sg.n_bad != sw.n_bad || sg.first_bad_byte != sw.first_bad_byte)
            FAIL("tl1 status (%lld, %lld) != scalar (%lld, %lld)", (long long)sg.n_bad, (long long)sg.first_bad_byte, (long long)sw.n_bad, (long long)sw.first_bad_byte);
    }
    printf("ok   [%s] TL1 GEMV (%d tilings, ranges, known answer, invalid indices)\n", lv->name,
           (int)(sizeof TL1_SHAPES / sizeof TL1_SHAPES[0]));
    return 0;
}

/* 2 + 3 + 4 for TL2. */
static int check_tl2(const level *lv) {
    for (size_t i = 0; i < sizeof TL2_SHAPES / sizeof TL2_SHAPES[0]; ++i) {
        const shape *s = &TL2_SHAPES[i];
        const int64_t K3 = s->K / s->BK * s->BK, n = tl2_data_bytes(s);
        const int64_t n_idx = s->M * K3 / 6, n_sign = s->M * K3 / 24;
        for (int trial = 0; trial < 3; ++trial) {
            if (trial < 2) {
                random_tl2(data, s);
                random_q(q, s->K);
            } else { /* every triple -13 (magnitude 13, sign 1), every tail pair index 0 */
                memset(data, 0xDD, (size_t)n_idx);
                memset(data + n_idx, 0xFF, (size_t)n_sign);
                memset(data + n_idx + n_sign, 0x00, (size_t)(n - n_idx - n_sign));
                memset(q, 0x80, (size_t)s->K);
            }
            bl_tl2_build_lut_scalar(q, s->K, s->BK, lut);
            const int64_t ranges[3][2] = {{0, s->M}, {32, s->M}, {32, s->M - 32}};
            for (int rg = 0; rg < 3; ++rg) {
                const int64_t r0 = ranges[rg][0], r1 = ranges[rg][1];
                for (int64_t r = 0; r < s->M; ++r) want[r] = got[r] = -7;
                bl_lut_status sw = bl_tl2_gemv_scalar(data, lut, s->M, s->K, s->BM, s->BK, r0, r1, want);
                bl_lut_status sg = lv->tl2_gemv(data, lut, s->M, s->K, s->BM, s->BK, r0, r1, got);
                if (sw.n_bad || sg.n_bad) FAIL("tl2 valid data reported bad (%lld, %lld)", (long long)sw.n_bad, (long long)sg.n_bad);
                if (compare_rows(lv, "tl2_gemv", s, r0, r1)) return 1;
                if (trial == 2)
                    for (int64_t r = r0; r < r1; ++r)
                        if (got[r] != 128 * s->K) FAIL("tl2 known answer row %lld: %d != %lld", (long long)r, got[r], (long long)(128 * s->K));
            }
        }
        /* 4. a bad magnitude (14) in the index part; a bad tail index (9) when there is a tail */
        random_tl2(data, s);
        const int64_t b1 = (int64_t)(rnd() % (uint32_t)n_idx);
        data[b1] = (uint8_t)(0xE0 | (data[b1] & 0x0F));
        int64_t expect_n = 1;
        if (n > n_idx + n_sign) {
            const int64_t b2 = n_idx + n_sign + (int64_t)(rnd() % (uint32_t)(n - n_idx - n_sign));
            data[b2] = (uint8_t)((data[b2] & 0xF0) | 0x09);
            expect_n = 2;
        }
        bl_lut_status sw = bl_tl2_gemv_scalar(data, lut, s->M, s->K, s->BM, s->BK, 0, s->M, want);
        bl_lut_status sg = lv->tl2_gemv(data, lut, s->M, s->K, s->BM, s->BK, 0, s->M, got);
        if (sw.n_bad != expect_n || sw.first_bad_byte != b1) FAIL("tl2 scalar status (%lld, %lld), expected (%lld, %lld)", (long long)sw.n_bad, (long long)sw.first_bad_byte, (long long)expect_n, (long long)b1);
        if (sg.n_bad != sw.n_bad || sg.first_bad_byte != sw.first_bad_byte)
            FAIL("tl2 status (%lld, %lld) != scalar (%lld, %lld)", (long long)sg.n_bad, (long long)sg.first_bad_byte, (long long)sw.n_bad, (long long)sw.first_bad_byte);
    }
    printf("ok   [%s] TL2 GEMV (%d tilings, ranges, known answer, invalid indices)\n", lv->name,
           (int)(sizeof TL2_SHAPES / sizeof TL2_SHAPES[0]));
    return 0;
}

int main(void) {
    level levels[4];
    int n = 0;
    levels[n++] = (level){"scalar", bl_tl1_build_lut_scalar, bl_tl2_build_lut_scalar, bl_tl1_gemv_scalar, bl_tl2_gemv_scalar};
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        levels[n++] = (level){"avx2", bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx2, bl_tl2_gemv_avx2};
    else
        printf("skip [avx2] CPU lacks AVX2\n");
    /* the avx512vnni level's GEMVs with the AVX2 build (as bl_dispatch.c pairs them) */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        levels[n++] = (level){"avx512", bl_tl1_build_lut_avx2, bl_tl2_build_lut_avx2, bl_tl1_gemv_avx512, bl_tl2_gemv_avx512};
    else
        printf("skip [avx512] CPU lacks AVX-512 F/BW/VL\n");
#elif defined(__aarch64__)
    levels[n++] = (level){"neon", bl_tl1_build_lut_neon, bl_tl2_build_lut_neon, bl_tl1_gemv_neon, bl_tl2_gemv_neon};
#endif
    for (int i = 0; i < n; ++i) {
        if (check_luts(&levels[i]) || check_tl1(&levels[i]) || check_tl2(&levels[i])) return 1;
    }
    printf("PASS test_lut (%d levels)\n", n);
    return 0;
}
