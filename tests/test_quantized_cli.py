"""8-bit quantized multipliers on the command line: ``amsim train --multipliers uint8:...`` (quantization-aware
training from the float32 network's initial weights) and ``amsim evaluate`` (post-training quantization of a
trained model with each circuit), on the digits dataset."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

# Keras's own model.save trips NumPy 2's __array__ deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

from amsim.experiments.multipliers import MultiplierSpec, parse_multiplier  # noqa: E402
from amsim.experiments.runner import weights_digest  # noqa: E402
from amsim.models import EVOAPPROX_EXACT_PDK45  # noqa: E402
from cli_run import run  # noqa: E402
from test_circuits import EVO_FORMAT  # noqa: E402

QUICK = ["--dataset", "digits", "--arch", "mlp", "--limit-train", "512", "--limit-test", "180", "--epochs", "3",
         "--no-plots", "--quiet"]
USAGE = 2

#: An unsigned 8-bit circuit whose every product is 0: a network multiplying with it sees only its biases.
ZERO_CIRCUIT = """\
/* @amsim
 * name: zero8
 * kind: int
 * bits: 8
 * signed: no
 * description: Every product is 0 (a test circuit)
 */
#include <stdint.h>

uint64_t zero8(uint64_t a, uint64_t b)
{
    (void)a;
    (void)b;
    return 0;
}
"""


@pytest.fixture(scope="module")
def circuits(tmp_path_factory):
    """The all-zero circuit and an EvoApproxLib-format circuit (header power 0.2 mW), as C files."""
    folder = tmp_path_factory.mktemp("circuits")
    (folder / "zero8.c").write_text(ZERO_CIRCUIT)
    (folder / "mul8u_LOW3.c").write_text(EVO_FORMAT.format(mae="2.75", wce="7"))
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory, circuits):
    """float32 against the exact uint8 and int8 circuits, the all-zero circuit and a per-layer assignment."""
    from amsim import cli

    out = tmp_path_factory.mktemp("study") / "digits"
    multipliers = f"float32,uint8:exact_int,int8:mul8s_exact,uint8:{circuits / 'zero8.c'}"
    assert cli.main(["train", *QUICK, "--multipliers", multipliers, "--assign", "dense=uint8:exact_int,*=exact",
                     "--out", str(out)]) == 0
    return out


def rows(study):
    return {r["multiplier"]: r for r in json.loads((study / "summary.json").read_text())["rows"]}


# ----------------------------------------------------------------------------------------------
# The multipliers' text
# ----------------------------------------------------------------------------------------------


def test_a_quantized_multiplier_names_its_scheme_in_label_text_and_records():
    spec = parse_multiplier("int8:mul8s_trunc:k=4")
    assert (spec.label, spec.text, spec.quantize, spec.bits) == ("int8-mul8s_trunc-k4", "int8:mul8s_trunc:k=4",
                                                                 "int8", 8)
    assert spec.layer_arguments() == {"lut": "mul8s_trunc", "quantize": "int8", "params": {"k": 4}}
    assert MultiplierSpec.from_dict(spec.to_dict()) == spec
    assert parse_multiplier("uint8:exact_int").exact_baseline == "uint8-exact_int"
    assert spec.exact_baseline == "int8-mul8s_exact"


def test_run_records_written_before_quantized_multipliers_still_read():
    old = {"kind": "model", "name": "mbm", "bits": 7, "params": {}, "label": "mbm-M7", "text": "mbm:7"}
    spec = MultiplierSpec.from_dict(old)
    assert spec.quantize is None and spec.label == "mbm-M7" and spec.to_dict() == old


# ----------------------------------------------------------------------------------------------
# amsim train
# ----------------------------------------------------------------------------------------------


def test_quantized_runs_train_from_the_float32_networks_initial_weights(study):
    runs = json.loads((study / "study.json").read_text())["runs"]
    assert runs == ["float32/seed0", "uint8-exact_int/seed0", "int8-mul8s_exact/seed0", "uint8-zero8/seed0",
                    "dense-uint8-exact_int+all-exact/seed0"]
    with np.load(study / "initial-weights" / "seed0.npz") as z:
        initial = weights_digest([z[k] for k in sorted(z.files)])
    configs = {r: json.loads((study / r / "config.json").read_text()) for r in runs}
    assert {c["initial_weights_sha256"] for c in configs.values()} == {initial}
    assert configs["uint8-exact_int/seed0"]["run"]["multiplier"]["quantize"] == "uint8"
    assert configs["int8-mul8s_exact/seed0"]["run"]["multiplier"]["text"] == "int8:mul8s_exact"
    assert "quantize" not in configs["float32/seed0"]["run"]["multiplier"]
    assert configs["uint8-exact_int/seed0"]["coverage"]["fraction"] == 1.0


def test_the_all_zero_circuit_trains_to_chance_and_the_summary_compares_it_with_the_exact_circuit(study):
    r = rows(study)
    assert r["float32"]["test_accuracy"] > 0.5, "the float32 network learns the digits"
    assert r["uint8-exact_int"]["test_accuracy"] > 0.5 and r["int8-mul8s_exact"]["test_accuracy"] > 0.5
    zero = r["uint8-zero8"]
    assert zero["test_accuracy"] < 0.2, "every product 0: the network sees only its biases"
    assert zero["scheme"] == "uint8" and zero["exact_baseline"] == "uint8-exact_int"
    assert zero["test_accuracy_vs_exact"] == pytest.approx(zero["test_accuracy"]
                                                           - r["uint8-exact_int"]["test_accuracy"])
    assert zero["test_accuracy_vs_float32"] == pytest.approx(zero["test_accuracy"] - r["float32"]["test_accuracy"])
    assert r["float32"]["exact_baseline"] is None and r["float32"]["test_accuracy_vs_exact"] is None
    assert "vs exact int" in (study / "summary.md").read_text()


def test_a_per_layer_assignment_may_quantize_some_layers(study):
    mixed = rows(study)["dense-uint8-exact_int+all-exact"]
    assert 0 < mixed["coverage"] < 1 and mixed["exact_layers"] == ["dense_1"]


def test_quantized_multiplications_are_priced_relative_to_the_exact_circuit_of_their_scheme(study):
    energy = {e["label"]: e for e in json.loads((study / "summary.json").read_text())["energy"]}
    exact = energy["uint8-exact_int"]
    assert exact["relative_power"] == 1.0 and "relative to the exact uint8 multiplier exact_int" in \
        exact["power_source"]
    # The forward products on 8-bit integer multipliers, the straight-through gradients in float32: less
    # energy than float32 throughout, more than the forward products alone would cost.
    assert 0 < exact["vs_float32"] < 1
    assert energy["int8-mul8s_exact"]["vs_float32"] == pytest.approx(exact["vs_float32"])
    assert energy["uint8-zero8"]["relative_power"] is None and energy["uint8-zero8"]["energy_per_epoch_j"] is None


@pytest.mark.parametrize("spec, message", [
    ("int8:exact_int", "exact_int is an unsigned circuit; signed operands need a signed one"),
    ("uint8:mul8s_exact", "mul8s_exact is a signed circuit; unsigned operands need an unsigned one"),
    ("uint8:bf16_rne", "bf16_rne is a float model"),
    ("uint8:wide.npy", "is outside 0..65535, the range of an unsigned 16-bit product"),
    ("uint8:exact_int:7", "takes no width"),
])
def test_a_circuit_that_cannot_be_one_is_refused_before_training(spec, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = np.multiply.outer(np.arange(256), np.arange(256))
    table[255, 255] = 70000  # past 16 bits
    np.save(tmp_path / "wide.npy", table)
    rc, _, err = run(["train", *QUICK, "--multipliers", f"float32,{spec}", "--out", str(tmp_path / "out")], capsys)
    assert rc == USAGE, err
    (line,) = err.strip().splitlines()
    assert line.startswith("amsim: error: ") and message in line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# amsim evaluate
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation(study, circuits, tmp_path_factory):
    """The float32 run's model, quantized after training with five circuits (one declaring its power)."""
    from amsim import cli

    out = tmp_path_factory.mktemp("evaluation")
    multipliers = ",".join(["uint8:exact_int", f"uint8:{circuits / 'zero8.c'}", f"uint8:{circuits / 'mul8u_LOW3.c'}",
                            "int8:mul8s_exact", "int8:mul8s_trunc:k=8", "mbm:7"])
    args = ["evaluate", "--model-file", str(study / "float32" / "seed0" / "model.keras"), "--multipliers",
            multipliers, "--calibration", "256", "--quiet", "--out", str(out)]
    assert cli.main(args) == 0
    return out


def test_evaluate_quantizes_the_trained_model_with_each_circuit(evaluation, study):
    results = json.loads((evaluation / "evaluation.json").read_text())
    assert results["dataset"] == "digits" and results["calibration_images"] == 256
    assert results["test_images"] == 360 and results["preprocess"] == "unit"
    r = {row["multiplier"]: row for row in results["rows"]}
    assert list(r) == ["uint8-exact_int", "uint8-zero8", "uint8-mul8u_LOW3", "int8-mul8s_exact",
                       "int8-mul8s_trunc-k8", "mbm-M7"]
    model = results["model"]["accuracy"]
    assert model > 0.5
    # 8-bit quantization of a small network costs little accuracy; a circuit with only zeros costs it all.
    assert abs(r["uint8-exact_int"]["drop_vs_model"]) < 0.05 and abs(r["int8-mul8s_exact"]["drop_vs_model"]) < 0.05
    assert r["uint8-zero8"]["accuracy"] < 0.2
    assert r["uint8-zero8"]["drop_vs_exact"] == pytest.approx(r["uint8-exact_int"]["accuracy"]
                                                              - r["uint8-zero8"]["accuracy"])
    assert r["int8-mul8s_trunc-k8"]["exact_baseline"] == "int8-mul8s_exact"
    assert r["mbm-M7"]["exact_baseline"] is None and r["mbm-M7"]["mae"] is None


def test_evaluate_reports_each_circuits_exhaustive_error_and_declared_power(evaluation):
    r = {row["multiplier"]: row for row in json.loads((evaluation / "evaluation.json").read_text())["rows"]}
    assert (r["uint8-exact_int"]["mae"], r["uint8-exact_int"]["wce"]) == (0, 0)
    assert (r["uint8-mul8u_LOW3"]["mae"], r["uint8-mul8u_LOW3"]["wce"]) == (2.75, 7)  # the low 3 bits cleared
    assert r["uint8-zero8"]["wce"] == 255 * 255
    assert r["uint8-mul8u_LOW3"]["relative_power"] == pytest.approx(0.2 / EVOAPPROX_EXACT_PDK45[(8, False)][1])
    assert r["uint8-exact_int"]["relative_power"] == 1.0 and r["uint8-zero8"]["relative_power"] is None
    # Nothing has less error than an exact circuit: the more accurate of the two is on the front. The
    # all-zero circuit has the largest error and the lowest accuracy: it is dominated.
    best_exact = max(("uint8-exact_int", "int8-mul8s_exact"), key=lambda label: r[label]["accuracy"])
    assert r[best_exact]["pareto"]["mae"] == "front" and r["uint8-zero8"]["pareto"]["mae"] == "dominated"
    assert r["uint8-zero8"]["pareto"]["power"] == "no cost data" and r["mbm-M7"]["pareto"] == {}


def test_evaluate_prints_the_table_and_draws_the_pareto_figures(evaluation, study, capsys, tmp_path):
    names = sorted(p.name for p in evaluation.iterdir())
    assert names == ["evaluation.json", "pareto-mae.png", "pareto-mae.svg", "pareto-power.png", "pareto-power.svg"]
    rc, out, err = run(["evaluate", "--model-file", str(study / "float32" / "seed0" / "model.keras"),
                        "--multipliers", "uint8:bam:v=6,int8:mul8s_trunc:k=8", "--quiet",
                        "--out", str(tmp_path / "e")], capsys)
    assert rc == 0, err
    head, rule, first, *lines = out.splitlines()
    assert head.split()[:3] == ["multiplier", "test", "acc"] and "drop vs exact int" in head and "MAE" in head
    assert first.startswith("model as saved") and lines[0].startswith("uint8-bam-v6")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["evaluation.json", "pareto-mae.png",
                                                                   "pareto-mae.svg"]


def test_a_quantized_runs_model_evaluates_as_saved_and_with_other_circuits(study, capsys, tmp_path):
    """A QAT run's model.keras: evaluated as saved (quantized), and requantized on another scheme's circuit."""
    rc, _, err = run(["evaluate", "--model-file", str(study / "uint8-exact_int" / "seed0" / "model.keras"),
                      "--multipliers", "uint8:exact_int,int8:mul8s_exact", "--quiet", "--out", str(tmp_path / "e")],
                     capsys)
    assert rc == 0, err
    results = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    r = {row["multiplier"]: row for row in results["rows"]}
    # as saved: the trained network with its circuit and observed ranges; recalibrated, it loses little
    assert results["model"]["accuracy"] > 0.5
    assert abs(r["uint8-exact_int"]["drop_vs_model"]) < 0.05 and abs(r["int8-mul8s_exact"]["drop_vs_model"]) < 0.1


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    import keras

    folder = tmp_path_factory.mktemp("bad")
    (folder / "notes.keras").write_text("not a model")
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(folder / "mnist-sized.keras")
    return folder


@pytest.mark.parametrize("args, message", [
    (["--model-file", "{bad}/notes.keras"], "notes.keras: not a .keras archive (not a zip file)"),
    (["--model-file", "{bad}/mnist-sized.keras"], "the model takes inputs (28, 28, 1); digits has images (8, 8, 1)"),
    (["--calibration", "5000"], "--calibration 5000 must lie in 1..1293"),
    (["--calibration", "0"], "argument --calibration: expected a positive integer, got 0"),
    (["--multipliers", "int8:exact_int"], "exact_int is an unsigned circuit"),
])
def test_evaluate_refuses_bad_input_in_one_line_writing_nothing(args, message, study, bad_models, tmp_path, capsys):
    given = {"--model-file": str(study / "float32" / "seed0" / "model.keras"), "--multipliers": "uint8:exact_int",
             **{flag: value.format(bad=bad_models) for flag, value in zip(args[::2], args[1::2])}}
    rc, _, err = run(["evaluate", *(x for pair in given.items() for x in pair), "--out", str(tmp_path / "out")],
                     capsys)
    assert rc == USAGE, err
    (line,) = err.strip().splitlines()
    assert line.startswith(("amsim: error: ", "amsim evaluate: error: ")) and message in line
    assert not (tmp_path / "out").exists()
