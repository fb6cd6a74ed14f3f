/*
 * int_common.cc -- what the integer LUT ops (AmsimIntMatMul, AmsimIntConv2D) share, as amsim_tf.h
 * declares it: the width of their patterns, the checks of their table, sums and patterns, and
 * the engine's integer GEMM with its status.
 */
#include <cstdint>
#include <limits>
#include <string>

#include "amsim_tf.h"

namespace amsim_tf {

absl::Status CheckIntBits(const std::string &op, int bits)
{
    if (bits < 1 || bits > kMaxIntBits)
        return absl::InvalidArgumentError(op + ": bits must be in 1.." + std::to_string(kMaxIntBits) + ", got " +
                                          std::to_string(bits));
    return absl::OkStatus();
}

absl::Status IntLutShape(InferenceContext *c, const char *op, int lut)
{
    int bits;
    TF_RETURN_IF_ERROR(c->GetAttr("bits", &bits));
    TF_RETURN_IF_ERROR(CheckIntBits(op, bits));
    ShapeHandle table;
    DimensionHandle side;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(lut), 2, &table));
    TF_RETURN_IF_ERROR(c->WithValue(c->Dim(table, 0), int64_t{1} << bits, &side));
    TF_RETURN_IF_ERROR(c->WithValue(c->Dim(table, 1), int64_t{1} << bits, &side));
    return absl::OkStatus();
}

IntKernel::IntKernel(OpKernelConstruction *ctx) : OpKernel(ctx)
{
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bits", &bits_));
    OP_REQUIRES_OK(ctx, CheckIntBits(type_string(), bits_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
}

absl::Status IntKernel::CheckLut(const Tensor &lut) const
{
    const int64_t side = int64_t{1} << bits_;
    if (lut.dims() != 2 || lut.dim_size(0) != side || lut.dim_size(1) != side)
        return absl::InvalidArgumentError(type_string() + ": lut must be [" + std::to_string(side) + "," +
                                          std::to_string(side) + "] for " + std::to_string(bits_) +
                                          "-bit operands, got " + lut.shape().DebugString());
    return absl::OkStatus();
}

absl::Status IntKernel::Prepare(const Tensor &lut, std::shared_ptr<const PreparedIntLut> *out) const
{
    const absl::Status status = GetIntLut(lut, bits_, out);
    return status.ok() ? status : absl::Status(status.code(), type_string() + ": " + std::string(status.message()));
}

absl::Status IntKernel::CheckSums(const PreparedIntLut &lut, int64_t K, bool wide, const char *out_type) const
{
    const int64_t largest = lut.lut.largest;
    const int64_t limit = wide ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int32_t>::max();
    if (largest == 0 || K <= limit / largest)
        return absl::OkStatus();
    return absl::InvalidArgumentError(type_string() + ": K = " + std::to_string(K) + " products of magnitude up to " +
                                      std::to_string(largest) + " can overflow " + out_type);
}

absl::Status IntKernel::CheckPatterns(const char *name, const uint8_t *p, int64_t count) const
{
    if (bits_ == kMaxIntBits)  /* every byte is an 8-bit pattern */
        return absl::OkStatus();
    for (int64_t e = 0; e < count; ++e)
        if (p[e] >> bits_)
            return absl::InvalidArgumentError(type_string() + ": " + name + " holds the pattern " +
                                              std::to_string(p[e]) + ", not a " + std::to_string(bits_) +
                                              "-bit one (0.." + std::to_string((1 << bits_) - 1) + ")");
    return absl::OkStatus();
}

absl::Status IntKernel::IntGemm(const PreparedIntLut &lut, int64_t M, int64_t N, int64_t K, const uint8_t *a,
                                const uint8_t *b, void *c, bool wide) const
{
    return EngineStatus(amsim_int_gemm(&lut.lut, M, N, K, a, b, c, wide ? 1 : 0, threads_),
                        (type_string() + ": amsim_int_gemm").c_str());
}

}  // namespace amsim_tf
