/*
 * runtime.cc -- the CPU emulation's scheduler, memory and runtime API (cuda_runtime.h beside it
 * says what is emulated and how).
 *
 * A launch: the calling thread checks the configuration as CUDA does, then it and the pool's
 * worker threads take blocks in turn until the grid is done. A block runs on one OS thread: one
 * fiber per CUDA thread, resumed round-robin; a fiber runs until it waits (at a barrier or a
 * shuffle) or returns. A round in which no fiber arrived anywhere, left a wait or returned is a
 * deadlock: some thread will never reach what the others wait for. The block then fails with a
 * message naming the kernel, the block and the wait, and the launch returns
 * cudaErrorLaunchFailure.
 */
#include "cuda_runtime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/context/fiber.hpp>

namespace amsim_emu {

thread_local uint3 block_index;
thread_local dim3 block_dim, grid_dim;

namespace {

namespace bctx = boost::context;

/* ---- the declared device: an A100's limits (compute capability 8.0) ------------------------ */

constexpr int kCapabilityMajor = 8, kCapabilityMinor = 0;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned kMaxGridDim[3] = {2147483647u, 65535u, 65535u};
constexpr int kSharedPerBlock = 48 * 1024;         /* a kernel's dynamic shared memory by default */
constexpr int kSharedPerBlockOptin = 163 * 1024;   /* the most cudaFuncSetAttribute may allow */
constexpr int kMultiprocessors = 108;
constexpr int kWarp = 32;

/* ---- errors: the last one per host thread, as CUDA keeps it ------------------------------ */

thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string last_detail;

cudaError_t fail(cudaError_t code, const std::string &detail)
{
    last_error = code;
    last_detail = detail;
    return code;
}

std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char *fmt, ...)
{
    char buf[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    return buf;
}

/* ---- fiber stacks, reused: a block creates one fiber per thread --------------------------- */

constexpr size_t kStackBytes = 128 * 1024;

struct stack_cache {
    std::vector<bctx::stack_context> free;
    ~stack_cache()
    {
        for (bctx::stack_context &sc : free)
            munmap(static_cast<char *>(sc.sp) - sc.size - getpagesize(), sc.size + getpagesize());
    }
};

thread_local stack_cache stacks;

/* Boost.Context's StackAllocator: stacks with a guard page below, so an overflow faults at once. */
struct pooled_stack {
    bctx::stack_context allocate()
    {
        if (!stacks.free.empty()) {
            bctx::stack_context sc = stacks.free.back();
            stacks.free.pop_back();
            return sc;
        }
        const size_t page = getpagesize();
        void *base = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED)
            throw std::bad_alloc();
        mprotect(base, page, PROT_NONE);
        bctx::stack_context sc;
        sc.size = kStackBytes;
        sc.sp = static_cast<char *>(base) + page + kStackBytes;
        return sc;
    }
    void deallocate(bctx::stack_context &sc) noexcept { stacks.free.push_back(sc); }
};

/* ---- blocks --------------------------------------------------------------------------------- */

struct lane_fault {};  /* thrown inside a fiber that broke a rule; the block then fails */

struct lane {
    uint3 index;
    int linear = 0;
    bool done = false;
    const char *waiting = nullptr;  /* what it waits at, for a deadlock's message */
    bctx::fiber fiber;              /* the thread, while it is suspended */
    bctx::fiber scheduler;          /* the block's scheduler, while the thread runs */
};

struct warp_state {
    unsigned arrived = 0, mask = 0, generation = 0;
    uint64_t slots[2][kWarp];  /* by generation parity: a fast lane cannot overwrite a slow one's */
};

struct block_state {
    const char *kernel = nullptr;
    std::vector<lane> lanes;
    std::vector<warp_state> warps;
    int barrier_arrived = 0;
    unsigned barrier_generation = 0;
    bool progress = false;
    std::string fault;
};

thread_local block_state *current_block = nullptr;
thread_local lane *current_lane = nullptr;
thread_local std::vector<unsigned char> shared_buffer;

std::string where(const block_state &b)
{
    return format("kernel %s, block (%u,%u,%u)", b.kernel, block_index.x, block_index.y, block_index.z);
}

[[noreturn]] void lane_error(const std::string &what)
{
    block_state &b = *current_block;
    if (b.fault.empty())
        b.fault = where(b) + format(", thread %d: ", current_lane->linear) + what;
    throw lane_fault();
}

/* Suspends the calling fiber until the scheduler resumes it. */
void wait_a_round(const char *at)
{
    lane &l = *current_lane;
    l.waiting = at;
    l.scheduler = std::move(l.scheduler).resume();
    l.waiting = nullptr;
}

std::string deadlock_message(const block_state &b)
{
    int exited = 0, at_barrier = 0;
    std::string other;
    for (const lane &l : b.lanes) {
        if (l.done)
            ++exited;
        else if (l.waiting && strcmp(l.waiting, "__syncthreads") == 0)
            ++at_barrier;
        else if (other.empty() && l.waiting)
            other = format("; thread %d waits at %s for lanes of its warp that never arrive", l.linear, l.waiting);
    }
    return where(b) + format(": deadlock: %d of %zu threads wait at __syncthreads(), %d have exited%s "
                             "(every thread of a block must reach each barrier)",
                             at_barrier, b.lanes.size(), exited, other.c_str());
}

/* Runs one block to completion; returns its fault ("" when it ran correctly). */
std::string run_block(const char *kernel, void (*body)(void *), void *closure)
{
    block_state b;
    b.kernel = kernel;
    const int threads = (int)(block_dim.x * block_dim.y * block_dim.z);
    b.lanes.resize(threads);
    b.warps.resize((threads + kWarp - 1) / kWarp);
    for (int t = 0; t < threads; ++t) {
        lane &l = b.lanes[t];
        l.linear = t;
        l.index = uint3{t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
        l.fiber = bctx::fiber(std::allocator_arg, pooled_stack(), [&l, body, closure](bctx::fiber &&scheduler) {
            l.scheduler = std::move(scheduler);
            try {
                body(closure);
            } catch (const lane_fault &) {
            }
            l.done = true;
            current_block->progress = true;
            return std::move(l.scheduler);
        });
    }
    current_block = &b;
    for (int live = threads; live > 0 && b.fault.empty();) {
        b.progress = false;
        live = 0;
        for (lane &l : b.lanes) {
            if (l.done)
                continue;
            current_lane = &l;
            l.fiber = std::move(l.fiber).resume();
            if (!b.fault.empty())
                break;
            live += !l.done;
        }
        if (live > 0 && !b.progress && b.fault.empty())
            b.fault = deadlock_message(b);
    }
    current_lane = nullptr;
    /* Fibers still suspended (after a fault) unwind their stacks as b.lanes is destroyed. */
    std::string fault = std::move(b.fault);
    b.lanes.clear();
    current_block = nullptr;
    return fault;
}

/* ---- the pool of OS threads that run blocks ------------------------------------------------ */

struct grid_job {
    const char *kernel;
    void (*body)(void *);
    void *closure;
    dim3 grid, block;
    size_t shared_bytes;
    uint64_t blocks;
    std::atomic<uint64_t> next{0};
    std::mutex mu;
    std::string fault;  /* the first block's fault */
};

void run_blocks(grid_job &job)
{
    grid_dim = job.grid;
    block_dim = job.block;
    shared_buffer.resize(std::max<size_t>(job.shared_bytes, 1));
    for (uint64_t i; (i = job.next.fetch_add(1)) < job.blocks;) {
        block_index = uint3{(unsigned)(i % job.grid.x), (unsigned)((i / job.grid.x) % job.grid.y),
                            (unsigned)(i / ((uint64_t)job.grid.x * job.grid.y))};
        memset(shared_buffer.data(), 0xFF, job.shared_bytes);
        std::string fault;
        try {
            fault = run_block(job.kernel, job.body, job.closure);
        } catch (const std::exception &exc) {  /* fiber stacks: out of memory */
            fault = format("kernel %s: the emulator could not run a block: %s", job.kernel, exc.what());
        }
        if (!fault.empty()) {
            std::lock_guard<std::mutex> lock(job.mu);
            if (job.fault.empty())
                job.fault = std::move(fault);
            job.next.store(job.blocks);  /* no further blocks */
        }
    }
}

class block_pool {
public:
    /* One launch at a time, from any host thread: launches complete in the order they were made. */
    std::mutex launch_mu;

    void run(grid_job &job)
    {
        start_workers();
        {
            std::lock_guard<std::mutex> lock(mu_);
            job_ = &job;
            ++generation_;
            running_ = (int)workers_;
        }
        wake_.notify_all();
        run_blocks(job);
        std::unique_lock<std::mutex> lock(mu_);
        done_.wait(lock, [&] { return running_ == 0; });
        job_ = nullptr;
    }

private:
    std::mutex mu_;
    std::condition_variable wake_, done_;
    grid_job *job_ = nullptr;
    uint64_t generation_ = 0;
    int running_ = 0;
    size_t workers_ = 0;
    bool started_ = false;

    /* AMSIM_CUDA_EMULATION_THREADS OS threads in all (the caller and the workers); by default
     * one per CPU. Results never depend on it: blocks share nothing but atomics and memory that
     * the kernels write once. */
    void start_workers()
    {
        if (started_)
            return;
        started_ = true;
        const char *env = getenv("AMSIM_CUDA_EMULATION_THREADS");
        long threads = env && *env ? strtol(env, nullptr, 10) : (long)std::thread::hardware_concurrency();
        threads = std::max(1L, std::min(threads, 256L));
        workers_ = (size_t)threads - 1;
        for (size_t i = 0; i < workers_; ++i)
            std::thread([this] { work(); }).detach();  /* the pool lives as long as the process */
    }

    void work()
    {
        uint64_t seen = 0;
        for (;;) {
            grid_job *job;
            {
                std::unique_lock<std::mutex> lock(mu_);
                wake_.wait(lock, [&] { return generation_ != seen; });
                seen = generation_;
                job = job_;
            }
            run_blocks(*job);
            std::lock_guard<std::mutex> lock(mu_);
            if (--running_ == 0)
                done_.notify_all();
        }
    }
};

block_pool &pool()
{
    static block_pool *p = new block_pool;  /* never destroyed: detached workers wait on it */
    return *p;
}

/* ---- kernel attributes --------------------------------------------------------------------- */

std::mutex attr_mu;
std::map<const void *, int> max_dynamic_shared;  /* cudaFuncAttributeMaxDynamicSharedMemorySize */

int dynamic_shared_limit(const void *kernel)
{
    std::lock_guard<std::mutex> lock(attr_mu);
    auto it = max_dynamic_shared.find(kernel);
    return it == max_dynamic_shared.end() ? kSharedPerBlock : it->second;
}

/* ---- device memory: host memory between guard bytes ------------------------------------------ */

constexpr size_t kGuard = 256;  /* also CUDA's allocation alignment */
constexpr unsigned char kGuardByte = 0xA5;

struct allocation {
    size_t bytes;
};

std::mutex mem_mu;
std::map<uintptr_t, allocation> allocations;  /* by the pointer handed out */

bool guards_intact(uintptr_t p, const allocation &a)
{
    const unsigned char *user = reinterpret_cast<const unsigned char *>(p);
    for (size_t i = 0; i < kGuard; ++i)
        if (user[-(ptrdiff_t)kGuard + (ptrdiff_t)i] != kGuardByte || user[a.bytes + i] != kGuardByte)
            return false;
    return true;
}

/* True when [p, p + bytes) lies inside one allocation. Called with mem_mu held. */
bool inside_allocation(const void *ptr, size_t bytes)
{
    const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
    auto it = allocations.upper_bound(p);
    if (it == allocations.begin())
        return false;
    --it;
    return p >= it->first && p + bytes <= it->first + it->second.bytes;
}

cudaError_t check_guards()
{
    std::lock_guard<std::mutex> lock(mem_mu);
    for (const auto &entry : allocations)
        if (!guards_intact(entry.first, entry.second))
            return fail(cudaErrorIllegalAddress,
                        format("a kernel wrote outside the %zu-byte allocation at %#lx", entry.second.bytes,
                               (unsigned long)entry.first));
    return cudaSuccess;
}

}  /* namespace */

/* ---- what the kernels call ------------------------------------------------------------------- */

const uint3 &thread_index() { return current_lane->index; }

void *dynamic_shared() { return shared_buffer.data(); }

void sync_threads()
{
    block_state &b = *current_block;
    const unsigned generation = b.barrier_generation;
    b.progress = true;
    if (++b.barrier_arrived == (int)b.lanes.size()) {
        b.barrier_arrived = 0;
        ++b.barrier_generation;
        return;
    }
    while (b.barrier_generation == generation)
        wait_a_round("__syncthreads");
    b.progress = true;
}

uint64_t shuffle(unsigned mask, uint64_t value, shuffle_kind kind, int arg, int width, const char *name)
{
    block_state &b = *current_block;
    const int t = current_lane->linear, lane_id = t % kWarp;
    warp_state &w = b.warps[t / kWarp];
    const int lanes_in_warp = std::min(kWarp, (int)b.lanes.size() - (t / kWarp) * kWarp);
    if (width <= 0 || width > kWarp || (width & (width - 1)))
        lane_error(format("%s: width %d is not a power of two up to 32", name, width));
    if (!(mask >> lane_id & 1u))
        lane_error(format("%s: called by lane %d, which its mask %#x does not name", name, lane_id, mask));
    if (lanes_in_warp < kWarp && (mask >> lanes_in_warp))
        lane_error(format("%s: mask %#x names lanes of a warp that has only %d", name, mask, lanes_in_warp));
    if (w.arrived == 0)
        w.mask = mask;
    else if (w.mask != mask)
        lane_error(format("%s: lanes of one warp pass different masks (%#x, %#x)", name, w.mask, mask));
    const unsigned parity = w.generation & 1u, generation = w.generation;
    w.slots[parity][lane_id] = value;
    w.arrived |= 1u << lane_id;
    b.progress = true;
    if (w.arrived == mask) {
        w.arrived = 0;
        ++w.generation;
    } else {
        while (w.generation == generation)
            wait_a_round(name);
        b.progress = true;
    }
    /* CUDA's rules: the source lane is computed within the lane's segment of `width` lanes; a
     * down or up shuffle whose source leaves the segment returns the lane's own value. */
    const int segment = lane_id & ~(width - 1), in_segment = lane_id - segment;
    int source = lane_id;
    switch (kind) {
    case SHFL_DOWN:
        source = in_segment + arg < width ? lane_id + arg : lane_id;
        break;
    case SHFL_UP:
        source = in_segment - arg >= 0 ? lane_id - arg : lane_id;
        break;
    case SHFL_XOR:
        source = segment + ((in_segment ^ arg) & (width - 1));
        break;
    case SHFL_IDX:
        source = segment + (arg & (width - 1));
        break;
    }
    if (!(mask >> source & 1u))
        lane_error(format("%s: lane %d reads lane %d, which the mask %#x does not name (undefined in CUDA)", name,
                          lane_id, source, mask));
    return w.slots[parity][source];
}

void launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t,
            void (*body)(void *), void *closure)
{
    const unsigned bd[3] = {block.x, block.y, block.z}, gd[3] = {grid.x, grid.y, grid.z};
    for (int i = 0; i < 3; ++i) {
        if (bd[i] == 0 || bd[i] > kMaxBlockDim[i] || gd[i] == 0 || gd[i] > kMaxGridDim[i]) {
            fail(cudaErrorInvalidConfiguration,
                 format("%s: grid (%u,%u,%u) or block (%u,%u,%u) outside the device's dimensions", name, gd[0], gd[1],
                        gd[2], bd[0], bd[1], bd[2]));
            return;
        }
    }
    const uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (threads > (uint64_t)kMaxThreadsPerBlock) {
        fail(cudaErrorInvalidConfiguration,
             format("%s: %llu threads per block; the device allows %d", name, (unsigned long long)threads,
                    kMaxThreadsPerBlock));
        return;
    }
    const int limit = dynamic_shared_limit(kernel);
    if (shared_bytes > (size_t)limit) {
        fail(cudaErrorInvalidValue, format("%s: %zu bytes of dynamic shared memory; the kernel allows %d "
                                           "(cudaFuncAttributeMaxDynamicSharedMemorySize)",
                                           name, shared_bytes, limit));
        return;
    }
    grid_job job;
    job.kernel = name;
    job.body = body;
    job.closure = closure;
    job.grid = grid;
    job.block = block;
    job.shared_bytes = shared_bytes;
    job.blocks = (uint64_t)grid.x * grid.y * grid.z;
    {
        std::lock_guard<std::mutex> lock(pool().launch_mu);
        pool().run(job);
    }
    if (!job.fault.empty())
        fail(cudaErrorLaunchFailure, job.fault);
}

cudaError_t set_function_attribute(const void *kernel, cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return fail(cudaErrorInvalidValue, format("cudaFuncSetAttribute: attribute %d is not emulated", (int)attr));
    if (value < 0 || value > kSharedPerBlockOptin)
        return fail(cudaErrorInvalidValue,
                    format("cudaFuncSetAttribute: %d bytes of dynamic shared memory; the device allows %d", value,
                           kSharedPerBlockOptin));
    std::lock_guard<std::mutex> lock(attr_mu);
    max_dynamic_shared[kernel] = value;
    return cudaSuccess;
}

}  /* namespace amsim_emu */

using namespace amsim_emu;

/* ---- the runtime API ------------------------------------------------------------------------ */

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count)
        return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: a null pointer");
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    if (!device)
        return fail(cudaErrorInvalidValue, "cudaGetDevice: a null pointer");
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, format("cudaSetDevice(%d): one device", device));
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device)
{
    if (!value)
        return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: a null pointer");
    if (device != 0)
        return fail(cudaErrorInvalidDevice, format("cudaDeviceGetAttribute: no device %d", device));
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = (int)kMaxBlockDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = (int)kMaxBlockDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = (int)kMaxBlockDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = (int)kMaxGridDim[0]; break;
    case cudaDevAttrMaxGridDimY: *value = (int)kMaxGridDim[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = (int)kMaxGridDim[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = kSharedPerBlock; break;
    case cudaDevAttrWarpSize: *value = kWarp; break;
    case cudaDevAttrMultiProcessorCount: *value = kMultiprocessors; break;
    case cudaDevAttrComputeCapabilityMajor: *value = kCapabilityMajor; break;
    case cudaDevAttrComputeCapabilityMinor: *value = kCapabilityMinor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = kSharedPerBlockOptin; break;
    default: return fail(cudaErrorInvalidValue, format("cudaDeviceGetAttribute: attribute %d is not emulated", attr));
    }
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    if (!ptr)
        return fail(cudaErrorInvalidValue, "cudaMalloc: a null pointer");
    *ptr = nullptr;
    if (bytes == 0)
        return cudaSuccess;
    const size_t rounded = (bytes + kGuard - 1) / kGuard * kGuard;
    unsigned char *base = static_cast<unsigned char *>(aligned_alloc(kGuard, rounded + 2 * kGuard));
    if (!base)
        return fail(cudaErrorMemoryAllocation, format("cudaMalloc: %zu bytes", bytes));
    unsigned char *user = base + kGuard;
    memset(base, kGuardByte, kGuard);
    memset(user + bytes, kGuardByte, rounded - bytes + kGuard);
    std::lock_guard<std::mutex> lock(mem_mu);
    allocations[reinterpret_cast<uintptr_t>(user)] = allocation{bytes};
    *ptr = user;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    if (!ptr)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(mem_mu);
    auto it = allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == allocations.end())
        return fail(cudaErrorInvalidValue, format("cudaFree(%p): not an allocation of cudaMalloc", ptr));
    const bool intact = guards_intact(it->first, it->second);
    const size_t bytes = it->second.bytes;
    allocations.erase(it);
    free(static_cast<unsigned char *>(ptr) - kGuard);
    if (!intact)
        return fail(cudaErrorIllegalAddress, format("a kernel wrote outside the %zu-byte allocation at %p", bytes, ptr));
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    if (bytes == 0)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(mem_mu);
        const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
        const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
        if (!dst || !src || (int)kind < 0 || (int)kind > 4 || (dst_device && !inside_allocation(dst, bytes)) ||
            (src_device && !inside_allocation(src, bytes)))
            return fail(cudaErrorInvalidValue,
                        format("cudaMemcpy: %zu bytes (kind %d) from %p to %p outside device memory", bytes, (int)kind,
                               src, dst));
    }
    memcpy(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t)
{
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t)
{
    if (bytes == 0)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(mem_mu);
        if (!inside_allocation(ptr, bytes))
            return fail(cudaErrorInvalidValue, format("cudaMemsetAsync: %zu bytes at %p outside device memory", bytes,
                                                      ptr));
    }
    memset(ptr, value, bytes);
    return cudaSuccess;
}

/* Launches completed when they returned; what is left to find is a write past an allocation. */
cudaError_t cudaDeviceSynchronize(void) { return check_guards(); }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return check_guards(); }

cudaError_t cudaGetLastError(void)
{
    const cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

const char *cudaGetErrorString(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unrecognized error code";
}

/* The emulator's account of the calling thread's last error: which call or kernel, and why.
 * amsim.gemm.cuda adds it to CudaError's message. */
extern "C" const char *amsim_emu_error_detail(void) { return last_detail.c_str(); }
