/*
 * gpu.cc -- the GPU kernels of AmsimMatMul, and of AmsimConv2D and AmsimDepthwiseConv2D with
 * their gradients: TensorFlow's plumbing around the CUDA ops (amsim_cuda.h, ops_cuda.cu).
 *
 * Compiled only for a CUDA build of TensorFlow (-DGOOGLE_CUDA=1, amsim/keras/build.py), as its own
 * translation unit. What an op computes is defined elsewhere, once: the operands' checks, shapes
 * and output with the CPU kernels (amsim_tf.h: PlanMatMul, ConvKernel::Prologue), the sequence
 * of kernel calls and its workspace with every caller of the CUDA ops (amsim_cuda_matmul,
 * amsim_cuda_conv2d), which the suite runs on the CPU emulation against the CPU engine bit for
 * bit. What is left here runs only on a GPU (docs/gemm-internals.md, "The GPU ops, and what only
 * a GPU runs"): the device copies of the prepared LUTs, the workspace from TensorFlow's allocator,
 * the op's stream, and the cudaError_t turned into a Status. The LUT input stays in host memory,
 * is prepared once by the CPU cache (GetLut) and copied to each device once per prepared LUT.
 */
#if GOOGLE_CUDA

#ifndef EIGEN_USE_GPU
#define EIGEN_USE_GPU
#endif

#include <algorithm>
#include <list>
#include <mutex>

#include "amsim_cuda.h"
#include "amsim_tf.h"
#include "tensorflow/core/framework/op.h"

namespace amsim_tf {
namespace {

absl::Status CudaStatus(int rc, const char *what)
{
    if (rc == 0)
        return absl::OkStatus();
    return absl::InternalError(std::string(what) + ": CUDA error " + std::to_string(rc) + " (" +
                               amsim_cuda_error_string(rc) + ")");
}

void *Stream(OpKernelContext *ctx) { return static_cast<void *>(ctx->eigen_device<Eigen::GpuDevice>().stream()); }

/* ------------------------------------------------------------------------------------------ */
/* Device copies of prepared LUTs                                                             */
/* ------------------------------------------------------------------------------------------ */

/* One device's copy of one prepared LUT. An entry whose LUT has left the CPU cache (its weak
 * pointer expired) is freed at the next lookup, so the device holds what the CPU cache holds. */
struct DeviceLut {
    std::weak_ptr<const PreparedLut> host;
    const void *device;  /* the TensorFlow device (one per GPU) */
    float *table;
};

struct DeviceLutCache {
    std::mutex mu;
    std::list<DeviceLut> entries;
};

/* Never destroyed, as the CPU cache: freeing device memory during process exit is unsafe. */
DeviceLutCache &DeviceCache()
{
    static DeviceLutCache *cache = new DeviceLutCache;
    return *cache;
}

absl::Status DeviceTable(OpKernelContext *ctx, const std::shared_ptr<const PreparedLut> &lut, const float **out)
{
    DeviceLutCache &cache = DeviceCache();
    std::lock_guard<std::mutex> lock(cache.mu);
    for (auto it = cache.entries.begin(); it != cache.entries.end();) {
        if (!it->host.expired()) {
            ++it;
            continue;
        }
        /* Kernels queued earlier may still read it: let the device finish before freeing. */
        TF_RETURN_IF_ERROR(CudaStatus(amsim_cuda_synchronize(), "amsim: freeing a device LUT"));
        TF_RETURN_IF_ERROR(CudaStatus(amsim_cuda_free(it->table), "amsim: freeing a device LUT"));
        it = cache.entries.erase(it);
    }
    for (const DeviceLut &e : cache.entries)
        if (e.device == ctx->device() && e.host.lock() == lut) {
            *out = e.table;
            return absl::OkStatus();
        }
    const size_t bytes = sizeof(float) << (2 * lut->lut.m);
    void *table = nullptr;
    TF_RETURN_IF_ERROR(CudaStatus(amsim_cuda_malloc(&table, bytes), "amsim: allocating a device LUT"));
    /* A synchronous copy, then a device synchronization: the table is complete before any
     * kernel on any stream reads it. Once per LUT and device. */
    int rc = amsim_cuda_to_device(table, lut->lut.table[0], bytes);
    if (rc == 0)
        rc = amsim_cuda_synchronize();
    if (rc != 0) {
        amsim_cuda_free(table);
        return CudaStatus(rc, "amsim: copying a LUT to the device");
    }
    cache.entries.push_back(DeviceLut{lut, ctx->device(), static_cast<float *>(table)});
    *out = static_cast<float *>(table);
    return absl::OkStatus();
}

/* ------------------------------------------------------------------------------------------ */
/* One call of a CUDA op                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* What an op call hands a CUDA op (amsim_cuda.h) besides its operands: the arithmetic, with the
 * device copy of its LUT, and a workspace from TensorFlow's allocator. TensorFlow orders the
 * temporary's reuse after the work queued on the op's stream, which is where the op runs. */
class CudaCall {
public:
    /* lut: the op's LUT input; bytes: what the op's _workspace function reported. */
    absl::Status Init(OpKernelContext *ctx, const Tensor &lut, const Arithmetic &arith, size_t bytes)
    {
        TF_RETURN_IF_ERROR(GetLut(lut, &lut_));
        const float *table = nullptr;
        TF_RETURN_IF_ERROR(DeviceTable(ctx, lut_, &table));
        const struct amsim_lut &l = lut_->lut;
        arith_ = {table, l.m, l.fast, l.v_lo, l.v_hi, arith.rounding, arith.mode};
        bytes_ = bytes;
        return ctx->allocate_temp(tensorflow::DT_UINT8, TensorShape({static_cast<int64_t>(std::max<size_t>(bytes, 1))}),
                                  &workspace_);
    }

    const struct amsim_cuda_arith *arith() const { return &arith_; }
    void *workspace() { return workspace_.flat<tensorflow::uint8>().data(); }
    size_t bytes() const { return bytes_; }

private:
    std::shared_ptr<const PreparedLut> lut_;  /* held for the call, as the CPU kernels hold theirs */
    struct amsim_cuda_arith arith_ = {};
    Tensor workspace_;
    size_t bytes_ = 0;
};

/* ------------------------------------------------------------------------------------------ */
/* AmsimMatMul                                                                                */
/* ------------------------------------------------------------------------------------------ */

class GpuMatMulOp : public OpKernel {
public:
    explicit GpuMatMulOp(OpKernelConstruction *ctx) : OpKernel(ctx)
    {
        OP_REQUIRES_OK(ctx, ReadArithmetic(ctx, &arith_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_a", &transpose_a_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_b", &transpose_b_));
    }

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &a = ctx->input(0), &b = ctx->input(1);
        MatMulBatch batch;
        OP_REQUIRES_OK(ctx, PlanMatMul(a, b, transpose_a_, transpose_b_, &batch));
        Tensor *out = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, batch.out_shape, &out));
        if (out->NumElements() == 0)
            return;
        size_t bytes = 0;
        OP_REQUIRES_OK(ctx, CudaStatus(amsim_cuda_matmul_workspace(batch.M, batch.N, batch.K, &bytes),
                                       "amsim_cuda_matmul_workspace"));
        CudaCall call;
        OP_REQUIRES_OK(ctx, call.Init(ctx, ctx->input(2), arith_, bytes));
        OP_REQUIRES_OK(ctx, CudaStatus(amsim_cuda_matmul(batch.M, batch.N, batch.K, a.flat<float>().data(), batch.ars,
                                                         batch.acs, b.flat<float>().data(), batch.brs, batch.bcs,
                                                         static_cast<int64_t>(batch.a_offset.size()),
                                                         batch.a_offset.data(), batch.b_offset.data(),
                                                         out->flat<float>().data(), call.arith(), call.workspace(),
                                                         call.bytes(), Stream(ctx)),
                                       "amsim_cuda_matmul"));
    }

private:
    Arithmetic arith_;
    bool transpose_a_ = false, transpose_b_ = false;
};

/* ------------------------------------------------------------------------------------------ */
/* The conv2d family                                                                          */
/* ------------------------------------------------------------------------------------------ */

using Pass = ConvKernel::Pass;
static_assert(static_cast<int>(Pass::kForward) == AMSIM_CUDA_CONV_FORWARD &&
                  static_cast<int>(Pass::kBackpropInput) == AMSIM_CUDA_CONV_BACKPROP_INPUT &&
                  static_cast<int>(Pass::kBackpropFilter) == AMSIM_CUDA_CONV_BACKPROP_FILTER,
              "ConvKernel::Pass numbers the passes as enum amsim_cuda_conv_pass does");

/* One pass of AmsimConv2D (Family = ConvKernel) or AmsimDepthwiseConv2D (DepthwiseKernel). Its
 * inputs: forward (input, filter, lut), backprop_input (input_sizes, filter, out_backprop, lut),
 * backprop_filter (input, filter_sizes, out_backprop, lut). */
template <class Family, Pass kPass>
class GpuConvOp : public Family {
public:
    using Family::Family;

    void Compute(OpKernelContext *ctx) override
    {
        struct amsim_conv_geometry g;
        int64_t q = 0;
        Tensor *out = nullptr;
        OP_REQUIRES_OK(ctx, this->Prologue(ctx, kPass, &g, &q, &out));
        if (out->NumElements() == 0)
            return;
        const int pass = static_cast<int>(kPass), depthwise = this->depthwise_;
        size_t bytes = 0;
        /* After Prologue's checks, the CUDA ops refuse only what their int parameters cannot hold. */
        OP_REQUIRES(ctx, amsim_cuda_conv2d_workspace(pass, depthwise, &g, q, &bytes) == 0,
                    absl::InvalidArgumentError(this->name() +
                                               ": the GPU kernels take sizes, strides, dilations and paddings below 2^31"));
        CudaCall call;
        OP_REQUIRES_OK(ctx, call.Init(ctx, ctx->input(kPass == Pass::kForward ? 2 : 3), this->arith_, bytes));
        const float *x = kPass == Pass::kBackpropInput ? nullptr : ctx->input(0).flat<float>().data();
        const float *w = kPass == Pass::kBackpropFilter ? nullptr : ctx->input(1).flat<float>().data();
        const float *dy = kPass == Pass::kForward ? nullptr : ctx->input(2).flat<float>().data();
        OP_REQUIRES_OK(ctx, CudaStatus(amsim_cuda_conv2d(pass, depthwise, &g, q, x, w, dy, out->flat<float>().data(),
                                                         call.arith(), call.workspace(), call.bytes(), Stream(ctx)),
                                       "amsim_cuda_conv2d"));
    }
};

using GpuConv2DOp = GpuConvOp<ConvKernel, Pass::kForward>;
using GpuConv2DBackpropInputOp = GpuConvOp<ConvKernel, Pass::kBackpropInput>;
using GpuConv2DBackpropFilterOp = GpuConvOp<ConvKernel, Pass::kBackpropFilter>;
using GpuDepthwiseConv2DOp = GpuConvOp<DepthwiseKernel, Pass::kForward>;
using GpuDepthwiseConv2DBackpropInputOp = GpuConvOp<DepthwiseKernel, Pass::kBackpropInput>;
using GpuDepthwiseConv2DBackpropFilterOp = GpuConvOp<DepthwiseKernel, Pass::kBackpropFilter>;

}  // namespace
}  // namespace amsim_tf

/* The LUT and the shape vectors are read on the host (GetLut, ReadSizes). */
REGISTER_KERNEL_BUILDER(Name("AmsimMatMul").Device(tensorflow::DEVICE_GPU).HostMemory("lut"), amsim_tf::GpuMatMulOp);
REGISTER_KERNEL_BUILDER(Name("AmsimConv2D").Device(tensorflow::DEVICE_GPU).HostMemory("lut"), amsim_tf::GpuConv2DOp);
REGISTER_KERNEL_BUILDER(
    Name("AmsimConv2DBackpropInput").Device(tensorflow::DEVICE_GPU).HostMemory("input_sizes").HostMemory("lut"),
    amsim_tf::GpuConv2DBackpropInputOp);
REGISTER_KERNEL_BUILDER(
    Name("AmsimConv2DBackpropFilter").Device(tensorflow::DEVICE_GPU).HostMemory("filter_sizes").HostMemory("lut"),
    amsim_tf::GpuConv2DBackpropFilterOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2D").Device(tensorflow::DEVICE_GPU).HostMemory("lut"),
                        amsim_tf::GpuDepthwiseConv2DOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2DBackpropInput")
                            .Device(tensorflow::DEVICE_GPU)
                            .HostMemory("input_sizes")
                            .HostMemory("lut"),
                        amsim_tf::GpuDepthwiseConv2DBackpropInputOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2DBackpropFilter")
                            .Device(tensorflow::DEVICE_GPU)
                            .HostMemory("filter_sizes")
                            .HostMemory("lut"),
                        amsim_tf::GpuDepthwiseConv2DBackpropFilterOp);

#endif  // GOOGLE_CUDA
