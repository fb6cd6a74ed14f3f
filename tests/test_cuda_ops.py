"""The whole ops of the CUDA code (ops_cuda.cu: the TensorFlow GPU ops' sequences of kernel calls), called
through their C ABI (amsim_cuda.h) and compared with the CPU engine bit for bit: on a GPU, or on the CPU
emulation of the same sources (AMSIM_CUDA_EMULATION=1). gpu.cc adds only TensorFlow's plumbing to them."""

import ctypes

import numpy as np
import pytest

from amsim import gemm
from amsim.gemm import cuda
from amsim.gemm.conv import conv_geometry
from cuda_device import Device, bits_equal

pytestmark = pytest.mark.skipif(not cuda.available(),
                                reason=f"backend='cuda' cannot run: {cuda.unavailable_reason()}")

i64, size_t = ctypes.c_int64, ctypes.c_size_t
INVALID_VALUE = 1  # AMSIM_CUDA_INVALID_VALUE
PASSES = cuda.CONV_PASSES  # enum amsim_cuda_conv_pass
FORWARD, BACKPROP_INPUT, BACKPROP_FILTER = PASSES["forward"], PASSES["backprop_input"], PASSES["backprop_filter"]


Geometry = cuda.Geometry


@pytest.fixture(scope="module")
def lib():
    return cuda.library()


def garbage(dev, nbytes):
    """A device buffer of NaNs (0xFF bytes): an op that reads what it did not write, or leaves an output
    element unwritten, shows."""
    return dev.upload(np.full(max(nbytes, 1), 0xFF, np.uint8))


def normal(rng, shape, specials=True):
    x = rng.standard_normal(shape).astype(np.float32)
    if specials and x.size >= 8:  # operands that take the product's special rules
        x.flat[rng.choice(x.size, 4, replace=False)] = [0.0, np.inf, np.nan, 1e-40]
    return x


# ---- AmsimMatMul --------------------------------------------------------------------------------------------

def run_matmul(lib, dev, a, b, mult, ta=False, tb=False, **arithmetic):
    """amsim_cuda_matmul on a and b as AmsimMatMul passes them (amsim_tf::PlanMatMul): op(a), op(b) are strided
    views of the stored matrices, and the leading dimensions broadcast through repeated offsets."""
    a0, a1 = a.shape[-2:]
    b0, b1 = b.shape[-2:]
    M, K = (a1, a0) if ta else (a0, a1)
    N = b0 if tb else b1
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    count = int(np.prod(batch, dtype=np.int64))
    matrices = lambda x: np.broadcast_to(np.arange(int(np.prod(x.shape[:-2]))).reshape(x.shape[:-2]), batch).ravel()
    a_offset = np.ascontiguousarray(matrices(a) * a0 * a1, np.int64)
    b_offset = np.ascontiguousarray(matrices(b) * b0 * b1, np.int64)
    out = np.empty(batch + (M, N), np.float32)
    bytes_ = size_t()
    dev.check(lib.amsim_cuda_matmul_workspace(M, N, K, ctypes.byref(bytes_)), "amsim_cuda_matmul_workspace")
    d_c = garbage(dev, out.nbytes)
    rc = lib.amsim_cuda_matmul(M, N, K, dev.upload(a), *((1, a1) if ta else (a1, 1)), dev.upload(b),
                               *((1, b1) if tb else (b1, 1)), count, a_offset.ctypes.data_as(ctypes.POINTER(i64)),
                               b_offset.ctypes.data_as(ctypes.POINTER(i64)), d_c,
                               ctypes.byref(dev.arith(mult, **arithmetic)), garbage(dev, bytes_.value), bytes_.value,
                               None)
    dev.check(rc, "amsim_cuda_matmul")
    return dev.download(d_c, out)


@pytest.mark.parametrize("a_shape, b_shape, ta, tb", [
    ((5, 7), (7, 3), False, False),
    ((7, 5), (7, 3), True, False),
    ((5, 7), (3, 7), False, True),
    ((7, 5), (3, 7), True, True),
    ((65, 17), (17, 129), False, False),  # several tiles of the GEMM, ragged at both edges
    ((2, 4, 6), (2, 6, 3), False, False),
    ((2, 1, 4, 6), (3, 3, 6), False, True),  # a repeats its offset for runs of 3, b's cycle
    ((1, 9, 5), (4, 9, 6), True, False),  # a split once for the whole batch
    ((3, 4, 5), (5, 2), False, False),  # b broadcast from 2-D
    ((4, 0), (0, 3), False, False),  # K = 0: +0, the empty sum
    ((2, 0, 3), (3, 4), False, False),  # an empty output
])
@pytest.mark.parametrize("lut, bits, rounding, mode", [("mbm", 7, "truncate", "ieee"), ("mbm", 7, "rne", "ieee"),
                                                       ("at_mbm", 7, "truncate", "approxtrain"),
                                                       ("mitchell", 10, "truncate", "ieee")])
def test_matmul_is_the_cpu_engines_bit_for_bit(lib, a_shape, b_shape, ta, tb, lut, bits, rounding, mode):
    rng = np.random.default_rng(sum(a_shape) + 7 * sum(b_shape))
    a, b = normal(rng, a_shape), normal(rng, b_shape)
    mult = gemm.resolve(lut, bits)
    want = gemm.matmul(a, b, mult, transpose_a=ta, transpose_b=tb, rounding=rounding, mode=mode, backend="cpu")
    with Device(lib) as dev:
        got = run_matmul(lib, dev, a, b, mult, ta, tb, rounding=rounding, mode=mode)
    assert bits_equal(got, want)


# ---- The conv2d family ----------------------------------------------------------------------------------------

CONV_CASES = [  # (x shape, w shape, strides, padding, dilations)
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, "SAME", 1),
    ((1, 11, 10, 2), (3, 2, 2, 5), (2, 3), "SAME", 1),
    ((1, 12, 12, 2), (3, 3, 2, 3), 1, "VALID", (2, 2)),
    ((2, 7, 9, 1), (5, 5, 1, 6), 2, ((2, 1), (0, 3)), 1),
    ((1, 9, 10, 2), (2, 3, 2, 2), (1, 2), "SAME", (2, 1)),
    ((3, 5, 6, 4), (1, 1, 4, 2), 1, "VALID", 1),  # identity geometry: no im2col, no col2im
    ((1, 6, 5, 3), (1, 1, 3, 2), 2, "VALID", 1),  # a 1x1 filter that strides: not the identity
    ((1, 4, 6, 2), (5, 2, 2, 3), 1, "VALID", 1),  # OH = 0: an empty output, zero gradients
    ((0, 5, 5, 2), (3, 3, 2, 2), 1, "SAME", 1),  # an empty batch: a zero filter gradient
]


def run_conv(lib, dev, pass_, depthwise, g, q, x, w, dy, out_shape, mult):
    """amsim_cuda_conv2d with a workspace of the size its query reports, and garbage in it and in the output."""
    geometry = Geometry.of(g)
    bytes_ = size_t()
    dev.check(lib.amsim_cuda_conv2d_workspace(pass_, depthwise, ctypes.byref(geometry), q, ctypes.byref(bytes_)),
              "amsim_cuda_conv2d_workspace")
    out = np.empty(out_shape, np.float32)
    d_out = garbage(dev, out.nbytes)
    inputs = [None if t is None else dev.upload(t) for t in (x, w, dy)]
    rc = lib.amsim_cuda_conv2d(pass_, depthwise, ctypes.byref(geometry), q, *inputs, d_out,
                               ctypes.byref(dev.arith(mult)), garbage(dev, bytes_.value), bytes_.value, None)
    dev.check(rc, "amsim_cuda_conv2d")
    return dev.download(d_out, out)


@pytest.fixture(scope="module")
def mbm():
    return gemm.resolve("mbm", 7)


@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV_CASES)
@pytest.mark.parametrize("pass_name", PASSES)
def test_conv2d_passes_are_the_cpu_engines_bit_for_bit(lib, mbm, x_shape, w_shape, strides, padding, dilations,
                                                       pass_name):
    geometry = {"strides": strides, "padding": padding, "dilations": dilations}
    g = conv_geometry(x_shape, w_shape, **geometry)
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x, w, dy = normal(rng, x_shape), normal(rng, w_shape), normal(rng, g.out_shape)
    if pass_name == "forward":
        want, operands = gemm.conv2d(x, w, mbm, **geometry, backend="cpu"), (x, w, None)
    elif pass_name == "backprop_input":
        want, operands = gemm.conv2d_backprop_input(x_shape, w, dy, mbm, **geometry, backend="cpu"), (None, w, dy)
    else:
        want, operands = gemm.conv2d_backprop_filter(x, w_shape, dy, mbm, **geometry, backend="cpu"), (x, None, dy)
    with Device(lib) as dev:
        got = run_conv(lib, dev, PASSES[pass_name], 0, g, w_shape[3], *operands, want.shape, mbm)
    assert bits_equal(got, want)


DEPTHWISE_CASES = [  # (x shape, w shape (KH, KW, C, Q), strides, padding, dilations)
    ((2, 9, 8, 3), (3, 3, 3, 2), 1, "SAME", 1),
    ((1, 10, 11, 4), (3, 2, 4, 1), (2, 1), "VALID", (1, 2)),
    ((2, 6, 6, 2), (1, 1, 2, 3), 1, "VALID", 1),  # identity geometry: the transpose writes dx itself
    ((1, 8, 7, 3), (2, 2, 3, 1), 2, ((1, 0), (0, 1)), 1),
    ((1, 9, 10, 2), (3, 2, 2, 2), 1, "SAME", (2, 3)),
    ((1, 3, 7, 2), (4, 1, 2, 2), 1, "VALID", 1),  # OH = 0
]


@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", DEPTHWISE_CASES)
@pytest.mark.parametrize("pass_name", PASSES)
def test_depthwise_passes_are_the_cpu_engines_conv2d_of_each_channel_bit_for_bit(lib, mbm, x_shape, w_shape, strides,
                                                                                 padding, dilations, pass_name):
    geometry = {"strides": strides, "padding": padding, "dilations": dilations}
    g = conv_geometry(x_shape, w_shape, **geometry)
    c, q = w_shape[2], w_shape[3]
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape) + 1)
    x, w = normal(rng, x_shape), normal(rng, w_shape)
    dy = normal(rng, (g.n, g.oh, g.ow, c * q))
    parts = []
    for ch in range(c):  # channel ch of x with its Q filters, and its Q channels of y and dy
        xc, wc, dyc = x[..., ch:ch + 1], w[:, :, ch:ch + 1, :], np.ascontiguousarray(dy[..., ch * q:(ch + 1) * q])
        parts.append(gemm.conv2d(xc, wc, mbm, **geometry, backend="cpu") if pass_name == "forward" else
                     gemm.conv2d_backprop_input(xc.shape, wc, dyc, mbm, **geometry, backend="cpu")
                     if pass_name == "backprop_input" else
                     gemm.conv2d_backprop_filter(xc, wc.shape, dyc, mbm, **geometry, backend="cpu"))
    want = np.concatenate(parts, axis=2 if pass_name == "backprop_filter" else 3)
    operands = {"forward": (x, w, None), "backprop_input": (None, w, dy), "backprop_filter": (x, None, dy)}[pass_name]
    with Device(lib) as dev:
        got = run_conv(lib, dev, PASSES[pass_name], 1, g, q, *operands, want.shape, mbm)
    assert bits_equal(got, want)


# ---- Arguments refused -----------------------------------------------------------------------------------------

def test_workspace_queries_refuse_what_the_kernels_cannot_take(lib):
    bytes_ = size_t()
    assert lib.amsim_cuda_matmul_workspace(-1, 2, 3, ctypes.byref(bytes_)) == INVALID_VALUE
    assert lib.amsim_cuda_matmul_workspace(1, 2, 3, None) == INVALID_VALUE
    fine = Geometry(1, 5, 5, 2, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5)
    assert lib.amsim_cuda_conv2d_workspace(FORWARD, 0, ctypes.byref(fine), 4, ctypes.byref(bytes_)) == 0
    assert bytes_.value > 0
    wide = Geometry(1, 5, 2**31, 2, 3, 3, 1, 1, 1, 1, 1, 1, 5, 2**31)  # the patch kernels take ints
    assert lib.amsim_cuda_conv2d_workspace(FORWARD, 0, ctypes.byref(wide), 4, ctypes.byref(bytes_)) == INVALID_VALUE
    stride0 = Geometry(1, 5, 5, 2, 3, 3, 0, 1, 1, 1, 1, 1, 5, 5)
    assert lib.amsim_cuda_conv2d_workspace(FORWARD, 0, ctypes.byref(stride0), 4, ctypes.byref(bytes_)) == INVALID_VALUE
    assert lib.amsim_cuda_conv2d_workspace(3, 0, ctypes.byref(fine), 4, ctypes.byref(bytes_)) == INVALID_VALUE
    assert lib.amsim_cuda_conv2d_workspace(FORWARD, 0, None, 4, ctypes.byref(bytes_)) == INVALID_VALUE
    empty = Geometry(0, 5, 5, 2, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5)  # nothing to do: no workspace
    assert lib.amsim_cuda_conv2d_workspace(FORWARD, 0, ctypes.byref(empty), 4, ctypes.byref(bytes_)) == 0
    assert bytes_.value == 0


def test_ops_refuse_a_short_workspace_or_missing_operands_before_queueing_anything(lib, mbm):
    g = Geometry(1, 5, 5, 2, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5)
    bytes_ = size_t()
    assert lib.amsim_cuda_conv2d_workspace(FORWARD, 0, ctypes.byref(g), 4, ctypes.byref(bytes_)) == 0
    with Device(lib) as dev:
        x, w, y = dev.empty(50 * 4), dev.empty(72 * 4), dev.empty(100 * 4)
        ar = dev.arith(mbm)
        ws = dev.empty(bytes_.value)
        assert lib.amsim_cuda_conv2d(FORWARD, 0, ctypes.byref(g), 4, x, w, None, y, ctypes.byref(ar), ws,
                                     bytes_.value - 1, None) == INVALID_VALUE
        assert lib.amsim_cuda_conv2d(FORWARD, 0, ctypes.byref(g), 4, x, None, None, y, ctypes.byref(ar), ws,
                                     bytes_.value, None) == INVALID_VALUE
        assert lib.amsim_cuda_conv2d(FORWARD, 0, ctypes.byref(g), 4, x, w, None, y, None, ws, bytes_.value,
                                     None) == INVALID_VALUE
        assert lib.amsim_cuda_conv2d(FORWARD, 0, ctypes.byref(g), 4, x, w, None, y, ctypes.byref(ar), ws,
                                     bytes_.value, None) == 0
        dev.check(lib.amsim_cuda_synchronize(), "amsim_cuda_synchronize")
        offsets = (i64 * 2)(0, 0)
        assert lib.amsim_cuda_matmul(2, 2, 2, x, 2, 1, w, 2, 1, 2, offsets, None, y, ctypes.byref(ar), ws,
                                     bytes_.value, None) == INVALID_VALUE
