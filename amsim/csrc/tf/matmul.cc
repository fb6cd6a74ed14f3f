/*
 * matmul.cc -- AmsimMatMul: the approximate batched matrix product.
 *
 * product[..., i, j] = sum over k, in increasing k from +0, of op(a)[..., i, k] (x) op(b)[..., k, j]
 * with op = transpose of the last two axes when asked; the leading dimensions broadcast as
 * tf.linalg.matmul's do. One amsim_gemm per matrix of the batch, reading the operands in
 * place through strides (a transpose costs no copy).
 */
#include <vector>

#include "amsim_tf.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"

namespace amsim_tf {
namespace {

absl::Status MatMulShape(InferenceContext *c)
{
    ShapeHandle a, b;
    TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &a));
    TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(1), 2, &b));
    bool ta, tb;
    TF_RETURN_IF_ERROR(c->GetAttr("transpose_a", &ta));
    TF_RETURN_IF_ERROR(c->GetAttr("transpose_b", &tb));
    DimensionHandle rows = c->Dim(a, ta ? -1 : -2), a_inner = c->Dim(a, ta ? -2 : -1);
    DimensionHandle b_inner = c->Dim(b, tb ? -1 : -2), cols = c->Dim(b, tb ? -2 : -1);
    DimensionHandle inner;
    TF_RETURN_IF_ERROR(c->Merge(a_inner, b_inner, &inner));
    ShapeHandle a_batch, b_batch, batch, out;
    TF_RETURN_IF_ERROR(c->Subshape(a, 0, -2, &a_batch));
    TF_RETURN_IF_ERROR(c->Subshape(b, 0, -2, &b_batch));
    TF_RETURN_IF_ERROR(tensorflow::shape_inference::BroadcastBinaryOpOutputShapeFnHelper(c, a_batch, b_batch, true,
                                                                                          &batch));
    TF_RETURN_IF_ERROR(c->Concatenate(batch, c->Matrix(rows, cols), &out));
    c->set_output(0, out);
    return absl::OkStatus();
}

}  // namespace
}  // namespace amsim_tf

REGISTER_OP("AmsimMatMul")
    .Input("a: float")
    .Input("b: float")
    .Input("lut: float")
    .Output("product: float")
    .Attr("transpose_a: bool = false")
    .Attr("transpose_b: bool = false")
    .AMSIM_TF_ARITHMETIC_ATTRS
    .SetShapeFn(amsim_tf::MatMulShape)
    .Doc(R"doc(
Approximate matrix product: every product of op(a) @ op(b) is the LUT multiplier's (amsim.gemm.matmul).

lut: the (2^M, 2^M) float32 significand products, row = a's mantissa.
)doc");

namespace amsim_tf {

absl::Status PlanMatMul(const Tensor &a, const Tensor &b, bool transpose_a, bool transpose_b, MatMulBatch *out)
{
    if (a.dims() < 2 || b.dims() < 2)
        return absl::InvalidArgumentError("AmsimMatMul: a and b need at least 2 dimensions, got " +
                                          a.shape().DebugString() + " and " + b.shape().DebugString());
    const int ra = a.dims(), rb = b.dims();
    const int64_t a0 = a.dim_size(ra - 2), a1 = a.dim_size(ra - 1);
    const int64_t b0 = b.dim_size(rb - 2), b1 = b.dim_size(rb - 1);
    const int64_t M = transpose_a ? a1 : a0, K = transpose_a ? a0 : a1;
    const int64_t Kb = transpose_b ? b1 : b0, N = transpose_b ? b0 : b1;
    if (K != Kb)
        return absl::InvalidArgumentError("AmsimMatMul: inner dimensions differ: a " + a.shape().DebugString() +
                                          " and b " + b.shape().DebugString());

    /* Broadcast the leading dimensions; a_step/b_step are each operand's matrix strides along
     * the output's batch dimensions (0 where it broadcasts). */
    const int rank = std::max(ra, rb) - 2;
    std::vector<int64_t> batch(rank), a_step(rank, 0), b_step(rank, 0);
    int64_t a_stride = 1, b_stride = 1;
    for (int i = rank - 1; i >= 0; --i) {
        const int ia = i - (rank - (ra - 2)), ib = i - (rank - (rb - 2));
        const int64_t da = ia >= 0 ? a.dim_size(ia) : 1, db = ib >= 0 ? b.dim_size(ib) : 1;
        if (da != db && da != 1 && db != 1)
            return absl::InvalidArgumentError("AmsimMatMul: batch dimensions do not broadcast: a " +
                                              a.shape().DebugString() + " and b " + b.shape().DebugString());
        batch[i] = da == 1 ? db : da;
        a_step[i] = da == 1 ? 0 : a_stride;
        b_step[i] = db == 1 ? 0 : b_stride;
        a_stride *= da;
        b_stride *= db;
    }
    *out = MatMulBatch();
    int64_t count = 1;
    for (int64_t d : batch) {
        out->out_shape.AddDim(d);
        count *= d;
    }
    out->out_shape.AddDim(M);
    out->out_shape.AddDim(N);
    out->M = M, out->N = N, out->K = K;
    out->ars = transpose_a ? 1 : a1, out->acs = transpose_a ? a1 : 1;
    out->brs = transpose_b ? 1 : b1, out->bcs = transpose_b ? b1 : 1;
    if (M == 0 || N == 0)
        return absl::OkStatus();
    out->a_offset.resize(count);
    out->b_offset.resize(count);
    std::vector<int64_t> index(rank, 0);
    int64_t ia = 0, ib = 0;  /* matrix index of a and b for the output matrix `t` */
    for (int64_t t = 0; t < count; ++t) {
        out->a_offset[t] = ia * a0 * a1;
        out->b_offset[t] = ib * b0 * b1;
        for (int i = rank - 1; i >= 0; --i) {  /* odometer over the batch index */
            ia += a_step[i];
            ib += b_step[i];
            if (++index[i] < batch[i])
                break;
            ia -= a_step[i] * batch[i];
            ib -= b_step[i] * batch[i];
            index[i] = 0;
        }
    }
    return absl::OkStatus();
}

namespace {

class AmsimMatMulOp : public OpKernel {
public:
    explicit AmsimMatMulOp(OpKernelConstruction *ctx) : OpKernel(ctx)
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
        std::shared_ptr<const PreparedLut> lut;
        OP_REQUIRES_OK(ctx, GetLut(ctx->input(2), &lut));
        const float *pa = a.flat<float>().data(), *pb = b.flat<float>().data();
        float *pc = out->flat<float>().data();
        const int64_t M = batch.M, N = batch.N;
        for (size_t t = 0; t < batch.a_offset.size(); ++t)
            OP_REQUIRES_OK(ctx, Gemm(*lut, arith_, M, N, batch.K, pa + batch.a_offset[t], batch.ars, batch.acs,
                                     pb + batch.b_offset[t], batch.brs, batch.bcs, pc + t * M * N, N));
    }

private:
    Arithmetic arith_;
    bool transpose_a_ = false, transpose_b_ = false;
};

}  // namespace
}  // namespace amsim_tf

REGISTER_KERNEL_BUILDER(Name("AmsimMatMul").Device(tensorflow::DEVICE_CPU), amsim_tf::AmsimMatMulOp);
