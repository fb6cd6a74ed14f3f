/* int_gemm_avx2.c -- the integer GEMM's AVX2 table kernel, for CPUs without AVX512-VBMI. */
#include "engine.h"

/*
 * Included by int_gemm.c where AMSIM_AVX2 holds and AMSIM_VBMI does not (int_gemm.c states the
 * algorithm and chooses between this kernel and the direct one).
 *
 * The table kernel of int_gemm_vbmi.c in AVX2's terms: per block of k and of 32 columns j, the
 * table T[k][u] = LUT[u][b[k, j-block]] of every pattern u, its 16-bit entries as they are (the
 * table fits one 16-bit range: int_bias), one 64-byte row, built by gathers from the LUT; then
 * every row of C adds T[k][a[i, k]], 8 entries at a time widened to 32 bits straight from memory
 * (vpmovzxwd, or vpmovsxwd for a signed range). A sum of at most INT_KB_MAX entries is exact in 32
 * bits, so a row keeps 32-bit raw sums over a chunk of at most INT_KB_MAX k steps and adds them into
 * its sums, in the accumulator's width, once per chunk.
 */

#define AVX2_LANES 32  /* columns of a block: one 64-byte table row */
#define AVX2_ROWS 3    /* rows of C per register tile: 3 x 4 accumulators of 8 columns */

/* T for k in [0, kn) of a 32-column block of B (b: its first column at k = 0, ldb: B's row stride,
 * n valid columns, the rest taken as pattern 0): kn * U rows of 32 entries, each 8 gathered from
 * the LUT's row and packed to 16 bits (with saturation, which the table's range never needs).
 * idx: kn * 4 vectors of 8 indexes. */
static void int_build_table_avx2(const int32_t *lut, int bits, const uint8_t *b, int64_t ldb, int n, int64_t kn,
                                 int is_signed, uint16_t *t, __m256i *idx)
{
    const int U = 1 << bits;
    for (int64_t k = 0; k < kn; ++k) {
        uint8_t block[AVX2_LANES] = {0};
        memcpy(block, b + k * ldb, (size_t)n);
        for (int q = 0; q < 4; ++q)
            idx[4 * k + q] = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(block + 8 * q)));
    }
    for (int u = 0; u < U; ++u) {
        const int *row = (const int *)amsim_int_lut_row(lut, bits, (uint8_t)u);
        for (int64_t k = 0; k < kn; ++k) {
            __m256i *out = (__m256i *)(t + ((size_t)k * U + u) * AVX2_LANES);
            for (int h = 0; h < 2; ++h) {
                const __m256i lo = _mm256_i32gather_epi32(row, idx[4 * k + 2 * h], 4);
                const __m256i hi = _mm256_i32gather_epi32(row, idx[4 * k + 2 * h + 1], 4);
                /* the packs interleave 128-bit lanes: the permutation puts the 16 words in order */
                const __m256i words = is_signed ? _mm256_packs_epi32(lo, hi) : _mm256_packus_epi32(lo, hi);
                _mm256_storeu_si256(out + h, _mm256_permute4x64_epi64(words, 0xD8));
            }
        }
    }
}

/* 8 entries at e widened to 32 bits: sign-extended for a signed range, else zero-extended. */
static inline __m256i int_avx2_widen(const uint16_t *e, int is_signed)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)e);
    return is_signed ? _mm256_cvtepi16_epi32(v) : _mm256_cvtepu16_epi32(v);
}

/* `rows` rows of C (<= AVX2_ROWS) over one block: their A bytes at a (row stride lda), T's kn
 * k-steps, added into the rows' raw sums at raw (32 a row; stored there when `first`). */
static inline __attribute__((always_inline)) void int_avx2_rows(int rows, int is_signed, const uint8_t *a,
                                                                int64_t lda, const uint16_t *t, int U, int64_t kn,
                                                                int32_t *raw, int first)
{
    __m256i acc[AVX2_ROWS][4];
    for (int r = 0; r < rows; ++r)
        for (int q = 0; q < 4; ++q)
            acc[r][q] = first ? _mm256_setzero_si256()
                              : _mm256_loadu_si256((const __m256i *)(raw + r * AVX2_LANES + 8 * q));
    const uint16_t *tk = t;
    for (int64_t k = 0; k < kn; ++k, tk += (size_t)U * AVX2_LANES) {
        for (int r = 0; r < rows; ++r) {
            const uint16_t *row = tk + (size_t)a[r * lda + k] * AVX2_LANES;
            for (int q = 0; q < 4; ++q)
                acc[r][q] = _mm256_add_epi32(acc[r][q], int_avx2_widen(row + 8 * q, is_signed));
        }
    }
    for (int r = 0; r < rows; ++r)
        for (int q = 0; q < 4; ++q)
            _mm256_storeu_si256((__m256i *)(raw + r * AVX2_LANES + 8 * q), acc[r][q]);
}

/* int_avx2_rows for each tile height and signedness, each in a function of its own (so that
 * the accumulators stay in registers, as int_gemm_vbmi.c's tiles). */
typedef void int_avx2_tile_fn(const uint8_t *a, int64_t lda, const uint16_t *t, int U, int64_t kn, int32_t *raw,
                              int first);
#define AVX2_TILE(NAME, R, S)                                                                               \
    static __attribute__((noinline)) void NAME(const uint8_t *a, int64_t lda, const uint16_t *t, int U,       \
                                               int64_t kn, int32_t *raw, int first)                          \
    {                                                                                                        \
        int_avx2_rows(R, S, a, lda, t, U, kn, raw, first);                                                   \
    }
AVX2_TILE(int_avx2_u1, 1, 0) AVX2_TILE(int_avx2_u2, 2, 0) AVX2_TILE(int_avx2_u3, 3, 0)
AVX2_TILE(int_avx2_s1, 1, 1) AVX2_TILE(int_avx2_s2, 2, 1) AVX2_TILE(int_avx2_s3, 3, 1)
#undef AVX2_TILE
static int_avx2_tile_fn *const int_avx2_tiles[2][AVX2_ROWS + 1] = {{NULL, int_avx2_u1, int_avx2_u2, int_avx2_u3},
                                                                   {NULL, int_avx2_s1, int_avx2_s2, int_avx2_s3}};

/* C[i0..i1, columns j0..j1) by tables (the kernel's C as is: no orientation, no transposes). Rows
 * go in blocks of INT_TABLE_ROW_BLOCK sharing the tables, each over all its column blocks, as in
 * int_table_vbmi; their sums wait in a contiguous buffer in the accumulator's width (a partial sum
 * of a sum that fits it fits too). Returns an amsim_status. */
static int int_table_avx2(const struct int_gemm_job *g, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    const int U = 1 << g->bits, is_signed = g->bias != 0;
    const int64_t K = g->K, kb_max = int_table_kb(U, 64);
    const int64_t rb_max = i1 - i0 < INT_TABLE_ROW_BLOCK ? i1 - i0 : INT_TABLE_ROW_BLOCK;
    const size_t width = g->wide ? 8 : 4;
    uint16_t *t = work_buffer(SLOT_T, sizeof(uint16_t) * AVX2_LANES * (size_t)U * (size_t)kb_max);
    __m256i *idx = work_buffer(SLOT_CBUF, sizeof(__m256i) * 4 * (size_t)kb_max);
    int32_t *raw = work_buffer(SLOT_YS, sizeof(int32_t) * AVX2_LANES * (size_t)rb_max);
    char *sums = work_buffer(SLOT_OUT, width * AVX2_LANES * (size_t)rb_max);
    if (!t || !idx || !raw || !sums)
        return AMSIM_ERR_MEMORY;
    int_avx2_tile_fn *const *tiles = int_avx2_tiles[is_signed];
    for (int64_t r0 = i0; r0 < i1; r0 += rb_max) {
        const int64_t r1 = i1 - r0 < rb_max ? i1 : r0 + rb_max;
        for (int64_t j = j0; j < j1; j += AVX2_LANES) {
            const int n = (int)(j1 - j < AVX2_LANES ? j1 - j : AVX2_LANES);
            for (int64_t k0 = 0, chunk = 0; k0 < K; k0 += kb_max) {
                const int64_t kn = K - k0 < kb_max ? K - k0 : kb_max;
                int_build_table_avx2(g->lut, g->bits, g->b + k0 * g->N + j, g->N, n, kn, is_signed, t, idx);
                for (int64_t i = r0; i < r1; i += AVX2_ROWS)
                    tiles[r1 - i >= AVX2_ROWS ? AVX2_ROWS : r1 - i](g->a + i * K + k0, K, t, U, kn,
                                                                    raw + (i - r0) * AVX2_LANES, k0 == chunk);
                const int64_t k1 = k0 + kn;
                if (int_chunk_ends(k1, K, kb_max, chunk)) {  /* the chunk's raw sums into the sums */
                    for (int64_t e = 0; e < (r1 - r0) * AVX2_LANES; ++e) {
                        if (g->wide)
                            ((int64_t *)sums)[e] = (chunk == 0 ? 0 : ((int64_t *)sums)[e]) + raw[e];
                        else
                            ((int32_t *)sums)[e] = (chunk == 0 ? 0 : ((int32_t *)sums)[e]) + raw[e];
                    }
                    chunk = k1;
                }
            }
            int_store_rows(g, r0, r1, j, sums, (int64_t)(AVX2_LANES * width), n);
        }
    }
    return AMSIM_OK;
}
