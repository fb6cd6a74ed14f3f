"""amsim's own 8-bit integer circuits, and the figures EvoApproxLib circuits declare in their headers.

Specifications:

* every 8-bit circuit of amsim's own keeps the claims of its ``@amsim`` block on every operand pair
  (``amsim check``), and the error figures it declares are the ones amsim measures, attained, not
  loose bounds; a circuit whose claim is wrong fails the check;
* the unsigned 8-bit baseline is ``exact_int`` at 8 bits, the signed one ``mul8s_exact``;
* an EvoApproxLib file's header figures (MAE, WCE, MRE, EP, PDK45 power, area, delay) are read,
  shown by ``amsim stats`` and ``amsim models`` beside amsim's exhaustive figures, and a header whose
  MAE or WCE disagrees with them beyond its rounding gives a warning naming the file and both values;
* the header's power prices the circuit's multiplications, relative to EvoApproxLib's exact circuit.

The EvoApproxLib-style files are written here, each a tiny circuit of our own with the figures
amsim computes for it; nothing of the library is copied.
"""

import json
from fractions import Fraction

import numpy as np
import pytest

import amsim
from amsim import check, stats
from amsim.experiments.energy import relative_power
from amsim.experiments.multipliers import parse_multiplier
from amsim.models import EVOAPPROX_EXACT_PDK45, load_model
from cli_run import run

#: amsim's own 8-bit circuits, each with the parameter sets its block makes claims for.
CIRCUITS = [
    ("mul8s_exact", {}),
    ("mul8s_log", {}),
    *(("mul8s_trunc", {"k": k}) for k in (0, 1, 4, 6, 8, 12, 15)),
    *(("mul8s_bam", p) for p in ({"h": 2, "v": 6}, {"h": 0, "v": 0}, {"h": 1, "v": 4}, {"h": 4, "v": 8})),
]

SIGNED = np.arange(-128, 128)
UNSIGNED = np.arange(256)


def products(name, operands, **params):
    """Every product of ``name`` at 8 bits: (approximate, exact), indexed [a, b]."""
    a, b = np.meshgrid(operands, operands, indexing="ij")
    return amsim.find_model(name).compile(8, params).evaluate(a, b), a.astype(np.int64) * b


def claimed(model, key, params):
    """The tightest bound of ``key`` the model claims for ``params`` at 8 bits."""
    bounds = [c.value for c in model.claims_for(8, params) if c.key == key]
    assert bounds, f"{model.name} {params} claims no {key}"
    return min(bounds)


# ----------------------------------------------------------------------------------------------
# amsim's own circuits
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, params", CIRCUITS)
def test_circuit_keeps_every_claim_on_every_pair(name, params):
    report = check.check(name, 8, params=params)
    assert report.exhaustive
    assert report.holds, report.format()
    assert any("declared" in r.sources for r in report.results if r.name == "max_abs_error")


@pytest.mark.parametrize("name, params", CIRCUITS)
def test_circuit_declares_the_error_it_attains(name, params):
    """The declared WCE and peak relative error are the measured ones, the mean one its 4-digit ceiling."""
    model = amsim.find_model(name)
    approx, exact = products(name, SIGNED, **params)
    error = np.abs(approx - exact)
    assert claimed(model, "max_abs_error", params) == error.max()
    nonzero = exact != 0
    worst = np.argmax(error[nonzero] / np.abs(exact[nonzero]))
    assert claimed(model, "max_rel_error", params) == Fraction(int(error[nonzero][worst]),
                                                               int(abs(exact[nonzero][worst])))
    mean_re = stats.int_stats(model.compile(8, params))["mean_abs_re"]
    assert mean_re <= claimed(model, "mean_rel_error", params) <= mean_re * (1 + 1e-3)


def test_unsigned_exact_baseline_is_exact_int_at_8_bits():
    approx, exact = products("exact_int", UNSIGNED)
    assert np.array_equal(approx, exact)


def test_signed_exact_baseline_multiplies_every_pair_exactly():
    approx, exact = products("mul8s_exact", SIGNED)
    assert np.array_equal(approx, exact)
    assert approx[0, 0] == 1 << 14  # -128 x -128, the one product that needs the 16th bit


@pytest.mark.parametrize("k", range(16))
def test_truncated_circuit_is_the_broken_array_broken_at_columns_only(k):
    trunc, _ = products("mul8s_trunc", SIGNED, k=k)
    bam, _ = products("mul8s_bam", SIGNED, h=0, v=k)
    assert np.array_equal(trunc, bam)


def test_truncation_drops_exactly_the_low_columns_of_positive_weight():
    """Below column 7 every partial-product bit has positive weight: the error is minus their sum."""
    a, b = np.meshgrid(SIGNED, SIGNED, indexing="ij")
    ua, ub = a & 0xFF, b & 0xFF
    dropped = sum(((ua >> i) & 1) * ((ub >> j) & 1) << (i + j) for i in range(8) for j in range(8) if i + j < 5)
    approx, exact = products("mul8s_trunc", SIGNED, k=5)
    assert np.array_equal(approx, exact - dropped)


def test_log_circuit_is_mitchell_on_the_magnitudes():
    approx, exact = products("mul8s_log", SIGNED)
    mitchell = amsim.find_model("mitchell").compile(9)  # magnitudes reach 128: 9-bit unsigned operands
    magnitude = mitchell.evaluate(np.abs(SIGNED)[:, None], np.abs(SIGNED)[None, :])
    assert np.array_equal(approx, np.sign(exact) * magnitude)


def test_a_wrong_claim_fails_the_check(tmp_path):
    source = amsim.find_model("mul8s_log").path.read_text()
    assert " * max_abs_error: 1024\n" in source
    wrong = tmp_path / "mul8s_log.c"
    wrong.write_text(source.replace(" * max_abs_error: 1024\n", " * max_abs_error: 1023\n"))
    report = check.check(str(wrong), 8)
    failed = [r for r in report.results if r.status == "fails"]
    assert [r.name for r in failed] == ["max_abs_error"]
    assert abs(failed[0].counterexample.error) == 1024


# ----------------------------------------------------------------------------------------------
# EvoApproxLib header figures
# ----------------------------------------------------------------------------------------------

#: A circuit in EvoApproxLib's file format: the product with its 3 low bits cleared. Over all 2^16
#: pairs the error is minus the product's low 3 bits: MAE 2.75, WCE 7, EP 68.75 %; MAE% is MAE / 2^16.
EVO_FORMAT = """\
/***
* A test circuit written in EvoApproxLib's file format (not a circuit of the library).
***/
// MAE% = 0.0042 %
// MAE = {mae}
// WCE% = 0.011 %
// WCE = {wce}
// EP% = 68.75 %
// MRE% = 0.17 %
// PDK45_PWR = 0.2 mW
// PDK45_AREA = 300.0 um2
// PDK45_DELAY = 1.00 ns
#include <stdint.h>
#include <stdlib.h>

uint16_t mul8u_LOW3(uint8_t A, uint8_t B)
{{
  return (uint16_t)((A * B) & ~7u);
}}
"""


@pytest.fixture
def evo_file(tmp_path):
    def write(mae="2.75", wce="7"):
        path = tmp_path / "mul8u_LOW3.c"
        path.write_text(EVO_FORMAT.format(mae=mae, wce=wce))
        return path
    return write


def test_header_figures_are_read_with_their_rounding(evo_file):
    model = load_model(evo_file(mae="3", wce="7"))
    assert model.evoapprox["MAE"] == 3.0 and model.evoapprox["EP%"] == 68.75
    assert model.evoapprox_rounding["MAE"] == 0.5  # printed to units: the true MAE is within 0.5
    assert model.evoapprox_rounding["MAE%"] == 0.00005


def test_stats_shows_the_header_beside_amsims_exhaustive_figures(evo_file, capsys):
    rc, out, err = run(["stats", "--model", str(evo_file()), "--bits", "8"], capsys)
    assert rc == 0 and "warning" not in err
    assert "MAE=2.75 (amsim 2.75)" in out and "WCE=7 (amsim 7)" in out and "EP%=68.75" in out


def test_stats_json_compares_the_header(evo_file, capsys):
    rc, out, _ = run(["stats", "--model", str(evo_file()), "--bits", "8", "--json"], capsys)
    header = json.loads(out)["header"]
    assert header["compared"]["MAE"] == {"header": 2.75, "amsim": 2.75, "agrees": True}
    assert header["compared"]["WCE"]["agrees"] and header["mismatches"] == []
    assert header["figures"]["PDK45_PWR"] == 0.2


def test_header_rounding_is_allowed(evo_file, capsys):
    """A header printing MAE to units says 3 for 2.75: within its rounding, so no warning."""
    _, _, err = run(["stats", "--model", str(evo_file(mae="3")), "--bits", "8"], capsys)
    assert "warning" not in err


@pytest.mark.parametrize("mae, wce, key, declared, measured", [
    ("4", "7", "MAE", "4", "2.75"),
    ("2.75", "8", "WCE", "8", "7"),
])
def test_a_header_that_disagrees_gives_a_warning_naming_the_file_and_both_values(
        evo_file, capsys, mae, wce, key, declared, measured):
    path = evo_file(mae=mae, wce=wce)
    rc, out, err = run(["stats", "--model", str(path), "--bits", "8"], capsys)
    assert rc == 0  # a warning, not an error: the statistics are still amsim's own
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    assert str(path) in warning and "is not what it says" in warning
    assert f"{key} = {declared}," in warning and f"measures {measured} " in warning
    assert "MISMATCH" in out


def test_models_lists_the_header_figures(evo_file, capsys):
    path = evo_file()
    _, out, _ = run(["models", "--models-dir", str(path.parent)], capsys)
    assert "header of mul8u_LOW3 (EvoApproxLib): MAE%=0.0042  MAE=2.75  WCE%=0.011  WCE=7" in out
    _, out, _ = run(["models", "--models-dir", str(path.parent), "--json"], capsys)
    (entry,) = [m for m in json.loads(out) if m["name"] == "mul8u_LOW3"]
    assert entry["header"]["WCE"] == 7.0


def test_header_power_is_relative_to_evoapproxlibs_exact_circuit(evo_file):
    model = load_model(evo_file())
    _exact, power_mw, area_um2, delay_ns = EVOAPPROX_EXACT_PDK45[(8, False)]
    cost = model.cost_for(8)
    assert cost.power == pytest.approx(0.2 / power_mw) and cost.area == pytest.approx(300.0 / area_um2)
    assert cost.delay == pytest.approx(1.0 / delay_ns)
    assert cost.absolute == {"power_mw": 0.2, "area_um2": 300.0, "delay_ns": 1.0}


def test_header_power_prices_the_circuits_multiplications(evo_file):
    """Lifted to 7-bit mantissas the circuit is the 8-bit significand multiplier its header prices."""
    spec = parse_multiplier(f"{evo_file()}:7")
    figure = relative_power(spec)
    assert figure.known and figure.power == pytest.approx(0.2 / EVOAPPROX_EXACT_PDK45[(8, False)][1])
    assert "EvoApproxLib" in figure.source


def test_a_header_of_a_width_without_an_exact_reference_keeps_absolute_figures_only(tmp_path):
    path = tmp_path / "mul6u_T.c"
    path.write_text("// PDK45_PWR = 0.05 mW\n#include <stdint.h>\n"
                    "uint16_t mul6u_T(uint8_t A, uint8_t B) { return A * B; }\n")
    (cost,) = load_model(path).costs
    assert cost.power is None and cost.absolute == {"power_mw": 0.05}


def test_report_shows_the_header_beside_amsims_figures_and_warns_on_a_mismatch(evo_file, tmp_path, capsys):
    path = evo_file(mae="4")
    out = tmp_path / "report"
    rc, _, err = run(["report", "--bits", "7", "--model", str(path), "--samples", "2000", "--out", str(out)], capsys)
    assert rc == 0
    (entry,) = json.loads((out / "report.json").read_text(encoding="utf-8"))["models"]
    assert entry["header"]["compared"]["WCE"] == {"header": 7.0, "amsim": 7.0, "agrees": True}
    assert entry["header"]["compared"]["MAE"]["agrees"] is False
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "MAE=4 (amsim 2.75, MISMATCH)" in page and "is not what it says" in page
    assert f"{path} is not what it says" in err
    assert entry["cost"]["power"] == pytest.approx(0.2 / EVOAPPROX_EXACT_PDK45[(8, False)][1])
