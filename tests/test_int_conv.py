"""The integer LUT convolution: amsim.gemm.int_conv2d (the numpy oracle and the engine's im2col and GEMM) and
the TensorFlow op am_int_conv2d, a grouped conv2d whose every product is a circuit's, padded with a given
value, with each patch's sum of input values."""

from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

from amsim import gemm  # noqa: E402
from amsim.errors import RangeError  # noqa: E402
from amsim.gemm import int_conv2d  # noqa: E402
from amsim.gemm.conv import ConvArgumentError  # noqa: E402
from amsim.gemm.integer import IntegerOperandError  # noqa: E402
from amsim.keras import build  # noqa: E402
from amsim.keras.int_ops import am_int_conv2d  # noqa: E402
from amsim.keras.ops import OpArgumentError, OpDTypeError, XlaCompileError  # noqa: E402
from int_support import (EXACT_S8, FULL, K32, assert_refused_with_one_line, circuit, exact_table,  # noqa: E402
                         value_range)

#: Every integer dtype that holds every n-bit value, n <= 8, of each signedness.
DTYPES = {False: [tf.uint8, tf.uint16, tf.int16, tf.int32, tf.int64], True: [tf.int8, tf.int16, tf.int32, tf.int64]}


def random_table(rng, bits, signed):
    """A table of arbitrary 16-bit circuit outputs: no product is what the exact one gives."""
    lo, hi = (-(1 << 15), 1 << 15) if signed else (0, 1 << 16)
    return rng.integers(lo, hi, (1 << bits, 1 << bits))


def run(mode, x, w, lut, **kwargs):
    """am_int_conv2d eagerly, or inside a tf.function (the operands its arguments)."""
    if mode == "eager":
        return am_int_conv2d(x, w, lut, **kwargs)
    return tf.function(lambda a, b: am_int_conv2d(a, b, lut, **kwargs))(x, w)


def float_conv2d(x, w, strides, padding, dilations, groups):
    """tf.nn.conv2d of each group's channels, in float64 (exact for these small integers)."""
    xs = tf.split(tf.constant(x, tf.float64), groups, axis=3)
    ws = tf.split(tf.constant(w, tf.float64), groups, axis=3)
    ys = [tf.nn.conv2d(a, b, strides, padding, dilations=dilations) for a, b in zip(xs, ws)]
    return tf.concat(ys, axis=3).numpy()


@st.composite
def problems(draw, max_bits=8, max_groups=3, max_channels=3):
    """(x, w, table, kwargs): a grouped conv2d with strides, dilations, SAME or VALID padding, a pad value,
    1..max_bits-bit operands of either signedness (values over the whole range), batch and output channels
    from 0, and a table of arbitrary 16-bit circuit outputs."""
    bits = draw(st.integers(1, max_bits))
    signed = draw(st.booleans())
    groups, cg = draw(st.integers(1, max_groups)), draw(st.integers(1, max_channels))
    fg = draw(st.integers(0, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    # at least the dilated filter, so that VALID fits too
    h, w = ((k - 1) * d + 1 + draw(st.integers(0, 5)) for k, d in zip((kh, kw), dilations))
    n = draw(st.integers(0, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lo, hi = value_range(bits, signed)
    x = rng.integers(lo, hi, (n, h, w, groups * cg))
    wt = rng.integers(lo, hi, (kh, kw, cg, groups * fg))
    pad_value = draw(st.integers(lo, hi - 1))
    kwargs = dict(strides=strides, padding=padding, dilations=dilations, groups=groups, pad_value=pad_value,
                  bits=bits, signed=signed)
    return x, wt, random_table(rng, bits, signed), kwargs


# ---- the oracle ----------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(p=problems())
def test_with_the_exact_table_the_reference_is_tf_conv2d_of_each_group(p):
    """Every patch element is an input value or the pad value p, so the sums are conv2d(x - p) + p * sum(w),
    and the patch sums conv2d(x - p, ones) + p * K: an oracle independent of the reference's im2col."""
    x, w, _, kw = p
    bits, signed, groups, pad = kw["bits"], kw["signed"], kw["groups"], kw["pad_value"]
    geometry = (kw["strides"], kw["padding"], kw["dilations"])
    out, sums = int_conv2d(x, w, exact_table(bits, signed), *geometry, groups=groups, pad_value=pad,
                           signed=signed, bits=bits, backend="reference")
    want = float_conv2d(x - pad, w, *geometry, groups) + pad * w.sum(axis=(0, 1, 2))
    np.testing.assert_array_equal(out, want)
    kh, kwd, cg, _ = w.shape
    ones = np.ones((kh, kwd, cg, groups))
    np.testing.assert_array_equal(sums - pad * kh * kwd * cg, float_conv2d(x - pad, ones, *geometry, groups))
    assert out.dtype == sums.dtype == np.int32


# ---- the engine and the op against the oracle ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(p=problems())
def test_the_cpu_backend_is_the_reference(p):
    x, w, table, kw = p
    geometry = {k: kw.pop(k) for k in ("strides", "padding", "dilations")}
    got = int_conv2d(x, w, table, **geometry, **kw, backend="cpu")
    want = int_conv2d(x, w, table, **geometry, **kw, backend="reference")
    for g, r in zip(got, want):
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_array_equal(g, r)


@settings(max_examples=40, deadline=None)
@given(p=problems(max_groups=1, max_channels=48))
def test_patch_rows_longer_than_a_vector_are_the_references_too(p):
    """One group of many channels: a filter row's taps (up to 3 x 48 bytes) span several vectors of the
    engine's im2col, at the input's edges too."""
    x, w, table, kw = p
    geometry = {k: kw.pop(k) for k in ("strides", "padding", "dilations")}
    got = int_conv2d(x, w, table, **geometry, **kw, backend="cpu")
    want = int_conv2d(x, w, table, **geometry, **kw, backend="reference")
    for g, r in zip(got, want):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("mode", ["eager", "function"])
@settings(max_examples=40, deadline=None)
@given(p=problems(), dtypes=st.data())
def test_the_op_is_gemm_int_conv2d(mode, p, dtypes):
    x, w, table, kw = p
    dtype = dtypes.draw(st.sampled_from(DTYPES[kw["signed"]]))
    out, sums = run(mode, tf.constant(x, dtype), tf.constant(w, dtype), table, **kw)
    geometry = {k: kw.pop(k) for k in ("strides", "padding", "dilations")}
    want_out, want_sums = int_conv2d(x, w, table, **geometry, **kw, backend="reference")
    assert out.dtype == sums.dtype == tf.int32
    assert out.shape == want_out.shape and sums.shape == want_sums.shape
    np.testing.assert_array_equal(out.numpy(), want_out)
    np.testing.assert_array_equal(sums.numpy(), want_sums)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_a_depthwise_conv_is_groups_of_one_channel(signed, padding):
    """groups = C with the kernel (kh, kw, C, Q) reshaped to (kh, kw, 1, C*Q) is tf.nn.depthwise_conv2d."""
    rng = np.random.default_rng(5)
    lo, hi = value_range(8, signed)
    x, w = rng.integers(lo, hi, (2, 9, 8, 5)), rng.integers(lo, hi, (3, 3, 5, 2))
    out, sums = am_int_conv2d(tf.constant(x, tf.int16), tf.reshape(tf.constant(w, tf.int16), (3, 3, 1, 10)),
                              exact_table(8, signed), strides=2, padding=padding, groups=5, signed=signed)
    want = tf.nn.depthwise_conv2d(tf.constant(x, tf.float64), tf.constant(w, tf.float64), [1, 2, 2, 1], padding)
    np.testing.assert_array_equal(out.numpy(), want.numpy())
    ones = tf.ones((3, 3, 5, 1), tf.float64)
    want_sums = tf.nn.depthwise_conv2d(tf.constant(x, tf.float64), ones, [1, 2, 2, 1], padding)
    np.testing.assert_array_equal(sums.numpy(), want_sums.numpy())


@pytest.mark.parametrize("name, signed", [("mul8s_trunc", True), ("mitchell", False)])
def test_approximate_circuits_are_in_the_loop(name, signed):
    lut = circuit(name)
    rng = np.random.default_rng(2)
    lo, hi = value_range(8, signed)
    x, w = rng.integers(lo, hi, (3, 12, 11, 6)), rng.integers(lo, hi, (5, 5, 3, 8))
    kwargs = dict(strides=(1, 2), padding="SAME", dilations=(2, 1), groups=2, pad_value=lo + 3, signed=signed)
    out, sums = am_int_conv2d(x, w, lut, **kwargs)
    want_out, want_sums = int_conv2d(x, w, lut, **kwargs, backend="reference")
    np.testing.assert_array_equal(out.numpy(), want_out)
    np.testing.assert_array_equal(sums.numpy(), want_sums)
    exact, _ = int_conv2d(x, w, exact_table(8, signed), **kwargs)
    assert (want_out != exact).any()  # the circuit is approximate: it is in the loop


def test_the_result_does_not_depend_on_threads():
    rng = np.random.default_rng(4)
    x, w = rng.integers(0, 256, (4, 30, 30, 6)), rng.integers(0, 256, (3, 3, 3, 16))
    lut = random_table(rng, 8, False)
    kwargs = dict(padding="SAME", groups=2, pad_value=77)
    want = int_conv2d(x, w, lut, **kwargs, backend="reference")
    for t in (None, 1, 2, 3, 8):
        for got in (int_conv2d(x, w, lut, **kwargs, threads=t, backend="cpu"),
                    am_int_conv2d(x, w, lut, **kwargs, threads=t)):
            for g, r in zip(got, want):
                np.testing.assert_array_equal(np.asarray(g), r)


def int_conv2d_on(variant, *args, **kwargs):
    """int_conv2d on the engine built for ``variant`` (None: this machine's), forced for the call."""
    load = gemm.engine.load
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gemm.engine, "load", lambda: load(variant))
        return int_conv2d(*args, **kwargs, backend="cpu")


# The builds for CPUs without AVX-512: "avx2" copies a filter row's taps in pieces of 16 or 32 bytes (the pad
# pattern blended in at the input's edges; a piece past the input's memory, or past the part's patch rows,
# through a buffer) and sums them as it goes; "portable" copies them a run at a time.
@pytest.mark.parametrize("variant", ["avx2", "portable"])
@settings(max_examples=30, deadline=None)
@given(p=problems(max_groups=2, max_channels=48))
def test_builds_for_cpus_without_avx512_copy_the_same_patches(variant, p):
    x, w, table, kw = p
    geometry = {k: kw.pop(k) for k in ("strides", "padding", "dilations")}
    want = int_conv2d(x, w, table, **geometry, **kw, backend="reference")
    for g, r in zip(int_conv2d_on(variant, x, w, table, **geometry, **kw), want):
        np.testing.assert_array_equal(g, r)


# Patch matrices large enough to be split between threads (by rows of output positions): one input channel and a
# 5 x 5 filter (runs of 5 bytes), 16 channels and 3 x 3 (runs of 48), 3 channels and 11 x 11 (runs of 33: a
# 32-byte piece and one byte); the input's edges padded, its last windows at the end of its memory.
@pytest.mark.parametrize("variant", [None, "avx2", "portable"], ids=["native", "avx2", "portable"])
@pytest.mark.parametrize(("x_shape", "kernel"), [((4, 56, 56, 1), 5), ((2, 32, 32, 16), 3), ((2, 24, 24, 3), 11)],
                         ids=["narrow", "wide", "piece-and-a-byte"])
def test_patches_split_between_threads_are_the_references(variant, x_shape, kernel):
    rng = np.random.default_rng(kernel)
    for signed in (False, True):
        lo, hi = value_range(8, signed)
        x, w = rng.integers(lo, hi, x_shape), rng.integers(lo, hi, (kernel, kernel, x_shape[3], 3))
        table = random_table(rng, 8, signed)
        kwargs = dict(padding="SAME", pad_value=lo + 5, signed=signed)
        want = int_conv2d(x, w, table, **kwargs, backend="reference")
        for threads in (1, 2, 3):
            for g, r in zip(int_conv2d_on(variant, x, w, table, **kwargs, threads=threads), want):
                np.testing.assert_array_equal(g, r)


# Filter rows' runs (kw * C bytes) the size of the AVX2 build's pieces (16 and 32 bytes, the pad pattern in whole
# pieces at the input's edges), one byte more, and one less; padded, unsigned and signed.
@pytest.mark.parametrize("variant", [None, "avx2", "portable"], ids=["native", "avx2", "portable"])
@pytest.mark.parametrize(("channels", "kw"), [(16, 1), (8, 2), (4, 4), (17, 1), (15, 1), (32, 1), (16, 2), (33, 1),
                                              (31, 1)], ids=lambda v: str(v))
def test_runs_of_a_pieces_size_are_the_references(variant, channels, kw):
    rng = np.random.default_rng(channels * kw)
    for signed in (False, True):
        lo, hi = value_range(8, signed)
        x, w = rng.integers(lo, hi, (2, 7, 9, channels)), rng.integers(lo, hi, (3, kw, channels, 2))
        table = random_table(rng, 8, signed)
        kwargs = dict(padding="SAME", pad_value=hi - 2, signed=signed)
        want = int_conv2d(x, w, table, **kwargs, backend="reference")
        for g, r in zip(int_conv2d_on(variant, x, w, table, **kwargs), want):
            np.testing.assert_array_equal(g, r)


def fenced(shape, values) -> np.ndarray:
    """``values`` as a uint8 array of ``shape`` (a whole number of pages) between two pages that cannot be
    read: a read before its first byte or past its last faults."""
    page = mmap.PAGESIZE
    nbytes = int(np.prod(shape))
    assert nbytes % page == 0
    region = mmap.mmap(-1, nbytes + 2 * page)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for fence in (address, address + page + nbytes):
        assert libc.mprotect(fence, page, 0) == 0, ctypes.get_errno()  # PROT_NONE
    x = np.frombuffer(region, np.uint8, nbytes, page).reshape(shape)
    x[...] = values
    return x


# The input's first and last windows read nothing outside its memory (the AVX2 build's pieces past it go through a
# buffer): runs of 5, 48 and 33 bytes, at the edges of inputs fenced by unreadable pages.
@pytest.mark.parametrize("variant", [None, "avx2", "portable"], ids=["native", "avx2", "portable"])
@pytest.mark.parametrize(("x_shape", "kernel"), [((4, 32, 32, 1), 5), ((2, 16, 16, 16), 3), ((4, 32, 32, 3), 11)],
                         ids=["narrow", "wide", "piece-and-a-byte"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_patches_read_only_the_input(variant, x_shape, kernel, padding):
    rng = np.random.default_rng(kernel)
    x = fenced(x_shape, rng.integers(0, 256, x_shape))
    w = rng.integers(0, 256, (kernel, kernel, x_shape[3], 2))
    want = int_conv2d(x, w, exact_table(8, False), padding=padding, pad_value=3, backend="reference")
    for g, r in zip(int_conv2d_on(variant, x, w, exact_table(8, False), padding=padding, pad_value=3), want):
        np.testing.assert_array_equal(g, r)


def test_sizes_unknown_when_traced_give_static_channels_and_run():
    spec = [tf.TensorSpec((None, None, None, 4), tf.uint8), tf.TensorSpec((3, 3, 2, 6), tf.uint8)]
    fn = tf.function(lambda x, w: am_int_conv2d(x, w, exact_table(8, False), padding="SAME", groups=2),
                     input_signature=spec)
    out, sums = fn.get_concrete_function().structured_outputs
    assert out.shape.as_list() == [None, None, None, 6] and sums.shape.as_list() == [None, None, None, 2]
    rng = np.random.default_rng(6)
    x, w = rng.integers(0, 256, (2, 7, 5, 4)), rng.integers(0, 256, (3, 3, 2, 6))
    got = fn(x.astype(np.uint8), w.astype(np.uint8))
    want = int_conv2d(x, w, exact_table(8, False), padding="SAME", groups=2)
    for g, r in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), r)


# ---- sums: exact, never wrapped ------------------------------------------------------------------------

def test_numpy_sums_beyond_int32_are_int64_and_exact():
    """K = C input channels of a 1x1 filter: one more product than int32 holds."""
    k = K32 + 1
    out, sums = int_conv2d(np.ones((1, 2, 1, k), np.uint8), np.ones((1, 1, k, 2), np.uint8), FULL, bits=1)
    assert out.dtype == np.int64 and out.tolist() == [[[[k * (2**16 - 1)] * 2]] * 2]
    assert sums.tolist() == [[[[k]]] * 2]


def test_the_op_refuses_a_patch_that_could_overflow_int32():
    x, w = tf.ones((1, 1, 1, K32 + 1), tf.uint8), tf.ones((1, 1, K32 + 1, 2), tf.uint8)
    assert am_int_conv2d(x[..., :K32], w[:, :, :K32], FULL, bits=1)[0].numpy().max() == K32 * (2**16 - 1)
    with pytest.raises(RangeError, match=f"am_int_conv2d: K = {K32 + 1} products of magnitude up to 65535 can "
                                         "overflow its int32 output"):
        am_int_conv2d(x, w, FULL, bits=1)
    # K unknown when traced: the kernel refuses it when it runs
    spec = [tf.TensorSpec((1, 1, 1, None), tf.uint8), tf.TensorSpec((1, 1, None, 2), tf.uint8)]
    fn = tf.function(lambda a, b: am_int_conv2d(a, b, FULL, bits=1), input_signature=spec)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"K = {K32 + 1} products of magnitude up to 65535 "
                                                             "can overflow int32"):
        fn(x, w)


# ---- no gradient -----------------------------------------------------------------------------------------


def test_the_op_has_no_gradient():
    from tensorflow.python.framework import ops as tf_ops

    graph = tf.function(lambda x, w: am_int_conv2d(x, w, exact_table(8, False))).get_concrete_function(
        tf.TensorSpec((1, 3, 3, 1), tf.uint8), tf.TensorSpec((2, 2, 1, 1), tf.uint8)).graph
    (op,) = [op for op in graph.get_operations() if op.type == "AmsimIntConv2D"]
    assert tf_ops.get_gradient_function(op) is None


# ---- bad input: one clear error each ------------------------------------------------------------------

X = np.zeros((1, 4, 4, 2), np.uint8)
W = np.zeros((2, 2, 2, 3), np.uint8)
U8 = exact_table(8, False)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"x": X.astype(np.float32)}, OpDTypeError, "am_int_conv2d: x must be an integer tensor, got float32"),
    ({"w": W.astype(bool)}, OpDTypeError, "am_int_conv2d: w must be an integer tensor, got bool"),
    ({"pad_value": 0.5}, OpDTypeError, "am_int_conv2d: pad_value must be an integer tensor, got float32"),
    ({"x": X[0]}, gemm.ShapeError, "am_int_conv2d needs an NHWC input and a (KH, KW, C/groups, F) filter"),
    ({"w": W[0]}, gemm.ShapeError, "am_int_conv2d needs an NHWC input and a (KH, KW, C/groups, F) filter"),
    ({"groups": 2}, gemm.ShapeError,
     "am_int_conv2d: input has 2 channels, a filter of 2 input channels in 2 groups expects 4"),
    ({"w": np.zeros((2, 2, 1, 3), np.uint8), "groups": 2}, gemm.ShapeError,
     "am_int_conv2d: the filter's 3 output channels do not split into 2 groups"),
    ({"w": np.zeros((6, 2, 2, 3), np.uint8)}, gemm.ShapeError, "a 6x2 filter (dilation 1x1) does not fit"),
    ({"strides": 0}, ConvArgumentError, "strides must be a positive int"),
    ({"dilations": (1, 2, 3)}, ConvArgumentError, "dilations must be a positive int"),
    ({"padding": "FULL"}, ConvArgumentError, "padding must be 'SAME', 'VALID' or explicit pairs, got 'FULL'"),
    ({"groups": 0}, RangeError, "groups must be an integer >= 1, not 0"),
    ({"x": np.full((1, 4, 4, 2), 256)}, IntegerOperandError,
     "am_int_conv2d: x holds 256, outside the unsigned 8-bit range 0..255"),
    ({"w": np.full((2, 2, 2, 3), -1, np.int8)}, IntegerOperandError,
     "am_int_conv2d: w holds -1, outside the unsigned 8-bit range 0..255"),
    ({"pad_value": 256}, IntegerOperandError,
     "am_int_conv2d: pad_value holds 256, outside the unsigned 8-bit range 0..255"),
    ({"pad_value": -9, "lut": exact_table(4, True), "bits": 4, "signed": True}, IntegerOperandError,
     "am_int_conv2d: pad_value holds -9, outside the signed 4-bit range -8..7"),
    ({"pad_value": [1, 2]}, gemm.ShapeError, "am_int_conv2d: pad_value must be a scalar, got shape (2,)"),
    ({"lut": np.zeros((256, 255), np.int32)}, gemm.ShapeError, "must be (256, 256) for 8-bit operands"),
    ({"lut": U8.astype(np.float32)}, IntegerOperandError, "lut must be an integer array"),
    ({"lut": EXACT_S8}, IntegerOperandError,
     "the LUT's circuit is signed; am_int_conv2d was called with signed=False"),
    ({"bits": 9}, RangeError, "bits (the operand width n) must be an integer in 1..8, not 9"),
    ({"threads": 0}, RangeError, "threads (None: the engine's default) must be an integer >= 1, not 0"),
])
def test_bad_input_is_refused_with_one_line(kwargs, error, message):
    args = {"x": X, "w": W, "lut": U8, **kwargs}
    assert_refused_with_one_line(error, message, am_int_conv2d, args.pop("x"), args.pop("w"), args.pop("lut"), **args)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"x": X[0]}, gemm.ShapeError, "int_conv2d: x must be 4-D NHWC, got shape (4, 4, 2)"),
    ({"x": X.astype(np.float64)}, IntegerOperandError, "int_conv2d: x must be an integer array, got float64"),
    ({"groups": 2}, gemm.ShapeError, "int_conv2d: input has 2 channels, a filter of 2 input channels in 2 groups"),
    ({"pad_value": 1.0}, IntegerOperandError, "int_conv2d: pad_value must be an int, got 1.0"),
    ({"pad_value": 300}, IntegerOperandError, "int_conv2d: pad_value holds 300, outside the unsigned 8-bit range"),
    ({"backend": "cuda"}, RangeError, "int_conv2d: backend must be one of ('auto', 'reference', 'cpu')"),
    ({"threads": 0}, RangeError, "threads (None: every available CPU) must be an integer >= 1, not 0"),
])
def test_the_numpy_function_refuses_bad_input_with_one_line(kwargs, error, message):
    args = {"x": X, "w": W, "lut": U8, **kwargs}
    assert_refused_with_one_line(error, message, int_conv2d, args.pop("x"), args.pop("w"), args.pop("lut"), **args)


def test_values_out_of_range_are_refused_when_a_function_runs():
    """Traced, the values are unknown: an assertion refuses them before the kernel reads anything."""
    fn = tf.function(lambda x, p: am_int_conv2d(x, np.ones((1, 1, 1, 1), np.int8), exact_table(4, True), bits=4,
                                                signed=True, pad_value=p))
    assert fn(tf.constant([[[[-8], [7]]]]), tf.constant(0))[0].numpy().tolist() == [[[[-8], [7]]]]
    for x, pad, name, bad in (([[[[-9], [7]]]], 0, "x", "-9"), ([[[[1], [1]]]], 8, "pad_value", "8")):
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            fn(tf.constant(x), tf.constant(pad))
        text = str(caught.value)
        assert f"am_int_conv2d: {name} holds values outside the signed 4-bit range -8..7" in text and bad in text


def test_shapes_known_only_at_run_time_are_checked_by_the_kernel():
    fn = tf.function(lambda x, w: am_int_conv2d(x, w, U8, groups=2),
                     input_signature=[tf.TensorSpec(None, tf.uint8)] * 2)
    for x, w, message in ((np.zeros((1, 4, 4, 3)), np.zeros((2, 2, 1, 2)), "input has 3 channels, a filter of 1 "
                                                                            "input channels in 2 groups expects 2"),
                          (np.zeros((1, 4, 4, 2)), np.zeros((2, 2, 1, 3)), "the filter's 3 output channels do not "
                                                                            "split into 2 groups"),
                          (np.zeros((1, 4, 4, 2)), np.zeros((6, 2, 1, 2)), "does not fit a padded 4x4 input"),
                          (np.zeros((4, 4, 2)), np.zeros((2, 2, 1, 2)), "needs an NHWC input")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            fn(x.astype(np.uint8), w.astype(np.uint8))


@pytest.mark.parametrize("x, w, pad, attrs, message", [
    (X + 16, W, 0, {"bits": 4}, r"AmsimIntConv2D: input holds the pattern 16, not a 4-bit one \(0..15\)"),
    (X, W + 200, 0, {"bits": 4}, "AmsimIntConv2D: filter holds the pattern 200, not a 4-bit one"),
    (X, W, 16, {"bits": 4}, "AmsimIntConv2D: pad holds the pattern 16, not a 4-bit one"),
    (X, W, 0, {"bits": 3}, r"lut must be \[8,8\] for 3-bit operands"),
    (X, W, 0, {"bits": 9}, "AmsimIntConv2D: bits must be in 1..8, got 9"),
])
def test_the_raw_op_refuses_what_would_read_outside_the_table(x, w, pad, attrs, message):
    """The op as a graph author calls it, patterns unchecked by the Python wrapper."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        build.load().amsim_int_conv2d(tf.constant(x, tf.uint8), tf.constant(w, tf.uint8),
                                      tf.constant(exact_table(4, False), tf.int32), tf.constant(pad, tf.uint8),
                                      strides=[1, 1, 1, 1], padding="VALID", **attrs)


def test_a_table_tensor_needs_its_value_when_traced():
    with pytest.raises(OpArgumentError, match="am_int_conv2d: lut must be a table known when traced"):
        tf.function(lambda t: am_int_conv2d(X, W, t), autograph=False)(tf.constant(U8))


def test_xla_compilation_is_refused_with_a_clear_error():
    fn = tf.function(lambda x: am_int_conv2d(x, W, U8), jit_compile=True, autograph=False)
    with pytest.raises(XlaCompileError, match="am_int_conv2d: XLA cannot compile .* jit_compile=True"):
        fn(X)
