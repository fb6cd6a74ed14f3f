"""``amsim check``: a multiplier's properties against exact products (docs/designs.md, "Claims").

Every built-in model keeps what its ``@amsim`` block claims; small C models written here break one
claim each, and the check names the smallest pair that breaks it, whether it went through every
pair (8 bits) or sampled them with hypothesis (16 bits) and shrank what it found.
"""

import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import amsim
from amsim import check, lut as lutmod
from amsim.check import Domain
from amsim.errors import ModelError, RangeError
from cli_run import run

BIN = Path(sys.executable).parent
FEW = 60  # hypothesis examples per sampled property: enough for these models, quick

INT_BUILTINS = ["exact_int", "mitchell", "mbm", "drum", "ilm", "alm_soa", "bam"]
FLOAT_BUILTINS = ["exact", "bf16_trunc", "bf16_rne", "at_mbm", "at_mitchell"]


def write(folder, name, body, header):
    """A C model ``name`` with an @amsim block of ``header``'s lines, and ``body``."""
    block = "".join(f" * {line}\n" for line in textwrap.dedent(header).strip().splitlines())
    path = folder / f"{name}.c"
    path.write_text(f"/* @amsim\n * name: {name}\n{block} */\n#include <amsim_model.h>\n#include <stdlib.h>\n"
                    + textwrap.dedent(body))
    return path


def result(report, name, operands=None):
    (r,) = [r for r in report.results if r.name == name and (operands is None or r.operands == operands)]
    return r


def ops(r):
    return r.counterexample.a, r.counterexample.b


# ----------------------------------------------------------------------------------------------
# The built-in models keep their claims
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INT_BUILTINS + FLOAT_BUILTINS)
def test_every_builtin_declares_what_it_is_and_how_far_it_errs(name):
    keys = {c.key for c in amsim.find_model(name).claims}
    assert "properties" in keys and "max_rel_error" in keys, keys


@pytest.mark.parametrize("name", INT_BUILTINS + FLOAT_BUILTINS)
def test_every_builtin_keeps_its_claims_on_every_pair_at_8_bits(name):
    bits = 7 if name == "at_mbm" else 8
    report = check.check(name, bits, examples=FEW)
    assert report.exhaustive
    assert report.holds, report.format()
    assert any("declared" in r.sources for r in report.results)


@pytest.mark.parametrize("name, params", [*((n, {}) for n in INT_BUILTINS + FLOAT_BUILTINS if n != "at_mbm"),
                                          ("mbm", {"t": 8}), ("drum", {"k": 3}), ("ilm", {"stages": 3}),
                                          ("bam", {"h": 4, "v": 6})])
def test_every_builtin_keeps_its_claims_on_sampled_pairs_at_16_bits(name, params):
    report = check.check(name, 16, params=params, examples=FEW, samples=1 << 16)
    assert not report.exhaustive
    assert report.holds, report.format()


@pytest.mark.parametrize("name, bits, key, published, unit", [
    ("mitchell", 8, "max_rel_error", Fraction(1, 9), 0),  # docs/metrics.md: peak error -1/9
    ("mitchell", 24, "mean_rel_error", Fraction("0.038488"), Fraction("0.000002")),  # continuous limit
    ("at_mitchell", 7, "max_rel_error", Fraction(1, 9), 0),
    ("at_mitchell", 7, "mean_rel_error", Fraction("0.038485"), Fraction("0.000005")),  # docs/metrics.md, M = 7
    ("mbm", 16, "mean_rel_error", Fraction("0.0258"), Fraction("0.0001")),  # Saadat et al. 2018
    ("mbm", 16, "bias_within", Fraction("0.0009"), Fraction("0.0001")),  # their mean error, -0.09 %
])
def test_the_published_figures_are_claimed_rounded_up_at_their_last_digit(name, bits, key, published, unit):
    claimed = [c.value for c in amsim.find_model(name).claims_for(bits) if c.key == key]
    assert len(claimed) == 1 and published <= claimed[0] <= published + unit


#: The 8-bit configurations whose blocks state a mean absolute error and an error probability.
MAE_AND_EP_CLAIMS = [("mul8s_exact", {}), ("mul8s_log", {}), *(("mul8s_trunc", {"k": k}) for k in range(16)),
                     *(("mul8s_bam", {"h": h, "v": v}) for h, v in ((0, 0), (2, 6), (1, 4), (2, 8), (4, 8))),
                     ("exact_int", {}), ("bam", {"h": 0, "v": 0}), ("mitchell", {})]


def every_product(name, **params):
    """Every 8-bit product of ``name``, (approximate, exact) as int64 arrays."""
    model = amsim.find_model(name)
    operands = np.arange(-128, 128) if model.signed else np.arange(256)
    a, b = np.meshgrid(operands, operands, indexing="ij")
    return np.asarray(model.compile(8, params).evaluate(a, b), np.int64), a.astype(np.int64) * b


@pytest.mark.parametrize("name, params", MAE_AND_EP_CLAIMS)
def test_the_8_bit_circuits_claim_the_mae_and_error_probability_they_attain(name, params):
    """The error probability is the measured one; the MAE its ceiling at the fourth significant digit."""
    claims = {c.key: c.value for c in amsim.find_model(name).claims_for(8, params)}
    approx, exact = every_product(name, **params)
    assert claims["error_probability"] == Fraction(int(np.count_nonzero(approx != exact)), approx.size)
    mae = Fraction(int(np.abs(approx - exact).sum()), approx.size)
    assert mae <= claims["mean_abs_error"] <= mae * (1 + Fraction(1, 1000))


def test_a_bound_is_compared_exactly_mitchell_attains_one_ninth():
    holds = check.check("mitchell", 8, max_rel_error="1/9", declared=False)
    fails = check.check("mitchell", 8, max_rel_error="0.11111", declared=False)
    assert result(holds, "max_rel_error").status == "holds"
    assert result(holds, "max_rel_error").observed == pytest.approx(1 / 9)
    r = result(fails, "max_rel_error")
    assert r.status == "fails" and ops(r) == (3, 3)  # 3 = 2^1 (1 + 1/2): x1 = x2 = 1/2
    assert r.counterexample.relative_error == pytest.approx(-1 / 9)


# ----------------------------------------------------------------------------------------------
# Models that break a claim: the smallest counterexample
# ----------------------------------------------------------------------------------------------

NOT_COMMUTATIVE = ("uint64_t lopsided(uint64_t a, uint64_t b) { return (a & ~1ull) * b; }",
                   "kind: int\nbits: 2..16\nproperties: commutative, zero")


@pytest.fixture
def lopsided(tmp_path):
    return write(tmp_path, "lopsided", *NOT_COMMUTATIVE)


def test_a_model_that_claims_commutative_but_is_not_fails_at_the_first_pair_in_order(lopsided):
    report = check.check(lopsided, 8)
    r = result(report, "commutative")
    assert (r.status, r.method, r.sources) == ("fails", "exhaustive", ["declared"])
    assert ops(r) == (1, 2)  # (0, *) and (1, 0), (1, 1) agree; 1 x 2 gives 0, 2 x 1 gives 2
    assert (r.counterexample.exact, r.counterexample.approximate) == (2, 0)
    assert "b x a gives 2" in r.counterexample.note
    assert result(report, "zero").status == "holds" and not report.holds


def test_sampling_finds_the_same_failure_and_shrinks_it(lopsided):
    r = result(check.check(lopsided, 16, examples=FEW), "commutative")
    assert (r.status, r.method, r.examples) == ("fails", "sampled", FEW)
    assert max(ops(r)) <= 3


def test_sampling_is_deterministic_given_the_seed(lopsided):
    runs = [check.check(lopsided, 16, examples=FEW, seed=7, max_rel_error="0.5").to_json() for _ in range(2)]
    assert runs[0] == runs[1]


MITCHELL_BODY = Path(amsim.find_model("mitchell").path).read_text().split("*/", 1)[1].replace(
    "mitchell(", "optimist(")


def test_a_model_claiming_less_error_than_it_has_fails_where_it_errs_more(tmp_path):
    path = write(tmp_path, "optimist", MITCHELL_BODY, "kind: int\nbits: 2..32\nmax_rel_error: 1/10")
    r = result(check.check(path, 8), "max_rel_error")
    assert r.status == "fails" and r.bound == Fraction(1, 10)
    assert ops(r) == (3, 3) and r.counterexample.relative_error == pytest.approx(-1 / 9)
    assert r.observed == pytest.approx(1 / 9)
    sampled = result(check.check(path, 24, examples=FEW), "max_rel_error")  # targeted at the worst error
    assert sampled.status == "fails" and abs(sampled.counterexample.relative_error) > 0.1


def test_a_model_whose_products_overflow_its_width_fails_in_range(tmp_path):
    path = write(tmp_path, "spill", "uint64_t spill(uint64_t a, uint64_t b) { return a > 200 && b > 100 ? "
                                     "a * b << 10 : a * b; }", "kind: int\nbits: 2..16")
    r = result(check.check(path, 8), "in-range")
    assert r.status == "fails" and ops(r) == (201, 101)
    assert r.counterexample.approximate == 201 * 101 << 10 and "outside [0, 2^16)" in r.counterexample.note
    sampled = result(check.check(path, 16, examples=FEW), "in-range")
    assert sampled.status == "fails" and sampled.counterexample.approximate >= 1 << 32


CRASHER = """\
uint64_t fragile(uint64_t a, uint64_t b)
{
    if (a == 77 && b > 40)
        abort();
    if (a >= 30000)
        *(volatile uint64_t *)0 = b;
    return a * b;
}
"""


def test_a_model_that_crashes_fails_no_crash_at_the_first_crashing_pair(tmp_path):
    report = check.check(write(tmp_path, "fragile", CRASHER, "kind: int\nbits: 2..16\nproperties: commutative"), 8)
    r = result(report, "no-crash")
    assert r.status == "fails" and ops(r) == (77, 41)
    assert "SIGABRT" in r.counterexample.note and r.counterexample.approximate is None
    assert [x.status for x in report.results if x.name != "no-crash"] == ["not checked", "not checked"]


def test_sampling_shrinks_a_crash_to_its_smallest_operands(tmp_path):
    report = check.check(write(tmp_path, "fragile", CRASHER, "kind: int\nbits: 2..16"), 16, examples=FEW)
    r = result(report, "no-crash")
    assert r.status == "fails" and ops(r) == (30000, 0) and "SIGSEGV" in r.counterexample.note


def test_a_model_that_hangs_fails_no_crash_at_the_pair_it_hangs_on(tmp_path):
    body = "uint64_t stuck(uint64_t a, uint64_t b) { volatile int x = a == 5 && b == 9; while (x) {} return a * b; }"
    r = result(check.check(write(tmp_path, "stuck", body, "kind: int\nbits: 2..16"), 6, timeout=0.5), "no-crash")
    assert r.status == "fails" and ops(r) == (5, 9) and "no answer within 0.5 s" in r.counterexample.note


#: The exact significand product, as a float model computes it with amsim_fp_mul (amsim_model.h).
EXACT_SIGNIFICANDS = """\
static double sig(uint32_t i, uint32_t j, int M)
{
    return amsim_ldexp((double)((1ull << M) + i) * ((1ull << M) + j), -2 * M);
}
"""


def test_a_float_model_that_crashes_on_large_operands_is_caught_on_float32_operands(tmp_path):
    body = EXACT_SIGNIFICANDS + """\
        float huge(float a, float b) { if (a > 1e30f) abort(); return amsim_fp_mul(a, b, AMSIM_BITS, sig); }
        """
    report = check.check(write(tmp_path, "huge", body, "kind: float\nbits: 1..23"), 7, examples=200)
    r = result(report, "no-crash")
    assert r.status == "fails" and r.counterexample.a > 1e30 and "SIGABRT" in r.counterexample.note
    assert (r.operands, r.method, r.title) == ("float32", "sampled", "no-crash (float32 operands)")


def test_a_float_model_that_ignores_the_special_values_fails_float_specials(tmp_path):
    body = EXACT_SIGNIFICANDS + """\
        float naive(float a, float b) { return a == 0.0f || b == 0.0f ? 0.0f : amsim_fp_mul(a, b, AMSIM_BITS, sig); }
        """
    report = check.check(write(tmp_path, "naive", body, "kind: float\nbits: 1..23"), 7, examples=200)
    r = result(report, "float-specials")
    assert r.status == "fails" and r.operands == "float32"
    a, b = ops(r)  # shrunk to the simplest: +0 x -0 must be -0
    assert a == b == 0 and np.signbit(a) != np.signbit(b)
    assert r.counterexample.approximate == 0 and "docs/numerics.md gives -0.0" in r.counterexample.note
    assert result(report, "float-scaling").status == "holds"


def test_a_signed_model_is_checked_for_sign_symmetry_simplest_operands_first(tmp_path):
    body = "int16_t floored(int8_t a, int8_t b) { return (int16_t)((a * b) >> 2 << 2); }"  # rounds down, not to 0
    path = write(tmp_path, "floored", body, "kind: int\nbits: 8\nsigned: yes\nproperties: sign-symmetric, zero")
    report = check.check(path, 8)
    assert Domain("int", 3, signed=True).order().tolist() == [0, 1, -1, 2, -2, 3, -3, -4]
    r = result(report, "sign-symmetric")
    assert r.status == "fails" and ops(r) == (1, 1) and "-a gives -4" in r.counterexample.note


def test_a_mantissa_lut_file_is_checked_as_a_float_subject(tmp_path):
    table = amsim.generate.mantissa_lut(amsim.find_model("mitchell"), 5, statistics=False)
    path = lutmod.save(table, tmp_path / "mitchell_m5.npz")
    report = check.check(path, max_rel_error="1/9", properties=["commutative"], examples=FEW)
    assert report.holds, report.format()
    assert {(r.name, r.operands) for r in report.results} >= {
        ("max_rel_error", "significands"), ("max_rel_error", "float32"), ("float-scaling", "float32")}
    assert "no-crash" not in {r.name for r in report.results}  # a table runs no code


# ----------------------------------------------------------------------------------------------
# Claims in the @amsim block
# ----------------------------------------------------------------------------------------------


def test_claims_apply_to_the_widths_and_parameters_their_conditions_name(tmp_path):
    path = write(tmp_path, "cond", "uint64_t cond(uint64_t a, uint64_t b) { return a * b; }", """\
        kind: int
        bits: 2..16
        param: k default=2 range=1..4 "unused"
        properties: commutative
        properties: one bits=8..16 k=2
        max_rel_error: 1/2
        max_rel_error: 0 k=1..2""")
    model = amsim.load_model(path)

    def claimed(bits, k):
        return {(c.key, c.value if c.key != "properties" else c.value[0]) for c in model.claims_for(bits, {"k": k})}

    assert claimed(8, 2) == {("properties", "commutative"), ("properties", "one"), ("max_rel_error", Fraction(1, 2)),
                             ("max_rel_error", 0)}
    assert claimed(4, 3) == {("properties", "commutative"), ("max_rel_error", Fraction(1, 2))}
    report = check.check(path, 8)
    assert [r.title for r in report.results if "declared" in r.sources] == ["commutative", "one",
                                                                           "max_rel_error <= 0"]


@pytest.mark.parametrize("line, message", [
    ("properties: commutative k=2", "names neither the width nor a parameter"),
    ("properties: commutative bits=8..x", "NAME=VALUE or NAME=LO..HI"),
    ("max_rel_error: lots", "must be a number >= 0"),
    ("max_rel_error: -0.1", "must be >= 0"),
    ("max_rel_error: 0.1 0.2", "takes one bound"),
    ("properties:", "names no property"),
    ("mean_abs_error: -0.5", "mean_abs_error must be >= 0"),
    ("error_probability: -1/4", "error_probability must be >= 0"),
    ("error_probability: 1.5", "error_probability must be <= 1"),
    ("error_probability: 65537/65536", "error_probability must be <= 1"),
])
def test_a_malformed_claim_is_refused_with_its_line(tmp_path, line, message):
    path = write(tmp_path, "bad", "uint64_t bad(uint64_t a, uint64_t b) { return a * b; }", f"kind: int\n{line}")
    with pytest.raises(ModelError, match=message) as info:
        amsim.load_model(path)
    assert f"{path}:" in str(info.value)


def test_an_unknown_or_inapplicable_claimed_property_is_refused_with_its_line(tmp_path):
    unknown = write(tmp_path, "typo", "uint64_t typo(uint64_t a, uint64_t b) { return a * b; }",
                    "kind: int\nproperties: comutative")
    with pytest.raises(ModelError, match=r"typo.c:\d+: unknown property 'comutative'; the properties are: no-crash"):
        check.check(unknown, 8)
    unsigned = write(tmp_path, "uns", "uint64_t uns(uint64_t a, uint64_t b) { return a * b; }",
                     "kind: int\nproperties: sign-symmetric")
    with pytest.raises(ModelError, match="'sign-symmetric' does not apply to uns"):
        check.check(unsigned, 8)


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


#: Below every figure by less than float64 can tell: only an exact comparison fails it.
HAIR = Fraction(1, 1 << 80)


def test_mae_and_error_probability_hold_at_the_figures_attained_and_fail_a_hair_below():
    approx, exact = every_product("mul8s_trunc", k=4)
    mae = Fraction(int(np.abs(approx - exact).sum()), approx.size)  # 12.25
    ep = Fraction(int(np.count_nonzero(approx != exact)), approx.size)  # 13/16
    at = check.check("mul8s_trunc", 8, params={"k": 4}, declared=False, mean_abs_error=mae, error_probability=ep)
    below = check.check("mul8s_trunc", 8, params={"k": 4}, declared=False, mean_abs_error=mae - HAIR,
                        error_probability=ep - HAIR)
    for name, value in (("mean_abs_error", mae), ("error_probability", ep)):
        holds, fails = result(at, name), result(below, name)
        assert (holds.status, holds.method, holds.sources) == ("holds", "exhaustive", ["requested"])
        assert holds.observed == float(value) and holds.pairs == 1 << 16 and holds.standard_error is None
        assert fails.status == "fails" and fails.observed == float(value)


def test_a_mantissa_subjects_mae_is_in_significand_units_and_compared_exactly(tmp_path):
    table = amsim.generate.mantissa_lut(amsim.find_model("mitchell"), 4, statistics=False)
    path = lutmod.save(table, tmp_path / "mitchell_m4.npz")
    n = 1 << 4
    errors = [abs(Fraction(float(table.table[i, j])) - Fraction((n + i) * (n + j), n * n))
              for i in range(n) for j in range(n)]
    mae, ep = sum(errors) / len(errors), Fraction(sum(e != 0 for e in errors), len(errors))
    at = check.check(path, mean_abs_error=mae, error_probability=ep, examples=FEW)
    below = check.check(path, mean_abs_error=mae - HAIR, error_probability=ep - HAIR, examples=FEW)
    for name in ("mean_abs_error", "error_probability"):
        assert result(at, name).status == "holds" and result(below, name).status == "fails"
    assert result(at, "mean_abs_error").observed == float(mae)


def test_mae_and_error_probability_are_sampled_with_a_standard_error_above_the_exhaustive_widths():
    # Truncating the columns below 6 depends on the low six bits of each operand only: at 16 bits the
    # error probability is the 8-bit one, and the MAE 1/4 sum_{c<6} (c + 1) 2^c = 80.25 (docs/designs.md).
    approx, exact = every_product("bam", h=0, v=6)
    ep = Fraction(int(np.count_nonzero(approx != exact)), approx.size)
    truncated = {"params": {"h": 0, "v": 6}, "declared": False, "samples": 1 << 16, "examples": FEW}
    report = check.check("bam", 16, mean_abs_error="80.25", error_probability=ep, **truncated)
    assert report.holds, report.format()
    for name, true in (("mean_abs_error", 80.25), ("error_probability", float(ep))):
        r = result(report, name)
        assert (r.method, r.pairs) == ("sampled", 1 << 16) and r.standard_error > 0
        assert abs(r.observed - true) <= check.STANDARD_ERRORS * r.standard_error
    tight = check.check("bam", 16, mean_abs_error=80.25 - 10 * result(report, "mean_abs_error").standard_error,
                        error_probability=float(ep) - 10 * result(report, "error_probability").standard_error,
                        **truncated)
    assert [r.name for r in tight.failures] == ["mean_abs_error", "error_probability"]


def test_statistics_are_exact_over_every_pair_and_carry_a_standard_error_when_sampled():
    exhaustive = result(check.check("mitchell", 8, mean_rel_error="0.04", declared=False), "mean_rel_error")
    assert exhaustive.standard_error is None and exhaustive.pairs == 1 << 16
    sampled = result(check.check("mitchell", 20, mean_rel_error="0.04", declared=False, samples=1 << 16),
                     "mean_rel_error")
    assert sampled.method == "sampled" and sampled.pairs == 1 << 16
    assert sampled.observed == pytest.approx(0.0385, abs=0.001) and 0 < sampled.standard_error < 1e-3
    tight = result(check.check("mitchell", 20, mean_rel_error="0.038", declared=False, samples=1 << 16),
                   "mean_rel_error")
    assert tight.status == "fails"  # 0.0385 is many standard errors above 0.038


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


def test_check_exits_0_when_every_property_holds_and_1_when_one_fails(capsys, lopsided):
    rc, out, _ = run(["check", "mitchell", "--bits", "8"], capsys)
    assert rc == 0 and "exhaustive over all 65536 pairs" in out and out.rstrip().endswith("all properties hold")
    rc, out, _ = run(["check", str(lopsided), "--bits", "8"], capsys)
    assert rc == 1 and "FAILS  commutative" in out and "a = 1, b = 2: exact 2, approximate 0" in out


def test_check_takes_the_mae_and_error_probability_from_the_command_line(capsys):
    trunc = ["check", "mul8s_trunc", "--bits", "8", "--param", "k=4"]
    rc, out, _ = run([*trunc, "--mean-abs-error", "12.25", "--error-probability", "13/16", "--json"], capsys)
    by_name = {r["property"]: r for r in json.loads(out)["results"]}
    assert rc == 0
    assert by_name["mean_abs_error"]["sources"] == ["declared", "requested"]  # the block claims 12.25 too
    assert (by_name["error_probability"]["bound"], by_name["error_probability"]["observed"]) == ("0.8125", 0.8125)
    rc, out, _ = run([*trunc, "--mean-abs-error", "12.24", "--error-probability", "0.8124"], capsys)
    assert rc == 1 and "FAILS  mean_abs_error <= 12.24" in out and "FAILS  error_probability <= 0.8124" in out


def test_check_json_reports_each_property_and_its_counterexample(capsys, lopsided):
    rc, out, _ = run(["check", str(lopsided), "--bits", "16", "--examples", str(FEW), "--seed", "3",
                      "--max-rel-error", "1/2", "--json"], capsys)
    report = json.loads(out)
    assert rc == 1 and report["holds"] is False
    assert (report["exhaustive"], report["examples"], report["seed"]) == (False, FEW, 3)
    assert report["subject"]["model"] == "lopsided" and report["subject"]["bits"] == 16
    by_name = {r["property"]: r for r in report["results"]}
    assert set(by_name) == {"no-crash", "in-range", "commutative", "zero", "max_rel_error"}
    bound = by_name["max_rel_error"]
    assert (bound["bound"], bound["bound_value"], bound["sources"]) == ("0.5", 0.5, ["requested"])
    counter = by_name["commutative"]["counterexample"]
    assert set(counter) == {"a", "b", "exact", "approximate", "error", "relative_error", "note"}
    assert by_name["commutative"]["definition"] == "P'(a, b) = P'(b, a)"
    assert counter["error"] == counter["approximate"] - counter["exact"]


@pytest.mark.parametrize("argv, message", [
    (["mitchell", "--bits", "8", "--property", "comutative"], "unknown property 'comutative'; the properties "
                                                               "are: no-crash, in-range, commutative"),
    (["mitchell", "--bits", "8", "--max-rel-error", "-0.1"], "must be >= 0"),
    (["mitchell", "--bits", "8", "--bias-within", "nan"], "must be a number >= 0"),
    (["mitchell", "--bits", "8", "--mean-abs-error", "-1"], "must be >= 0"),
    (["mitchell", "--bits", "8", "--error-probability", "1.5"], "must be <= 1"),
    (["mitchell"], "say which width"),
    (["mitchell", "--bits", "8", "--property", "sign-symmetric"], "does not apply to mitchell"),
    (["no_such_model", "--bits", "8"], "unknown model 'no_such_model'"),
    (["missing.npz"], "no such LUT file"),
    (["mitchell", "--bits", "8", "--examples", "0"], "positive integer"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, message):
    rc, out, err = run(["check", *argv], capsys)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_a_model_that_does_not_compile_is_a_usage_error_naming_its_line(capsys, tmp_path):
    path = write(tmp_path, "broken", "uint64_t broken(uint64_t a, uint64_t b) { return a * ; }", "kind: int")
    rc, _, err = run(["check", str(path), "--bits", "8"], capsys)
    assert rc == 2 and f"{path}:" in err and len(err.strip().splitlines()) == 1


def test_check_as_a_process_writes_nothing_where_it_runs(tmp_path):
    proc = subprocess.run([str(BIN / "amsim"), "check", "mitchell", "--bits", "14", "--examples", "20",
                           "--samples", "1000"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []  # no .hypothesis folder: sampled without an example database


def test_bounds_and_arguments_are_checked_in_the_api():
    with pytest.raises(RangeError, match="max_rel_error must be >= 0"):
        check.check("mitchell", 8, max_rel_error=-1)
    with pytest.raises(RangeError, match="must be a number"):
        check.check("mitchell", 8, max_abs_error=float("nan"))
    with pytest.raises(RangeError, match="error_probability must be <= 1"):
        check.check("mitchell", 8, error_probability=2)
    with pytest.raises(RangeError, match="mean_abs_error must be >= 0"):
        check.check("mitchell", 8, mean_abs_error="-1/2")
    with pytest.raises(RangeError, match="examples"):
        check.check("mitchell", 8, examples=0)
