/* ceiling_amx.c — machine-ceiling kernels, AMX-INT8 (see ceiling.h; a tile kernel).
 *
 * Compiled with the AVX-512 VNNI flags plus -mamx-tile -mamx-int8, called only where
 * bl_dispatch.c found AMX usable by this process. read: AVX-512's loop (ceiling_avx512vnni.c).
 * dot: TDPBUSD — C[16 × 16 int32] += A[16 × 64 u8] · B[64 × 16 s8], 16384 multiply-accumulates per
 * instruction; four C tiles (two A tiles, one B) keep the tile unit busy (the prefill GEMMs of
 * mad_amx.c run the same instruction, with A and B from memory).
 */
#include "bl_amx.h"
#include "ceiling.h"

#define CHAINS 4
#define A_VECTORS 2

static int64_t dot_amx(const uint8_t *a, const int8_t *b, int64_t iters) {
    bl_amx_configure(7); /* tmm0..3 C, tmm4, 5 A, tmm6 B */
    _tile_loadd(4, a, 64);
    _tile_loadd(5, a + 1024, 64);
    _tile_loadd(6, b, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t it = 0; it < iters; ++it) { /* chain c uses A tile c % 2 */
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 5, 6);
        _tile_dpbusd(2, 4, 6);
        _tile_dpbusd(3, 5, 6);
    }
    int32_t c[CHAINS][16][16];
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
    _tile_release();
    int64_t sum = 0;
    for (int i = 0; i < CHAINS; ++i)
        for (int m = 0; m < 16; ++m)
            for (int n = 0; n < 16; ++n) sum += c[i][m][n];
    return sum;
}

const bl_ceiling_kernels bl_ceiling_amx = {
    "amx",
    "vmovdqu64 zmm + vpsadbw + vpaddq (64 bytes)",
    "tdpbusd (16x64 u8 . 64x16 s8: 16384 int8 MACs into 16x16 int32)",
    CHAINS, A_VECTORS, 1024, 64, 32, 16,
    bl_ceiling_read_avx512, dot_amx, /* the read and busy loops are AVX-512's (ceiling_avx512vnni.c) */
    "vfmadd231ps zmm (16 float lanes)", bl_ceiling_busy_avx512,
};
