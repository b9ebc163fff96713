/* test_mad.c — C-level test of the MAD family (bl_mad.h): every registered version this CPU can
 * run, against an independent reference computed here from the ternary weights themselves.
 *
 * Built and run by run_mad_c_tests.sh: natively on x86-64, or cross-compiled for aarch64 and run
 * under qemu-user (-cpu max: neon + neon_dotprod; -cpu cortex-a53: ARMv8.0, neon only). It is the
 * only way to exercise the NEON kernels on an x86 machine.
 *
 * The test packs its random ternary weights with its own encoders (docs/formats.md#31-i2_s-type-36,
 * docs/formats.md#34-tq2_0-type-35, docs/formats.md#35-tq1_0-type-34, written out again here, independent of
 * the kernels' decoders), computes Σ t·q in int64 and checks, per version:
 *   GEMV / GEMM  exact results on M = 1, 3, 4, 5, 9 rows, K = the smallest legal value and larger
 *                multiples (odd block counts included), N = 1, 3, 5 token rows, a row range that
 *                starts and ends inside the tensor, ld_out > M, and sentinels outside the range
 *                (nothing written there);
 *   int16 worst case  all codes 2 (t = +1) against all q = 127 and all q = -128 over K = 4096 and
 *                8192 (32 and 64 I2_S blocks): Σ t·q = 127·K and -128·K exactly — a 32-block int16
 *                accumulator (bitnet.cpp's interval) would wrap here;
 *   quantize_act bit-identical (q, s_x bits, sum_q, status) to v0 on random rows, rows with exact
 *                .5 ties, a zero row, a tiny and a huge row, a NaN row and an inf row, K not a
 *                multiple of any vector width;
 *   I2_S x4      the same checks on the I2_S encoding re-ordered here (bl_mad.h: per group of 4
 *                rows, the rows' 64-byte steps side by side, then their 32-byte odd blocks), with
 *                row ranges that start on a group (the layout's contract);
 *   TQ1_0 x16    the same on the TQ1_0 encoding re-ordered here (bl_mad.h: the 52 code bytes of each
 *                block, per group of ≤ 16 rows the rows' 4-byte words side by side), whole groups,
 *                a short last group and group-aligned ranges;
 *   fault        with the fault bit set, out[0] (or sum_q[0]) is off by exactly +1 in the call that
 *                starts at row 0 and untouched in a call that does not.
 * With -DBL_AVXVNNI_EMULATED (x86 hosts without AVX-VNNI, see build_c_objects.sh) the avxvnni
 * kernels, compiled with their EVEX twin instruction, are also run when the CPU has AVX-512 VNNI.
 * Prints "MAD-OK [op version]" per checked version; exits non-zero on the first failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bl_mad.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static int failures = 0;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            printf("FAIL [%s %s] ", op_name, ver_name);   \
            printf(__VA_ARGS__);                          \
            printf("\n");                                 \
            ++failures;                                   \
            return 1;                                     \
        }                                                 \
    } while (0)

enum { FMT_I2S, FMT_TQ2, FMT_TQ1, FMT_I2S_X4, FMT_TQ1_X16 };
/* SMALL_N token rows in the sweeps; the buffers also hold the one tile case (test_product) */
enum { MAX_M = 70, MAX_N = 35, SMALL_N = 5, MAX_K = 8192, SENTINEL = 0x5A5A5A5A };

static int8_t t_buf[MAX_M * MAX_K];
static uint8_t w_buf[MAX_M * MAX_K / 4 + 64];
static int8_t q_buf[MAX_N * MAX_K];
static int32_t out_buf[(MAX_N + 1) * (MAX_M + 3)];

/* ---- encoders (docs/formats.md), independent of the kernels ------------------------------------- */

static uint8_t x4_tmp[MAX_M * MAX_K / 4]; /* also a TQ1_0 encoding (54/256 < 1/4 byte a weight) */

static void encode(int fmt, const int8_t *t, int64_t M, int64_t K, uint8_t *w) {
    const int64_t n = M * K;
    if (fmt == FMT_TQ1_X16) { /* TQ1_0, then code byte o of row 16g+i (block o/52, byte o%52) at
                               * 16g·cb + 4m·(o/4) + 4i + o%4, m = the group's rows (≤ 16) */
        const int64_t cb = K / 256 * 52;
        encode(FMT_TQ1, t, M, K, x4_tmp);
        for (int64_t g = 0; g < M; g += 16) {
            const int64_t m = M - g < 16 ? M - g : 16;
            for (int64_t i = 0; i < m; ++i)
                for (int64_t o = 0; o < cb; ++o)
                    w[g * cb + 4 * m * (o / 4) + 4 * i + o % 4] = x4_tmp[(g + i) * (K / 256 * 54) + 54 * (o / 52) + o % 52];
        }
        return;
    }
    if (fmt == FMT_I2S_X4) { /* I2_S, then byte j of step s of row 4g+i at group + 256s + 64i + j */
        const int64_t rb = K / 4, S = rb / 64;
        encode(FMT_I2S, t, M, K, x4_tmp);
        memcpy(w, x4_tmp, (size_t)(M * rb));
        for (int64_t g = 0; g + 4 <= M; g += 4)
            for (int i = 0; i < 4; ++i)
                for (int64_t j = 0; j < rb; ++j) {
                    const int64_t s = j / 64;
                    const int64_t at = s < S ? 256 * s + 64 * i + j % 64 : 256 * S + 32 * i + (j - 64 * S);
                    w[g * rb + at] = x4_tmp[(g + i) * rb + j];
                }
        return;
    }
    if (fmt == FMT_I2S) { /* byte 32·blk + b: elements b, 32+b, 64+b, 96+b at bits 7:6, 5:4, 3:2, 1:0 */
        for (int64_t blk = 0; blk < n / 128; ++blk)
            for (int b = 0; b < 32; ++b) {
                const int8_t *e = t + 128 * blk + b;
                w[32 * blk + b] = (uint8_t)(((e[0] + 1) << 6) | ((e[32] + 1) << 4) | ((e[64] + 1) << 2) | (e[96] + 1));
            }
        return;
    }
    for (int64_t blk = 0; blk < n / 256; ++blk) {
        const int8_t *e = t + 256 * blk;
        if (fmt == FMT_TQ2) { /* qs[h·32 + m] bits 2j+1:2j hold element 128h + 32j + m; fp16 d at 64 */
            uint8_t *p = w + 66 * blk;
            for (int h = 0; h < 2; ++h)
                for (int m = 0; m < 32; ++m) {
                    uint8_t byte = 0;
                    for (int j = 0; j < 4; ++j) byte |= (uint8_t)((e[128 * h + 32 * j + m] + 1) << (2 * j));
                    p[32 * h + m] = byte;
                }
            p[64] = 0x00, p[65] = 0x3C; /* d = 1.0 (ignored by the kernels) */
        } else {                        /* TQ1_0: base 3, first trit most significant, ⌈v·256/243⌉ */
            uint8_t *p = w + 54 * blk;
            for (int m = 0; m < 32; ++m) {
                int v = 0;
                for (int k = 0; k < 5; ++k) v = 3 * v + (e[m + 32 * k] + 1);
                p[m] = (uint8_t)((v * 256 + 242) / 243);
            }
            for (int m = 0; m < 16; ++m) {
                int v = 0;
                for (int k = 0; k < 5; ++k) v = 3 * v + (e[160 + m + 16 * k] + 1);
                p[32 + m] = (uint8_t)((v * 256 + 242) / 243);
            }
            for (int j = 0; j < 4; ++j) {
                int v = 0;
                for (int k = 0; k < 4; ++k) v = 3 * v + (e[240 + j + 4 * k] + 1);
                v *= 3; /* the fifth trit is 0 */
                p[48 + j] = (uint8_t)((v * 256 + 242) / 243);
            }
            p[52] = 0x00, p[53] = 0x3C;
        }
    }
}

static int32_t ref_dot(const int8_t *t, const int8_t *q, int64_t K) {
    int64_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += (int64_t)t[k] * q[k];
    return (int32_t)s;
}

static int32_t sum_i8(const int8_t *q, int64_t K) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += q[k];
    return s;
}

static int fmt_of(int op) {
    if (op == BL_OP_I2S_X4_GEMV || op == BL_OP_I2S_X4_GEMM) return FMT_I2S_X4;
    if (op == BL_OP_TQ1_X16_GEMV || op == BL_OP_TQ1_X16_GEMM) return FMT_TQ1_X16;
    if (op == BL_OP_I2S_GEMV || op == BL_OP_I2S_GEMM) return FMT_I2S;
    if (op == BL_OP_TQ2_GEMV || op == BL_OP_TQ2_GEMM) return FMT_TQ2;
    return FMT_TQ1;
}

static int is_gemm(int op) {
    return op == BL_OP_I2S_GEMM || op == BL_OP_TQ2_GEMM || op == BL_OP_TQ1_GEMM || op == BL_OP_I2S_X4_GEMM ||
           op == BL_OP_TQ1_X16_GEMM;
}

/* ---- products -------------------------------------------------------------------------------- */

/* One (M, K, N) case over rows [r0, r1); t_buf / q_buf already filled. */
static int check_case(const bl_mad_version *v, int64_t M, int64_t K, int64_t N, int64_t r0, int64_t r1) {
    const char *op_name = bl_mad_op_name(v->op), *ver_name = v->name;
    const int gemm = is_gemm(v->op);
    const int64_t ld = gemm ? M + 3 : M;
    encode(fmt_of(v->op), t_buf, M, K, w_buf);
    for (size_t i = 0; i < sizeof out_buf / sizeof out_buf[0]; ++i) out_buf[i] = SENTINEL;
    int32_t sums[MAX_N];
    for (int64_t n = 0; n < N; ++n) sums[n] = sum_i8(q_buf + n * K, K);
    if (gemm) v->fn.gemm(w_buf, q_buf, sums, out_buf, N, K, ld, r0, r1);
    else v->fn.gemv(w_buf, q_buf, sums[0], out_buf, K, r0, r1);
    for (int64_t n = 0; n < (gemm ? N : 1); ++n)
        for (int64_t r = 0; r < ld; ++r) {
            const int32_t got = out_buf[n * ld + r];
            if (r >= r0 && r < r1) {
                const int32_t want = ref_dot(t_buf + r * K, q_buf + n * K, K);
                CHECK(got == want, "M=%lld K=%lld N=%lld rows [%lld,%lld): out[%lld,%lld] = %d, want %d", (long long)M,
                      (long long)K, (long long)N, (long long)r0, (long long)r1, (long long)n, (long long)r, got, want);
            } else {
                CHECK(got == SENTINEL, "M=%lld K=%lld: wrote outside rows [%lld,%lld) at [%lld,%lld]", (long long)M,
                      (long long)K, (long long)r0, (long long)r1, (long long)n, (long long)r);
            }
        }
    return 0;
}

static int test_product(const bl_mad_version *v) {
    const char *op_name = bl_mad_op_name(v->op), *ver_name = v->name;
    const int fmt = fmt_of(v->op);
    static const int64_t Ms[] = {1, 3, 4, 5, 9};
    static const int64_t Ks_i2s[] = {128, 384, 1280, 2304};
    static const int64_t Ks_tq[] = {256, 768, 2304};
    const int i2s = fmt == FMT_I2S || fmt == FMT_I2S_X4, x4 = fmt == FMT_I2S_X4, x16 = fmt == FMT_TQ1_X16;
    const int64_t group = x4 ? 4 : x16 ? 16 : 1; /* row ranges of the interleaved layouts start on a group */
    const int64_t *Ks = i2s ? Ks_i2s : Ks_tq;
    const int nK = i2s ? 4 : 3;
    const int64_t N = is_gemm(v->op) ? SMALL_N : 1;
    for (int ki = 0; ki < nK; ++ki)
        for (int mi = 0; mi < 5; ++mi) {
            const int64_t M = Ms[mi], K = Ks[ki];
            for (int64_t i = 0; i < M * K; ++i) t_buf[i] = (int8_t)((int)(rnd() % 3) - 1);
            for (int64_t i = 0; i < N * K; ++i) q_buf[i] = (int8_t)(rnd() & 0xFF);
            for (int64_t n = 1; n <= N; n += 2)
                if (check_case(v, M, K, n, 0, M)) return 1;
            if (group == 1 && M >= 3 && check_case(v, M, K, N, 1, M - 1)) return 1; /* a range inside the tensor */
            if (x4 && M > 4 && (check_case(v, M, K, N, 4, M) || check_case(v, M, K, N, 0, 4))) return 1;
        }
    /* past the tile GEMMs' blocks (amx: 16-token tiles, 32-row panels; v3 tails): 35 tokens, 70 rows,
     * the whole tensor and rows [8, 64) (a range off a panel boundary; x4: group-aligned; x16: [16, 64)
     * and [48, 70), its short last group); the x16 GEMVs too */
    if (is_gemm(v->op) || x16) {
        const int64_t M = MAX_M, K = i2s ? 1280 : 768, NT = is_gemm(v->op) ? MAX_N : 1;
        for (int64_t i = 0; i < M * K; ++i) t_buf[i] = (int8_t)((int)(rnd() % 3) - 1);
        for (int64_t i = 0; i < NT * K; ++i) q_buf[i] = (int8_t)(rnd() & 0xFF);
        if (check_case(v, M, K, NT, 0, M) || check_case(v, M, K, NT, x16 ? 16 : 8, 64)) return 1;
        if (x16 && check_case(v, M, K, NT, 48, M)) return 1;
    }
    /* the amx level's small calls (2..16 tokens: weights as A tiles, 64-row panels, rows past them
     * on v3): every such token count over 70 rows, the whole tensor and rows [8, 64), with an even
     * and an odd number of 128-weight blocks (the x4 layout's odd last block) */
    if (is_gemm(v->op)) {
        const int64_t M = MAX_M, Kc[2] = {i2s ? 1280 : 768, i2s ? 1152 : 1280};
        for (int kc = 0; kc < 2; ++kc) {
            const int64_t K = Kc[kc];
            for (int64_t i = 0; i < M * K; ++i) t_buf[i] = (int8_t)((int)(rnd() % 3) - 1);
            for (int64_t i = 0; i < 16 * K; ++i) q_buf[i] = (int8_t)(rnd() & 0xFF);
            for (int64_t n = 2; n <= 16; ++n)
                if (check_case(v, M, K, n, 0, M) || check_case(v, M, K, n, 8, 64)) return 1;
        }
    }
    /* int16 worst case: all t = +1 against all q = 127, then all q = -128 */
    for (int64_t K = 4096; K <= MAX_K; K *= 2) {
        const int64_t M = 5;
        memset(t_buf, 1, (size_t)(M * K));
        for (int side = 0; side < 2; ++side) {
            memset(q_buf, side ? 0x80 : 0x7F, (size_t)(N * K));
            if (check_case(v, M, K, N, 0, M)) return 1;
            const int32_t want = side ? (int32_t)(-128 * K) : (int32_t)(127 * K);
            CHECK(out_buf[0] == want, "worst case K=%lld: %d, want %d", (long long)K, out_buf[0], want);
        }
    }
    /* fault injection: +1 on out[0] only in the call that owns row 0 */
    {
        const int64_t M = x4 ? 8 : x16 ? 32 : 4, K = i2s ? 256 : 512, step = x4 ? 4 : x16 ? 16 : 2;
        for (int64_t i = 0; i < M * K; ++i) t_buf[i] = (int8_t)((int)(rnd() % 3) - 1);
        for (int64_t i = 0; i < N * K; ++i) q_buf[i] = (int8_t)(rnd() & 0xFF);
        encode(fmt, t_buf, M, K, w_buf);
        int32_t sums[MAX_N], clean[8 * MAX_N], faulty[8 * MAX_N];
        for (int64_t n = 0; n < N; ++n) sums[n] = sum_i8(q_buf + n * K, K);
        for (int pass = 0; pass < 2; ++pass) {
            int32_t *o = pass ? faulty : clean;
            bl_mad_set_fault(pass ? 1 << v->op : 0);
            for (int64_t r0 = 0; r0 < M; r0 += step) { /* two calls: rows [0,2) and [2,4) (x4: of 4, x16: of 16) */
                if (is_gemm(v->op)) v->fn.gemm(w_buf, q_buf, sums, o, N, K, M, r0, r0 + step);
                else v->fn.gemv(w_buf, q_buf, sums[0], o, K, r0, r0 + step);
            }
        }
        bl_mad_set_fault(0);
        for (int64_t i = 0; i < (is_gemm(v->op) ? N * M : M); ++i)
            CHECK(faulty[i] == clean[i] + (i == 0), "fault: element %lld is %d, clean %d", (long long)i, faulty[i],
                  clean[i]);
    }
    return 0;
}

/* ---- quantize_act ---------------------------------------------------------------------------- */

enum { QK = 1003, QN = 10 }; /* K not a multiple of any vector width */
static float x_buf[QN * QK];

static int test_quantize(const bl_mad_version *v) {
    const char *op_name = "quantize_act", *ver_name = v->name;
    static int8_t q0[QN * QK], q1[QN * QK];
    float s0[QN], s1[QN];
    int32_t sum0[QN], sum1[QN];
    for (int round = 0; round < 4; ++round) {
        for (int r = 0; r < QN; ++r) {
            float *x = x_buf + r * QK;
            const float scale = powf(10.0f, (float)((int)(rnd() % 9) - 4));
            for (int k = 0; k < QK; ++k) x[k] = scale * ((float)(int32_t)rnd() / 2147483648.0f);
        }
        /* row 1: exact ties — amax 127 gives s_x = 1, so x = n + 0.5 lands exactly on .5 */
        for (int k = 0; k < QK; ++k) x_buf[1 * QK + k] = (float)((int)(rnd() % 254) - 127) + 0.5f;
        x_buf[1 * QK + 7] = 127.0f;
        memset(x_buf + 2 * QK, 0, sizeof(float) * QK);                       /* row 2: zeros        */
        for (int k = 0; k < QK; ++k) x_buf[3 * QK + k] *= 1e-30f;             /* row 3: below floor  */
        for (int k = 0; k < QK; ++k) x_buf[4 * QK + k] = 3e38f * ((float)(int32_t)rnd() / 2147483648.0f); /* row 4: huge */
        x_buf[5 * QK + (rnd() % QK)] = NAN;                                   /* row 5: NaN          */
        x_buf[6 * QK + (rnd() % QK)] = (rnd() & 1) ? INFINITY : -INFINITY;    /* row 6: inf          */
        for (int mode = 0; mode < 2; ++mode) {
            const bl_status st0 = bl_quantize_act_scalar(x_buf, q0, s0, sum0, QK, 0, QN, mode);
            const bl_status st1 = v->fn.act(x_buf, q1, s1, sum1, QK, 0, QN, mode);
            CHECK(st0.n_bad == 2 && st0.first_bad == 5, "v0 status (%lld, %lld), want (2, 5)", (long long)st0.n_bad,
                  (long long)st0.first_bad);
            CHECK(st1.n_bad == st0.n_bad && st1.first_bad == st0.first_bad, "status differs from v0");
            CHECK(memcmp(q0, q1, sizeof q0) == 0, "q differs from v0 (mode %d)", mode);
            CHECK(memcmp(s0, s1, sizeof s0) == 0, "s_x differs from v0 (mode %d)", mode);
            CHECK(memcmp(sum0, sum1, sizeof sum0) == 0, "sum_q differs from v0 (mode %d)", mode);
            /* the tie row: half-even and half-away must differ somewhere (else the test is void) */
        }
        int8_t qe[QK], qa[QK];
        float s;
        int32_t sq;
        bl_quantize_act_scalar(x_buf + QK, qe, &s, &sq, QK, 0, 1, BL_ROUND_HALF_EVEN);
        bl_quantize_act_scalar(x_buf + QK, qa, &s, &sq, QK, 0, 1, BL_ROUND_HALF_AWAY);
        CHECK(memcmp(qe, qa, QK) != 0, "tie row: both rounding modes agree (no ties exercised)");
    }
    /* a row range that does not start at 0, and the fault bit */
    bl_quantize_act_scalar(x_buf, q0, s0, sum0, QK, 0, QN, 0);
    bl_mad_set_fault(1 << BL_OP_QUANTIZE_ACT);
    v->fn.act(x_buf, q1, s1, sum1, QK, 0, 3, 0);
    v->fn.act(x_buf, q1, s1, sum1, QK, 3, QN, 0);
    bl_mad_set_fault(0);
    for (int r = 0; r < QN; ++r)
        if (r != 5 && r != 6) CHECK(sum1[r] == sum0[r] + (r == 0), "fault: sum_q[%d] = %d, clean %d", r, sum1[r], sum0[r]);
    return 0;
}

/* ---- per-block products (bl_mad.h): every block against ref_dot of its 256 weights ----------- */

static int is_block_op(int op) { return op >= BL_OP_I2S_BGEMV && op <= BL_OP_TQ1_BGEMM; }

static int test_blocks(const bl_mad_version *v) {
    const char *op_name = bl_mad_op_name(v->op), *ver_name = v->name;
    const int op = v->op;
    const int fmt = op <= BL_OP_I2S_BGEMM ? FMT_I2S : op <= BL_OP_TQ2_BGEMM ? FMT_TQ2 : FMT_TQ1;
    const int gemm = op == BL_OP_I2S_BGEMM || op == BL_OP_TQ2_BGEMM || op == BL_OP_TQ1_BGEMM;
    static const int64_t Ms[] = {1, 5, 9}, Ks[] = {256, 2304};
    for (int ki = 0; ki < 2; ++ki)
        for (int mi = 0; mi < 3; ++mi)
            for (int worst = 0; worst < 3; ++worst) { /* random; all t = 1 against 127; against -128 */
                const int64_t M = Ms[mi], K = Ks[ki], nb = K / 256, N = gemm ? 3 : 1, r0 = M > 1 ? 1 : 0;
                for (int64_t i = 0; i < M * K; ++i) t_buf[i] = worst ? 1 : (int8_t)((int)(rnd() % 3) - 1);
                for (int64_t i = 0; i < N * K; ++i) q_buf[i] = worst ? (int8_t)(worst == 1 ? 127 : -128) : (int8_t)(rnd() & 0xFF);
                encode(fmt, t_buf, M, K, w_buf);
                int32_t sums[MAX_N * 16];
                for (int64_t n = 0; n < N; ++n) bl_block_sums_i8(q_buf + n * K, K, sums + n * nb);
                const int64_t ld = (M - r0) * nb;
                if (gemm) v->fn.bgemm(w_buf, q_buf, sums, out_buf, N, K, ld, r0, M);
                else v->fn.bgemv(w_buf, q_buf, sums, out_buf, K, r0, M);
                for (int64_t n = 0; n < N; ++n)
                    for (int64_t r = r0; r < M; ++r)
                        for (int64_t b = 0; b < nb; ++b) {
                            const int32_t got = out_buf[n * ld + (r - r0) * nb + b];
                            const int32_t want = ref_dot(t_buf + r * K + 256 * b, q_buf + n * K + 256 * b, 256);
                            CHECK(got == want, "M=%lld K=%lld row %lld token %lld block %lld: %d, want %d", (long long)M,
                                  (long long)K, (long long)r, (long long)n, (long long)b, got, want);
                        }
            }
    return 0;
}

/* ---- driver ---------------------------------------------------------------------------------- */

static int run_version(const bl_mad_version *v, const char *label) {
    const int rc = v->op == BL_OP_QUANTIZE_ACT ? test_quantize(v) : is_block_op(v->op) ? test_blocks(v) : test_product(v);
    if (rc == 0) printf("MAD-OK [%s %s%s]\n", bl_mad_op_name(v->op), v->name, label);
    return rc;
}

int main(void) {
    bl_dispatch_init();
    printf("target %s, compiler %s\n", bl_target_arch(), bl_compiler_version());
    int tested = 0, skipped = 0;
    for (int i = 0; i < bl_mad_version_count(); ++i) {
        const bl_mad_version *v = bl_mad_version_at(i);
        if (!bl_isa_supported(v->isa)) {
            ++skipped;
            continue;
        }
        if (run_version(v, "")) return 1;
        ++tested;
    }
#if defined(BL_AVXVNNI_EMULATED)
    if (bl_isa_supported(BL_ISA_AVX512VNNI)) {
        for (int i = 0; i < bl_mad_version_count(); ++i) {
            const bl_mad_version *v = bl_mad_version_at(i);
            if (v->isa != BL_ISA_AVXVNNI) continue;
            if (run_version(v, " (emulated: EVEX dpbusd)")) return 1;
            ++tested;
        }
    }
#endif
    printf("mad versions tested: %d, skipped (CPU lacks the ISA): %d\n", tested, skipped);
    return failures == 0 && tested > 0 ? 0 : 1;
}
