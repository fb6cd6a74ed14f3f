/*
 * int_conv.cc -- AmsimIntConv2D: the integer LUT convolution (amsim.gemm.int_conv2d) as a TensorFlow op.
 *
 * A grouped conv2d of n-bit operand patterns (1 <= n <= 8; a pattern is the operand mod 2^n,
 * amsim/gemm/integer.py) on NHWC input and (KH, KW, C/groups, F) filters, TensorFlow's geometry:
 *
 *     output[n, oh, ow, f] = sum over the patch (i, j, c) of group q = f / (F/groups) of
 *                            lut[x_pad[n, oh*sh + i*dh, ow*sw + j*dw, q*C/groups + c], filter[i, j, c, f]]
 *     patch_sums[n, oh, ow, q] = sum of that patch's input values
 *
 * where x_pad is the input padded with the pattern `pad` (a quantized input's zero point, which
 * stands for 0). Computed as the engine's amsim_int_im2col (a patch matrix per group, and the
 * patch sums in the same pass) and one amsim_int_gemm per group, the group's filter columns
 * copied contiguous when there are several. A depthwise conv2d of channel multiplier Q is
 * groups = C with the filter (KH, KW, C, Q) reshaped to (KH, KW, 1, C*Q).
 *
 * The op never wraps: it refuses a patch of K products that the table's largest magnitude could
 * take out of int32. It has no gradient (amsim.keras.int_ops registers none): the quantized
 * layers give it a straight-through one. Its helpers are in a namespace of their own, since the
 * op library is one translation unit (amsim/keras/build.py).
 */
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "amsim_tf.h"
#include "tensorflow/core/framework/op.h"

namespace amsim_tf {
namespace int_conv {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

constexpr int kMaxBits = 8;  /* a pattern is one byte */
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

absl::Status CheckBits(int bits)
{
    if (bits < 1 || bits > kMaxBits)
        return absl::InvalidArgumentError("AmsimIntConv2D: bits must be in 1.." + std::to_string(kMaxBits) +
                                          ", got " + std::to_string(bits));
    return absl::OkStatus();
}

absl::Status IntConvShape(InferenceContext *c)
{
    int bits;
    int64_t groups;
    TF_RETURN_IF_ERROR(c->GetAttr("bits", &bits));
    TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups));
    TF_RETURN_IF_ERROR(CheckBits(bits));
    ShapeHandle x, w, lut, pad;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
    TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &w));
    TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &lut));
    TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 0, &pad));
    DimensionHandle side, channels;
    TF_RETURN_IF_ERROR(c->WithValue(c->Dim(lut, 0), int64_t{1} << bits, &side));
    TF_RETURN_IF_ERROR(c->WithValue(c->Dim(lut, 1), int64_t{1} << bits, &side));
    TF_RETURN_IF_ERROR(c->Multiply(c->Dim(w, 2), groups, &channels));
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 3), channels, &channels));
    const int64_t f = c->Value(c->Dim(w, 3));
    if (f >= 0 && f % groups != 0)
        return absl::InvalidArgumentError("AmsimIntConv2D: the filter's " + std::to_string(f) +
                                          " output channels do not split into " + std::to_string(groups) + " groups");
    ConvAttrs attrs;
    TF_RETURN_IF_ERROR(ReadConvAttrs(c, &attrs));
    DimensionHandle oh = c->UnknownDim(), ow = c->UnknownDim();
    const int64_t h = c->Value(c->Dim(x, 1)), wd = c->Value(c->Dim(x, 2));
    const int64_t kh = c->Value(c->Dim(w, 0)), kw = c->Value(c->Dim(w, 1));
    if (h >= 0 && wd >= 0 && kh >= 0 && kw >= 0) {
        struct amsim_conv_geometry g;
        TF_RETURN_IF_ERROR(ConvGeometry(attrs, 1, h, wd, 1, kh, kw, &g));
        oh = c->MakeDim(g.oh);
        ow = c->MakeDim(g.ow);
    }
    c->set_output(0, c->MakeShape({c->Dim(x, 0), oh, ow, c->Dim(w, 3)}));
    c->set_output(1, c->MakeShape({c->Dim(x, 0), oh, ow, c->MakeDim(groups)}));
    return absl::OkStatus();
}

}  // namespace
}  // namespace int_conv
}  // namespace amsim_tf

REGISTER_OP("AmsimIntConv2D")
    .Input("input: uint8")
    .Input("filter: uint8")
    .Input("lut: int32")
    .Input("pad: uint8")
    .Output("output: int32")
    .Output("patch_sums: int32")
    .AMSIM_TF_CONV_ATTRS
    .Attr("groups: int >= 1 = 1")
    .Attr("bits: int = 8")
    .Attr("signed: bool = false")
    .Attr("threads: int >= 0 = 0")
    .SetShapeFn(amsim_tf::int_conv::IntConvShape)
    .Doc(R"doc(
Integer LUT conv2d (amsim.gemm.int_conv2d): for each output channel f of group q, the exact int32
sum over its patch of lut[input pattern, filter pattern], the input padded with the pattern pad.

input: (N, H, W, C) operand patterns (value mod 2^bits), the table's row operand.
filter: (KH, KW, C/groups, F) operand patterns, the column operand; F divisible by groups.
lut: the (2^bits, 2^bits) int32 product table, row = the input's pattern.
pad: the pattern of the padding (a quantized input's zero point).
output: (N, OH, OW, F) exact sums; refused when K = KH*KW*C/groups products of the table's
  largest magnitude could overflow int32.
patch_sums: (N, OH, OW, groups) each patch's sum of its input values, pad included: of the patterns,
  or of the bits-wide two's-complement values they hold when signed.
groups: input channel groups (C / groups channels each); groups = C with the filter reshaped to
  (KH, KW, 1, C*Q) is a depthwise conv2d of multiplier Q.
bits: the operand width n, 1..8; a pattern of 2^bits or more is refused.
signed: the patterns hold two's-complement values (only patch_sums depends on it).
threads: at most this many engine threads (0: the engine's default).
)doc");

namespace amsim_tf {
namespace int_conv {
namespace {

/* The first pattern of p[0..count) that is not an n-bit one, or -1. */
int FirstBadPattern(const uint8_t *p, int64_t count, int bits)
{
    for (int64_t e = 0; e < count; ++e)
        if (p[e] >> bits)
            return p[e];
    return -1;
}

class AmsimIntConv2DOp : public OpKernel {
public:
    explicit AmsimIntConv2DOp(OpKernelConstruction *ctx) : OpKernel(ctx)
    {
        OP_REQUIRES_OK(ctx, ReadConvAttrs(ctx, &conv_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("bits", &bits_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("signed", &signed_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
        OP_REQUIRES_OK(ctx, CheckBits(bits_));
    }

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &x = ctx->input(0), &w = ctx->input(1), &lut = ctx->input(2), &pad = ctx->input(3);
        struct amsim_conv_geometry g;
        OP_REQUIRES_OK(ctx, CheckShapes(x, w, lut, pad, &g));
        const int64_t F = w.dim_size(3), Fg = F / groups_, K = g.kh * g.kw * (g.c / groups_);
        const int64_t P = g.n * g.oh * g.ow;
        Tensor *out = nullptr, *sums = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.n, g.oh, g.ow, F}), &out));
        OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({g.n, g.oh, g.ow, groups_}), &sums));
        if (P == 0)
            return;
        OP_REQUIRES_OK(ctx, CheckSums(lut, K));
        const uint8_t pattern = pad.scalar<uint8_t>()();
        OP_REQUIRES_OK(ctx, CheckPatterns(x, w, pattern));
        const uint8_t *px = x.flat<uint8_t>().data(), *pw = w.flat<uint8_t>().data();
        const int32_t *table = lut.flat<int32_t>().data();
        int32_t *py = out->flat<int32_t>().data();

        Tensor cols;
        OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_UINT8, TensorShape({groups_ * P * K}), &cols));
        uint8_t *pc = cols.flat<uint8_t>().data();
        OP_REQUIRES_OK(ctx, EngineStatus(amsim_int_im2col(&g, px, pattern, groups_, pc, sums->flat<int32_t>().data(),
                                                          signed_ ? bits_ : 0, threads_),
                                         "AmsimIntConv2D: amsim_int_im2col"));
        if (F == 0)
            return;
        if (K == 0) {  /* an empty sum is 0 */
            std::memset(py, 0, out->TotalBytes());
            return;
        }
        if (groups_ == 1) {  /* the filter is the (K, F) matrix, the output the (P, F) one */
            OP_REQUIRES_OK(ctx, IntGemm(table, P, F, K, pc, pw, py));
            return;
        }
        /* Group q: its patch matrix times filter columns [q*Fg, (q+1)*Fg), copied contiguous, into
         * the output's columns of the group. */
        Tensor wq, yq;
        OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_UINT8, TensorShape({K * Fg}), &wq));
        OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT32, TensorShape({P * Fg}), &yq));
        uint8_t *pwq = wq.flat<uint8_t>().data();
        int32_t *pyq = yq.flat<int32_t>().data();
        for (int64_t q = 0; q < groups_; ++q) {
            for (int64_t k = 0; k < K; ++k)
                std::memcpy(pwq + k * Fg, pw + k * F + q * Fg, Fg);
            OP_REQUIRES_OK(ctx, IntGemm(table, P, Fg, K, pc + q * P * K, pwq, pyq));
            for (int64_t p = 0; p < P; ++p)
                std::memcpy(py + p * F + q * Fg, pyq + p * Fg, Fg * sizeof(int32_t));
        }
    }

private:
    /* Ranks, channels and groups, the table's size, the geometry (TensorFlow's rules). */
    absl::Status CheckShapes(const Tensor &x, const Tensor &w, const Tensor &lut, const Tensor &pad,
                             struct amsim_conv_geometry *g) const
    {
        const std::string shapes = "input " + x.shape().DebugString() + " and filter " + w.shape().DebugString();
        if (x.dims() != 4 || w.dims() != 4)
            return absl::InvalidArgumentError("AmsimIntConv2D: needs an NHWC input and a (KH, KW, C/groups, F) "
                                              "filter, got " + shapes);
        const int64_t C = x.dim_size(3), groups = groups_;
        if (w.dim_size(2) * groups != C)
            return absl::InvalidArgumentError("AmsimIntConv2D: input has " + std::to_string(C) + " channels, a filter "
                                              "of " + std::to_string(w.dim_size(2)) + " input channels in " +
                                              std::to_string(groups) + " groups expects " +
                                              std::to_string(w.dim_size(2) * groups) + " (" + shapes + ")");
        if (w.dim_size(3) % groups != 0)
            return absl::InvalidArgumentError("AmsimIntConv2D: the filter's " + std::to_string(w.dim_size(3)) +
                                              " output channels do not split into " + std::to_string(groups) +
                                              " groups");
        const int64_t side = int64_t{1} << bits_;
        if (lut.dims() != 2 || lut.dim_size(0) != side || lut.dim_size(1) != side)
            return absl::InvalidArgumentError("AmsimIntConv2D: lut must be [" + std::to_string(side) + "," +
                                              std::to_string(side) + "] for " + std::to_string(bits_) +
                                              "-bit operands, got " + lut.shape().DebugString());
        if (pad.dims() != 0)
            return absl::InvalidArgumentError("AmsimIntConv2D: pad must be a scalar, got " +
                                              pad.shape().DebugString());
        return ConvGeometry(conv_, x.dim_size(0), x.dim_size(1), x.dim_size(2), C, w.dim_size(0), w.dim_size(1), g);
    }

    /* No sum of K products can overflow int32 (K times the table's largest magnitude fits it), nor
     * a patch's sum of K one-byte patterns (amsim_int_im2col's bound). */
    absl::Status CheckSums(const Tensor &lut, int64_t K) const
    {
        int64_t largest = 0;
        for (int32_t v : absl::Span<const int32_t>(lut.flat<int32_t>().data(), lut.NumElements()))
            largest = std::max(largest, v < 0 ? -int64_t{v} : int64_t{v});
        if (largest > 0 && K > kInt32Max / largest)
            return absl::InvalidArgumentError("AmsimIntConv2D: K = " + std::to_string(K) +
                                              " products of magnitude up to " + std::to_string(largest) +
                                              " can overflow int32");
        if (K > kInt32Max / 255)
            return absl::InvalidArgumentError("AmsimIntConv2D: a patch of K = " + std::to_string(K) +
                                              " patterns can overflow its int32 sum");
        return absl::OkStatus();
    }

    /* Every pattern the products read is an n-bit one. */
    absl::Status CheckPatterns(const Tensor &x, const Tensor &w, uint8_t pad) const
    {
        if (bits_ == kMaxBits)  /* every byte is */
            return absl::OkStatus();
        const struct {
            const char *name;
            const uint8_t *p;
            int64_t count;
        } operands[] = {{"pad", &pad, 1},
                        {"input", x.flat<uint8_t>().data(), x.NumElements()},
                        {"filter", w.flat<uint8_t>().data(), w.NumElements()}};
        for (const auto &o : operands) {
            const int bad = FirstBadPattern(o.p, o.count, bits_);
            if (bad >= 0)
                return absl::InvalidArgumentError(std::string("AmsimIntConv2D: ") + o.name + " holds the pattern " +
                                                  std::to_string(bad) + ", not a " + std::to_string(bits_) +
                                                  "-bit one (0.." + std::to_string((1 << bits_) - 1) + ")");
        }
        return absl::OkStatus();
    }

    absl::Status IntGemm(const int32_t *table, int64_t M, int64_t N, int64_t K, const uint8_t *a, const uint8_t *b,
                      int32_t *c) const
    {
        return EngineStatus(amsim_int_gemm(table, bits_, M, N, K, a, b, c, 0, threads_),
                            "AmsimIntConv2D: amsim_int_gemm");
    }

    ConvAttrs conv_;
    int64_t groups_ = 1;
    int bits_ = 8;
    bool signed_ = false;
    int threads_ = 0;
};

}  // namespace
}  // namespace int_conv
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimIntConv2D").Device(tensorflow::DEVICE_CPU), amsim_tf::int_conv::AmsimIntConv2DOp);
