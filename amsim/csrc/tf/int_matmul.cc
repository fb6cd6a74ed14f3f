/*
 * int_matmul.cc -- AmsimIntMatMul: the integer LUT GEMM (amsim.gemm.int_matmul) as a TensorFlow op.
 *
 * product[..., i, j] = sum over k of lut[a[..., i, k], b[..., k, j]], exactly, for n-bit operand
 * patterns (1 <= n <= 8; a pattern is the operand mod 2^n, amsim/gemm/integer.py). b is one
 * (K, N) matrix shared by every matrix of a, or a batch with a's leading dimensions (no other
 * broadcasting: the quantized layers need no more). The sums are the engine's (amsim_int_gemm):
 * one call for a shared b, with a's matrices stacked into one tall matrix (they are contiguous),
 * else one call per matrix of the batch.
 *
 * The op never wraps: it refuses a Tout that K products of the table's largest magnitude could
 * overflow. It has no gradient (amsim.keras.int_ops registers none): the quantized layers give it
 * a straight-through one.
 */
#include <cstdint>
#include <cstring>
#include <string>

#include "amsim_tf.h"
#include "tensorflow/core/framework/op.h"

namespace amsim_tf {
namespace {

absl::Status IntMatMulShape(InferenceContext *c)
{
    TF_RETURN_IF_ERROR(IntLutShape(c, "AmsimIntMatMul", 2));
    ShapeHandle a, b;
    TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &a));
    TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(1), 2, &b));
    DimensionHandle inner;
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(a, -1), c->Dim(b, -2), &inner));
    ShapeHandle batch, out;
    TF_RETURN_IF_ERROR(c->Subshape(a, 0, -2, &batch));
    if (c->RankKnown(b) && c->Rank(b) > 2) {  /* a batched b: its batch is a's */
        ShapeHandle b_batch;
        TF_RETURN_IF_ERROR(c->Subshape(b, 0, -2, &b_batch));
        TF_RETURN_IF_ERROR(c->Merge(batch, b_batch, &batch));
    }
    TF_RETURN_IF_ERROR(c->Concatenate(batch, c->Matrix(c->Dim(a, -2), c->Dim(b, -1)), &out));
    c->set_output(0, out);
    return absl::OkStatus();
}

}  // namespace
}  // namespace amsim_tf

REGISTER_OP("AmsimIntMatMul")
    .Input("a: uint8")
    .Input("b: uint8")
    .Input("lut: int32")
    .Output("product: Tout")
    .Attr("bits: int = 8")
    .Attr("Tout: {int32, int64} = DT_INT32")
    .Attr("threads: int >= 0 = 0")
    .SetShapeFn(amsim_tf::IntMatMulShape)
    .Doc(R"doc(
Integer LUT matrix product (amsim.gemm.int_matmul): product[..., i, j] = sum over k of
lut[a[..., i, k], b[..., k, j]], exactly, in Tout.

a: (..., M, K) operand patterns (value mod 2^bits), the table's row operand.
b: (K, N), shared by every matrix of a, or (..., K, N) with a's leading dimensions.
lut: the (2^bits, 2^bits) int32 product table, row = a's pattern.
bits: the operand width n, 1..8; a pattern of 2^bits or more is refused.
Tout: int32 or int64; refused when K products of the table's largest magnitude could overflow it.
threads: at most this many engine threads (0: the engine's default).
)doc");

namespace amsim_tf {
namespace {

class AmsimIntMatMulOp : public IntKernel {
public:
    explicit AmsimIntMatMulOp(OpKernelConstruction *ctx) : IntKernel(ctx)
    {
        tensorflow::DataType tout;
        OP_REQUIRES_OK(ctx, ctx->GetAttr("Tout", &tout));
        wide_ = tout == tensorflow::DT_INT64;
    }

    void Compute(OpKernelContext *ctx) override
    {
        const Tensor &a = ctx->input(0), &b = ctx->input(1), &lut = ctx->input(2);
        OP_REQUIRES_OK(ctx, CheckShapes(a, b, lut));
        const int r = a.dims();
        const int64_t M = a.dim_size(r - 2), K = a.dim_size(r - 1), N = b.dim_size(b.dims() - 1);
        TensorShape shape = a.shape();
        shape.set_dim(r - 1, N);
        Tensor *out = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &out));
        if (out->NumElements() == 0)
            return;
        void *pc = out->data();
        if (K == 0) {  /* an empty sum is 0 */
            std::memset(pc, 0, out->TotalBytes());
            return;
        }
        std::shared_ptr<const PreparedIntLut> table;
        OP_REQUIRES_OK(ctx, Prepare(lut, &table));
        OP_REQUIRES_OK(ctx, CheckSums(*table, K, wide_, wide_ ? "int64" : "int32 (Tout=int64 holds them)"));
        const uint8_t *pa = a.flat<uint8_t>().data(), *pb = b.flat<uint8_t>().data();
        const int64_t count = shape.num_elements() / (M * N);  /* matrices in the batch */
        const size_t width = wide_ ? sizeof(int64_t) : sizeof(int32_t);
        if (b.dims() == 2) {  /* one b for every matrix: a's matrices stacked are one (count*M) x K matrix */
            OP_REQUIRES_OK(ctx, Call(*table, count * M, N, K, pa, pb, pc));
            return;
        }
        for (int64_t t = 0; t < count; ++t)
            OP_REQUIRES_OK(ctx, Call(*table, M, N, K, pa + t * M * K, pb + t * K * N,
                                     static_cast<char *>(pc) + t * M * N * width));
    }

private:
    /* Ranks, batch dimensions, inner dimensions and the table's size. */
    absl::Status CheckShapes(const Tensor &a, const Tensor &b, const Tensor &lut) const
    {
        const std::string shapes = "a " + a.shape().DebugString() + " and b " + b.shape().DebugString();
        if (a.dims() < 2 || b.dims() < 2)
            return absl::InvalidArgumentError("AmsimIntMatMul: a and b need at least 2 dimensions, got " + shapes);
        if (b.dims() > 2) {
            bool same = b.dims() == a.dims();
            for (int i = 0; same && i < a.dims() - 2; ++i)
                same = a.dim_size(i) == b.dim_size(i);
            if (!same)
                return absl::InvalidArgumentError("AmsimIntMatMul: b must be (K, N) or have a's batch dimensions, "
                                                  "got " + shapes);
        }
        if (a.dim_size(a.dims() - 1) != b.dim_size(b.dims() - 2))
            return absl::InvalidArgumentError("AmsimIntMatMul: inner dimensions differ: " + shapes);
        return CheckLut(lut);
    }

    /* One engine call. When the engine refuses the operands, the error names the pattern at
     * fault: looked for only then, since checking up front would read both operands once more. */
    absl::Status Call(const PreparedIntLut &table, int64_t M, int64_t N, int64_t K, const uint8_t *a,
                      const uint8_t *b, void *c) const
    {
        const absl::Status status = IntGemm(table, M, N, K, a, b, c, wide_);
        if (!absl::IsInvalidArgument(status))
            return status;
        TF_RETURN_IF_ERROR(CheckPatterns("a", a, M * K));
        TF_RETURN_IF_ERROR(CheckPatterns("b", b, K * N));
        return status;
    }

    bool wide_ = false;
};

}  // namespace
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimIntMatMul").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimIntMatMulOp);
