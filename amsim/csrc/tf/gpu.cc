/*
 * gpu.cc -- the GPU kernels of AmsimMatMul, and of AmsimConv2D and AmsimDepthwiseConv2D with
 * their gradients.
 *
 * Compiled only for a CUDA build of TensorFlow (-DGOOGLE_CUDA=1, amsim/keras/build.py), as its own
 * translation unit. The shapes, attributes and checks are the CPU kernels' (amsim_tf.h); every
 * product, sum and patch copy is the bundled CUDA kernels' (amsim_cuda.h), which give the CPU
 * engine's bits, so an op gives the same result on either device. The work is queued on the op's
 * stream; the LUT input stays in host memory, is prepared once by the CPU cache (GetLut) and
 * copied to each device once per prepared LUT.
 */
#if GOOGLE_CUDA

#ifndef EIGEN_USE_GPU
#define EIGEN_USE_GPU
#endif

#include <limits>
#include <list>
#include <mutex>

#include "amsim_cuda.h"
#include "amsim_tf.h"
#include "tensorflow/core/framework/op.h"

namespace amsim_tf {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;

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
/* GEMM                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* A float32 operand split into scales and mantissa indices on the device (amsim_cuda_split),
 * with the exponent range the GEMM's exactness test reads. */
struct SplitOperand {
    Tensor scale, idx, range;

    absl::Status Allocate(OpKernelContext *ctx, int64_t count)
    {
        const int64_t n = std::max<int64_t>(count, 1);
        TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({n}), &scale));
        TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_UINT16, TensorShape({n}), &idx));
        return ctx->allocate_temp(tensorflow::DT_INT32, TensorShape({2}), &range);
    }

    absl::Status Split(OpKernelContext *ctx, const Arithmetic &arith, int m, const float *x, int64_t rows,
                       int64_t cols, int64_t rs, int64_t cs)
    {
        return CudaStatus(amsim_cuda_split(x, rows, cols, rs, cs, m, arith.rounding, scale.flat<float>().data(),
                                           idx.flat<tensorflow::uint16>().data(), range.flat<int32_t>().data(),
                                           Stream(ctx)),
                          "amsim_cuda_split");
    }
};

/* The GEMMs of one op call on one LUT: C = A (x) B with Gemm's (amsim_tf.h) arguments. */
class GpuGemm {
public:
    GpuGemm(OpKernelContext *ctx, const Arithmetic &arith) : ctx_(ctx), arith_(arith) {}

    absl::Status Init(const Tensor &table)
    {
        TF_RETURN_IF_ERROR(GetLut(table, &lut_));
        return DeviceTable(ctx_, lut_, &table_);
    }

    /* Buffers for operands of up to a_count and b_count elements. */
    absl::Status Reserve(int64_t a_count, int64_t b_count)
    {
        TF_RETURN_IF_ERROR(a_.Allocate(ctx_, a_count));
        return b_.Allocate(ctx_, b_count);
    }

    /* split_a/split_b false: the operand is the one split by the previous call. */
    absl::Status Run(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars, int64_t acs, const float *b,
                     int64_t brs, int64_t bcs, float *c, int64_t ldc, bool split_a = true, bool split_b = true)
    {
        if (M == 0 || N == 0)
            return absl::OkStatus();
        const struct amsim_lut &l = lut_->lut;
        if (split_a)
            TF_RETURN_IF_ERROR(a_.Split(ctx_, arith_, l.m, a, M, K, ars, acs));
        if (split_b)
            TF_RETURN_IF_ERROR(b_.Split(ctx_, arith_, l.m, b, K, N, brs, bcs));
        /* An empty sum (K = 0) is +0, as the kernel's accumulators start. */
        return CudaStatus(amsim_cuda_gemm(M, N, K, a_.scale.flat<float>().data(),
                                          a_.idx.flat<tensorflow::uint16>().data(), a_.range.flat<int32_t>().data(),
                                          b_.scale.flat<float>().data(), b_.idx.flat<tensorflow::uint16>().data(),
                                          b_.range.flat<int32_t>().data(), table_, l.m, l.v_lo, l.v_hi, arith_.mode,
                                          l.fast, c, ldc, Stream(ctx_)),
                          "amsim_cuda_gemm");
    }

private:
    OpKernelContext *ctx_;
    const Arithmetic &arith_;
    std::shared_ptr<const PreparedLut> lut_;
    const float *table_ = nullptr;
    SplitOperand a_, b_;
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
        const int64_t M = batch.M, N = batch.N, K = batch.K;
        GpuGemm gemm(ctx, arith_);
        OP_REQUIRES_OK(ctx, gemm.Init(ctx->input(2)));
        OP_REQUIRES_OK(ctx, gemm.Reserve(M * K, K * N));
        const float *pa = a.flat<float>().data(), *pb = b.flat<float>().data();
        float *pc = out->flat<float>().data();
        for (size_t t = 0; t < batch.a_offset.size(); ++t) {
            /* A broadcast operand is split once for the run of matrices that share it. */
            const bool new_a = t == 0 || batch.a_offset[t] != batch.a_offset[t - 1];
            const bool new_b = t == 0 || batch.b_offset[t] != batch.b_offset[t - 1];
            OP_REQUIRES_OK(ctx, gemm.Run(M, N, K, pa + batch.a_offset[t], batch.ars, batch.acs, pb + batch.b_offset[t],
                                         batch.brs, batch.bcs, pc + t * M * N, N, new_a, new_b));
        }
    }

private:
    Arithmetic arith_;
    bool transpose_a_ = false, transpose_b_ = false;
};

/* ------------------------------------------------------------------------------------------ */
/* The conv2d family (the CPU kernels' formulas, conv.cc)                                      */
/* ------------------------------------------------------------------------------------------ */

/* The CUDA kernels take the geometry as ints. */
absl::Status CheckIntGeometry(const struct amsim_conv_geometry &g)
{
    for (int64_t v : {g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pad_top, g.pad_left, g.oh, g.ow})
        if (v > std::numeric_limits<int>::max())
            return absl::InvalidArgumentError("amsim GPU conv2d: a size or stride exceeds 2^31 - 1");
    return absl::OkStatus();
}

/* The patch matrix (N*OH*OW) x (KH*KW*C) of x on the device: x itself when PatchesAreInput,
 * else im2col into *buf. */
absl::Status GpuPatches(OpKernelContext *ctx, const struct amsim_conv_geometry &g, const float *x, Tensor *buf,
                        const float **cols)
{
    if (PatchesAreInput(g)) {
        *cols = x;
        return absl::OkStatus();
    }
    TF_RETURN_IF_ERROR(WorkBuffer(ctx, g.n * g.oh * g.ow * g.kh * g.kw * g.c, buf));
    float *out = buf->flat<float>().data();
    TF_RETURN_IF_ERROR(CudaStatus(amsim_cuda_im2col(x, (int)g.n, (int)g.h, (int)g.w, (int)g.c, (int)g.kh, (int)g.kw,
                                                    (int)g.sh, (int)g.sw, (int)g.dh, (int)g.dw, (int)g.pad_top,
                                                    (int)g.pad_left, (int)g.oh, (int)g.ow, out, Stream(ctx)),
                                  "amsim_cuda_im2col"));
    *cols = out;
    return absl::OkStatus();
}

/* dx from the patch-matrix gradient cols (N*OH*OW) x (KH*KW*C): amsim_cuda_col2im's sums. */
absl::Status GpuCol2Im(OpKernelContext *ctx, const struct amsim_conv_geometry &g, const float *cols, float *dx)
{
    return CudaStatus(amsim_cuda_col2im(cols, (int)g.n, (int)g.h, (int)g.w, (int)g.c, (int)g.kh, (int)g.kw, (int)g.sh,
                                        (int)g.sw, (int)g.dh, (int)g.dw, (int)g.pad_top, (int)g.pad_left, (int)g.oh,
                                        (int)g.ow, dx, Stream(ctx)),
                      "amsim_cuda_col2im");
}

class GpuConv2DOp : public ConvKernel {
public:
    using ConvKernel::ConvKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &w = ctx->input(1);
        struct amsim_conv_geometry g;
        int64_t o;
        Tensor *y = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kForward, &g, &o, &y));
        OP_REQUIRES_OK(ctx, CheckIntGeometry(g));
        if (y->NumElements() == 0)
            return;
        const int64_t rows = g.n * g.oh * g.ow, k = g.kh * g.kw * g.c;
        GpuGemm gemm(ctx, arith_);
        OP_REQUIRES_OK(ctx, gemm.Init(ctx->input(2)));
        OP_REQUIRES_OK(ctx, gemm.Reserve(rows * k, k * o));
        Tensor buf;
        const float *cols = nullptr;
        OP_REQUIRES_OK(ctx, GpuPatches(ctx, g, x.flat<float>().data(), &buf, &cols));
        OP_REQUIRES_OK(ctx, gemm.Run(rows, o, k, cols, k, 1, w.flat<float>().data(), o, 1, y->flat<float>().data(), o));
    }
};

class GpuConv2DBackpropInputOp : public ConvKernel {
public:
    using ConvKernel::ConvKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &w = ctx->input(1), &dy = ctx->input(2);
        struct amsim_conv_geometry g;
        int64_t o;
        Tensor *dx = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kBackpropInput, &g, &o, &dx));
        OP_REQUIRES_OK(ctx, CheckIntGeometry(g));
        if (dx->NumElements() == 0)
            return;
        float *pdx = dx->flat<float>().data();
        const int64_t rows = g.n * g.oh * g.ow, k = g.kh * g.kw * g.c;
        GpuGemm gemm(ctx, arith_);
        OP_REQUIRES_OK(ctx, gemm.Init(ctx->input(3)));
        OP_REQUIRES_OK(ctx, gemm.Reserve(rows * o, o * k));
        /* As on the CPU: W^T is a strided view, and an identity geometry lets the GEMM write dx. */
        const bool direct = PatchesAreInput(g);
        Tensor buf;
        if (!direct)
            OP_REQUIRES_OK(ctx, WorkBuffer(ctx, rows * k, &buf));
        float *cols = direct ? pdx : buf.flat<float>().data();
        OP_REQUIRES_OK(ctx, gemm.Run(rows, k, o, dy.flat<float>().data(), o, 1, w.flat<float>().data(), 1, o, cols, k));
        if (!direct)
            OP_REQUIRES_OK(ctx, GpuCol2Im(ctx, g, cols, pdx));
    }
};

class GpuConv2DBackpropFilterOp : public ConvKernel {
public:
    using ConvKernel::ConvKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &dy = ctx->input(2);
        struct amsim_conv_geometry g;
        int64_t o;
        Tensor *dw = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kBackpropFilter, &g, &o, &dw));
        OP_REQUIRES_OK(ctx, CheckIntGeometry(g));
        if (dw->NumElements() == 0)
            return;
        const int64_t rows = g.n * g.oh * g.ow, k = g.kh * g.kw * g.c;
        GpuGemm gemm(ctx, arith_);
        OP_REQUIRES_OK(ctx, gemm.Init(ctx->input(3)));
        OP_REQUIRES_OK(ctx, gemm.Reserve(k * rows, rows * o));
        Tensor buf;
        const float *cols = nullptr;
        OP_REQUIRES_OK(ctx, GpuPatches(ctx, g, x.flat<float>().data(), &buf, &cols));
        /* P^T is the strided view (k x rows) of P (rows x k): the split reads it in place. */
        OP_REQUIRES_OK(ctx,
                       gemm.Run(k, o, rows, cols, 1, k, dy.flat<float>().data(), o, 1, dw->flat<float>().data(), o));
    }
};

/* ------------------------------------------------------------------------------------------ */
/* The depthwise family (the CPU kernels' GEMMs, depthwise.cc)                                 */
/* ------------------------------------------------------------------------------------------ */

/* Each channel's GEMM is the CPU kernel's, on the same operands in the same roles; only the
 * layouts differ. The CPU transposes channel-major so that the engine reads contiguous
 * matrices; here the splits read each channel's share of the NHWC tensors and of the patch
 * matrix in place (a column of stride C), and the GEMMs write y and dW in place (leading
 * dimension C*Q). Only the patch gradients, which the GEMM cannot write with a column stride,
 * go through a channel-major work buffer. */

class GpuDepthwiseConv2DOp : public DepthwiseKernel {
public:
    using DepthwiseKernel::DepthwiseKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &w = ctx->input(1);
        struct amsim_conv_geometry g;
        int64_t q = 0;
        Tensor *y = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kForward, &g, &q, &y));
        OP_REQUIRES_OK(ctx, CheckIntGeometry(g));
        if (y->NumElements() == 0)
            return;
        const int64_t c = g.c, khw = g.kh * g.kw, rows = g.n * g.oh * g.ow;
        GpuGemm gemm(ctx, arith_);
        OP_REQUIRES_OK(ctx, gemm.Init(ctx->input(2)));
        OP_REQUIRES_OK(ctx, gemm.Reserve(rows * khw, khw * q));
        Tensor buf;
        const float *cols = nullptr;
        OP_REQUIRES_OK(ctx, GpuPatches(ctx, g, x.flat<float>().data(), &buf, &cols));
        const float *pw = w.flat<float>().data();
        float *py = y->flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch)  /* P_c: columns ch, ch + C, ... of P; W_c = W[:, :, ch, :] */
            OP_REQUIRES_OK(ctx,
                           gemm.Run(rows, q, khw, cols + ch, khw * c, c, pw + ch * q, c * q, 1, py + ch * q, c * q));
    }
};

class GpuDepthwiseConv2DBackpropInputOp : public DepthwiseKernel {
public:
    using DepthwiseKernel::DepthwiseKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &w = ctx->input(1), &dy = ctx->input(2);
        struct amsim_conv_geometry g;
        int64_t q = 0;
        Tensor *dx = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kBackpropInput, &g, &q, &dx));
        OP_REQUIRES_OK(ctx, CheckIntGeometry(g));
        if (dx->NumElements() == 0)
            return;
        const int64_t c = g.c, khw = g.kh * g.kw, rows = g.n * g.oh * g.ow;
        GpuGemm gemm(ctx, arith_);
        OP_REQUIRES_OK(ctx, gemm.Init(ctx->input(3)));
        OP_REQUIRES_OK(ctx, gemm.Reserve(rows * q, q * khw));
        Tensor colst_buf, cols_buf;
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * rows * khw, &colst_buf));
        float *colst = colst_buf.flat<float>().data();
        const float *pdy = dy.flat<float>().data(), *pw = w.flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch)  /* dy_c = dy[..., ch*Q:(ch+1)*Q]; W_c^T a strided view */
            OP_REQUIRES_OK(ctx, gemm.Run(rows, khw, q, pdy + ch * q, c * q, 1, pw + ch * q, 1, c * q,
                                         colst + ch * rows * khw, khw));
        /* Back to amsim_cuda_col2im's layout (rows x KH*KW x C); for an identity geometry that is
         * dx, as on the CPU. */
        float *pdx = dx->flat<float>().data();
        if (PatchesAreInput(g)) {
            OP_REQUIRES_OK(ctx, CudaStatus(amsim_cuda_transpose(colst, c, rows * khw, 1, pdx, Stream(ctx)),
                                           "amsim_cuda_transpose"));
            return;
        }
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, rows * khw * c, &cols_buf));
        float *cols = cols_buf.flat<float>().data();
        OP_REQUIRES_OK(ctx, CudaStatus(amsim_cuda_transpose(colst, c, rows * khw, 1, cols, Stream(ctx)),
                                       "amsim_cuda_transpose"));
        OP_REQUIRES_OK(ctx, GpuCol2Im(ctx, g, cols, pdx));
    }
};

class GpuDepthwiseConv2DBackpropFilterOp : public DepthwiseKernel {
public:
    using DepthwiseKernel::DepthwiseKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &dy = ctx->input(2);
        struct amsim_conv_geometry g;
        int64_t q = 0;
        Tensor *dw = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kBackpropFilter, &g, &q, &dw));
        OP_REQUIRES_OK(ctx, CheckIntGeometry(g));
        if (dw->NumElements() == 0)
            return;
        const int64_t c = g.c, khw = g.kh * g.kw, rows = g.n * g.oh * g.ow;
        GpuGemm gemm(ctx, arith_);
        OP_REQUIRES_OK(ctx, gemm.Init(ctx->input(3)));
        OP_REQUIRES_OK(ctx, gemm.Reserve(khw * rows, rows * q));
        Tensor buf;
        const float *cols = nullptr;
        OP_REQUIRES_OK(ctx, GpuPatches(ctx, g, x.flat<float>().data(), &buf, &cols));
        const float *pdy = dy.flat<float>().data();
        float *pdw = dw->flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch)  /* P_c^T: the strided view (KH*KW x rows) of P_c */
            OP_REQUIRES_OK(ctx, gemm.Run(khw, q, rows, cols + ch, c, khw * c, pdy + ch * q, c * q, 1, pdw + ch * q,
                                         c * q));
    }
};

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
