"""AMSimpleRNN, AMLSTM, AMGRU and their cells: Keras' recurrent layers with every matrix product approximate."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import amsim.keras as ak  # noqa: E402
from amsim import gemm  # noqa: E402
from amsim.errors import LUTError  # noqa: E402
from amsim.keras.layers.recurrent import approximate_cell, precise_cell  # noqa: E402
from amsim.keras.ops import am_matmul  # noqa: E402

from keras_support import M, exact, mbm  # noqa: E402,F401 (fixtures)
B, T, F, U = 3, 5, 4, 6




# Each kind of layer: the AM layer, the Keras layer, the AM cell, and its arguments.
KINDS = {
    "simple": (ak.AMSimpleRNN, keras.layers.SimpleRNN, ak.AMSimpleRNNCell, {}),
    "lstm": (ak.AMLSTM, keras.layers.LSTM, ak.AMLSTMCell, {}),
    "gru": (ak.AMGRU, keras.layers.GRU, ak.AMGRUCell, {"reset_after": True}),
    "gru_reset_before": (ak.AMGRU, keras.layers.GRU, ak.AMGRUCell, {"reset_after": False}),
}


def built(layer, shape=(B, T, F)):
    layer.build(shape)
    return layer


def activations(kind, activation, recurrent_activation):
    return {"activation": activation} if kind == "simple" else {
        "activation": activation, "recurrent_activation": recurrent_activation}


# ----------------------------------------------------------------------------------------------
# The layers against every step written out
# ----------------------------------------------------------------------------------------------


def unrolled(kind, x, kernel, recurrent_kernel, bias, matmul, activation, recurrent_activation):
    """The outputs (B, T, U) of every step written out: each gate's pre-activation
    ``(x_t W + b) + h U`` with ``matmul`` for each matrix product, the rest float32.

    With numpy arrays and ``amsim.gemm.matmul`` this is the numpy oracle; with tensors and
    ``am_matmul`` the same computation for TensorFlow's gradients."""
    units = recurrent_kernel.shape[0]
    h = c = np.zeros((x.shape[0], units), np.float32)
    gates = lambda z, n: [z[:, k * units:(k + 1) * units] for k in range(n)]  # noqa: E731
    outputs = []
    for t in range(x.shape[1]):
        if kind == "simple":
            h = activation(matmul(x[:, t], kernel) + bias + matmul(h, recurrent_kernel))
        elif kind == "lstm":
            i, f, g, o = gates(matmul(x[:, t], kernel) + bias + matmul(h, recurrent_kernel), 4)
            c = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
            h = recurrent_activation(o) * activation(c)
        elif kind == "gru":  # reset after: separate input and recurrent biases
            x_z, x_r, x_h = gates(matmul(x[:, t], kernel) + bias[0], 3)
            h_z, h_r, h_h = gates(matmul(h, recurrent_kernel) + bias[1], 3)
            z, r = recurrent_activation(x_z + h_z), recurrent_activation(x_r + h_r)
            h = z * h + (1 - z) * activation(x_h + r * h_h)
        else:  # GRU, reset before: the candidate multiplies r * h by its recurrent kernel
            x_z, x_r, x_h = gates(matmul(x[:, t], kernel) + bias, 3)
            h_z, h_r = gates(matmul(h, recurrent_kernel[:, :2 * units]), 2)
            z, r = recurrent_activation(x_z + h_z), recurrent_activation(x_r + h_r)
            h = z * h + (1 - z) * activation(x_h + matmul(r * h, recurrent_kernel[:, 2 * units:]))
        outputs.append(h)
    return np.stack(outputs, 1) if isinstance(x, np.ndarray) else tf.stack(outputs, 1)


def numpy_oracle(kind, x, weights, mult, activation="tanh", recurrent_activation="sigmoid"):
    """The numpy oracle: every matrix product amsim.gemm.matmul's, step by step; Keras' activations."""
    act, ract = (lambda v, f=keras.activations.get(name): np.asarray(f(v)) for name in
                 (activation, recurrent_activation))
    return unrolled(kind, x, *weights, lambda a, b: gemm.matmul(a, b, mult), act, ract)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_forward_is_the_numpy_oracles_bit_for_bit_in_the_layer_and_in_keras_rnn(kind, mbm):
    am_layer, _, am_cell, args = KINDS[kind]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, F), np.float32)
    layer = built(am_layer(U, return_sequences=True, bias_initializer="random_normal", lut=mbm, **args))
    # The layer projects every step's input in one product; keras.layers.RNN calls the cell step by step.
    in_rnn = built(keras.layers.RNN(am_cell(U, lut=mbm, **args), return_sequences=True))
    in_rnn.set_weights(layer.get_weights())
    want = numpy_oracle(kind, x, [w.numpy() for w in layer.cell.weights], mbm)
    for got in (layer(x), tf.function(layer)(x), in_rnn(x)):
        np.testing.assert_array_equal(got.numpy().view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("gradient", ["approximate", "exact"])
def test_gradients_are_those_of_the_steps_written_out_with_am_matmul(kind, gradient, mbm):
    am_layer, _, _, args = KINDS[kind]
    rng = np.random.default_rng(2)
    x = tf.constant(rng.standard_normal((B, T, F), np.float32))
    cotangent = rng.standard_normal((B, T, U), np.float32)
    layer = built(am_layer(U, return_sequences=True, bias_initializer="random_normal", lut=mbm, gradient=gradient,
                           **args))
    weights = [tf.Variable(w) for w in layer.get_weights()]
    matmul = lambda a, b: am_matmul(a, b, mbm, gradient=gradient)  # noqa: E731
    results = []
    for forward, variables in ((layer, layer.trainable_weights),
                               (lambda x: unrolled(kind, x, *weights, matmul, tf.tanh, tf.sigmoid), weights)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(forward(x) * cotangent)
        results.append([g.numpy() for g in tape.gradient(loss, [x, *variables])])
    (dx, *dweights), (dx_want, *dweights_want) = results
    # The input's gradient takes the same products in the same order, one step or all steps at a time;
    # a kernel's gradient sums over the steps in another order.
    np.testing.assert_array_equal(dx, dx_want)
    for got, want in zip(dweights, dweights_want):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# ----------------------------------------------------------------------------------------------
# The layers against Keras'
# ----------------------------------------------------------------------------------------------


def small_integers(rng, shape, values=(-1, 0, 1)):
    return rng.choice(values, size=shape).astype(np.float32)


def same_integer_weights(reference, layer, rng, values=(-1, 0, 0, 1)):
    """Both built layers given the same weights, mostly 0 and otherwise -1 or 1."""
    weights = [small_integers(rng, w.shape, values) for w in reference.weights]
    reference.set_weights(weights)
    layer.set_weights(weights)


def run(layer, x, cotangents, **call):
    """The layer's outputs (a list) and the gradients of sum(outputs * cotangents) for x and its weights."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, **call)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        loss = tf.add_n([tf.reduce_sum(y * c) for y, c in zip(outputs, cotangents)])
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return [y.numpy() for y in outputs] + [g.numpy() for g in grads]


def assert_exactly_keras(got, want):
    """Equal bit for bit, every output and gradient an integer, none all 0 (the comparison is real)."""
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
        assert np.array_equal(w, np.round(w)) and np.any(w != 0)


# Gate activations that keep small integers integers: hard_tanh clips to -1, 0, 1.
HARD = {"activation": "hard_tanh", "recurrent_activation": "hard_tanh"}
OPTIONS = {
    "sequences_states_mask": {"return_sequences": True, "return_state": True},
    "backwards_unrolled": {"go_backwards": True, "unroll": True},
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("options", sorted(OPTIONS))
@pytest.mark.parametrize("gradient", ["approximate", "exact"])
def test_with_the_exact_lut_each_layer_is_its_keras_layer_forward_and_backward(kind, options, gradient, exact):
    # Small integers in, every weight -1, 0 or 1, and gates clipped to -1..1: every operand of every
    # product, forward and backward, stays an integer of a few bits, which the exact LUT multiplies
    # exactly at M = 7, and every sum an integer, which float32 adds exactly in any order. The AM
    # layer must then be Keras' layer bit for bit.
    am_layer, keras_layer, _, args = KINDS[kind]
    kwargs = {**activations(kind, **HARD), **args, **OPTIONS[options]}
    rng = np.random.default_rng(3)
    layer, reference = built(am_layer(U, lut=exact, gradient=gradient, **kwargs)), built(keras_layer(U, **kwargs))
    same_integer_weights(reference, layer, rng)
    x = small_integers(rng, (B, T, F))
    call = {}
    if options == "sequences_states_mask":
        call["mask"] = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0], [1, 1, 1, 0, 0]], bool)
    shapes = reference.compute_output_shape((B, T, F))
    shapes = [shapes] if isinstance(shapes[0], int) else shapes
    cotangents = [small_integers(rng, s) for s in shapes]
    assert_exactly_keras(run(layer, x, cotangents, **call), run(reference, x, cotangents, **call))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("implementation", [1, 2])
def test_dropout_masks_are_keras_masks(kind, implementation, exact):
    # Same seed, same masks: Keras draws an input mask and a state mask per sequence (one per gate
    # with implementation=1); a rate of 1/2 scales kept values by 2, which keeps integers integers.
    am_layer, keras_layer, _, args = KINDS[kind]
    kwargs = {**activations(kind, **HARD), **args, "return_sequences": True, "dropout": 0.5, "seed": 4}
    if kind != "simple":
        kwargs["implementation"] = implementation
    if implementation == 1:
        kwargs["recurrent_dropout"] = 0.5
    rng = np.random.default_rng(5)
    layer, reference = built(am_layer(U, lut=exact, **kwargs)), built(keras_layer(U, **kwargs))
    same_integer_weights(reference, layer, rng, (-1, 0, 0, 0, 0, 1))  # sparser: the masks double values
    x, cotangent = small_integers(rng, (B, T, F)), small_integers(rng, (B, T, U))
    got = run(layer, x, [cotangent], training=True)
    assert_exactly_keras(got, run(reference, x, [cotangent], training=True))
    assert not np.array_equal(got[0], run(layer, x, [cotangent], training=False)[0])


def test_a_stateful_layer_carries_its_state_across_calls_as_keras_does(exact):
    kwargs = {**HARD, "stateful": True}
    rng = np.random.default_rng(6)
    layer, reference = built(ak.AMLSTM(U, lut=exact, **kwargs)), built(keras.layers.LSTM(U, **kwargs))
    same_integer_weights(reference, layer, rng)
    x1, x2 = small_integers(rng, (B, T, F)), small_integers(rng, (B, T, F))
    first, second = layer(x1).numpy(), layer(x2).numpy()
    np.testing.assert_array_equal(first, reference(x1).numpy())
    np.testing.assert_array_equal(second, reference(x2).numpy())
    layer.reset_state()
    reference.reset_state()
    after_reset = layer(x2).numpy()
    np.testing.assert_array_equal(after_reset, reference(x2).numpy())
    assert not np.array_equal(after_reset, second)


def test_weights_are_named_and_ordered_as_keras_so_they_move_between_the_two(mbm):
    for kind, (am_layer, keras_layer, _, args) in KINDS.items():
        layer, reference = built(am_layer(U, lut=mbm, **args)), built(keras_layer(U, **args))
        assert [w.path.split("/", 1)[1] for w in layer.weights] == \
            [w.path.split("/", 1)[1] for w in reference.weights], kind
        assert [w.shape for w in layer.weights] == [w.shape for w in reference.weights], kind


# ----------------------------------------------------------------------------------------------
# Models: training, saving, converting
# ----------------------------------------------------------------------------------------------


def recurrent_model():
    tokens = keras.Input((T, F))
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(tokens)
    x = keras.layers.GRU(8, return_sequences=True, reset_after=False, name="gru")(x)
    x = keras.layers.RNN(keras.layers.LSTMCell(8, implementation=1), return_sequences=True, name="rnn")(x)
    x = keras.layers.RNN([keras.layers.GRUCell(8), keras.layers.SimpleRNNCell(8)], return_sequences=True,
                         name="stack")(x)
    x = keras.layers.SimpleRNN(8, name="simple")(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="head")(x))


def cell_types(model):
    cells = [model.get_layer("rnn").cell, *model.get_layer("stack").cell.cells]
    return [type(layer).__name__ for layer in model.layers[1:]] + [type(c).__name__ for c in cells]


def test_approximate_and_precise_swap_the_recurrent_layers_and_cells_keeping_the_weights_bitwise():
    model = recurrent_model()
    approx = ak.approximate(model, "mbm", bits=M)
    assert cell_types(approx) == ["AMLSTM", "AMGRU", "RNN", "RNN", "AMSimpleRNN", "AMDense", "AMLSTMCell",
                                  "AMGRUCell", "AMSimpleRNNCell"]
    assert approx.get_layer("gru").cell.reset_after is False
    assert approx.get_layer("rnn").cell.implementation == 1
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), approx.get_weights()))
    back = ak.precise(approx)
    assert cell_types(back) == cell_types(model)
    x = np.random.default_rng(7).standard_normal((2, T, F), np.float32)
    assert np.array_equal(back(x).numpy(), model(x).numpy())


def test_approximate_cell_keeps_what_a_cells_config_leaves_out_and_precise_cell_swaps_it_back(mbm):
    cell = keras.layers.LSTMCell(U, implementation=1, unit_forget_bias=False, name="c")
    am = approximate_cell(cell, mbm, gradient="exact")
    assert type(am) is ak.AMLSTMCell and am.implementation == 1 and am.name == "c"
    assert am.multiplier is mbm and am.gradient == "exact" and am.unit_forget_bias is False
    again = approximate_cell(am, "at_mbm", bits=M)  # an AM cell takes the new multiplier
    assert again.multiplier.name == "at_mbm" and again.gradient == "approximate"
    back = precise_cell(am)
    assert type(back) is keras.layers.LSTMCell and back.implementation == 1
    with pytest.raises(ak.LayerConfigError, match="Dense is not a SimpleRNNCell"):
        approximate_cell(keras.layers.Dense(3), mbm)


def test_a_keras_file_holding_every_recurrent_layer_and_an_rnn_of_am_cells_predicts_bit_for_bit(tmp_path, mbm):
    tokens = keras.Input((T, F))
    x = ak.AMLSTM(8, return_sequences=True, implementation=1, lut=mbm)(tokens)
    x = ak.AMGRU(8, return_sequences=True, lut=mbm, gradient="exact")(x)
    x = keras.layers.RNN([ak.AMSimpleRNNCell(8, lut=mbm), ak.AMGRUCell(8, reset_after=False, lut=mbm)],
                         return_sequences=True)(x)
    x = ak.AMSimpleRNN(4, go_backwards=True, lut=mbm)(x)
    model = keras.Model(tokens, x)
    data = np.random.default_rng(9).standard_normal((2, T, F), np.float32)
    expected = model.predict(data, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert np.array_equal(loaded.predict(data, verbose=0), expected)
    assert loaded.layers[1].cell.implementation == 1 and loaded.layers[2].gradient == "exact"
    assert np.array_equal(loaded.layers[1].cell.multiplier.table, mbm.table)


def test_get_config_round_trips_every_layer_and_cell(mbm):
    layers = [ak.AMLSTM(4, dropout=0.1, unroll=True, lut=mbm, rounding="rne"), ak.AMGRU(4, reset_after=False,
              lut=mbm), ak.AMSimpleRNN(4, return_state=True, lut="at_mbm", bits=M, mode="approxtrain"),
              ak.AMLSTMCell(4, lut=mbm, implementation=1), ak.AMGRUCell(4, lut=mbm), ak.AMSimpleRNNCell(4, lut=mbm)]
    for layer in layers:
        config = layer.get_config()
        again = type(layer).from_config(config)
        assert again.get_config() == config
        assert np.array_equal(again.multiplier.table, layer.multiplier.table)


def test_an_am_lstm_learns_a_task_that_needs_its_state_as_well_as_float32_from_the_same_weights():
    # Which of two marked steps holds the larger value: the answer needs the first one remembered.
    rng = np.random.default_rng(10)
    n = 256
    x = rng.uniform(0, 1, (n, 8, 2)).astype(np.float32)
    x[..., 1] = 0
    first, second = rng.integers(0, 4, n), rng.integers(4, 8, n)
    x[np.arange(n), first, 1] = x[np.arange(n), second, 1] = 1
    y = (x[np.arange(n), first, 0] > x[np.arange(n), second, 0]).astype(np.int32)
    keras.utils.set_random_seed(10)
    precise_model = keras.Sequential([keras.Input((8, 2)), keras.layers.LSTM(16), keras.layers.Dense(2)])
    accuracy = {}
    for name, model in (("float32", precise_model), ("mbm", ak.approximate(precise_model, "mbm", bits=M))):
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=["accuracy"])
        accuracy[name] = model.fit(x, y, batch_size=32, epochs=12, verbose=0).history["accuracy"][-1]
    assert accuracy["float32"] > 0.85 and abs(accuracy["mbm"] - accuracy["float32"]) <= 0.05, accuracy


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_cudnn_is_refused_and_bad_arguments_name_the_layer():
    with pytest.raises(ak.LayerConfigError, match="AMLSTM 'enc'.*use_cudnn=True.*cuDNN"):
        ak.AMLSTM(4, use_cudnn=True, lut="mbm", bits=M, name="enc")
    assert ak.AMGRU(4, use_cudnn="auto", lut="mbm", bits=M).use_cudnn is False
    with pytest.raises(LUTError, match="AMGRU 'dec': .*no such LUT file"):
        ak.AMGRU(4, lut="missing.npz", name="dec")
    with pytest.raises(ak.LayerConfigError, match="AMSimpleRNN: rounding"):
        ak.AMSimpleRNN(4, lut="mbm", bits=M, rounding="nearest")
    with pytest.raises(ak.LayerConfigError, match="AMLSTMCell 'c': lut= is required"):
        ak.AMLSTMCell(4, name="c")
    with pytest.raises(ValueError, match="implementation"):  # Keras' own error: SimpleRNN has none
        ak.AMSimpleRNN(4, implementation=1, lut="mbm", bits=M)
    with pytest.raises(ak.LayerDTypeError, match="AMLSTM 'x'.*int32"):
        ak.AMLSTM(4, lut="mbm", bits=M, dtype="int32", name="x")


def test_mixed_precision_computes_in_float32_and_returns_the_compute_dtype():
    layer = ak.AMGRU(4, return_sequences=True, lut="mbm", bits=M, dtype="mixed_float16")
    y = layer(np.random.default_rng(11).standard_normal((B, T, F)).astype(np.float16))
    assert y.dtype == tf.float16 and np.all(np.isfinite(y.numpy()))
