/*
 * launch.h -- what amsim's CUDA sources need beyond CUDA itself, spelled once for both compilers:
 * nvcc, which builds them for a GPU, and g++, which builds the same files against amsim's CPU
 * emulation (emulation/cuda_runtime.h). No kernel is written twice.
 *
 *   AMSIM_LAUNCH(kernel, grid, block, shared_bytes, stream)(args...)
 *       a kernel launch: kernel<<<grid, block, shared_bytes, stream>>>(args...) under nvcc;
 *   AMSIM_DYNAMIC_SHARED(type, name)
 *       the block's dynamic shared array, sized by the launch (extern __shared__ type name[]);
 *   AMSIM_MUTANT(NAME)
 *       the verification switches: 0 in every shipped build;
 *   AMSIM_CUDA_GRID_Y_MAX, AMSIM_CUDA_SHARED_MAX
 *       the device limits the GEMMs plan their grids and shared memory with.
 */
#ifndef AMSIM_CUDA_LAUNCH_H
#define AMSIM_CUDA_LAUNCH_H

#include <cuda_runtime.h>

#ifdef AMSIM_CUDA_EMULATION
#define AMSIM_LAUNCH(kernel, grid, block, shared_bytes, stream) \
    ::amsim_emu::make_launcher(#kernel, kernel, grid, block, shared_bytes, stream)
#define AMSIM_DYNAMIC_SHARED(type, name) type *const name = static_cast<type *>(::amsim_emu::dynamic_shared())
#else
#define AMSIM_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<grid, block, shared_bytes, stream>>>
#define AMSIM_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

/*
 * Deliberately broken variants of the kernels, which prove that the emulated comparison with the
 * CPU engine catches each kind of bug (tests/test_cuda.py builds one per switch with
 * -DAMSIM_CUDA_MUTANT=AMSIM_MUTANT_<NAME>). Outside those test builds AMSIM_MUTANT(NAME) is the
 * constant 0, so the compiler drops every broken branch; nvcc refuses the switch outright.
 */
#define AMSIM_MUTANT_DROPPED_SYNC 1   /* the barrier between loading a tile and reading it */
#define AMSIM_MUTANT_REVERSED_SUM 2   /* a tile's products added in decreasing k */
#define AMSIM_MUTANT_SHUFFLE_OFFSET 3 /* the exponent range's warp reduction starts at offset 8 */
#define AMSIM_MUTANT_TILE_BOUND 4     /* the A tile's load bound off by one in k */

#ifdef AMSIM_CUDA_MUTANT
#ifndef AMSIM_CUDA_EMULATION
#error "AMSIM_CUDA_MUTANT builds broken kernels for the emulated tests only"
#endif
#define AMSIM_MUTANT(name) (AMSIM_CUDA_MUTANT == AMSIM_MUTANT_##name)
#else
#define AMSIM_MUTANT(name) 0
#endif

/*
 * The most blocks a grid may have in y (CUDA's limit): a GEMM with more row tiles loops over them.
 * The emulated tests build with a smaller value, so that the loop runs on small shapes.
 */
#ifndef AMSIM_CUDA_GRID_Y_MAX
#define AMSIM_CUDA_GRID_Y_MAX 65535
#endif

/*
 * A cap on the shared memory per block that a kernel plans with, below the device's opt-in limit
 * (cudaDevAttrMaxSharedMemoryPerBlockOptin), which is used whenever it is smaller. No cap in a
 * shipped build; the emulated tests build with a small one, so that the integer GEMM's path for
 * devices whose shared memory cannot hold its table runs too.
 */
#ifndef AMSIM_CUDA_SHARED_MAX
#define AMSIM_CUDA_SHARED_MAX (1 << 30)
#endif

#endif /* AMSIM_CUDA_LAUNCH_H */
