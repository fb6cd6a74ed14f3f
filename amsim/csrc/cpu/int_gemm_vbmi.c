/* int_gemm_vbmi.c -- the integer GEMM's AVX512-VBMI kernels: byte-plane lookups of 16-bit table entries. */
#include "engine.h"

/*
 * Included by int_gemm.c where AMSIM_VBMI holds (int_gemm.c states the algorithm and chooses
 * between these kernels and the portable ones).
 *
 * The lookup. A table row LUT[u][0..256) of 16-bit entries is held as two byte planes (its low
 * and high bytes, 256 bytes each: four registers a plane). vpermi2b looks up 64 bytes at once in
 * a 128-byte pair of registers (index bits 0..6); two such lookups give 64 entries of one plane,
 * the first in the upper half (index bit 7 set) with the other indexes kept as they are, the
 * second in the lower half for those (write masks instead of a blend: one instruction fewer), and
 * unpacking the two planes' bytes gives them as 16-bit words.
 * The unpack interleaves within 128-bit lanes, so the 64 index bytes are permuted once
 * beforehand (int_ivec_of) for the words to come out in the accumulators' order below.
 *
 * Word layout of a 64-column block: two vectors, vector v holding columns 32v..32v+31 with 32-bit
 * lane t = (column 32v + t in its low half, column 32v + 16 + t in its high half). Summing such
 * vectors with vpaddd (acc_a) and their high halves with vpdpwssd against (0, 1) pairs (acc_b)
 * gives, modulo 2^32, acc_b = the high halves' signed sum and acc_a - 2^16 acc_b = the low halves'
 * unsigned sum: one add per 16-bit product pair of lanes and no widening shuffles. So entries are
 * stored biased: every entry as v + bias (bias = 2^15 for signed tables, making it 0..65535),
 * and the high-half words further XORed with 0x8000 (so read as signed they are v + bias - 2^15).
 * The flush removes kn * bias and kn * (bias - 2^15) from a sum of kn terms. Each 16-bit sum
 * over kn <= INT_KB_MAX terms is exact in 32 bits, so the int64 path adds exact block sums, and
 * the table kernels carry the accumulators themselves across k blocks ("raw sums": adding two
 * pairs is accumulating over both blocks' terms) and flush once per INT_KB_MAX terms.
 */

#define IV_LANES 64  /* columns of one block: one index vector */

/* The byte positions of a block's 64 indexes such that unpacklo/hi of the looked-up planes give
 * the word layout above: word p of vector 0 is column p/2 + 16 (p % 2), vector 1 adds 32. */
static __m512i int_ivec_permutation(void)
{
    uint8_t perm[64];
    for (int lane = 0; lane < 4; ++lane)
        for (int w = 0; w < 8; ++w) {
            const int p = 8 * lane + w, column = p / 2 + 16 * (p % 2);
            perm[16 * lane + w] = (uint8_t)column;           /* unpacklo: vector 0 */
            perm[16 * lane + 8 + w] = (uint8_t)(32 + column);  /* unpackhi: vector 1 */
        }
    return _mm512_loadu_si512(perm);
}

/* Block b[0..n) (n <= 64, the rest taken as index 0) as its permuted index vector. */
static inline __m512i int_ivec_of(const uint8_t *b, int n, __m512i perm)
{
    const __mmask64 m = n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
    return _mm512_permutexvar_epi8(perm, _mm512_maskz_loadu_epi8(m, b));
}

/* One table row as byte planes: p[0..3] the low bytes, p[4..7] the high bytes (biased). */
struct int_row_planes {
    __m512i p[8];
};

static inline struct int_row_planes int_planes_of(const uint8_t *row)
{
    struct int_row_planes r;
    for (int q = 0; q < 8; ++q)
        r.p[q] = _mm512_load_si512(row + 64 * q);
    return r;
}

/* The 64 entries row[idx] as the two word-layout vectors (odd words flipped by `odd`). */
static inline __attribute__((always_inline)) void int_lookup64(const struct int_row_planes *r, __m512i idx, __m512i odd,
                                                           __m512i *v0, __m512i *v1)
{
    const __mmask64 top = _mm512_movepi8_mask(idx), bottom = ~top;
    const __m512i lo = _mm512_mask2_permutex2var_epi8(
        r->p[0], _mm512_mask2_permutex2var_epi8(r->p[2], idx, top, r->p[3]), bottom, r->p[1]);
    const __m512i hi = _mm512_xor_si512(odd, _mm512_mask2_permutex2var_epi8(
        r->p[4], _mm512_mask2_permutex2var_epi8(r->p[6], idx, top, r->p[7]), bottom, r->p[5]));
    *v0 = _mm512_unpacklo_epi8(lo, hi);
    *v1 = _mm512_unpackhi_epi8(lo, hi);
}

/* The high bytes of the high-half words (odd byte positions after the permutation): 0x80. */
static inline __m512i int_odd_flip(void)
{
    return _mm512_set1_epi16((short)0x8000);
}

/* acc_b += the signed high halves of v's lanes. */
static inline __m512i int_add_high(__m512i acc_b, __m512i v)
{
#if defined(__AVX512VNNI__)
    return _mm512_dpwssd_epi32(acc_b, v, _mm512_set1_epi32(1 << 16));
#else
    return _mm512_add_epi32(acc_b, _mm512_srai_epi32(v, 16));
#endif
}

/*
 * Add (or store, when `first`) the exact sums of one accumulator pair into C's 32 columns at
 * `crow` (n <= 32 of them valid): acc_a, acc_b over kn terms, as described above.
 */
static inline __attribute__((always_inline)) void int_flush_pair(__m512i acc_a, __m512i acc_b, int64_t kn, int bias,
                                                             void *crow, int n, int wide, int first)
{
    if (n <= 0)
        return;
    const __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    /* low halves: an unsigned 32-bit sum; high halves: a signed one (both exact, see above) */
    const __m512i lo = _mm512_sub_epi32(acc_a, _mm512_slli_epi32(acc_b, 16));
    if (!wide) {
        int32_t *c = crow;
        __m512i s0 = _mm512_sub_epi32(lo, _mm512_set1_epi32((int32_t)(uint32_t)((uint64_t)kn * (uint64_t)bias)));
        __m512i s1 = _mm512_sub_epi32(acc_b, _mm512_set1_epi32((int32_t)(kn * (bias - 32768))));
        if (!first) {
            s0 = _mm512_add_epi32(s0, _mm512_maskz_loadu_epi32(m0, c));
            s1 = _mm512_add_epi32(s1, _mm512_maskz_loadu_epi32(m1, c + 16));
        }
        _mm512_mask_storeu_epi32(c, m0, s0);
        _mm512_mask_storeu_epi32(c + 16, m1, s1);
        return;
    }
    int64_t *c = crow;
    const __m512i b0 = _mm512_set1_epi64(kn * bias), b1 = _mm512_set1_epi64(kn * (bias - 32768));
    const __m512i s[4] = {
        _mm512_sub_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(lo)), b0),
        _mm512_sub_epi64(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(lo, 1)), b0),
        _mm512_sub_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc_b)), b1),
        _mm512_sub_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc_b, 1)), b1)};
    const __mmask8 ms[4] = {(__mmask8)m0, (__mmask8)(m0 >> 8), (__mmask8)m1, (__mmask8)(m1 >> 8)};
    for (int q = 0; q < 4; ++q) {
        __m512i v = s[q];
        if (!first)
            v = _mm512_add_epi64(v, _mm512_maskz_loadu_epi64(ms[q], c + 8 * q));
        _mm512_mask_storeu_epi64(c + 8 * q, ms[q], v);
    }
}

/* int_flush_pair of `pairs` consecutive 64-column blocks of a row: out of line, so that the
 * kernels' loops keep their accumulators in registers. */
static __attribute__((noinline)) void int_flush_row(const __m512i *acc_a, const __m512i *acc_b, int blocks,
                                                    int64_t kn, int bias, char *c, int n, int wide, int first)
{
    const size_t width = wide ? 8 : 4;
    for (int q = 0; q < 2 * blocks; ++q)
        int_flush_pair(acc_a[q], acc_b[q], kn, bias, c + width * 32 * q, n - 32 * q, wide, first);
}

/* x (rows x cols, row stride ldx) transposed into t (cols x rows, row stride ldt): in 64 x 64
 * tiles (what they read and write stays in L1), each by 8 x 8 blocks (eight 8-byte rows gathered,
 * one byte permutation, eight 8-byte rows out; a byte at a time, the transposes of the fast
 * kernels' operands took longer than the GEMM itself on tall-thin shapes); the edges byte by byte. */
static void int_transpose_bytes(const uint8_t *x, int64_t rows, int64_t cols, int64_t ldx, uint8_t *t, int64_t ldt)
{
    uint8_t perm[64];
    for (int c = 0; c < 8; ++c)
        for (int r = 0; r < 8; ++r)
            perm[8 * c + r] = (uint8_t)(8 * r + c);  /* byte r of out row c = byte c of in row r */
    const __m512i p = _mm512_loadu_si512(perm);
    /* gathered, not stored and reloaded: eight 8-byte stores read back as one vector cannot be
     * forwarded, so the load would wait for the stores to retire */
    const __m512i rowx = _mm512_set_epi64(7 * ldx, 6 * ldx, 5 * ldx, 4 * ldx, 3 * ldx, 2 * ldx, ldx, 0);
    const int64_t rows8 = rows & ~(int64_t)7, cols8 = cols & ~(int64_t)7;
    for (int64_t R = 0; R < rows8; R += 64)
        for (int64_t C = 0; C < cols8; C += 64)
            for (int64_t r0 = R; r0 < rows8 && r0 < R + 64; r0 += 8)
                for (int64_t c0 = C; c0 < cols8 && c0 < C + 64; c0 += 8) {
                    uint64_t q[8];
                    _mm512_storeu_si512(q, _mm512_permutexvar_epi8(
                                               p, _mm512_i64gather_epi64(rowx, x + r0 * ldx + c0, 1)));
                    for (int c = 0; c < 8; ++c)
                        memcpy(t + (c0 + c) * ldt + r0, &q[c], 8);
                }
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = r < rows8 ? cols8 : 0; c < cols; ++c)
            t[c * ldt + r] = x[r * ldx + c];
}

/* ---- the table kernel: T[k][u] = LUT[u][b[k, block]] built per (k block, column block) ---- */

/* T for k in [0, kn) of a 64-column block of B (b: its first column at k = 0, ldb: B's row
 * stride, n valid columns): kn * U rows of 128 bytes (the word layout's two vectors). */
static void int_build_table_vbmi(const uint8_t *planes, int U, const uint8_t *b, int64_t ldb, int n, int64_t kn,
                             __m512i *t, __m512i *ivecs)
{
    const __m512i perm = int_ivec_permutation(), odd = int_odd_flip();
    for (int64_t k = 0; k < kn; ++k)
        ivecs[k] = int_ivec_of(b + k * ldb, n, perm);
    for (int u = 0; u < U; ++u) {
        const struct int_row_planes r = int_planes_of(planes + 512 * (size_t)u);
        for (int64_t k = 0; k < kn; ++k) {
            __m512i v0, v1;
            int_lookup64(&r, ivecs[k], odd, &v0, &v1);
            __m512i *row = t + 2 * ((size_t)k * U + u);
            _mm512_store_si512(row, v0);
            _mm512_store_si512(row + 1, v1);
        }
    }
}

#define TABLE_ROWS 6             /* rows of C per register tile: 6 x 2 accumulator pairs */

/* Where a tile's accumulators go at the end of its k block. A row's sums are kept across k blocks
 * as raw accumulators (`raw`, row stride ldr vectors: acc_a, acc_b per 32 columns); at the end of
 * a chunk (at most INT_KB_MAX k steps: exact, see above) they become exact sums (int_flush_pair of
 * `kc` terms into `sums`, row stride lds bytes, n valid columns; stored there when `first`). */
struct int_tile_end {
    __m512i *raw;
    int64_t ldr;
    int raw_first;             /* the k block starts the chunk: nothing in raw yet */
    int chunk_end;             /* the k block ends the chunk: into sums, not raw */
    char *sums;
    int64_t lds, kc;
    int bias, n, wide, first;
};

/* Row r's accumulator pair q (its 32 columns q) at the end of a tile's k block (struct int_tile_end). */
static inline __attribute__((always_inline)) void int_tile_pair_end(const struct int_tile_end *e, int r, int q,
                                                                    __m512i acc_a, __m512i acc_b)
{
    __m512i *raw = e->raw + r * e->ldr + 2 * q;
    if (!e->raw_first) {
        acc_a = _mm512_add_epi32(acc_a, _mm512_load_si512(raw));
        acc_b = _mm512_add_epi32(acc_b, _mm512_load_si512(raw + 1));
    }
    if (e->chunk_end) {
        int_flush_pair(acc_a, acc_b, e->kc, e->bias, e->sums + r * e->lds + (e->wide ? 8 : 4) * 32 * q, e->n - 32 * q,
                       e->wide, e->first);
    } else {
        _mm512_store_si512(raw, acc_a);
        _mm512_store_si512(raw + 1, acc_b);
    }
}

/* `rows` rows of C (<= TABLE_ROWS) over one block: their A bytes at a (row stride lda), T's kn
 * k-steps, the accumulators ended as `e` says. */
static inline __attribute__((always_inline)) void int_table_rows(int rows, const uint8_t *a, int64_t lda,
                                                                 const __m512i *t, int U, int64_t kn,
                                                                 const struct int_tile_end *e)
{
    __m512i acc_a[TABLE_ROWS][2], acc_b[TABLE_ROWS][2];
    for (int r = 0; r < rows; ++r)
        acc_a[r][0] = acc_a[r][1] = acc_b[r][0] = acc_b[r][1] = _mm512_setzero_si512();
    const uint8_t *ar[TABLE_ROWS];
    for (int r = 0; r < rows; ++r)
        ar[r] = a + r * lda;
    const __m512i *tk = t;
    for (int64_t k = 0; k < kn; ++k, tk += 2 * (size_t)U) {
        for (int r = 0; r < rows; ++r) {
            const __m512i *row = tk + 2 * (size_t)ar[r][k];
            const __m512i v0 = _mm512_load_si512(row), v1 = _mm512_load_si512(row + 1);
            acc_a[r][0] = _mm512_add_epi32(acc_a[r][0], v0);
            acc_b[r][0] = int_add_high(acc_b[r][0], v0);
            acc_a[r][1] = _mm512_add_epi32(acc_a[r][1], v1);
            acc_b[r][1] = int_add_high(acc_b[r][1], v1);
        }
    }
    for (int r = 0; r < rows; ++r)
        for (int q = 0; q < 2; ++q)
            int_tile_pair_end(e, r, q, acc_a[r][q], acc_b[r][q]);
}

/* int_table_rows for each tile height, each in a function of its own: inlined into the block
 * loops, GCC's register allocation copied the accumulators around (and spilled some) at every k. */
typedef void int_table_tile_fn(const uint8_t *a, int64_t lda, const __m512i *t, int U, int64_t kn,
                               const struct int_tile_end *e);
/* KERNEL##R: KERNEL (int_table_rows, int_narrow_rows) for a tile of R rows, an int_table_tile_fn. */
#define ROWS_TILE(KERNEL, R)                                                                                 \
    static __attribute__((noinline)) void KERNEL##R(const uint8_t *a, int64_t lda, const __m512i *t, int U,   \
                                                    int64_t kn, const struct int_tile_end *e)                  \
    {                                                                                                         \
        KERNEL(R, a, lda, t, U, kn, e);                                                                       \
    }
ROWS_TILE(int_table_rows, 1) ROWS_TILE(int_table_rows, 2) ROWS_TILE(int_table_rows, 3)
ROWS_TILE(int_table_rows, 4) ROWS_TILE(int_table_rows, 5) ROWS_TILE(int_table_rows, 6)
static int_table_tile_fn *const int_table_tiles[TABLE_ROWS + 1] = {
    NULL, int_table_rows1, int_table_rows2, int_table_rows3, int_table_rows4, int_table_rows5, int_table_rows6};

/* ---- the narrow table: 32-column blocks, for C of at most 32 columns ---- */

/* A 64-column block's rows are two vectors, the second padding when C has at most 32 columns
 * (LeNet-5's conv2 and its filter gradient: N = 16): there the table's rows are the first vector
 * alone, T[k][u] one 64-byte row, and a row of C adds one load and two adds per k instead of two
 * and four. The index vector of a lookup holds b[k, block] and b[k + 1, block] (32 bytes each),
 * so that its two word-layout vectors are T's rows at k and k + 1: half the shuffles to build. */
#define NARROW_LANES 32          /* columns of a narrow block: one word-layout vector */
#define NARROW_ROWS 12           /* rows of C per register tile: 12 accumulator pairs */

/* T for k in [0, kn) of a 32-column block of B (as int_build_table_vbmi): kn * U rows of 64 bytes. */
static void int_build_narrow_table_vbmi(const uint8_t *planes, int U, const uint8_t *b, int64_t ldb, int n,
                                        int64_t kn, __m512i *t, __m512i *ivecs)
{
    const __m512i perm = int_ivec_permutation(), odd = int_odd_flip();
    const __mmask64 m = ((__mmask64)1 << n) - 1;
    const int64_t pairs = (kn + 1) / 2;
    for (int64_t p = 0; p < pairs; ++p) {
        const __mmask64 m1 = 2 * p + 1 < kn ? m : 0;  /* an odd kn's last pair has no k + 1 */
        const __m512i both = _mm512_mask_loadu_epi8(_mm512_maskz_loadu_epi8(m, b + 2 * p * ldb), m1 << 32,
                                                    b + (2 * p + 1) * ldb - NARROW_LANES);
        ivecs[p] = _mm512_permutexvar_epi8(perm, both);
    }
    for (int u = 0; u < U; ++u) {
        const struct int_row_planes r = int_planes_of(planes + 512 * (size_t)u);
        for (int64_t p = 0; p < pairs; ++p) {
            __m512i v0, v1;
            int_lookup64(&r, ivecs[p], odd, &v0, &v1);
            _mm512_store_si512(t + (size_t)(2 * p) * U + u, v0);
            if (2 * p + 1 < kn)
                _mm512_store_si512(t + (size_t)(2 * p + 1) * U + u, v1);
        }
    }
}

/* `rows` rows of C (<= NARROW_ROWS) over one narrow block (as int_table_rows). */
static inline __attribute__((always_inline)) void int_narrow_rows(int rows, const uint8_t *a, int64_t lda,
                                                                  const __m512i *t, int U, int64_t kn,
                                                                  const struct int_tile_end *e)
{
    __m512i acc_a[NARROW_ROWS], acc_b[NARROW_ROWS];
    for (int r = 0; r < rows; ++r)
        acc_a[r] = acc_b[r] = _mm512_setzero_si512();
    const __m512i *tk = t;
    for (int64_t k = 0; k < kn; ++k, tk += U) {
        for (int r = 0; r < rows; ++r) {
            const __m512i v = _mm512_load_si512(tk + a[r * lda + k]);
            acc_a[r] = _mm512_add_epi32(acc_a[r], v);
            acc_b[r] = int_add_high(acc_b[r], v);
        }
    }
    for (int r = 0; r < rows; ++r)
        int_tile_pair_end(e, r, 0, acc_a[r], acc_b[r]);
}

/* int_narrow_rows for each tile height, each in a function of its own (as int_table_tiles). */
ROWS_TILE(int_narrow_rows, 1) ROWS_TILE(int_narrow_rows, 2) ROWS_TILE(int_narrow_rows, 3)
ROWS_TILE(int_narrow_rows, 4) ROWS_TILE(int_narrow_rows, 5) ROWS_TILE(int_narrow_rows, 6)
ROWS_TILE(int_narrow_rows, 7) ROWS_TILE(int_narrow_rows, 8) ROWS_TILE(int_narrow_rows, 9)
ROWS_TILE(int_narrow_rows, 10) ROWS_TILE(int_narrow_rows, 11) ROWS_TILE(int_narrow_rows, 12)
#undef ROWS_TILE
static int_table_tile_fn *const int_narrow_tiles[NARROW_ROWS + 1] = {
    NULL, int_narrow_rows1, int_narrow_rows2, int_narrow_rows3, int_narrow_rows4, int_narrow_rows5, int_narrow_rows6,
    int_narrow_rows7, int_narrow_rows8, int_narrow_rows9, int_narrow_rows10, int_narrow_rows11, int_narrow_rows12};

/* dst[0..n) = src[0..n): for a panel's rows (memcpy's call cost as much as a short row's copy). */
static inline void int_copy_short(uint8_t *dst, const uint8_t *src, int64_t n)
{
    if (n > 64) {
        memcpy(dst, src, (size_t)n);
        return;
    }
    const __mmask64 m = n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
    _mm512_mask_storeu_epi8(dst, m, _mm512_maskz_loadu_epi8(m, src));
}

/* C[i0..i1, block columns j0..j1) by tables, j0 a multiple of 64. Rows go in blocks of
 * int_table_row_block, whose accumulators are added into a contiguous buffer of raw sums (64 or
 * 32 columns a row) at every k block; a chunk of at most INT_KB_MAX k steps later (so once, unless
 * K is larger), the raw sums are turned into the row's exact sums (int_flush_pair), and at the end
 * copied into C (in one k block they are flushed into C itself). Flushing into C at every k block,
 * whose rows lie N apart, missed the caches (rows 4 KiB apart share a few cache sets); turning
 * accumulators into sums at every k block took a tenth of the time. A row block rebuilds its
 * tables: it should hold many more rows than the table has patterns. A row block goes over all its
 * column blocks before the next row block starts, so that its rows of C are still in cache when
 * each block's sums are copied in (column blocks outermost, a large C's rows came from memory once
 * per block). A row block's bytes of A are copied into a contiguous panel first (transposed, where
 * A is B itself for C^T), at least 64 k steps at a time, and once for all column blocks where the
 * panel holds all of K: read in place, rows K bytes apart, each of a large K's rows took a page of
 * its own and the row block more pages than the TLB holds; copied a k block (16 bytes) at a time,
 * each row's cache line of A came from L3 four times. Returns an amsim_status. */
static int int_table_vbmi(const struct int_gemm_job *g, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    const int U = 1 << g->bits, narrow = int_table_narrow(g->fn);
    const int lanes = narrow ? NARROW_LANES : IV_LANES, tile_rows = narrow ? NARROW_ROWS : TABLE_ROWS;
    int_table_tile_fn *const *tiles = narrow ? int_narrow_tiles : int_table_tiles;
    /* a narrow table's rows are half as long (64 bytes, not 128): twice the k steps in the same bytes */
    const int64_t K = g->K, kb_max = int_table_kb(U, narrow ? 64 : 128);
    const size_t width = int_c_width(g);
    const int64_t rb_max = i1 - i0 < int_table_row_block(g->fn) ? i1 - i0 : int_table_row_block(g->fn);
    const int64_t ldr = lanes / 16;  /* raw vectors a row: an accumulator pair per 32 columns */
    /* k steps of a panel: K, or whole k blocks of at least 64 (a cache line of each row of A) */
    const int64_t pk = K <= kb_max ? K : kb_max * ((64 + kb_max - 1) / kb_max);
    __m512i *t = work_buffer(SLOT_T, sizeof(__m512i) * 2 * (size_t)U * (size_t)kb_max);
    __m512i *ivecs = work_buffer(SLOT_CBUF, sizeof(__m512i) * (size_t)kb_max);
    char *sums = work_buffer(SLOT_OUT, width * (size_t)lanes * (size_t)rb_max);
    __m512i *raw = work_buffer(SLOT_YS, sizeof(__m512i) * (size_t)ldr * (size_t)rb_max);
    uint8_t *panel = work_buffer(SLOT_XS, (size_t)rb_max * (size_t)pk);
    if (!t || !ivecs || !sums || !raw || !panel)
        return AMSIM_ERR_MEMORY;
    /* In one k block (K <= kb_max) of C as it is, the flush makes each row's final sums at once:
     * they go straight into C, with no copy (over several k blocks they wait in `sums`) */
    const int into_c = !g->transposed && K <= kb_max;
    for (int64_t r0 = i0; r0 < i1; r0 += rb_max) {
        const int64_t r1 = i1 - r0 < rb_max ? i1 : r0 + rb_max;
        for (int64_t j = j0; j < j1; j += lanes) {
            const int n = (int)(j1 - j < lanes ? j1 - j : lanes);
            /* a row's sums in C, or packed in `sums`, n of them: the flush writes only those (masked
             * stores), and with rows a block's width apart, C of few columns left most of each
             * cache line unused */
            const int64_t lds = into_c ? g->N * (int64_t)width : n * (int64_t)width;
            char *const block_sums = into_c ? int_c_at(g, r0, j) : sums;
            for (int64_t k0 = 0, chunk = 0; k0 < K; k0 += kb_max) {
                const int64_t kn = K - k0 < kb_max ? K - k0 : kb_max;
                if (narrow)
                    int_build_narrow_table_vbmi(g->planes, U, g->fb + k0 * g->fn + j, g->fn, n, kn, t, ivecs);
                else
                    int_build_table_vbmi(g->planes, U, g->fb + k0 * g->fn + j, g->fn, n, kn, t, ivecs);
                if (k0 % pk == 0 && (pk < K || j == j0)) {
                    const int64_t pn = K - k0 < pk ? K - k0 : pk;
                    if (g->a_columns)
                        int_transpose_bytes(g->fa + k0 * g->fm + r0, pn, r1 - r0, g->fm, panel, pk);
                    else
                        for (int64_t i = r0; i < r1; ++i)
                            int_copy_short(panel + (i - r0) * pk, g->fa + i * K + k0, pn);
                }
                const int64_t k1 = k0 + kn;
                struct int_tile_end e = {.ldr = ldr, .raw_first = k0 == chunk,
                                         .chunk_end = int_chunk_ends(k1, K, kb_max, chunk), .lds = lds,
                                         .kc = k1 - chunk, .bias = g->bias, .n = n, .wide = g->wide,
                                         .first = chunk == 0};
                const uint8_t *a = panel + k0 % pk;
                for (int64_t i = r0; i < r1; i += tile_rows) {
                    e.raw = raw + (i - r0) * ldr;
                    e.sums = block_sums + (i - r0) * lds;
                    tiles[r1 - i >= tile_rows ? tile_rows : r1 - i](a + (i - r0) * pk, pk, t, U, kn, &e);
                }
                if (e.chunk_end)
                    chunk = k1;
            }
            if (!into_c)
                int_store_rows(g, r0, r1, j, sums, lds, n);
        }
    }
    return AMSIM_OK;
}

/* ---- the lookup kernel: each product looked up in its row's planes, no table built ---- */

#define LOOKUP_BLOCKS 3             /* 64-column blocks sharing each row's plane loads: 12 accumulators */
#define LOOKUP_IVEC_BYTES (1 << 17) /* index vectors a k block of rows reads: kept in L2 */
#define LOOKUP_ROW_BLOCK 512        /* rows whose sums wait in a buffer while they share a k block */

/* One row of C over up to LOOKUP_BLOCKS blocks of one chunk: ivecs[k * LOOKUP_BLOCKS + q] is
 * block q's index vector at k (prepared once per GEMM by int_lookup_prepare_vbmi). */
static inline __attribute__((always_inline)) void int_lookup_row(int blocks, const uint8_t *a, const uint8_t *planes,
                                                             const __m512i *ivecs, int64_t k0, int64_t kn, int bias,
                                                             char *c, int n, int wide, int first)
{
    const __m512i odd = int_odd_flip();
    __m512i acc_a[LOOKUP_BLOCKS][2], acc_b[LOOKUP_BLOCKS][2];
    for (int q = 0; q < blocks; ++q)
        acc_a[q][0] = acc_a[q][1] = acc_b[q][0] = acc_b[q][1] = _mm512_setzero_si512();
    for (int64_t k = k0; k < k0 + kn; ++k) {
        const struct int_row_planes r = int_planes_of(planes + 512 * (size_t)a[k]);
        for (int q = 0; q < blocks; ++q) {
            __m512i v0, v1;
            int_lookup64(&r, ivecs[k * LOOKUP_BLOCKS + q], odd, &v0, &v1);
            acc_a[q][0] = _mm512_add_epi32(acc_a[q][0], v0);
            acc_b[q][0] = int_add_high(acc_b[q][0], v0);
            acc_a[q][1] = _mm512_add_epi32(acc_a[q][1], v1);
            acc_b[q][1] = int_add_high(acc_b[q][1], v1);
        }
    }
    int_flush_row(&acc_a[0][0], &acc_b[0][0], blocks, kn, bias, c, n, wide, first);
}

/* int_lookup_row for each number of blocks, each in a function of its own (as int_table_tiles). */
typedef void int_lookup_tile_fn(const uint8_t *a, const uint8_t *planes, const __m512i *ivecs, int64_t k0,
                                int64_t kn, int bias, char *c, int n, int wide, int first);
#define LOOKUP_TILE(Q)                                                                                     \
    static __attribute__((noinline)) void int_lookup_row##Q(const uint8_t *a, const uint8_t *planes,       \
                                                            const __m512i *ivecs, int64_t k0, int64_t kn,  \
                                                            int bias, char *c, int n, int wide, int first) \
    {                                                                                                      \
        int_lookup_row(Q, a, planes, ivecs, k0, kn, bias, c, n, wide, first);                              \
    }
LOOKUP_TILE(1) LOOKUP_TILE(2) LOOKUP_TILE(3)
#undef LOOKUP_TILE
static int_lookup_tile_fn *const int_lookup_tiles[LOOKUP_BLOCKS + 1] = {NULL, int_lookup_row1, int_lookup_row2,
                                                                        int_lookup_row3};

/* B's index vectors in chunks of LOOKUP_BLOCKS blocks (the columns one int_lookup_row call sums),
 * each chunk k-major: ivecs[(c * K + k) * LOOKUP_BLOCKS + q] is block LOOKUP_BLOCKS c + q at k
 * (what a k block of one chunk reads is contiguous). */
static void int_lookup_prepare_vbmi(const uint8_t *b, int64_t K, int64_t N, __m512i *ivecs)
{
    const __m512i perm = int_ivec_permutation();
    const int64_t nb = (N + IV_LANES - 1) / IV_LANES;
    for (int64_t q = 0; q < nb; ++q) {
        const int n = (int)(N - q * IV_LANES < IV_LANES ? N - q * IV_LANES : IV_LANES);
        __m512i *out = ivecs + (q / LOOKUP_BLOCKS) * K * LOOKUP_BLOCKS + q % LOOKUP_BLOCKS;
        for (int64_t k = 0; k < K; ++k)
            out[k * LOOKUP_BLOCKS] = int_ivec_of(b + k * N + q * IV_LANES, n, perm);
    }
}

/* The index vectors int_lookup_prepare_vbmi writes for a K x N operand. */
static size_t int_lookup_ivecs_bytes(int64_t K, int64_t N)
{
    const int64_t chunks = (N + LOOKUP_BLOCKS * IV_LANES - 1) / (LOOKUP_BLOCKS * IV_LANES);
    return sizeof(__m512i) * (size_t)chunks * (size_t)K * LOOKUP_BLOCKS;
}

/* C[i0..i1, block columns j0..j1) by lookups, j0 a multiple of 64. The columns go LOOKUP_BLOCKS
 * blocks at a time, k in blocks whose index vectors stay in L2 while a block of rows reads them
 * (read whole for every row, the index vectors of a large B came from memory), each row's sums
 * in a buffer until its last k block. Returns an amsim_status. */
static int int_lookup_vbmi(const struct int_gemm_job *g, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    const int64_t K = g->K, span = LOOKUP_BLOCKS * IV_LANES;
    const int64_t kb = LOOKUP_IVEC_BYTES / span < INT_KB_MAX ? LOOKUP_IVEC_BYTES / span : INT_KB_MAX;
    const int64_t rb = i1 - i0 < LOOKUP_ROW_BLOCK ? i1 - i0 : LOOKUP_ROW_BLOCK;
    const size_t width = int_c_width(g), row_bytes = width * (size_t)span;
    char *sums = work_buffer(SLOT_OUT, row_bytes * (size_t)rb);
    if (!sums)
        return AMSIM_ERR_MEMORY;
    /* in one k block of C as it is, each row's final sums straight into C (as int_table_vbmi) */
    const int into_c = !g->transposed && K <= kb;
    const size_t ldc = into_c ? (size_t)g->N * width : row_bytes;
    for (int64_t j = j0; j < j1; j += span) {
        const int n = (int)(j1 - j < span ? j1 - j : span);
        const __m512i *iv = (const __m512i *)g->ivecs + (j / span) * K * LOOKUP_BLOCKS;
        int_lookup_tile_fn *const tile = int_lookup_tiles[(n + IV_LANES - 1) / IV_LANES];
        for (int64_t r0 = i0; r0 < i1; r0 += rb) {
            const int64_t r1 = i1 - r0 < rb ? i1 : r0 + rb;
            char *const block_sums = into_c ? int_c_at(g, r0, j) : sums;
            for (int64_t k0 = 0; k0 < K; k0 += kb) {
                const int64_t kn = K - k0 < kb ? K - k0 : kb;
                for (int64_t i = r0; i < r1; ++i)
                    tile(g->fa + i * K, g->planes, iv, k0, kn, g->bias, block_sums + (size_t)(i - r0) * ldc, n,
                         g->wide, k0 == 0);
            }
            if (!into_c)
                int_store_rows(g, r0, r1, j, sums, (int64_t)row_bytes, n);
        }
    }
    return AMSIM_OK;
}
