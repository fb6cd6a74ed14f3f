"""amsim.keras.approximate: every multiplying layer converted, or named; per-layer multipliers; precise() back."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import amsim.keras as ak  # noqa: E402
from amsim.errors import AmsimError  # noqa: E402
from amsim.keras.coverage import coverage  # noqa: E402
from amsim.keras.layers.base import APPROXIMATE  # noqa: E402
from amsim.specs import SpecError, parse_assignment  # noqa: E402

L = keras.layers

# One use of each Keras class that has an AM version: (the layer, its input shapes, inputs as a list).
EXAMPLES = {
    L.Dense: (lambda: L.Dense(3), [(4, 5)], False),
    L.EinsumDense: (lambda: L.EinsumDense("abc,cd->abd", output_shape=(4, 3)), [(4, 5)], False),
    L.Conv1D: (lambda: L.Conv1D(3, 2, groups=1), [(6, 2)], False),
    L.Conv2D: (lambda: L.Conv2D(4, 2, groups=2), [(5, 5, 2)], False),
    L.Conv3D: (lambda: L.Conv3D(2, 2), [(3, 3, 3, 2)], False),
    L.Conv1DTranspose: (lambda: L.Conv1DTranspose(2, 3, strides=2), [(4, 2)], False),
    L.Conv2DTranspose: (lambda: L.Conv2DTranspose(2, 2, strides=2), [(3, 3, 2)], False),
    L.Conv3DTranspose: (lambda: L.Conv3DTranspose(2, 2), [(2, 2, 2, 2)], False),
    L.SeparableConv1D: (lambda: L.SeparableConv1D(3, 2), [(6, 2)], False),
    L.SeparableConv2D: (lambda: L.SeparableConv2D(3, 2), [(5, 5, 2)], False),
    L.DepthwiseConv1D: (lambda: L.DepthwiseConv1D(2, depth_multiplier=2), [(6, 2)], False),
    L.DepthwiseConv2D: (lambda: L.DepthwiseConv2D(2), [(5, 5, 2)], False),
    L.MultiHeadAttention: (lambda: L.MultiHeadAttention(2, 2), [(3, 4), (5, 4)], False),
    L.SimpleRNN: (lambda: L.SimpleRNN(3), [(4, 2)], False),
    L.LSTM: (lambda: L.LSTM(3), [(4, 2)], False),
    L.GRU: (lambda: L.GRU(3), [(4, 2)], False),
    L.SimpleRNNCell: (lambda: L.RNN(L.SimpleRNNCell(3)), [(4, 2)], False),
    L.LSTMCell: (lambda: L.RNN(L.LSTMCell(3)), [(4, 2)], False),
    L.GRUCell: (lambda: L.RNN(L.GRUCell(3, reset_after=False)), [(4, 2)], False),
}
# Wrappers, whose layers or cells are converted inside them.
WRAPPED = {
    "bidirectional": (lambda: L.Bidirectional(L.LSTM(3, return_sequences=True)), [(4, 2)]),
    "time_distributed": (lambda: L.TimeDistributed(L.Dense(3)), [(4, 2)]),
    "stacked_cells": (lambda: L.RNN([L.GRUCell(3), L.LSTMCell(2)]), [(4, 2)]),
}


def exact_layers_warnings(record) -> list:
    """The ExactLayersWarnings among the warnings recorded (Keras adds its own)."""
    return [w.message for w in record if issubclass(w.category, ak.ExactLayersWarning)]


def model_of_every_kind():
    inputs, outputs = [], []
    for make, shapes, as_list in EXAMPLES.values():
        xs = [keras.Input(s) for s in shapes]
        inputs += xs
        outputs.append(make()(xs) if as_list else make()(*xs))
    for make, shapes in WRAPPED.values():
        xs = [keras.Input(s) for s in shapes]
        inputs += xs
        outputs.append(make()(*xs))
    return keras.Model(inputs, outputs)


def test_every_keras_layer_with_an_am_version_has_an_example_here():
    missing = sorted(cls.__name__ for cls in APPROXIMATE if cls not in EXAMPLES)
    assert not missing, f"add an example of {missing} to EXAMPLES"


@pytest.mark.parametrize("am_cls", sorted(APPROXIMATE.values(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_every_am_layer_documents_the_arguments_it_adds(am_cls):
    doc = am_cls.__doc__ or ""
    assert all(f"{arg}:" in doc for arg in ("lut", "bits", "params", "rounding", "mode", "gradient")), am_cls


def test_a_model_of_every_convertible_kind_converts_to_full_coverage_with_its_weights_and_back():
    model = model_of_every_kind()
    assert coverage(model).fraction == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ak.ExactLayersWarning)
        approx = ak.approximate(model, "mbm:7")
    report = coverage(approx)
    assert report.fraction == 1.0 and report.exact_layers == ()
    assert {r.multiplier for r in report.layers} == {"mbm:7"}
    assert len(report.layers) == len(EXAMPLES) + len(WRAPPED)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), approx.get_weights()))
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, *x.shape[1:])).astype(np.float32) for x in model.inputs]
    for got, want in zip(approx(xs), model(xs)):
        assert got.shape == want.shape and np.all(np.isfinite(got))
    back = ak.precise(approx)
    assert coverage(back).fraction == 0.0
    assert all(np.array_equal(a, b) for a, b in zip(back(xs), model(xs)))


def test_wrappers_are_rebuilt_around_am_layers_and_cells():
    x = keras.Input((4, 2))
    y = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")(x)
    y = L.TimeDistributed(L.Dense(2), name="td")(y)
    y = L.RNN([L.GRUCell(3), L.SimpleRNNCell(2)], name="stack")(y)
    approx = ak.approximate(keras.Model(x, y), "mbm", bits=7)
    bi, td, stack = approx.get_layer("bi"), approx.get_layer("td"), approx.get_layer("stack")
    assert (type(bi.forward_layer), type(bi.backward_layer), type(td.layer)) == (ak.AMLSTM, ak.AMLSTM, ak.AMDense)
    assert [type(c) for c in stack.cell.cells] == [ak.AMGRUCell, ak.AMSimpleRNNCell]
    assert bi.backward_layer.go_backwards and [r.kind for r in coverage(approx).layers] == [
        "Bidirectional(LSTM)", "TimeDistributed(Dense)", "RNN(StackedRNNCells(GRUCell, SimpleRNNCell))"]


class Gram(L.Layer):
    """A custom layer computing an exact matrix product, which approximate() cannot convert."""

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(x, (0, 2, 1)))


class Shift(L.Layer):
    """A custom layer without products."""

    def call(self, x):
        return x + 1.0


class ApproximateGram(L.Layer):
    """A custom layer whose product is amsim's."""

    def call(self, x):
        return ak.am_matmul(x, x, "mbm", bits=7, transpose_b=True)


def custom_model():
    x = keras.Input((4, 3))
    y = L.Dense(3, name="dense")(x)
    y = Gram(name="gram")(y)
    y = Shift(name="shift")(y)
    y = ApproximateGram(name="am_gram")(y)
    return keras.Model(x, L.Dense(2, name="head")(y))


def test_a_custom_multiplying_layer_is_named_in_one_warning_and_the_rest_converts():
    with pytest.warns(ak.ExactLayersWarning, match=r"1 layer that multiplies is left exact: 'gram': Gram .*"
                                                   r"exact matrix products \(BatchMatMulV2\)") as record:
        approx = ak.approximate(custom_model(), "mbm:7")
    (warning,) = exact_layers_warnings(record)
    assert [name for name, _ in warning.layers] == ["gram"]
    report = coverage(approx)
    assert report.exact_layers == ("gram",)
    assert {r.name: r.multiplier for r in report.layers} == {"dense": "mbm:7", "gram": None, "am_gram": "mbm:7",
                                                            "head": "mbm:7"}


def test_strict_raises_with_the_same_list_and_skip_leaves_layers_exact_silently():
    with pytest.raises(ak.LayerConfigError, match=r"'gram': Gram is not a layer approximate\(\) converts"):
        ak.approximate(custom_model(), "mbm:7", strict=True)
    for skip in ("gram", ["g?am"], Gram):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ak.ExactLayersWarning)
            approx = ak.approximate(custom_model(), "mbm:7", skip=skip, strict=True)
        assert coverage(approx).exact_layers == ("gram",)
    skipped = ak.approximate(custom_model(), "mbm:7", skip=[L.Dense, "gram"])
    assert coverage(skipped).exact_layers == ("dense", "gram", "head")
    with pytest.raises(ak.LayerConfigError, match="no layer named 'grams'"):
        ak.approximate(custom_model(), "mbm:7", skip="grams")


def test_an_argument_an_am_layer_refuses_is_listed_with_its_reason_with_the_other_exact_layers():
    x = keras.Input((4, 3))
    quantized = L.Dense(3, name="quantized")
    y = Gram(name="gram")(quantized(x))
    model = keras.Model(x, L.Dense(2, name="head")(y))
    quantized.quantize("int8")
    with pytest.warns(ak.ExactLayersWarning, match="2 layers that multiply are left exact") as record:
        approx = ak.approximate(model, "mbm:7")
    (warning,) = exact_layers_warnings(record)
    reasons = dict(warning.layers)
    assert list(reasons) == ["quantized", "gram"] and "quantization does not apply" in reasons["quantized"]
    assert type(approx.get_layer("head")) is ak.AMDense and approx(np.ones((1, 4, 3), np.float32)).shape == (1, 4, 2)


def test_a_multiplying_keras_layer_without_an_am_version_is_named():
    x = keras.Input((5, 4))
    y = L.Dense(4, name="dense")(x)
    y = L.Attention(name="attention")([y, y])
    with pytest.warns(ak.ExactLayersWarning, match="'attention': Keras' Attention has no approximate version"):
        ak.approximate(keras.Model(x, y), "mbm:7")


def per_layer_model():
    x = keras.Input((6, 6, 2))
    y = L.Conv2D(3, 3, name="conv_a")(x)
    y = L.Conv2D(3, 3, name="conv_b")(y)
    y = L.Flatten()(y)
    y = L.Dense(4, name="dense_1")(y)
    y = L.Dense(3, name="dense_2")(y)
    return keras.Model(x, L.Dense(2, name="out")(y))


def test_per_layer_multipliers_by_name_pattern_and_class_first_match_winning():
    approx = ak.approximate(per_layer_model(), {
        "conv_b": "mitchell:6",           # before the pattern that matches it too: this entry wins
        "conv*": ("drum", 7, {"k": 4}),
        "dense_2": "exact",               # before the class: left exact
        L.Dense: ("mbm", 7),              # the other Dense layers
    })
    report = coverage(approx)
    assert {r.name: r.multiplier for r in report.layers} == {
        "conv_a": "drum:7:k=4", "conv_b": "mitchell:6", "dense_1": "mbm:7", "dense_2": None, "out": "mbm:7"}
    assert type(approx.get_layer("dense_2")) is L.Dense
    text = str(report)
    for line in ("conv_a ", "drum:7:k=4", "mitchell:6", "exact matrix products in: dense_2"):
        assert line in text


def test_exact_names_the_exact_c_model_as_the_one_multiplier_and_leaves_layers_exact_in_an_assignment():
    # One multiplier for every layer: "exact" is the built-in C model (exact products at M bits).
    report = coverage(ak.approximate(per_layer_model(), "exact", bits=7))
    assert report.fraction == 1.0 and {r.multiplier for r in report.layers} == {"exact:7"}
    # As the value of an assignment, "exact" leaves the layer float32; "exact:7" is the C model again.
    report = coverage(ak.approximate(per_layer_model(), {"dense_2": "exact", "out": "exact:7", "*": "mbm:7"}))
    assert {r.name: r.multiplier for r in report.layers}["dense_2"] is None
    assert {r.name: r.multiplier for r in report.layers}["out"] == "exact:7"


def test_a_layer_no_entry_matches_is_warned_about_and_a_default_entry_covers_the_rest():
    with pytest.warns(ak.ExactLayersWarning, match="'dense_1': no entry of the assignment matches it") as record:
        ak.approximate(per_layer_model(), {"conv*": "mbm:7", "out": "mbm:7", "dense_2": "exact"})
    (warning,) = exact_layers_warnings(record)
    assert [name for name, _ in warning.layers] == ["dense_1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ak.ExactLayersWarning)
        approx = ak.approximate(per_layer_model(), {"dense_2": "exact", "*": "mbm:7"}, strict=True)
    assert coverage(approx).exact_layers == ("dense_2",)


def test_a_bad_assignment_is_refused_in_one_line():
    for table, match in [({"nosuch": "mbm:7", "*": "mbm:7"}, "no layer named 'nosuch'"),
                         ({3: "mbm:7"}, "takes layer names, fnmatch patterns"),
                         ({"*": "mbm:seven"}, r"approximate\(\): mantissa width in 'mbm:seven' must be an integer"),
                         ({"*": ("mbm",)}, r"a multiplier tuple is \(name, bits\[, params\]\)"),
                         ({"*": "nosuch:7"}, "unknown model 'nosuch'")]:
        with pytest.raises(AmsimError, match=match) as err:
            ak.approximate(per_layer_model(), table)
        assert "\n" not in str(err.value)


def test_an_assignment_reads_from_the_command_lines_text_or_a_file(tmp_path):
    text = "conv*=drum:7:k=4, dense_2=exact, *=mbm:7"
    table = parse_assignment(text)
    assert table == {"conv*": "drum:7:k=4", "dense_2": "exact", "*": "mbm:7"}
    (tmp_path / "assign.json").write_text(json.dumps({"conv*": ["drum", 7, {"k": 4}], "dense_2": "exact",
                                                      "*": "mbm:7"}))
    (tmp_path / "assign.toml").write_text('"conv*" = "drum:7:k=4"\ndense_2 = "exact"\n"*" = "mbm:7"\n')
    from_json, from_toml = parse_assignment(tmp_path / "assign.json"), parse_assignment(tmp_path / "assign.toml")
    assert from_json["conv*"] == ("drum", 7, {"k": 4}) and from_toml == table
    expected = {"conv_a": "drum:7:k=4", "conv_b": "drum:7:k=4", "dense_1": "mbm:7", "dense_2": None, "out": "mbm:7"}
    for assignment in (table, from_json, from_toml):
        approx = ak.approximate(per_layer_model(), assignment)
        assert {r.name: r.multiplier for r in coverage(approx).layers} == expected
    for bad, match in [("conv*", "write PATTERN=SPEC pairs"), ("a=mbm:7,a=mitchell:7", "gives 'a' twice"),
                       ("a=mbm:7:k", "cannot read 'k'"), (tmp_path / "none.json", "cannot read the assignment file"),
                       ("*=mbm:7:k=1:k=2", "parameter k is given twice")]:
        with pytest.raises(SpecError, match=match):
            parse_assignment(bad)
    (tmp_path / "bad.toml").write_text("= =")
    with pytest.raises(SpecError, match="is not valid TOML"):
        parse_assignment(tmp_path / "bad.toml")


class Untraceable(L.Layer):
    """Stands for a layer TensorFlow cannot trace: it refuses a known batch size."""

    def call(self, x):
        if x.shape[0] is not None:
            raise RuntimeError("this layer runs only with an unknown batch size")
        return x


def test_a_layer_that_cannot_be_traced_is_named_as_not_inspected():
    x = keras.Input((3,))
    model = keras.Model(x, L.Dense(2, name="head")(Untraceable(name="opaque")(x)))
    with pytest.warns(ak.ExactLayersWarning, match=r"'opaque': cannot be inspected \(.*unknown batch size\)"):
        approx = ak.approximate(model, "mbm:7")
    assert type(approx.get_layer("head")) is ak.AMDense
    with pytest.raises(ak.CoverageError, match="'opaque' .*cannot be traced.*unknown batch size"):
        coverage(model)
