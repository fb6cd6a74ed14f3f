"""The element-wise steps around a quantized product's integer GEMM, on the engine, the oracle and the
TensorFlow ops: ranges, q = clip(round(x / s) + z) (ties to even) and back, and
y = float32(acc - z_w row_sums - z_x col_sums + K z_x z_w) * scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amsim.errors import RangeError
from amsim.gemm import ShapeError, int_dequantize
from amsim.gemm.integer import IntegerOperandError

#: The longest sums whose correction the engine does in 32 bits (the bound of every partial sum).
K32_CORRECTION = (2**31 - 1) // (65535 + 3 * 255 * 255)


# ----------------------------------------------------------------------------------------------
# Scaling the sums back: int_dequantize
# ----------------------------------------------------------------------------------------------


@st.composite
def problems(draw):
    """acc (..., N) of K products each, its row sums per group, its column sums, zero points, a scale
    per column or one, a bias or none, values at the bounds as often as inside them; K on both sides of
    the 32-bit bound."""
    lead = tuple(draw(st.lists(st.integers(0, 5), max_size=2)))
    groups = draw(st.integers(1, 3))
    n = groups * draw(st.integers(0, 5))
    k = draw(st.sampled_from([0, 1, 7, K32_CORRECTION, K32_CORRECTION + 1, 30_000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    big = min(65535 * k, 2**31 - 1)
    acc = rng.choice([-big, big, 0, *rng.integers(-big, big + 1, 5)], lead + (n,)).astype(np.int32)
    row_sums = rng.choice([0, 255 * k, *rng.integers(0, 255 * k + 1, 3)], lead + (groups,)).astype(np.int32)
    col_sums = rng.choice([0, 255 * k, *rng.integers(0, 255 * k + 1, 3)], (n,)).astype(np.int32)
    zx, zw = (draw(st.sampled_from([0, 255, -255, 1, int(rng.integers(-255, 256))])) for _ in range(2))
    scale = rng.uniform(1e-6, 1.0, (n,) if draw(st.booleans()) else ()).astype(np.float32)
    bias = draw(st.sampled_from([None, "values", "signed zeros"]))
    if bias == "values":
        bias = (rng.normal(0, 1e3, n) * rng.choice([1e-6, 1.0, 1e3], n)).astype(np.float32)
    elif bias == "signed zeros":
        bias = rng.choice(np.array([0.0, -0.0], np.float32), n)
    return acc, scale, k, row_sums, col_sums, (zx, zw), bias


def exact(acc, k, row_sums, col_sums, zx, zw):
    """The corrected sums by Python integers."""
    per = acc.shape[-1] // row_sums.shape[-1] if acc.shape[-1] else 1
    out = np.empty(acc.shape, object)
    for index in np.ndindex(*acc.shape):
        f = index[-1]
        out[index] = int(acc[index]) - zw * int(row_sums[index[:-1] + (f // per,)]) - zx * int(col_sums[f]) + \
            k * zx * zw
    return out


@settings(max_examples=150, deadline=None)
@given(p=problems())
def test_the_engine_is_the_oracle_bit_for_bit_and_the_oracle_rounds_the_exact_sums_once(p):
    acc, scale, k, row_sums, col_sums, zero_points, bias = p
    got = int_dequantize(acc, scale, k=k, row_sums=row_sums, col_sums=col_sums, zero_points=zero_points, bias=bias)
    want = int_dequantize(acc, scale, k=k, row_sums=row_sums, col_sums=col_sums, zero_points=zero_points,
                          bias=bias, backend="reference")
    assert got.dtype == np.float32 and got.shape == acc.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    sums = exact(acc, k, row_sums, col_sums, *zero_points)
    rounded = np.array([np.float32(float(s)) if abs(s) < 2**53 else None for s in sums.ravel()], np.float32)
    scaled = rounded.reshape(acc.shape) * scale
    np.testing.assert_array_equal(want.view(np.uint32), (scaled if bias is None else scaled + bias).view(np.uint32))


# Rows of many columns are scaled one at a time; rows of fewer than 64 in chunks of several rows (7 and 11
# rows of 10 and 6 columns), whatever rows each thread gets.
@pytest.mark.parametrize(("rows", "n", "groups"), [(300, 256, 4), (5003, 10, 2), (20011, 6, 1)])
def test_the_result_does_not_depend_on_the_thread_count(rows, n, groups):
    rng = np.random.default_rng(0)
    acc = rng.integers(-2**24, 2**24, (rows, n)).astype(np.int32)
    row_sums = rng.integers(0, 2**16, (rows, groups)).astype(np.int32)
    cols = rng.integers(0, 2**16, n).astype(np.int32)
    scale, bias = rng.uniform(0, 1, n).astype(np.float32), rng.normal(0, 1, n).astype(np.float32)
    runs = [int_dequantize(acc, scale, k=500, row_sums=row_sums, col_sums=cols, zero_points=(13, 200), bias=bias,
                           threads=t) for t in (1, 2, 7)]
    want = int_dequantize(acc, scale, k=500, row_sums=row_sums, col_sums=cols, zero_points=(13, 200), bias=bias,
                          backend="reference")
    for run in runs:
        np.testing.assert_array_equal(run.view(np.uint32), want.view(np.uint32))


def test_sums_whose_zero_point_is_0_are_not_needed():
    acc = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert int_dequantize(acc, 0.5, k=9).tolist() == (acc * 0.5).tolist()
    rows = np.ones((3, 1), np.int32)
    assert int_dequantize(acc, 1.0, k=9, row_sums=rows, zero_points=(0, 2)).tolist() == (acc - 2).tolist()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"zero_points": (0, 1)}, ShapeError, "row_sums is needed where z_w is not 0"),
    ({"zero_points": (1, 0)}, ShapeError, "col_sums is needed where z_x is not 0"),
    ({"zero_points": (256, 0)}, RangeError, "zero_points[0] (z_x) must be an integer in -255..255"),
    ({"zero_points": 3}, RangeError, "zero_points must be a pair"),
    ({"k": -1}, RangeError, "k (products per sum) must be an integer >= 0"),
    ({"row_sums": np.zeros((3, 3), np.int32), "zero_points": (0, 1)}, ShapeError, "last dimension dividing 4"),
    ({"row_sums": np.zeros((2, 1), np.int32), "zero_points": (0, 1)}, ShapeError, "acc's leading shape"),
    ({"col_sums": np.zeros(3, np.int32), "zero_points": (1, 0)}, ShapeError, "col_sums must be (4,)"),
    ({"scale": np.ones(3, np.float32)}, ShapeError, "scale must be a scalar or (4,)"),
    ({"bias": np.ones(3, np.float32)}, ShapeError, "bias must be (4,)"),
    ({"bias": np.ones(4, np.int32)}, RangeError, "bias must be a float array"),
    ({"acc": np.zeros((3, 4))}, IntegerOperandError, "acc must be an integer array"),
    ({"acc": np.full((3, 4), 2**31)}, IntegerOperandError, "acc must hold int32 values"),
    ({"backend": "gpu"}, RangeError, "backend must be one of"),
])
def test_bad_arguments_are_refused_in_one_line(kwargs, error, message):
    args = {"acc": np.zeros((3, 4), np.int32), "scale": 1.0, "k": 2, **kwargs}
    with pytest.raises(error) as info:
        int_dequantize(args.pop("acc"), args.pop("scale"), **args)
    assert message in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# The dequantizing op
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "function"])
@settings(max_examples=40, deadline=None)
@given(p=problems())
def test_the_op_is_the_engines_with_zero_points_known_or_computed(mode, p):
    tf = pytest.importorskip("tensorflow")
    from amsim.keras.int_ops import am_int_dequantize

    acc, scale, k, row_sums, col_sums, (zx, zw), bias = p
    want = int_dequantize(acc, scale, k=k, row_sums=row_sums, col_sums=col_sums, zero_points=(zx, zw), bias=bias)
    if mode == "eager":
        got = am_int_dequantize(acc, scale, k=k, row_sums=row_sums, col_sums=col_sums, zero_points=(zx, zw),
                                bias=bias)
    else:  # the zero points and K tensors, as a quantized layer computes them
        got = tf.function(lambda *t: am_int_dequantize(t[0], t[1], k=t[2], row_sums=t[3], col_sums=t[4],
                                                       zero_points=(t[5], t[6]), bias=bias))(
            acc, scale, tf.constant(k), row_sums, col_sums, tf.constant(zx), tf.constant(zw))
    assert got.dtype == tf.float32 and got.shape == acc.shape
    np.testing.assert_array_equal(got.numpy().view(np.uint32), want.view(np.uint32))


def test_the_op_gives_tensorflows_cast_and_multiplication_of_the_exact_sums():
    tf = pytest.importorskip("tensorflow")
    from amsim.keras.int_ops import am_int_dequantize

    rng = np.random.default_rng(1)
    k = 2 * K32_CORRECTION  # the 64-bit path, where sums beyond 2^24 round
    acc = rng.integers(-65535 * k, 65535 * k, (64, 32)).astype(np.int32)
    rows, cols = rng.integers(0, 255 * k, (64, 1)).astype(np.int32), rng.integers(0, 255 * k, 32).astype(np.int32)
    scale = rng.uniform(0, 1e-3, 32).astype(np.float32)
    got = am_int_dequantize(acc, scale, k=k, row_sums=rows, col_sums=cols, zero_points=(77, 201))
    sums = tf.constant(acc, tf.int64) - 201 * tf.constant(rows, tf.int64) - 77 * tf.constant(cols, tf.int64) + \
        k * 77 * 201
    np.testing.assert_array_equal(got.numpy().view(np.uint32), (tf.cast(sums, tf.float32) * scale).numpy().view(
        np.uint32))


def test_the_bias_is_tensorflows_add_after_the_multiplication_not_one_fused_rounding():
    tf = pytest.importorskip("tensorflow")
    from amsim.keras.int_ops import am_int_dequantize

    rng = np.random.default_rng(2)
    acc = rng.integers(-2**24, 2**24, (300, 64)).astype(np.int32)
    scale = rng.uniform(0, 1e-3, 64).astype(np.float32)
    bias = rng.normal(0, 1e3, 64).astype(np.float32)
    got = am_int_dequantize(acc, scale, k=300, bias=bias).numpy()
    want = tf.add(tf.cast(acc, tf.float32) * scale, bias).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    fused = (acc.astype(np.float64) * scale.astype(np.float64) + bias).astype(np.float32)
    assert (fused != want).any(), "an FMA's single rounding differs on these values: the test can tell them apart"


def test_the_op_refuses_zero_points_out_of_range_when_it_runs():
    tf = pytest.importorskip("tensorflow")
    from amsim.keras.int_ops import am_int_dequantize

    acc, sums = tf.zeros([2, 3], tf.int32), tf.zeros([2, 1], tf.int32)
    fn = tf.function(lambda z: am_int_dequantize(acc, 1.0, k=1, row_sums=sums, col_sums=tf.zeros([3], tf.int32),
                                                 zero_points=(z, z)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="zero points must be in -255..255"):
        fn(tf.constant(300))


@pytest.mark.parametrize("kwargs, message", [
    ({"acc": np.zeros((2, 3), np.int64)}, "acc must be an int32 tensor"),
    ({"zero_points": (0, 1)}, "row_sums is needed where z_w is not 0"),
    ({"zero_points": (300, 0)}, "must be an integer in -255..255"),
    ({"row_sums": np.zeros((2, 2), np.int32), "zero_points": (0, 1)}, "last dimension dividing 3"),
    ({"col_sums": np.zeros(4, np.int32), "zero_points": (1, 0)}, "col_sums must be (3,)"),
    ({"scale": np.ones(2, np.float32)}, "scale must be a scalar or (3,)"),
    ({"bias": np.ones(2, np.float32)}, "bias must be (3,)"),
    ({"bias": np.ones(3, np.float64)}, "bias must be a float32 tensor"),
])
def test_the_op_refuses_bad_arguments_when_traced_in_one_line(kwargs, message):
    pytest.importorskip("tensorflow")
    from amsim.errors import AmsimError
    from amsim.keras.int_ops import am_int_dequantize

    args = {"acc": np.zeros((2, 3), np.int32), "scale": 1.0, "k": 2, **kwargs}
    with pytest.raises(AmsimError) as info:
        am_int_dequantize(args.pop("acc"), args.pop("scale"), **args)
    assert message in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# Quantize, its inverse, its gradient and the range
# ----------------------------------------------------------------------------------------------


@st.composite
def quantize_problems(draw):
    """x with halves, near-halves, NaN, infinities and values beyond the range; one scale or one per
    element of the last one or two axes; uint8 or int8 ranges with zero points inside them."""
    signed = draw(st.booleans())
    qmin, qmax = (-127, 127) if signed else (0, 255)
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    special = np.float32([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0])
    x = np.where(rng.random(shape) < 0.3, rng.choice(special, shape), rng.normal(0, 200, shape)).astype(np.float32)
    axes = draw(st.integers(0, min(2, len(shape))))
    channels = int(np.prod(shape[len(shape) - axes:])) if axes else 1
    scale = rng.choice(np.float32([1.0, 0.5, 0.37, 3.0]), channels).astype(np.float32)
    zero = np.zeros(channels, np.int64) if signed else rng.integers(0, 256, channels)
    if channels > 1:
        scale, zero = scale.reshape(shape[len(shape) - axes:]), zero.reshape(shape[len(shape) - axes:])
    return x, scale, zero, qmin, qmax


@settings(max_examples=150, deadline=None)
@given(p=quantize_problems())
def test_quantize_is_the_oracle_and_the_oracle_rounds_halves_to_even(p):
    from amsim.gemm import quantize

    x, scale, zero, qmin, qmax = p
    got = quantize(x, scale, zero, qmin, qmax)
    want = quantize(x, scale, zero, qmin, qmax, backend="reference")
    assert got.dtype == want.dtype == (np.int8 if qmin < 0 else np.uint8) and got.shape == x.shape
    np.testing.assert_array_equal(got, want)
    if x.size == 0:
        return
    flat, s, z = x.reshape(-1, scale.size), scale.reshape(-1), zero.reshape(-1)
    for row, q in zip(flat, want.reshape(flat.shape)):
        for v, sc, zp, out in zip(row, s, z, q):
            quotient = float(np.float32(v) / sc)  # one float32 division
            if quotient != quotient:
                assert out == zp
            else:  # Python's round: ties to even (beyond +-1e6 every value clips alike)
                assert out == min(max(round(min(max(quotient, -1e6), 1e6)) + int(zp), qmin), qmax)


def test_quantize_refuses_bad_arguments_in_one_line():
    from amsim.gemm import quantize

    x = np.zeros((2, 3), np.float32)
    for args, error, message in [((x, 1.0, 0, 0, 256), RangeError, "qmax must be an integer in 0..255"),
                                 ((x, 1.0, 0, -128, 255), RangeError, "within 0..255 or -128..127"),
                                 ((x, 1.0, 300, 0, 255), RangeError, "zero_point must lie in 0..255"),
                                 ((x, np.ones(2), 0, 0, 255), ShapeError, "one per element of the last axes"),
                                 ((x, 1.0, 0.5, 0, 255), RangeError, "zero_point must be integers")]:
        with pytest.raises(error) as info:
            quantize(*args)
        assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mode", ["eager", "function"])
@settings(max_examples=40, deadline=None)
@given(p=quantize_problems())
def test_the_quantize_op_is_the_engines(mode, p):
    tf = pytest.importorskip("tensorflow")
    from amsim.gemm import quantize
    from amsim.keras.int_ops import am_quantize

    x, scale, zero, qmin, qmax = p
    want = quantize(x, scale, zero, qmin, qmax)
    zero = zero.astype(np.int32)
    if mode == "eager":
        got = am_quantize(x, scale, zero, qmin, qmax)
    else:  # scale and zero point tensors, as a layer computes them
        got = tf.function(lambda *t: am_quantize(*t, qmin, qmax))(x, scale, zero)
    assert got.dtype == (tf.int8 if qmin < 0 else tf.uint8)
    np.testing.assert_array_equal(got.numpy(), want)


def test_the_quantize_op_refuses_a_zero_point_out_of_range_when_it_runs():
    tf = pytest.importorskip("tensorflow")
    from amsim.keras.int_ops import am_quantize

    fn = tf.function(lambda z: am_quantize(tf.zeros([2, 3]), 1.0, z, 0, 255))
    with pytest.raises(tf.errors.InvalidArgumentError, match="the zero point 300 is outside 0..255"):
        fn(tf.constant(300))


def test_dequantize_is_quantizes_inverse_on_every_8_bit_value():
    from amsim.gemm import dequantize, quantize

    rng = np.random.default_rng(5)
    for dtype, zero in ((np.uint8, rng.integers(0, 256, 3)), (np.int8, np.zeros(3, np.int64))):
        info = np.iinfo(dtype)
        q = np.arange(info.min, info.max + 1, dtype=dtype)
        q = np.stack([q, q[::-1], rng.permutation(q)], axis=-1)  # (256, 3): every value in every channel
        scale = np.float32([0.037, 1.0, 2.0 ** -7])
        x = dequantize(q, scale, zero)
        want = (q.astype(np.float32) - zero.astype(np.float32)) * scale
        np.testing.assert_array_equal(x, want)
        np.testing.assert_array_equal(x, dequantize(q, scale, zero, backend="reference"))
        np.testing.assert_array_equal(quantize(x, scale, zero, int(info.min), int(info.max)), q)


@settings(max_examples=100, deadline=None)
@given(shape=st.lists(st.integers(0, 70), min_size=1, max_size=3), axes=st.integers(0, 2),
       seed=st.integers(0, 2**32 - 1))
def test_minmax_is_the_range_of_each_channel_without_nan(shape, axes, seed):
    from amsim.gemm import minmax

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 100, shape).astype(np.float32)
    x[rng.random(shape) < 0.1] = np.nan
    axes = min(axes, len(shape))
    channels = int(np.prod(shape[len(shape) - axes:])) if axes else 1
    if channels == 0:
        return
    lo, hi = minmax(x, channels)
    flat = x.reshape(-1, channels)
    for f in range(channels):
        numbers = flat[:, f][~np.isnan(flat[:, f])]
        assert (lo[f], hi[f]) == ((numbers.min(), numbers.max()) if numbers.size else (np.inf, -np.inf))
    ref = minmax(x, channels, backend="reference")
    np.testing.assert_array_equal(lo, ref[0]) and np.testing.assert_array_equal(hi, ref[1])


def test_the_range_and_dequantize_ops_are_the_engines():
    tf = pytest.importorskip("tensorflow")
    from amsim.gemm import dequantize, minmax
    from amsim.keras.int_ops import am_dequantize, am_minmax

    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 4, 5)).astype(np.float32)
    for channels in (1, 5, 20):
        got = tf.function(lambda t, c=channels: am_minmax(t, c))(x)
        for g, w in zip(got, minmax(x, channels)):
            np.testing.assert_array_equal(g.numpy(), w)
    q = rng.integers(-128, 128, (300, 4, 5)).astype(np.int8)
    scale = rng.uniform(0, 1, 5).astype(np.float32)
    np.testing.assert_array_equal(am_dequantize(q, scale, np.zeros(5, np.int32)).numpy(),
                                  dequantize(q, scale, np.zeros(5, np.int32)))


@pytest.mark.parametrize("call, message", [
    (lambda ops: ops.am_minmax(np.zeros((4, 3), np.float32), 4), "channels must be the product of x's last axes"),
    (lambda ops: ops.am_minmax(np.zeros((4, 3), np.int32)), "x must be a float32 tensor"),
    (lambda ops: ops.am_dequantize(np.zeros(3, np.int32), 1.0, 0), "q must be a uint8 or int8 tensor"),
    (lambda ops: ops.am_dequantize(np.zeros((2, 3), np.uint8), np.ones(2, np.float32), 0), "one per element"),
])
def test_the_range_and_dequantize_ops_refuse_bad_arguments_in_one_line(call, message):
    pytest.importorskip("tensorflow")
    from amsim.errors import AmsimError
    from amsim.keras import int_ops

    with pytest.raises(AmsimError) as info:
        call(int_ops)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("shape, per_channel", [((300, 7), False), ((5, 5, 3, 16), True), ((0, 4), False)])
def test_quantize_gives_the_sums_per_last_axis_position_in_the_same_pass(shape, per_channel):
    tf = pytest.importorskip("tensorflow")
    from amsim.gemm import quantize
    from amsim.keras.int_ops import am_quantize

    rng = np.random.default_rng(7)
    x = rng.normal(0, 30, shape).astype(np.float32)
    qmin, qmax = (-127, 127) if per_channel else (0, 255)
    scale = rng.uniform(0.1, 1, shape[-1]).astype(np.float32) if per_channel else np.float32(0.2)
    zero = np.zeros(shape[-1], np.int32) if per_channel else np.int32(131)
    q, sums = quantize(x, scale, zero, qmin, qmax, sums=True)
    np.testing.assert_array_equal(q, quantize(x, scale, zero, qmin, qmax))
    assert sums.dtype == np.int32 and sums.tolist() == q.reshape(-1, shape[-1]).astype(np.int64).sum(0).tolist()
    reference = quantize(x, scale, zero, qmin, qmax, sums=True, backend="reference")
    np.testing.assert_array_equal(sums, reference[1])
    op_q, op_sums = tf.function(lambda t: am_quantize(t, scale, zero, qmin, qmax, sums=True))(x)
    np.testing.assert_array_equal(op_q.numpy(), q) and np.testing.assert_array_equal(op_sums.numpy(), sums)


def test_the_clipped_gradient_passes_dy_inside_the_range_only():
    tf = pytest.importorskip("tensorflow")
    from amsim.gemm import clipped_gradient
    from amsim.keras.int_ops import am_clipped_gradient

    rng = np.random.default_rng(8)
    x = rng.normal(0, 2, (70_000,)).astype(np.float32)  # enough for the engine's threads
    x[:6] = [-1.0, 1.5, np.nan, np.inf, -np.inf, np.nextafter(np.float32(1.5), np.float32(2))]
    dy = rng.normal(size=x.shape).astype(np.float32)
    want = np.where((x >= -1.0) & (x <= 1.5), dy, np.float32(0))
    assert want[0] == dy[0] and want[1] == dy[1] and not want[2:6].any()  # the bounds pass, beyond them not
    for got in (clipped_gradient(x, dy, -1.0, 1.5), clipped_gradient(x, dy, -1.0, 1.5, backend="reference"),
                tf.function(lambda a, b: am_clipped_gradient(a, b, -1.0, 1.5))(x, dy).numpy()):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ShapeError, match="dy must have x's shape"):
        clipped_gradient(x, dy[:3], -1.0, 1.5)
