/*
 * int_gemm_cuda.cu -- the integer LUT GEMM on the GPU: C[i, j] = sum over k of LUT[a[i, k], b[k, j]], exactly.
 *
 * The device version of amsim_int_gemm (amsim/csrc/cpu/int_gemm.c; docs/gemm-internals.md, "The
 * integer GEMM"): n-bit operand patterns (1 <= n <= 8, one byte each), the circuit's (2^n x 2^n)
 * product table, row = A's pattern, looked up by amsim_int_lut_row_offset (amsim_gemm.h), the
 * lookup's one definition. Integer sums are exact and associative, so any order of accumulation,
 * any tiling and any number of blocks give the CPU's integers; the caller picks an accumulator
 * (int32, or int64 where K * max |LUT| could overflow int32) in which no sum wraps.
 *
 * Where the table lives. Every product is a data-dependent gather from the whole table, so the
 * table is staged in shared memory, which serves a warp's 32 gathers at once up to bank
 * conflicts. Its entries are 16-bit circuit outputs (amsim.gemm.int_matmul checks: signed ones in
 * int16, unsigned ones in uint16), so the staged copy is 16-bit, which is lossless and half the
 * size of int32: 32 KiB at n = 7, which every GPU holds, and 128 KiB at n = 8, which fits the
 * opt-in shared memory of sm_80 and sm_90 (an int32 copy, 256 KiB, fits none). Where the device's
 * shared memory cannot hold the copy and the tiles (smaller GPUs at n = 8), the int32 table is
 * read from global memory through the read-only cache instead: the same sums, more slowly.
 *
 * Tiling: 64 x 64 output tiles, 256 threads with 4 x 4 register blocks, k in steps of 32 through
 * shared memory tiles of the patterns; a tile's k beyond K is never read (a pad pattern would
 * add LUT[0][0]). A grid has at most AMSIM_CUDA_GRID_Y_MAX row tiles in y; each block loops
 * over its rows of tiles, so a table staged once serves them all.
 */
#include <stdint.h>

#include <amsim_gemm.h>

#include "amsim_cuda.h"
#include "launch.h"

#define IBM 64
#define IBN 64
#define IBK 32
#define ITM 4
#define ITN 4
#define ITHREADS 256

struct int_tiles {
    uint8_t a[IBK][IBM]; /* the A tile transposed: a thread's ITM rows are adjacent at each k */
    uint8_t b[IBK][IBN];
};

/* A variant of the kernel. Acc: the accumulator (int32_t or int64_t). Entry: the table's entries
 * as the kernel reads them: int16_t or uint16_t from the shared copy (SHARED), int32_t from the
 * global table otherwise. One template argument, so that a launch names it without a comma. */
template <typename AccT, typename EntryT, bool SHARED_TABLE>
struct int_variant {
    typedef AccT Acc;
    typedef EntryT Entry;
    static constexpr bool SHARED = SHARED_TABLE;
};

template <class V>
__global__ void __launch_bounds__(ITHREADS)
int_gemm_kernel(int64_t M, int64_t N, int64_t K, const uint8_t *__restrict__ a, const uint8_t *__restrict__ b,
                const int32_t *__restrict__ lut, int bits, typename V::Acc *__restrict__ c)
{
    typedef typename V::Acc Acc;
    typedef typename V::Entry Entry;
    constexpr bool SHARED = V::SHARED;
    AMSIM_DYNAMIC_SHARED(int16_t, shared_raw);
    __shared__ int_tiles tile;
    const int P = 1 << bits;
    /* Pattern bits above n are dropped, so that no byte indexes outside the table. */
    const uint8_t mask = (uint8_t)(P - 1);
    if (SHARED) {
        Entry *staged = reinterpret_cast<Entry *>(shared_raw);
        for (int t = threadIdx.x; t < P * P; t += ITHREADS)
            staged[t] = (Entry)lut[t]; /* lossless: the entries are 16-bit circuit outputs */
    }
    /* The first k step's barrier orders the staging before any lookup. */
    const Entry *table = SHARED ? reinterpret_cast<const Entry *>(shared_raw) : reinterpret_cast<const Entry *>(lut);

    const int64_t col0 = (int64_t)blockIdx.x * IBN;
    const int tr = threadIdx.x / (IBN / ITN), tc = threadIdx.x % (IBN / ITN);
    for (int64_t row0 = (int64_t)blockIdx.y * IBM; row0 < M; row0 += (int64_t)gridDim.y * IBM) {
        Acc acc[ITM][ITN];
#pragma unroll
        for (int i = 0; i < ITM; ++i)
#pragma unroll
            for (int j = 0; j < ITN; ++j)
                acc[i][j] = 0;
        for (int64_t k0 = 0; k0 < K; k0 += IBK) {
            for (int t = threadIdx.x; t < IBM * IBK; t += ITHREADS) {
                const int r = t / IBK, kk = t % IBK;
                const int64_t gr = row0 + r, gk = k0 + kk;
                tile.a[kk][r] = gr < M && gk < K ? (uint8_t)(a[gr * K + gk] & mask) : 0;
            }
            for (int t = threadIdx.x; t < IBK * IBN; t += ITHREADS) {
                const int kk = t / IBN, cc = t % IBN;
                const int64_t gk = k0 + kk, gc = col0 + cc;
                tile.b[kk][cc] = gk < K && gc < N ? (uint8_t)(b[gk * N + gc] & mask) : 0;
            }
            __syncthreads();
            const int kn = K - k0 < IBK ? (int)(K - k0) : IBK;
            for (int kk = 0; kk < kn; ++kk) {
                const Entry *row[ITM];
                int col[ITN];
#pragma unroll
                for (int i = 0; i < ITM; ++i)
                    row[i] = table + amsim_int_lut_row_offset(bits, tile.a[kk][tr * ITM + i]);
#pragma unroll
                for (int j = 0; j < ITN; ++j)
                    col[j] = tile.b[kk][tc * ITN + j];
#pragma unroll
                for (int i = 0; i < ITM; ++i)
#pragma unroll
                    for (int j = 0; j < ITN; ++j)
                        acc[i][j] += (Acc)(SHARED ? row[i][col[j]] : __ldg(row[i] + col[j]));
            }
            __syncthreads(); /* the next step may overwrite the tiles */
        }
#pragma unroll
        for (int i = 0; i < ITM; ++i)
#pragma unroll
            for (int j = 0; j < ITN; ++j) {
                const int64_t r = row0 + tr * ITM + i, cc = col0 + tc * ITN + j;
                if (r < M && cc < N)
                    c[r * N + cc] = acc[i][j];
            }
    }
}

/* Launches one variant, with `shared_bytes` of dynamic shared memory allowed first. */
template <class V>
static cudaError_t launch_int_gemm(dim3 grid, size_t shared_bytes, cudaStream_t stream, int64_t M, int64_t N,
                                   int64_t K, const uint8_t *a, const uint8_t *b, const int32_t *lut, int bits,
                                   void *c)
{
    if (V::SHARED) {
        const cudaError_t rc = cudaFuncSetAttribute(int_gemm_kernel<V>,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared_bytes);
        if (rc != cudaSuccess) {
            cudaGetLastError(); /* returned, not left for the next launch's check */
            return rc;
        }
    }
    AMSIM_LAUNCH(int_gemm_kernel<V>, grid, ITHREADS, shared_bytes, stream)(M, N, K, a, b, lut, bits,
                                                                          static_cast<typename V::Acc *>(c));
    return cudaGetLastError();
}

template <typename Acc>
static cudaError_t int_gemm(bool shared, bool is_signed, dim3 grid, size_t table_bytes, cudaStream_t stream,
                            int64_t M, int64_t N, int64_t K, const uint8_t *a, const uint8_t *b, const int32_t *lut,
                            int bits, void *c)
{
    if (!shared)
        return launch_int_gemm<int_variant<Acc, int32_t, false>>(grid, 0, stream, M, N, K, a, b, lut, bits, c);
    if (is_signed)
        return launch_int_gemm<int_variant<Acc, int16_t, true>>(grid, table_bytes, stream, M, N, K, a, b, lut,
                                                                bits, c);
    return launch_int_gemm<int_variant<Acc, uint16_t, true>>(grid, table_bytes, stream, M, N, K, a, b, lut, bits,
                                                             c);
}

/* The most shared memory a block of this device may have (its opt-in limit), at most AMSIM_CUDA_SHARED_MAX. */
static size_t shared_per_block(void)
{
    int device = 0, optin = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
        cudaGetLastError();
        return 0; /* unknown: the read-only cache path, which needs none */
    }
    return (size_t)(optin < AMSIM_CUDA_SHARED_MAX ? optin : AMSIM_CUDA_SHARED_MAX);
}

extern "C" int amsim_cuda_int_gemm(const int32_t *lut, int bits, int is_signed, int64_t M, int64_t N, int64_t K,
                                   const uint8_t *a, const uint8_t *b, void *c, int wide, void *stream)
{
    if (bits < 1 || bits > 8 || M < 0 || N < 0 || K < 0 || (wide != 0 && wide != 1) ||
        (is_signed != 0 && is_signed != 1))
        return (int)cudaErrorInvalidValue;
    if (M == 0 || N == 0)
        return 0;
    const int64_t row_tiles = (M + IBM - 1) / IBM, col_tiles = (N + IBN - 1) / IBN;
    if (col_tiles > 0x7FFFFFFF)
        return (int)cudaErrorInvalidValue; /* beyond a grid's x */
    const dim3 grid((unsigned)col_tiles,
                    (unsigned)(row_tiles < AMSIM_CUDA_GRID_Y_MAX ? row_tiles : AMSIM_CUDA_GRID_Y_MAX));
    const size_t table_bytes = sizeof(int16_t) << (2 * bits);
    const bool shared = table_bytes + sizeof(int_tiles) <= shared_per_block();
    const cudaStream_t s = (cudaStream_t)stream;
    if (wide)
        return (int)int_gemm<int64_t>(shared, is_signed, grid, table_bytes, s, M, N, K, a, b, lut, bits, c);
    return (int)int_gemm<int32_t>(shared, is_signed, grid, table_bytes, s, M, N, K, a, b, lut, bits, c);
}
