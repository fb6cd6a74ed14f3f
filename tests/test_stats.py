"""Statistics and LUT sweeps, checked against published figures and exact arithmetic."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import amsim
from amsim import generate, reference, stats, sweep

import reference_designs as ref


@pytest.fixture(scope="module")
def models():
    return amsim.list_models()


def lifted_table(name, m, **params):
    return sweep.significand_table(generate.compile_for_mantissa(amsim.find_model(name), m, params), m)


def exact_products(m):
    i = np.arange(1 << m, dtype=np.float64)
    sig = 1.0 + i / (1 << m)
    return np.multiply.outer(sig, sig)


# ---------------------------------------------------------------------------------------------
# Published figures (docs/metrics.md)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mitchell", "at_mitchell"])
def test_float_mitchell_m7_matches_published_figures(name):
    result = stats.mantissa_stats(7, table=lifted_table(name, 7))
    assert result["exhaustive"] and result["pairs"] == 1 << 14
    assert result["mean_abs_re"] == pytest.approx(0.038485, abs=5e-7)
    assert result["max_abs_re"] == pytest.approx(1 / 9, abs=1e-12)


def test_mitchell_never_overestimates():
    result = stats.mantissa_stats(7, table=lifted_table("mitchell", 7))
    assert result["max_re"] <= 0.0
    assert result["mean_re"] == pytest.approx(-result["mean_abs_re"])


def test_mitchell_approaches_its_continuous_limit_at_m12():
    result = stats.mantissa_stats(12, table=lifted_table("at_mitchell", 12))
    assert result["mean_abs_re"] == pytest.approx(0.038488, abs=2e-6)
    assert result["mean_re"] == pytest.approx(-0.038488, abs=2e-6)
    assert result["min_re"] == pytest.approx(-1 / 9, abs=1e-9)


def test_mbm_16bit_monte_carlo_matches_saadat_2018():
    cm = amsim.find_model("mbm").compile(16)
    result = stats.int_stats(cm, samples=1 << 21, seed=1)
    assert not result["exhaustive"] and result["samples"] == 1 << 21 and result["seed"] == 1
    assert result["mean_abs_re"] == pytest.approx(0.0258, abs=5e-4)
    assert result["mean_re"] == pytest.approx(-0.0009, abs=3e-4)
    assert result["max_abs_re"] == pytest.approx(0.0781, abs=5e-4)


# ---------------------------------------------------------------------------------------------
# LUTs against exact arithmetic
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", range(1, 12))
def test_exact_lut_equals_exact_products_of_m_bit_operands(m):
    table = lifted_table("exact", m)
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table.astype(np.float64), exact_products(m))


def test_lifted_exact_int_at_m12_keeps_26_bit_products_in_float64():
    table = lifted_table("exact_int", 12)
    assert table.dtype == np.float64  # 13x13-bit products need 26 bits: float32 would round
    np.testing.assert_array_equal(table, exact_products(12))


@pytest.mark.parametrize("m", [3, 7])
def test_exact_lut_has_zero_error_against_the_truncated_reference(m):
    result = stats.mantissa_stats(m, table=lifted_table("exact", m))
    assert result["mae"] == 0.0 and result["error_rate"] == 0.0 and result["max_abs_re"] == 0.0


def test_lifting_uses_significands_two_to_the_m_plus_index():
    m = 5
    cm = amsim.find_model("drum").compile(m + 1, {"k": 3})
    table = sweep.significand_table(cm, m)
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    expected = cm.evaluate(32 + i, 32 + j) / 2.0 ** (2 * m)
    np.testing.assert_array_equal(table, expected)


FLOAT_MODELS = ["exact", "bf16_trunc", "bf16_rne", "at_mbm", "at_mitchell"]


def normal_float32(min_exp=-60, max_exp=60):
    return st.builds(
        lambda s, e, f: np.float32(np.ldexp((1 + f / 2**23) * (-1) ** s, e)),
        st.integers(0, 1), st.integers(min_exp, max_exp), st.integers(0, 2**23 - 1))


@pytest.mark.parametrize("name", FLOAT_MODELS)
@settings(max_examples=25, deadline=None)
@given(pairs=st.lists(st.tuples(normal_float32(), normal_float32()), min_size=1, max_size=64))
def test_lut_path_equals_direct_call_of_float_model(name, pairs):
    model = amsim.find_model(name)
    a = np.array([p[0] for p in pairs], np.float32)
    b = np.array([p[1] for p in pairs], np.float32)
    for m in sorted({1, 3, 5, 7, 10} & set(model.bits)):
        cm = model.compile(m)
        table = sweep.significand_table(cm, m)
        via_lut = reference.approx_multiply(a, b, table, m)
        direct = cm.evaluate(a, b)
        np.testing.assert_array_equal(via_lut.view(np.uint32), direct.view(np.uint32), err_msg=f"{name} M={m}")


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_lut_path_equals_direct_call_at_the_edges_of_the_range(name):
    model = amsim.find_model(name)
    m = 7 if 7 in model.bits else model.bits[-1]
    cm = model.compile(m)
    table = sweep.significand_table(cm, m)
    rng = np.random.default_rng(5)
    exps = rng.integers(-126, 128, 4000)
    a = np.ldexp(1 + rng.integers(0, 2**23, 4000) / 2**23, exps).astype(np.float32)
    b = np.ldexp(1 + rng.integers(0, 2**23, 4000) / 2**23, rng.integers(-126, 128, 4000)).astype(np.float32)
    a *= np.where(rng.random(4000) < 0.5, -1, 1).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 1.5], np.float32)
    a = np.concatenate([a, np.repeat(specials, len(specials))])
    b = np.concatenate([b, np.tile(specials, len(specials))])
    via_lut = reference.approx_multiply(a, b, table, m)
    direct = cm.evaluate(a, b)
    same = (via_lut.view(np.uint32) == direct.view(np.uint32)) | (np.isnan(via_lut) & np.isnan(direct))
    assert same.all(), list(zip(a[~same][:5], b[~same][:5], via_lut[~same][:5], direct[~same][:5]))


# ---------------------------------------------------------------------------------------------
# Metric definitions
# ---------------------------------------------------------------------------------------------


def brute_force_metrics(p, pp):
    """docs/metrics.md, written out directly with numpy over explicit exact/approximate products."""
    e = pp - p
    nz = p != 0
    re = e[nz] / p[nz]
    return {"pairs": p.size, "mean_re": re.mean(), "mean_abs_re": np.abs(re).mean(),
            "max_abs_re": np.abs(re).max(), "min_re": re.min(), "max_re": re.max(), "std_re": re.std(),
            "error_rate": np.mean(e != 0), "mean_error": e.mean(), "mae": np.abs(e).mean(),
            "wce": np.abs(e).max(), "mse": np.mean(e * e)}


@pytest.mark.parametrize("name,params", [("drum", {"k": 3}), ("mitchell", {}), ("bam", {"h": 1, "v": 5})])
def test_integer_statistics_follow_the_metric_definitions(name, params):
    cm = amsim.find_model(name).compile(7, params)
    a, b = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    expected = brute_force_metrics((a * b).astype(np.float64).ravel(), cm.evaluate(a, b).astype(np.float64).ravel())
    result = stats.int_stats(cm)
    assert result["exhaustive"] is True
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert result["nmed"] == pytest.approx(expected["mae"] / 127**2)
    assert result["nmed_denominator"] == 127**2


def test_mantissa_statistics_follow_the_metric_definitions():
    table = lifted_table("drum", 6, k=4)
    expected = brute_force_metrics(exact_products(6).ravel(), table.astype(np.float64).ravel())
    result = stats.mantissa_stats(6, table=table)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert result["nmed_denominator"] == (2 - 2**-6) ** 2


def test_zeros_as_exact_averages_relative_error_over_all_pairs():
    cm = amsim.find_model("mitchell").compile(8)
    plain = stats.int_stats(cm)
    zeros = stats.int_stats(cm, zeros_as_exact=True)
    nonzero = 255 * 255
    assert zeros["mean_abs_re"] == pytest.approx(plain["mean_abs_re"] * nonzero / 65536, rel=1e-12)
    assert zeros["mean_re"] == pytest.approx(plain["mean_re"] * nonzero / 65536, rel=1e-12)
    assert zeros["max_abs_re"] == plain["max_abs_re"]


def test_json_keys_are_exactly_those_of_metrics_md():
    result = stats.int_stats(amsim.find_model("mitchell").compile(6))
    assert set(stats.METRIC_KEYS) == set(result)
    mc = stats.int_stats(amsim.find_model("mitchell").compile(6), samples=1000, seed=3)
    assert set(mc) == set(stats.METRIC_KEYS) | {"samples", "seed"}


def test_full_reference_loses_more_than_truncated_for_exact_multiplier():
    table = lifted_table("exact", 7)
    full = stats.mantissa_stats(7, table=table, reference="full", samples=200_000, seed=0)
    # Dropping 16 fraction bits of each operand loses on average about 2^-8 of relative value.
    assert full["mean_re"] < 0 and 0.003 < full["mean_abs_re"] < 0.008
    assert full["exhaustive"] is False and full["samples"] == 200_000


def test_full_reference_with_rne_is_nearly_unbiased_for_exact_multiplier():
    table = lifted_table("exact", 7)
    full = stats.mantissa_stats(7, table=table, reference="full", rounding="rne", samples=400_000, seed=0)
    assert abs(full["mean_re"]) < 2e-4


def test_full_reference_without_table_calls_the_model_for_wide_mantissas():
    cm = generate.compile_for_mantissa(amsim.find_model("exact"), 20)
    result = stats.mantissa_stats(20, cm=cm, reference="full", samples=100_000, seed=2)
    assert result["max_abs_re"] < 2 ** -19


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [None, 300_000])
def test_statistics_are_identical_for_any_thread_count(samples):
    cm = amsim.find_model("mbm").compile(10)
    one = stats.int_stats(cm, samples=samples, seed=7, threads=1)
    two = stats.int_stats(cm, samples=samples, seed=7, threads=2)
    assert one == two


def test_monte_carlo_depends_on_the_seed():
    cm = amsim.find_model("mbm").compile(16)
    assert stats.int_stats(cm, samples=50_000, seed=1) != stats.int_stats(cm, samples=50_000, seed=2)


@pytest.mark.parametrize("m", [1, 3, 5, 7, 8])
def test_lifted_integer_mitchell_is_the_float_form_of_mitchell(m):
    np.testing.assert_array_equal(lifted_table("mitchell", m).astype(np.float64), ref.mitchell_float_table(m))
