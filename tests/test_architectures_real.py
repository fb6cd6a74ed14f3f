"""Whole networks convert to approximate arithmetic: keras.applications' ResNet50, MobileNetV2 and
EfficientNetB0, a Keras transformer encoder, and the mobilenetv2, lstm and transformer architectures
of ``amsim train``.

For each, ``approximate()`` converts every layer that multiplies (coverage 100 %) without a
warning, and the converted network predicts, takes a training step, and comes back from a
``.keras`` file predicting the same. The architectures then train for an epoch through the
command line.
"""

import functools
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

# Keras's own model.save trips NumPy 2's __array__ deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

import amsim.keras as ak  # noqa: E402
from amsim.experiments.architectures import build_model  # noqa: E402
from amsim.keras.coverage import coverage  # noqa: E402

from cli_run import run  # noqa: E402

CLASSES = 10
BATCH = 2
#: The input shape of each dataset amsim train reads: digits, MNIST and Fashion-MNIST, CIFAR-10.
DATASET_SHAPES = [(8, 8, 1), (28, 28, 1), (32, 32, 3)]
NEW_ARCHITECTURES = ["mobilenetv2", "lstm", "transformer"]


def transformer_encoder(tokens=6, features=12, d_model=16):
    """A post-norm encoder block with both kinds of feed-forward projection, Dense and EinsumDense."""
    from keras import layers

    inputs = keras.Input((tokens, features))
    x = layers.Dense(d_model)(inputs)
    x = layers.LayerNormalization()(layers.Add()([x, layers.MultiHeadAttention(2, d_model // 2)(x, x)]))
    hidden = layers.EinsumDense("btd,df->btf", output_shape=(tokens, 2 * d_model), bias_axes="f",
                                activation="relu")(x)
    x = layers.LayerNormalization()(layers.Add()([x, layers.Dense(d_model)(hidden)]))
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(CLASSES, activation="softmax")(x))


# Each application at the smallest input it accepts and in its smallest variant (every layer kind
# stays), so that a CPU runs them in seconds.
NETWORKS = {
    "ResNet50": lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=CLASSES),
    "MobileNetV2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35,
                                                          classes=CLASSES),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3),
                                                                classes=CLASSES),
    "transformer encoder": transformer_encoder,
    **{f"--arch {name}": (lambda name=name: build_model(name, DATASET_SHAPES[0], CLASSES))
       for name in NEW_ARCHITECTURES},
}
SLOW = {"ResNet50", "EfficientNetB0", "--arch mobilenetv2"}


@pytest.fixture(scope="module", params=[pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [])
                                        for name in NETWORKS])
def network(request):
    """(float32 network, its approximate copy, the warnings approximate() gave, a batch of inputs, labels)."""
    keras.utils.set_random_seed(0)
    model = NETWORKS[request.param]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = ak.approximate(model, "mbm", bits=7)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, *model.inputs[0].shape[1:]), dtype=np.float32)
    return model, converted, caught, x, rng.integers(0, CLASSES, BATCH)


def test_approximate_converts_every_multiplying_layer_without_a_warning(network):
    model, converted, caught, _, _ = network
    assert [str(w.message) for w in caught] == []
    before, after = coverage(model), coverage(converted)
    assert before.forward > 0 and before.fraction == 0.0
    assert after.fraction == 1.0 and after.exact_layers == ()
    assert after.forward == before.forward, "the same products, now on the multiplier"
    assert {row.multiplier for row in after.layers} == {"mbm:7"}


def test_the_approximate_network_predicts_class_probabilities(network):
    _, converted, _, x, _ = network
    y = np.asarray(converted(x))
    assert y.shape == (BATCH, CLASSES) and np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def one_training_step(model, x, labels):
    """Compile ``model``, train it on one batch: (the loss, the paths of the kernels that moved, all kernels).

    Eagerly: tracing a network of a hundred or more layers into a tf.function costs many times the
    step itself, and the products and gradients are the same ops either way (amsim train's runs
    below take the traced path).
    """
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", run_eagerly=True)
    kernels = [v for v in model.trainable_variables if "kernel" in v.path]
    before = [np.array(v) for v in kernels]
    loss = model.train_on_batch(x, labels)
    return loss, [v.path for v, b in zip(kernels, before) if not np.array_equal(np.array(v), b)], len(kernels)


def test_one_training_step_moves_the_kernels_that_float32s_step_moves(network):
    model, _, _, x, labels = network
    # Copies of their own (the fixture's networks stay as they were made), drawing the same dropout
    # masks: EfficientNet's stochastic depth drops whole blocks for some examples, and a block
    # dropped for the whole batch gets no gradient in either network.
    exact = keras.models.clone_model(model)
    exact.set_weights(model.get_weights())
    approximate = ak.approximate(model, "mbm", bits=7)
    streams = [[v for v in m.variables if "seed_generator_state" in v.path] for m in (exact, approximate)]
    for theirs, mine in zip(*streams, strict=True):
        mine.assign(theirs.value)
    exact_loss, exact_moved, kernels = one_training_step(exact, x, labels)
    loss, moved, _ = one_training_step(approximate, x, labels)
    assert np.isfinite(loss) and loss != exact_loss
    assert len(exact_moved) > 0.8 * kernels
    assert moved == exact_moved


def test_saved_as_keras_and_loaded_the_network_predicts_the_same(network, tmp_path):
    _, converted, _, x, _ = network
    converted.save(tmp_path / "network.keras")
    loaded = keras.models.load_model(tmp_path / "network.keras")
    assert coverage(loaded).fraction == 1.0
    assert np.array_equal(np.asarray(loaded(x)), np.asarray(converted(x)))


@functools.cache
def built(name, shape):
    return build_model(name, shape, CLASSES)


@pytest.mark.parametrize("name", NEW_ARCHITECTURES)
@pytest.mark.parametrize("shape", DATASET_SHAPES)
def test_each_new_architecture_builds_for_each_dataset_shape(name, shape):
    model = built(name, shape)
    assert tuple(model.inputs[0].shape) == (None, *shape)
    assert tuple(model.outputs[0].shape) == (None, CLASSES)


@pytest.mark.parametrize("shape, resized", [((8, 8, 1), [(32, 32)]), ((28, 28, 1), [(32, 32)]), ((32, 32, 3), [])])
def test_mobilenetv2_resizes_only_images_smaller_than_it_accepts(shape, resized):
    model = built("mobilenetv2", shape)
    assert [(layer.height, layer.width) for layer in model.layers if isinstance(layer, keras.layers.Resizing)] \
        == resized


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_ARCHITECTURES)
def test_amsim_train_trains_each_new_architecture_on_digits(name, tmp_path, capsys):
    out = tmp_path / name
    rc, _, err = run(["train", "--dataset", "digits", "--arch", name, "--multipliers", "mbm:7",
                      "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--no-plots", "--quiet",
                      "--out", str(out)], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    [row] = summary["rows"]
    assert row["multiplier"] == "mbm-M7" and row["complete"] == 1 and 0 <= row["final_val_accuracy"] <= 1
    trained = keras.models.load_model(out / "mbm-M7" / "seed0" / "model.keras")
    assert coverage(trained).fraction == 1.0
