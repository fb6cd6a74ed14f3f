/*
 * common.cc -- the pieces amsim_tf.h declares for the floating-point ops: attributes, the
 * prepared-table cache (which the integer ops' tables share), the GEMM call and the conv2d
 * geometry (the integer ops' own pieces: int_common.cc).
 */
#include "amsim_tf.h"

#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>

namespace amsim_tf {

absl::Status ReadArithmetic(OpKernelConstruction *ctx, Arithmetic *out)
{
    std::string rounding, mode;
    TF_RETURN_IF_ERROR(ctx->GetAttr("rounding", &rounding));
    TF_RETURN_IF_ERROR(ctx->GetAttr("mode", &mode));
    TF_RETURN_IF_ERROR(ctx->GetAttr("threads", &out->threads));
    out->rounding = rounding == "rne" ? AMSIM_RNE : AMSIM_TRUNCATE;
    out->mode = mode == "approxtrain" ? AMSIM_MODE_APPROXTRAIN : AMSIM_MODE_IEEE;
    if (out->mode == AMSIM_MODE_APPROXTRAIN && out->rounding != AMSIM_TRUNCATE)
        return absl::InvalidArgumentError("mode='approxtrain' truncates its operands; rounding='rne' does not apply");
    return absl::OkStatus();
}

/* ------------------------------------------------------------------------------------------ */
/* Prepared LUTs                                                                              */
/* ------------------------------------------------------------------------------------------ */

namespace {

/* Layers usually share one or two tables; a handful of entries keeps each prepared once. */
constexpr size_t kLutCacheEntries = 8;

/* The prepared tables of one kind (PreparedLut, PreparedIntLut), most recently used first. */
template <class Prepared>
struct PreparedCache {
    std::mutex mu;
    std::list<std::shared_ptr<Prepared>> entries;
};

/* Never destroyed: entries hold tensors, which must not be freed after TensorFlow's
 * allocators during process exit. */
template <class Prepared>
PreparedCache<Prepared> &CacheOf()
{
    static auto *cache = new PreparedCache<Prepared>;
    return *cache;
}

int TableBits(const struct amsim_lut &lut) { return lut.m; }
int TableBits(const struct amsim_int_lut &lut) { return lut.bits; }

/* The entry of `table` (of `bits`), from the cache: found by the tensor's buffer address, or by
 * comparing contents; else made by init(&entry->lut, table's data, storage) in storage_bytes of
 * 64-byte aligned storage (`what` names init in its error). */
template <class Prepared, class Init>
absl::Status FindOrPrepare(const Tensor &table, int bits, size_t storage_bytes, Init init, const char *what,
                           std::shared_ptr<const Prepared> *out)
{
    const char *data = table.tensor_data().data();
    const size_t bytes = table.tensor_data().size();
    PreparedCache<Prepared> &cache = CacheOf<Prepared>();
    std::lock_guard<std::mutex> lock(cache.mu);
    for (auto it = cache.entries.begin(); it != cache.entries.end(); ++it) {
        Prepared &e = **it;
        if (TableBits(e.lut) != bits)
            continue;
        const char *seen = e.source.tensor_data().data();
        if (seen != data && std::memcmp(seen, data, bytes) != 0)
            continue;
        e.source = table;  /* the latest tensor with these contents gets the address test */
        cache.entries.splice(cache.entries.begin(), cache.entries, it);
        *out = cache.entries.front();
        return absl::OkStatus();
    }

    auto entry = std::make_shared<Prepared>();
    void *storage = std::aligned_alloc(64, (storage_bytes + 63) / 64 * 64);
    if (storage == nullptr)
        return absl::ResourceExhaustedError(std::string("amsim: out of memory for ") + what);
    entry->storage = std::unique_ptr<void, void (*)(void *)>(storage, std::free);
    TF_RETURN_IF_ERROR(EngineStatus(init(&entry->lut, data, storage), what));
    entry->source = table;
    cache.entries.push_front(entry);
    if (cache.entries.size() > kLutCacheEntries)
        cache.entries.pop_back();
    *out = std::move(entry);
    return absl::OkStatus();
}

}  // namespace

absl::Status GetLut(const Tensor &table, std::shared_ptr<const PreparedLut> *out)
{
    if (table.dtype() != tensorflow::DT_FLOAT || table.dims() != 2 || table.dim_size(0) != table.dim_size(1))
        return absl::InvalidArgumentError("lut must be a square float32 matrix (2^M x 2^M), got " +
                                          table.shape().DebugString());
    const int64_t side = table.dim_size(0);
    int m = 0;
    while (m <= 12 && (int64_t{1} << m) < side)
        ++m;
    if (m < 1 || m > 12 || (int64_t{1} << m) != side)
        return absl::InvalidArgumentError("lut must be 2^M x 2^M with M in [1, 12], got " +
                                          table.shape().DebugString());
    auto init = [m](struct amsim_lut *lut, const char *data, void *storage) {
        return amsim_lut_init(lut, reinterpret_cast<const float *>(data), m, storage);
    };
    return FindOrPrepare<PreparedLut>(table, m, amsim_lut_storage_bytes(m), init, "amsim_lut_init", out);
}

absl::Status GetIntLut(const Tensor &table, int bits, std::shared_ptr<const PreparedIntLut> *out)
{
    const int64_t side = int64_t{1} << bits;
    if (table.dtype() != tensorflow::DT_INT32 || table.dims() != 2 || table.dim_size(0) != side ||
        table.dim_size(1) != side)
        return absl::InvalidArgumentError("lut must be an int32 [" + std::to_string(side) + "," +
                                          std::to_string(side) + "] table for " + std::to_string(bits) +
                                          "-bit operands, got " + table.shape().DebugString());
    auto init = [bits](struct amsim_int_lut *lut, const char *data, void *storage) {
        return amsim_int_lut_init(lut, reinterpret_cast<const int32_t *>(data), bits, storage);
    };
    return FindOrPrepare<PreparedIntLut>(table, bits, amsim_int_lut_storage_bytes(bits), init,
                                         "amsim_int_lut_init", out);
}

absl::Status EngineStatus(int rc, const char *what)
{
    if (rc == AMSIM_OK)
        return absl::OkStatus();
    if (rc == AMSIM_ERR_MEMORY)
        return absl::ResourceExhaustedError(std::string(what) + ": out of memory for the engine's work buffers");
    return absl::InvalidArgumentError(std::string(what) + ": the engine refused its arguments (status " +
                                      std::to_string(rc) + ")");
}

absl::Status WorkBuffer(tensorflow::OpKernelContext *ctx, int64_t count, Tensor *out)
{
    return ctx->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape({count}), out);
}

/* ------------------------------------------------------------------------------------------ */
/* GEMM                                                                                       */
/* ------------------------------------------------------------------------------------------ */

absl::Status Gemm(const PreparedLut &lut, const Arithmetic &arith, int64_t M, int64_t N, int64_t K,
                  const float *a, int64_t ars, int64_t acs, const float *b, int64_t brs, int64_t bcs,
                  float *c, int64_t ldc)
{
    if (M == 0 || N == 0)
        return absl::OkStatus();
    if (K == 0) {  /* an empty sum is +0 */
        for (int64_t i = 0; i < M; ++i)
            std::memset(c + i * ldc, 0, static_cast<size_t>(N) * sizeof(float));
        return absl::OkStatus();
    }
    struct amsim_gemm_args g;
    std::memset(&g, 0, sizeof g);
    g.M = M;
    g.N = N;
    g.K = K;
    g.a = a;
    g.ars = ars;
    g.acs = acs;
    g.b = b;
    g.brs = brs;
    g.bcs = bcs;
    g.c = c;
    g.ldc = ldc;
    g.rounding = arith.rounding;
    g.mode = arith.mode;
    g.kernel = AMSIM_KERNEL_AUTO;
    g.threads = arith.threads;
    return EngineStatus(amsim_gemm(&lut.lut, &g), "amsim_gemm");
}

/* ------------------------------------------------------------------------------------------ */
/* conv2d geometry                                                                            */
/* ------------------------------------------------------------------------------------------ */

template <class Context>
absl::Status ReadConvAttrs(Context *ctx, ConvAttrs *out)
{
    std::vector<int32_t> strides, dilations;
    std::vector<int64_t> explicit_paddings;
    TF_RETURN_IF_ERROR(ctx->GetAttr("strides", &strides));
    TF_RETURN_IF_ERROR(ctx->GetAttr("dilations", &dilations));
    TF_RETURN_IF_ERROR(ctx->GetAttr("padding", &out->padding));
    TF_RETURN_IF_ERROR(ctx->GetAttr("explicit_paddings", &explicit_paddings));
    if (strides.size() != 4 || strides[0] != 1 || strides[3] != 1 || strides[1] < 1 || strides[2] < 1)
        return absl::InvalidArgumentError("strides must be [1, sh, sw, 1] with sh, sw >= 1 (NHWC)");
    if (dilations.size() != 4 || dilations[0] != 1 || dilations[3] != 1 || dilations[1] < 1 || dilations[2] < 1)
        return absl::InvalidArgumentError("dilations must be [1, dh, dw, 1] with dh, dw >= 1 (NHWC)");
    out->sh = strides[1];
    out->sw = strides[2];
    out->dh = dilations[1];
    out->dw = dilations[2];
    if (out->padding == "EXPLICIT") {
        if (explicit_paddings.size() != 8 || explicit_paddings[0] || explicit_paddings[1] || explicit_paddings[6] ||
            explicit_paddings[7])
            return absl::InvalidArgumentError(
                "explicit_paddings must be [0, 0, top, bottom, left, right, 0, 0] with padding='EXPLICIT'");
        for (int i = 0; i < 4; ++i) {
            out->pads[i] = explicit_paddings[2 + i];
            if (out->pads[i] < 0)
                return absl::InvalidArgumentError("explicit_paddings must not be negative");
        }
    } else if (!explicit_paddings.empty()) {
        return absl::InvalidArgumentError("explicit_paddings needs padding='EXPLICIT'");
    }
    return absl::OkStatus();
}

template absl::Status ReadConvAttrs<OpKernelConstruction>(OpKernelConstruction *, ConvAttrs *);
template absl::Status ReadConvAttrs<InferenceContext>(InferenceContext *, ConvAttrs *);

absl::Status ConvGeometry(const ConvAttrs &attrs, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh,
                          int64_t kw, struct amsim_conv_geometry *g)
{
    const int64_t ekh = (kh - 1) * attrs.dh + 1, ekw = (kw - 1) * attrs.dw + 1;
    int64_t top = 0, bottom = 0, left = 0, right = 0;
    if (attrs.padding == "SAME") {
        const int64_t oh = (h + attrs.sh - 1) / attrs.sh, ow = (w + attrs.sw - 1) / attrs.sw;
        const int64_t ph = std::max<int64_t>((oh - 1) * attrs.sh + ekh - h, 0);
        const int64_t pw = std::max<int64_t>((ow - 1) * attrs.sw + ekw - w, 0);
        top = ph / 2, bottom = ph - top, left = pw / 2, right = pw - left;
    } else if (attrs.padding == "EXPLICIT") {
        top = attrs.pads[0], bottom = attrs.pads[1], left = attrs.pads[2], right = attrs.pads[3];
    }
    /* Floor division: a filter that overhangs the padded input by less than a stride gives an
     * empty output, as in TensorFlow; by more, an error. */
    const int64_t ph = h + top + bottom - ekh, pw = w + left + right - ekw;
    const int64_t oh = (ph >= 0 ? ph / attrs.sh : -((-ph + attrs.sh - 1) / attrs.sh)) + 1;
    const int64_t ow = (pw >= 0 ? pw / attrs.sw : -((-pw + attrs.sw - 1) / attrs.sw)) + 1;
    if (kh < 1 || kw < 1 || oh < 0 || ow < 0)
        return absl::InvalidArgumentError("conv2d: a " + std::to_string(kh) + "x" + std::to_string(kw) +
                                          " filter (dilation " + std::to_string(attrs.dh) + "x" +
                                          std::to_string(attrs.dw) + ") does not fit a padded " +
                                          std::to_string(h + top + bottom) + "x" + std::to_string(w + left + right) +
                                          " input");
    *g = {};
    g->n = n, g->h = h, g->w = w, g->c = c;
    g->kh = kh, g->kw = kw;
    g->sh = attrs.sh, g->sw = attrs.sw, g->dh = attrs.dh, g->dw = attrs.dw;
    g->pad_top = top, g->pad_left = left;
    g->oh = oh;
    g->ow = ow;
    return absl::OkStatus();
}

absl::Status ConvOutputSize(InferenceContext *c, ShapeHandle x, ShapeHandle w, DimensionHandle *oh,
                            DimensionHandle *ow)
{
    ConvAttrs attrs;
    TF_RETURN_IF_ERROR(ReadConvAttrs(c, &attrs));
    *oh = c->UnknownDim();
    *ow = c->UnknownDim();
    const int64_t h = c->Value(c->Dim(x, 1)), wd = c->Value(c->Dim(x, 2));
    const int64_t kh = c->Value(c->Dim(w, 0)), kw = c->Value(c->Dim(w, 1));
    if (h >= 0 && wd >= 0 && kh >= 0 && kw >= 0) {
        struct amsim_conv_geometry g;
        TF_RETURN_IF_ERROR(ConvGeometry(attrs, 1, h, wd, 1, kh, kw, &g));
        *oh = c->MakeDim(g.oh);
        *ow = c->MakeDim(g.ow);
    }
    return absl::OkStatus();
}

absl::Status ConvOutputShape(InferenceContext *c, bool depthwise)
{
    ShapeHandle x, w;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
    TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &w));
    DimensionHandle channels;
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 3), c->Dim(w, 2), &channels));
    DimensionHandle out_c = c->Dim(w, 3);
    if (depthwise)
        TF_RETURN_IF_ERROR(c->Multiply(channels, c->Dim(w, 3), &out_c));
    DimensionHandle oh, ow;
    TF_RETURN_IF_ERROR(ConvOutputSize(c, x, w, &oh, &ow));
    c->set_output(0, c->MakeShape({c->Dim(x, 0), oh, ow, out_c}));
    return absl::OkStatus();
}

ConvKernel::ConvKernel(OpKernelConstruction *ctx) : OpKernel(ctx)
{
    OP_REQUIRES_OK(ctx, ReadArithmetic(ctx, &arith_));
    OP_REQUIRES_OK(ctx, ReadConvAttrs(ctx, &conv_));
}

absl::Status ConvKernel::Geometry(const int64_t x[4], const int64_t w[4], const Tensor *dy, int64_t out_channels,
                                  struct amsim_conv_geometry *g) const
{
    if (x[3] != w[2])
        return absl::InvalidArgumentError(name() + ": input has " + std::to_string(x[3]) +
                                          " channels, the filter expects " + std::to_string(w[2]));
    TF_RETURN_IF_ERROR(ConvGeometry(conv_, x[0], x[1], x[2], x[3], w[0], w[1], g));
    if (dy != nullptr && (dy->dims() != 4 || dy->dim_size(0) != x[0] || dy->dim_size(1) != g->oh ||
                          dy->dim_size(2) != g->ow || dy->dim_size(3) != out_channels))
        return absl::InvalidArgumentError(name() + ": out_backprop has shape " + dy->shape().DebugString() +
                                          ", expected [" + std::to_string(x[0]) + "," + std::to_string(g->oh) + "," +
                                          std::to_string(g->ow) + "," + std::to_string(out_channels) + "]");
    return absl::OkStatus();
}

absl::Status ConvKernel::Prologue(tensorflow::OpKernelContext *ctx, Pass pass, struct amsim_conv_geometry *g,
                                 int64_t *q, tensorflow::Tensor **out) const
{
    int64_t xs[4], ws[4];
    if (pass == Pass::kBackpropInput)
        TF_RETURN_IF_ERROR(ReadSizes(ctx->input(0), "input_sizes", xs));
    else
        TF_RETURN_IF_ERROR(Dims4(ctx->input(0), "input", xs));
    if (pass == Pass::kBackpropFilter)
        TF_RETURN_IF_ERROR(ReadSizes(ctx->input(1), "filter_sizes", ws));
    else
        TF_RETURN_IF_ERROR(Dims4(ctx->input(1), "filter", ws));
    const int64_t out_channels = depthwise_ ? ws[2] * ws[3] : ws[3];
    if (pass == Pass::kForward)
        TF_RETURN_IF_ERROR(Geometry(xs, ws, nullptr, 0, g));
    else
        TF_RETURN_IF_ERROR(Geometry(xs, ws, &ctx->input(2), out_channels, g));
    *q = ws[3];
    const tensorflow::TensorShape shape =
        pass == Pass::kForward         ? tensorflow::TensorShape({g->n, g->oh, g->ow, out_channels})
        : pass == Pass::kBackpropInput ? tensorflow::TensorShape({xs[0], xs[1], xs[2], xs[3]})
                                       : tensorflow::TensorShape({ws[0], ws[1], ws[2], ws[3]});
    return ctx->allocate_output(0, shape, out);
}

absl::Status ConvKernel::Dims4(const Tensor &t, const char *what, int64_t out[4])
{
    if (t.dims() != 4)
        return absl::InvalidArgumentError(std::string(what) + " must have 4 dimensions, got " +
                                          t.shape().DebugString());
    for (int i = 0; i < 4; ++i)
        out[i] = t.dim_size(i);
    return absl::OkStatus();
}

absl::Status ConvKernel::Patches(tensorflow::OpKernelContext *ctx, const struct amsim_conv_geometry &g,
                                 const float *x, Tensor *buf, const float **cols)
{
    if (amsim_conv_patches_are_input(&g)) {
        *cols = x;
        return absl::OkStatus();
    }
    TF_RETURN_IF_ERROR(WorkBuffer(ctx, g.n * g.oh * g.ow * g.kh * g.kw * g.c, buf));
    TF_RETURN_IF_ERROR(EngineStatus(amsim_im2col(&g, x, buf->flat<float>().data()), "amsim_im2col"));
    *cols = buf->flat<float>().data();
    return absl::OkStatus();
}

absl::Status ReadSizes(const Tensor &sizes, const char *name, int64_t out[4])
{
    if (sizes.dtype() != tensorflow::DT_INT32 || sizes.dims() != 1 || sizes.NumElements() != 4)
        return absl::InvalidArgumentError(std::string(name) + " must be an int32 vector of 4 sizes, got " +
                                          sizes.shape().DebugString());
    for (int i = 0; i < 4; ++i) {
        out[i] = sizes.flat<int32_t>()(i);
        if (out[i] < 0)
            return absl::InvalidArgumentError(std::string(name) + " must not hold negative sizes");
    }
    return absl::OkStatus();
}

absl::Status ShapeFromSizes(InferenceContext *c, int index)
{
    ShapeHandle s;
    TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(index, &s));
    TF_RETURN_IF_ERROR(c->WithRank(s, 4, &s));
    c->set_output(0, s);
    return absl::OkStatus();
}

}  // namespace amsim_tf
