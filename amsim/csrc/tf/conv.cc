/*
 * conv.cc -- AmsimConv2D and its two gradients, as amsim.gemm's conv2d family computes them.
 *
 * NHWC input, HWIO filter. With P the patch matrix (N*OH*OW) x (KH*KW*C) of amsim_im2col:
 *   AmsimConv2D                y  = P (x) W                  (W reshaped to (KH*KW*C) x O)
 *   AmsimConv2DBackpropInput   dx = col2im(dy (x) W^T)       (dy reshaped to (N*OH*OW) x O)
 *   AmsimConv2DBackpropFilter  dW = P^T (x) dy
 * The left operand indexes the LUT's rows. Transposed operands are strided views: no copies.
 */
#include "amsim_tf.h"
#include "tensorflow/core/framework/op.h"

REGISTER_OP("AmsimConv2D")
    .Input("input: float")
    .Input("filter: float")
    .Input("lut: float")
    .Output("output: float")
    .AMSIM_TF_CONV_ATTRS
    .AMSIM_TF_ARITHMETIC_ATTRS
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) { return amsim_tf::ConvOutputShape(c, false); })
    .Doc("Approximate conv2d (amsim.gemm.conv2d): the GEMM of the input's patches with the filter.");

REGISTER_OP("AmsimConv2DBackpropInput")
    .Input("input_sizes: int32")
    .Input("filter: float")
    .Input("out_backprop: float")
    .Input("lut: float")
    .Output("output: float")
    .AMSIM_TF_CONV_ATTRS
    .AMSIM_TF_ARITHMETIC_ATTRS
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) { return amsim_tf::ShapeFromSizes(c, 0); })
    .Doc("Gradient of AmsimConv2D for its input (amsim.gemm.conv2d_backprop_input): col2im(dy (x) W^T).");

REGISTER_OP("AmsimConv2DBackpropFilter")
    .Input("input: float")
    .Input("filter_sizes: int32")
    .Input("out_backprop: float")
    .Input("lut: float")
    .Output("output: float")
    .AMSIM_TF_CONV_ATTRS
    .AMSIM_TF_ARITHMETIC_ATTRS
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) { return amsim_tf::ShapeFromSizes(c, 1); })
    .Doc("Gradient of AmsimConv2D for its filter (amsim.gemm.conv2d_backprop_filter): patches^T (x) dy.");

namespace amsim_tf {
namespace {

class AmsimConv2DOp : public ConvKernel {
public:
    using ConvKernel::ConvKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &w = ctx->input(1);
        struct amsim_conv_geometry g;
        int64_t o;
        Tensor *y = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kForward, &g, &o, &y));
        if (y->NumElements() == 0)
            return;
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(2), &lut));
        Tensor buf;
        const float *cols = nullptr;
        OP_REQUIRES_OK(ctx, Patches(ctx, g, x.flat<float>().data(), &buf, &cols));
        const int64_t rows = g.n * g.oh * g.ow, k = g.kh * g.kw * g.c;
        OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, rows, o, k, cols, k, 1, w.flat<float>().data(), o, 1,
                                 y->flat<float>().data(), o));
    }
};

class AmsimConv2DBackpropInputOp : public ConvKernel {
public:
    using ConvKernel::ConvKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &w = ctx->input(1), &dy = ctx->input(2);
        struct amsim_conv_geometry g;
        int64_t o;
        Tensor *dx = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kBackpropInput, &g, &o, &dx));
        if (dx->NumElements() == 0)
            return;
        float *pdx = dx->flat<float>().data();
        const int64_t rows = g.n * g.oh * g.ow, k = g.kh * g.kw * g.c;
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(3), &lut));
        /* W^T is the strided view (o x k) of W (k x o). col2im of an identity geometry is a copy:
         * the GEMM writes dx directly (a sum from +0 is never -0, so adding it to +0 is a copy). */
        const bool direct = amsim_conv_patches_are_input(&g);
        Tensor buf;
        if (!direct)
            OP_REQUIRES_OK(ctx, WorkBuffer(ctx, rows * k, &buf));
        float *cols = direct ? pdx : buf.flat<float>().data();
        OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, rows, k, o, dy.flat<float>().data(), o, 1, w.flat<float>().data(), 1,
                                 o, cols, k));
        if (!direct)  /* col2im sums into dx from +0 */
            OP_REQUIRES_OK(ctx, EngineStatus(amsim_col2im(&g, cols, pdx), "amsim_col2im"));
    }
};

class AmsimConv2DBackpropFilterOp : public ConvKernel {
public:
    using ConvKernel::ConvKernel;

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &dy = ctx->input(2);
        struct amsim_conv_geometry g;
        int64_t o;
        Tensor *dw = nullptr;
        OP_REQUIRES_OK(ctx, Prologue(ctx, Pass::kBackpropFilter, &g, &o, &dw));
        if (dw->NumElements() == 0)
            return;
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(3), &lut));
        Tensor buf;
        const float *cols = nullptr;
        OP_REQUIRES_OK(ctx, Patches(ctx, g, x.flat<float>().data(), &buf, &cols));
        const int64_t rows = g.n * g.oh * g.ow, k = g.kh * g.kw * g.c;
        /* P^T is the strided view (k x rows) of P (rows x k). */
        OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, k, o, rows, cols, 1, k, dy.flat<float>().data(), o, 1,
                                 dw->flat<float>().data(), o));
    }
};

}  // namespace
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimConv2D").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimConv2DOp);
REGISTER_KERNEL_BUILDER(Name("AmsimConv2DBackpropInput").Device(tensorflow::DEVICE_CPU).HostMemory("input_sizes"),
                        amsim_tf::AmsimConv2DBackpropInputOp);
REGISTER_KERNEL_BUILDER(Name("AmsimConv2DBackpropFilter").Device(tensorflow::DEVICE_CPU).HostMemory("filter_sizes"),
                        amsim_tf::AmsimConv2DBackpropFilterOp);
