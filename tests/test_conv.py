"""Approximate conv2d and its gradients: definitions, exact limits and adjoint identities."""

import numpy as np
import pytest

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
    s = conv.pair(strides, "s")
    d = conv.pair(dilations, "d")
    return conv.conv_geometry(x_shape[1:3], w_shape[:2], s, padding, d)


def naive_conv(x, w, strides, padding, dilations, product):
    """Direct loops over output positions, accumulating in (kh, kw, c) order in float32."""
    (oh, ow), (pt, pb, pl, pr) = padding_of(x.shape, w.shape, strides, padding, dilations)
    sh, sw = conv.pair(strides, "s")
    dh, dw = conv.pair(dilations, "d")
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
        gemm.conv2d(np.ones((1, 2, 2, 1), np.float32), np.ones((3, 3, 1, 1), np.float32), MITCHELL)


def test_gradient_with_wrong_dy_shape_is_refused():
    with pytest.raises(ShapeError, match=r"dy has shape \(1, 3, 3, 1\), expected \(1, 2, 2, 1\)"):
        gemm.conv2d_backprop_input((1, 4, 4, 1), np.ones((3, 3, 1, 1), np.float32),
                                   np.ones((1, 3, 3, 1), np.float32), MITCHELL)


def test_tensorflow_style_strides_and_padding_are_accepted():
    x, w = data((1, 8, 8, 2), (3, 3, 2, 2), seed=11)
    a = gemm.conv2d(x, w, MITCHELL, [1, 2, 2, 1], [[0, 0], [1, 1], [1, 1], [0, 0]])
    b = gemm.conv2d(x, w, MITCHELL, 2, ((1, 1), (1, 1)))
    assert np.array_equal(a, b)
