/* test_codec.c — C-level test of the I2_S codec kernels of every ISA level the dispatcher
 * offers on this CPU, against a known-answer block and against the scalar kernels.
 *
 * Built and run by run_c_tests.sh: natively (x86-64: scalar, avx2, avx512vnni) or
 * cross-compiled for aarch64 and run under qemu-user (scalar, neon, neon_dotprod). It is the
 * only way to exercise pack_neon.c on an x86 machine.
 *
 * Checks, for each level:
 *   1. known answer: a hand-built block decodes per docs/formats.md#31-i2_s-type-36 (128/32, MSB-first) —
 *      this catches a kernel that reads bitnet.cpp's ARM 64/16 layout even if scalar agreed;
 *   2. unpack of random valid data (1..37 blocks, odd and even counts) == scalar, and
 *      pack(unpack(x)) == x;
 *   3. a code 3 planted anywhere: same (count, first index) as scalar, and the exact index;
 *   4. a value outside {-1, 0, 1} planted anywhere: same status as scalar.
 * Prints one line per level and exits non-zero on the first failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bl_kernels.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

#define FAIL(...)                                  \
    do {                                           \
        printf("FAIL [%s] ", name);                \
        printf(__VA_ARGS__);                       \
        printf("\n");                              \
        return 1;                                  \
    } while (0)

enum { MAX_BLOCKS = 37 };

/* Random valid packed bytes: every 2-bit code drawn from {0, 1, 2}. */
static void random_packed(uint8_t *p, int64_t n_bytes) {
    for (int64_t i = 0; i < n_bytes; ++i) {
        uint8_t b = 0;
        for (int k = 0; k < 4; ++k) b = (uint8_t)((b << 2) | (rnd() % 3));
        p[i] = b;
    }
}

static int test_level(const bl_isa_kernels *kern) {
    const char *name = kern->name;
    static uint8_t packed[MAX_BLOCKS * 32], repacked[MAX_BLOCKS * 32];
    static int8_t t_ref[MAX_BLOCKS * 128], t_isa[MAX_BLOCKS * 128];

    /* 1. known answer: byte b = 0b10'01'00'01 for all b -> elements b: +1, 32+b: 0,
     *    64+b: -1, 96+b: 0; then byte 5 = 0b00'10'01'10 -> elements 5: -1, 37: +1, 69: 0, 101: +1 */
    memset(packed, 0x91, 32);
    packed[5] = 0x26;
    bl_status st = kern->unpack_i2_s(packed, t_isa, 1);
    if (st.n_bad != 0) FAIL("known answer: n_bad = %lld", (long long)st.n_bad);
    for (int j = 0; j < 128; ++j) {
        int b = j % 32, plane = j / 32;
        int want = (b == 5) ? (int[]){-1, 1, 0, 1}[plane] : (int[]){1, 0, -1, 0}[plane];
        if (t_isa[j] != want) FAIL("known answer: element %d = %d, want %d", j, t_isa[j], want);
    }

    for (int n_blocks = 1; n_blocks <= MAX_BLOCKS; n_blocks += (n_blocks < 5 ? 1 : 8)) {
        /* 2. random valid data */
        random_packed(packed, 32 * n_blocks);
        bl_status sr = bl_unpack_i2_s_scalar(packed, t_ref, n_blocks);
        bl_status si = kern->unpack_i2_s(packed, t_isa, n_blocks);
        if (sr.n_bad || si.n_bad) FAIL("valid data reported bad (%d blocks)", n_blocks);
        if (memcmp(t_ref, t_isa, 128 * (size_t)n_blocks)) FAIL("unpack differs from scalar (%d blocks)", n_blocks);
        si = kern->pack_i2_s(t_isa, repacked, n_blocks);
        if (si.n_bad) FAIL("pack reported bad (%d blocks)", n_blocks);
        if (memcmp(packed, repacked, 32 * (size_t)n_blocks)) FAIL("pack(unpack(x)) != x (%d blocks)", n_blocks);

        /* 3. a code 3 at a random element (plus a second one later, to check the count) */
        int64_t e = rnd() % (128 * n_blocks);
        int64_t byte = 32 * (e / 128) + (e % 32);
        int shift = 6 - 2 * (int)((e % 128) / 32);
        packed[byte] |= (uint8_t)(3u << shift);
        int64_t e2 = 128 * (int64_t)n_blocks - 1; /* the last element: byte 31 of the last block, bits 1:0 */
        int extra = (e2 != e);
        if (extra) packed[32 * n_blocks - 1] |= 3u;
        sr = bl_unpack_i2_s_scalar(packed, t_ref, n_blocks);
        si = kern->unpack_i2_s(packed, t_isa, n_blocks);
        if (sr.n_bad != 1 + extra || sr.first_bad != e)
            FAIL("scalar code-3 status (%lld, %lld), want (%d, %lld)", (long long)sr.n_bad,
                 (long long)sr.first_bad, 1 + extra, (long long)e);
        if (si.n_bad != sr.n_bad || si.first_bad != sr.first_bad)
            FAIL("code-3 status (%lld, %lld) != scalar (%lld, %lld)", (long long)si.n_bad,
                 (long long)si.first_bad, (long long)sr.n_bad, (long long)sr.first_bad);

        /* 4. a value outside {-1, 0, 1} */
        random_packed(packed, 32 * n_blocks);
        bl_unpack_i2_s_scalar(packed, t_ref, n_blocks);
        int64_t v = rnd() % (128 * n_blocks);
        static const int8_t bad_values[] = {2, -2, 127, -128, 3};
        t_ref[v] = bad_values[rnd() % 5];
        sr = bl_pack_i2_s_scalar(t_ref, repacked, n_blocks);
        si = kern->pack_i2_s(t_ref, repacked, n_blocks);
        if (sr.n_bad != 1 || sr.first_bad != v) FAIL("scalar pack status wrong");
        if (si.n_bad != sr.n_bad || si.first_bad != sr.first_bad)
            FAIL("pack bad-value status (%lld, %lld) != scalar (%lld, %lld)", (long long)si.n_bad,
                 (long long)si.first_bad, (long long)sr.n_bad, (long long)sr.first_bad);
    }
    printf("PASS [%s]\n", name);
    return 0;
}

int main(void) {
    bl_dispatch_init();
    printf("target %s, compiler %s\nfeatures:", bl_target_arch(), bl_compiler_version());
    for (int i = 0; i < bl_cpu_feature_count(); ++i) printf(" %s=%d", bl_cpu_feature_name(i), bl_cpu_feature_value(i));
    printf("\n");
    int tested = 0;
    for (int isa = 0; isa < BL_ISA_COUNT; ++isa) {
        const bl_isa_kernels *kern = bl_isa_table(isa);
        if (kern == NULL) continue;
        if (test_level(kern)) return 1;
        ++tested;
    }
    printf("levels tested: %d\n", tested);
    return tested > 0 ? 0 : 1;
}
