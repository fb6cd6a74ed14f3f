"""Approximate conv2d and its gradients: definitions, exact limits and adjoint identities."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import amsim
from amsim import gemm, generate, reference, sweep
from amsim.gemm import ShapeError, conv


def lut_table(name, m=7):
    return sweep.significand_table(generate.compile_for_mantissa(amsim.find_model(name), m), m)


EXACT, MITCHELL = lut_table("exact"), lut_table("mitchell")
CASES = [  # (x shape, w shape, strides, padding, dilations)
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, "VALID", 1),
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, "SAME", 1),
    ((1, 11, 10, 2), (3, 2, 2, 5), (2, 3), "SAME", 1),
    ((1, 12, 12, 2), (3, 3, 2, 3), 1, "VALID", (2, 2)),
    ((2, 7, 9, 1), (5, 5, 1, 6), 2, ((2, 1), (0, 3)), 1),
    ((3, 8, 8, 4), (1, 1, 4, 2), 1, "SAME", 1),
]


def truncate(x, m=7):
    return (x.view(np.uint32) & np.uint32((0xFFFFFFFF << (23 - m)) & 0xFFFFFFFF)).view(np.float32)


def padding_of(x_shape, w_shape, strides, padding, dilations):
    g = conv.conv_geometry(x_shape, w_shape, strides, padding, dilations)
    return (g.oh, g.ow), g.pads


def naive_conv(x, w, strides, padding, dilations, product):
    """Direct loops over output positions, accumulating in (kh, kw, c) order in float32."""
    (oh, ow), (pt, pb, pl, pr) = padding_of(x.shape, w.shape, strides, padding, dilations)
    sh, sw = conv.pair(strides, "strides")
    dh, dw = conv.pair(dilations, "dilations")
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw, c, o = w.shape
    y = np.zeros((x.shape[0], oh, ow, o), np.float32)
    for i in range(kh):
        for j in range(kw):
            for ch in range(c):
                patch = xp[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, ch]
                y += product(patch[..., None], w[i, j, ch][None, None, None, :])
    return y


def data(x_shape, w_shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)


@pytest.mark.parametrize("case", CASES)
def test_conv2d_equals_direct_loops_with_the_same_product(case):
    x_shape, w_shape, strides, padding, dilations = case
    x, w = data(x_shape, w_shape)
    product = lambda p, q: reference.approx_multiply(p, q, MITCHELL, 7)  # noqa: E731
    expected = naive_conv(x, w, strides, padding, dilations, product)
    got = gemm.conv2d(x, w, MITCHELL, strides, padding, dilations)
    assert got.shape == expected.shape
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("case", CASES)
def test_conv2d_with_exact_lut_is_exact_convolution_of_truncated_operands(case):
    x_shape, w_shape, strides, padding, dilations = case
    x, w = data(x_shape, w_shape, seed=1)
    exact = naive_conv(truncate(x).astype(np.float64), truncate(w).astype(np.float64), strides, padding,
                       dilations, lambda p, q: p * q)
    got = gemm.conv2d(x, w, EXACT, strides, padding, dilations)
    k = np.prod(w_shape[:3])
    np.testing.assert_allclose(got, exact, rtol=0, atol=k * 2**-22 * np.abs(x).max() * np.abs(w).max())


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_conv2d_backends_agree_bit_for_bit(backend):
    x, w = data((2, 10, 10, 3), (3, 3, 3, 8), seed=2)
    ref = gemm.conv2d(x, w, MITCHELL, 1, "SAME", backend="reference")
    assert np.array_equal(gemm.conv2d(x, w, MITCHELL, 1, "SAME", backend=backend).view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("case", CASES)
def test_input_gradient_is_the_adjoint_of_conv2d(case):
    """<conv(x, w), dy> = <x, dx> for the exact product, up to float32 summation error."""
    x_shape, w_shape, strides, padding, dilations = case
    x, w = data(x_shape, w_shape, seed=3)
    xt, wt = truncate(x), truncate(w)
    y = gemm.conv2d(xt, wt, EXACT, strides, padding, dilations)
    dy = truncate(np.random.default_rng(4).standard_normal(y.shape).astype(np.float32))
    dx = gemm.conv2d_backprop_input(x.shape, wt, dy, EXACT, strides, padding, dilations)
    assert dx.shape == x.shape
    lhs = np.sum(y.astype(np.float64) * dy)
    rhs = np.sum(xt.astype(np.float64) * dx)
    assert lhs == pytest.approx(rhs, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("case", CASES)
def test_filter_gradient_is_the_adjoint_of_conv2d(case):
    x_shape, w_shape, strides, padding, dilations = case
    x, w = data(x_shape, w_shape, seed=5)
    xt, wt = truncate(x), truncate(w)
    y = gemm.conv2d(xt, wt, EXACT, strides, padding, dilations)
    dy = truncate(np.random.default_rng(6).standard_normal(y.shape).astype(np.float32))
    dw = gemm.conv2d_backprop_filter(xt, w.shape, dy, EXACT, strides, padding, dilations)
    assert dw.shape == w.shape
    assert np.sum(y.astype(np.float64) * dy) == pytest.approx(np.sum(wt.astype(np.float64) * dw), rel=1e-4, abs=1e-3)


def test_filter_gradient_is_the_approximate_gemm_of_patches_and_dy():
    x, w = data((2, 6, 6, 2), (3, 3, 2, 3), seed=7)
    dy = np.random.default_rng(8).standard_normal((2, 4, 4, 3)).astype(np.float32)
    dw = gemm.conv2d_backprop_filter(x, w.shape, dy, MITCHELL)
    # dw[i, j, c, o] = sum over (n, oh, ow) of x[n, oh + i, ow + j, c] (x) dy[n, oh, ow, o], in that order
    for i, j, c, o in [(0, 0, 0, 0), (2, 1, 1, 2), (1, 2, 0, 1)]:
        acc = np.float32(0)
        patch = x[:, i: i + 4, j: j + 4, c].ravel()
        for p, q in zip(patch, dy[..., o].ravel()):
            acc = np.float32(acc + reference.approx_multiply(p, q, MITCHELL, 7))
        assert acc == dw[i, j, c, o]


def test_input_gradient_uses_dy_as_the_left_operand():
    x, w = data((1, 5, 5, 1), (2, 2, 1, 1), seed=9)
    dy = np.random.default_rng(10).standard_normal((1, 4, 4, 1)).astype(np.float32)
    asymmetric = MITCHELL.copy()
    asymmetric[:, 0] = 1.0  # an asymmetric LUT tells the operand order apart
    dx = gemm.conv2d_backprop_input(x.shape, w, dy, asymmetric)
    # dx[0, 0, 0, 0] has a single term: dy[0, 0, 0, 0] (x) w[0, 0, 0, 0]
    assert dx[0, 0, 0, 0] == reference.approx_multiply(dy[0, 0, 0, 0], w[0, 0, 0, 0], asymmetric, 7)


def test_channel_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"input \(1, 4, 4, 3\), filter \(2, 2, 2, 1\)"):
        gemm.conv2d(np.ones((1, 4, 4, 3), np.float32), np.ones((2, 2, 2, 1), np.float32), MITCHELL)


def test_filter_larger_than_input_is_refused():
    with pytest.raises(ShapeError, match="does not fit"):
        gemm.conv2d(np.ones((1, 2, 2, 1), np.float32), np.ones((4, 4, 1, 1), np.float32), MITCHELL)


def test_filter_one_larger_than_input_gives_an_empty_output_as_in_tensorflow():
    assert gemm.conv2d(np.ones((1, 2, 2, 1), np.float32), np.ones((3, 3, 1, 1), np.float32), MITCHELL).shape \
        == (1, 0, 0, 1)


def test_gradient_with_wrong_dy_shape_is_refused():
    with pytest.raises(ShapeError, match=r"dy has shape \(1, 3, 3, 1\), expected \(1, 2, 2, 1\)"):
        gemm.conv2d_backprop_input((1, 4, 4, 1), np.ones((3, 3, 1, 1), np.float32),
                                   np.ones((1, 3, 3, 1), np.float32), MITCHELL)


def test_tensorflow_style_strides_and_padding_are_accepted():
    x, w = data((1, 8, 8, 2), (3, 3, 2, 2), seed=11)
    a = gemm.conv2d(x, w, MITCHELL, [1, 2, 2, 1], [[0, 0], [1, 1], [1, 1], [0, 0]])
    b = gemm.conv2d(x, w, MITCHELL, 2, ((1, 1), (1, 1)))
    assert np.array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# Geometry arguments: checked once, for type and range, with the argument named
# ------------------------------------------------------------------------------------------------

X4, W3 = np.ones((1, 4, 4, 1), np.float32), np.ones((3, 3, 1, 1), np.float32)
CONV_CALLS = {
    "conv2d": lambda geo: gemm.conv2d(X4, W3, MITCHELL, **geo),
    "backprop_input": lambda geo: gemm.conv2d_backprop_input(X4.shape, W3, np.ones((1, 2, 2, 1), np.float32),
                                                             MITCHELL, **geo),
    "backprop_filter": lambda geo: gemm.conv2d_backprop_filter(X4, W3.shape, np.ones((1, 2, 2, 1), np.float32),
                                                               MITCHELL, **geo),
}


@pytest.mark.parametrize("call", CONV_CALLS)
@pytest.mark.parametrize("geo,named", [
    ({"dilations": -2}, "dilations"), ({"dilations": 0}, "dilations"), ({"dilations": -(2**40)}, "dilations"),
    ({"dilations": -(2**40), "strides": 2**40}, "strides"), ({"strides": 0}, "strides"),
    ({"strides": -1}, "strides"), ({"strides": 1.5}, "strides"), ({"strides": 2.0}, "strides"),
    ({"dilations": (1, 1.5)}, "dilations"), ({"strides": True}, "strides"), ({"strides": "2"}, "strides"),
    ({"strides": (1, 2, 3)}, "strides"), ({"strides": [2, 1, 1, 1]}, "strides"), ({"strides": 2**31}, "strides"),
    ({"strides": None}, "strides"), ({"padding": None}, "padding"), ({"padding": "FULL"}, "padding"),
    ({"padding": ((1, -1), (0, 0))}, "padding"), ({"padding": ((1, 0.5), (0, 0))}, "padding"),
    ({"padding": ((1,), (0, 0))}, "padding"), ({"padding": [[1, 0], [1, 1], [1, 1], [0, 0]]}, "padding"),
    ({"padding": 3}, "padding"),
])
def test_bad_geometry_arguments_are_refused_by_name(call, geo, named):
    with pytest.raises(conv.ConvArgumentError, match=f"^{named}"):
        CONV_CALLS[call](geo)


def test_zero_sized_filters_and_channels_are_refused_by_name():
    with pytest.raises(ShapeError, match="filter height must be >= 1"):
        gemm.conv2d(X4, np.ones((0, 0, 1, 1), np.float32), MITCHELL)
    with pytest.raises(ShapeError, match="input channels must be >= 1"):
        gemm.conv2d(np.ones((1, 4, 4, 0), np.float32), np.ones((3, 3, 0, 1), np.float32), MITCHELL)
    with pytest.raises(ShapeError, match="4-D"):
        gemm.conv2d_backprop_input((1, 4, 4), W3, np.ones((1, 2, 2, 1), np.float32), MITCHELL)
    with pytest.raises(conv.ConvArgumentError, match=r"input shape\[1\]"):
        gemm.conv2d_backprop_input((1, 4.0, 4, 1), W3, np.ones((1, 2, 2, 1), np.float32), MITCHELL)


def test_empty_batches_and_zero_output_channels_give_empty_results():
    assert gemm.conv2d(X4, np.ones((3, 3, 1, 0), np.float32), MITCHELL).shape == (1, 2, 2, 0)
    assert gemm.conv2d(np.ones((0, 4, 4, 1), np.float32), W3, MITCHELL).shape == (0, 2, 2, 1)
    dx = gemm.conv2d_backprop_input((1, 4, 4, 1), np.ones((3, 3, 1, 0), np.float32),
                                    np.ones((1, 2, 2, 0), np.float32), MITCHELL)
    assert dx.shape == (1, 4, 4, 1) and not dx.any()


GEOMETRY_VALUES = st.one_of(st.integers(-3, 6), st.sampled_from([2**31, -(2**40), 1.5, 2.0, None, True]))


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 4), kw=st.integers(1, 4),
       strides=st.one_of(GEOMETRY_VALUES, st.tuples(GEOMETRY_VALUES, GEOMETRY_VALUES)),
       dilations=st.one_of(GEOMETRY_VALUES, st.tuples(GEOMETRY_VALUES, GEOMETRY_VALUES)),
       padding=st.one_of(st.sampled_from(["SAME", "VALID", "same", None, "x"]),
                         st.tuples(st.tuples(st.integers(-1, 3), st.integers(0, 3)),
                                   st.tuples(st.integers(0, 3), st.integers(0, 3)))))
def test_any_geometry_either_computes_or_is_refused_cleanly(h, w, kh, kw, strides, dilations, padding):
    """Fuzzing every geometry argument: a result of the right shape, or an amsim error; never a crash,
    never an error of another kind."""
    x, wt = np.ones((1, h, w, 2), np.float32), np.ones((kh, kw, 2, 3), np.float32)
    try:
        g = conv.conv_geometry(x.shape, wt.shape, strides, padding, dilations)
    except amsim.AmsimError:
        with pytest.raises(amsim.AmsimError):
            gemm.conv2d(x, wt, MITCHELL, strides, padding, dilations)
        return
    y = gemm.conv2d(x, wt, MITCHELL, strides, padding, dilations)
    assert y.shape == g.out_shape
    dy = np.ones(y.shape, np.float32)
    assert gemm.conv2d_backprop_input(x.shape, wt, dy, MITCHELL, strides, padding, dilations).shape == x.shape
    assert gemm.conv2d_backprop_filter(x, wt.shape, dy, MITCHELL, strides, padding, dilations).shape == wt.shape


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 5), kw=st.integers(1, 5),
       sh=st.integers(1, 4), sw=st.integers(1, 4), dh=st.integers(1, 3), dw=st.integers(1, 3),
       padding=st.one_of(st.sampled_from(["SAME", "VALID"]),
                         st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                   st.tuples(st.integers(0, 3), st.integers(0, 3)))))
def test_output_shapes_equal_tensorflows_wherever_tensorflow_accepts_the_arguments(h, w, kh, kw, sh, sw, dh, dw,
                                                                                   padding):
    tf = pytest.importorskip("tensorflow")
    x, wt = np.ones((1, h, w, 2), np.float32), np.ones((kh, kw, 2, 3), np.float32)
    tf_padding = padding if isinstance(padding, str) else [[0, 0], list(padding[0]), list(padding[1]), [0, 0]]
    # TensorFlow's shape function (graph tracing), the rule its kernels follow: oneDNN's eager kernel
    # returns other shapes for filters larger than the input
    conv = tf.function(lambda a, b: tf.nn.conv2d(a, b, (sh, sw), tf_padding, dilations=(dh, dw)))
    try:
        expected = tuple(conv.get_concrete_function(tf.TensorSpec(x.shape), tf.TensorSpec(wt.shape)).output_shapes)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, ValueError):
        return  # TensorFlow refuses these arguments; amsim may compute or refuse them
    assert gemm.conv2d(x, wt, MITCHELL, (sh, sw), padding, (dh, dw)).shape == expected
