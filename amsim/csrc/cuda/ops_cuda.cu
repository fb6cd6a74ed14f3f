/*
 * ops_cuda.cu -- the TensorFlow ops on the CUDA kernels: AmsimMatMul, and the conv2d and depthwise
 * conv2d passes (amsim_cuda.h, "Whole ops"). Host code only: the argument checks, the layout of the
 * caller's device workspace, and the order of the amsim_cuda_* calls of gemm_cuda.cu.
 *
 * No kernel is launched here, so this file is plain C++ to every compiler: nvcc builds it into the
 * kernels' library for a GPU, g++ into the emulated library (amsim/csrc/cuda/emulation), where the
 * suite runs every op on the CPU and compares it bit for bit with the CPU engine. Only the callers'
 * GPU plumbing (in gpu.cc: TensorFlow's allocator and stream, the device LUT cache) and the
 * hardware itself are left to a GPU to check.
 *
 * Each op gives the CPU ops' bits (amsim/csrc/tf/matmul.cc, conv.cc, depthwise.cc): its GEMMs
 * have the same operands in the same roles (the left operand indexes the LUT's rows), every GEMM
 * sums in increasing k from +0, and the patch copies and col2im's sums are the engine's. Only the
 * layouts differ where the CPU copies for speed; a copy changes no bits.
 */
#include <limits.h>
#include <stdint.h>

#include <initializer_list>

#include <amsim_gemm.h>

#include "amsim_cuda.h"

/* Where CUDA's runtime header is on the path (nvcc's, or the emulation's), check the code that
 * amsim_cuda.h names for callers without it. */
#if __has_include(<cuda_runtime.h>)
#include <cuda_runtime.h>
static_assert(AMSIM_CUDA_INVALID_VALUE == cudaErrorInvalidValue, "AMSIM_CUDA_INVALID_VALUE is cudaErrorInvalidValue");
#endif

namespace {

/* Returns the cudaError_t of a failed call. */
#define AMSIM_TRY(call)         \
    do {                        \
        const int rc_ = (call); \
        if (rc_ != 0)           \
            return rc_;         \
    } while (0)

/* p may point to `count` elements: any pointer does when there are none. */
bool given(const void *p, int64_t count) { return p != nullptr || count == 0; }

/* ------------------------------------------------------------------------------------------ */
/* Workspace                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Carves an op's buffers out of the caller's device workspace, each on a 256-byte boundary (as
 * cudaMalloc aligns, so loads coalesce). Without a base it only counts: an op lays its buffers
 * out with one function for both its _workspace query and its run, so the two cannot disagree. */
class Workspace {
public:
    explicit Workspace(void *base = nullptr) : base_(static_cast<char *>(base)) {}

    template <class T>
    T *take(int64_t count)
    {
        T *p = base_ != nullptr ? reinterpret_cast<T *>(base_ + used_) : nullptr;
        used_ += (static_cast<size_t>(count) * sizeof(T) + kAlign - 1) / kAlign * kAlign;
        return p;
    }

    size_t used() const { return used_; }

    /* The op's layout fits a workspace of `bytes` at this base. */
    bool fits(size_t bytes) const { return used_ <= bytes && (used_ == 0 || base_ != nullptr); }

private:
    static constexpr size_t kAlign = 256;
    char *base_;
    size_t used_ = 0;
};

/* ------------------------------------------------------------------------------------------ */
/* GEMM                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Where an op's kernels go: the arithmetic of its products and the stream they queue on. */
struct Queue {
    const struct amsim_cuda_arith &arith;
    void *stream;
};

/* An operand split by amsim_cuda_split: scales, mantissa indices and the exponent range that the
 * GEMM's exactness test reads on the device. */
struct Split {
    float *scale = nullptr;
    uint16_t *idx = nullptr;
    int32_t *range = nullptr;

    void take(Workspace &ws, int64_t count)
    {
        scale = ws.take<float>(count);
        idx = ws.take<uint16_t>(count);
        range = ws.take<int32_t>(2);
    }
};

/* The GEMMs of one op, C = A (x) B with amsim_tf::Gemm's arguments (amsim_tf.h): A is M x K with
 * element strides (ars, acs), B is K x N with (brs, bcs), C is row-major with leading dimension
 * ldc. Every GEMM of the op splits into the same two buffers: the stream runs them in order. */
class Gemm {
public:
    /* Buffers for left operands of up to a_count elements and right ones of up to b_count. */
    void take(Workspace &ws, int64_t a_count, int64_t b_count)
    {
        a_.take(ws, a_count);
        b_.take(ws, b_count);
    }

    /* split_a, split_b false: that operand is the one the previous call split (a broadcast
     * operand is split once for the run of matrices that share it). */
    int run(const Queue &q, int64_t M, int64_t N, int64_t K, const float *a, int64_t ars, int64_t acs, const float *b,
            int64_t brs, int64_t bcs, float *c, int64_t ldc, bool split_a = true, bool split_b = true) const
    {
        if (M == 0 || N == 0)
            return 0;
        const struct amsim_cuda_arith &ar = q.arith;
        if (split_a)
            AMSIM_TRY(amsim_cuda_split(a, M, K, ars, acs, ar.m, ar.rounding, a_.scale, a_.idx, a_.range, q.stream));
        if (split_b)
            AMSIM_TRY(amsim_cuda_split(b, K, N, brs, bcs, ar.m, ar.rounding, b_.scale, b_.idx, b_.range, q.stream));
        /* K = 0 writes +0, the empty sum: the kernel's accumulators start there. */
        return amsim_cuda_gemm(M, N, K, a_.scale, a_.idx, a_.range, b_.scale, b_.idx, b_.range, ar.lut, ar.m, ar.v_lo,
                               ar.v_hi, ar.mode, ar.fast, c, ldc, q.stream);
    }

private:
    Split a_, b_;
};

/* An op's query and run, the same for every Op: Op::valid() checks its sizes, empty() says that
 * its output has no element, take() lays its buffers out, present() checks its Operands' pointers
 * and run() queues its kernels. */
template <class Op>
int query_workspace(Op &op, size_t *bytes)
{
    if (bytes == nullptr || !op.valid())
        return AMSIM_CUDA_INVALID_VALUE;
    Workspace ws;
    if (!op.empty())
        op.take(ws);
    *bytes = ws.used();
    return 0;
}

template <class Op>
int run_op(Op &op, const typename Op::Operands &operands, const struct amsim_cuda_arith *arith, void *workspace,
           size_t bytes, void *stream)
{
    if (!op.valid() || !op.present(operands) || arith == nullptr || arith->lut == nullptr)
        return AMSIM_CUDA_INVALID_VALUE;
    if (op.empty())
        return 0;
    Workspace ws(workspace);
    op.take(ws);
    if (!ws.fits(bytes))
        return AMSIM_CUDA_INVALID_VALUE;
    return op.run(Queue{*arith, stream}, operands);
}

/* ------------------------------------------------------------------------------------------ */
/* AmsimMatMul                                                                                */
/* ------------------------------------------------------------------------------------------ */

class MatMul {
public:
    struct Operands {
        const float *a;
        int64_t ars, acs;
        const float *b;
        int64_t brs, bcs;
        const int64_t *a_offset, *b_offset;  /* host */
        float *c;
    };

    MatMul(int64_t M, int64_t N, int64_t K, int64_t batch) : M_(M), N_(N), K_(K), batch_(batch) {}

    bool valid() const { return M_ >= 0 && N_ >= 0 && K_ >= 0 && batch_ >= 0; }
    bool empty() const { return M_ == 0 || N_ == 0 || batch_ == 0; }
    void take(Workspace &ws) { gemm_.take(ws, M_ * K_, K_ * N_); }

    bool present(const Operands &o) const
    {
        return given(o.a, M_ * K_) && given(o.b, K_ * N_) && given(o.c, M_ * N_) &&
               given(o.a_offset, batch_) && given(o.b_offset, batch_);
    }

    int run(const Queue &q, const Operands &o) const
    {
        for (int64_t t = 0; t < batch_; ++t) {
            const bool new_a = t == 0 || o.a_offset[t] != o.a_offset[t - 1];
            const bool new_b = t == 0 || o.b_offset[t] != o.b_offset[t - 1];
            AMSIM_TRY(gemm_.run(q, M_, N_, K_, o.a + o.a_offset[t], o.ars, o.acs, o.b + o.b_offset[t], o.brs, o.bcs,
                                o.c + t * M_ * N_, N_, new_a, new_b));
        }
        return 0;
    }

private:
    const int64_t M_, N_, K_, batch_;
    Gemm gemm_;
};

/* ------------------------------------------------------------------------------------------ */
/* The conv2d family                                                                          */
/* ------------------------------------------------------------------------------------------ */

/*
 * Both convolutions are grouped GEMMs on the patch matrix P of amsim_im2col: rows = N*OH*OW, each
 * row the KH*KW*C taps of one output position, channel minor. P's columns fall into G groups of
 * T = KH*KW*C / G taps, group j being columns j, j + G, j + 2G, ... (a view of column stride G):
 *   conv2d      G = 1: all of P, the filter w a (KH*KW*C) x Q matrix;
 *   depthwise   G = C: channel j's patches, with w[:, :, j, :] as its T x Q filter.
 * Group j's filter W_j is the T x Q view of w at element j*Q with rows G*Q apart, and its share of
 * the output y (or of dy) is the rows x Q view at j*Q with rows G*Q apart. Per group:
 *   forward           y_j  = P_j (x) W_j
 *   input gradient    dx   = col2im(the patch gradients dy_j (x) W_j^T of every group)
 *   filter gradient   dW_j = P_j^T (x) dy_j
 * Transposed operands are strided views, read in place by the split. The GEMM cannot write a
 * column of stride G, so with several groups the patch gradients go channel-major (group after
 * group) and one transpose interleaves them into P's layout. For an identity geometry
 * (amsim_conv_patches_are_input) P is x and col2im a copy: both are skipped, the last step
 * writing dx itself.
 */
class Conv {
public:
    Conv(int pass, int depthwise, const struct amsim_conv_geometry *g, int64_t q)
        : pass_(pass), g_(g != nullptr ? *g : amsim_conv_geometry{}), has_g_(g != nullptr), q_(q),
          groups_(depthwise ? g_.c : 1), row_len_(g_.kh * g_.kw * g_.c), taps_(depthwise ? g_.kh * g_.kw : row_len_),
          rows_(g_.n * g_.oh * g_.ow), identity_(amsim_conv_patches_are_input(&g_))
    {
    }

    bool valid() const
    {
        if (!has_g_ || !amsim_conv_geometry_valid(&g_) || q_ < 0)
            return false;
        if (pass_ != AMSIM_CUDA_CONV_FORWARD && pass_ != AMSIM_CUDA_CONV_BACKPROP_INPUT &&
            pass_ != AMSIM_CUDA_CONV_BACKPROP_FILTER)
            return false;
        /* The geometry reaches the patch kernels as ints. */
        for (int64_t v : {g_.n, g_.h, g_.w, g_.c, g_.kh, g_.kw, g_.sh, g_.sw, g_.dh, g_.dw, g_.pad_top, g_.pad_left,
                          g_.oh, g_.ow})
            if (v > INT_MAX)
                return false;
        return true;
    }

    bool empty() const { return out_count() == 0; }

    /* Regions in one order for every pass: the patch matrix or its gradients, then the splits. */
    void take(Workspace &ws)
    {
        const int64_t p = rows_ * row_len_;
        switch (pass_) {
        case AMSIM_CUDA_CONV_FORWARD:
            patches_ = identity_ ? nullptr : ws.take<float>(p);
            gemm_.take(ws, rows_ * taps_, taps_ * q_);
            break;
        case AMSIM_CUDA_CONV_BACKPROP_INPUT:
            cols_ = identity_ ? nullptr : ws.take<float>(p);
            colst_ = groups_ > 1 ? ws.take<float>(p) : nullptr;
            gemm_.take(ws, rows_ * q_, q_ * taps_);
            break;
        case AMSIM_CUDA_CONV_BACKPROP_FILTER:
            patches_ = identity_ ? nullptr : ws.take<float>(p);
            gemm_.take(ws, taps_ * rows_, rows_ * q_);
            break;
        }
    }

    struct Operands {
        const float *x, *w, *dy;  /* the two the pass reads */
        float *out;
    };

    bool present(const Operands &o) const
    {
        const bool x = pass_ != AMSIM_CUDA_CONV_BACKPROP_INPUT, w = pass_ != AMSIM_CUDA_CONV_BACKPROP_FILTER,
                   dy = pass_ != AMSIM_CUDA_CONV_FORWARD;
        return (!x || given(o.x, g_.n * g_.h * g_.w * g_.c)) && (!w || given(o.w, row_len_ * q_)) &&
               (!dy || given(o.dy, rows_ * groups_ * q_)) && given(o.out, out_count());
    }

    int run(const Queue &q, const Operands &o) const
    {
        switch (pass_) {
        case AMSIM_CUDA_CONV_FORWARD:
            return forward(q, o.x, o.w, o.out);
        case AMSIM_CUDA_CONV_BACKPROP_INPUT:
            return backprop_input(q, o.w, o.dy, o.out);
        default:
            return backprop_filter(q, o.x, o.dy, o.out);
        }
    }

private:
    int64_t out_count() const
    {
        switch (pass_) {
        case AMSIM_CUDA_CONV_FORWARD:
            return rows_ * groups_ * q_;
        case AMSIM_CUDA_CONV_BACKPROP_INPUT:
            return g_.n * g_.h * g_.w * g_.c;
        default:
            return row_len_ * q_;
        }
    }

    int forward(const Queue &q, const float *x, const float *w, float *y) const
    {
        const float *p = nullptr;
        AMSIM_TRY(patches(q, x, &p));
        const int64_t G = groups_, ld = G * q_;
        for (int64_t j = 0; j < G; ++j)
            AMSIM_TRY(gemm_.run(q, rows_, q_, taps_, p + j, row_len_, G, w + j * q_, ld, 1, y + j * q_, ld));
        return 0;
    }

    int backprop_input(const Queue &q, const float *w, const float *dy, float *dx) const
    {
        const int64_t G = groups_, ld = G * q_, share = rows_ * taps_;
        float *cols = identity_ ? dx : cols_;
        float *grads = G > 1 ? colst_ : cols;  /* group j's patch gradients at j * share, T wide */
        for (int64_t j = 0; j < G; ++j)
            AMSIM_TRY(gemm_.run(q, rows_, taps_, q_, dy + j * q_, ld, 1, w + j * q_, 1, ld, grads + j * share, taps_));
        if (G > 1)
            AMSIM_TRY(amsim_cuda_transpose(colst_, G, share, 1, cols, q.stream));
        if (identity_)
            return 0;
        return amsim_cuda_col2im(cols, (int)g_.n, (int)g_.h, (int)g_.w, (int)g_.c, (int)g_.kh, (int)g_.kw, (int)g_.sh,
                                 (int)g_.sw, (int)g_.dh, (int)g_.dw, (int)g_.pad_top, (int)g_.pad_left, (int)g_.oh,
                                 (int)g_.ow, dx, q.stream);
    }

    int backprop_filter(const Queue &q, const float *x, const float *dy, float *dw) const
    {
        const float *p = nullptr;
        AMSIM_TRY(patches(q, x, &p));
        const int64_t G = groups_, ld = G * q_;
        for (int64_t j = 0; j < G; ++j)  /* P_j^T: the T x rows view of P_j */
            AMSIM_TRY(gemm_.run(q, taps_, q_, rows_, p + j, G, row_len_, dy + j * q_, ld, 1, dw + j * q_, ld));
        return 0;
    }

    /* *p = P: x itself for an identity geometry, else amsim_cuda_im2col of x. */
    int patches(const Queue &q, const float *x, const float **p) const
    {
        if (identity_) {
            *p = x;
            return 0;
        }
        *p = patches_;
        return amsim_cuda_im2col(x, (int)g_.n, (int)g_.h, (int)g_.w, (int)g_.c, (int)g_.kh, (int)g_.kw, (int)g_.sh,
                                 (int)g_.sw, (int)g_.dh, (int)g_.dw, (int)g_.pad_top, (int)g_.pad_left, (int)g_.oh,
                                 (int)g_.ow, patches_, q.stream);
    }

    const int pass_;
    const struct amsim_conv_geometry g_;
    const bool has_g_;
    const int64_t q_, groups_, row_len_, taps_, rows_;
    const bool identity_;
    float *patches_ = nullptr, *cols_ = nullptr, *colst_ = nullptr;
    Gemm gemm_;
};

#undef AMSIM_TRY

}  // namespace

extern "C" {

int amsim_cuda_matmul_workspace(int64_t M, int64_t N, int64_t K, size_t *bytes)
{
    MatMul op(M, N, K, 1);
    return query_workspace(op, bytes);
}

int amsim_cuda_matmul(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars, int64_t acs, const float *b,
                      int64_t brs, int64_t bcs, int64_t batch, const int64_t *a_offset, const int64_t *b_offset,
                      float *c, const struct amsim_cuda_arith *arith, void *workspace, size_t workspace_bytes,
                      void *stream)
{
    MatMul op(M, N, K, batch);
    return run_op(op, {a, ars, acs, b, brs, bcs, a_offset, b_offset, c}, arith, workspace, workspace_bytes, stream);
}

int amsim_cuda_conv2d_workspace(int pass, int depthwise, const struct amsim_conv_geometry *g, int64_t q,
                                size_t *bytes)
{
    Conv op(pass, depthwise, g, q);
    return query_workspace(op, bytes);
}

int amsim_cuda_conv2d(int pass, int depthwise, const struct amsim_conv_geometry *g, int64_t q, const float *x,
                      const float *w, const float *dy, float *out, const struct amsim_cuda_arith *arith,
                      void *workspace, size_t workspace_bytes, void *stream)
{
    Conv op(pass, depthwise, g, q);
    return run_op(op, {x, w, dy, out}, arith, workspace, workspace_bytes, stream);
}

}  // extern "C"
