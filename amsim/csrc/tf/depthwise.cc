/*
 * depthwise.cc -- AmsimDepthwiseConv2D and its two gradients.
 *
 * NHWC input x (C channels), filter W of shape (KH, KW, C, Q); output channel c*Q + q is input
 * channel c convolved with W[:, :, c, q]. Each channel is one GEMM, exactly amsim.gemm's conv2d
 * family on that channel alone (x[..., c:c+1] with W[:, :, c:c+1, :]), so K runs over (kh, kw):
 *   forward          y_c  = P_c (x) W_c                 P_c: (N*OH*OW) x (KH*KW), W_c: (KH*KW) x Q
 *   input gradient   dx_c = col2im(dy_c (x) W_c^T)
 *   filter gradient  dW_c = P_c^T (x) dy_c
 * The engine is fastest on contiguous operands, and a channel of an NHWC tensor is a column of
 * stride C: the patch matrix (amsim_im2col), dy, y and the patch gradients are transposed
 * channel-major in work buffers, so that each channel's share is a contiguous matrix; W_c is the
 * small strided view W[:, :, c, :], and dW_c is written in place with a leading dimension of C*Q.
 * The operands' checks (ConvKernel::Prologue) are shared with conv2d and the GPU kernels.
 */
#include <algorithm>
#include <cstring>

#include "amsim_tf.h"
#include "tensorflow/core/framework/op.h"

REGISTER_OP("AmsimDepthwiseConv2D")
    .Input("input: float")
    .Input("filter: float")
    .Input("lut: float")
    .Output("output: float")
    .AMSIM_TF_CONV_ATTRS
    .AMSIM_TF_ARITHMETIC_ATTRS
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) { return amsim_tf::ConvOutputShape(c, true); })
    .Doc("Approximate depthwise conv2d: per input channel, the GEMM of its patches with its filters.");

REGISTER_OP("AmsimDepthwiseConv2DBackpropInput")
    .Input("input_sizes: int32")
    .Input("filter: float")
    .Input("out_backprop: float")
    .Input("lut: float")
    .Output("output: float")
    .AMSIM_TF_CONV_ATTRS
    .AMSIM_TF_ARITHMETIC_ATTRS
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) { return amsim_tf::ShapeFromSizes(c, 0); })
    .Doc("Gradient of AmsimDepthwiseConv2D for its input: per channel, col2im(dy_c (x) W_c^T).");

REGISTER_OP("AmsimDepthwiseConv2DBackpropFilter")
    .Input("input: float")
    .Input("filter_sizes: int32")
    .Input("out_backprop: float")
    .Input("lut: float")
    .Output("output: float")
    .AMSIM_TF_CONV_ATTRS
    .AMSIM_TF_ARITHMETIC_ATTRS
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) { return amsim_tf::ShapeFromSizes(c, 1); })
    .Doc("Gradient of AmsimDepthwiseConv2D for its filter: per channel, patches_c^T (x) dy_c.");

namespace amsim_tf {

namespace {

using tensorflow::OpKernelContext;
using tensorflow::Tensor;

/* dst[j][i][0:block] = src[i][j][0:block] for i < rows, j < cols: a transpose of blocks. Turns an
 * NHWC tensor (rows = N*H*W, cols = channels) channel-major and back. Each band of rows (small
 * enough for the L2 cache) is read from memory once and written as one contiguous run per column;
 * square tiles would scatter their stores a whole column apart, often a multiple of 4 KiB, which
 * maps them onto the same cache sets. */
void Transpose(const float *src, int64_t rows, int64_t cols, int64_t block, float *dst)
{
    const int64_t band = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, cols * block));
    for (int64_t i0 = 0; i0 < rows; i0 += band) {
        const int64_t i1 = std::min(rows, i0 + band);
        for (int64_t j = 0; j < cols; ++j) {
            float *d = dst + (j * rows + i0) * block;
            const float *s = src + (i0 * cols + j) * block;
            if (block == 1) {
                for (int64_t i = i0; i < i1; ++i, s += cols)
                    *d++ = *s;
            } else {
                for (int64_t i = i0; i < i1; ++i, s += cols * block, d += block)
                    std::memcpy(d, s, sizeof(float) * block);
            }
        }
    }
}

/* The C per-channel patch matrices (rows x KH*KW each, one after the other) of x: amsim_im2col's
 * patch matrix (rows x KH*KW x C) transposed channel-major, into a work buffer kept by *buf. */
absl::Status ChannelPatches(OpKernelContext *ctx, const struct amsim_conv_geometry &g, const float *x, Tensor *buf,
                            const float **cols)
{
    const int64_t taps = g.n * g.oh * g.ow * g.kh * g.kw;
    Tensor patches;
    const float *p = x;
    if (!amsim_conv_patches_are_input(&g)) {
        TF_RETURN_IF_ERROR(WorkBuffer(ctx, taps * g.c, &patches));
        TF_RETURN_IF_ERROR(EngineStatus(amsim_im2col(&g, x, patches.flat<float>().data()), "amsim_im2col"));
        p = patches.flat<float>().data();
    }
    TF_RETURN_IF_ERROR(WorkBuffer(ctx, taps * g.c, buf));
    Transpose(p, taps, g.c, 1, buf->flat<float>().data());
    *cols = buf->flat<float>().data();
    return absl::OkStatus();
}

class AmsimDepthwiseConv2DOp : public DepthwiseKernel {
public:
    using DepthwiseKernel::DepthwiseKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &w = ctx->input(1);
        struct amsim_conv_geometry g;
        int64_t q = 0;
        Tensor *y = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kForward, &g, &q, &y));
        if (y->NumElements() == 0)
            return;
        const int64_t c = g.c, khw = g.kh * g.kw, rows = g.n * g.oh * g.ow;
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(2), &lut));
        Tensor cols_buf, yt_buf;
        const float *cols = nullptr;
        OP_REQUIRES_OK(ctx, ChannelPatches(ctx, g, x.flat<float>().data(), &cols_buf, &cols));
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * rows * q, &yt_buf));
        float *yt = yt_buf.flat<float>().data();
        const float *pw = w.flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch)  /* W_c = W[:, :, ch, :], rows of stride c*q */
            OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, rows, q, khw, cols + ch * rows * khw, khw, 1, pw + ch * q, c * q,
                                     1, yt + ch * rows * q, q));
        Transpose(yt, c, rows, q, y->flat<float>().data());
    }
};

class AmsimDepthwiseConv2DBackpropInputOp : public DepthwiseKernel {
public:
    using DepthwiseKernel::DepthwiseKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &w = ctx->input(1), &dy = ctx->input(2);
        struct amsim_conv_geometry g;
        int64_t q = 0;
        Tensor *dx = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kBackpropInput, &g, &q, &dx));
        if (dx->NumElements() == 0)
            return;
        const int64_t c = g.c, khw = g.kh * g.kw, rows = g.n * g.oh * g.ow;
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(3), &lut));
        Tensor dyt_buf, colst_buf, cols_buf;
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * rows * q, &dyt_buf));
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * rows * khw, &colst_buf));
        float *dyt = dyt_buf.flat<float>().data(), *colst = colst_buf.flat<float>().data();
        Transpose(dy.flat<float>().data(), rows, c, q, dyt);
        const float *pw = w.flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch)  /* W_c^T: the strided view (q x khw) of W[:, :, ch, :] */
            OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, rows, khw, q, dyt + ch * rows * q, q, 1, pw + ch * q, 1, c * q,
                                     colst + ch * rows * khw, khw));
        /* back to amsim_col2im's layout (rows x khw x c); for an identity geometry that is dx, as
         * col2im would copy it (a sum from +0 is never -0, so adding it to +0 is a copy) */
        float *pdx = dx->flat<float>().data();
        if (amsim_conv_patches_are_input(&g)) {
            Transpose(colst, c, rows * khw, 1, pdx);
            return;
        }
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, rows * khw * c, &cols_buf));
        Transpose(colst, c, rows * khw, 1, cols_buf.flat<float>().data());
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_col2im(&g, cols_buf.flat<float>().data(), pdx), "amsim_col2im"));
    }
};

class AmsimDepthwiseConv2DBackpropFilterOp : public DepthwiseKernel {
public:
    using DepthwiseKernel::DepthwiseKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &dy = ctx->input(2);
        struct amsim_conv_geometry g;
        int64_t q = 0;
        Tensor *dw = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kBackpropFilter, &g, &q, &dw));
        if (dw->NumElements() == 0)
            return;
        const int64_t c = g.c, khw = g.kh * g.kw, rows = g.n * g.oh * g.ow;
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(3), &lut));
        Tensor cols_buf, dyt_buf;
        const float *cols = nullptr;
        OP_REQUIRES_OK(ctx, ChannelPatches(ctx, g, x.flat<float>().data(), &cols_buf, &cols));
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * rows * q, &dyt_buf));
        float *dyt = dyt_buf.flat<float>().data();
        Transpose(dy.flat<float>().data(), rows, c, q, dyt);
        float *pdw = dw->flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch)  /* P_c^T: the strided view (khw x rows) of P_c */
            OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, khw, q, rows, cols + ch * rows * khw, 1, khw, dyt + ch * rows * q,
                                     q, 1, pdw + ch * q, c * q));
    }
};

}  // namespace
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2D").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimDepthwiseConv2DOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2DBackpropInput").Device(tensorflow::DEVICE_CPU),
                        amsim_tf::AmsimDepthwiseConv2DBackpropInputOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2DBackpropFilter").Device(tensorflow::DEVICE_CPU),
                        amsim_tf::AmsimDepthwiseConv2DBackpropFilterOp);
