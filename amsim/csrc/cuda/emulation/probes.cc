/*
 * probes.cc -- small kernels that test the emulator itself (tests/test_cuda.py), linked into the
 * emulated library only: index arithmetic over 3-D grids, shared memory behind a barrier, warp
 * shuffles, atomics across blocks, and launches that CUDA refuses or that cannot finish.
 * Each entry point returns the launch's cudaGetLastError(), as amsim_cuda.h's functions do.
 */
#include "cuda_runtime.h"

#include "launch.h"

namespace {

/* out[g] for the thread of global index g: the global index of its mirror in the same block,
 * (threads - 1 - t), read from the block's dynamic shared memory after a barrier when the launch
 * gave it room, else g itself. */
__global__ void probe_index_kernel(int32_t *out, size_t shared_bytes)
{
    AMSIM_DYNAMIC_SHARED(int32_t, mirror);
    const int threads = (int)(blockDim.x * blockDim.y * blockDim.z);
    const int t = (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    const int64_t block = blockIdx.x + (int64_t)gridDim.x * (blockIdx.y + (int64_t)gridDim.y * blockIdx.z);
    const int64_t g = block * threads + t;
    const bool shared = shared_bytes >= sizeof(int32_t) * threads;
    if (shared)
        mirror[t] = (int32_t)g;
    __syncthreads();
    if (out)
        out[g] = shared ? mirror[threads - 1 - t] : (int32_t)g;
}

__global__ void probe_divergent_barrier_kernel(int exit_thread)
{
    if ((int)threadIdx.x == exit_thread)
        return;
    __syncthreads();
}

__global__ void probe_shuffle_kernel(int kind, int arg, int width, unsigned mask, int32_t *out)
{
    const int lane = (int)threadIdx.x;
    const int32_t value = 100 + lane;
    if (!(mask >> lane & 1u)) {
        out[lane] = -1;
        return;
    }
    switch (kind) {
    case 0: out[lane] = __shfl_down_sync(mask, value, (unsigned)arg, width); break;
    case 1: out[lane] = __shfl_up_sync(mask, value, (unsigned)arg, width); break;
    case 2: out[lane] = __shfl_xor_sync(mask, value, arg, width); break;
    default: out[lane] = __shfl_sync(mask, value, arg, width); break;
    }
}

/* out[0] += 1, out[1] = min, out[2] = max over every thread's global index. */
__global__ void probe_atomics_kernel(int32_t *out)
{
    const int32_t g = (int32_t)(blockIdx.x * blockDim.x + threadIdx.x);
    atomicAdd(out, 1);
    atomicMin(out + 1, g);
    atomicMax(out + 2, g);
}

}  // namespace

extern "C" {

int amsim_emu_probe_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                           size_t shared_bytes, int32_t *out)
{
    AMSIM_LAUNCH(probe_index_kernel, dim3(gx, gy, gz), dim3(bx, by, bz), shared_bytes, 0)(out, shared_bytes);
    return (int)cudaGetLastError();
}

int amsim_emu_probe_set_shared_limit(int bytes)
{
    const cudaError_t rc = cudaFuncSetAttribute(probe_index_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    cudaGetLastError();
    return (int)rc;
}

int amsim_emu_probe_divergent_barrier(unsigned threads, int exit_thread)
{
    AMSIM_LAUNCH(probe_divergent_barrier_kernel, 1, threads, 0, 0)(exit_thread);
    return (int)cudaGetLastError();
}

int amsim_emu_probe_shuffle(int kind, int arg, int width, unsigned mask, int32_t *out)
{
    AMSIM_LAUNCH(probe_shuffle_kernel, 1, 32, 0, 0)(kind, arg, width, mask, out);
    return (int)cudaGetLastError();
}

int amsim_emu_probe_atomics(unsigned blocks, unsigned threads, int32_t *out)
{
    AMSIM_LAUNCH(probe_atomics_kernel, blocks, threads, 0, 0)(out);
    return (int)cudaGetLastError();
}

}  // extern "C"
