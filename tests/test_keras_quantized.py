"""8-bit quantized AM layers (quantize="uint8"/"int8"): the integer arithmetic against an independent numpy
model of the schemes, the straight-through gradients, the range observer, post-training quantization,
saving, and every bad input (docs/quantized.md)."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import amsim.keras as ak
from amsim.gemm.integer import reference_int_matmul
from amsim.keras import (AMConv1D, AMConv2D, AMDense, AMDepthwiseConv2D, CalibrationError, CircuitError,
                         LayerConfigError, approximate, calibrate, quantize)
from amsim.keras.quantization import MOMENTUM

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------------------------
# An independent numpy model of the two schemes (docs/quantized.md, "Schemes")
# ----------------------------------------------------------------------------------------------


def exact_table(signed):
    values = np.arange(256)
    if signed:
        values = np.where(values < 128, values, values - 256)
    return np.multiply.outer(values, values).astype(np.int32)


def perturbed_table(signed, seed):
    """An asymmetric circuit: exact products with small errors, different for (a, b) and (b, a)."""
    rng = np.random.default_rng(seed)
    table = exact_table(signed) + rng.integers(-40, 41, size=(256, 256))
    lo, hi = (-(1 << 15), (1 << 15) - 1) if signed else (0, (1 << 16) - 1)
    return np.clip(table, lo, hi).astype(np.int32)


def affine(lo, hi, signed):
    """(scale, zero point) in float32 as the scheme defines them, the range widened to hold 0."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    if signed:
        span = max(-lo, hi)
        return (np.float32(span / np.float32(127)) if span > 0 else np.float32(1)), 0
    scale = np.float32((hi - lo) / np.float32(255)) if hi > lo else np.float32(1)
    return scale, int(np.clip(np.round(np.float32(-lo / scale)), 0, 255))


def quantized(x, scale, zero, signed):
    lo, hi = (-127, 127) if signed else (0, 255)
    return np.clip(np.round(np.float32(x) / scale) + np.float32(zero), lo, hi).astype(np.int64)


def kernel_params(w, signed, channel_axes):
    """Per tensor for uint8; for int8 one symmetric scale per output channel (the axes channel_axes)."""
    if not signed:
        return affine(w.min(), w.max(), False)
    others = tuple(a for a in range(w.ndim) if a not in channel_axes)
    span = np.abs(w).max(axis=others, keepdims=True).astype(np.float32)
    return np.where(span > 0, span / np.float32(127), np.float32(1)).astype(np.float32), 0


def circuit_sums(qa, qb, table, za, zb, signed):
    """sum over k of (q_a q_b through the table) - zb sum q_a - za sum q_b + K za zb, exactly."""
    acc = reference_int_matmul(np.bitwise_and(qa, 255).astype(np.uint8), np.bitwise_and(qb, 255).astype(np.uint8),
                               table)
    k = qa.shape[1]
    return acc - zb * qa.sum(1, keepdims=True) - za * qb.sum(0, keepdims=True) + k * za * zb


def oracle_dense(x, w, table, signed):
    sx, zx = affine(x.min(), x.max(), signed)
    sw, zw = kernel_params(w, signed, (1,))
    qx, qw = quantized(x, sx, zx, signed), quantized(w, sw, zw, signed)
    return (circuit_sums(qx, qw, table, zx, zw, signed).astype(np.float32) * (sx * np.reshape(sw, -1))).astype(
        np.float32)


def patches(q, kh, kw, stride, pad_value, same):
    """im2col of an NHWC integer input, padded with pad_value as TensorFlow pads SAME."""
    n, h, w, c = q.shape
    if same:
        def pads(size, k):
            out = -(-size // stride)
            total = max((out - 1) * stride + k - size, 0)
            return total // 2, total - total // 2
        q = np.pad(q, [(0, 0), pads(h, kh), pads(w, kw), (0, 0)], constant_values=pad_value)
    oh, ow = (q.shape[1] - kh) // stride + 1, (q.shape[2] - kw) // stride + 1
    cols = np.stack([q[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :].reshape(n, -1)
                     for i in range(oh) for j in range(ow)], axis=1)
    return cols.reshape(n * oh * ow, kh * kw * c), (n, oh, ow)


def oracle_conv2d(x, w, table, signed, stride, same):
    sx, zx = affine(x.min(), x.max(), signed)
    sw, zw = kernel_params(w, signed, (3,))
    qx, qw = quantized(x, sx, zx, signed), quantized(w, sw, zw, signed)
    cols, (n, oh, ow) = patches(qx, w.shape[0], w.shape[1], stride, zx, same)
    sums = circuit_sums(cols, qw.reshape(-1, w.shape[3]), table, zx, zw, signed)
    y = sums.astype(np.float32) * (sx * np.reshape(sw, -1))
    return y.reshape(n, oh, ow, -1).astype(np.float32)


def oracle_depthwise(x, w, table, signed, stride, same):
    kh, kw, c, mult = w.shape
    sx, zx = affine(x.min(), x.max(), signed)
    sw, zw = kernel_params(w, signed, (2, 3))
    qx, qw = quantized(x, sx, zx, signed), quantized(w, sw, zw, signed)
    out = []
    for ch in range(c):
        cols, (n, oh, ow) = patches(qx[..., ch:ch + 1], kh, kw, stride, zx, same)
        sums = circuit_sums(cols, qw[:, :, ch, :].reshape(kh * kw, mult), table, zx, zw, signed)
        scale = sw[0, 0, ch, :] if signed else sw
        out.append((sums.astype(np.float32) * (sx * np.reshape(scale, -1))).reshape(n, oh, ow, mult))
    return np.concatenate(out, axis=-1).astype(np.float32)


def schemes():
    return st.sampled_from(["uint8", "int8"])


def build(layer, x):
    """The layer called once (in inference: an unobserved layer quantizes with the batch's own range)."""
    layer(x)
    layer.set_weights([np.asarray(v) for v in layer.get_weights()])
    return layer


# ----------------------------------------------------------------------------------------------
# The integer arithmetic
# ----------------------------------------------------------------------------------------------


@SETTINGS
@given(scheme=schemes(), m=st.integers(1, 9), k=st.integers(1, 40), n=st.integers(1, 7), seed=st.integers(0, 99))
def test_a_quantized_dense_layer_is_the_scheme_on_the_circuit_exactly(scheme, m, k, n, seed):
    rng = np.random.default_rng(seed)
    signed = scheme == "int8"
    table = perturbed_table(signed, seed)
    x = rng.normal(size=(m, k)).astype(np.float32) + (0.5 if seed % 2 else 0)
    layer = AMDense(n, lut=table, quantize=scheme, use_bias=False, kernel_initializer="random_normal")
    y = np.asarray(layer(x))
    np.testing.assert_array_equal(y, oracle_dense(x, np.asarray(layer.kernel), table, signed))


@SETTINGS
@given(scheme=schemes(), stride=st.integers(1, 2), same=st.booleans(), c=st.integers(1, 3), f=st.integers(1, 4),
       seed=st.integers(0, 99))
def test_a_quantized_conv2d_pads_with_the_zero_point_and_sums_exactly(scheme, stride, same, c, f, seed):
    rng = np.random.default_rng(seed)
    signed = scheme == "int8"
    table = perturbed_table(signed, seed)
    x = np.maximum(rng.normal(size=(2, 6, 5, c)), -0.3).astype(np.float32)
    layer = AMConv2D(f, 3, strides=stride, padding="same" if same else "valid", lut=table, quantize=scheme,
                     use_bias=False)
    y = np.asarray(layer(x))
    expected = oracle_conv2d(x, np.asarray(layer.kernel), table, signed, stride, same)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@SETTINGS
@given(scheme=schemes(), stride=st.integers(1, 2), same=st.booleans(), mult=st.integers(1, 3), seed=st.integers(0, 99))
def test_a_quantized_depthwise_conv_has_a_scale_per_output_channel_under_int8(scheme, stride, same, mult, seed):
    rng = np.random.default_rng(seed)
    signed = scheme == "int8"
    table = perturbed_table(signed, seed)
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    layer = AMDepthwiseConv2D(3, strides=stride, depth_multiplier=mult, padding="same" if same else "valid",
                              lut=table, quantize=scheme, use_bias=False)
    layer.build(x.shape)
    kernel = rng.normal(size=layer.kernel.shape).astype(np.float32) * np.array([1, 10, 0.1], np.float32)[:, None]
    layer.kernel.assign(kernel)
    y = np.asarray(layer(x))
    expected = oracle_depthwise(x, kernel, table, signed, stride, same)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("scheme", ["uint8", "int8"])
def test_with_the_exact_circuit_a_layer_computes_the_float_product_of_its_quantized_operands(scheme):
    rng = np.random.default_rng(1)
    signed = scheme == "int8"
    x = rng.uniform(-1, 3, size=(2, 7, 7, 2)).astype(np.float32)
    layer = AMConv2D(3, 3, padding="same", lut=exact_table(signed), quantize=scheme, use_bias=False)
    y = np.asarray(layer(x))
    w = np.asarray(layer.kernel)
    sx, zx = affine(x.min(), x.max(), signed)
    sw, zw = kernel_params(w, signed, (3,))
    x_hat = (quantized(x, sx, zx, signed) - zx) * np.float64(sx)
    w_hat = (quantized(w, sw, zw, signed) - zw) * np.asarray(sw, np.float64)
    expected = tf.nn.conv2d(x_hat, w_hat, 1, "SAME").numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # ... and the quantization's error is small against the float layer itself
    exact = tf.nn.conv2d(x, w, 1, "SAME").numpy()
    assert np.abs(y - exact).max() < 0.05 * np.abs(exact).max()


def test_every_product_goes_through_the_circuit():
    """One entry of the table changed by d changes each output by d times the uses of that pair, scaled."""
    x = np.array([[0.0, 1.0, 2.0, 2.0]], np.float32)  # uint8: scale 2/255, zero point 0: q = 0, 128, 255, 255
    layer = AMDense(1, lut=exact_table(False), quantize="uint8", use_bias=False)
    layer.build(x.shape)
    layer.kernel.assign(np.full((4, 1), 2.0, np.float32))  # the kernel's range [0, 2]: q = 255, zero point 0
    base = np.asarray(layer(x))
    table = exact_table(False)
    table[255, 255] -= 1000
    changed = AMDense(1, lut=table, quantize="uint8", use_bias=False)
    changed.build(x.shape)
    changed.kernel.assign(layer.kernel)
    scale = np.float32(2 / np.float32(255)) ** 2
    np.testing.assert_allclose(np.asarray(changed(x)) - base, -2 * 1000 * scale, rtol=1e-5)


def test_an_all_zero_circuit_leaves_only_the_zero_point_terms():
    x = np.random.default_rng(0).uniform(-1, 1, size=(5, 6)).astype(np.float32)
    layer = AMDense(3, lut=np.zeros((256, 256), np.int32), quantize="uint8", use_bias=False)
    y = np.asarray(layer(x))
    np.testing.assert_array_equal(y, oracle_dense(x, np.asarray(layer.kernel), np.zeros((256, 256), np.int32), False))
    signed = AMDense(3, lut=np.zeros((256, 256), np.int32), quantize="int8", use_bias=False)
    np.testing.assert_array_equal(np.asarray(signed(x)), 0)


def test_zero_point_sums_stay_exact_beyond_what_float32_counts():
    """70000 values near 255 sum past 2^24, where float32 no longer holds every integer: the all-zero
    circuit leaves only the zero-point terms, whose sums must still be exact."""
    rng = np.random.default_rng(3)
    k = 70_000
    x = rng.uniform(0.97, 1.0, size=(2, k)).astype(np.float32)
    x[:, 0] = -0.5  # a negative input, so that the zero point is not 0
    zeros = np.zeros((256, 256), np.int32)
    layer = build(AMDense(2, lut=zeros, quantize="uint8", use_bias=False), x)
    w = rng.uniform(0.97, 1.0, size=(k, 2)).astype(np.float32)
    w[0] = -0.5
    layer.kernel.assign(w)
    np.testing.assert_array_equal(np.asarray(layer(x)), oracle_dense(x, w, zeros, False))


def test_zero_point_sums_are_exact_at_the_longest_sums_corrected_in_32_bits():
    """Up to K = (2^31 - 1) // (65535 + 3 * 255^2) products, the zero-point correction runs in int32 (its
    every term and partial sum bounded by K times that); at that K and one beyond (int64), with the
    largest circuit outputs and zero points of 255, the sums are still exact."""
    rng = np.random.default_rng(4)
    full = np.full((256, 256), 2**16 - 1, np.int32)
    for k in ((2**31 - 1) // (65535 + 3 * 255 * 255), (2**31 - 1) // (65535 + 3 * 255 * 255) + 1):
        x = rng.uniform(-1.0, 0.0, size=(2, k)).astype(np.float32)
        x[:, 0] = 0.0
        layer = build(AMDense(2, lut=full, quantize="uint8", use_bias=False), x)
        w = rng.uniform(-1.0, 0.0, size=(k, 2)).astype(np.float32)
        w[0] = 0.0
        layer.kernel.assign(w)
        np.testing.assert_array_equal(np.asarray(layer(x)), oracle_dense(x, w, full, False))


def test_a_1d_convolution_is_the_2d_one_on_a_height_1_axis():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 9, 2)).astype(np.float32)
    layer = AMConv1D(4, 3, padding="causal", lut=exact_table(True), quantize="int8", use_bias=False)
    y = np.asarray(layer(x))
    padded = np.pad(x, [(0, 0), (2, 0), (0, 0)])
    sx, _ = affine(x.min(), x.max(), True)  # the causal zeros do not widen the range: it holds 0 anyway
    w = np.asarray(layer.kernel)
    expected = oracle_conv2d(padded[:, None], w[None], exact_table(True), True, 1, False)[:, 0]
    assert affine(padded.min(), padded.max(), True)[0] == sx
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


# ----------------------------------------------------------------------------------------------
# Gradients: the straight-through estimator
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["uint8", "int8"])
def test_gradients_are_those_of_the_float_product_of_the_quantized_operands(scheme):
    rng = np.random.default_rng(5)
    signed = scheme == "int8"
    layer = AMDense(4, lut=perturbed_table(signed, 1), quantize=scheme, use_bias=False)
    x_train = rng.normal(size=(16, 6)).astype(np.float32)
    layer(x_train, training=True)  # observes [min, max] of this batch
    x = (x_train * 1.5).astype(np.float32)  # some elements beyond the observed range: clipped
    dy = rng.normal(size=(16, 4)).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
    dx, dw = tape.gradient(y, [xt, layer.kernel], output_gradients=dy)
    w = np.asarray(layer.kernel)
    sx, zx = affine(x_train.min(), x_train.max(), signed)
    sw, zw = kernel_params(w, signed, (1,))
    x_hat = ((quantized(x, sx, zx, signed) - zx) * sx).astype(np.float32)
    w_hat = ((quantized(w, sw, zw, signed) - zw) * sw).astype(np.float32)
    lo, hi = ((-127 if signed else 0) - zx) * sx, ((127 if signed else 255) - zx) * sx
    inside = (x >= lo) & (x <= hi)
    assert 0 < inside.sum() < inside.size
    np.testing.assert_allclose(dx, np.where(inside, dy @ w_hat.T, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, x_hat.T @ dy, rtol=1e-5, atol=1e-5)


def test_convolution_gradients_match_tensorflows_on_the_quantized_operands():
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 1, size=(2, 6, 6, 2)).astype(np.float32)
    layer = AMDepthwiseConv2D(3, padding="same", depth_multiplier=2, lut=exact_table(False), quantize="uint8",
                              use_bias=False)
    layer(x)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
    dx, dw = tape.gradient(y, [xt, layer.kernel])
    w = np.asarray(layer.kernel)
    sx, zx = affine(x.min(), x.max(), False)
    sw, zw = kernel_params(w, False, (2, 3))
    x_hat = tf.constant(((quantized(x, sx, zx, False) - zx) * sx).astype(np.float32))
    w_hat = tf.constant(((quantized(w, sw, zw, False) - zw) * sw).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch([x_hat, w_hat])
        ref = tf.nn.depthwise_conv2d(x_hat, w_hat, [1, 1, 1, 1], "SAME")
    rx, rw = tape.gradient(ref, [x_hat, w_hat])
    np.testing.assert_allclose(dx, rx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, rw, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The input range: moving minimum and maximum, calibration
# ----------------------------------------------------------------------------------------------


def test_training_batches_move_the_observed_range_and_inference_reads_it():
    layer = AMDense(2, lut="exact_int", quantize="uint8")
    first = np.array([[-1.0, 3.0]], np.float32)
    layer(first, training=True)
    assert (float(layer.range_observer.minimum), float(layer.range_observer.maximum)) == (-1.0, 3.0)
    layer(np.array([[-2.0, 5.0]], np.float32), training=True)
    np.testing.assert_allclose(float(layer.range_observer.minimum), MOMENTUM * -1 + (1 - MOMENTUM) * -2, rtol=1e-6)
    np.testing.assert_allclose(float(layer.range_observer.maximum), MOMENTUM * 3 + (1 - MOMENTUM) * 5, rtol=1e-6)
    before = [float(v) for v in layer.range_observer.variables]
    layer(np.array([[-50.0, 50.0]], np.float32))  # inference: read, not moved
    assert [float(v) for v in layer.range_observer.variables] == before


def test_calibration_sets_each_layers_range_to_the_extremes_it_sees():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.ReLU(),
                              keras.layers.Dense(2, name="b")])
    q = approximate(model, "exact_int", quantize="uint8")
    data = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    assert calibrate(q, data, batch_size=16) == 50
    a, b = q.get_layer("a"), q.get_layer("b")
    assert (float(a.range_observer.minimum), float(a.range_observer.maximum)) == (data.min(), data.max())
    hidden = np.maximum(keras.Sequential(model.layers[:1])(data).numpy(), 0)
    assert float(b.range_observer.minimum) == 0
    np.testing.assert_allclose(float(b.range_observer.maximum), hidden.max(), rtol=0.05)


def test_post_training_quantization_keeps_a_trained_models_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype(np.int32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x[:500], y[:500], epochs=30, verbose=0)
    reference = model.evaluate(x[500:], y[500:], verbose=0)[1]
    assert reference > 0.9
    for spec in ("uint8:exact_int", "int8:mul8s_exact"):
        q = quantize(model, x[:200], spec)
        q.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        assert q.evaluate(x[500:], y[500:], verbose=0)[1] >= reference - 0.03
        assert all(layer.scheme == spec.split(":")[0] for layer in q.layers)
    zero = quantize(model, x[:200], np.zeros((256, 256), np.int32))
    assert np.ptp(zero.predict(x[500:], verbose=0)[:, 0]) < np.ptp(model.predict(x[500:], verbose=0)[:, 0])


def test_quantization_aware_training_learns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int32)
    keras.utils.set_random_seed(1)
    base = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    q = approximate(base, "mul8s_exact", quantize="int8")
    q.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    q.fit(x, y, epochs=20, batch_size=32, verbose=0)
    assert q.evaluate(x, y, verbose=0)[1] > 0.9
    assert float(q.layers[0].range_observer.observed) == 20 * 13


# ----------------------------------------------------------------------------------------------
# Models: approximate(), saving, coverage
# ----------------------------------------------------------------------------------------------


def test_approximate_quantizes_what_it_can_and_names_what_it_cannot():
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.Conv1D(3, 2), keras.layers.LSTM(4),
                              keras.layers.Dense(2)])
    with pytest.warns(ak.ExactLayersWarning, match="no uint8 quantized version") as caught:
        q = approximate(model, "uint8:exact_int")
    assert [name for name, _ in caught[0].message.layers] == [model.layers[1].name]
    assert [type(layer).__name__ for layer in q.layers] == ["AMConv1D", "LSTM", "AMDense"]
    for src, dst in zip(model.layers, q.layers):
        for a, b in zip(src.weights, [w for w in dst.weights if "input_" not in w.name]):
            np.testing.assert_array_equal(a, b)
    report = ak.coverage(q)
    assert {r.multiplier for r in report.layers if r.approximate} == {"uint8:exact_int"}


def test_a_saved_quantized_model_loads_with_its_circuit_and_ranges(tmp_path):
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3), keras.layers.DepthwiseConv2D(2),
                              keras.layers.SeparableConv2D(2, 2), keras.layers.Flatten(), keras.layers.Dense(3)])
    table = perturbed_table(False, 7)
    q = approximate(model, table, quantize="uint8")
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 1)).astype(np.float32)
    q(x, training=True)
    q.save(tmp_path / "q.keras")
    loaded = keras.models.load_model(tmp_path / "q.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), q.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.layers[0].multiplier.table, table)
    for saved, layer in zip(q.layers, loaded.layers):  # Keras saves Conv2D's and Dense's variables its own way
        for name, observer in getattr(layer, "range_observers", {}).items():
            assert [float(v) for v in observer.variables] == \
                [float(v) for v in saved.range_observers[name].variables]
            assert float(observer.observed) == 1


def test_a_tampered_embedded_circuit_is_refused():
    layer = AMDense(2, lut="exact_int", quantize="uint8")
    config = layer.get_config()
    config["lut"] = {**config["lut"], "sha256": "0" * 64}
    with pytest.raises(Exception, match="does not match its checksum"):
        AMDense.from_config(config)


# ----------------------------------------------------------------------------------------------
# Bad input: one clear error each
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"lut": "mul8s_exact", "quantize": "uint8"}, "is a signed circuit; unsigned operands need an unsigned one"),
    ({"lut": "exact_int", "quantize": "int8"}, "is an unsigned circuit; signed operands need a signed one"),
    ({"lut": "bf16_rne", "quantize": "uint8"}, "is a float model"),
    ({"lut": np.zeros((128, 128), np.int32), "quantize": "uint8"}, "multiplies 7-bit operands"),
    ({"lut": np.full((256, 256), 70000, np.int32), "quantize": "uint8"}, "outside the unsigned 16-bit"),
    ({"lut": np.full((256, 256), -1, np.int32), "quantize": "uint8"}, "outside the unsigned 16-bit"),
    ({"lut": np.zeros((256, 256)), "quantize": "uint8"}, "integer"),
    ({"lut": "exact_int", "quantize": "int4"}, "quantize must be one of"),
    ({"lut": "exact_int", "quantize": "uint8", "bits": 7}, "bits=7 does not apply"),
    ({"lut": "exact_int", "quantize": "uint8", "gradient": "approximate"}, "straight-through"),
    ({"lut": "exact_int", "quantize": "uint8", "rounding": "rne"}, "do not apply with quantize"),
])
def test_a_layer_refuses_what_cannot_be_an_8_bit_circuit(kwargs, message):
    with pytest.raises((LayerConfigError, CircuitError, ValueError), match=message) as caught:
        AMDense(2, **kwargs)
    assert "\n" not in str(caught.value) and "AMDense" in str(caught.value)


def test_a_layer_without_a_quantized_version_says_so():
    with pytest.raises(LayerConfigError, match="AMConv2DTranspose has no quantized version"):
        ak.AMConv2DTranspose(2, 3, lut="exact_int", quantize="uint8")


def test_a_peer_lut_file_of_the_wrong_signedness_is_refused(tmp_path):
    from amsim import lutformats
    from amsim.lut import LUT

    path = tmp_path / "signed.npy"
    signed = LUT(table=exact_table(True).astype(np.int64), bits=8, kind="integer", model="s", meta={"signed": True})
    lutformats.save(signed, path, "torchapprox")
    AMDense(2, lut=path, quantize="int8")
    with pytest.raises(Exception, match="signed|verify|exact"):
        AMDense(2, lut=path, quantize="uint8")


def test_sums_that_could_overflow_the_32_bit_accumulator_are_refused_when_built():
    layer = AMDense(1, lut="exact_int", quantize="uint8")
    with pytest.raises(ak.AccumulatorOverflowError, match="overflow the 32-bit accumulator"):
        layer.build((None, 40000))
    AMDense(1, lut="exact_int", quantize="uint8").build((None, 33025))  # 33025 * 255 * 255 < 2^31


def test_calibration_data_of_the_wrong_shape_is_refused():
    model = approximate(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), "exact_int", quantize="uint8")
    with pytest.raises(CalibrationError, match=r"shape \(10, 5\); the model takes inputs of shape \(batch, 4\)"):
        calibrate(model, np.zeros((10, 5), np.float32))
    with pytest.raises(CalibrationError, match="no example"):
        calibrate(model, np.zeros((0, 4), np.float32))
    with pytest.raises(CalibrationError, match="numbers"):
        calibrate(model, np.array([["a"] * 4]))
    float_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(CalibrationError, match="no quantized layer"):
        calibrate(float_model, np.zeros((3, 4), np.float32))


def test_the_multiplier_text_carries_its_scheme():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = approximate(model, {"*": "int8:mul8s_trunc:k=4"})
    assert q.layers[0].scheme == "int8" and q.layers[0].multiplier.label == "mul8s_trunc:k=4"
    with pytest.raises(LayerConfigError, match="takes no width"):
        approximate(model, "uint8:exact_int:8")


@pytest.mark.parametrize("scheme", ["uint8", "int8"])
def test_a_separable_convolution_quantizes_each_of_its_two_products_on_its_own_input(scheme):
    rng = np.random.default_rng(8)
    signed = scheme == "int8"
    table = perturbed_table(signed, 3)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    layer = ak.AMSeparableConv2D(4, 3, padding="same", depth_multiplier=2, lut=table, quantize=scheme,
                                 use_bias=False)
    y = np.asarray(layer(x, training=True))
    assert sorted(layer.range_observers) == ["input", "pointwise_input"]
    depthwise = oracle_depthwise(x, np.asarray(layer.depthwise_kernel), table, signed, 1, True)
    pointwise = np.asarray(layer.pointwise_kernel)
    expected = oracle_conv2d(depthwise, pointwise, table, signed, 1, False)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    inner = layer.range_observers["pointwise_input"]
    assert (float(inner.minimum), float(inner.maximum)) == (depthwise.min(), depthwise.max())


def test_float_and_quantized_multipliers_mix_per_layer_and_precise_undoes_both():
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, name="conv"), keras.layers.Flatten(),
                              keras.layers.Dense(3, name="dense")])
    mixed = approximate(model, {"conv": "uint8:exact_int", "*": "mbm:7"})
    conv, dense = mixed.get_layer("conv"), mixed.get_layer("dense")
    assert (conv.scheme, conv.multiplier.label) == ("uint8", "exact_int")
    assert (dense.scheme, dense.multiplier.name, dense.bits) == (None, "mbm", 7)
    assert {r.multiplier for r in ak.coverage(mixed).layers} == {"uint8:exact_int", "mbm:7"}
    back = ak.precise(mixed)
    assert [type(layer).__name__ for layer in back.layers] == ["Conv2D", "Flatten", "Dense"]
    for a, b in zip(model.weights, back.weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scheme", ["uint8", "int8"])
def test_a_quantized_conv3d_is_the_gemm_of_its_zero_point_padded_patches(scheme):
    rng = np.random.default_rng(9)
    signed = scheme == "int8"
    table = perturbed_table(signed, 4)
    x = rng.uniform(-0.5, 2, size=(2, 4, 5, 5, 2)).astype(np.float32)
    layer = ak.AMConv3D(3, 2, padding="same", lut=table, quantize=scheme, use_bias=False)
    y = np.asarray(layer(x))
    w = np.asarray(layer.kernel)
    sx, zx = affine(x.min(), x.max(), signed)
    sw, zw = kernel_params(w, signed, (4,))
    qx, qw = quantized(x, sx, zx, signed), quantized(w, sw, zw, signed)
    padded = np.pad(qx, [(0, 0), (0, 1), (0, 1), (0, 1), (0, 0)], constant_values=zx)  # SAME, even filter
    cols = np.stack([padded[:, d:d + 2, h:h + 2, v:v + 2, :].reshape(2, -1)
                     for d in range(4) for h in range(5) for v in range(5)], axis=1).reshape(-1, 16)
    sums = circuit_sums(cols, qw.reshape(16, 3), table, zx, zw, signed)
    expected = (sums.astype(np.float32) * (sx * np.reshape(sw, -1))).reshape(2, 4, 5, 5, 3)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


# ----------------------------------------------------------------------------------------------
# The bias, added in the pass that scales the sums back
# ----------------------------------------------------------------------------------------------

#: Quantized layers whose bias the dequantizing op adds, with an input shape each.
BIASED = {
    "dense": (lambda **kw: ak.AMDense(5, **kw), (6, 7)),
    "dense on a 3-D input": (lambda **kw: ak.AMDense(5, **kw), (2, 3, 7)),
    "conv2d": (lambda **kw: ak.AMConv2D(4, 3, padding="same", **kw), (2, 6, 6, 3)),
    "conv2d channels first": (lambda **kw: ak.AMConv2D(4, 3, data_format="channels_first", **kw), (2, 3, 6, 6)),
    "causal conv1d": (lambda **kw: ak.AMConv1D(4, 3, padding="causal", **kw), (2, 8, 3)),
    "depthwise conv2d": (lambda **kw: ak.AMDepthwiseConv2D(3, depth_multiplier=2, **kw), (2, 6, 6, 3)),
    "conv3d": (lambda **kw: ak.AMConv3D(2, 2, **kw), (1, 4, 4, 4, 2)),
}


@pytest.mark.parametrize("scheme", ["uint8", "int8"])
@pytest.mark.parametrize("case", BIASED)
def test_the_bias_added_when_scaling_back_is_a_bias_added_afterwards(case, scheme):
    """Outputs and every gradient, bit for bit, of the quantized layer with its bias and of the same layer
    without one followed by TensorFlow's add of that bias (what the layer computed before it had the op
    add it), in training (the range observed) and inference; channels-first data, whose bias is added
    after the transpose back, too."""
    make, shape = BIASED[case]
    rng = np.random.default_rng(10)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    table = perturbed_table(scheme == "int8", 5)
    layer = make(lut=table, quantize=scheme, bias_initializer="random_normal")
    plain = make(lut=table, quantize=scheme, use_bias=False)
    layer.build(x.shape), plain.build(x.shape)
    plain.kernel.assign(layer.kernel)
    channel_axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1
    bias_shape = [1] * len(shape)
    bias_shape[channel_axis] = -1
    for training in (True, False):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = layer(x, training=training)
            bias = tf.convert_to_tensor(layer.bias)
            tape.watch(bias)
            want = plain(x, training=training) + tf.reshape(bias, bias_shape)
        np.testing.assert_array_equal(y.numpy().view(np.uint32), want.numpy().view(np.uint32))
        dy = tf.constant(rng.normal(size=y.shape).astype(np.float32))
        got = tape.gradient(y, [x, layer.kernel, layer.bias], output_gradients=dy)
        expected = tape.gradient(want, [x, plain.kernel, bias], output_gradients=dy)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def test_a_bias_in_another_compute_dtype_is_added_after_the_cast_as_before():
    """A mixed-precision layer's bias is added in float16, after its output's cast: not fused."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 7)).astype(np.float32)
    layer = ak.AMDense(5, lut=exact_table(False), quantize="uint8", bias_initializer="random_normal",
                       dtype="mixed_float16")
    plain = ak.AMDense(5, lut=exact_table(False), quantize="uint8", use_bias=False, dtype="mixed_float16")
    layer.build(x.shape), plain.build(x.shape)
    plain.kernel.assign(layer.kernel)
    y = layer(x)
    assert y.dtype == tf.float16
    np.testing.assert_array_equal(y.numpy(), (plain(x) + tf.cast(layer.bias, tf.float16)).numpy())
