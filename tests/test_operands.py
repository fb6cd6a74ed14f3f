"""Operand-aware statistics (amsim.operands): uniform weights reproduce the plain statistics, weighted
statistics match a brute-force numpy computation over the operand pairs, and the dot-product error
model agrees between its analytic form and its Monte Carlo estimate."""

import functools
import json
import math
import re

import numpy as np
import pytest

import amsim
from amsim import cli, generate, operands, stats
from amsim.operands import OperandDistribution, OperandError

SAMPLES = 20000


@functools.lru_cache(maxsize=None)
def built(name, m, **params):
    return generate.mantissa_lut(amsim.find_model(name), m, params or None, samples=SAMPLES, seed=1)


def assert_same_stats(got, want, rel=1e-12):
    assert list(got) == list(stats.METRIC_KEYS)
    for key in stats.METRIC_KEYS:
        a, b = got[key], want[key]
        if isinstance(b, float):
            assert a == pytest.approx(b, rel=rel, abs=1e-15), key
        else:
            assert a == b, key


# ---------------------------------------------------------------------------------------------
# Uniform weights are the plain statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,m,params", [("mitchell", 5, {}), ("mbm", 6, {}), ("drum", 6, {"k": 4}),
                                           ("bf16_trunc", 7, {}), ("at_mbm", 5, {}), ("exact", 5, {})])
def test_uniform_weights_equal_mantissa_stats(name, m, params):
    lut = built(name, m, **params)
    plain = stats.mantissa_stats(m, table=lut.table)
    assert_same_stats(operands.weighted_stats(m, lut.table, OperandDistribution.uniform(m)), plain)
    # any constant weight is uniform too; pairs default to the grid size
    assert_same_stats(operands.weighted_stats(m, lut.table, np.full((1 << m, 1 << m), 0.25)), plain)
    assert plain == lut.stats["truncated"]


def test_weighted_stats_returns_exactly_the_metric_keys_and_is_not_exhaustive_for_samples():
    lut = built("mitchell", 5)
    w = np.zeros((32, 32))
    w[3, 4], w[10, 20] = 2.0, 1.0
    result = operands.weighted_stats(5, lut.table, w)
    assert tuple(result) == stats.METRIC_KEYS
    assert result["exhaustive"] is False and result["pairs"] == 2
    re_ = operands.relative_error_grid(lut.table, 5)
    assert result["mean_re"] == pytest.approx((2 * re_[3, 4] + re_[10, 20]) / 3)
    assert result["min_re"] == min(re_[3, 4], re_[10, 20])
    assert json.dumps(result)  # JSON-ready


def test_relative_error_grid_follows_its_definition():
    lut = built("mitchell", 5)
    i, j = 7, 19
    expected = float(lut.table[i, j]) / ((1 + i / 32) * (1 + j / 32)) - 1
    assert operands.relative_error_grid(lut.table, 5)[i, j] == pytest.approx(expected, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# Brute force over the operand pairs
# ---------------------------------------------------------------------------------------------


def special_samples(rng, n):
    """Float32 samples with every kind of operand: normal (both signs, many binades), zeros, subnormals,
    infinities, NaN."""
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-20, 20, n))).astype(np.float32)
    x[::17] = 0.0
    x[1::23] = -0.0
    x[2::29] = np.float32(1e-40)  # subnormal
    x[3::31] = np.inf
    x[4::37] = np.nan
    return x


def brute_force(table, m, pairs_a, pairs_b, rounding="truncate"):
    """The metrics over explicit operand pairs, from first principles (no amsim conversion code)."""
    a = np.asarray(pairs_a, np.float32).astype(np.float64)
    b = np.asarray(pairs_b, np.float32).astype(np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & (np.abs(a) >= 2.0 ** -126) & (np.abs(b) >= 2.0 ** -126)
    a, b = np.abs(a[ok]), np.abs(b[ok])

    def index(x):
        sig = x / np.exp2(np.floor(np.log2(x)))  # in [1, 2), exact for float32 inputs
        scaled = sig * 2 ** m
        kept = np.floor(scaled) if rounding == "truncate" else np.rint(scaled)  # rint: ties to even
        kept = np.where(kept == 2 ** (m + 1), 2 ** m, kept)  # an rne carry: significand 2 = 1.0 x 2
        return (kept - 2 ** m).astype(np.int64)

    i, j = index(a), index(b)
    p = (1 + i / 2 ** m) * (1 + j / 2 ** m)
    e = table[i, j].astype(np.float64) - p
    re_ = e / p
    return {"pairs": len(p), "mean_re": re_.mean(), "mean_abs_re": np.abs(re_).mean(),
            "max_abs_re": np.abs(re_).max(), "min_re": re_.min(), "max_re": re_.max(), "std_re": re_.std(),
            "error_rate": np.mean(e != 0), "mean_error": e.mean(), "mae": np.abs(e).mean(),
            "wce": np.abs(e).max(), "mse": np.mean(e * e),
            "nmed": np.abs(e).mean() / (2 - 2.0 ** -m) ** 2}


def compare(result, expected):
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key


@pytest.mark.parametrize("name,rounding", [("mitchell", "truncate"), ("mbm", "truncate"), ("drum", "rne")])
def test_paired_samples_match_brute_force(name, rounding):
    m = 5
    lut = built(name, m)
    rng = np.random.default_rng(7)
    a, b = special_samples(rng, 3000), special_samples(rng, 3000)
    if rounding == "rne":  # values that round up, carrying into the exponent
        a[5:50] = np.float32(1.999999)
    dist = OperandDistribution.from_pairs(a, b, m, rounding)
    result = operands.weighted_stats(m, lut.table, dist)
    expected = brute_force(lut.table, m, a, b, rounding)
    compare(result, expected)
    assert result["pairs"] == expected["pairs"] == dist.pairs
    assert result["exhaustive"] is False
    # exclusions are counted, per operand and per pair
    assert dist.a["samples"] == 3000
    assert dist.a["used"] + dist.a["zero"] + dist.a["subnormal"] + dist.a["inf"] + dist.a["nan"] == 3000
    assert dist.a["zero"] == np.count_nonzero(a == 0)
    assert dist.a["subnormal"] == np.count_nonzero((a != 0) & (np.abs(a) < 2.0 ** -126))
    assert dist.a["inf"] == np.count_nonzero(np.isinf(a)) and dist.a["nan"] == np.count_nonzero(np.isnan(a))
    assert dist.pairs_excluded == 3000 - dist.pairs


def test_independent_samples_match_brute_force_over_every_cross_pair():
    m = 5
    lut = built("mbm", m)
    rng = np.random.default_rng(3)
    acts = np.maximum(rng.standard_normal(70), 0).astype(np.float32)  # ReLU: about half are zero
    weights = (rng.standard_normal(45) * 0.1).astype(np.float32)
    dist = OperandDistribution.from_independent(acts, weights, m)
    result = operands.weighted_stats(m, lut.table, dist)
    aa, bb = np.meshgrid(acts, weights, indexing="ij")
    expected = brute_force(lut.table, m, aa.ravel(), bb.ravel())
    compare(result, expected)
    assert result["pairs"] == dist.a["used"] * dist.b["used"] == expected["pairs"]
    assert dist.a["zero"] == np.count_nonzero(acts == 0)


def test_operand_stats_bundle():
    lut = built("mitchell", 5)
    rng = np.random.default_rng(0)
    dist = OperandDistribution.from_pairs(rng.random(500) + 0.5, rng.random(500) + 0.5, 5)
    result = operands.operand_stats(5, lut.table, dist, dot_length=16, trials=200)
    assert result["weighting"] == "operands" and result["operands"]["mode"] == "paired"
    assert result["dot_product"]["length"] == 16
    assert json.dumps(result)


# ---------------------------------------------------------------------------------------------
# Loading operand files
# ---------------------------------------------------------------------------------------------


def test_load_operands_layouts(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(400).astype(np.float32), rng.standard_normal(400).astype(np.float32)
    np.savez(tmp_path / "paired.npz", a=a, b=b)
    np.savez(tmp_path / "layer.npz", activations=a[:100].reshape(10, 10), weights=b[:30])
    paired = operands.load_operands(tmp_path / "paired.npz", 5)
    assert paired.mode == "paired" and paired.pairs == 400
    assert np.array_equal(paired.weights, OperandDistribution.from_pairs(a, b, 5).weights)
    layer = operands.load_operands(tmp_path / "layer.npz", 5)
    assert layer.mode == "independent" and layer.pairs == 100 * 30
    assert np.array_equal(layer.weights, OperandDistribution.from_independent(a[:100], b[:30], 5).weights)
    forced = operands.load_operands(tmp_path / "paired.npz", 5, independent=True)
    assert forced.mode == "independent" and forced.pairs == 400 * 400


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.ones(3)}, "expected arrays 'a' and 'b'"),
    ({"a": np.ones(3), "b": np.ones(4)}, "as many A samples as B samples"),
    ({"a": np.zeros(3), "b": np.ones(3)}, "no pair of normal"),
    ({"activations": np.ones(3), "weights": np.zeros(2)}, "operand B (weights) has no normal"),
    ({"a": np.ones(2), "b": np.ones(2), "activations": np.ones(2), "weights": np.ones(2)}, "keep one layout"),
])
def test_load_operands_refuses_bad_files(tmp_path, arrays, message):
    path = tmp_path / "ops.npz"
    np.savez(path, **arrays)
    with pytest.raises(OperandError, match=re.escape(message)):
        operands.load_operands(path, 5)


def test_load_operands_missing_or_unreadable_file(tmp_path):
    with pytest.raises(OperandError, match="no such operand file"):
        operands.load_operands(tmp_path / "nope.npz", 5)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(OperandError, match="cannot read"):
        operands.load_operands(tmp_path / "junk.npz", 5)


def test_bad_weights_are_refused():
    lut = built("mitchell", 5)
    with pytest.raises(OperandError, match="non-negative"):
        operands.weighted_stats(5, lut.table, -np.ones((32, 32)))
    with pytest.raises(OperandError, match="all zero"):
        operands.weighted_stats(5, lut.table, np.zeros((32, 32)))
    with pytest.raises(OperandError, match="does not match"):
        operands.weighted_stats(5, lut.table, np.ones((16, 16)))
    with pytest.raises(OperandError, match="M=6"):
        operands.weighted_stats(5, lut.table, OperandDistribution.uniform(6))


# ---------------------------------------------------------------------------------------------
# Dot products
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,k,params", [("mitchell", 32, {}), ("mbm", 128, {}), ("drum", 8, {"k": 3})])
def test_dot_product_analytic_and_monte_carlo_agree(name, k, params):
    m = 5
    lut = built(name, m, **params)
    rng = np.random.default_rng(11)
    dist = OperandDistribution.from_pairs(rng.lognormal(0, 0.7, 4000), rng.lognormal(0, 0.4, 4000), m)
    result = operands.dot_product_error(m, lut.table, dist, k, trials=4000, seed=5)
    an, mc = result["analytic"], result["monte_carlo"]
    assert mc["abs_std"] > 0
    assert abs(an["abs_mean"] - mc["abs_mean"]) < 4.5 * mc["abs_mean_stderr"]
    assert abs(an["rel_mean"] - mc["rel_mean"]) < 4.5 * mc["rel_mean_stderr"] + 1e-4 * abs(an["rel_mean"])
    assert mc["abs_std"] == pytest.approx(an["abs_std"], rel=0.08)
    assert mc["rel_std"] == pytest.approx(an["rel_std"], rel=0.08)
    # per-product moments are the weighted statistics
    ws = operands.weighted_stats(m, lut.table, dist)
    assert result["per_product"]["mean_error"] == pytest.approx(ws["mean_error"], rel=1e-9, abs=1e-15)
    assert an["abs_mean"] == pytest.approx(k * ws["mean_error"], rel=1e-9, abs=1e-15)


def test_dot_product_absolute_moments_are_exact_for_k_1_and_monte_carlo_is_seeded():
    m = 5
    lut = built("mitchell", m)
    dist = OperandDistribution.uniform(m)
    ws = operands.weighted_stats(m, lut.table, dist)
    one = operands.dot_product_error(m, lut.table, dist, 1, trials=50)
    assert one["analytic"]["abs_mean"] == pytest.approx(ws["mean_error"])
    assert one["analytic"]["abs_std"] == pytest.approx(math.sqrt(ws["mse"] - ws["mean_error"] ** 2))
    again = operands.dot_product_error(m, lut.table, dist, 1, trials=50)
    assert one["monte_carlo"] == again["monte_carlo"]
    other = operands.dot_product_error(m, lut.table, dist, 1, trials=50, seed=1)
    assert other["monte_carlo"] != one["monte_carlo"]


def test_dot_product_never_draws_zero_weight_pairs():
    lut = built("mitchell", 5)
    w = np.zeros((32, 32))
    w[0, 0] = 1.0  # 1 x 1: Mitchell is exact there
    result = operands.dot_product_error(5, lut.table, w, 64, trials=20)
    assert result["monte_carlo"]["abs_mean"] == 0.0 and result["monte_carlo"]["abs_std"] == 0.0
    with pytest.raises(OperandError, match="at least 1"):
        operands.dot_product_error(5, lut.table, w, 0)


# ---------------------------------------------------------------------------------------------
# amsim stats --operands
# ---------------------------------------------------------------------------------------------


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_operands_cli(tmp_path, capsys):
    rng = np.random.default_rng(2)
    a = np.maximum(rng.standard_normal(2000), 0).astype(np.float32)
    b = rng.standard_normal(2000).astype(np.float32)
    np.savez(tmp_path / "ops.npz", a=a, b=b)
    code, out, err = run_cli(capsys, "stats", "--model", "mitchell", "--bits", "5", "--operands",
                             str(tmp_path / "ops.npz"), "--dot-length", "16", "--dot-trials", "300",
                             "--samples", "1000", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["weighting"] == "operands" and result["lifted_from_bits"] == 6
    assert result["operands"]["a"]["zero"] == np.count_nonzero(a == 0)
    dist = OperandDistribution.from_pairs(a, b, 5)
    expected = operands.weighted_stats(5, built("mitchell", 5).table, dist)
    assert {k: result[k] for k in stats.METRIC_KEYS} == pytest.approx(expected)
    assert result["uniform"]["pairs"] == 1 << 10 and result["uniform"]["exhaustive"]
    assert result["dot_product"]["monte_carlo"]["trials"] == 300

    code, out, err = run_cli(capsys, "stats", "--model", "mitchell", "--bits", "5", "--operands",
                             str(tmp_path / "ops.npz"), "--samples", "1000")
    assert code == 0, err
    assert "uniform" in out and "operands" in out and "zero" in out


@pytest.mark.parametrize("extra,message", [
    (["--reference", "full"], "truncated reference"),
    (["--zeros-as-exact"], "zeros-as-exact does not apply"),
])
def test_stats_operands_cli_refusals(tmp_path, capsys, extra, message):
    np.savez(tmp_path / "ops.npz", a=np.ones(4, np.float32), b=np.ones(4, np.float32))
    code, out, err = run_cli(capsys, "stats", "--model", "mitchell", "--bits", "5", "--operands",
                             str(tmp_path / "ops.npz"), *extra)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_stats_independent_needs_operands(capsys):
    code, _out, err = run_cli(capsys, "stats", "--model", "mitchell", "--bits", "5", "--independent")
    assert code == 1 and "--independent applies to --operands" in err
