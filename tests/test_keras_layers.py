"""The Keras 3 layers of amsim.keras: each is the Keras layer it replaces, with approximate products."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import amsim.keras as ak  # noqa: E402
from amsim import gemm  # noqa: E402
from amsim import lut as lutlib  # noqa: E402
from amsim.errors import AmsimError, LUTError  # noqa: E402
from amsim.keras.approxtrain import AMConv2D as ATConv2D  # noqa: E402
from amsim.keras.approxtrain import denseam  # noqa: E402

from keras_support import M, at_m_bits, exact, mbm  # noqa: E402,F401 (fixtures)





def same_weights(reference, layer, rng):
    """Give both built layers the same weights, at M bits."""
    weights = [at_m_bits(rng, w.shape) for w in reference.weights]
    reference.set_weights(weights)
    layer.set_weights(weights)


def forward_and_gradients(layer, x, cotangent):
    """y = layer(x) and the gradients of sum(y * cotangent) with respect to x and the weights.

    A linear loss makes the incoming gradient the cotangent itself, M-bit
    values, so the backward products are exact with the exact LUT too.
    """
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * cotangent)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return y.numpy(), [g.numpy() for g in grads]


LAYER_CASES = {
    "dense": (lambda **am: ak.AMDense(6, **am), lambda: keras.layers.Dense(6), (5, 12)),
    "dense_rank4": (lambda **am: ak.AMDense(6, **am), lambda: keras.layers.Dense(6), (2, 3, 4, 12)),
    "conv2d_same_strided": (lambda **am: ak.AMConv2D(5, 3, strides=2, padding="same", **am),
                            lambda: keras.layers.Conv2D(5, 3, strides=2, padding="same"), (2, 9, 9, 3)),
    "conv2d_dilated": (lambda **am: ak.AMConv2D(4, (3, 2), dilation_rate=2, **am),
                       lambda: keras.layers.Conv2D(4, (3, 2), dilation_rate=2), (2, 9, 8, 3)),
    "conv2d_channels_first": (lambda **am: ak.AMConv2D(4, 3, data_format="channels_first", **am),
                              lambda: keras.layers.Conv2D(4, 3, data_format="channels_first"), (2, 3, 7, 7)),
    "conv2d_groups": (lambda **am: ak.AMConv2D(4, 3, groups=2, **am),
                      lambda: keras.layers.Conv2D(4, 3, groups=2), (2, 6, 6, 4)),
    "depthwise": (lambda **am: ak.AMDepthwiseConv2D(3, depth_multiplier=2, padding="same", **am),
                  lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (2, 7, 7, 3)),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_with_the_exact_lut_each_layer_matches_its_keras_layer_forward_and_backward(case, exact):
    make_am, make_keras, shape = LAYER_CASES[case]
    rng = np.random.default_rng(1)
    layer, reference = make_am(lut=exact), make_keras()
    layer.build(shape)
    reference.build(shape)
    same_weights(reference, layer, rng)
    x = at_m_bits(rng, shape)
    cotangent = at_m_bits(rng, reference.compute_output_shape(shape))
    y, grads = forward_and_gradients(layer, x, cotangent)
    y_ref, grads_ref = forward_and_gradients(reference, x, cotangent)
    # Every product is exact; only the float32 sums' order differs from TensorFlow's.
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-4)


def test_attention_with_an_exact_lut_matches_keras_attention_to_its_operand_width():
    # Projections and softmax produce values of more than M bits, which the next product cuts to M
    # bits: the attention matches Keras' to the truncation's 2^-M, so this test takes M = 11.
    exact11 = gemm.resolve("exact", 11)
    rng = np.random.default_rng(2)
    query, value = rng.standard_normal((2, 5, 8), np.float32), rng.standard_normal((2, 6, 8), np.float32)
    layer = ak.AMMultiHeadAttention(num_heads=2, key_dim=4, lut=exact11)
    reference = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    layer(query, value)
    reference(query, value)
    reference.set_weights(layer.get_weights())
    assert [w.name for w in layer.weights] == [w.name for w in reference.weights]

    def run(mha):
        q = tf.constant(query)
        with tf.GradientTape() as tape:
            tape.watch(q)
            y = mha(q, value)
            loss = tf.reduce_sum(y * y)
        return [y.numpy()] + [g.numpy() for g in tape.gradient(loss, [q] + mha.trainable_weights)]

    for got, want in zip(run(layer), run(reference)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-2 * max(1.0, np.abs(want).max()))


def test_with_mbm_a_dense_layer_computes_amsim_gemm_plus_bias(mbm):
    rng = np.random.default_rng(3)
    layer = ak.AMDense(7, lut=mbm, bias_initializer="random_normal")
    x = rng.standard_normal((9, 13), np.float32)
    y = layer(x).numpy()
    kernel, bias = (w.numpy() for w in layer.weights)
    assert np.array_equal(y, gemm.matmul(x, kernel, mbm) + bias)


def test_with_mbm_a_conv_layer_computes_amsim_gemm_conv2d_plus_bias(mbm):
    rng = np.random.default_rng(3)
    layer = ak.AMConv2D(5, 3, strides=2, padding="same", lut=mbm, bias_initializer="random_normal")
    x = rng.standard_normal((2, 9, 9, 4), np.float32)
    y = layer(x).numpy()
    kernel, bias = (w.numpy() for w in layer.weights)
    assert np.array_equal(y, gemm.conv2d(x, kernel, mbm, strides=2, padding="SAME") + bias)


def test_exact_gradients_are_tensorflows_own_around_an_approximate_forward_pass(mbm):
    rng = np.random.default_rng(10)
    layer = ak.AMDense(6, lut=mbm, gradient="exact", use_bias=False)
    x = tf.constant(rng.standard_normal((4, 5), np.float32))
    dy = tf.constant(rng.standard_normal((4, 6), np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * dy)
    dx, dw = tape.gradient(loss, [x, layer.kernel])
    np.testing.assert_allclose(dx, tf.matmul(dy, layer.kernel, transpose_b=True), rtol=1e-6)
    np.testing.assert_allclose(dw, tf.matmul(x, dy, transpose_a=True), rtol=1e-6)


def test_a_model_in_eager_mode_and_in_a_graph_agree_bit_for_bit():
    model = small_cnn(ak.AMConv2D, ak.AMDense, lut="mbm", bits=M)
    x = np.random.default_rng(4).standard_normal((5, 8, 8, 1), np.float32)
    assert np.array_equal(model(x).numpy(), tf.function(model)(x).numpy())


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def small_cnn(conv=keras.layers.Conv2D, dense=keras.layers.Dense, **am):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        conv(16, 3, padding="same", activation="relu", **am),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        dense(32, activation="relu", **am),
        dense(10, **am),
    ])


def test_a_small_cnn_trains_on_digits_with_mbm_as_well_as_in_float32_from_the_same_weights():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(5).permutation(len(x))
    x, y = x[order], y[order]
    split = 1200
    keras.utils.set_random_seed(5)
    precise_model = small_cnn()
    approx_model = ak.approximate(precise_model, "mbm", bits=M)
    accuracy = {}
    for name, model in (("float32", precise_model), ("mbm", approx_model)):
        model.compile(optimizer=keras.optimizers.Adam(0.003), loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=["accuracy"])
        model.fit(x[:split], y[:split], batch_size=64, epochs=8, shuffle=False, verbose=0)
        accuracy[name] = model.evaluate(x[split:], y[split:], verbose=0)[1]
    assert accuracy["float32"] > 0.9
    assert abs(accuracy["mbm"] - accuracy["float32"]) <= 0.02, accuracy


def test_fit_runs_with_keras_default_jit_compile():
    model = small_cnn(ak.AMConv2D, ak.AMDense, lut="mbm", bits=M)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.zeros((8, 8, 8, 1), np.float32), np.zeros(8, np.int32)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert model.jit_compile is False
    assert all(not layer.supports_jit for layer in model.layers if isinstance(layer, (ak.AMDense, ak.AMConv2D)))


def test_jit_compile_true_is_refused_clearly():
    model = small_cnn(ak.AMConv2D, ak.AMDense, lut="mbm", bits=M)
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)  # Keras falls back to no XLA
    assert model.jit_compile is False
    layer = ak.AMDense(3, lut="mbm", bits=M, name="fc")
    with pytest.raises(ak.LayerXlaError, match="AMDense 'fc'.*XLA"):
        tf.function(layer, jit_compile=True)(tf.ones((2, 4)))


# ----------------------------------------------------------------------------------------------
# Converting and saving models
# ----------------------------------------------------------------------------------------------


def attention_model():
    tokens = keras.Input((6, 8))
    x = keras.layers.Dense(8, name="embed")(tokens)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(x, x)
    x = keras.layers.Flatten()(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="head")(x))


def test_approximate_copies_a_model_with_bitwise_identical_weights_and_precise_copies_it_back():
    model = attention_model()
    approx = ak.approximate(model, "mbm", bits=M)
    assert [type(layer).__name__ for layer in approx.layers[1:]] == [
        "AMDense", "AMMultiHeadAttention", "Flatten", "AMDense"]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), approx.get_weights()))
    back = ak.precise(approx)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    x = np.random.default_rng(6).standard_normal((2, 6, 8), np.float32)
    assert np.array_equal(back(x).numpy(), model(x).numpy())
    only_head = ak.approximate(model, "mbm", bits=M, layers=["head"])
    assert [type(layer).__name__ for layer in only_head.layers[1:]] == [
        "Dense", "MultiHeadAttention", "Flatten", "AMDense"]
    only_dense = ak.approximate(model, "mbm", bits=M, layers=[keras.layers.Dense])
    assert type(only_dense.get_layer("mha")) is keras.layers.MultiHeadAttention


def test_a_keras_file_carries_the_lut_and_predicts_bit_for_bit_without_the_lut_file(tmp_path, mbm):
    lut_file = lutlib.save(lutlib.LUT(mbm.table, M, model="mbm"), tmp_path / "mbm_m7.npz")
    model = ak.approximate(attention_model(), lut_file)
    x = np.random.default_rng(7).standard_normal((3, 6, 8), np.float32)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    lut_file.rename(tmp_path / "elsewhere.npz")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert np.array_equal(loaded.predict(x, verbose=0), expected)
    assert np.array_equal(loaded.get_layer("head").multiplier.table, mbm.table)


def test_get_config_round_trips_every_layer(mbm):
    layers = [ak.AMDense(4, activation="relu", lut=mbm, rounding="rne", gradient="exact"),
              ak.AMConv2D(3, 2, strides=2, lut="at_mbm", bits=M, mode="approxtrain"),
              ak.AMDepthwiseConv2D(3, lut=mbm),
              ak.AMMultiHeadAttention(num_heads=2, key_dim=3, dropout=0.1, lut=mbm)]
    for layer in layers:
        config = layer.get_config()
        again = type(layer).from_config(config)
        assert again.get_config() == config
        assert np.array_equal(again.multiplier.table, layer.multiplier.table)


def test_a_corrupted_embedded_lut_is_refused(mbm):
    config = ak.AMDense(4, lut=mbm).get_config()
    table = config["lut"]["table"]
    config["lut"] = {**config["lut"], "sha256": "0" * 64}
    # Keras' from_config reports a constructor's error as a TypeError quoting its message
    with pytest.raises((LUTError, TypeError), match="AMDense .*checksum"):
        ak.AMDense.from_config(config)
    config["lut"] = {**config["lut"], "table": table[:-8]}
    with pytest.raises((LUTError, TypeError), match="AMDense .*corrupt"):
        ak.AMDense.from_config(config)


# ----------------------------------------------------------------------------------------------
# Bad input: one clear error naming the layer
# ----------------------------------------------------------------------------------------------


def test_a_lut_for_another_width_is_refused_naming_the_layer(tmp_path, mbm):
    lut_file = lutlib.save(lutlib.LUT(mbm.table, M, model="mbm"), tmp_path / "mbm_m7.npz")
    with pytest.raises(LUTError, match="AMDense 'fc1'.*M=7, not M=8"):
        ak.AMDense(4, lut=lut_file, bits=8, name="fc1")


def test_a_missing_or_corrupt_lut_file_is_refused_naming_the_layer(tmp_path):
    with pytest.raises(LUTError, match="AMConv2D 'c1'.*no such LUT file"):
        ak.AMConv2D(4, 3, lut=tmp_path / "missing.npz", name="c1")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LUTError, match="AMConv2D 'c2'.*corrupt"):
        ak.AMConv2D(4, 3, lut=tmp_path / "bad.npz", name="c2")
    (tmp_path / "MBM_7.bin").write_bytes(bytes(100))
    with pytest.raises(LUTError, match="denseam 'd'.*truncated"):
        denseam(4, mant_mul_lut=tmp_path / "MBM_7.bin", name="d")


def test_dtypes_that_cannot_be_cast_to_float32_are_refused_naming_the_layer():
    with pytest.raises(ak.LayerDTypeError, match="AMDense 'fc'.*int32"):
        ak.AMDense(4, lut="mbm", bits=M, dtype="int32", name="fc")
    layer = ak.AMDense(4, lut="mbm", bits=M, name="fc")
    with pytest.raises(ak.LayerDTypeError, match="AMDense 'fc'.*complex64"):
        layer(tf.ones((2, 3), tf.complex64))
    # castable dtypes are computed in float32 and returned in the layer's compute dtype
    half = ak.AMDense(4, lut="mbm", bits=M, dtype="mixed_float16")
    assert half(np.ones((2, 3), np.float16)).dtype == tf.float16
    assert layer(np.ones((2, 3), np.int32)).dtype == tf.float32


def test_unsupported_arguments_are_refused_naming_the_layer():
    with pytest.raises(ak.LayerConfigError, match="AMMultiHeadAttention 'att'.*flash_attention"):
        ak.AMMultiHeadAttention(num_heads=2, key_dim=4, flash_attention=True, lut="mbm", bits=M, name="att")
    with pytest.raises(ak.LayerConfigError, match="AMDense 'fc'.*rounding"):
        ak.AMDense(4, lut="mbm", bits=M, rounding="nearest", name="fc")
    with pytest.raises(ak.LayerConfigError, match="AMDense 'fc'.*lut= is required"):
        ak.AMDense(4, name="fc")
    with pytest.raises(ValueError, match="unknown_argument"):
        ak.AMDense(4, lut="mbm", bits=M, unknown_argument=1)
    with pytest.raises(ak.LayerConfigError, match="no layer named 'nope'"):
        ak.approximate(small_cnn(), "mbm", bits=M, layers=["nope"])
    with pytest.raises(AmsimError, match="bits=M"):
        ak.AMDense(4, lut="mbm")


# ----------------------------------------------------------------------------------------------
# ApproxTrain's scripts
# ----------------------------------------------------------------------------------------------

# The reference study's AlexNet script (Knauth 2023, appendix 7.2, AM version): its seed, image
# processing, LUT file, model and compile lines verbatim, its imports changed (ApproxTrain's two
# become amsim's; os, time, sys and tensorflow_datasets, used only for logging and loading, dropped).
# Its CIFAR-10 download, TensorBoard callback and 50-epoch fit give way to a tiny synthetic set.
ALEXNET_SCRIPT = '''
import tensorflow as tf
import keras
from amsim.keras.approxtrain import AMConv2D
from amsim.keras.approxtrain import denseam

tf.random.set_seed(
    20230414
)

def process_images(image, label):
    # Normalize images to have a mean of 0 and standard deviation of 1
    image = tf.image.per_image_standardization(image)
    # Resize images from 32x32 to 227x227
    image = tf.image.resize(image, (227,227))
    return image, label

lut_file = './lut/MBM_1.bin'

model = keras.models.Sequential([
    AMConv2D(filters=96, kernel_size=(11,11), strides=(4,4), activation='relu', input_shape=(227,227,3), mant_mul_lut=lut_file),
    keras.layers.BatchNormalization(),
    keras.layers.MaxPool2D(pool_size=(3,3), strides=(2,2)),
    AMConv2D(filters=256, kernel_size=(5,5), strides=(1,1), activation='relu', padding="same", mant_mul_lut=lut_file),
    keras.layers.BatchNormalization(),
    keras.layers.MaxPool2D(pool_size=(3,3), strides=(2,2)),
    AMConv2D(filters=384, kernel_size=(3,3), strides=(1,1), activation='relu', padding="same", mant_mul_lut=lut_file),
    keras.layers.BatchNormalization(),
    AMConv2D(filters=384, kernel_size=(3,3), strides=(1,1), activation='relu', padding="same", mant_mul_lut=lut_file),
    keras.layers.BatchNormalization(),
    AMConv2D(filters=256, kernel_size=(3,3), strides=(1,1), activation='relu', padding="same", mant_mul_lut=lut_file),
    keras.layers.BatchNormalization(),
    keras.layers.MaxPool2D(pool_size=(3,3), strides=(2,2)),
    keras.layers.Flatten(),
    denseam(4096, activation='relu', mant_mul_lut=lut_file),
    keras.layers.Dropout(0.5),
    denseam(4096, activation='relu', mant_mul_lut=lut_file),
    keras.layers.Dropout(0.5),
    denseam(10, activation='softmax', mant_mul_lut=lut_file)
])

model.compile(
    optimizer=tf.keras.optimizers.SGD(0.001),
    loss='sparse_categorical_crossentropy',
    metrics=['accuracy'],
)
'''


@pytest.mark.slow
def test_the_reference_studys_alexnet_script_trains_with_its_imports_changed(tmp_path, monkeypatch):
    (tmp_path / "lut").mkdir()
    lutlib.save_approxtrain(lutlib.LUT(gemm.resolve("mbm", 1).table, 1, model="mbm"), tmp_path / "lut/MBM_1.bin")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' advice to use an Input object instead of input_shape
        exec(textwrap.dedent(ALEXNET_SCRIPT), namespace)
    model, process_images = namespace["model"], namespace["process_images"]
    assert model.layers[0].mode == "approxtrain" and model.layers[0].bits == 1
    # A tiny synthetic CIFAR-10-shaped set (uint8 32x32x3 images), through the script's own pipeline.
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (4, 1), dtype=np.uint8)
    train_ds = tf.data.Dataset.from_tensor_slices((images, labels)).map(process_images).batch(2)
    history = model.fit(train_ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_approxtrain_layers_take_mant_mul_lut_and_round_trip(tmp_path):
    at_mbm = gemm.resolve("at_mbm", M)  # ApproxTrain's MBM: its LUT is on ApproxTrain's grid
    path = lutlib.save_approxtrain(lutlib.LUT(at_mbm.table, M, model="mbm"), tmp_path / "MBM_7.bin")
    conv = ATConv2D(filters=4, kernel_size=3, padding="same", activation="relu", mant_mul_lut=str(path))
    dense = denseam(10, activation="softmax", mant_mul_lut=str(path))
    assert conv.bits == dense.bits == M and conv.mode == dense.mode == "approxtrain"
    assert np.array_equal(dense.multiplier.table, at_mbm.table)
    x = np.random.default_rng(9).standard_normal((2, 5, 3, 6), np.float32)
    assert dense(x).shape == (2, 5, 3, 10)  # approximate at any rank
    for layer in (conv, dense):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
