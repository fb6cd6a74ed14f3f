"""amsim.keras.coverage: every matrix product of a model counted per example, approximate or exact, by layer."""

from __future__ import annotations

import json

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import amsim.keras as ak  # noqa: E402
from amsim import gemm  # noqa: E402
from amsim.experiments.energy import count_multiplications  # noqa: E402
from amsim.keras.coverage import CoverageError, coverage  # noqa: E402
from amsim.keras.layers.base import APPROXIMATE  # noqa: E402
from amsim.keras.products import Call, In, Tally, count_call, trace, trace_cell  # noqa: E402

L = keras.layers


def model_of(layer, *shapes, as_list=False):
    """A model calling ``layer`` once on inputs of ``shapes`` (a list of them with ``as_list``)."""
    inputs = [keras.Input(s) for s in shapes]
    out = layer(inputs) if as_list else layer(*inputs)
    return keras.Model(inputs, out)


# Each layer's forward products per example, counted by hand; every case is called on the model's
# input, so nothing upstream trains: no input gradient, and a weight gradient for each weight product.
HAND_COUNTED = {
    "dense_on_a_sequence": (lambda: L.Dense(5), [(3, 4)], 3 * 4 * 5),
    "einsum_dense": (lambda: L.EinsumDense("abc,cd->abd", output_shape=(3, 6)), [(3, 4)], 3 * 4 * 6),
    "conv1d_groups": (lambda: L.Conv1D(6, 3, groups=2), [(10, 4)], 8 * 6 * (3 * 4 // 2)),
    "conv2d_strided_same": (lambda: L.Conv2D(4, 3, strides=2, padding="same"), [(7, 7, 2)], 4 * 4 * 4 * (9 * 2)),
    "conv2d_channels_first": (lambda: L.Conv2D(4, 3, data_format="channels_first"), [(2, 6, 6)],
                              4 * 4 * 4 * (9 * 2)),
    "conv3d": (lambda: L.Conv3D(2, 2), [(3, 3, 3, 1)], 2 * 2 * 2 * 2 * (8 * 1)),
    # a transposed convolution: every input value times every tap of every filter
    "conv1d_transpose": (lambda: L.Conv1DTranspose(3, 3, strides=2), [(5, 2)], 5 * 2 * 3 * 3),
    "conv2d_transpose": (lambda: L.Conv2DTranspose(3, 2, strides=2), [(4, 4, 5)], 4 * 4 * 5 * 4 * 3),
    "conv3d_transpose": (lambda: L.Conv3DTranspose(2, 2), [(2, 2, 2, 3)], 8 * 3 * 8 * 2),
    # depthwise (8 positions x 3 channels x 2 x 3 taps), then pointwise (8 positions x 6 x 4 filters)
    "separable_conv1d": (lambda: L.SeparableConv1D(4, 3, depth_multiplier=2), [(10, 3)], 8 * 3 * 2 * 3 + 8 * 6 * 4),
    "separable_conv2d": (lambda: L.SeparableConv2D(5, 3), [(6, 6, 2)], 16 * 2 * 9 + 16 * 2 * 5),
    "depthwise_conv1d": (lambda: L.DepthwiseConv1D(3, depth_multiplier=2), [(10, 3)], 8 * 3 * 2 * 3),
    "depthwise_conv2d": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), [(6, 6, 2)],
                         36 * 2 * 2 * 9),
    # recurrent: timesteps x (features x gates*units + units x gates*units)
    "simple_rnn": (lambda: L.SimpleRNN(4), [(5, 3)], 5 * (3 * 4 + 4 * 4)),
    "lstm": (lambda: L.LSTM(4), [(5, 3)], 5 * (3 * 16 + 4 * 16)),
    "gru_reset_before": (lambda: L.GRU(4, reset_after=False), [(5, 3)], 5 * (3 * 12 + 4 * 12)),
    "rnn_of_a_cell": (lambda: L.RNN(L.LSTMCell(4)), [(5, 3)], 5 * (3 * 16 + 4 * 16)),
    "stacked_cells": (lambda: L.RNN([L.GRUCell(4), L.SimpleRNNCell(2)]), [(5, 3)],
                      5 * (3 * 12 + 4 * 12) + 5 * (4 * 2 + 2 * 2)),
    "bidirectional": (lambda: L.Bidirectional(L.LSTM(4)), [(5, 3)], 2 * 5 * (3 * 16 + 4 * 16)),
    "time_distributed": (lambda: L.TimeDistributed(L.Conv2D(2, 3)), [(4, 5, 5, 1)], 4 * (3 * 3 * 2 * 9)),
    # per step: the input convolution (6 positions x 4 gates x 2 filters x 3 taps x 3 channels) and
    # the recurrent one on the state ('same', 2 channels)
    "conv_lstm1d": (lambda: L.ConvLSTM1D(2, 3, padding="same"), [(4, 6, 3)],
                    4 * (6 * 8 * 3 * 3 + 6 * 8 * 3 * 2)),
    # projections Q (4 x 6 x 2 heads x 3), K and V (5 x 6 x 6), scores and weighted values (2 x 4 x 5 x 3),
    # output (4 x 6 x 6)
    "multi_head_attention": (lambda: L.MultiHeadAttention(2, 3), [(4, 6), (5, 6)],
                             144 + 180 + 180 + 120 + 120 + 144),
    "multi_head_attention_gate": (lambda: L.MultiHeadAttention(2, 3, use_gate=True), [(4, 6), (5, 6)],
                                  144 + 180 + 180 + 120 + 120 + 144 + 144),
    # 4 query heads, 2 key/value heads of 2: Q 3x8x8, K and V 5x8x4, both attention products over 4 heads
    "group_query_attention": (lambda: L.GroupQueryAttention(2, 4, 2), [(3, 8), (5, 8)],
                              192 + 160 + 160 + 4 * 3 * 5 * 2 * 2 + 192),
    "dot": (lambda: L.Dot(axes=2), [(3, 4), (5, 4)], 3 * 5 * 4),
}
LIST_INPUTS = {"dot"}


@pytest.mark.parametrize("case", sorted(HAND_COUNTED))
def test_forward_products_equal_the_hand_counted_ones(case):
    make, shapes, forward = HAND_COUNTED[case]
    (row,) = coverage(model_of(make(), *shapes, as_list=case in LIST_INPUTS)).layers
    assert (row.forward, row.multiplier) == (forward, None)


def test_attention_layers_without_weights_count_both_products_and_list_their_scaling_apart():
    dot = model_of(L.Attention(use_scale=True), (3, 4), (5, 4), as_list=True)
    additive = model_of(L.AdditiveAttention(), (3, 4), (5, 4), as_list=True)
    assert [r.forward for r in coverage(dot).layers] == [3 * 5 * 4 + 3 * 5 * 4]  # scores and weighted values
    assert [r.forward for r in coverage(additive).layers] == [3 * 5 * 4]  # its scores are a sum of tanh
    assert coverage(dot).elementwise[0].forward == 3 * 5  # the scores times the scale
    assert coverage(additive).elementwise[0].forward == 3 * 5 * 4  # the scale times each tanh


def test_gradients_follow_what_trains_upstream_and_what_the_layer_computes_from_its_weights():
    x = keras.Input((5, 3))
    first = L.LSTM(4, return_sequences=True, name="first")
    frozen = L.Dense(2, name="frozen")
    frozen.trainable = False
    model = keras.Model(x, L.Dense(1, name="last")(frozen(first(x))))
    first_row, frozen_row, last_row = coverage(model).layers
    inputs, recurrent = 5 * 3 * 16, 5 * 4 * 16
    # The model's input needs no gradient; the recurrent state, computed from the kernels, does.
    assert (first_row.input_grad, first_row.weight_grad) == (recurrent, inputs + recurrent)
    assert (frozen_row.input_grad, frozen_row.weight_grad) == (5 * 4 * 2, 0)
    assert (last_row.input_grad, last_row.weight_grad) == (5 * 2, 5 * 2)


def test_every_call_of_a_shared_layer_and_every_layer_of_a_nested_model_is_counted():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="hidden")], name="block")
    shared = L.Dense(4, name="shared")
    a, b = keras.Input((6,)), keras.Input((6,))
    model = keras.Model([a, b], L.Concatenate()([inner(shared(a)), inner(shared(b))]))
    rows = coverage(model).layers
    assert [(r.name, r.forward) for r in rows] == [("shared", 24), ("shared", 24), ("block/hidden", 12),
                                                   ("block/hidden", 12)]
    # The nested model's input comes from a trainable layer: its input gradient is computed.
    assert [r.input_grad for r in rows] == [0, 0, 12, 12]


def test_unknown_dimensions_need_input_shape_and_then_count_as_a_model_of_that_shape():
    def fully_convolutional(shape):
        return keras.Sequential([keras.Input(shape), L.Conv2D(4, 3, name="conv"), L.GlobalAveragePooling2D(),
                                 L.Dense(2, name="head")])

    model = fully_convolutional((None, None, 3))
    with pytest.raises(CoverageError, match=r"'conv'.*unknown dimension.*input_shape="):
        coverage(model)
    resolved = coverage(model, input_shape=(8, 8, 3))
    assert resolved == coverage(fully_convolutional((8, 8, 3)))
    assert resolved.layers[0].forward == 6 * 6 * 4 * 9 * 3
    with pytest.raises(CoverageError, match="does not fit"):
        coverage(model, input_shape=[(8, 8, 3), (8, 8, 3)])


def test_a_subclassed_model_is_refused_clearly():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(CoverageError, match="Sequential or functional"):
        coverage(Net())


class Gram(L.Layer):
    """A custom layer with a matrix product of its input with itself."""

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(x, (0, 2, 1)))


class Projection(L.Layer):
    """A custom layer multiplying by its own weight through an einsum."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 3))

    def call(self, x):
        return keras.ops.einsum("btf,fo->bto", x, self.w)


class ApproximateProjection(L.Layer):
    """A custom layer multiplying through amsim's op."""

    def __init__(self, lut, **kwargs):
        super().__init__(**kwargs)
        self.lut = lut

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 3))

    def call(self, x):
        return ak.am_matmul(tf.reshape(x, [-1, x.shape[-1]]), self.w, self.lut)


def test_custom_layers_are_traced_their_products_exact_or_approximate_by_their_ops():
    x = keras.Input((5, 4))
    y = Projection(name="proj")(x)
    y = Gram(name="gram")(y)
    y = ApproximateProjection(gemm.resolve("mbm", 7), name="am")(y)
    y = L.Lambda(lambda t: t * 2.0, name="scale")(y)
    rows = {r.name: r for r in coverage(keras.Model(x, y)).layers}
    assert set(rows) == {"proj", "gram", "am"}, "a layer without products has no row"
    assert (rows["proj"].forward, rows["proj"].multiplier, rows["proj"].weight_grad) == (5 * 4 * 3, None, 60)
    # Both operands of the Gram matrix come from a trainable layer: two input gradients, no weight gradient.
    assert (rows["gram"].forward, rows["gram"].input_grad, rows["gram"].weight_grad) == (75, 150, 0)
    assert (rows["am"].forward, rows["am"].multiplier, rows["am"].gradient) == (5 * 5 * 3, "mbm:7", "approximate")


def test_element_wise_products_are_listed_apart_and_stay_out_of_the_fraction():
    x = keras.Input((4, 4, 2))
    y = L.Rescaling(0.5, name="rescale")(x)
    y = L.Conv2D(3, 1, name="conv")(y)
    y = L.BatchNormalization(name="bn")(y)
    squeeze = L.Dense(3, activation="sigmoid", name="excite")(L.GlobalAveragePooling2D()(y))
    y = L.Multiply(name="scale")([y, L.Reshape((1, 1, 3))(squeeze)])
    report = coverage(ak.approximate(keras.Model(x, y), "mbm:7"))
    assert report.fraction == 1.0
    assert [(e.name, e.forward) for e in report.elementwise] == [("rescale", 32), ("bn", 48), ("scale", 48)]
    assert "element-wise products (exact float32, not in the fraction): 128" in str(report)


def test_the_report_reads_as_a_table_and_serialises_for_a_runs_config():
    x = keras.Input((8,))
    y = L.Dense(4, name="fc1")(x)
    y = L.Dense(2, name="fc2")(y)
    model = ak.approximate(keras.Model(x, y), {"fc1": ("drum", 7, {"k": 4}), "fc2": "exact"})
    report = coverage(model)
    assert (report.forward, report.approximate_forward, report.exact_layers) == (40, 32, ("fc2",))
    assert report.fraction == pytest.approx(0.8)
    text = str(report)
    assert "drum:7:k=4" in text and "80.0 % approximate" in text and "exact matrix products in: fc2" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["fraction"] == pytest.approx(0.8) and data["exact_layers"] == ["fc2"]
    assert data["by_multiplier"] == {"drum:7:k=4": {"forward": 32, "input_grad": 0, "weight_grad": 32},
                                     "float32": {"forward": 8, "input_grad": 8, "weight_grad": 8}}
    assert [r["multiplier"] for r in data["layers"]] == ["drum:7:k=4", None]


def test_energy_counts_are_the_coverage_counts():
    x = keras.Input((6, 6, 2))
    y = L.SeparableConv2D(3, 3, name="sep")(x)
    y = L.Flatten()(y)
    model = keras.Model(x, L.Dense(2, name="fc")(y))
    counts, report = count_multiplications(model), coverage(model)
    assert [(c.name, c.forward, c.input_grad, c.weight_grad) for c in counts.layers] == [
        (r.name, r.forward, r.input_grad, r.weight_grad) for r in report.layers]
    assert (counts.forward, counts.training) == (report.forward, report.training)


# ----------------------------------------------------------------------------------------------
# The formulas against the product ops TensorFlow runs
# ----------------------------------------------------------------------------------------------


TRACEABLE = {  # (layer, input shapes, inputs passed as one list)
    "dense": (lambda: L.Dense(5), [(3, 4)], False),
    "einsum_dense": (lambda: L.EinsumDense("abc,cde->abde", output_shape=(3, 2, 5)), [(3, 4)], False),
    "conv1d_groups": (lambda: L.Conv1D(6, 3, groups=2, padding="causal"), [(10, 4)], False),
    "conv2d": (lambda: L.Conv2D(4, 3, strides=2, padding="same", dilation_rate=1), [(7, 7, 2)], False),
    "conv3d": (lambda: L.Conv3D(2, 2), [(3, 4, 3, 2)], False),
    "conv1d_transpose": (lambda: L.Conv1DTranspose(3, 3, strides=2), [(5, 2)], False),
    "conv2d_transpose": (lambda: L.Conv2DTranspose(3, 2, strides=2, padding="same"), [(4, 4, 5)], False),
    "conv3d_transpose": (lambda: L.Conv3DTranspose(2, 2), [(2, 2, 2, 3)], False),
    "separable_conv1d": (lambda: L.SeparableConv1D(4, 3, depth_multiplier=2), [(10, 3)], False),
    "separable_conv2d": (lambda: L.SeparableConv2D(5, 3, strides=2), [(7, 7, 2)], False),
    "depthwise_conv1d": (lambda: L.DepthwiseConv1D(3, depth_multiplier=2), [(10, 3)], False),
    "depthwise_conv2d": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), [(6, 6, 2)], False),
    "multi_head_attention": (lambda: L.MultiHeadAttention(2, 3, value_dim=4, use_gate=True), [(4, 6), (5, 6)],
                             False),
    "multi_head_attention_2d": (lambda: L.MultiHeadAttention(2, 2, attention_axes=(2,)), [(3, 4, 6), (3, 5, 6)],
                                False),
    "group_query_attention": (lambda: L.GroupQueryAttention(2, 4, 2), [(3, 8), (5, 8)], False),
    "attention": (lambda: L.Attention(), [(3, 4), (5, 4)], True),
    "dot": (lambda: L.Dot(axes=(2, 2)), [(3, 4), (5, 4)], True),
}


def formula_and_traced(layer, shapes, as_list, needs):
    """The layer's products by its formula and by its traced graph, as {arithmetic: (forward, dX, dW)}."""
    ins = tuple(In(tuple(s), "float32", frozenset([i])) for i, s in enumerate(shapes))
    call = Call((list(ins),) if as_list else ins, {})
    by_formula, by_trace = Tally(lambda dep: needs), Tally(lambda dep: needs)
    count_call(by_formula, layer, call)
    with by_trace.within(layer):
        for p in trace(layer, call).products:
            by_trace.product(p.count, p.a, p.b, p.arith)

    def parts(t):
        return {k: (p.forward, p.input_grad, p.weight_grad) for k, p in t.parts.items()}

    return parts(by_formula), parts(by_trace)


@pytest.mark.parametrize("needs", [False, True], ids=["inputs_need_no_gradient", "inputs_need_gradients"])
@pytest.mark.parametrize("case", sorted(TRACEABLE))
def test_each_formula_counts_what_tensorflow_computes(case, needs):
    make, shapes, as_list = TRACEABLE[case]
    layer = make()
    model_of(layer, *shapes, as_list=as_list)  # builds it
    formula, traced = formula_and_traced(layer, shapes, as_list, needs)
    assert formula == traced and sum(f for f, _, _ in formula.values()) > 0


@pytest.mark.parametrize("case", sorted(c for c in TRACEABLE if type(TRACEABLE[c][0]()) in APPROXIMATE))
def test_each_am_layers_formula_counts_the_approximate_ops_it_runs(case):
    make, shapes, as_list = TRACEABLE[case]
    keras_layer = make()
    am = ak.approximate(model_of(keras_layer, *shapes, as_list=as_list), "mbm:7").layers[-1]
    formula, traced = formula_and_traced(am, shapes, as_list, needs=True)
    assert formula == traced and set(formula) == {("mbm:7", "approximate")}


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru", "gru_reset_before"])
@pytest.mark.parametrize("approximate", [False, True], ids=["keras", "am"])
def test_a_recurrent_layer_counts_its_cells_traced_step_once_per_timestep(cell, approximate):
    make = {"simple_rnn": lambda: L.SimpleRNNCell(4), "lstm": lambda: L.LSTMCell(4),
            "gru": lambda: L.GRUCell(4), "gru_reset_before": lambda: L.GRUCell(4, reset_after=False)}[cell]
    rnn = L.RNN(make())
    model = model_of(rnn, (5, 3))
    if approximate:
        rnn = ak.approximate(model, "mbm:7").layers[-1]
    sequence = In((5, 3), "float32", frozenset([0]))
    by_formula, by_trace = Tally(lambda dep: False), Tally(lambda dep: False)
    count_call(by_formula, rnn, Call((sequence,), {}))
    with by_trace.within(rnn), by_trace.within(rnn.cell, repeat=5, inherit=True):
        for p in trace_cell(rnn.cell, sequence.inner((3,)), rnn).products:
            by_trace.product(p.count, p.a, p.b, p.arith)
    assert {k: vars(p) for k, p in by_formula.parts.items()} == {k: vars(p) for k, p in by_trace.parts.items()}
    assert list(by_formula.parts) == [("mbm:7", "approximate") if approximate else (None, "exact")]


@keras.saving.register_keras_serializable(package="amsim_tests")  # an RNN's copy rebuilds its cell by name
class MinimalRNNCell(L.Layer):
    """Keras' example of a custom recurrent cell: two exact matrix products per step."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = self.state_size = units

    def get_config(self):
        return {**super().get_config(), "units": self.units}

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))
        self.recurrent_kernel = self.add_weight(shape=(self.units, self.units))

    def call(self, inputs, states):
        output = keras.ops.matmul(inputs, self.kernel) + keras.ops.matmul(states[0], self.recurrent_kernel)
        return output, [output]


def test_a_custom_recurrent_cell_is_traced_for_one_step_and_counted_per_timestep():
    model = model_of(L.RNN(MinimalRNNCell(4), name="rnn"), (5, 3))
    (row,) = coverage(model).layers
    assert (row.name, row.kind, row.multiplier) == ("rnn", "RNN(MinimalRNNCell)", None)
    # The state is computed from the recurrent kernel: its products have an input gradient.
    assert (row.forward, row.input_grad, row.weight_grad) == (5 * (3 * 4 + 4 * 4), 5 * 4 * 4, 5 * (3 * 4 + 4 * 4))
    with pytest.warns(ak.ExactLayersWarning, match=r"'rnn': its .*MinimalRNNCell .*exact matrix products"):
        ak.approximate(model, "mbm:7")
