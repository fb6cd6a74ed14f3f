"""Per-layer multipliers in a study: ``amsim train --assign``, its run's coverage and its energy."""

import json

import pytest

from amsim.errors import AmsimError
from amsim.experiments import ExperimentError
from amsim.experiments.energy import EXACT_ENERGY_PJ, energy_table, relative_power
from amsim.experiments.multipliers import ASSIGN, MultiplierSpec, parse_assignment_spec, parse_multipliers

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

from cli_run import run  # noqa: E402

QUICK = ["--dataset", "digits", "--arch", "mlp", "--limit-train", "200", "--limit-test", "100", "--validation", "50",
         "--epochs", "1", "--quiet", "--no-plots"]


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def test_an_assignment_is_one_run_whose_label_names_each_pattern_and_multiplier():
    spec = parse_assignment_spec("conv*=drum:7:k=4,dense_2=exact,*=mbm:7")
    assert spec.kind == ASSIGN
    assert spec.label == "conv-drum-M7-k4+dense_2-exact+all-mbm-M7"
    assert spec.text == "conv*=drum:7:k=4,dense_2=exact,*=mbm:7"
    assert [(p, s.label if s else None) for p, s in spec.entries] == \
        [("conv*", "drum-M7-k4"), ("dense_2", None), ("*", "mbm-M7")]
    assert [s.label for s in spec.multipliers] == ["drum-M7-k4", "mbm-M7"]


def test_an_assignment_gives_approximate_the_dict_it_takes_in_the_order_written():
    spec = parse_assignment_spec("dense_1=exact,*=mbm:7,dense=drum:7:k=4")
    assert list(spec.layer_arguments()["lut"].items()) == \
        [("dense_1", "exact"), ("*", ("mbm", 7)), ("dense", ("drum", 7, {"k": 4}))]


def test_an_assignment_survives_its_run_config(tmp_path):
    spec = parse_assignment_spec("dense=drum:7:k=4,*=mbm:7")
    again = MultiplierSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.label == spec.label


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"dense": "drum:7:k=4", "dense_1": ["mbm", 7], "*": "exact"}'),
    (".toml", 'dense = "drum:7:k=4"\ndense_1 = ["mbm", 7]\n"*" = "exact"\n'),
])
def test_an_assignment_file_reads_as_its_text(tmp_path, suffix, text):
    path = tmp_path / f"assign{suffix}"
    path.write_text(text)
    assert parse_assignment_spec(str(path)).name == "dense=drum:7:k=4,dense_1=mbm:7,*=exact"


def test_a_multiplier_without_its_width_takes_the_default_width():
    assert parse_assignment_spec("*=mbm", default_bits=5).entries[0][1].bits == 5


@pytest.mark.parametrize("text, message", [
    ("dense=exact,*=float32", "assigns no approximate multiplier"),
    ("dense", "PATTERN=SPEC"),
    ("dense=mbm:7,dense=drum:7", "twice"),
    ("dense=nosuchmodel:7", "nosuchmodel"),
    ("dense=drum:7:k=99", "k"),
])
def test_a_bad_assignment_is_one_line_before_anything_trains(text, message):
    with pytest.raises(AmsimError, match=message) as info:
        parse_assignment_spec(text)
    assert "\n" not in str(info.value)


def test_an_assignment_and_a_multiplier_with_one_label_are_refused():
    with pytest.raises(ExperimentError, match="more than once"):
        parse_multipliers("mbm:7", assignments=["*=mbm:7", "*=mbm:7"])


# ----------------------------------------------------------------------------------------------
# Energy: each layer's products on its own multiplier
# ----------------------------------------------------------------------------------------------


def test_a_mixed_run_prices_each_group_on_its_multiplier_and_sums():
    mbm, drum = parse_multipliers("mbm:7,exact:7")
    float32 = MultiplierSpec("float32", "float32")
    counts = {"mbm": {"forward": 100, "input_grad": 50, "weight_grad": 100},
              "drum": {"forward": 30, "input_grad": 0, "weight_grad": 30},
              "float32": {"forward": 10, "input_grad": 10, "weight_grad": 10}}
    table = {**EXACT_ENERGY_PJ, 7: ("bfloat16", 0.5, "a figure for this test")}
    (row,) = energy_table([{"label": "mixed", "epochs": 2, "groups": [
        (mbm, counts["mbm"]), (drum, counts["drum"]), (float32, counts["float32"])]}], table)
    p_mbm, p_drum = relative_power(mbm).power, relative_power(drum).power
    assert p_mbm is not None and p_drum == 1.0
    expected = (250 * p_mbm * 0.5 + 60 * p_drum * 0.5 + 30 * EXACT_ENERGY_PJ[23][1]) * 1e-12
    assert row["multiplications_per_epoch"] == 340
    assert row["energy_per_epoch_j"] == pytest.approx(expected)
    assert row["energy_per_run_j"] == pytest.approx(2 * expected)
    assert row["mixed"] and row["relative_power"] is None
    assert "mbm-M7" in row["power_source"] and "exact-M7" in row["power_source"]


# ----------------------------------------------------------------------------------------------
# amsim train --assign, end to end
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    pytest.importorskip("amsim.keras")
    out = tmp_path_factory.mktemp("assign") / "digits"
    return out


def test_train_assign_trains_one_run_per_assignment_and_reports_its_coverage(study, capsys):
    code, stdout, stderr = run(["train", *QUICK, "--multipliers", "float32", "--assign", "dense=drum:7:k=4,*=mbm:7",
                                "--assign", "dense_1=mbm:7", "--out", str(study)], capsys)
    assert code == 0, stderr
    summary = json.loads((study / "summary.json").read_text())
    rows = {r["multiplier"]: r for r in summary["rows"]}
    assert set(rows) == {"float32", "dense-drum-M7-k4+all-mbm-M7", "dense_1-mbm-M7"}
    assert rows["dense-drum-M7-k4+all-mbm-M7"]["coverage"] == 1.0
    assert rows["float32"]["coverage"] == 0.0
    # the MLP's first Dense holds most of the products: the run assigning only the second is partly approximate
    partial = rows["dense_1-mbm-M7"]
    assert 0 < partial["coverage"] < 0.5 and partial["exact_layers"] == ["dense"]
    assert "partly approximate: dense_1-mbm-M7" in stdout
    assert "## Products left exact" in (study / "summary.md").read_text()

    config = json.loads((study / "dense-drum-M7-k4+all-mbm-M7" / "seed0" / "config.json").read_text())
    by_layer = {r["name"]: r["multiplier"] for r in config["coverage"]["layers"]}
    assert by_layer == {"dense": "drum:7:k=4", "dense_1": "mbm:7"}
    assert set(config["pricing"]) == {"drum:7:k=4", "mbm:7"}
    energy = {r["label"]: r for r in summary["energy"]}
    assert energy["dense-drum-M7-k4+all-mbm-M7"]["mixed"]
    assert energy["dense-drum-M7-k4+all-mbm-M7"]["multiplications_per_epoch"] == \
        energy["float32"]["multiplications_per_epoch"]
