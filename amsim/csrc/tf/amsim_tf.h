/*
 * amsim_tf.h -- what the TensorFlow ops of amsim.keras share: the arithmetic attributes, the
 * prepared-LUT cache, one GEMM call, the conv2d geometry, and the integer ops' checks and GEMM.
 *
 * The ops compute nothing themselves: every product, sum and patch copy is the engine's
 * (amsim_gemm.h), on TensorFlow's buffers, so an op gives the bits amsim.gemm gives.
 */
#ifndef AMSIM_TF_H
#define AMSIM_TF_H

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

#include "amsim_gemm.h"

namespace amsim_tf {

/* The TensorFlow names every op's source uses, declared once for the whole component. */
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

/* Attributes every op carries. "gradient" is read only by the Python gradient functions. */
#define AMSIM_TF_ARITHMETIC_ATTRS                                  \
    Attr("rounding: {'truncate', 'rne'} = 'truncate'")             \
        .Attr("mode: {'ieee', 'approxtrain'} = 'ieee'")            \
        .Attr("threads: int >= 0 = 0")                             \
        .Attr("gradient: {'approximate', 'exact'} = 'approximate'")

/* Attributes of the conv2d family, spelled as TensorFlow's Conv2D spells them (NHWC only). */
#define AMSIM_TF_CONV_ATTRS                                        \
    Attr("strides: list(int)")                                     \
        .Attr("padding: {'SAME', 'VALID', 'EXPLICIT'}")            \
        .Attr("explicit_paddings: list(int) = []")                 \
        .Attr("dilations: list(int) = [1, 1, 1, 1]")

/* The arithmetic of one op: enum amsim_rounding, enum amsim_mode, and the engine's thread cap. */
struct Arithmetic {
    int rounding = AMSIM_TRUNCATE;
    int mode = AMSIM_MODE_IEEE;
    int threads = 0;
};

absl::Status ReadArithmetic(tensorflow::OpKernelConstruction *ctx, Arithmetic *out);

/* A LUT made ready for the engine (amsim_lut_init). Read-only once made, so shared by
 * concurrent GEMMs; held by shared_ptr so that eviction never frees one in use. */
struct PreparedLut {
    struct amsim_lut lut;
    tensorflow::Tensor source;  /* keeps the input's buffer alive, so its address identifies it */
    std::unique_ptr<void, void (*)(void *)> storage{nullptr, nullptr};
};

/* The prepared LUT for a (2^M x 2^M) float32 table tensor, M in [1, 12]. Prepared once per
 * distinct table in the process: a tensor seen before is found by its buffer address, another
 * tensor with the same contents by comparing them. */
absl::Status GetLut(const tensorflow::Tensor &table, std::shared_ptr<const PreparedLut> *out);

/* An integer circuit's table made ready for the engine (amsim_int_lut_init), as PreparedLut. */
struct PreparedIntLut {
    struct amsim_int_lut lut;
    tensorflow::Tensor source;  /* keeps the input's buffer alive, so its address identifies it */
    std::unique_ptr<void, void (*)(void *)> storage{nullptr, nullptr};
};

/* The prepared table for an int32 (2^bits x 2^bits) table tensor, found or made as GetLut's. */
absl::Status GetIntLut(const tensorflow::Tensor &table, int bits, std::shared_ptr<const PreparedIntLut> *out);

/* C = A (x) B through amsim_gemm (planner's choice of kernel). A is M x K with strides
 * (ars, acs), B is K x N with (brs, bcs), C row-major with leading dimension ldc. */
absl::Status Gemm(const PreparedLut &lut, const Arithmetic &arith, int64_t M, int64_t N, int64_t K,
                  const float *a, int64_t ars, int64_t acs, const float *b, int64_t brs, int64_t bcs,
                  float *c, int64_t ldc);

/* AmsimMatMul's operands as a batch of GEMMs: op(a) is M x K with element strides (ars, acs),
 * op(b) is K x N with (brs, bcs); output matrix t (row-major, M x N) reads a's matrix at
 * element offset a_offset[t] and b's at b_offset[t] (the leading dimensions broadcast). */
struct MatMulBatch {
    int64_t M = 0, N = 0, K = 0;
    int64_t ars = 0, acs = 0, brs = 0, bcs = 0;
    tensorflow::TensorShape out_shape;
    std::vector<int64_t> a_offset, b_offset;
};

/* Checks AmsimMatMul's operand shapes and plans its batch (matmul.cc). */
absl::Status PlanMatMul(const tensorflow::Tensor &a, const tensorflow::Tensor &b, bool transpose_a, bool transpose_b,
                        MatMulBatch *out);

/* strides, padding, explicit_paddings and dilations of a conv2d op. */
struct ConvAttrs {
    int64_t sh = 1, sw = 1, dh = 1, dw = 1;
    std::string padding;               /* SAME, VALID or EXPLICIT */
    int64_t pads[4] = {0, 0, 0, 0};    /* EXPLICIT: top, bottom, left, right */
};

/* Reads and checks the conv attributes (from a kernel's construction or a shape function). */
template <class Context>
absl::Status ReadConvAttrs(Context *ctx, ConvAttrs *out);

/* Fills the engine's geometry for an NHWC input and a KH x KW filter following TensorFlow's
 * output-size and SAME-padding rules (amsim.gemm.conv2d's). oh/ow < 1 is an error. */
absl::Status ConvGeometry(const ConvAttrs &attrs, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh,
                          int64_t kw, struct amsim_conv_geometry *g);

/* The 4 sizes of an int32 shape tensor (a backprop op's input_sizes or filter_sizes). */
absl::Status ReadSizes(const tensorflow::Tensor &sizes, const char *name, int64_t out[4]);

/* Shape function of a backprop op: the shape held by its shape-tensor input `index`. */
absl::Status ShapeFromSizes(tensorflow::shape_inference::InferenceContext *c, int index);

/* Shape function piece of the forward convolutions: the output's height and width for an NHWC
 * input x and a filter w (its first two dimensions KH, KW) under the op's conv attributes,
 * unknown while a size they follow is. */
absl::Status ConvOutputSize(InferenceContext *c, ShapeHandle x, ShapeHandle w, DimensionHandle *oh,
                            DimensionHandle *ow);

/* Shape function of the forward convolutions: output channels = out_channels(filter). */
absl::Status ConvOutputShape(tensorflow::shape_inference::InferenceContext *c, bool depthwise);

/* What the kernels of the conv2d family share: their attributes, the operands' checks, and
 * the patch matrix. */
class ConvKernel : public tensorflow::OpKernel {
public:
    explicit ConvKernel(tensorflow::OpKernelConstruction *ctx);

    /* The passes of the family, numbered as amsim_cuda.h's enum amsim_cuda_conv_pass (gpu.cc
     * asserts it), so that the GPU kernels hand a pass to the CUDA ops as it is. */
    enum class Pass { kForward = 0, kBackpropInput = 1, kBackpropFilter = 2 };

protected:
    /* The geometry of an input of shape x and a filter of shape w (HWIO, or HW C Q for
     * depthwise); dy, when given, must have the output's shape with out_channels channels. */
    absl::Status Geometry(const int64_t x[4], const int64_t w[4], const tensorflow::Tensor *dy, int64_t out_channels,
                          struct amsim_conv_geometry *g) const;

    /* The shape of a 4-D operand. */
    static absl::Status Dims4(const tensorflow::Tensor &t, const char *what, int64_t out[4]);

    /* The patch matrix (N*OH*OW) x (KH*KW*C) of x: x itself when amsim_conv_patches_are_input,
     * else amsim_im2col into a work buffer kept alive by *buf. */
    static absl::Status Patches(tensorflow::OpKernelContext *ctx, const struct amsim_conv_geometry &g, const float *x,
                                tensorflow::Tensor *buf, const float **cols);

    /* What every kernel of the family does first, on every device: reads and checks the
     * operands of its pass (input or input_sizes, filter or filter_sizes, out_backprop), fills
     * g and *q (the filter's last dimension: output channels, or the depthwise multiplier),
     * and allocates the op's output; when that output is empty there is nothing more to do. */
    absl::Status Prologue(tensorflow::OpKernelContext *ctx, Pass pass, struct amsim_conv_geometry *g, int64_t *q,
                          tensorflow::Tensor **out) const;

    Arithmetic arith_;
    ConvAttrs conv_;
    bool depthwise_ = false;  /* filter (KH, KW, C, Q): Q outputs per input channel */
};

/* The depthwise kernels (depthwise.cc, gpu.cc): a ConvKernel whose filter is (KH, KW, C, Q). */
class DepthwiseKernel : public ConvKernel {
public:
    explicit DepthwiseKernel(tensorflow::OpKernelConstruction *ctx) : ConvKernel(ctx) { depthwise_ = true; }
};

/* Status of an engine call. */
absl::Status EngineStatus(int rc, const char *what);

/* A float32 work buffer of `count` elements from TensorFlow's allocator. */
absl::Status WorkBuffer(tensorflow::OpKernelContext *ctx, int64_t count, tensorflow::Tensor *out);

/* ------------------------------------------------------------------------------------------ */
/* The integer LUT ops (int_matmul.cc, int_conv.cc), defined in int_common.cc: the operands   */
/* are n-bit patterns of one byte, the table int32 (2^n x 2^n), the sums exact.               */
/* ------------------------------------------------------------------------------------------ */

constexpr int kMaxIntBits = 8;  /* a pattern is one byte */

/* bits in 1..kMaxIntBits; the error names the op. */
absl::Status CheckIntBits(const std::string &op, int bits);

/* Shape function piece of an integer op: its "bits" attribute is valid and its input `lut` (an
 * input index) can be the (2^bits, 2^bits) table. */
absl::Status IntLutShape(InferenceContext *c, const char *op, int lut);

/* What the kernels of the integer ops share: the "bits" and "threads" attributes, the checks of
 * the table, of the sums' range and of the patterns, and the engine's GEMM. Errors begin with
 * the op's name (its type, as the graph author wrote it). */
class IntKernel : public OpKernel {
public:
    explicit IntKernel(OpKernelConstruction *ctx);

protected:
    /* The table is (2^bits, 2^bits). */
    absl::Status CheckLut(const Tensor &lut) const;

    /* The table made ready for the engine (GetIntLut), once per distinct table. */
    absl::Status Prepare(const Tensor &lut, std::shared_ptr<const PreparedIntLut> *out) const;

    /* No sum of K products can overflow the output, int64 when wide, else int32: K times the
     * table's largest magnitude fits it. The refusal says the sums "can overflow <out_type>". */
    absl::Status CheckSums(const PreparedIntLut &lut, int64_t K, bool wide, const char *out_type) const;

    /* p[0..count), the operand `name`, holds only n-bit patterns (else the first one that is not). */
    absl::Status CheckPatterns(const char *name, const uint8_t *p, int64_t count) const;

    /* c = a (x) b through amsim_int_gemm: a M x K, b K x N, c M x N, all row-major, c int64 when
     * wide, else int32. */
    absl::Status IntGemm(const PreparedIntLut &lut, int64_t M, int64_t N, int64_t K, const uint8_t *a,
                         const uint8_t *b, void *c, bool wide) const;

    int bits_ = kMaxIntBits;
    int threads_ = 0;
};

}  // namespace amsim_tf

#endif  // AMSIM_TF_H
