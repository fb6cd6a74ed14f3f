/*
 * depthwise.cc -- AmsimDepthwiseConv2D and its two gradients.
 *
 * NHWC input x (C channels), filter W of shape (KH, KW, C, Q); output channel c*Q + q is input
 * channel c convolved with W[:, :, c, q]. Each channel is one GEMM, exactly amsim.gemm's conv2d
 * family on that channel alone (x[..., c:c+1] with W[:, :, c:c+1, :]), so K runs over (kh, kw):
 *   forward          y_c  = P_c (x) W_c                 P_c: (N*OH*OW) x (KH*KW), W_c: (KH*KW) x Q
 *   input gradient   dx_c = col2im(dy_c (x) W_c^T)
 *   filter gradient  dW_c = P_c^T (x) dy_c
 * The engine computes each pass directly on the NHWC tensors (amsim_depthwise_conv2d and its
 * gradients, amsim/csrc/cpu/depthwise.c), with those GEMMs' products and sums in their order:
 * per channel the GEMMs have one output column or one inner term, too small for a GEMM kernel,
 * and the patch matrices, transposes and per-channel calls they needed cost more than the
 * products.
 * The operands' checks (ConvKernel::Prologue) are shared with conv2d and the GPU kernels.
 */
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
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(2), &lut));
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_depthwise_conv2d(&lut->lut, &g, q, x.flat<float>().data(),
                                                                w.flat<float>().data(), y->flat<float>().data(),
                                                                arith_.rounding, arith_.mode, arith_.threads),
                                         "amsim_depthwise_conv2d"));
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
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(3), &lut));
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_depthwise_backprop_input(&lut->lut, &g, q, w.flat<float>().data(),
                                                                        dy.flat<float>().data(),
                                                                        dx->flat<float>().data(), arith_.rounding,
                                                                        arith_.mode, arith_.threads),
                                         "amsim_depthwise_backprop_input"));
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
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(3), &lut));
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_depthwise_backprop_filter(&lut->lut, &g, q, x.flat<float>().data(),
                                                                         dy.flat<float>().data(),
                                                                         dw->flat<float>().data(), arith_.rounding,
                                                                         arith_.mode, arith_.threads),
                                         "amsim_depthwise_backprop_filter"));
    }
};

}  // namespace
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2D").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimDepthwiseConv2DOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2DBackpropInput").Device(tensorflow::DEVICE_CPU),
                        amsim_tf::AmsimDepthwiseConv2DBackpropInputOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDepthwiseConv2DBackpropFilter").Device(tensorflow::DEVICE_CPU),
                        amsim_tf::AmsimDepthwiseConv2DBackpropFilterOp);
