/*
 * lut_prep.c -- a LUT made ready for the kernels (struct amsim_lut): the table in both
 * orientations, the fast kernels' prepared layout of each, and what the planner needs to know.
 *
 * The prepared layout, made once per LUT rather than once per call (at M = 7 it is as much work
 * as a small GEMM), 64-byte aligned:
 *   - the rows as floats, row p at plut + p * lut_stride(m): at least 32 entries (two vectors
 *     for vpermt2ps), zeros past 2^M;
 *   - then, where the kernels use AVX512-VBMI, the rows again as four byte planes (plane b holds
 *     byte b of every entry) of plane_width(m) bytes, so that vpermi2b looks up 64 entries at
 *     once (vbmi_lookup64), and a 64-byte trailer whose first int says whether the low two
 *     planes are zero in every entry (HI16: entries that are bfloat16 values, as for many
 *     designs at M = 7); the lookups then skip them, and below M = 8 the kernels take such a
 *     LUT with bfloat16 dot products (amsim_lut.dot_products).
 */
#include "engine.h"

static int lut_stride(int m)
{
    return m < 5 ? 32 : 1 << m;
}

static int plane_width(int m)
{
    return m <= 7 ? 128 : 256;
}

static size_t float_rows_bytes(int m)
{
    return sizeof(float) * ((size_t)1 << m) * (size_t)lut_stride(m);
}

static size_t planes_bytes(int m)
{
    return (AMSIM_VBMI && m <= FAST_MAX_BITS) ? ((size_t)1 << m) * 4 * (size_t)plane_width(m) : 0;
}

static size_t prepared_bytes(int m)
{
    return float_rows_bytes(m) + (planes_bytes(m) ? planes_bytes(m) + 64 : 0);
}

/* Whether the kernels look a prepared LUT up in two byte planes (its HI16 flag; byte planes
 * only). Not at M = 8, where bfloat16 entries are rare: one form less to build. */
static int lut_hi16(const void *plut, int m)
{
    return AMSIM_VBMI && m < 8 && *(const int32_t *)((const uint8_t *)plut + float_rows_bytes(m) + planes_bytes(m));
}

static void prepare_lut(const float *lut, int m, void *out)
{
    const int64_t P = (int64_t)1 << m, stride = lut_stride(m);
    float *rows = out;
    for (int64_t p = 0; p < P; ++p)
        for (int64_t e = 0; e < stride; ++e)
            rows[p * stride + e] = e < P ? lut[p * P + e] : 0.0f;
    if (prepared_bytes(m) == float_rows_bytes(m))
        return;
    uint8_t *planes = (uint8_t *)out + float_rows_bytes(m);
    const int64_t w = plane_width(m);
    int32_t hi16 = 1;
    for (int64_t p = 0; p < P; ++p)
        for (int b = 0; b < 4; ++b)
            for (int64_t e = 0; e < w; ++e) {
                planes[(p * 4 + b) * w + e] = e < P ? (uint8_t)(amsim_f2u(lut[p * P + e]) >> (8 * b)) : 0;
                hi16 &= b >= 2 || planes[(p * 4 + b) * w + e] == 0;
            }
    uint8_t *trailer = planes + planes_bytes(m);
    memset(trailer, 0, 64);
    memcpy(trailer, &hi16, sizeof hi16);
}

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

size_t amsim_lut_storage_bytes(int m)
{
    if (m < 0 || m > MAX_LUT_BITS)
        return 0;
    /* Wider LUTs (up to 64 MiB) serve only the direct kernel, which never swaps the operands:
     * they are kept in one orientation. */
    const size_t table = align64(sizeof(float) << (2 * m));
    return table + (m <= FAST_MAX_BITS ? table + 2 * align64(prepared_bytes(m)) : 0);
}

/*
 * The fast kernels take a LUT whose entries are all positive and finite (M <= 8): the products
 * they form by two float32 multiplications are then the exact ones inside the window
 * (amsim_window_exact), and zero, inf and NaN operands propagate through them as numerics.md
 * section 2.2 says. Zero or negative entries would not (an inf operand times a zero entry must
 * give inf, not NaN).
 */
int amsim_lut_init(struct amsim_lut *lut, const float *table, int m, void *storage)
{
    if (!lut || !table || !storage || m < 0 || m > MAX_LUT_BITS || ((uintptr_t)storage & 63))
        return AMSIM_ERR_ARGS;
    const int64_t P = (int64_t)1 << m;
    const size_t table_bytes = align64(sizeof(float) << (2 * m));
    const int small = m <= FAST_MAX_BITS;
    float *t0 = storage, *t1 = small ? (float *)((uint8_t *)storage + table_bytes) : NULL;
    memcpy(t0, table, sizeof(float) * (size_t)(P * P));
    int fast = small, lo = 255, hi = 0;
    for (int64_t i = 0; i < P; ++i)
        for (int64_t j = 0; j < P; ++j) {
            const float v = t0[i * P + j];
            if (small)
                t1[j * P + i] = v;
            const int e = (int)((amsim_f2u(v) >> 23) & 0xFFu);
            fast &= v > 0.0f && e != 0xFF;
            lo = e < lo ? e : lo;
            hi = e > hi ? e : hi;
        }
    lut->m = m;
    lut->fast = fast;
    lut->v_lo = lo;
    lut->v_hi = hi;
    lut->table[0] = t0;
    lut->table[1] = t1;
    lut->prepared[0] = lut->prepared[1] = NULL;
    lut->dot_products = 0;
    if (fast) {
        uint8_t *p0 = (uint8_t *)t1 + table_bytes, *p1 = p0 + align64(prepared_bytes(m));
        prepare_lut(t0, m, p0);
        prepare_lut(t1, m, p1);
        lut->prepared[0] = p0;
        lut->prepared[1] = p1;
        /* the HI16 flag is one of the set of entries, the same in both orientations */
        lut->dot_products = AMSIM_DPBF16 && lut_hi16(p0, m);
    }
    return AMSIM_OK;
}

/* Whether this build has the bfloat16 dot-product kernels (used for HI16 LUTs in their window). */
int amsim_dot_products(void)
{
    return AMSIM_DPBF16;
}
