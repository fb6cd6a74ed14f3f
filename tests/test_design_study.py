"""``amsim study MY_MUL.c``: a C file to a verdict (check, LUT, neighbours, training, report) in one command."""

import json

import pytest

pytest.importorskip("tensorflow")

# Keras's own model.save trips NumPy 2's __array__ deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

from amsim import cli  # noqa: E402
from amsim.experiments.design_study import closest_builtins, summary_paragraph  # noqa: E402

# The exact product with its three lowest bits cleared: never over, error below 8 / (a * b).
LOWCUT = """/* @amsim
 * name: lowcut
 * kind: int
 * bits: 2..32
 * signed: no
 * description: exact product with its three lowest bits cleared (a design of the tests)
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 8
#endif

uint64_t lowcut(uint64_t a, uint64_t b)
{
    a &= amsim_low_mask(AMSIM_BITS);
    b &= amsim_low_mask(AMSIM_BITS);
    return (a * b) & ~(uint64_t)7;
}
"""


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    folder = tmp_path_factory.mktemp("design")
    source = folder / "lowcut.c"
    source.write_text(LOWCUT)
    out = folder / "study"
    assert cli.main(["study", str(source), "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    return source, out


def test_a_study_checks_the_design_and_trains_it_beside_float32_and_its_two_closest_builtins(studied):
    _, out = studied
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["check"]["holds"] and verdict["check"]["exhaustive"]
    assert json.loads((out / "check.json").read_text())["holds"]
    assert len(verdict["neighbours"]) == 2 and "lowcut" not in verdict["neighbours"]
    labels = verdict["training"]["labels"]
    assert labels["float32"] == "float32" and labels["design"] == "lowcut-M7"
    trained = {row["multiplier"]: row for row in verdict["training"]["rows"]}
    assert set(trained) == {"float32", "lowcut-M7", *labels["neighbours"]}
    assert all(row["complete"] == 1 and 0 <= row["test_accuracy"] <= 1 for row in trained.values())
    assert list(out.glob("*.npz")), "the design's LUT"


def test_the_report_opens_with_the_verdict_in_numbers_and_shows_every_part(studied, capsys):
    _, out = studied
    verdict = json.loads((out / "verdict.json").read_text())
    page = (out / "report" / "index.html").read_text()
    assert "<h1>amsim study: lowcut-M7</h1>" in page
    assert page.index("<h2>Verdict</h2>") < page.index("<h2>Error statistics</h2>")
    for section in ("Properties (amsim check)", "<h2>Pareto front</h2>", "Training"):
        assert section in page
    summary = verdict["summary"]
    mean = verdict["statistics"]["truncated"]["mean_abs_re"]
    assert f"Mean |RE| {100 * mean:.2f} %" in summary
    assert "test accuracy" in summary and "in float32" in summary


def test_resume_keeps_the_check_of_an_unchanged_source(studied, capsys):
    source, out = studied
    before = (out / "check.json").stat().st_mtime_ns
    assert cli.main(["study", str(source), "--epochs", "1", "--out", str(out), "--resume"]) == 0
    assert "check: kept from the earlier run" in capsys.readouterr().out
    assert (out / "check.json").stat().st_mtime_ns == before


def test_closest_builtins_are_nearest_in_mean_error_first_with_ties_by_name():
    stats = {"mitchell": 0.0385, "at_mitchell": 0.0385, "mbm": 0.026, "exact": 0.0}
    assert closest_builtins(stats, 0.04) == ["at_mitchell", "mitchell"]
    assert closest_builtins(stats, 0.01, count=1) == ["exact"]


def test_the_summary_names_failed_properties_and_the_accuracy_difference():
    rows = [{"multiplier": "float32", "complete": 1, "test_accuracy": 0.9},
            {"multiplier": "x-M7", "complete": 1, "test_accuracy": 0.875},
            {"multiplier": "mbm-M7", "complete": 1, "test_accuracy": 0.88}]
    verdict = {"model": "x", "bits": 7,
               "check": {"holds": False, "exhaustive": True, "pairs": 65536, "properties": 5,
                         "failed": ["commutative", "max_rel_error"]},
               "statistics": {"truncated": {"mean_abs_re": 0.05, "mean_re": -0.01, "max_abs_re": 0.2}},
               "neighbours": {"mbm": 0.026},
               "pareto": {"status": "dominated", "dominated_by": "mbm"},
               "training": {"dataset": "digits", "arch": "mlp", "epochs": 5, "seeds": [0], "rows": rows,
                            "energy": [{"label": "x-M7", "relative_power": 0.5, "vs_float32": None}],
                            "labels": {"float32": "float32", "design": "x-M7", "neighbours": ["mbm-M7"]}}}
    text = summary_paragraph(verdict)
    assert "2 of 5 checked properties fail (commutative, max_rel_error" in text
    assert "Mean |RE| 5.00 %" in text and "dominated on power and mean |RE| by mbm" in text
    assert "test accuracy 87.50 % against 90.00 % in float32 (-2.50 points); mbm-M7 88.00 %" in text
    assert "declared power is 0.5 of an exact multiplier's" in text
    assert "approximate" not in text.split("declared power")[1]  # no coverage given: nothing said of it


def test_the_summary_says_when_the_network_was_only_partly_approximate():
    rows = [{"multiplier": "float32", "complete": 1, "test_accuracy": 0.9, "coverage": 0.0, "exact_layers": []},
            {"multiplier": "x-M7", "complete": 1, "test_accuracy": 0.9, "coverage": 0.25, "exact_layers": ["custom"]}]
    verdict = {"model": "x", "bits": 7,
               "check": {"holds": True, "exhaustive": True, "pairs": 65536, "properties": 5, "failed": []},
               "statistics": {"truncated": {"mean_abs_re": 0.05, "mean_re": -0.01, "max_abs_re": 0.2}},
               "neighbours": {}, "pareto": {"status": "front"},
               "training": {"dataset": "digits", "arch": "mlp", "epochs": 5, "seeds": [0], "rows": rows,
                            "energy": [], "labels": {"float32": "float32", "design": "x-M7", "neighbours": []}}}
    assert "Only 25.0 % of the network's products were approximate: custom stayed exact" in summary_paragraph(verdict)
    rows[1].update(coverage=1.0, exact_layers=[])
    assert "Only" not in summary_paragraph(verdict)


def test_a_design_that_does_not_compile_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.c"
    bad.write_text(LOWCUT.replace("return (a * b)", "return (a * b +"))
    assert cli.main(["study", str(bad), "--out", str(tmp_path / "s"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.c" in err[0] and "error" in err[0]
