/* ceiling_scalar.c — machine-ceiling kernels, portable C (see ceiling.h for the contract).
 *
 * Compiled with no SIMD flags: the compiler may auto-vectorise for the target's baseline
 * (SSE2 on x86-64), so these measure "what plain C gets", a floor rather than a ceiling.
 * bench.machine_ceilings() uses the best level the CPU runs; this one is the fallback and
 * the reference the SIMD files are checked against.
 */
#include "ceiling.h"

#define CHAINS 4
#define VEC 16

/* Byte sum with four independent accumulators (nbytes % 256 == 0). */
static uint64_t read_scalar(const uint8_t *buf, int64_t nbytes) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = 0; i < nbytes; i += 4) {
        s0 += buf[i];
        s1 += buf[i + 1];
        s2 += buf[i + 2];
        s3 += buf[i + 3];
    }
    return s0 + s1 + s2 + s3;
}

/* The read loop, 256 bytes at a time, each block followed by 4·fmas float multiply-adds (a multiply
 * then an add: the build contracts nothing), on 8 accumulators converging to c / (1 − m) = 1. */
static uint64_t busy_scalar(const uint8_t *buf, int64_t nbytes, int fmas, float *sink) {
    uint64_t sum = 0;
    const float m = 0.9990234375f, c = 0.0009765625f;
    float f[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    for (int64_t i = 0; i < nbytes; i += 256) {
        sum += read_scalar(buf + i, 256);
        for (int k = 0; k < 4 * fmas; k += 8)
            for (int l = 0; l < 8; ++l) f[l] = f[l] * m + c;
    }
    *sink = f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
    return sum;
}

/* CHAINS x VEC int32 lanes, one product per lane per iteration. Unsigned lanes: the
 * wrap-around modulo 2^32 is defined behaviour (signed overflow would not be). */
static int64_t dot_scalar(const uint8_t *a, const int8_t *b, int64_t iters) {
    uint32_t acc[CHAINS][VEC] = {{0}};
    int32_t av[CHAINS][VEC], bv[VEC];
    for (int c = 0; c < CHAINS; ++c)
        for (int l = 0; l < VEC; ++l) av[c][l] = a[c * VEC + l];
    for (int l = 0; l < VEC; ++l) bv[l] = b[l];
    for (int64_t it = 0; it < iters; ++it) {
        /* bv escapes and "may have changed": the products are recomputed every iteration. */
        __asm__ volatile("" : : "r"(bv) : "memory");
        for (int c = 0; c < CHAINS; ++c)
            for (int l = 0; l < VEC; ++l) acc[c][l] += (uint32_t)(av[c][l] * bv[l]);
    }
    int64_t total = 0;
    for (int c = 0; c < CHAINS; ++c)
        for (int l = 0; l < VEC; ++l) total += (int32_t)acc[c][l];
    return total;
}

const bl_ceiling_kernels bl_ceiling_scalar = {
    "scalar",
    "byte loads, 4 uint64 sums (compiler's auto-vectorisation)",
    "int32 multiply-add per lane (compiler's choice of instructions)",
    CHAINS, CHAINS, VEC, 1, 32, 0,
    read_scalar, dot_scalar,
    "float multiply then add (1 lane)", busy_scalar,
};
