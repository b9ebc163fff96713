/* bl_amx.h — the AMX tile configuration, shared by mad_amx.c and ceiling_amx.c (both compiled
 * with -mamx-tile; called only where bl_dispatch.c found AMX usable by this process). */
#ifndef BL_AMX_H
#define BL_AMX_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* The 64-byte operand of LDTILECFG (Intel SDM): palette, then bytes per row and rows per tile. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} bl_amx_config;

/* Palette 1 with tiles 0 .. n - 1 all 16 rows × 64 bytes (the largest tile); release with
 * _tile_release() when done, so the thread does not keep the tile state. */
static inline void bl_amx_configure(int n) {
    bl_amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < n; ++i) {
        c.rows[i] = 16;
        c.colsb[i] = 64;
    }
    _tile_loadconfig(&c);
}

/* As bl_amx_configure, but the token-side tiles hold `rows` (1..16) rows: tiles 0 .. n_c - 1 (C)
 * and n_c .. n_c + n_a - 1 (A) get `rows` rows, the rest up to n (B) stay 16 × 64 — a C tile has
 * its A tile's rows and a B tile's row width, as TDPBSUD requires (Intel SDM). For GEMMs of fewer
 * than 16 tokens: the tile products then read and write only the tokens that exist. */
static inline void bl_amx_configure_rows(int n, int n_c, int n_a, int rows) {
    bl_amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < n; ++i) {
        c.rows[i] = (uint8_t)(i < n_c + n_a ? rows : 16);
        c.colsb[i] = 64;
    }
    _tile_loadconfig(&c);
}

#endif /* BL_AMX_H */
