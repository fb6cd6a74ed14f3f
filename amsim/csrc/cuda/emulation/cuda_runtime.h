/*
 * cuda_runtime.h -- amsim's CPU emulation of the part of CUDA that its kernels use.
 *
 * The .cu files of amsim/csrc/cuda compile with g++ against this header (it is first on
 * the include path of the emulated build, amsim.gemm.cuda.build_emulated), so the very code nvcc
 * compiles for a GPU runs on the CPU and can be compared with the CPU engine bit for bit on every
 * test run. docs/gemm-internals.md ("The CUDA emulation") describes it and what it cannot see.
 *
 * The execution model (runtime.cc):
 *   - a launch runs to completion before it returns, so launches on any stream complete in the
 *     order they were made (a valid schedule of CUDA's stream semantics);
 *   - the blocks of a grid are shared among a pool of OS threads; each OS thread runs one block at
 *     a time, its threads as cooperative fibers (Boost.Context), so that __syncthreads() is a real
 *     barrier that every thread of the block must reach, and warp shuffles exchange values among
 *     32 lanes that have all arrived;
 *   - static __shared__ variables are thread_local, hence one per block in flight; the dynamic
 *     shared array (AMSIM_DYNAMIC_SHARED, launch.h) is a per-block buffer of the launch's size,
 *     filled with 0xFF bytes (NaN floats) at the start of each block, so reads before writes show;
 *   - launches are checked as CUDA checks them (threads per block, grid and block dimensions,
 *     dynamic shared memory against the kernel's attribute and the declared device), returning
 *     CUDA's error codes through cudaGetLastError; a barrier or shuffle that not every thread
 *     named reaches fails the launch (cudaErrorLaunchFailure) instead of hanging;
 *   - device memory is host memory with guard bytes on both sides; a kernel that wrote past an
 *     allocation is reported by cudaFree and cudaDeviceSynchronize (cudaErrorIllegalAddress).
 *
 * Float arithmetic is the host's IEEE single precision, compiled with -ffp-contract=off so that no
 * multiply and add are fused behind the code's back: __fmul_rn and friends round as CUDA's do.
 */
#ifndef AMSIM_EMULATED_CUDA_RUNTIME_H
#define AMSIM_EMULATED_CUDA_RUNTIME_H

#ifdef __CUDACC__
#error "emulation/cuda_runtime.h is for g++ builds of the CUDA sources; nvcc uses the toolkit's"
#endif

#define AMSIM_CUDA_EMULATION 1

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- language extensions ---------------------------------------------------------------- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
/* One instance per OS thread, and an OS thread runs one block at a time: one per block. */
#define __shared__ static thread_local

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

/* ---- runtime types: CUDA's names and codes ------------------------------------------------ */

enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxBlockDimX = 2,
    cudaDevAttrMaxBlockDimY = 3,
    cudaDevAttrMaxBlockDimZ = 4,
    cudaDevAttrMaxGridDimX = 5,
    cudaDevAttrMaxGridDimY = 6,
    cudaDevAttrMaxGridDimZ = 7,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

typedef struct CUstream_st *cudaStream_t;

/* ---- the emulator's interface (runtime.cc) ------------------------------------------------ */

namespace amsim_emu {

/* The index of the calling fiber's thread in its block. */
const uint3 &thread_index();
extern thread_local uint3 block_index;
extern thread_local dim3 block_dim, grid_dim;

void sync_threads();
enum shuffle_kind { SHFL_DOWN, SHFL_UP, SHFL_XOR, SHFL_IDX };
uint64_t shuffle(unsigned mask, uint64_t value, shuffle_kind kind, int arg, int width, const char *name);
void *dynamic_shared();

/* Runs body(closure) in every thread of every block; the launch checks first. */
void launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
            void (*body)(void *), void *closure);
cudaError_t set_function_attribute(const void *kernel, cudaFuncAttribute attr, int value);

/* kernel<<<grid, block, shared_bytes, stream>>>(args...): the arguments are converted to the
 * kernel's parameter types once, as CUDA copies them, and each thread calls the kernel with them. */
template <typename... P>
struct launcher {
    const char *name;
    void (*kernel)(P...);
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;

    template <typename... A>
    void operator()(A &&...args) const
    {
        static_assert(sizeof...(A) == sizeof...(P), "a kernel launch with the wrong number of arguments");
        std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
        struct call {
            void (*kernel)(P...);
            std::tuple<std::decay_t<P>...> *params;
            static void run(void *self)
            {
                call *c = static_cast<call *>(self);
                std::apply(c->kernel, *c->params);
            }
        } c{kernel, &params};
        launch(name, reinterpret_cast<const void *>(kernel), grid, block, shared_bytes, stream, &call::run, &c);
    }
};

template <typename... P>
launcher<P...> make_launcher(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, size_t shared_bytes,
                             cudaStream_t stream)
{
    return launcher<P...>{name, kernel, grid, block, shared_bytes, stream};
}

template <typename T>
uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffle of an unsupported type");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    return u;
}

template <typename T>
T from_bits(uint64_t u)
{
    T v;
    memcpy(&v, &u, sizeof v);
    return v;
}

template <typename T>
T atomic_update(T *address, T value, T (*op)(T, T))
{
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(address, &old, op(old, value), true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}

} /* namespace amsim_emu */

/* ---- built-in variables ------------------------------------------------------------------- */

#define threadIdx (::amsim_emu::thread_index())
#define blockIdx (::amsim_emu::block_index)
#define blockDim (::amsim_emu::block_dim)
#define gridDim (::amsim_emu::grid_dim)
#define warpSize 32

/* ---- device functions --------------------------------------------------------------------- */

inline void __syncthreads() { ::amsim_emu::sync_threads(); }

template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize)
{
    return amsim_emu::from_bits<T>(
        amsim_emu::shuffle(mask, amsim_emu::to_bits(var), amsim_emu::SHFL_DOWN, (int)delta, width, "__shfl_down_sync"));
}

template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize)
{
    return amsim_emu::from_bits<T>(
        amsim_emu::shuffle(mask, amsim_emu::to_bits(var), amsim_emu::SHFL_UP, (int)delta, width, "__shfl_up_sync"));
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize)
{
    return amsim_emu::from_bits<T>(
        amsim_emu::shuffle(mask, amsim_emu::to_bits(var), amsim_emu::SHFL_XOR, lane_mask, width, "__shfl_xor_sync"));
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize)
{
    return amsim_emu::from_bits<T>(
        amsim_emu::shuffle(mask, amsim_emu::to_bits(var), amsim_emu::SHFL_IDX, src_lane, width, "__shfl_sync"));
}

/* Atomics are real atomics: the blocks of a grid run on several OS threads. They return the old
 * value, as CUDA's do. */
template <typename T>
T atomicAdd(T *address, T value)
{
    return amsim_emu::atomic_update<T>(address, value, [](T a, T b) { return (T)(a + b); });
}

template <typename T>
T atomicMin(T *address, T value)
{
    return amsim_emu::atomic_update<T>(address, value, [](T a, T b) { return b < a ? b : a; });
}

template <typename T>
T atomicMax(T *address, T value)
{
    return amsim_emu::atomic_update<T>(address, value, [](T a, T b) { return b > a ? b : a; });
}

template <typename T>
T atomicExch(T *address, T value)
{
    return __atomic_exchange_n(address, value, __ATOMIC_SEQ_CST);
}

template <typename T>
T atomicCAS(T *address, T compare, T value)
{
    __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}

/* CUDA's min and max take mixed integer types; std::common_type gives the same result type. */
template <typename T, typename U>
inline std::common_type_t<T, U> min(T a, U b)
{
    return b < a ? b : a;
}

template <typename T, typename U>
inline std::common_type_t<T, U> max(T a, U b)
{
    return b > a ? b : a;
}

template <typename T>
inline T __ldg(const T *address)
{
    return *address;
}

/* Round-to-nearest float operations: plain IEEE single precision, never contracted. */
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }

inline unsigned __float_as_uint(float x) { return amsim_emu::from_bits<unsigned>(amsim_emu::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return amsim_emu::from_bits<float>(amsim_emu::to_bits(x)); }
inline int __float_as_int(float x) { return amsim_emu::from_bits<int>(amsim_emu::to_bits(x)); }
inline float __int_as_float(int x) { return amsim_emu::from_bits<float>(amsim_emu::to_bits(x)); }

/* ---- runtime API ---------------------------------------------------------------------------- */

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaMalloc(void **ptr, size_t bytes);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t error);

template <typename F>
cudaError_t cudaFuncSetAttribute(F *kernel, cudaFuncAttribute attr, int value)
{
    return amsim_emu::set_function_attribute(reinterpret_cast<const void *>(kernel), attr, value);
}

#endif /* AMSIM_EMULATED_CUDA_RUNTIME_H */
