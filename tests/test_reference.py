"""Tests of the numpy reference of the approximate product and GEMM (docs/numerics.md 2, 3).

Expected values are computed independently of amsim.reference: with integer bit
tricks on the float32 pattern, or with float64 arithmetic that is exact for the
small M used here (M <= 11, so exact significand products fit in 24 bits).
"""

import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amsim.reference import (
    KIND_INF,
    KIND_NAN,
    KIND_NORMAL,
    KIND_ZERO,
    approx_matmul,
    approx_multiply,
    split_float32,
)

FAST = settings(max_examples=40, deadline=None)

SMALLEST_NORMAL = 2.0 ** -126
FLT_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------
# independent helpers
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def exact_table(bits):
    """table[i, j] = (1 + i/2^M)(1 + j/2^M), exact in float32 for M <= 11."""
    assert bits <= 11
    sig = (np.arange(1 << bits, dtype=np.float64) + (1 << bits)) / (1 << bits)
    table = np.multiply.outer(sig, sig).astype(np.float32)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=None)
def truncated_exact_table(bits):
    """Exact product truncated to the M-bit grid: representable in ApproxTrain form."""
    exact = exact_table(bits).astype(np.float64)
    carry = (exact >= 2.0).astype(np.int64)
    frac = np.floor(np.ldexp(exact, bits - carry)) / (1 << bits)
    table = np.ldexp(frac, carry).astype(np.float32)
    table.setflags(write=False)
    return table


def f32(values):
    return np.asarray(values, dtype=np.float32)


def bits_of(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def from_bits(u):
    return np.asarray(u, dtype=np.uint64).astype(np.uint32).view(np.float32)


def truncate_operand(x, bits):
    """Drop the low 23 - M mantissa bits with a mask (independent of split_float32)."""
    mask = np.uint32((0xFFFFFFFF << (23 - bits)) & 0xFFFFFFFF)
    return (bits_of(x) & mask).view(np.float32)


def assert_same_float32(actual, expected):
    """Bit-for-bit equality, except that any NaN matches any NaN."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float32)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    both_nan = np.isnan(actual) & np.isnan(expected)
    same = (bits_of(actual) == bits_of(expected)) | both_nan
    if not np.all(same):
        bad = np.argwhere(~same)[0]
        raise AssertionError(
            f"first mismatch at {tuple(bad)}: got {actual[tuple(bad)]!r} "
            f"expected {expected[tuple(bad)]!r} ({np.count_nonzero(~same)} mismatches)"
        )


def normal_float32_arrays(min_exp=-126, max_exp=127, size=64):
    """Arrays of normal float32 values with unbiased exponents in [min_exp, max_exp]."""
    element = st.tuples(
        st.integers(0, 1),
        st.integers(min_exp, max_exp),
        st.integers(0, (1 << 23) - 1),
    )

    def build(items):
        sign, exp, frac = (np.array(col, dtype=np.int64) for col in zip(*items))
        return from_bits((sign << 31) | ((exp + 127) << 23) | frac)

    return st.lists(element, min_size=1, max_size=size).map(build)


def paired(min_exp=-126, max_exp=127, size=64):
    """Two normal float32 arrays of one common length."""
    return st.lists(
        st.tuples(
            st.integers(0, 1), st.integers(min_exp, max_exp), st.integers(0, (1 << 23) - 1),
            st.integers(0, 1), st.integers(min_exp, max_exp), st.integers(0, (1 << 23) - 1),
        ),
        min_size=1,
        max_size=size,
    ).map(_build_pair)


def _build_pair(items):
    cols = [np.array(col, dtype=np.int64) for col in zip(*items)]

    def assemble(sign, exp, frac):
        return from_bits((sign << 31) | ((exp + 127) << 23) | frac)

    return assemble(*cols[:3]), assemble(*cols[3:])


# ---------------------------------------------------------------------------
# split_float32
# ---------------------------------------------------------------------------

def test_split_classifies_zero_subnormal_normal_inf_nan():
    x = f32([0.0, -0.0, 1e-40, -1e-45, 1.0, -3.5, np.inf, -np.inf, np.nan])
    sign, exponent, index, kind = split_float32(x, 7)
    assert list(kind) == [KIND_ZERO] * 4 + [KIND_NORMAL] * 2 + [KIND_INF] * 2 + [KIND_NAN]
    assert list(sign[:8]) == [0, 1, 0, 1, 0, 1, 0, 1]
    assert list(exponent) == [0, 0, 0, 0, 127, 128, 255, 255, 255]
    assert list(index) == [0, 0, 0, 0, 0, 0x60, 0, 0, 0]


def test_split_truncate_keeps_high_mantissa_bits():
    x = from_bits([0x3FFFFFFF, 0x40123456])
    _, exponent, index, _ = split_float32(x, 5)
    assert list(exponent) == [0x7F, 0x80]
    assert list(index) == [0x7FFFFF >> 18, 0x123456 >> 18]


def test_split_keeps_zero_dimensional_shape():
    outputs = split_float32(np.float32(1.5), 3)
    assert all(np.shape(o) == () for o in outputs)


# ---------------------------------------------------------------------------
# approx_multiply, ieee mode, normal operands
# ---------------------------------------------------------------------------

@FAST
@given(bits=st.sampled_from([0, 1, 3, 7, 10, 11]), pair=paired(-60, 60))
def test_exact_table_equals_float64_product_of_truncated_operands(bits, pair):
    a, b = pair
    expected = (
        truncate_operand(a, bits).astype(np.float64) * truncate_operand(b, bits).astype(np.float64)
    ).astype(np.float32)
    assert_same_float32(approx_multiply(a, b, exact_table(bits), bits), expected)


def test_table_row_is_a_mantissa_and_column_is_b_mantissa():
    table = np.array([[1.0, 1.25], [1.75, 2.5]], dtype=np.float32)  # not symmetric
    a, b = f32([1.5]), f32([1.0])  # i = 1, j = 0
    assert_same_float32(approx_multiply(a, b, table, 1), [1.75])
    assert_same_float32(approx_multiply(b, a, table, 1), [1.25])


def test_result_scales_table_entry_by_exponents_and_signs():
    table = np.array([[1.0, 3.0], [0.75, 5.0]], dtype=np.float32)
    a = f32([-1.5 * 2.0 ** 10])   # i = 1, ea = 10
    b = f32([1.5 * 2.0 ** -3])    # j = 1, eb = -3
    assert_same_float32(approx_multiply(a, b, table, 1), [-5.0 * 2.0 ** 7])


def test_broadcasting_gives_broadcast_shape():
    out = approx_multiply(f32([[1.0], [2.0]]), f32([1.0, 3.0, -1.0]), exact_table(2), 2)
    assert_same_float32(out, [[1.0, 3.0, -1.0], [2.0, 6.0, -2.0]])


def test_float64_table_entries_round_to_nearest_float32():
    table = np.array([[1.0 + 2.0 ** -24 + 2.0 ** -40]], dtype=np.float64)  # above a tie
    assert_same_float32(approx_multiply(f32([1.0]), f32([1.0]), table, 0), [1.0 + 2.0 ** -23])
    tie = np.array([[1.0 + 2.0 ** -24]], dtype=np.float64)  # tie -> even (1.0)
    assert_same_float32(approx_multiply(f32([1.0]), f32([1.0]), tie, 0), [1.0])


# ---------------------------------------------------------------------------
# special operands (docs/numerics.md 2.2), in every mode
# ---------------------------------------------------------------------------

SUB = 1e-40  # a float32 subnormal
INF, NAN = np.inf, np.nan
SPECIAL_CASES = [
    # (a, b, expected)
    (0.0, 1.5, 0.0),
    (-0.0, 1.5, -0.0),
    (0.0, -1.5, -0.0),
    (-0.0, -1.5, 0.0),
    (0.0, 0.0, 0.0),
    (-0.0, 0.0, -0.0),
    (-0.0, -0.0, 0.0),
    (SUB, 2.0, 0.0),
    (-SUB, 2.0, -0.0),
    (SUB, -SUB, -0.0),
    (SUB, 3e38, 0.0),          # DAZ: not 0.03
    (-3e38, 1e-45, -0.0),
    (INF, 2.0, INF),
    (INF, -2.0, -INF),
    (-2.0, INF, -INF),
    (-INF, -INF, INF),
    (INF, -INF, -INF),
    (INF, 0.0, NAN),
    (-0.0, INF, NAN),
    (INF, SUB, NAN),
    (-SUB, -INF, NAN),
    (NAN, 1.0, NAN),
    (1.0, NAN, NAN),
    (NAN, 0.0, NAN),
    (NAN, INF, NAN),
    (-NAN, -NAN, NAN),
]


@pytest.mark.parametrize(
    "mode,rounding", [("ieee", "truncate"), ("ieee", "rne"), ("approxtrain", "truncate")]
)
@pytest.mark.parametrize("a,b,expected", SPECIAL_CASES)
def test_special_operands_follow_ieee_rules(a, b, expected, mode, rounding):
    out = approx_multiply(f32(a), f32(b), truncated_exact_table(3), 3, rounding=rounding, mode=mode)
    assert_same_float32(out, f32(expected))


def test_zero_table_entry_gives_zero_with_product_sign():
    table = np.array([[0.0, 1.5], [1.5, 2.25]], dtype=np.float32)
    out = approx_multiply(f32([1.0, -1.0, -1.0]), f32([2.0, 2.0, -4.0]), table, 1)
    assert_same_float32(out, [0.0, -0.0, 0.0])


# ---------------------------------------------------------------------------
# overflow and flush to zero
# ---------------------------------------------------------------------------

def test_product_exactly_2_pow_128_overflows_to_inf():
    a, b = f32([2.0 ** 64, -(2.0 ** 64)]), f32([2.0 ** 64, 2.0 ** 64])
    out = approx_multiply(a, b, exact_table(4), 4)
    assert_same_float32(out, [INF, -INF])


def test_largest_product_below_2_pow_128_is_finite_and_exact():
    a = f32([(2.0 - 2.0 ** -4) * 2.0 ** 63])  # largest 4-bit significand
    b = f32([2.0 ** 64])
    assert_same_float32(approx_multiply(a, b, exact_table(4), 4), [(2.0 - 2.0 ** -4) * 2.0 ** 127])


def test_overflow_is_decided_on_value_not_on_exponents():
    # exponents sum to 127 (representable) but the entry 2.25 pushes past 2^128
    a, b = f32([1.5 * 2.0 ** 63]), f32([1.5 * 2.0 ** 64])
    assert_same_float32(approx_multiply(a, b, exact_table(1), 1), [INF])
    # exponents sum to 128 (not representable) but an entry below 1 pulls the value back
    table = np.array([[0.5, 1.5], [1.5, 2.25]], dtype=np.float32)
    out = approx_multiply(f32([2.0 ** 64]), f32([-(2.0 ** 64)]), table, 1)
    assert_same_float32(out, [-(2.0 ** 127)])
    # an entry >= 4 can overflow from exponent sum 126
    big = np.array([[4.0]], dtype=np.float32)
    assert_same_float32(approx_multiply(f32([2.0 ** 63]), f32([2.0 ** 63]), big, 0), [INF])


def test_smallest_normal_result_is_kept():
    a, b = f32([2.0 ** -63, -(2.0 ** -63)]), f32([2.0 ** -63, 2.0 ** -63])
    out = approx_multiply(a, b, exact_table(3), 3)
    assert_same_float32(out, [SMALLEST_NORMAL, -SMALLEST_NORMAL])


def test_result_just_below_smallest_normal_flushes_to_signed_zero():
    a = f32([2.0 ** -63, -1.5 * 2.0 ** -64, (2.0 - 2.0 ** -3) * 2.0 ** -64])
    b = f32([2.0 ** -64, 2.0 ** -63, -(2.0 ** -63)])  # 2^-127, -0.75*2^-126, -(1 - 2^-4)*2^-126
    out = approx_multiply(a, b, exact_table(3), 3)
    assert_same_float32(out, [0.0, -0.0, -0.0])


def test_table_entry_above_two_lifts_result_out_of_underflow():
    a, b = f32([1.5 * 2.0 ** -64]), f32([1.5 * 2.0 ** -63])  # 2.25 * 2^-127
    assert_same_float32(approx_multiply(a, b, exact_table(1), 1), [1.125 * 2.0 ** -126])


def test_table_entry_below_one_pushes_result_into_underflow():
    table = np.array([[0.5]], dtype=np.float32)
    assert_same_float32(approx_multiply(f32([-(2.0 ** -63)]), f32([2.0 ** -63]), table, 0), [-0.0])


@FAST
@given(pair=paired())
def test_results_are_never_subnormal(pair):
    a, b = pair
    out = approx_multiply(a, b, exact_table(7), 7)
    mag = np.abs(out.astype(np.float64))
    assert not np.any((mag > 0) & (mag < SMALLEST_NORMAL))


# ---------------------------------------------------------------------------
# rne operand rounding
# ---------------------------------------------------------------------------

def test_rne_ties_round_to_even_mantissa():
    # M = 2: 1.001b is a tie between 1.00b and 1.01b -> 1.00b; 1.011b -> 1.10b
    x = f32([1.125, 1.375, 1.125 + 2.0 ** -23, -1.375])
    _, exponent, index, kind = split_float32(x, 2, rounding="rne")
    assert list(index) == [0, 2, 1, 2]
    assert list(exponent) == [127] * 4
    assert list(kind) == [KIND_NORMAL] * 4
    out = approx_multiply(x, f32(1.0), exact_table(2), 2, rounding="rne")
    assert_same_float32(out, [1.0, 1.5, 1.25, -1.5])


def test_rne_carry_out_of_mantissa_increments_exponent():
    x = f32([1.875, -1.875 * 2.0 ** 5])  # 1.111b rounds up to 10.00b at M = 2
    _, exponent, index, _ = split_float32(x, 2, rounding="rne")
    assert list(exponent) == [128, 133]
    assert list(index) == [0, 0]
    out = approx_multiply(x, f32(1.0), exact_table(2), 2, rounding="rne")
    assert_same_float32(out, [2.0, -(2.0 ** 6)])
    _, exponent, index, _ = split_float32(x, 2)  # truncation never carries
    assert list(exponent) == [127, 132]
    assert list(index) == [3, 3]


def test_rne_largest_float_rounds_to_inf():
    x = f32([FLT_MAX, -FLT_MAX])
    sign, _, _, kind = split_float32(x, 7, rounding="rne")
    assert list(kind) == [KIND_INF, KIND_INF]
    assert list(sign) == [0, 1]
    out = approx_multiply(x, f32(0.5), exact_table(7), 7, rounding="rne")
    assert_same_float32(out, [INF, -INF])
    assert_same_float32(approx_multiply(x, f32(0.0), exact_table(7), 7, rounding="rne"), [NAN, NAN])


def test_truncate_largest_float_stays_finite():
    _, exponent, index, kind = split_float32(f32(FLT_MAX), 7)
    assert (int(exponent), int(index), int(kind)) == (254, 127, KIND_NORMAL)


def test_rne_subnormal_is_flushed_before_rounding():
    largest_subnormal = from_bits([0x007FFFFF])
    _, _, _, kind = split_float32(largest_subnormal, 7, rounding="rne")
    assert list(kind) == [KIND_ZERO]


def bfloat16_rne_bits(x):
    """float32 -> bfloat16 round-to-nearest-even cast, the textbook integer trick."""
    u = bits_of(x).astype(np.uint64)
    rounded = (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    return rounded


@FAST
@given(x=normal_float32_arrays(size=128))
def test_rne_at_7_bits_matches_bfloat16_cast(x):
    bf16 = bfloat16_rne_bits(x)
    expected = from_bits(bf16 << np.uint64(16))
    assert_same_float32(approx_multiply(x, f32(1.0), exact_table(7), 7, rounding="rne"), expected)
    sign, exponent, index, kind = split_float32(x, 7, rounding="rne")
    finite = (bf16 & np.uint64(0x7F80)) != np.uint64(0x7F80)
    assert np.array_equal(kind, np.where(finite, KIND_NORMAL, KIND_INF))
    assert np.array_equal(sign, (bf16 >> np.uint64(15)).astype(np.int64))
    assert np.array_equal(exponent, ((bf16 >> np.uint64(7)) & np.uint64(0xFF)).astype(np.int64))
    assert np.array_equal(index[finite], (bf16 & np.uint64(0x7F)).astype(np.int64)[finite])


@FAST
@given(bits=st.sampled_from([0, 1, 2, 5, 9, 11]), x=normal_float32_arrays(size=128))
def test_rne_matches_float64_rint_of_scaled_significand(bits, x):
    sig, exp = np.frexp(x.astype(np.float64))  # |sig| in [0.5, 1)
    rounded = np.ldexp(np.rint(np.ldexp(sig, bits + 1)), exp - bits - 1)  # rint: ties to even
    expected = np.where(np.abs(rounded) >= 2.0 ** 128, np.copysign(np.inf, rounded), rounded)
    out = approx_multiply(x, f32(1.0), exact_table(bits), bits, rounding="rne")
    assert_same_float32(out, expected.astype(np.float32))


# ---------------------------------------------------------------------------
# approxtrain mode
# ---------------------------------------------------------------------------

def test_approxtrain_is_positive_zero_when_exponent_sum_at_most_127():
    table = truncated_exact_table(1)  # [[1, 1.5], [1.5, 2]]
    # Ea = 67, Eb = 60: sum 127; the carry (entry 2) would make the result normal
    a = f32([-1.5 * 2.0 ** -60, -(2.0 ** -60), 2.0 ** -100, -(2.0 ** -100)])
    b = f32([1.5 * 2.0 ** -67, 2.0 ** -67, 2.0 ** -100, 2.0 ** -100])
    assert_same_float32(approx_multiply(a, b, table, 1, mode="approxtrain"), [0.0, 0.0, 0.0, 0.0])
    # ieee mode differs: a normal result and a sign-preserving flush
    assert_same_float32(approx_multiply(a, b, table, 1), [-SMALLEST_NORMAL, -0.0, 0.0, -0.0])


def test_approxtrain_exponent_sum_128_gives_normal_result():
    table = truncated_exact_table(1)
    a, b = f32([-(2.0 ** -60), 1.5 * 2.0 ** -60]), f32([2.0 ** -66, 1.5 * 2.0 ** -66])
    out = approx_multiply(a, b, table, 1, mode="approxtrain")
    assert_same_float32(out, [-SMALLEST_NORMAL, 2.0 * SMALLEST_NORMAL])


def test_approxtrain_overflow_gives_signed_inf():
    a, b = f32([1.5 * 2.0 ** 64, -(2.0 ** 64)]), f32([1.5 * 2.0 ** 63, 2.0 ** 64])
    out = approx_multiply(a, b, truncated_exact_table(1), 1, mode="approxtrain")
    assert_same_float32(out, [INF, -INF])


def random_representable_table(bits, seed):
    rng = np.random.default_rng(seed)
    size = 1 << bits
    frac = rng.integers(0, size, (size, size))
    carry = rng.integers(0, 2, (size, size))
    return np.ldexp(1.0 + frac / size, carry).astype(np.float32)


@FAST
@given(bits=st.sampled_from([0, 1, 4, 7]), seed=st.integers(0, 2 ** 32), pair=paired(-60, 60))
def test_approxtrain_equals_ieee_in_normal_range_for_representable_table(bits, seed, pair):
    a, b = pair
    for table in (truncated_exact_table(bits), random_representable_table(bits, seed)):
        ieee = approx_multiply(a, b, table, bits)
        assert_same_float32(approx_multiply(a, b, table, bits, mode="approxtrain"), ieee)


@FAST
@given(seed=st.integers(0, 2 ** 32), pair=paired())
def test_approxtrain_over_full_range_is_ieee_or_positive_zero(seed, pair):
    a, b = pair
    table = random_representable_table(3, seed)
    approxtrain = approx_multiply(a, b, table, 3, mode="approxtrain")
    exp_sum = ((bits_of(a) >> 23) & 0xFF).astype(np.int64) + ((bits_of(b) >> 23) & 0xFF)
    expected = np.where(exp_sum <= 127, np.float32(0.0), approx_multiply(a, b, table, 3))
    assert_same_float32(approxtrain, expected)


@pytest.mark.parametrize(
    "entry,reason",
    [(0.5, "outside"), (4.0, "outside"), (0.0, "outside"), (1.0625, "grid"), (2.125, "grid")],
)
def test_approxtrain_rejects_unrepresentable_table(entry, reason):
    table = truncated_exact_table(2).copy()
    table[1, 2] = entry
    with pytest.raises(ValueError, match=reason):
        approx_multiply(f32(1.0), f32(1.0), table, 2, mode="approxtrain")
    approx_multiply(f32(1.0), f32(1.0), table, 2)  # fine in ieee mode


def test_approxtrain_rejects_rne_rounding():
    with pytest.raises(ValueError, match="approxtrain"):
        approx_multiply(
            f32(1.0), f32(1.0), truncated_exact_table(2), 2, rounding="rne", mode="approxtrain"
        )


# ---------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------

def test_table_shape_not_matching_bits_raises():
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        approx_multiply(f32(1.0), f32(1.0), exact_table(2), 3)
    with pytest.raises(ValueError, match="shape"):
        approx_multiply(f32(1.0), f32(1.0), np.ones((4, 2), np.float32), 2)


def test_bits_out_of_range_raises():
    with pytest.raises(ValueError, match="bits"):
        split_float32(f32(1.0), 24)
    with pytest.raises(ValueError, match="bits"):
        approx_multiply(f32(1.0), f32(1.0), np.ones((1, 1), np.float32), -1)


def test_non_finite_table_entry_raises():
    table = exact_table(1).copy()
    table[0, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        approx_multiply(f32(1.0), f32(1.0), table, 1)


def test_unknown_rounding_or_mode_raises():
    with pytest.raises(ValueError, match="rounding"):
        approx_multiply(f32(1.0), f32(1.0), exact_table(1), 1, rounding="nearest")
    with pytest.raises(ValueError, match="mode"):
        approx_multiply(f32(1.0), f32(1.0), exact_table(1), 1, mode="exact")


# ---------------------------------------------------------------------------
# approx_matmul
# ---------------------------------------------------------------------------

def test_matmul_with_k_zero_gives_zeros():
    a, b = np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32)
    out = approx_matmul(a, b, exact_table(2), 2)
    assert_same_float32(out, np.zeros((3, 4)))


def test_matmul_non_2d_operand_raises_naming_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 2\)"):
        approx_matmul(np.ones(3, np.float32), np.ones((3, 2), np.float32), exact_table(2), 2)


def test_matmul_inner_dimension_mismatch_raises_naming_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        approx_matmul(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32), exact_table(2), 2)


def float32_loop_matmul(a, b, bits):
    """Triple loop: exact products of truncated operands, float32 adds in k order."""
    ta = truncate_operand(a, bits).astype(np.float64)
    tb = truncate_operand(b, bits).astype(np.float64)
    m, k_dim = a.shape
    n = b.shape[1]
    out = np.zeros((m, n), np.float32)
    for i in range(m):
        for j in range(n):
            acc = np.float32(0.0)
            for k in range(k_dim):
                acc = np.float32(acc + np.float32(ta[i, k] * tb[k, j]))
            out[i, j] = acc
    return out


@st.composite
def matmul_operands(draw):
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32)))
    a = (rng.standard_normal((m, k)) * 2.0 ** rng.integers(-20, 20, (m, k))).astype(np.float32)
    b = (rng.standard_normal((k, n)) * 2.0 ** rng.integers(-20, 20, (k, n))).astype(np.float32)
    a[rng.random((m, k)) < 0.1] = 0.0
    return a, b


@FAST
@given(bits=st.sampled_from([1, 4, 7, 11]), operands=matmul_operands())
def test_matmul_exact_table_equals_float32_loop(bits, operands):
    a, b = operands
    expected = float32_loop_matmul(a, b, bits)
    assert_same_float32(approx_matmul(a, b, exact_table(bits), bits), expected)


@FAST
@given(seed=st.integers(0, 2 ** 32), operands=matmul_operands())
def test_matmul_equals_ordered_sum_of_approx_multiply(seed, operands):
    a, b = operands
    table = (np.random.default_rng(seed).random((8, 8)) * 4.0).astype(np.float32)
    expected = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            acc = np.float32(0.0)
            for k in range(a.shape[1]):
                acc = np.float32(acc + approx_multiply(a[i, k], b[k, j], table, 3))
            expected[i, j] = acc
    assert_same_float32(approx_matmul(a, b, table, 3), expected)


def test_matmul_accumulates_in_float32_in_increasing_k_order():
    # 1 + 2^-24 + 2^-24: in order each add rounds back to 1 (ties to even);
    # adding the two small terms first would give 1 + 2^-23.
    a = f32([[1.0, 2.0 ** -24, 2.0 ** -24]])
    b = f32([[1.0], [1.0], [1.0]])
    assert_same_float32(approx_matmul(a, b, exact_table(1), 1), [[1.0]])
    a = f32([[2.0 ** -24, 2.0 ** -24, 1.0]])
    assert_same_float32(approx_matmul(a, b, exact_table(1), 1), [[1.0 + 2.0 ** -23]])


def test_matmul_all_negative_zero_products_sum_to_positive_zero():
    out = approx_matmul(f32([[-0.0, -1.0]]), f32([[1.0], [0.0]]), exact_table(1), 1)
    assert_same_float32(out, [[0.0]])


def test_matmul_propagates_inf_and_nan_as_ieee_addition():
    a = f32([[np.inf, 1.0], [np.nan, 1.0], [np.inf, -np.inf]])
    b = f32([[1.0, -1.0], [1.0, 1.0]])
    out = approx_matmul(a, b, exact_table(2), 2)
    assert_same_float32(out, [[INF, -INF], [NAN, NAN], [NAN, -INF]])


def test_matmul_overflowing_product_and_overflowing_sum_give_inf():
    table = exact_table(2)
    out = approx_matmul(f32([[2.0 ** 64]]), f32([[2.0 ** 64, -(2.0 ** 64)]]), table, 2)
    assert_same_float32(out, [[INF, -INF]])
    out = approx_matmul(f32([[2.0 ** 127, 2.0 ** 127]]), f32([[1.0], [1.0]]), table, 2)
    assert_same_float32(out, [[INF]])


def test_matmul_passes_rounding_and_mode_through():
    table = truncated_exact_table(2)
    a, b = f32([[1.875]]), f32([[1.0]])
    assert_same_float32(approx_matmul(a, b, table, 2, rounding="rne"), [[2.0]])
    assert_same_float32(approx_matmul(a, b, table, 2), [[1.75]])
    a, b = f32([[-1.5 * 2.0 ** -60]]), f32([[1.5 * 2.0 ** -67]])  # Ea + Eb = 127
    assert_same_float32(approx_matmul(a, b, table, 2, mode="approxtrain"), [[0.0]])
    assert_same_float32(approx_matmul(a, b, table, 2), [[-SMALLEST_NORMAL]])
