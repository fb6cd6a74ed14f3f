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
 * stride C: x, dy, y and dx are transposed channel-major in work buffers, so that each channel is
 * a contiguous image, whose patch matrix (amsim_im2col) and col2im are those of a one-channel
 * conv2d, made channel by channel; W_c is the small strided view W[:, :, c, :], and dW_c is
 * written in place with a leading dimension of C*Q.
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
 * NHWC tensor (rows = N*H*W, cols = channels) channel-major and back.
 *
 * Short rows (up to 4K floats) go in bands of rows small enough for the L2 cache, each read from
 * memory once and written as one contiguous run per column; square tiles would scatter their
 * stores a whole (long) column apart, often a multiple of 4 KiB, which maps them onto the same
 * cache sets. Long rows (a channel-major tensor's) go in tiles of 16 x 16 blocks, row by row: a
 * band would be a row or two, each of its stores a whole column apart, so that every line of the
 * destination would be written once per row; in a tile each source line is used whole as soon as
 * it is read, and the 16 destination runs (short columns) stay in the L1 cache. */
void Transpose(const float *src, int64_t rows, int64_t cols, int64_t block, float *dst)
{
    constexpr int64_t kBandFloats = int64_t{1} << 16, kTile = 16;
    if (cols * block <= kBandFloats / kTile) {
        const int64_t band = kBandFloats / (cols * block);
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
        return;
    }
    for (int64_t i0 = 0; i0 < rows; i0 += kTile) {
        const int64_t i1 = std::min(rows, i0 + kTile);
        for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
            const int64_t j1 = std::min(cols, j0 + kTile);
            for (int64_t i = i0; i < i1; ++i) {
                const float *s = src + (i * cols + j0) * block;
                float *d = dst + (j0 * rows + i) * block;
                if (block == 1) {
                    for (int64_t j = j0; j < j1; ++j, d += rows)
                        *d = *s++;
                } else {
                    for (int64_t j = j0; j < j1; ++j, s += block, d += rows * block)
                        std::memcpy(d, s, sizeof(float) * block);
                }
            }
        }
    }
}

/* One channel of a depthwise geometry: the same geometry on a single-channel image. Channel c's
 * patch matrix P_c is the patch matrix of channel c's image alone (im2col copies, per channel,
 * the same elements in the same (kh, kw) order), and its col2im sums, per channel, what the
 * col2im of all channels sums, in the same order. */
struct amsim_conv_geometry OneChannel(const struct amsim_conv_geometry &g)
{
    struct amsim_conv_geometry one = g;
    one.c = 1;
    return one;
}

/* The input channel-major (C images of N*H*W, one after the other), and a work buffer for one
 * channel's patch matrix (rows x KH*KW), or none when the patches are the image itself. Each
 * channel's patches are made as its GEMM needs them, while they fit the caches: making all
 * channels' at once and transposing them channel-major moved KH*KW times the input through
 * memory twice. */
class ChannelImages {
public:
    absl::Status Init(OpKernelContext *ctx, const struct amsim_conv_geometry &g, const float *x)
    {
        one_ = OneChannel(g);
        image_ = g.n * g.h * g.w;
        TF_RETURN_IF_ERROR(WorkBuffer(ctx, image_ * g.c, &images_));
        Transpose(x, image_, g.c, 1, images_.flat<float>().data());
        if (!amsim_conv_patches_are_input(&one_))
            TF_RETURN_IF_ERROR(WorkBuffer(ctx, one_.n * one_.oh * one_.ow * one_.kh * one_.kw, &patches_));
        return absl::OkStatus();
    }

    /* P_ch, valid until the next call. */
    absl::Status Patches(int64_t ch, const float **cols)
    {
        const float *image = images_.flat<float>().data() + ch * image_;
        if (amsim_conv_patches_are_input(&one_)) {
            *cols = image;
            return absl::OkStatus();
        }
        TF_RETURN_IF_ERROR(EngineStatus(amsim_im2col(&one_, image, patches_.flat<float>().data()), "amsim_im2col"));
        *cols = patches_.flat<float>().data();
        return absl::OkStatus();
    }

private:
    struct amsim_conv_geometry one_ = {};
    int64_t image_ = 0;
    Tensor images_, patches_;
};

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
        ChannelImages images;
        OP_REQUIRES_OK(ctx, images.Init(ctx, g, x.flat<float>().data()));
        Tensor yt_buf;
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * rows * q, &yt_buf));
        float *yt = yt_buf.flat<float>().data();
        const float *pw = w.flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch) {  /* W_c = W[:, :, ch, :], rows of stride c*q */
            const float *cols = nullptr;
            OP_REQUIRES_OK(ctx, images.Patches(ch, &cols));
            OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, rows, q, khw, cols, khw, 1, pw + ch * q, c * q, 1,
                                     yt + ch * rows * q, q));
        }
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
        const int64_t c = g.c, khw = g.kh * g.kw, rows = g.n * g.oh * g.ow, image = g.n * g.h * g.w;
        const struct amsim_conv_geometry one = OneChannel(g);
        /* for an identity geometry the patch gradients are dx, as col2im would copy them (a sum
         * from +0 is never -0, so adding it to +0 is a copy): the GEMM writes dx's channel */
        const bool direct = amsim_conv_patches_are_input(&one);
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(3), &lut));
        Tensor dyt_buf, dxt_buf, cols_buf;
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * rows * q, &dyt_buf));
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * image, &dxt_buf));
        if (!direct)
            OP_REQUIRES_OK(ctx, WorkBuffer(ctx, rows * khw, &cols_buf));
        float *dyt = dyt_buf.flat<float>().data(), *dxt = dxt_buf.flat<float>().data();
        Transpose(dy.flat<float>().data(), rows, c, q, dyt);
        const float *pw = w.flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch) {  /* W_c^T: the strided view (q x khw) of W[:, :, ch, :] */
            float *cols = direct ? dxt + ch * image : cols_buf.flat<float>().data();
            OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, rows, khw, q, dyt + ch * rows * q, q, 1, pw + ch * q, 1, c * q,
                                     cols, khw));
            if (!direct)  /* col2im sums into dx's channel from +0 */
                OP_REQUIRES_OK(ctx, EngineStatus(amsim_col2im(&one, cols, dxt + ch * image), "amsim_col2im"));
        }
        Transpose(dxt, c, image, 1, dx->flat<float>().data());
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
        ChannelImages images;
        OP_REQUIRES_OK(ctx, images.Init(ctx, g, x.flat<float>().data()));
        Tensor dyt_buf;
        OP_REQUIRES_OK(ctx, WorkBuffer(ctx, c * rows * q, &dyt_buf));
        float *dyt = dyt_buf.flat<float>().data();
        Transpose(dy.flat<float>().data(), rows, c, q, dyt);
        float *pdw = dw->flat<float>().data();
        for (int64_t ch = 0; ch < c; ++ch) {  /* P_c^T: the strided view (khw x rows) of P_c */
            const float *cols = nullptr;
            OP_REQUIRES_OK(ctx, images.Patches(ch, &cols));
            OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, khw, q, rows, cols, 1, khw, dyt + ch * rows * q, q, 1,
                                     pdw + ch * q, c * q));
        }
    }
};

}  // namespace
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2D").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimDepthwiseConv2DOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2DBackpropInput").Device(tensorflow::DEVICE_CPU),
                        amsim_tf::AmsimDepthwiseConv2DBackpropInputOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2DBackpropFilter").Device(tensorflow::DEVICE_CPU),
                        amsim_tf::AmsimDepthwiseConv2DBackpropFilterOp);
