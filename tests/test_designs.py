"""Tests of the built-in C multiplier models in ``c_models/``.

Each model is compiled through the loader and compared with the independent
numpy references in ``reference_designs.py`` (exhaustively at 8 bits, by
hypothesis at 16 and 32 bits), and checked against the facts that
``docs/designs.md`` and ``docs/metrics.md`` state about the designs.
"""

import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import amsim
from amsim.reference import approx_multiply

import reference_designs as ref

SPOT = settings(max_examples=30, deadline=None)

INT_MODELS = ["exact_int", "mitchell", "mbm", "drum", "ilm", "alm_soa", "bam"]
FLOAT_MODELS = ["exact", "bf16_trunc", "bf16_rne", "at_mbm", "at_mitchell"]
APPROXTRAIN_WIDTHS = [1, 3, 5, 7]


@functools.lru_cache(maxsize=None)
def compiled(name, bits, **params):
    """The built-in model ``name`` compiled for ``bits`` (cached per session)."""
    return amsim.find_model(name).compile(bits=bits, params=params)


@functools.lru_cache(maxsize=None)
def all_pairs(n):
    """Every operand pair of an n-bit unsigned multiplier, flattened."""
    a, b = np.meshgrid(np.arange(2 ** n), np.arange(2 ** n), indexing="ij")
    return a.ravel(), b.ravel()


def evaluate_int(name, n, a, b, **params):
    """An integer model's outputs as uint64 (the loader returns int64 below 32 bits)."""
    out = compiled(name, n, **params).evaluate(np.asarray(a, np.int64), np.asarray(b, np.int64))
    return out.astype(np.uint64)


def significand_grid(M):
    """float32 operands (1 + i/2^M, 1 + j/2^M) for all (i, j), row = A."""
    sig = (1 + np.arange(2 ** M) / 2 ** M).astype(np.float32)
    return np.meshgrid(sig, sig, indexing="ij")


def model_table(name, M):
    """A float model's significand-product table, measured through the C model."""
    a, b = significand_grid(M)
    return compiled(name, M).evaluate(a, b).astype(np.float64)


# ------------------------------------------------------------- metadata

EXPECTED_METADATA = {
    # name: (kind, bits, {param: default})
    "exact": ("float", tuple(range(1, 24)), {}),
    "bf16_trunc": ("float", tuple(range(1, 24)), {}),
    "bf16_rne": ("float", tuple(range(1, 24)), {}),
    "at_mbm": ("float", (1, 3, 5, 7), {}),
    "at_mitchell": ("float", tuple(range(1, 24)), {}),
    "exact_int": ("int", tuple(range(1, 33)), {}),
    "mitchell": ("int", tuple(range(2, 33)), {}),
    "mbm": ("int", tuple(range(2, 33)), {"t": 0}),
    "drum": ("int", tuple(range(2, 33)), {"k": 6}),
    "ilm": ("int", tuple(range(2, 33)), {"stages": 1}),
    "alm_soa": ("int", tuple(range(2, 33)), {"w": 4}),
    "bam": ("int", tuple(range(1, 33)), {"h": 0, "v": 0}),
    "mul8s_exact": ("int", (8,), {}),
    "mul8s_trunc": ("int", (8,), {"k": 6}),
    "mul8s_bam": ("int", (8,), {"h": 2, "v": 6}),
    "mul8s_log": ("int", (8,), {}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_METADATA))
def test_builtin_model_metadata_declares_kind_widths_and_params(name):
    spec = amsim.find_model(name)
    kind, bits, defaults = EXPECTED_METADATA[name]
    assert spec.name == name and spec.path.stem == name
    assert spec.kind == kind
    assert spec.bits == bits
    assert spec.signed == name.startswith("mul8s_")  # EvoApproxLib's naming: mul8s_ signed, mul8u_ unsigned
    assert {p: spec.params[p].default for p in spec.params} == defaults
    assert spec.description and spec.citation


def test_every_c_model_file_is_covered_by_these_tests():
    assert set(amsim.list_models()) == set(EXPECTED_METADATA)


@pytest.mark.parametrize("name, stem", [("at_mbm", "MBM"), ("at_mitchell", "MIT"), ("bf16_trunc", "ACC")])
def test_approxtrain_models_name_their_lut_file_stem(name, stem):
    assert amsim.find_model(name).approxtrain == stem


@pytest.mark.parametrize("name, bits, params, power, area", [
    ("mbm", 8, {}, 0.61, 0.65),
    ("mbm", 16, {}, 0.26, 0.36),
    ("mbm", 16, {"t": 8}, 0.157, 0.25),
    ("drum", 16, {"k": 6}, 0.30, 0.30),
])
def test_published_costs_are_attached_to_their_configuration(name, bits, params, power, area):
    cost = amsim.find_model(name).cost_for(bits, params)
    assert cost is not None and cost.power == power and cost.area == area
    assert cost.node and cost.source


@pytest.mark.parametrize("name, bits, params", [
    ("mitchell", 8, {}), ("ilm", 16, {}), ("alm_soa", 16, {}), ("bam", 8, {}),
    ("at_mbm", 7, {}), ("at_mitchell", 7, {}), ("drum", 8, {"k": 6}), ("mbm", 32, {}),
])
def test_no_cost_is_invented_where_none_is_published(name, bits, params):
    assert amsim.find_model(name).cost_for(bits, params) is None


# ------------------------------------------- integer models vs reference

EXHAUSTIVE_8BIT = (
    [("exact_int", {}), ("mitchell", {})]
    + [("mbm", {"t": t}) for t in range(8)]
    + [("drum", {"k": k}) for k in range(2, 9)]
    + [("ilm", {"stages": s}) for s in range(4)]
    + [("alm_soa", {"w": w}) for w in range(8)]
    + [("bam", {"h": h, "v": v}) for h in (0, 2, 5) for v in (0, 3, 7, 10, 15)]
    + [("bam", {"h": 8, "v": 0}), ("bam", {"h": 0, "v": 16})]
)


def _config_id(config):
    name, params = config
    return name + "".join(f"-{k}{v}" for k, v in params.items())


@pytest.mark.parametrize("config", EXHAUSTIVE_8BIT, ids=_config_id)
def test_int_model_equals_reference_on_all_8bit_pairs(config):
    name, params = config
    a, b = all_pairs(8)
    got = evaluate_int(name, 8, a, b, **params)
    want = ref.INT_REFERENCES[name](a, b, 8, **params)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(int(a[i]), int(b[i]), int(got[i]), int(want[i])) for i in bad[:5]]


SIGNED_8BIT = (
    [("mul8s_exact", {}), ("mul8s_log", {})]
    + [("mul8s_trunc", {"k": k}) for k in range(16)]
    + [("mul8s_bam", {"h": h, "v": v}) for h in (0, 2, 5, 8) for v in (0, 3, 7, 10, 15)]
)


@pytest.mark.parametrize("config", SIGNED_8BIT, ids=_config_id)
def test_signed_circuit_equals_reference_on_all_8bit_pairs(config):
    name, params = config
    a, b = (x.ravel() for x in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij"))
    got = compiled(name, 8, **params).evaluate(a, b).astype(np.int64)
    want = ref.SIGNED_REFERENCES[name](a, b, **params)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(int(a[i]), int(b[i]), int(got[i]), int(want[i])) for i in bad[:5]]


WIDE_CONFIGS = [
    ("exact_int", {}), ("mitchell", {}), ("mbm", {}), ("mbm", {"t": 8}), ("drum", {}),
    ("drum", {"k": 12}), ("ilm", {"stages": 0}), ("ilm", {"stages": 3}), ("alm_soa", {}),
    ("alm_soa", {"w": 13}), ("bam", {"h": 3, "v": 9}), ("bam", {"h": 0, "v": 20}),
]


@pytest.mark.parametrize("n", [16, 32])
@pytest.mark.parametrize("config", WIDE_CONFIGS, ids=_config_id)
def test_int_model_equals_reference_on_wide_operands(config, n):
    name, params = config
    operand = st.integers(0, 2 ** n - 1)

    @SPOT
    @given(st.lists(st.tuples(operand, operand), min_size=1, max_size=64))
    def check(pairs):
        a = np.array([p[0] for p in pairs], dtype=np.int64)
        b = np.array([p[1] for p in pairs], dtype=np.int64)
        got = evaluate_int(name, n, a, b, **params)
        want = ref.INT_REFERENCES[name](a, b, n, **params)
        assert np.array_equal(got, want)

    check()


@pytest.mark.parametrize("n", [2, 5, 12, 31])
@pytest.mark.parametrize("name", INT_MODELS)
def test_int_model_equals_reference_at_other_widths(name, n):
    rng = np.random.default_rng(n)
    a = rng.integers(0, 2 ** n, 2000)
    b = rng.integers(0, 2 ** n, 2000)
    a[:3], b[:3] = [0, 2 ** n - 1, 2 ** n - 1], [2 ** n - 1, 0, 2 ** n - 1]
    got = evaluate_int(name, n, a, b)
    assert np.array_equal(got, ref.INT_REFERENCES[name](a, b, n))


@pytest.mark.parametrize("config", [c for c in EXHAUSTIVE_8BIT if c[0] != "bam"] + [("bam", {"h": 3, "v": 5})],
                         ids=_config_id)
def test_int_model_returns_zero_for_a_zero_operand(config):
    name, params = config
    v = np.arange(256)
    assert not evaluate_int(name, 8, 0 * v, v, **params).any()
    assert not evaluate_int(name, 8, v, 0 * v, **params).any()


def test_int_model_32bit_product_uses_the_full_uint64_range():
    top = 2 ** 32 - 1
    assert int(evaluate_int("exact_int", 32, [top], [top])[0]) == top * top
    # DRUM's forced window bit overestimates: the result may exceed a*b, still below 2^64
    assert int(evaluate_int("drum", 32, [top], [top], k=4)[0]) == 15 * 15 << 56


# ------------------------------------- degenerate parameter settings

@pytest.mark.parametrize("k", [8, 9, 32])
def test_drum_with_window_at_least_n_is_exact(k):
    a, b = all_pairs(8)
    assert np.array_equal(evaluate_int("drum", 8, a, b, k=k), ref.exact_int(a, b, 8))


def test_alm_soa_without_approximate_bits_is_mitchell():
    a, b = all_pairs(8)
    assert np.array_equal(evaluate_int("alm_soa", 8, a, b, w=0), evaluate_int("mitchell", 8, a, b))


def test_bam_without_breaks_is_exact():
    a, b = all_pairs(8)
    assert np.array_equal(evaluate_int("bam", 8, a, b), ref.exact_int(a, b, 8))


@pytest.mark.parametrize("name, params, clamped", [
    ("mbm", {"t": 20}, {"t": 7}),
    ("alm_soa", {"w": 31}, {"w": 7}),
])
def test_oversized_parameter_is_clamped_to_the_fraction_width(name, params, clamped):
    a, b = all_pairs(8)
    assert np.array_equal(evaluate_int(name, 8, a, b, **params), evaluate_int(name, 8, a, b, **clamped))


def test_mbm_with_all_fraction_bits_truncated_multiplies_powers_of_two():
    # t = F drops every fraction bit: each operand counts as 2^msb.
    a, b = all_pairs(8)
    nz = (a > 0) & (b > 0)
    got = evaluate_int("mbm", 8, a, b, t=7)[nz].astype(np.int64)
    k1, k2 = np.floor(np.log2(a[nz])), np.floor(np.log2(b[nz]))
    want = np.floor(2.0 ** (k1 + k2) * (1 + ref.MBM_C)).astype(np.int64)
    assert np.array_equal(got, want)


# ------------------------------------------------- design facts (spec)

def _relative_errors(name, n, **params):
    a, b = all_pairs(n)
    nz = (a > 0) & (b > 0)
    a, b = a[nz], b[nz]
    exact = (a * b).astype(np.float64)
    return (evaluate_int(name, n, a, b, **params).astype(np.float64) - exact) / exact, a, b


def test_mitchell_never_overestimates_and_worst_case_is_minus_one_ninth():
    re, a, b = _relative_errors("mitchell", 8)
    assert re.max() == 0
    assert re.min() == pytest.approx(-1 / 9, abs=1e-15)
    # the worst case sits at x1 = x2 = 1/2, i.e. operands 3 * 2^j
    worst = np.flatnonzero(re == re.min())
    for i in worst:
        for v in (a[i], b[i]):
            assert v / 2 ** np.floor(np.log2(v)) == 1.5


@pytest.mark.parametrize("stages", range(4))
def test_ilm_never_overestimates(stages):
    re, _, _ = _relative_errors("ilm", 8, stages=stages)
    assert re.max() == 0


def test_ilm_basic_block_misses_exactly_the_residue_product():
    a, b = all_pairs(8)
    nz = (a > 0) & (b > 0)
    a, b = a[nz], b[nz]
    r1 = a - 2 ** np.floor(np.log2(a)).astype(np.int64)
    r2 = b - 2 ** np.floor(np.log2(b)).astype(np.int64)
    got = evaluate_int("ilm", 8, a, b, stages=0).astype(np.int64)
    assert np.array_equal(got, a * b - r1 * r2)


def test_float_mitchell_worst_case_is_minus_one_ninth_at_one_half():
    table = model_table("at_mitchell", 7)
    re = table / ref.exact_table(7) - 1
    assert re.max() == 0
    assert re.min() == pytest.approx(-1 / 9, abs=1e-15)
    assert table[64, 64] == 2.0  # x1 = x2 = 1/2: 2 against the exact 2.25


@pytest.mark.parametrize("M", [1, 3, 5, 7, 10])
def test_approxtrain_mitchell_equals_the_mitchell_formula(M):
    assert np.array_equal(model_table("at_mitchell", M), ref.mitchell_float_table(M))


def test_approxtrain_mbm_at_7_bits_uses_only_6_input_bits():
    table = model_table("at_mbm", 7)
    assert np.array_equal(table[0::2], table[1::2])
    assert np.array_equal(table[:, 0::2], table[:, 1::2])


def test_approxtrain_mbm_at_1_bit_always_gives_2():
    assert np.all(model_table("at_mbm", 1) == 2.0)


@pytest.mark.parametrize("t", range(9))
def test_bam_column_truncation_mean_error_matches_the_analytic_value(t):
    a, b = all_pairs(8)
    err = ref.exact_int(a, b, 8).astype(np.float64) - evaluate_int("bam", 8, a, b, h=0, v=t)
    expected = 0.25 * sum((c + 1) * 2 ** c for c in range(t))
    assert err.mean() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_float_mitchell_metrics_match_published_figures():
    # docs/metrics.md: float Mitchell at M = 7, exhaustive against the truncated reference
    re = model_table("at_mitchell", 7) / ref.exact_table(7) - 1
    assert np.mean(np.abs(re)) == pytest.approx(0.038485, abs=5e-7)
    assert np.max(np.abs(re)) == pytest.approx(0.11111, abs=5e-6)


def test_mbm_16bit_metrics_match_published_figures():
    # docs/metrics.md / Saadat et al. 2018, Monte Carlo: MRED 2.58 %, bias -0.09 %, peak 7.81 %
    rng = np.random.default_rng(2018)
    a = rng.integers(1, 2 ** 16, 1_000_000)
    b = rng.integers(1, 2 ** 16, 1_000_000)
    exact = (a * b).astype(np.float64)
    re = (evaluate_int("mbm", 16, a, b).astype(np.float64) - exact) / exact
    assert np.mean(np.abs(re)) == pytest.approx(0.0258, abs=5e-4)
    assert np.mean(re) == pytest.approx(-0.0009, abs=3e-4)
    assert np.max(np.abs(re)) == pytest.approx(0.0781, abs=5e-4)


# ----------------------------------------------- float models vs tables

FLOAT_TABLE_CASES = [(name, M) for name in FLOAT_MODELS for M in APPROXTRAIN_WIDTHS]


@pytest.mark.parametrize("name, M", FLOAT_TABLE_CASES)
def test_float_model_significand_products_equal_reference_table(name, M):
    got = model_table(name, M)
    want = ref.FLOAT_TABLES[name](M)
    bad = np.argwhere(got != want)
    assert bad.size == 0, [(int(i), int(j), got[i, j], want[i, j]) for i, j in bad[:5]]


@pytest.mark.parametrize("name", ["exact", "bf16_trunc", "bf16_rne", "at_mitchell"])
@pytest.mark.parametrize("M", [10, 11])
def test_float_model_equals_reference_table_beyond_approxtrain_widths(name, M):
    assert np.array_equal(model_table(name, M), ref.FLOAT_TABLES[name](M))


@pytest.mark.parametrize("name", ["at_mbm", "at_mitchell", "bf16_trunc"])
@pytest.mark.parametrize("M", APPROXTRAIN_WIDTHS)
def test_approxtrain_bytes_decode_back_to_the_model_table(name, M):
    table = model_table(name, M)
    data = ref.approxtrain_bytes(table, M)
    assert data.dtype == np.uint8 and data.size == 2 ** (2 * M)
    carry, mantissa = data >> 7, data & 0x7F
    assert mantissa.max() < 2 ** M
    decoded = ((1 + mantissa / 2 ** M) * 2.0 ** carry).reshape(2 ** M, 2 ** M)
    assert np.array_equal(decoded, table)
    # index (i << M) | j: row i = operand A's mantissa
    i, j = 2 ** M - 1, 0
    assert data[(i << M) | j] == ref.approxtrain_bytes(ref.FLOAT_TABLES[name](M), M)[(i << M) | j]


def test_approxtrain_bytes_refuse_unrepresentable_values():
    with pytest.raises(ValueError):
        ref.approxtrain_bytes(ref.exact_table(3), 3)  # 1 + 1/8 squared needs 6 bits


# ------------------------------- float models: full float32 operands

def _random_float32(rng, size, exp_lo=-140, exp_hi=130):
    """float32 values with random sign, mantissa and a wide exponent spread."""
    bits = rng.integers(0, 2 ** 23, size, dtype=np.uint32)
    e = np.clip(rng.integers(exp_lo, exp_hi, size) + 127, 0, 255).astype(np.uint32)
    s = rng.integers(0, 2, size, dtype=np.uint32)
    return ((s << 31) | (e << 23) | bits).view(np.float32)


SPECIALS = np.array([0.0, -0.0, 1e-40, -1e-40, np.inf, -np.inf, np.nan, 1.0, -3.0,
                     float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)], dtype=np.float32)


def _same_float32(x, y):
    """Bitwise equality, with any NaN equal to any NaN."""
    nan = np.isnan(x) & np.isnan(y)
    return nan | (x.view(np.uint32) == y.view(np.uint32))


@pytest.mark.parametrize("name, M", [(n, M) for n in FLOAT_MODELS for M in (1, 7)]
                         + [("exact", 11), ("bf16_rne", 11), ("at_mitchell", 11)])
def test_float_model_equals_numerics_reference_on_float32_operands(name, M):
    # amsim.reference implements docs/numerics.md section 2 given the model's table:
    # truncation of the operands, signs, exponents, zeros, inf, NaN, range edges
    rng = np.random.default_rng(M)
    a = np.concatenate([_random_float32(rng, 20000), np.repeat(SPECIALS, SPECIALS.size)])
    b = np.concatenate([_random_float32(rng, 20000), np.tile(SPECIALS, SPECIALS.size)])
    got = compiled(name, M).evaluate(a, b)
    want = approx_multiply(a, b, ref.FLOAT_TABLES[name](M), M)
    ok = _same_float32(got, want)
    assert ok.all(), [(a[i], b[i], got[i], want[i]) for i in np.flatnonzero(~ok)[:5]]


def test_exact_float_model_at_23_bits_is_the_float32_product_in_the_normal_range():
    # M = 23 keeps the whole mantissa: the product is rounded to nearest even, like IEEE
    rng = np.random.default_rng(23)
    a = _random_float32(rng, 50000, -60, 60)
    b = _random_float32(rng, 50000, -60, 60)
    assert _same_float32(compiled("exact", 23).evaluate(a, b), a * b).all()


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_float_model_flushes_results_outside_the_normal_range(name):
    cm = compiled(name, 7)
    tiny, huge = np.float32(2.0 ** -100), np.float32(2.0 ** 100)
    assert cm.evaluate(tiny, -tiny).view(np.uint32) == np.float32(-0.0).view(np.uint32)
    assert cm.evaluate(-huge, huge) == -np.inf
    # the smallest normal times 1 stays normal (scaled by the model's value for 1 x 1)
    one_by_one = ref.FLOAT_TABLES[name](7)[0, 0]
    assert cm.evaluate(np.float32(2.0 ** -126), np.float32(1.0)) == np.float32(2.0 ** -126 * one_by_one)


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_float_model_truncates_the_dropped_mantissa_bits(name):
    cm = compiled(name, 5)
    rng = np.random.default_rng(5)
    a = _random_float32(rng, 5000, -20, 20)
    b = _random_float32(rng, 5000, -20, 20)
    keep = np.uint32(~((1 << (23 - 5)) - 1) & 0xFFFFFFFF)
    a_t = (a.view(np.uint32) & keep).view(np.float32)
    b_t = (b.view(np.uint32) & keep).view(np.float32)
    assert _same_float32(cm.evaluate(a, b), cm.evaluate(a_t, b_t)).all()
