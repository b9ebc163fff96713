/* ceiling.h — machine-ceiling microkernels: how fast this CPU streams memory and multiplies int8.
 *
 * bitnet_lab.bench.machine_ceilings() times these to print what the hardware allows next to
 * what the engine achieves (the decode roofline). Two kernels per ISA level, each in the
 * level's own file (ceiling_<level>.c, compiled with that level's flags by setup.py):
 *
 * read  — bl_ceiling_read_fn(buf, nbytes): stream nbytes from buf (nbytes % 256 == 0) with
 *         the widest loads of the level and return the sum of all bytes as uint64. Per vector:
 *         one load, one byte-sum instruction (psadbw / uaddw-style) and one add, spread over
 *         four independent accumulators, so on a buffer much larger than the last-level cache
 *         the loop waits on memory, not on arithmetic: its speed is the read bandwidth. The
 *         byte sum keeps the loads observable (the compiler cannot drop them) and lets the
 *         caller check that every byte was read (numpy: buf.sum(dtype=uint64)).
 *
 * dot   — bl_ceiling_dot_fn(a, b, iters): the int8 dot-product peak. `iters` iterations of
 *         `chains` independent multiply-accumulate instructions that touch registers only
 *         (maddubs+add on AVX2, vpdpbusd on VNNI, sdot on ARM dotprod, ...). Operands:
 *           a  a_vectors * vec_bytes bytes, unsigned codes 0..2 (they are also valid int8);
 *              chain c uses vector c % a_vectors
 *           b  vec_bytes int8 activations, made opaque to the compiler every iteration (an
 *              empty asm statement that "modifies" it), so no product can be hoisted or
 *              merged across iterations
 *         Every iteration adds to accumulator lane l of chain c:
 *             sum_{k < group} a[(c % a_vectors)*vec_bytes + l*group + k] * b[l*group + k]
 *         with lanes of lane_bits (16 or 32) bits that wrap modulo 2^lane_bits (products never
 *         saturate for a <= 2). The return value is the sum over chains and lanes of the final
 *         lanes read as signed integers, so the caller can verify the result exactly.
 *         Multiply-accumulates per iteration: chains * vec_bytes (one per int8 product).
 *         Tile kernels (tile_cols > 0, AMX): chain c is a matrix of (vec_bytes / group) rows ×
 *         tile_cols int32 elements, and every iteration adds A_c · B to it, where A_c is the
 *         (vec_bytes / group) × group matrix of u8 codes at a + (c % a_vectors)·vec_bytes, row-major,
 *         and B the group × tile_cols int8 matrix stored as tiles hold it: B[k][n] =
 *         b[(k / 4)·4·tile_cols + 4n + k % 4]. The return value is the sum over chains and
 *         elements, each wrapped to lane_bits. Multiply-accumulates per iteration:
 *         chains * vec_bytes * tile_cols.
 *
 * busy  — bl_ceiling_busy_fn(buf, nbytes, fmas, sink): the read loop, with `fmas` float
 *         multiply-adds of the level's widest vectors per 64 bytes read (fmas % 4 == 0; 0 is
 *         the plain read), spread over 8 register accumulators that touch no memory. Returns the
 *         byte sum as `read` does; the accumulators' final sum goes to *sink (so none of the
 *         arithmetic can be dropped). How fast memory streams while each core is also busy
 *         computing: the bound of a pass over the weights that does arithmetic per byte read (a
 *         batch of rows, a verification pass), which reaches the plain read bandwidth only on a
 *         core that overlaps the two. NULL at the levels without one (NEON: not written yet).
 *
 * Nothing here is used by the engine; the files are measurement instruments.
 */
#ifndef BL_CEILING_H
#define BL_CEILING_H

#include <stdint.h>

#include "bl_kernels.h" /* bl_isa */

#ifdef __cplusplus
extern "C" {
#endif

/* nbytes passed to a read kernel must be a multiple of this. */
#define BL_CEILING_READ_ALIGN 256

typedef uint64_t (*bl_ceiling_read_fn)(const uint8_t *buf, int64_t nbytes);
typedef int64_t (*bl_ceiling_dot_fn)(const uint8_t *a, const int8_t *b, int64_t iters);
typedef uint64_t (*bl_ceiling_busy_fn)(const uint8_t *buf, int64_t nbytes, int fmas, float *sink);

typedef struct {
    const char *name;      /* the ISA level ("avx2", ...)                                    */
    const char *read_insn; /* what the read loop executes per vector, for the report         */
    const char *dot_insn;  /* what the dot loop executes per chain and iteration             */
    int chains;            /* independent accumulators in the dot loop                       */
    int a_vectors;         /* distinct `a` vectors (chain c uses c % a_vectors)              */
    int vec_bytes;         /* int8 products per chain per iteration                          */
    int group;             /* products summed into one accumulator lane per instruction      */
    int lane_bits;         /* accumulator lane width (wraps modulo 2^lane_bits)              */
    int tile_cols;         /* 0: vector lanes (above); > 0: a tile kernel's B columns         */
    bl_ceiling_read_fn read;
    bl_ceiling_dot_fn dot;
    const char *busy_insn; /* the multiply-add of the busy loop, or NULL                     */
    bl_ceiling_busy_fn busy;
} bl_ceiling_kernels;

/* One per level, each defined in its own file and linked only when setup.py built it
 * (then it defines BL_BUILD_CEILING_<LEVEL> for the extension). */
extern const bl_ceiling_kernels bl_ceiling_scalar;
extern const bl_ceiling_kernels bl_ceiling_avx2;
extern const bl_ceiling_kernels bl_ceiling_avxvnni;
extern const bl_ceiling_kernels bl_ceiling_avx512vnni;
extern const bl_ceiling_kernels bl_ceiling_amx;
extern const bl_ceiling_kernels bl_ceiling_neon;
extern const bl_ceiling_kernels bl_ceiling_neon_dotprod;

/* Read loops shared by two levels (AVX-VNNI reads like AVX2, AMX like AVX-512, NEON dotprod like
 * NEON). */
uint64_t bl_ceiling_read_avx2(const uint8_t *buf, int64_t nbytes);
uint64_t bl_ceiling_read_avx512(const uint8_t *buf, int64_t nbytes);
uint64_t bl_ceiling_read_neon(const uint8_t *buf, int64_t nbytes);
uint64_t bl_ceiling_busy_avx2(const uint8_t *buf, int64_t nbytes, int fmas, float *sink);
uint64_t bl_ceiling_busy_avx512(const uint8_t *buf, int64_t nbytes, int fmas, float *sink);

/* The ceiling kernels of an ISA level (bl_isa), or NULL when this build has none for it.
 * Whether the CPU can run them is bl_isa_supported()'s business. */
static inline const bl_ceiling_kernels *bl_ceiling_for(int isa) {
    switch (isa) {
    case BL_ISA_SCALAR:
        return &bl_ceiling_scalar;
#if defined(BL_BUILD_CEILING_AVX2)
    case BL_ISA_AVX2:
        return &bl_ceiling_avx2;
#endif
#if defined(BL_BUILD_CEILING_AVXVNNI)
    case BL_ISA_AVXVNNI:
        return &bl_ceiling_avxvnni;
#endif
#if defined(BL_BUILD_CEILING_AVX512VNNI)
    case BL_ISA_AVX512VNNI:
        return &bl_ceiling_avx512vnni;
#endif
#if defined(BL_BUILD_CEILING_AMX)
    case BL_ISA_AMX:
        return &bl_ceiling_amx;
#endif
#if defined(BL_BUILD_CEILING_NEON)
    case BL_ISA_NEON:
        return &bl_ceiling_neon;
#endif
#if defined(BL_BUILD_CEILING_NEON_DOTPROD)
    case BL_ISA_NEON_DOTPROD:
        return &bl_ceiling_neon_dotprod;
#endif
    default:
        return 0;
    }
}

#ifdef __cplusplus
}
#endif

#endif /* BL_CEILING_H */
