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
 * layers give it a straight-through one.
 */
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "amsim_tf.h"
#include "tensorflow/core/framework/op.h"

namespace amsim_tf {
namespace {

absl::Status IntConvShape(InferenceContext *c)
{
    int64_t groups;
    TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups));
    TF_RETURN_IF_ERROR(IntLutShape(c, "AmsimIntConv2D", 2));
    ShapeHandle x, w, pad;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
    TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &w));
    TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 0, &pad));
    DimensionHandle channels;
    TF_RETURN_IF_ERROR(c->Multiply(c->Dim(w, 2), groups, &channels));
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 3), channels, &channels));
    const int64_t f = c->Value(c->Dim(w, 3));
    if (f >= 0 && f % groups != 0)
        return absl::InvalidArgumentError("AmsimIntConv2D: the filter's " + std::to_string(f) +
                                          " output channels do not split into " + std::to_string(groups) + " groups");
    DimensionHandle oh, ow;
    TF_RETURN_IF_ERROR(ConvOutputSize(c, x, w, &oh, &ow));
    c->set_output(0, c->MakeShape({c->Dim(x, 0), oh, ow, c->Dim(w, 3)}));
    c->set_output(1, c->MakeShape({c->Dim(x, 0), oh, ow, c->MakeDim(groups)}));
    return absl::OkStatus();
}

}  // namespace
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
    .SetShapeFn(amsim_tf::IntConvShape)
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
namespace {

class AmsimIntConv2DOp : public IntKernel {
public:
    explicit AmsimIntConv2DOp(OpKernelConstruction *ctx) : IntKernel(ctx)
    {
        OP_REQUIRES_OK(ctx, ReadConvAttrs(ctx, &conv_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
        OP_REQUIRES_OK(ctx, ctx->GetAttr("signed", &signed_));
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
        std::shared_ptr<const PreparedIntLut> table;
        OP_REQUIRES_OK(ctx, Prepare(lut, &table));
        OP_REQUIRES_OK(ctx, CheckPatchSums(*table, K));
        const uint8_t pattern = pad.scalar<uint8_t>()();
        OP_REQUIRES_OK(ctx, CheckOperands(x, w, pattern));
        const uint8_t *px = x.flat<uint8_t>().data(), *pw = w.flat<uint8_t>().data();
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
            OP_REQUIRES_OK(ctx, IntGemm(*table, P, F, K, pc, pw, py, false));
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
            OP_REQUIRES_OK(ctx, IntGemm(*table, P, Fg, K, pc + q * P * K, pwq, pyq, false));
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
        TF_RETURN_IF_ERROR(CheckLut(lut));
        if (pad.dims() != 0)
            return absl::InvalidArgumentError("AmsimIntConv2D: pad must be a scalar, got " +
                                              pad.shape().DebugString());
        return ConvGeometry(conv_, x.dim_size(0), x.dim_size(1), x.dim_size(2), C, w.dim_size(0), w.dim_size(1), g);
    }

    /* No sum of K products can overflow int32, nor a patch's sum of K one-byte patterns
     * (amsim_int_im2col's bound). */
    absl::Status CheckPatchSums(const PreparedIntLut &lut, int64_t K) const
    {
        TF_RETURN_IF_ERROR(CheckSums(lut, K, false, "int32"));
        if (K > std::numeric_limits<int32_t>::max() / 255)
            return absl::InvalidArgumentError("AmsimIntConv2D: a patch of K = " + std::to_string(K) +
                                              " patterns can overflow its int32 sum");
        return absl::OkStatus();
    }

    /* Every pattern the products read is an n-bit one. */
    absl::Status CheckOperands(const Tensor &x, const Tensor &w, uint8_t pad) const
    {
        TF_RETURN_IF_ERROR(CheckPatterns("pad", &pad, 1));
        TF_RETURN_IF_ERROR(CheckPatterns("input", x.flat<uint8_t>().data(), x.NumElements()));
        return CheckPatterns("filter", w.flat<uint8_t>().data(), w.NumElements());
    }

    ConvAttrs conv_;
    int64_t groups_ = 1;
    bool signed_ = false;
};

}  // namespace
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimIntConv2D").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimIntConv2DOp);
