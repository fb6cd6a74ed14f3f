"""Multiplication counts against hand-computed ones, and an energy table that never invents cost data."""

import sys

import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from amsim.experiments.energy import (BFLOAT16_M, FLOAT32_M, UNKNOWN, CostFigure, Energy,  # noqa: E402
                                      count_multiplications, energy_table, format_energy, relative_power,
                                      run_energy)
from amsim.experiments.multipliers import parse_multiplier  # noqa: E402

L = keras.layers


def test_counts_of_a_small_cnn_equal_the_hand_computed_ones():
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        L.Conv2D(4, 3),                                     # 4x4x4 outputs, 3*3*2 products each
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),  # 4x4x8 outputs, 3*3 products each
        L.MaxPooling2D(2),                                  # 2x2x8
        L.Flatten(),
        L.Dense(5),
    ])
    counts = count_multiplications(model)
    conv = 4 * 4 * 4 * (3 * 3 * 2)
    depthwise = 4 * 4 * 8 * (3 * 3)
    dense = 2 * 2 * 8 * 5
    assert [(c.kind, c.forward, c.input_grad, c.weight_grad) for c in counts.layers] == [
        ("Conv2D", conv, 0, conv),  # the first layer's input needs no gradient
        ("DepthwiseConv2D", depthwise, depthwise, depthwise),
        ("Dense", dense, dense, dense),
    ]
    assert counts.forward == conv + depthwise + dense
    assert counts.training == 3 * (conv + depthwise + dense) - conv
    epoch = counts.per_epoch(train_examples=10, validation_examples=4)
    assert epoch == {"forward": 14 * counts.forward, "input_grad": 10 * counts.input_grad,
                     "weight_grad": 10 * counts.weight_grad}


def test_dense_on_a_sequence_counts_every_position_and_frozen_layers_have_no_weight_gradient():
    inputs = keras.Input((3, 4))
    hidden = L.Dense(6, name="frozen")
    hidden.trainable = False
    model = keras.Model(inputs, L.Dense(2)(hidden(inputs)))
    first, second = count_multiplications(model).layers
    assert (first.forward, first.input_grad, first.weight_grad) == (3 * 4 * 6, 0, 0)
    # Nothing upstream of the second layer is trainable either: no input gradient.
    assert (second.forward, second.input_grad, second.weight_grad) == (3 * 6 * 2, 0, 3 * 6 * 2)


def test_attention_counts_projections_and_both_attention_products():
    inputs = keras.Input((3, 4))  # T = 3 positions of 4 features
    model = keras.Model(inputs, L.MultiHeadAttention(num_heads=2, key_dim=5)(inputs, inputs))
    (mha,) = count_multiplications(model).layers
    projection = 3 * 4 * 2 * 5        # each of Q, K, V: T x features x heads x key_dim
    scores = weighted = 2 * 3 * 3 * 5  # heads x Tq x Tv x key_dim
    output = 3 * 2 * 5 * 4            # T x heads x value_dim x features
    assert mha.forward == 3 * projection + scores + weighted + output
    assert mha.input_grad == 2 * (scores + weighted) + output  # the inputs themselves need none
    assert mha.weight_grad == 3 * projection + output


def test_published_cost_figures_are_used_with_their_source():
    mbm = relative_power(parse_multiplier("mbm:7"))  # lifted to 8-bit significands: Saadat's 8-bit figure
    assert mbm.power == pytest.approx(0.61) and "Saadat" in mbm.source and mbm.bits == 7
    float32 = relative_power(parse_multiplier("float32"))
    assert (float32.power, float32.bits) == (1.0, FLOAT32_M)


def test_a_multiplier_without_cost_data_is_unknown_never_estimated():
    spec = parse_multiplier("mitchell:7")
    figure = relative_power(spec)
    assert figure.power is None and "no power figure" in figure.source
    counts = {"forward": 100, "input_grad": 50, "weight_grad": 50}
    energy = run_energy(counts, spec, figure)
    assert not energy.known and energy.joules() is None
    (row,) = energy_table([{"label": "mitchell-M7", "spec": spec, "epoch_counts": counts, "epochs": 3}])
    assert row["energy_per_epoch_j"] is None and row["vs_float32"] is None and row["vs_bfloat16"] is None
    assert format_energy([row])[0][2:7] == [UNKNOWN] * 5


def test_energies_compare_within_one_width_and_across_widths_only_through_published_figures():
    counts = {"forward": 100, "input_grad": 60, "weight_grad": 40}
    spec = parse_multiplier("mbm:7")
    figure = CostFigure(0.5, BFLOAT16_M, "test figure")
    energy = run_energy(counts, spec, figure)
    assert energy.ratio(Energy({BFLOAT16_M: 200})) == pytest.approx(0.5)
    assert energy.ratio(Energy({FLOAT32_M: 200})) is None, "no published exact bfloat16 energy is bundled"
    with_figure = {FLOAT32_M: ("float32", 4.0, "a"), BFLOAT16_M: ("bfloat16", 1.0, "b")}
    assert energy.ratio(Energy({FLOAT32_M: 200}), with_figure) == pytest.approx(0.5 * 1.0 / 4.0)
    exact_gradients = run_energy(counts, spec, figure, "exact")
    assert exact_gradients.units == {BFLOAT16_M: 50.0, FLOAT32_M: 100}


def test_the_float32_row_is_priced_with_the_bundled_float32_figure():
    counts = {"forward": 10**6, "input_grad": 0, "weight_grad": 10**6}
    (row,) = energy_table([{"label": "float32", "spec": parse_multiplier("float32"), "epoch_counts": counts,
                            "epochs": 2}])
    assert row["energy_per_epoch_j"] == pytest.approx(2e6 * 3.7e-12)
    assert row["energy_per_run_j"] == pytest.approx(2 * 2e6 * 3.7e-12)
    assert row["vs_float32"] == 1.0 and row["vs_bfloat16"] is None
    assert "Horowitz" in row["exact_energy_sources"]["float32"]


@pytest.mark.parametrize("arch, shape", [("mlp", (8, 8, 1)), ("lenet5", (8, 8, 1)), ("lenet5", (28, 28, 1)),
                                         ("alexnet-cifar", (32, 32, 3)), ("resnet", (32, 32, 3)),
                                         ("alexnet", (32, 32, 3))])
def test_every_architecture_builds_for_its_inputs_and_can_be_counted(arch, shape):
    from amsim.experiments.architectures import build_model

    model = build_model(arch, shape, 10)
    assert tuple(model.outputs[0].shape) == (None, 10)
    counts = count_multiplications(model)
    assert counts.forward > 0 and counts.layers[0].input_grad == 0
    if arch == "alexnet":  # the reference's first convolution: 227x227 -> 55x55x96, 11*11*3 products each
        assert counts.layers[0].forward == 55 * 55 * 96 * 11 * 11 * 3
        assert [c.kind for c in counts.layers] == ["Conv2D"] * 5 + ["Dense"] * 3


class FakeNvml:
    """pynvml's calls as the meter uses them, on a board whose energy counter the test advances."""

    class NVMLError(Exception):
        pass

    def __init__(self, counter=True):
        self.millijoules, self.counter = 1000, counter

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise self.NVMLError("not supported")
        return self.millijoules

    def nvmlDeviceGetPowerUsage(self, handle):
        return 250_000  # milliwatts


def test_board_energy_is_read_from_nvml_when_present(monkeypatch):
    from amsim.experiments.energy import board_energy_meter

    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert board_energy_meter() is None
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    meter = board_energy_meter()
    meter.start()
    nvml.millijoules += 12_500
    assert meter.stop() == pytest.approx(12.5)
