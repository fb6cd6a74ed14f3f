/*
 * quantize.cc -- the element-wise steps around a quantized product's integer GEMM as TensorFlow
 * ops, each the engine's one pass (amsim/csrc/cpu/quantize.c) where TensorFlow's own ops took one pass and one
 * buffer per step (docs/quantized.md, "Quantizing and scaling back"):
 *
 * AmsimMinMax: the range a scale is set from, per tensor or per trailing channel (NaN left out).
 * AmsimQuantize: float32 to 8-bit integers, clip(round(x / scale) + zero, qmin, qmax), ties to even.
 * AmsimDequantize: 8-bit integers back to the float32 values they stand for.
 * AmsimClippedGradient: the straight-through gradient of the quantizer's clip.
 * AmsimIntDequantize: an integer op's sums of circuit products corrected for the zero points and
 *   scaled to float32.
 */
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "amsim_tf.h"
#include "tensorflow/core/framework/op.h"

REGISTER_OP("AmsimMinMax")
    .Input("x: float")
    .Output("lo: float")
    .Output("hi: float")
    .Attr("channels: int >= 1 = 1")
    .Attr("threads: int >= 0 = 0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) {
        int64_t channels;
        TF_RETURN_IF_ERROR(c->GetAttr("channels", &channels));
        c->set_output(0, c->Vector(channels));
        c->set_output(1, c->Vector(channels));
        return absl::OkStatus();
    })
    .Doc(R"doc(
The smallest and largest value of each channel of x's last axes, NaN left out; a channel
without numbers gets lo = inf, hi = -inf.

x: the values, whose last axes' sizes multiply to channels.
channels: 1 (the whole tensor) or more.
threads: at most this many engine threads (0: the engine's default).
)doc");

REGISTER_OP("AmsimQuantize")
    .Input("x: float")
    .Input("scale: float")
    .Input("zero: int32")
    .Output("q: out_type")
    .Output("sums: int32")
    .Attr("qmin: int")
    .Attr("qmax: int")
    .Attr("out_type: {uint8, int8}")
    .Attr("with_sums: bool = false")
    .Attr("threads: int >= 0 = 0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) {
        bool with_sums;
        TF_RETURN_IF_ERROR(c->GetAttr("with_sums", &with_sums));
        c->set_output(0, c->input(0));
        if (!with_sums) {
            c->set_output(1, c->Vector(0));
            return absl::OkStatus();
        }
        tensorflow::shape_inference::ShapeHandle x;
        TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
        c->set_output(1, c->Vector(c->Dim(x, -1)));
        return absl::OkStatus();
    })
    .Doc(R"doc(
8-bit integers q = clip(round(x / scale) + zero, qmin, qmax), rounding to nearest with ties to
even; NaN becomes the zero point.

x: the values, (..., C), C the product of its last axes' sizes.
scale: one element, or C: one per element of x's last axes.
zero: one element, or C (scale's count); each inside qmin..qmax.
sums: with with_sums, the integers' sums over every axis but the last, one per element of the last
  (the scale then one element or one per element of the last axis); else empty.
qmin, qmax: the range, within 0..255 for uint8 and -128..127 for int8.
threads: at most this many engine threads (0: the engine's default).
)doc");

REGISTER_OP("AmsimDequantize")
    .Input("q: T")
    .Input("scale: float")
    .Input("zero: int32")
    .Output("x: float")
    .Attr("T: {uint8, int8}")
    .Attr("threads: int >= 0 = 0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) {
        c->set_output(0, c->input(0));
        return absl::OkStatus();
    })
    .Doc(R"doc(
The float32 values (q - zero) * scale that 8-bit integers stand for (AmsimQuantize's inverse).

q: the integers, (..., C), C the product of its last axes' sizes.
scale: one element, or C: one per element of q's last axes.
zero: one element, or C (scale's count); each a value of q's type.
threads: at most this many engine threads (0: the engine's default).
)doc");

REGISTER_OP("AmsimClippedGradient")
    .Input("x: float")
    .Input("dy: float")
    .Input("lo: float")
    .Input("hi: float")
    .Output("dx: float")
    .Attr("threads: int >= 0 = 0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) {
        c->set_output(0, c->input(0));
        return absl::OkStatus();
    })
    .Doc(R"doc(
The straight-through gradient of the quantizer's clip: dy where lo <= x <= hi, else 0 (NaN too).

x: the quantized input; dy: the gradient of its quantized value, x's shape.
lo, hi: scalars, the range the quantizer does not clip.
threads: at most this many engine threads (0: the engine's default).
)doc");

REGISTER_OP("AmsimIntDequantize")
    .Input("acc: int32")
    .Input("row_sums: int32")
    .Input("col_sums: int32")
    .Input("zx: int32")
    .Input("zw: int32")
    .Input("k: int64")
    .Input("scale: float")
    .Input("bias: float")
    .Output("y: float")
    .Attr("threads: int >= 0 = 0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext *c) {
        c->set_output(0, c->input(0));
        return absl::OkStatus();
    })
    .Doc(R"doc(
The corrected, scaled sums of a quantized product: for output (..., f), f in group
g = f / (N / G), y = float(acc - zw * row_sums[..., g] - zx * col_sums[f] + k * zx * zw) * scale[f],
plus bias[f] (rounded after the multiply, as a separate add) where bias is not empty.

acc: (..., N) sums of k circuit products (each of magnitude at most 65535).
row_sums: (..., G), G dividing N, the input values' sums (magnitude at most 255 each); may be
  empty when zw is 0.
col_sums: (N,) the kernel values' sums; may be empty when zx is 0.
zx, zw: the input's and the kernel's zero points, scalars in -255..255.
k: the products per sum.
scale: a scalar, or (N,): the output's scale per column.
bias: (N,), or empty for none.
threads: at most this many engine threads (0: the engine's default).
)doc");

namespace amsim_tf {
namespace {

class AmsimMinMaxOp : public OpKernel {
public:
    explicit AmsimMinMaxOp(OpKernelConstruction *ctx) : OpKernel(ctx)
    {
        OP_REQUIRES_OK(ctx, ctx->GetAttr("channels", &channels_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
    }

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0);
        int64_t trailing = 1;  /* the elements of x's last axes, up to channels_ of them */
        for (int i = x.dims() - 1; i >= 0 && trailing < channels_; --i)
            trailing *= x.dim_size(i);
        OP_REQUIRES(ctx, channels_ == 1 || trailing == channels_,
                    absl::InvalidArgumentError("AmsimMinMax: channels must be the product of x's last axes' sizes, "
                                               "got " + std::to_string(channels_) + " for x " +
                                               x.shape().DebugString()));
        Tensor *lo = nullptr, *hi = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({channels_}), &lo));
        OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({channels_}), &hi));
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_minmax(x.NumElements(), channels_, x.flat<float>().data(),
                                                      lo->flat<float>().data(), hi->flat<float>().data(), threads_),
                                         "AmsimMinMax: amsim_minmax"));
    }

private:
    int64_t channels_ = 1;
    int threads_ = 0;
};

/* One scale and zero point per channel, as the engine takes them, from scale and zero of one element or
 * one per element of x's last axes (the channels); each zero point inside lo..hi. */
absl::Status PerChannel(const std::string &op, const Tensor &x, const Tensor &scale, const Tensor &zero, int lo,
                        int hi, std::vector<float> *scales, std::vector<int32_t> *zeros)
{
    const int64_t channels = std::max(scale.NumElements(), zero.NumElements());
    int64_t trailing = 1;  /* the elements of x's last axes, up to `channels` of them */
    for (int i = x.dims() - 1; i >= 0 && trailing < channels; --i)
        trailing *= x.dim_size(i);
    for (const Tensor *t : {&scale, &zero})
        if ((t->NumElements() != 1 && t->NumElements() != channels) || trailing != channels)
            return absl::InvalidArgumentError(op + ": scale and zero must have one element or one per element of "
                                              "x's last axes, got " + scale.shape().DebugString() + " and " +
                                              zero.shape().DebugString() + " for x " + x.shape().DebugString());
    scales->resize(channels);
    zeros->resize(channels);
    for (int64_t f = 0; f < channels; ++f) {
        (*scales)[f] = scale.flat<float>()(scale.NumElements() == 1 ? 0 : f);
        (*zeros)[f] = zero.flat<int32_t>()(zero.NumElements() == 1 ? 0 : f);
        if ((*zeros)[f] < lo || (*zeros)[f] > hi)
            return absl::InvalidArgumentError(op + ": the zero point " + std::to_string((*zeros)[f]) + " is outside " +
                                              std::to_string(lo) + ".." + std::to_string(hi));
    }
    return absl::OkStatus();
}

class AmsimQuantizeOp : public OpKernel {
public:
    explicit AmsimQuantizeOp(OpKernelConstruction *ctx) : OpKernel(ctx)
    {
        tensorflow::DataType out;
        OP_REQUIRES_OK(ctx, ctx->GetAttr("qmin", &qmin_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("qmax", &qmax_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("out_type", &out));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("with_sums", &with_sums_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
        const bool int8 = out == tensorflow::DT_INT8;
        OP_REQUIRES(ctx, qmin_ <= qmax_ && qmin_ >= (int8 ? -128 : 0) && qmax_ <= (int8 ? 127 : 255),
                    absl::InvalidArgumentError("AmsimQuantize: qmin..qmax must lie within " +
                                               std::string(int8 ? "-128..127" : "0..255") + ", got " +
                                               std::to_string(qmin_) + ".." + std::to_string(qmax_)));
    }

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0);
        OP_REQUIRES(ctx, !with_sums_ || x.dims() >= 1,
                    absl::InvalidArgumentError("AmsimQuantize: sums need x with at least 1 dimension"));
        const int64_t width = with_sums_ ? x.dim_size(x.dims() - 1) : 0;
        OP_REQUIRES(ctx, width == 0 || x.NumElements() / width <= kMaxSumTerms,
                    absl::InvalidArgumentError("AmsimQuantize: sums of more than " + std::to_string(kMaxSumTerms) +
                                               " 8-bit values can overflow int32"));
        Tensor *q = nullptr, *sums = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &q));
        OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({width}), &sums));
        if (q->NumElements() == 0) {  /* nothing to quantize: any scale will do */
            if (width > 0)
                std::memset(sums->data(), 0, sums->TotalBytes());
            return;
        }
        std::vector<float> scales;
        std::vector<int32_t> zeros;
        OP_REQUIRES_OK(ctx,
                       PerChannel("AmsimQuantize", x, ctx->input(1), ctx->input(2), qmin_, qmax_, &scales, &zeros));
        const int64_t channels = static_cast<int64_t>(scales.size());
        OP_REQUIRES(ctx, !with_sums_ || channels == 1 || channels == width,
                    absl::InvalidArgumentError("AmsimQuantize: with sums, scale and zero must have one element or one "
                                               "per element of x's last axis"));
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_quantize(x.NumElements(), channels, x.flat<float>().data(),
                                                        scales.data(), zeros.data(), qmin_, qmax_,
                                                        static_cast<uint8_t *>(q->data()), width,
                                                        with_sums_ ? sums->flat<int32_t>().data() : nullptr,
                                                        threads_),
                                         "AmsimQuantize: amsim_quantize"));
    }

private:
    static constexpr int64_t kMaxSumTerms = std::numeric_limits<int32_t>::max() / 255;
    bool with_sums_ = false;
    int qmin_ = 0, qmax_ = 0, threads_ = 0;
};

class AmsimDequantizeOp : public OpKernel {
public:
    explicit AmsimDequantizeOp(OpKernelConstruction *ctx) : OpKernel(ctx)
    {
        tensorflow::DataType in;
        OP_REQUIRES_OK(ctx, ctx->GetAttr("T", &in));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
        signed_ = in == tensorflow::DT_INT8;
    }

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &q = ctx->input(0);
        Tensor *x = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, q.shape(), &x));
        if (x->NumElements() == 0)
            return;
        std::vector<float> scales;
        std::vector<int32_t> zeros;
        OP_REQUIRES_OK(ctx, PerChannel("AmsimDequantize", q, ctx->input(1), ctx->input(2), signed_ ? -128 : 0,
                                       signed_ ? 127 : 255, &scales, &zeros));
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_dequantize(q.NumElements(), static_cast<int64_t>(scales.size()),
                                                          static_cast<const uint8_t *>(q.data()), signed_ ? 1 : 0,
                                                          scales.data(), zeros.data(), x->flat<float>().data(),
                                                          threads_),
                                         "AmsimDequantize: amsim_dequantize"));
    }

private:
    bool signed_ = false;
    int threads_ = 0;
};

class AmsimClippedGradientOp : public OpKernel {
public:
    explicit AmsimClippedGradientOp(OpKernelConstruction *ctx) : OpKernel(ctx)
    {
        OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
    }

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &dy = ctx->input(1), &lo = ctx->input(2), &hi = ctx->input(3);
        OP_REQUIRES(ctx, x.shape() == dy.shape(),
                    absl::InvalidArgumentError("AmsimClippedGradient: dy must have x's shape " +
                                               x.shape().DebugString() + ", got " + dy.shape().DebugString()));
        OP_REQUIRES(ctx, lo.NumElements() == 1 && hi.NumElements() == 1,
                    absl::InvalidArgumentError("AmsimClippedGradient: lo and hi must be scalars, got " +
                                               lo.shape().DebugString() + " and " + hi.shape().DebugString()));
        Tensor *dx = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_clipped_gradient(x.NumElements(), x.flat<float>().data(),
                                                                dy.flat<float>().data(), lo.flat<float>()(0),
                                                                hi.flat<float>()(0), dx->flat<float>().data(),
                                                                threads_),
                                         "AmsimClippedGradient: amsim_clipped_gradient"));
    }

private:
    int threads_ = 0;
};

class AmsimIntDequantizeOp : public OpKernel {
public:
    explicit AmsimIntDequantizeOp(OpKernelConstruction *ctx) : OpKernel(ctx)
    {
        OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
    }

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &acc = ctx->input(0), &row_sums = ctx->input(1), &col_sums = ctx->input(2);
        const Tensor &zx_t = ctx->input(3), &zw_t = ctx->input(4), &k_t = ctx->input(5), &scale = ctx->input(6);
        const Tensor &bias = ctx->input(7);
        using Named = std::pair<const char *, const Tensor *>;
        for (const auto &[name, t] : {Named{"zx", &zx_t}, Named{"zw", &zw_t}, Named{"k", &k_t}})
            OP_REQUIRES(ctx, t->dims() == 0,
                        absl::InvalidArgumentError(std::string("AmsimIntDequantize: ") + name +
                                                   " must be a scalar, got " + t->shape().DebugString()));
        const int32_t zx = zx_t.scalar<int32_t>()(), zw = zw_t.scalar<int32_t>()();
        const int64_t k = k_t.scalar<int64_t>()();
        OP_REQUIRES(ctx, zx >= -255 && zx <= 255 && zw >= -255 && zw <= 255 && k >= 0,
                    absl::InvalidArgumentError("AmsimIntDequantize: zero points must be in -255..255 and k at least 0, "
                                               "got zx = " + std::to_string(zx) + ", zw = " + std::to_string(zw) +
                                               ", k = " + std::to_string(k)));
        OP_REQUIRES(ctx, acc.dims() >= 1,
                    absl::InvalidArgumentError("AmsimIntDequantize: acc needs at least 1 dimension, got a scalar"));
        const int64_t n = acc.dim_size(acc.dims() - 1), rows = n ? acc.NumElements() / n : 0;
        int64_t groups = 1;
        OP_REQUIRES_OK(ctx, CheckRowSums(acc, row_sums, zw, &groups));
        const bool cols = zx != 0 || col_sums.NumElements() > 0;
        OP_REQUIRES(ctx, !cols || (col_sums.dims() == 1 && col_sums.dim_size(0) == n),
                    absl::InvalidArgumentError("AmsimIntDequantize: col_sums must be (" + std::to_string(n) +
                                               ",) for acc " + acc.shape().DebugString() + ", got " +
                                               col_sums.shape().DebugString()));
        const int64_t scales = scale.NumElements();
        OP_REQUIRES(ctx, scale.dims() == 0 || (scale.dims() == 1 && scales == n),
                    absl::InvalidArgumentError("AmsimIntDequantize: scale must be a scalar or (" + std::to_string(n) +
                                               ",), got " + scale.shape().DebugString()));
        const bool biased = bias.NumElements() > 0;
        OP_REQUIRES(ctx, bias.dims() == 1 && (!biased || bias.dim_size(0) == n),
                    absl::InvalidArgumentError("AmsimIntDequantize: bias must be (" + std::to_string(n) +
                                               ",) or empty, got " + bias.shape().DebugString()));
        Tensor *y = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, acc.shape(), &y));
        if (y->NumElements() == 0)
            return;
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_int_dequantize(
                                             rows, n, acc.flat<int32_t>().data(),
                                             zw ? row_sums.flat<int32_t>().data() : nullptr, groups,
                                             zx ? col_sums.flat<int32_t>().data() : nullptr, zx, zw, k,
                                             scale.flat<float>().data(), scale.dims() == 0 ? 1 : n,
                                             biased ? bias.flat<float>().data() : nullptr,
                                             y->flat<float>().data(), threads_),
                                         "AmsimIntDequantize: amsim_int_dequantize"));
    }

private:
    /* row_sums: acc's leading dimensions and a last one G dividing N (the groups), or empty when zw is 0. */
    static absl::Status CheckRowSums(const Tensor &acc, const Tensor &row_sums, int32_t zw, int64_t *groups)
    {
        if (zw == 0 && row_sums.NumElements() == 0)
            return absl::OkStatus();
        bool ok = row_sums.dims() == acc.dims();
        for (int i = 0; ok && i < acc.dims() - 1; ++i)
            ok = row_sums.dim_size(i) == acc.dim_size(i);
        const int64_t n = acc.dim_size(acc.dims() - 1), g = ok ? row_sums.dim_size(acc.dims() - 1) : 0;
        if (!ok || g < 1 || (n > 0 && n % g != 0))
            return absl::InvalidArgumentError("AmsimIntDequantize: row_sums must have acc's leading dimensions and a "
                                              "last one dividing its last, got " + row_sums.shape().DebugString() +
                                              " for acc " + acc.shape().DebugString());
        *groups = g;
        return absl::OkStatus();
    }

    int threads_ = 0;
};

}  // namespace
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimMinMax").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimMinMaxOp);
REGISTER_KERNEL_BUILDER(Name("AmsimQuantize").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimQuantizeOp);
REGISTER_KERNEL_BUILDER(Name("AmsimDequantize").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimDequantizeOp);
REGISTER_KERNEL_BUILDER(Name("AmsimClippedGradient").Device(tensorflow::DEVICE_CPU),
                        amsim_tf::AmsimClippedGradientOp);
REGISTER_KERNEL_BUILDER(Name("AmsimIntDequantize").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimIntDequantizeOp);
