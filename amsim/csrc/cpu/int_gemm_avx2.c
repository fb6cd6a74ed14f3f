/* int_gemm_avx2.c -- the integer GEMM's AVX2 table kernel, for CPUs without AVX512-VBMI. */
#include "engine.h"

/*
 * Included by int_gemm.c where AMSIM_AVX2 holds and AMSIM_VBMI does not (int_gemm.c states the
 * algorithm, and chooses between this kernel and the direct one, and the orientation).
 *
 * The table. Per block of k and of 32 columns j (16 where C has at most 16 columns: a narrow
 * block), T[k][u][j] = LUT[u][b[k, j]] for every pattern u, its entries 16 bits wide (biased by
 * the table's 16-bit bias, int_bias: unsigned 0..65535): a row of T is one cache line (half of
 * one, narrow). For a fixed k, T[k] is the transpose of 32 rows of LUT^T, those of the patterns
 * b[k, j]: the table's prepared 16-bit transpose (amsim_int_lut_init) makes each one contiguous,
 * and T[k] is built by 8 x 8 transposes of 16-bit words in registers (two per 256-bit register,
 * one in each 128-bit lane). Every row of C then adds T[k][a[i, k]]: contiguous loads and adds.
 *
 * The sums. A 32-bit lane of a loaded row holds two entries, columns m and m + 8 of its 16 (the
 * build orders the transposes' inputs so: int_avx2_order). Adding whole lanes (vpaddd: acc_a)
 * and their high halves alone (vpsrld, vpaddd: acc_b) gives, modulo 2^32, acc_b = the high
 * entries' sum and acc_a - 2^16 acc_b = the low entries' sum: both exact over at most
 * INT_KB_MAX terms (a chunk), so a row carries acc_a and acc_b across k blocks ("raw sums") and
 * turns them into sums in C once per chunk, removing the bias of each term. Three adds and a
 * shift per 16 entries, and no widening shuffles.
 *
 * Orientation: on C^T = B^T A^T (LUT^T, so the sources are the table's own rows; int_gemm_plan
 * chooses), the kernel's A is B read by columns and its B is A read by columns, in place
 * (strides, no transposes: the build reads 32 bytes of its B per k step, the rows one byte
 * each), and the sums go into C's columns. On C^T, a batch's few rows of A make the columns: its
 * tables, 2^n rows each, serve the many rows of B^T (a dense layer's weights).
 */

#define AVX2_LANES 32        /* columns of a block: a row of T, one cache line */
#define AVX2_NARROW 16       /* columns of a narrow block: half of one */
#define AVX2_ROWS 3          /* rows of C per tile of a block: 3 x 4 accumulators */
#define AVX2_NARROW_ROWS 6   /* per tile of a narrow block: 6 x 2 accumulators */
#define AVX2_TABLE_BYTES ((int64_t)1 << 18)  /* T of a k block: half a 512 KiB L2, beside A's bytes and the sums */
#define AVX2_ROW_BLOCK 8192  /* most rows sharing T (a part's rows split into even blocks): see below */
#define AVX2_PACK_K 256      /* the K from which a row block's bytes of A are copied contiguous */
#define AVX2_PANEL_K 64      /* k steps of A copied at once (or a k block, if longer): a row's cache line */

/* Rows of a k step's T: the 2^bits patterns, at least one 8 x 8 transpose's 8. */
static int int_avx2_table_rows(int bits)
{
    return bits < 3 ? 8 : 1 << bits;
}

/* 16-column halves in a block of the kernel's C of fn columns: 1 (a narrow block) or 2. */
static int int_avx2_halves(int64_t fn)
{
    return fn <= AVX2_NARROW ? 1 : 2;
}

/* Where the kernel's operands and its C are: fa (fm x K) with (i, k) at fa[i * a_rs + k * a_ks],
 * fb (K x fn) with (k, j) at fb[k * b_ks + j * b_js]; its C[i, j] is C[i, j], or C[j, i] on C^T. */
struct int_avx2_view {
    const uint8_t *fa, *fb;
    int64_t a_rs, a_ks, b_ks, b_js;
};

static struct int_avx2_view int_avx2_view_of(const struct int_gemm_job *g)
{
    if (!g->transposed)
        return (struct int_avx2_view){g->a, g->b, g->K, 1, g->N, 1};
    return (struct int_avx2_view){g->b, g->a, 1, g->N, 1, g->K};
}

/* The source row (of the prepared 16-bit transpose, 256 entries a row) that gives column q of a
 * 16-column half its place in the transposes: input register s of the 8 x 8 transposes holds
 * rows order[s] (low lane) and order[s + 8] (high lane), so that output word 2m is column m and
 * word 2m + 1 column m + 8 (m = 0..7): one 32-bit lane holds columns m and m + 8. */
static const uint8_t int_avx2_order[16] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15};

/* x[0..8) transposed as two 8 x 8 blocks of 16-bit words, one per 128-bit lane. */
static inline __attribute__((always_inline)) void int_avx2_transpose8(__m256i x[8])
{
    __m256i t[8], u[8];
    for (int p = 0; p < 4; ++p) {
        t[2 * p] = _mm256_unpacklo_epi16(x[2 * p], x[2 * p + 1]);
        t[2 * p + 1] = _mm256_unpackhi_epi16(x[2 * p], x[2 * p + 1]);
    }
    for (int p = 0; p < 2; ++p)
        for (int h = 0; h < 2; ++h) {
            u[4 * p + 2 * h] = _mm256_unpacklo_epi32(t[4 * p + h], t[4 * p + 2 + h]);
            u[4 * p + 2 * h + 1] = _mm256_unpackhi_epi32(t[4 * p + h], t[4 * p + 2 + h]);
        }
    for (int r = 0; r < 4; ++r) {
        x[2 * r] = _mm256_unpacklo_epi64(u[r], u[4 + r]);
        x[2 * r + 1] = _mm256_unpackhi_epi64(u[r], u[4 + r]);
    }
}

/* T for k in [0, kn) of a block of `halves` 16-column halves of the kernel's B, from its first column
 * at fb (strides b_ks, b_js; n valid columns, the others taken as pattern 0): per k, `rows` rows
 * (the 2^bits patterns, at least 8) of 16 * halves entries. src: the 16-bit transpose, 256 a row.
 * Not inlined: inlined into its caller, GCC compiles it into slower code (docs/performance.md). */
static __attribute__((noinline)) void int_avx2_build(const uint16_t *src, const uint8_t *fb, int64_t b_ks,
                                                     int64_t b_js, int n, int64_t kn, int rows, int halves,
                                                     uint16_t *t)
{
    const int width = AVX2_NARROW * halves;
    for (int64_t k = 0; k < kn; ++k) {
        const uint16_t *s[AVX2_LANES];
        for (int q = 0; q < width; ++q)
            s[q] = src + 256 * (size_t)(q < n ? fb[k * b_ks + q * b_js] : 0);
        uint16_t *tk = t + (size_t)k * rows * width;
        for (int h = 0; h < halves; ++h) {
            const uint16_t *const *sh = s + AVX2_NARROW * h;
            for (int u0 = 0; u0 < rows; u0 += 8) {
                __m256i x[8];
                for (int q = 0; q < 8; ++q)
                    x[q] = _mm256_inserti128_si256(
                        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(sh[int_avx2_order[q]] + u0))),
                        _mm_loadu_si128((const __m128i *)(sh[int_avx2_order[q + 8]] + u0)), 1);
                int_avx2_transpose8(x);
                for (int r = 0; r < 8; ++r)
                    _mm256_storeu_si256((__m256i *)(tk + (size_t)(u0 + r) * width + AVX2_NARROW * h), x[r]);
            }
        }
    }
}

/* `rows` rows of the kernel's C (at most 12 accumulators) over one block of `halves` halves: their
 * bytes of A from a (strides a_rs, a_ks), kn k steps of T (`trows` rows a step), the raw sums
 * (acc_a, acc_b of each half: 16 * halves lanes a row) at raw, loaded unless `first`, stored. */
static inline __attribute__((always_inline)) void int_avx2_rows(int rows, int halves, const uint8_t *a, int64_t a_rs,
                                                                int64_t a_ks, const uint16_t *t, int trows, int64_t kn,
                                                                uint32_t *raw, int first)
{
    const int width = AVX2_NARROW * halves;
    __m256i acc[AVX2_NARROW_ROWS][2][2];
    for (int r = 0; r < rows; ++r)
        for (int h = 0; h < halves; ++h)
            for (int s = 0; s < 2; ++s)
                acc[r][h][s] = first ? _mm256_setzero_si256()
                                     : _mm256_loadu_si256((const __m256i *)(raw + r * width + 16 * h + 8 * s));
    const uint16_t *tk = t;
    for (int64_t k = 0; k < kn; ++k, tk += (size_t)trows * width, a += a_ks) {
        for (int r = 0; r < rows; ++r) {
            const uint16_t *row = tk + (size_t)a[r * a_rs] * width;
            for (int h = 0; h < halves; ++h) {
                const __m256i x = _mm256_loadu_si256((const __m256i *)(row + AVX2_NARROW * h));
                acc[r][h][0] = _mm256_add_epi32(acc[r][h][0], x);
                acc[r][h][1] = _mm256_add_epi32(acc[r][h][1], _mm256_srli_epi32(x, 16));
            }
        }
    }
    for (int r = 0; r < rows; ++r)
        for (int h = 0; h < halves; ++h)
            for (int s = 0; s < 2; ++s)
                _mm256_storeu_si256((__m256i *)(raw + r * width + 16 * h + 8 * s), acc[r][h][s]);
}

/* Rows [0, rows) of kn k steps of the kernel's A, each at a + i * a_rs (its k steps contiguous),
 * copied into a panel, row i at panel + i * panel_k. */
static void int_avx2_pack(const uint8_t *a, int64_t a_rs, int64_t rows, int64_t kn, uint8_t *panel, int64_t panel_k)
{
    if (kn == AVX2_PANEL_K)
        for (int64_t i = 0; i < rows; ++i) {
            const __m256i *x = (const __m256i *)(a + i * a_rs);
            _mm256_storeu_si256((__m256i *)(panel + i * panel_k), _mm256_loadu_si256(x));
            _mm256_storeu_si256((__m256i *)(panel + i * panel_k + 32), _mm256_loadu_si256(x + 1));
        }
    else
        for (int64_t i = 0; i < rows; ++i)
            memcpy(panel + i * panel_k, a + i * a_rs, (size_t)kn);
}

/* int_avx2_rows for each tile height of each block width, each in a function of its own (so that
 * the accumulators stay in registers). */
typedef void int_avx2_tile_fn(const uint8_t *a, int64_t a_rs, int64_t a_ks, const uint16_t *t, int trows, int64_t kn,
                              uint32_t *raw, int first);
#define AVX2_TILE(NAME, R, H)                                                                                \
    static __attribute__((noinline)) void NAME(const uint8_t *a, int64_t a_rs, int64_t a_ks, const uint16_t *t, \
                                               int trows, int64_t kn, uint32_t *raw, int first)               \
    {                                                                                                         \
        int_avx2_rows(R, H, a, a_rs, a_ks, t, trows, kn, raw, first);                                         \
    }
AVX2_TILE(int_avx2_w1, 1, 2) AVX2_TILE(int_avx2_w2, 2, 2) AVX2_TILE(int_avx2_w3, 3, 2)
AVX2_TILE(int_avx2_n1, 1, 1) AVX2_TILE(int_avx2_n2, 2, 1) AVX2_TILE(int_avx2_n3, 3, 1)
AVX2_TILE(int_avx2_n4, 4, 1) AVX2_TILE(int_avx2_n5, 5, 1) AVX2_TILE(int_avx2_n6, 6, 1)
#undef AVX2_TILE
static int_avx2_tile_fn *const int_avx2_wide_tiles[AVX2_ROWS + 1] = {NULL, int_avx2_w1, int_avx2_w2, int_avx2_w3};
static int_avx2_tile_fn *const int_avx2_narrow_tiles[AVX2_NARROW_ROWS + 1] = {
    NULL, int_avx2_n1, int_avx2_n2, int_avx2_n3, int_avx2_n4, int_avx2_n5, int_avx2_n6};

/* The sums of rows [i0, i1) of the kernel's C over a chunk of kn terms (their raw sums at raw, 32 *
 * halves lanes a row) into its columns j..j+n: stored when `first` (the chunk begins at k = 0), else
 * added to what C holds. */
static void int_avx2_flush(const struct int_gemm_job *g, int64_t i0, int64_t i1, int64_t j, int n, int halves,
                           const uint32_t *raw, int64_t kn, int first)
{
    const uint32_t bias = (uint32_t)((uint64_t)kn * (uint64_t)g->bias);  /* of kn biased terms, < 2^31 */
    for (int64_t i = i0; i < i1; ++i, raw += 16 * halves) {
        int32_t s[AVX2_LANES];  /* the row's sums in column order */
        for (int h = 0; h < halves; ++h) {
            const __m256i acc_a = _mm256_loadu_si256((const __m256i *)(raw + 16 * h));
            const __m256i acc_b = _mm256_loadu_si256((const __m256i *)(raw + 16 * h + 8));
            const __m256i lo = _mm256_sub_epi32(acc_a, _mm256_slli_epi32(acc_b, 16));
            _mm256_storeu_si256((__m256i *)(s + 16 * h), _mm256_sub_epi32(lo, _mm256_set1_epi32((int32_t)bias)));
            _mm256_storeu_si256((__m256i *)(s + 16 * h + 8), _mm256_sub_epi32(acc_b, _mm256_set1_epi32((int32_t)bias)));
        }
        int q = 0;
        if (!g->transposed && !g->wide) {  /* C's row, 8 columns at a time (AVX2's masked stores are slow on AMD) */
            int32_t *c = (int32_t *)int_c_at(g, i, j);
            for (; q + 8 <= n; q += 8) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(s + q));
                if (!first)
                    x = _mm256_add_epi32(x, _mm256_loadu_si256((const __m256i *)(c + q)));
                _mm256_storeu_si256((__m256i *)(c + q), x);
            }
        }
        for (; q < n; ++q) {
            char *c = g->transposed ? int_c_at(g, j + q, i) : int_c_at(g, i, j + q);
            if (g->wide)
                *(int64_t *)c = (first ? 0 : *(int64_t *)c) + s[q];
            else
                *(int32_t *)c = (first ? 0 : *(int32_t *)c) + s[q];
        }
    }
}

/* Rows [i0, i1) and columns [j0, j1) of the kernel's C by tables, over the job's range of k (into
 * its C: a depth split's part has one of its own), rows in blocks of AVX2_ROW_BLOCK sharing them,
 * each block over all its column blocks. Returns an amsim_status. */
static int int_table_avx2(const struct int_gemm_job *g, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    const struct int_avx2_view v = int_avx2_view_of(g);
    const int trows = int_avx2_table_rows(g->bits);
    const int halves = int_avx2_halves(g->fn), width = AVX2_NARROW * halves;
    const int tile_rows = halves == 1 ? AVX2_NARROW_ROWS : AVX2_ROWS;
    int_avx2_tile_fn *const *tiles = halves == 1 ? int_avx2_narrow_tiles : int_avx2_wide_tiles;
    const int64_t kb_max = AVX2_TABLE_BYTES / ((int64_t)trows * 2 * width);
    const int64_t kb = kb_max < 1 ? 1 : kb_max;
    /* every block of rows builds every table again: blocks as long as AVX2_ROW_BLOCK, and even (3000
     * rows one block, not 2048 + 952). Their raw sums (128 bytes a row, 64 narrow; loaded and stored
     * in order once per k block) stream from L3 at the pace of the tiles' adds; far longer blocks
     * were slower (docs/performance.md) */
    const int64_t row_blocks = (i1 - i0 + AVX2_ROW_BLOCK - 1) / AVX2_ROW_BLOCK;
    const int64_t rb_max = (i1 - i0 + row_blocks - 1) / row_blocks;
    uint16_t *t = work_buffer(SLOT_T, sizeof(uint16_t) * (size_t)width * (size_t)trows * (size_t)kb);
    uint32_t *raw = work_buffer(SLOT_YS, sizeof(uint32_t) * (size_t)width * (size_t)rb_max);
    /* a row block's bytes of A, copied contiguous where A's rows lie K bytes apart (on C) and K is
     * at least AVX2_PACK_K: the tiles' reads of rows that far apart were slower than those of the
     * copy, copy included; of nearer rows, not. Copied panel_k steps at a time, for the k blocks
     * that follow: a cache line of each row is fetched once, not once per k block */
    const int packed = v.a_ks == 1 && v.a_rs >= AVX2_PACK_K;
    const int64_t panel_k = kb > AVX2_PANEL_K ? kb : AVX2_PANEL_K;  /* a multiple of kb: both powers of 2 */
    uint8_t *panel = packed ? work_buffer(SLOT_CBUF, (size_t)rb_max * (size_t)panel_k) : NULL;
    if (!t || !raw || (packed && !panel))
        return AMSIM_ERR_MEMORY;
    const uint16_t *src = (const uint16_t *)g->planes;
    for (int64_t r0 = i0; r0 < i1; r0 += rb_max) {
        const int64_t r1 = i1 - r0 < rb_max ? i1 : r0 + rb_max;
        for (int64_t j = j0; j < j1; j += width) {
            const int n = (int)(j1 - j < width ? j1 - j : width);
            for (int64_t k0 = g->k0, chunk = g->k0; k0 < g->k1; k0 += kb) {
                const int64_t kn = g->k1 - k0 < kb ? g->k1 - k0 : kb;
                int_avx2_build(src, v.fb + k0 * v.b_ks + j * v.b_js, v.b_ks, v.b_js, n, kn, trows, halves, t);
                const uint8_t *a = v.fa + r0 * v.a_rs + k0 * v.a_ks;
                int64_t a_rs = v.a_rs;
                if (packed) {
                    const int64_t step = (k0 - g->k0) % panel_k;  /* into the panel of k steps from k0 - step */
                    if (step == 0)
                        int_avx2_pack(a, a_rs, r1 - r0, g->k1 - k0 < panel_k ? g->k1 - k0 : panel_k, panel, panel_k);
                    a = panel + step;
                    a_rs = panel_k;
                }
                for (int64_t i = r0; i < r1; i += tile_rows)
                    tiles[r1 - i >= tile_rows ? tile_rows : r1 - i](a + (i - r0) * a_rs, a_rs, v.a_ks, t, trows, kn,
                                                                   raw + (i - r0) * width, k0 == chunk);
                const int64_t k1 = k0 + kn;
                if (int_chunk_ends(k1, g->k1, kb, chunk)) {
                    int_avx2_flush(g, r0, r1, j, n, halves, raw, k1 - chunk, chunk == g->k0);
                    chunk = k1;
                }
            }
        }
    }
    return AMSIM_OK;
}
