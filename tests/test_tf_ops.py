"""amsim.keras.ops: the TensorFlow ops are amsim.gemm's arithmetic, forward and backward, on TensorFlow's tensors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from amsim import gemm  # noqa: E402
from amsim.errors import AmsimError  # noqa: E402
from amsim.keras import build, ops  # noqa: E402

from keras_support import M, at_m_bits, exact, mbm  # noqa: E402,F401 (fixtures)
CONV_CASES = [  # (x shape, w shape, strides, padding, dilations)
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, "VALID", 1),
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, "SAME", 1),
    ((1, 11, 10, 2), (3, 2, 2, 5), (2, 3), "SAME", 1),
    ((1, 12, 12, 2), (3, 3, 2, 3), 1, "VALID", (2, 2)),
    ((2, 7, 9, 1), (5, 5, 1, 6), 2, ((2, 1), (0, 3)), 1),
    ((3, 8, 8, 4), (1, 1, 4, 2), 1, "SAME", 1),
]
#: Geometries whose gradients TensorFlow's CPU kernels refuse (dilations with explicit padding or
#: with strides); amsim's take them.
BEYOND_TF_CPU = [
    ((1, 6, 7, 2), (2, 3, 2, 2), 1, [[0, 0], [1, 0], [2, 1], [0, 0]], (2, 1)),
    ((1, 9, 10, 2), (2, 3, 2, 2), (1, 2), "SAME", (2, 1)),
]
DEPTHWISE_CASES = [  # (x shape, w shape (KH, KW, C, Q), strides, padding)
    ((2, 9, 8, 3), (3, 3, 3, 2), 1, "SAME"),
    ((1, 10, 11, 4), (3, 2, 4, 1), (2, 1), "VALID"),
    ((2, 6, 6, 2), (1, 1, 2, 3), 1, "VALID"),
    ((1, 8, 7, 3), (2, 2, 3, 1), 2, ((1, 0), (0, 1))),
]
MATMUL_CASES = [  # (a shape, b shape, transpose_a, transpose_b)
    ((5, 7), (7, 3), False, False),
    ((7, 5), (7, 3), True, False),
    ((5, 7), (3, 7), False, True),
    ((7, 5), (3, 7), True, True),
    ((2, 4, 6), (2, 6, 3), False, False),
    ((2, 1, 4, 6), (3, 3, 6), False, True),
]





def tf_padding(padding):
    """amsim's padding argument in tf.nn.conv2d's form: "SAME", "VALID" or four (before, after) pairs."""
    if isinstance(padding, str):
        return padding
    pairs = [list(p) for p in padding]
    return pairs if len(pairs) == 4 else [[0, 0], *pairs, [0, 0]]


def normal(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def with_grads(fn, *operands, dy_seed=1):
    """fn's output and the gradients of <fn(operands), dy> for a fixed random dy at M bits."""
    tensors = [tf.constant(x) for x in operands]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        y = fn(*tensors)
    dy = tf.constant(at_m_bits(np.random.default_rng(dy_seed), y.shape))
    return [y.numpy(), *(g.numpy() for g in tape.gradient(y, tensors, output_gradients=dy))], dy.numpy()


def assert_close(got, want):
    """Equal up to float32 accumulation order (the exact LUT's products are exact)."""
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(w).max(initial=0))))


def assert_bits_equal(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32))


# ----------------------------------------------------------------------------------------------
# The exact LUT gives TensorFlow's results
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a_shape, b_shape, ta, tb", MATMUL_CASES)
def test_matmul_with_exact_lut_is_tf_matmul_forward_and_backward(exact, a_shape, b_shape, ta, tb):
    rng = np.random.default_rng(0)
    a, b = at_m_bits(rng, a_shape), at_m_bits(rng, b_shape)
    got, _ = with_grads(lambda a, b: ops.am_matmul(a, b, exact, transpose_a=ta, transpose_b=tb), a, b)
    want, _ = with_grads(lambda a, b: tf.linalg.matmul(a, b, transpose_a=ta, transpose_b=tb), a, b)
    assert_close(got, want)


@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV_CASES)
def test_conv2d_with_exact_lut_is_tf_conv2d_forward_and_backward(exact, x_shape, w_shape, strides, padding,
                                                                  dilations):
    rng = np.random.default_rng(1)
    x, w = at_m_bits(rng, x_shape), at_m_bits(rng, w_shape)
    got, _ = with_grads(lambda x, w: ops.am_conv2d(x, w, exact, strides=strides, padding=padding,
                                                   dilations=dilations), x, w)
    want, _ = with_grads(lambda x, w: tf.nn.conv2d(x, w, strides=strides, padding=tf_padding(padding),
                                                   dilations=dilations), x, w)
    assert_close(got, want)


@pytest.mark.parametrize("x_shape, w_shape, strides, padding", DEPTHWISE_CASES)
def test_depthwise_with_exact_lut_is_tf_depthwise_forward_and_backward(exact, x_shape, w_shape, strides, padding):
    rng = np.random.default_rng(2)
    x, w = at_m_bits(rng, x_shape), at_m_bits(rng, w_shape)
    sh, sw = gemm.conv.pair(strides, "strides")
    got, _ = with_grads(lambda x, w: ops.am_depthwise_conv2d(x, w, exact, strides=strides, padding=padding), x, w)
    want, _ = with_grads(lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, sh, sw, 1], tf_padding(padding)), x, w)
    assert_close(got, want)


def test_dilated_depthwise_with_exact_lut_is_tf_depthwise(exact):
    rng = np.random.default_rng(3)
    x, w = at_m_bits(rng, (2, 11, 10, 3)), at_m_bits(rng, (3, 2, 3, 2))
    got, _ = with_grads(lambda x, w: ops.am_depthwise_conv2d(x, w, exact, padding="SAME", dilations=(2, 3)), x, w)
    want, _ = with_grads(lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME", dilations=(2, 3)), x, w)
    assert_close(got, want)


# ----------------------------------------------------------------------------------------------
# Any LUT: bit for bit amsim.gemm's results
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a_shape, b_shape, ta, tb", MATMUL_CASES)
def test_matmul_and_its_gradients_are_gemm_matmuls_bit_for_bit(mbm, a_shape, b_shape, ta, tb):
    rng = np.random.default_rng(4)
    a, b = normal(rng, a_shape), normal(rng, b_shape)
    (y, da, db), dy = with_grads(lambda a, b: ops.am_matmul(a, b, mbm, transpose_a=ta, transpose_b=tb), a, b)
    assert_bits_equal([y], [gemm.matmul(a, b, mbm, transpose_a=ta, transpose_b=tb)])
    if len(a_shape) == len(b_shape) == 2:  # dA = dC (x) op(B)^T, dB = op(A)^T (x) dC, then undo the transposes
        op_b = b.T if tb else b
        op_a = a.T if ta else a
        want_da = gemm.matmul(dy, op_b.T, mbm)
        want_db = gemm.matmul(op_a.T, dy, mbm)
        assert_bits_equal([da, db], [want_da.T if ta else want_da, want_db.T if tb else want_db])
    else:  # broadcast operands: gradients summed over the axes they were broadcast along
        assert da.shape == a.shape and db.shape == b.shape


@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV_CASES + BEYOND_TF_CPU)
def test_conv2d_and_its_gradients_are_gemm_conv2d_bit_for_bit(mbm, x_shape, w_shape, strides, padding, dilations):
    rng = np.random.default_rng(5)
    x, w = normal(rng, x_shape), normal(rng, w_shape)
    geometry = {"strides": strides, "padding": padding, "dilations": dilations}
    got, dy = with_grads(lambda x, w: ops.am_conv2d(x, w, mbm, **geometry), x, w)
    assert_bits_equal(got, [gemm.conv2d(x, w, mbm, **geometry),
                            gemm.conv2d_backprop_input(x.shape, w, dy, mbm, **geometry),
                            gemm.conv2d_backprop_filter(x, w.shape, dy, mbm, **geometry)])


def depthwise_channel_by_channel(x, w, dy, lut, **geometry):
    """The depthwise output, input gradient and filter gradient for cotangent dy, each channel
    as amsim.gemm's conv2d family on that channel alone."""
    q = w.shape[3]
    y, dx, dw = np.empty(dy.shape, np.float32), np.empty(x.shape, np.float32), np.empty(w.shape, np.float32)
    for c in range(x.shape[3]):
        xc, wc, dyc = x[..., c:c + 1], w[:, :, c:c + 1, :], np.ascontiguousarray(dy[..., c * q:(c + 1) * q])
        y[..., c * q:(c + 1) * q] = gemm.conv2d(xc, wc, lut, **geometry)
        dx[..., c:c + 1] = gemm.conv2d_backprop_input(xc.shape, wc, dyc, lut, **geometry)
        dw[:, :, c:c + 1, :] = gemm.conv2d_backprop_filter(xc, wc.shape, dyc, lut, **geometry)
    return [y, dx, dw]


@pytest.mark.parametrize("x_shape, w_shape, strides, padding", DEPTHWISE_CASES)
def test_depthwise_is_gemm_conv2d_of_each_channel_bit_for_bit(mbm, x_shape, w_shape, strides, padding):
    rng = np.random.default_rng(6)
    x, w = normal(rng, x_shape), normal(rng, w_shape)
    geometry = {"strides": strides, "padding": padding, "dilations": (1, 2) if w_shape[1] > 1 else 1}
    got, dy = with_grads(lambda x, w: ops.am_depthwise_conv2d(x, w, mbm, **geometry), x, w)
    assert_bits_equal(got, depthwise_channel_by_channel(x, w, dy, mbm, **geometry))


DEPTHWISE_ODD_CASES = [  # (x shape, w shape (KH, KW, C, Q), strides, padding, dilations)
    ((1, 7, 5, 19), (3, 3, 19, 1), 2, "SAME", 1),                    # channels past one vector of 16
    ((2, 5, 9, 5), (2, 3, 5, 3), (1, 2), "VALID", (2, 1)),            # multiplier 3, strides with dilations
    ((1, 6, 6, 17), (3, 1, 17, 2), 1, ((2, 1), (0, 2)), 1),           # explicit padding, 34 outputs
    ((1, 4, 3, 3), (5, 5, 3, 1), 1, "SAME", 1),                       # a filter larger than the input
    ((1, 9, 8, 6), (3, 3, 6, 1), 3, "SAME", (1, 2)),                  # taps that cover no input
]


@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", DEPTHWISE_ODD_CASES)
def test_depthwise_on_odd_geometries_is_gemm_conv2d_of_each_channel_bit_for_bit(mbm, x_shape, w_shape, strides,
                                                                               padding, dilations):
    rng = np.random.default_rng(60)
    x, w = normal(rng, x_shape), normal(rng, w_shape)
    geometry = {"strides": strides, "padding": padding, "dilations": dilations}
    got, dy = with_grads(lambda x, w: ops.am_depthwise_conv2d(x, w, mbm, **geometry), x, w)
    assert_bits_equal(got, depthwise_channel_by_channel(x, w, dy, mbm, **geometry))


def sprinkle(rng, a, values):
    """a with each of `values` at a few random places."""
    a = a.copy()
    flat = a.reshape(-1)
    for v in values:
        flat[rng.choice(flat.size, size=max(1, flat.size // 40), replace=False)] = v
    return a


@pytest.mark.parametrize("huge", [False, True], ids=["in_window", "beyond_window"])
@pytest.mark.parametrize("q", [1, 2])
def test_depthwise_of_special_values_is_gemm_conv2d_of_each_channel(mbm, huge, q):
    """Zeros of both signs, subnormals, infinities and NaN in every operand; `huge` adds values
    whose products leave float32, outside the fast kernels' window. Bits equal, NaN's payload aside
    (numerics.md leaves it open)."""
    rng = np.random.default_rng(61)
    specials = [0.0, -0.0, 1e-40, -3e-39, np.inf, -np.inf, np.nan] + ([3e38, -2e38] if huge else [])
    x = sprinkle(rng, normal(rng, (2, 7, 6, 18)), specials)
    w = sprinkle(rng, normal(rng, (3, 3, 18, q)), specials)
    geometry = {"strides": 1, "padding": "SAME", "dilations": 1}
    dy = sprinkle(rng, normal(rng, (2, 7, 6, 18 * q)), specials)
    xt, wt = tf.constant(x), tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch([xt, wt])
        y = ops.am_depthwise_conv2d(xt, wt, mbm, **geometry)
    got = [y.numpy(), *(g.numpy() for g in tape.gradient(y, [xt, wt], output_gradients=tf.constant(dy)))]
    want = depthwise_channel_by_channel(x, w, dy, mbm, **geometry)
    assert all(np.isnan(v).any() and np.isinf(v).any() for v in want[:2])
    for g, v in zip(got, want):
        nan = np.isnan(v)
        np.testing.assert_array_equal(np.isnan(g), nan)
        np.testing.assert_array_equal(g[~nan].view(np.uint32), v[~nan].view(np.uint32))


def test_depthwise_does_not_depend_on_the_engine_thread_count(mbm):
    rng = np.random.default_rng(62)
    x, w = normal(rng, (4, 12, 10, 20)), normal(rng, (3, 3, 20, 2))
    one, _ = with_grads(lambda x, w: ops.am_depthwise_conv2d(x, w, mbm, padding="SAME", threads=1), x, w)
    default, _ = with_grads(lambda x, w: ops.am_depthwise_conv2d(x, w, mbm, padding="SAME"), x, w)
    assert_bits_equal(one, default)


def test_batch_dimensions_broadcast_as_gemm_matmul_does(mbm):
    rng = np.random.default_rng(7)
    a, b = normal(rng, (2, 1, 4, 6)), normal(rng, (3, 5, 6))
    y = ops.am_matmul(a, b, mbm, transpose_b=True)
    assert_bits_equal([y.numpy()], [gemm.matmul(a, b, mbm, transpose_b=True)])
    assert y.shape == tf.linalg.matmul(a, b, transpose_b=True).shape == (2, 3, 4, 5)


@pytest.mark.parametrize("lut, rounding, mode", [("mbm", "rne", "ieee"), ("at_mbm", "truncate", "approxtrain")])
def test_rounding_and_mode_are_gemms(lut, rounding, mode):
    rng = np.random.default_rng(8)
    a, b = normal(rng, (6, 9)), normal(rng, (9, 4))
    a[0, :3] = [1e-30, 3e-39, np.inf]  # approxtrain's underflow rule, a subnormal, an infinity
    got = ops.am_matmul(a, b, lut, bits=M, rounding=rounding, mode=mode).numpy()
    assert_bits_equal([got], [gemm.matmul(a, b, lut, bits=M, rounding=rounding, mode=mode)])


def test_lut_given_as_name_or_array_is_the_same_multiplier(mbm):
    rng = np.random.default_rng(9)
    a, b = normal(rng, (3, 5)), normal(rng, (5, 2))
    want = gemm.matmul(a, b, mbm)
    for lut, bits in (("mbm", M), (mbm.table, None)):
        assert_bits_equal([ops.am_matmul(a, b, lut, bits=bits).numpy()], [want])


# ----------------------------------------------------------------------------------------------
# gradient="exact": TensorFlow's own gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a_shape, b_shape, ta, tb", MATMUL_CASES)
def test_exact_gradient_of_matmul_is_tensorflows(mbm, a_shape, b_shape, ta, tb):
    rng = np.random.default_rng(10)
    a, b = normal(rng, a_shape), normal(rng, b_shape)
    got, _ = with_grads(lambda a, b: ops.am_matmul(a, b, mbm, transpose_a=ta, transpose_b=tb, gradient="exact"), a, b)
    want, _ = with_grads(lambda a, b: tf.linalg.matmul(a, b, transpose_a=ta, transpose_b=tb), a, b)
    assert_bits_equal(got[1:], want[1:])


def test_exact_gradients_of_convolutions_are_tensorflows(mbm):
    rng = np.random.default_rng(11)
    x, w, wd = normal(rng, (2, 9, 8, 3)), normal(rng, (3, 3, 3, 4)), normal(rng, (3, 3, 3, 2))
    got, _ = with_grads(lambda x, w: ops.am_conv2d(x, w, mbm, strides=2, padding="SAME", gradient="exact"), x, w)
    want, _ = with_grads(lambda x, w: tf.nn.conv2d(x, w, 2, "SAME"), x, w)
    assert_bits_equal(got[1:], want[1:])
    for dilations in ((1, 1), (2, 3)):
        got, _ = with_grads(lambda x, w: ops.am_depthwise_conv2d(x, w, mbm, padding="SAME", dilations=dilations,
                                                                 gradient="exact"), x, wd)
        want, _ = with_grads(lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME", dilations=dilations),
                             x, wd)
        assert_bits_equal(got[1:], want[1:])


# ----------------------------------------------------------------------------------------------
# Graphs, threads, shapes
# ----------------------------------------------------------------------------------------------


def test_tf_function_gives_the_eager_bits(mbm):
    rng = np.random.default_rng(12)
    x, w = normal(rng, (2, 8, 8, 3)), normal(rng, (3, 3, 3, 4))

    def step(x, w):
        return ops.am_conv2d(x, w, mbm, strides=2, padding="SAME")

    eager, _ = with_grads(step, x, w)
    graph, _ = with_grads(tf.function(step), x, w)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([3, 3, 3, 4])])
    def unknown_shapes(x, w):
        y = step(x, w)
        assert y.shape.as_list() == [None, None, None, 4]
        return y

    assert_bits_equal(graph, eager)
    assert_bits_equal([unknown_shapes(x, w).numpy()], eager[:1])


def test_concurrent_calls_give_identical_results(mbm):
    rng = np.random.default_rng(13)
    x, w = tf.constant(normal(rng, (4, 12, 12, 8))), tf.constant(normal(rng, (3, 3, 8, 8)))

    def step():
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = ops.am_conv2d(x, w, mbm, padding="SAME")
        return [t.numpy() for t in (y, *tape.gradient(y, [x, w]))]

    want = step()
    results = [None] * 6

    def worker(i):
        results[i] = step()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        assert_bits_equal(got, want)


def test_results_do_not_depend_on_the_engine_thread_count(mbm):
    rng = np.random.default_rng(14)
    x, w = normal(rng, (4, 10, 10, 6)), normal(rng, (3, 3, 6, 5))
    one, _ = with_grads(lambda x, w: ops.am_conv2d(x, w, mbm, padding="SAME", threads=1), x, w)
    default, _ = with_grads(lambda x, w: ops.am_conv2d(x, w, mbm, padding="SAME"), x, w)
    assert_bits_equal(one, default)


@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV_CASES)
def test_output_shapes_are_tensorflows(mbm, x_shape, w_shape, strides, padding, dilations):
    x, w = tf.zeros(x_shape), tf.zeros(w_shape)
    want = tf.nn.conv2d(x, w, strides=strides, padding=tf_padding(padding), dilations=dilations).shape
    assert ops.am_conv2d(x, w, mbm, strides=strides, padding=padding, dilations=dilations).shape == want


def test_other_float_dtypes_compute_in_float32_and_come_back(mbm):
    rng = np.random.default_rng(15)
    a, b = normal(rng, (3, 4)), normal(rng, (4, 2))
    got = ops.am_matmul(tf.constant(a, tf.float16), tf.constant(b, tf.float16), mbm)
    assert got.dtype == tf.float16
    want = gemm.matmul(a.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32), mbm)
    np.testing.assert_array_equal(got.numpy(), want.astype(np.float16))


# ----------------------------------------------------------------------------------------------
# Bad input, XLA, the build
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, words", [
    ({"gradient": "straight"}, ops.OpArgumentError, "gradient must be one of"),
    ({"rounding": "up"}, ops.OpArgumentError, "rounding must be one of"),
    ({"mode": "approxtrain", "rounding": "rne"}, ops.OpArgumentError, "truncates"),
    ({"threads": 0}, ops.OpArgumentError, "threads must be"),
    ({"bits": 8}, AmsimError, "M=7"),
])
def test_bad_arguments_raise_one_line_errors(mbm, kwargs, error, words):
    with pytest.raises(error, match=words) as info:
        ops.am_matmul(tf.ones((2, 3)), tf.ones((3, 2)), mbm, **kwargs)
    assert isinstance(info.value, AmsimError) and "\n" not in str(info.value)


def test_bad_operands_raise_one_line_errors(mbm):
    with pytest.raises(ops.OpDTypeError, match="floating"):
        ops.am_matmul(tf.ones((2, 3), tf.int32), tf.ones((3, 2), tf.int32), mbm)
    with pytest.raises(ops.OpDTypeError, match="one dtype"):
        ops.am_matmul(tf.ones((2, 3), tf.float16), tf.ones((3, 2)), mbm)
    with pytest.raises(gemm.ShapeError, match="inner dimensions"):
        ops.am_matmul(tf.ones((2, 3)), tf.ones((4, 2)), mbm)
    with pytest.raises(gemm.ShapeError, match="channels"):
        ops.am_conv2d(tf.ones((1, 5, 5, 3)), tf.ones((3, 3, 2, 4)), mbm)
    with pytest.raises(AmsimError, match="padding"):
        ops.am_conv2d(tf.ones((1, 5, 5, 2)), tf.ones((3, 3, 2, 4)), mbm, padding="FULL")


def test_shapes_known_only_at_run_time_are_checked_by_the_kernel(mbm):
    @tf.function(input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None, None])])
    def f(a, b):
        return ops.am_matmul(a, b, mbm)

    with pytest.raises(tf.errors.InvalidArgumentError, match="inner dimensions differ"):
        f(tf.ones((2, 3)), tf.ones((4, 2)))


def test_xla_compilation_is_refused_with_a_clear_error(mbm):
    def f(a, b):
        return ops.am_matmul(a, b, mbm)

    with pytest.raises(ops.XlaCompileError, match="XLA cannot compile .* jit_compile=True"):
        tf.function(f, jit_compile=True, autograph=False)(tf.ones((2, 3)), tf.ones((3, 2)))
    # autograph re-raises errors of converted code as its own type, with the message kept
    with pytest.raises(Exception, match="XLA cannot compile .* jit_compile=True"):
        tf.function(f, jit_compile=True)(tf.ones((2, 3)), tf.ones((3, 2)))


def test_loading_twice_or_from_threads_gives_one_library():
    libraries = []
    threads = [threading.Thread(target=lambda: libraries.append(build.load())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(lib is build.load() for lib in libraries)
    assert build.library_path() == build.library_path()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps")
def test_ops_and_amsim_gemm_share_one_engine():
    """One engine (one thread pool) per process: in a fresh one, since other tests load the
    engine's other builds (AMSIM_GEMM_VARIANT) on purpose."""
    code = ("import numpy as np\n"
            "from amsim import gemm\n"
            "from amsim.keras import ops\n"
            "mbm = gemm.resolve('mbm', 7)\n"
            "a = np.ones((2, 2), np.float32)\n"
            "assert np.array_equal(ops.am_matmul(a, a, mbm).numpy(), gemm.matmul(a, a, mbm))\n"
            "engines = {line.split()[-1] for line in open('/proc/self/maps') if 'libamsim_gemm' in line}\n"
            "assert len(engines) == 1, engines\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_missing_compiler_is_named(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(build.OpBuildError, match="C\\+\\+17 compiler: '/nonexistent/g\\+\\+' not found"):
        build.library_path()


def test_missing_tensorflow_headers_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(tf.sysconfig, "get_compile_flags", lambda: [f"-I{tmp_path}", "-D_GLIBCXX_USE_CXX11_ABI=1"])
    with pytest.raises(build.OpBuildError, match="op_kernel.h"):
        build.library_path()


# ----------------------------------------------------------------------------------------------
# GPU kernels: compiled wherever the CUDA toolkit is, run where TensorFlow sees a GPU
# ----------------------------------------------------------------------------------------------

needs_tf_gpu = pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="TensorFlow sees no GPU")


def gpu_compile_command_or_skip(obj):
    try:
        return build.gpu_compile_command(obj)
    except build.OpBuildError as exc:  # no nvcc or no CUDA headers on this machine
        pytest.skip(str(exc))


def test_gpu_kernels_compile_against_this_tensorflow(tmp_path):
    obj = tmp_path / "gpu.o"
    proc = subprocess.run(gpu_compile_command_or_skip(obj), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code = obj.read_bytes()
    for name in (b"amsim_cuda_matmul", b"amsim_cuda_conv2d", b"amsim_cuda_conv2d_workspace"):
        assert name in code  # the CUDA ops (ops_cuda.cu), called through their C ABI


def test_a_cuda_build_of_tensorflow_links_the_gpu_kernels_into_the_op_library(monkeypatch, tmp_path):
    gpu_compile_command_or_skip(tmp_path / "gpu.o")
    from amsim import cbuild
    from amsim.gemm import engine

    engine_library = engine.library_path()  # the engine as built already; only the op library is rebuilt
    monkeypatch.setattr(engine, "library_path", lambda variant=None: engine_library)
    monkeypatch.setattr(cbuild, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: True)
    library = build.library_path()  # compiled and linked, not loaded: this TensorFlow may have no GPU support
    kernels = list(tmp_path.glob("_amsim_cuda_*.so"))
    assert len(kernels) == 1, "the CUDA kernels library it links"
    # A shared library links with undefined symbols: check that the kernels library defines every
    # function of amsim_cuda.h that the op library calls, or loading it would fail on a GPU machine.
    calls = dynamic_symbols(library, "--undefined-only")
    assert {"amsim_cuda_matmul", "amsim_cuda_conv2d"} <= calls
    assert calls <= dynamic_symbols(kernels[0], "--defined-only")


def dynamic_symbols(library, which):
    """The amsim_cuda_* names of a shared library's dynamic symbol table (``nm -D``'s --defined-only or
    --undefined-only)."""
    out = subprocess.run(["nm", "-D", which, str(library)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-1].startswith("amsim_cuda_")}


@pytest.mark.skipif(tf.test.is_built_with_cuda(), reason="a CUDA build of TensorFlow")
def test_a_cpu_build_of_tensorflow_gets_the_cpu_ops_alone(recwarn):
    assert b"amsim_cuda" not in build.library_path().read_bytes()
    assert not recwarn.list


def on_device(device, fn, *operands, grads=True):
    """fn's output (which must have run on `device`) and, with grads, its operands' gradients."""
    with tf.device(device):
        tensors = [tf.constant(x) for x in operands]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            y = fn(*tensors)
        assert device.strip("/") in y.device, f"ran on {y.device}, not {device}"
        if not grads:
            return [y.numpy()]
        dy = tf.constant(at_m_bits(np.random.default_rng(1), y.shape))
        return [y.numpy(), *(g.numpy() for g in tape.gradient(y, tensors, output_gradients=dy))]


@needs_tf_gpu
@pytest.mark.parametrize("a_shape, b_shape, ta, tb", MATMUL_CASES)
@pytest.mark.parametrize("lut, bits, rounding, mode", [("mbm", 7, "truncate", "ieee"), ("mbm", 7, "rne", "ieee"),
                                                       ("at_mbm", 7, "truncate", "approxtrain"),
                                                       ("mitchell", 10, "truncate", "ieee")])
def test_gpu_matmul_equals_the_cpu_op_bit_for_bit(a_shape, b_shape, ta, tb, lut, bits, rounding, mode):
    rng = np.random.default_rng(6)
    a, b = normal(rng, a_shape), normal(rng, b_shape)
    mult = gemm.resolve(lut, bits)
    fn = lambda a, b: ops.am_matmul(a, b, mult, transpose_a=ta, transpose_b=tb, rounding=rounding, mode=mode)
    # Broadcast operands' gradients are summed by TensorFlow's own reductions, whose order
    # differs between devices: those cases compare the products only.
    grads = a_shape[:-2] == b_shape[:-2]
    assert_bits_equal(on_device("/GPU:0", fn, a, b, grads=grads), on_device("/CPU:0", fn, a, b, grads=grads))


@needs_tf_gpu
@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV_CASES + BEYOND_TF_CPU)
def test_gpu_conv2d_and_its_gradients_equal_the_cpu_ops_bit_for_bit(mbm, x_shape, w_shape, strides, padding,
                                                                   dilations):
    rng = np.random.default_rng(7)
    x, w = normal(rng, x_shape), normal(rng, w_shape)
    fn = lambda x, w: ops.am_conv2d(x, w, mbm, strides=strides, padding=padding, dilations=dilations)
    assert_bits_equal(on_device("/GPU:0", fn, x, w), on_device("/CPU:0", fn, x, w))


@needs_tf_gpu
@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations",
                         [(*case, 1) for case in DEPTHWISE_CASES] + [((1, 9, 10, 2), (3, 2, 2, 2), 1, "SAME", (2, 3))])
def test_gpu_depthwise_and_its_gradients_equal_the_cpu_ops_bit_for_bit(mbm, x_shape, w_shape, strides, padding,
                                                                      dilations):
    rng = np.random.default_rng(8)
    x, w = normal(rng, x_shape), normal(rng, w_shape)
    fn = lambda x, w: ops.am_depthwise_conv2d(x, w, mbm, strides=strides, padding=padding, dilations=dilations)
    assert_bits_equal(on_device("/GPU:0", fn, x, w), on_device("/CPU:0", fn, x, w))
