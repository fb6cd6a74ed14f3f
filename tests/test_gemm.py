"""The approximate GEMM: every backend and kernel against the numpy reference, bit for bit."""

import functools
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import amsim
from amsim import gemm, generate, reference, sweep
from amsim.gemm import engine, planner
from amsim.errors import LUTError, RangeError


@pytest.fixture(scope="module")
def mitchell7():
    return gemm.resolve("mitchell", 7)


def lut_table(name, m, **params):
    return sweep.significand_table(generate.compile_for_mantissa(amsim.find_model(name), m, params), m)


def bits_equal(x, y):
    """Same float32 bits, any NaN matching any NaN."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    return x.shape == y.shape and bool(np.all((x.view(np.uint32) == y.view(np.uint32)) | (np.isnan(x) & np.isnan(y))))


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-45, 3e38, -3e38, 1e-37, 2.0**-126], np.float32)


@st.composite
def operands(draw, max_dim=40, specials=True):
    m, k, n = (draw(st.integers(0, max_dim)) for _ in range(3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 1e-20, 1e20]))
    a = (rng.standard_normal((m, k)) * scale).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    if specials and draw(st.booleans()) and a.size and b.size:
        for x in (a, b):
            idx = rng.integers(0, x.size, max(1, x.size // 20))
            x.flat[idx] = rng.choice(SPECIALS, idx.size)
    return a, b


TABLES = {name: lut_table(name, 7) for name in ("mitchell", "at_mbm", "exact", "drum")}


@pytest.mark.parametrize("method", ["auto", "expand", "lookup", "direct"])
@pytest.mark.parametrize("name", sorted(TABLES))
@settings(max_examples=30, deadline=None)
@given(ab=operands(), rounding=st.sampled_from(["truncate", "rne"]))
def test_cpu_backend_equals_reference_bit_for_bit(name, method, ab, rounding):
    a, b = ab
    table = TABLES[name]
    expected = reference.approx_matmul(a, b, table, 7, rounding=rounding)
    got = gemm.matmul(a, b, table, rounding=rounding, backend="cpu", method=method)
    ra, rb = _exponents(a, b, rounding)
    mult = gemm.resolve(table)
    if method in ("expand", "lookup") and not (engine.expand_is_exact(mult, ra, rb, "ieee")
                                               and engine.expand_is_exact(mult, rb, ra, "ieee")):
        return  # a forced fast kernel outside its exact window, in the orientation the planner picks
        #         (C^T = B^T A^T swaps the operands' roles), is allowed to differ (auto never does this)
    assert bits_equal(got, expected)


# parallel: one thread, or the output split between threads by rows or by column tiles
PLANS = [(method, swap, parallel) for method in ("expand", "lookup") for swap in (False, True)
         for parallel in (False, "rows", "tiles")]


def plan_id(plan):
    method, swap, parallel = plan
    return f"{method}{'-swapped' if swap else ''}{'-by-' + parallel if parallel else ''}"


@pytest.mark.parametrize("plan", PLANS, ids=plan_id)
@settings(max_examples=25, deadline=None)
@given(ab=operands(max_dim=70), rounding=st.sampled_from(["truncate", "rne"]))
def test_every_plan_of_the_planner_gives_the_reference_bits(plan, ab, rounding):
    """Whichever kernel, orientation and threading the cost model picks, the bits are the same."""
    a, b = ab
    expected = reference.approx_matmul(a, b, TABLES["mitchell"], 7, rounding=rounding)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: plan)
        got = gemm.matmul(a, b, TABLES["mitchell"], rounding=rounding, threads=2)
    assert bits_equal(got, expected)


@pytest.mark.parametrize("m", [2, 5, 6, 8])
@pytest.mark.parametrize("plan", [p for p in PLANS if not p[2]], ids=plan_id)
def test_fast_kernels_equal_the_reference_for_every_lut_width(m, plan):
    """Row lengths 4..256 take different lookup code (blend trees, 64-entry byte-plane lookups)."""
    rng = np.random.default_rng(m)
    a = rng.standard_normal((37, 50)).astype(np.float32)
    b = rng.standard_normal((50, 70)).astype(np.float32)  # 70 columns: partial 16- and 64-wide blocks
    table = lut_table("mitchell", m)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: plan)
        got = gemm.matmul(a, b, table)
    assert bits_equal(got, reference.approx_matmul(a, b, table, m))


@pytest.mark.parametrize("m", [7, 8])
@pytest.mark.parametrize("n", [10, 150])
@pytest.mark.parametrize("plan", PLANS, ids=plan_id)
def test_fast_kernels_equal_the_reference_across_blocks_of_k_and_rows(plan, n, m):
    """K = 1100: several of the kernels' k-blocks; 19 rows: groups of rows and a partial one;
    150 columns: full and partial 64-column panels (the byte-plane lookup takes them as one
    10-vector chunk); 10 columns: one partial vector."""
    a, b, table, expected = _blocks_case(n, m)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: plan)
        got = gemm.matmul(a, b, table, threads=2)
    assert bits_equal(got, expected)


@pytest.mark.parametrize("parallel", [False, True])
def test_expand_kernel_splitting_a_transposed_operand_as_it_goes_spans_row_blocks(mitchell7, parallel):
    """4200 rows: two of the expand kernel's row blocks, each splitting its part of X^T anew."""
    rng = np.random.default_rng(11)
    patches = rng.standard_normal((20, 4200)).astype(np.float32)  # X = patches.T: a transposed view
    b = rng.standard_normal((20, 40)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: ("expand", False, parallel))
        got = gemm.matmul(patches, b, mitchell7, transpose_a=True, threads=2)
    assert bits_equal(got, reference.approx_matmul(patches.T, b, mitchell7.table, 7))


@pytest.mark.parametrize("plan", PLANS, ids=plan_id)
def test_a_transposed_x_falls_back_to_the_direct_kernel_in_its_own_layout(mitchell7, plan):
    """The lookup and direct kernels read a transposed X k-major (X^T split in memory order), the
    expand kernel in k-blocks: an operand outside the window sends the GEMM to the direct kernel,
    which needs X split again when the layouts differ. K = 20: the expand kernel's X row-major;
    600 columns: more panels than it splits X for as it goes."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((20, 300)).astype(np.float32)  # A = a.T, B = b.T: both transposed views
    b = rng.standard_normal((600, 20)).astype(np.float32)
    a[3, 7] = b[11, 4] = 3e38  # products overflow: outside every fast kernel's window
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: plan)
        got = gemm.matmul(a, b, mitchell7, transpose_a=True, transpose_b=True, threads=2)
    assert bits_equal(got, reference.approx_matmul(a.T, b.T, mitchell7.table, 7))


@pytest.mark.parametrize("name,m", [("mitchell", 7), ("exact", 7), ("mitchell", 8)])
@pytest.mark.parametrize("n", [16 * v - 3 for v in range(2, 13)] + [400])
def test_lookup_kernel_equals_the_reference_for_every_chunk_width(n, name, m):
    """The byte-plane lookup kernel has code for each chunk width (2 to 12 vectors of 16 columns,
    the last one partial), for one row and for pairs (5 rows: two pairs and one row alone), and
    for LUTs of bfloat16 entries (mitchell at M = 7: two byte planes) or not; 400 columns: three
    chunks. K = 300: several k-blocks at every width."""
    rng = np.random.default_rng(n)
    a = rng.standard_normal((5, 300)).astype(np.float32)
    b = rng.standard_normal((300, n)).astype(np.float32)
    table = lut_table(name, m)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: ("lookup", False, False))
        got = gemm.matmul(a, b, table)
    assert bits_equal(got, reference.approx_matmul(a, b, table, m))


@pytest.mark.parametrize("name", ["mitchell", "exact"])
@pytest.mark.parametrize("n", [16 * 133, 16 * 133 - 5])
def test_lookup_chunks_of_a_wide_part_keep_to_its_columns(name, n):
    """133 vectors of columns: in chunks of at most 12 whose sizes differ by one at most (11 x 12
    + 1 would leave a chunk of one vector, which the byte-plane lookups cannot take)."""
    rng = np.random.default_rng(n)
    a = rng.standard_normal((3, 40)).astype(np.float32)
    b = rng.standard_normal((40, n)).astype(np.float32)
    table = TABLES[name]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: ("lookup", False, False))
        got = gemm.matmul(a, b, table)
    assert bits_equal(got, reference.approx_matmul(a, b, table, 7))


def test_dot_products_apply_to_luts_of_bfloat16_entries_below_m_8():
    """The planner's dot-product cost table applies where the kernels take dot products: bfloat16
    entries, M < 8."""
    if not engine.load()[1].amsim_dot_products():
        pytest.skip("this build has no bfloat16 dot products (no AVX512-BF16)")
    assert gemm.resolve("mitchell", 7).dot_products
    assert not gemm.resolve("exact", 7).dot_products
    assert not gemm.resolve("mitchell", 8).dot_products


def _forced(method, a, b, table):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: (method, False, False))
        return gemm.matmul(a, b, table)


@pytest.mark.parametrize("method", ["expand", "lookup"])
@pytest.mark.parametrize("k,n", [(1, 64), (51, 40), (301, 150)])
def test_dot_products_take_an_odd_k_alone(mitchell7, method, k, n):
    """Bfloat16 dot products add k in pairs: an odd K, or a k-block of odd length (the lookups'
    50 plus one, the expansion's 8 and 5), ends with one. 40 columns: three tiles of the
    expansion, T in two halves with the last tile missing; 150: full panels and one of 22."""
    rng = np.random.default_rng(k)
    a = rng.standard_normal((9, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    assert bits_equal(_forced(method, a, b, mitchell7.table), reference.approx_matmul(a, b, mitchell7.table, 7))


@pytest.mark.parametrize("method", ["expand", "lookup"])
@pytest.mark.parametrize("column0", [1.0, 2.0])
def test_dot_products_give_special_operands_their_products(mitchell7, method, column0):
    """Zeros in Y are masked to zero factors (column0: a LUT whose column 0, where a zero looks
    up, holds entries of [2, 4), which no exponent arithmetic turns into zero); inf, NaN (any
    payload) and zero scales of X go through the dot products; an inf or NaN in Y sends its
    k-block (of 50 for the lookups, 8 for the expansion) to the float32 kernels."""
    table = mitchell7.table.copy()
    table[:, 0] *= column0
    rng = np.random.default_rng(5)
    a = rng.standard_normal((5, 300)).astype(np.float32)
    b = rng.standard_normal((300, 64)).astype(np.float32)
    b[rng.random(b.shape) < 0.3] = 0.0
    b[10, 5], b[20, 7] = -0.0, 1e-40
    b[:, 11] = 0.0                # sums of zero products only: exactly zero
    a[0, 3], a[1, 40], a[2, 41], a[3, 200] = np.inf, np.nan, 0.0, -np.inf
    a[4, 7] = np.array([0x7F800001], np.uint32).view(np.float32)[0]  # a NaN whose payload bfloat16 drops
    b[3, 9] = 0.0                 # inf x 0: NaN in (0, 9)
    b[120, 17], b[260, 30] = np.inf, np.nan
    assert bits_equal(_forced(method, a, b, table), reference.approx_matmul(a, b, table, 7))


@pytest.mark.parametrize("method", ["expand", "lookup"])
def test_subnormal_partial_sums_stay_outside_the_dot_product_window(mitchell7, method):
    """Products near 2^-121 are exact for the float32 kernels, but their sums can be subnormal,
    which bfloat16 dot products flush to zero: such operands take the float32 kernels."""
    rng = np.random.default_rng(6)
    a = np.ldexp(1 + rng.integers(0, 128, (4, 2)) / 128, -60).astype(np.float32)
    b = np.ldexp(1 + rng.integers(0, 128, (2, 64)) / 128, -61).astype(np.float32)
    b[1] = -b[1]
    expected = reference.approx_matmul(a, b, mitchell7.table, 7)
    tiny = (expected != 0) & (np.abs(expected) < np.finfo(np.float32).tiny)
    assert tiny.any()  # the case this test is about
    assert bits_equal(_forced(method, a, b, mitchell7.table), expected)


def _rounding_edges(shape, m, rng):
    """Operands where rounding to nearest even matters at M bits: ties (halfway between two M-bit
    mantissas, so the kept lsb decides), mantissas of all ones (their carry runs into the
    exponent), and the largest subnormal (the carry would make it normal; it stays zero)."""
    kept = rng.integers(0, 1 << m, shape)
    tie = (1 + kept / 2.0**m + 2.0**-(m + 1)) * 2.0 ** rng.integers(-3, 4, shape)
    carry = np.float32(2.0) - np.float32(2.0**-23)
    subnormal = np.array([0x007FFFFF], np.uint32).view(np.float32)[0]
    pick = rng.integers(0, 4, shape)
    x = np.where(pick == 0, tie, np.where(pick == 1, carry, np.where(pick == 2, subnormal, rng.standard_normal(shape))))
    return (x * rng.choice([-1, 1], shape)).astype(np.float32)


@pytest.mark.parametrize("name,m", [("mitchell", 7), ("exact", 7), ("mitchell", 5), ("mitchell", 8)])
@pytest.mark.parametrize("plan", PLANS, ids=plan_id)
def test_fast_kernels_round_to_nearest_even_as_the_split_does(plan, name, m):
    """Ties, carries into the exponent and subnormals, in both operands: the lookups split Y as
    they go (lookup_vbmi), the expand kernel and the others read amsim_split_f32's split; 70
    columns: two 64-column groups of lookups, the second partial."""
    rng = np.random.default_rng(m)
    a, b = _rounding_edges((23, 90), m, rng), _rounding_edges((90, 70), m, rng)
    a[:, 5] = b[:, 3] = a[4] = b[6] = np.array([0x007FFFFF], np.uint32).view(np.float32)[0]  # zero sums
    table = lut_table(name, m)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: plan)
        got = gemm.matmul(a, b, table, rounding="rne", threads=2)
    assert bits_equal(got, reference.approx_matmul(a, b, table, m, rounding="rne"))


@functools.lru_cache(maxsize=None)
def _blocks_case(n, m):
    rng = np.random.default_rng(n + m)
    a = rng.standard_normal((19, 1100)).astype(np.float32)
    b = rng.standard_normal((1100, n)).astype(np.float32)
    table = lut_table("mitchell", m)
    return a, b, table, reference.approx_matmul(a, b, table, m)


@pytest.mark.parametrize("m_rows,k,n,dp,expected", [
    (1024, 1024, 1024, False, ("expand", False, "tiles")),  # many rows share each expanded entry
    (1024, 1024, 1024, True, ("expand", False, "tiles")),
    (6, 50176, 25, False, ("lookup", False, "rows")),       # LeNet conv1 filter gradient, C^T: few rows, huge K
    (25, 50176, 6, False, ("lookup", True, "rows")),        # the same GEMM as the user writes it: swapped
    (64, 84, 10, False, ("lookup", True, False)),           # a small dense layer: one thread
    (50176, 25, 6, False, ("lookup", True, "tiles")),       # LeNet conv1 forward: swapped, the lookups
    (50176, 25, 6, True, ("lookup", True, "tiles")),        # gather its patches^T as they go; by rows,
                                                            # each thread would prepare every column
    (50176, 6, 25, False, ("expand", False, "rows")),       # its input gradient: 25 columns share each
                                                            # expanded entry
])
def test_planner_picks_the_kernel_the_shape_needs(start_costs, m_rows, k, n, dp, expected):
    """With the engine's start costs (a machine's fit may weigh close calls otherwise)."""
    if engine.build_group_vectors() == 1:
        pytest.skip("the start costs are for the byte-plane (VBMI) kernels")
    if dp and not engine.load()[1].amsim_dot_products():
        pytest.skip("this build has no bfloat16 dot products")
    assert planner.fast_plan(m_rows, k, n, 7, "auto", 2, False, False, False, dp) == expected


@pytest.fixture
def start_costs():
    """The engine's start costs in place of this machine's fit, for the test's duration."""
    ffi, lib = engine.load()
    fitted = planner.costs(False), planner.costs(True)
    planner.set_costs(ffi, lib, None, None)
    yield
    planner.set_costs(ffi, lib, *fitted)


def test_planner_counts_are_the_cost_models_terms():
    """The counts the cost fit uses are those the C planner weighs: the expand kernel sweeps one
    multiply-add per product and vector, the lookups look up each product's vector once."""
    rows, k, cols = 40, 30, 64
    expand = planner.plan_features("expand", rows, k, cols, 7)
    lookup = planner.plan_features("lookup", rows, k, cols, 7)
    assert expand["fma"] == rows * k * cols // 16 and expand["out"] == rows * cols // 16
    assert lookup["lookup"] == rows * k * cols // 16 and "fma" not in lookup


def test_planner_keeps_a_forced_method():
    assert planner.fast_plan(1024, 1024, 1024, 7, "lookup", 2)[0] == "lookup"
    assert planner.fast_plan(6, 50176, 25, 7, "expand", 2)[0] == "expand"


def _exponents(a, b, rounding):
    ffi, lib = engine.load()
    return engine.split(ffi, lib, a, 7, rounding).exponents, engine.split(ffi, lib, b, 7, rounding).exponents


def _unblock(flat, rows, cols, kb):
    """The (rows, cols) array from amsim_split_f32's layout in kb-column blocks."""
    out = np.empty((rows, cols), flat.dtype)
    for b0 in range(0, cols, kb or max(cols, 1)):
        w = min(kb or cols, cols - b0)
        out[:, b0:b0 + w] = flat[b0 * rows:(b0 + w) * rows].reshape(rows, w)
    return out


@settings(max_examples=60, deadline=None)
@given(ab=operands(max_dim=50), transposed=st.booleans(), kb=st.sampled_from([0, 4, 8, 16]),
       rounding=st.sampled_from(["truncate", "rne"]), m=st.sampled_from([4, 7, 8]))
def test_operand_split_matches_reference_in_every_layout(ab, transposed, kb, rounding, m):
    x = ab[0].T if transposed else ab[0]  # a transposed view takes the tile-transposing path
    _assert_split_matches_reference(x, m, rounding, kb)


@pytest.mark.parametrize("rounding", ["truncate", "rne"])
@pytest.mark.parametrize("layout", ["contiguous", "row view", "transposed"])
@pytest.mark.parametrize("kb", [0, 4, 5, 8, 16])
def test_operand_split_matches_reference_on_large_operands(layout, kb, rounding):
    # thousands of rows: several row groups of the blocked split; specials and values that round to
    # inf are scattered so that some 16-lane vectors take the all-normal shortcut and some do not
    rng = np.random.default_rng(kb)
    base = (rng.standard_normal((3001, 77)) * np.exp2(rng.integers(-20, 20, (3001, 77)))).astype(np.float32)
    spots = rng.integers(0, base.size, 300)
    base.flat[spots] = rng.choice(np.append(SPECIALS, np.float32(3.4028235e38)), spots.size)
    # the transposed view has 3001 columns: several of the column blocks that its split sweeps
    x = {"contiguous": base[:, :70], "row view": base[:, 3:73], "transposed": base[:, :70].T}[layout]
    if layout == "contiguous":
        x = np.ascontiguousarray(x)
    _assert_split_matches_reference(x, 7, rounding, kb)


def _assert_split_matches_reference(x, m, rounding, kb):
    ffi, lib = engine.load()
    got = engine.split(ffi, lib, x, m, rounding, kb)
    sign, exponent, index, kind = reference.split_float32(x, m, rounding)
    rows, cols = x.shape
    scale = _unblock(np.asarray(got.scale).ravel(), rows, cols, kb)
    expected = ((sign << 31) | (np.where(kind == reference.KIND_ZERO, 0, exponent) << 23)).astype(np.uint32)
    is_nan = kind == reference.KIND_NAN
    assert np.array_equal(np.isnan(scale), is_nan)
    assert np.array_equal(scale.view(np.uint32)[~is_nan], expected[~is_nan])
    assert np.array_equal(_unblock(np.asarray(got.idx).ravel(), rows, cols, kb), index)
    normal = exponent[kind == reference.KIND_NORMAL]
    assert got.exponents == ((int(normal.min()), int(normal.max())) if normal.size else None)
    # the range pass of GEMMs that split X as they go finds the same range without splitting
    xv, ptr, rs, cs = engine.strided(ffi, x)
    found = ffi.new("int32_t[2]")
    lib.amsim_range_f32(ptr, rows, cols, rs, cs, m, int(rounding == "rne"), 0, rows, found)
    assert (tuple(found) if found[0] <= found[1] else None) == got.exponents


@pytest.mark.parametrize("m", [1, 3, 5, 10, 12])
def test_direct_kernel_equals_reference_for_wider_mantissas(m):
    rng = np.random.default_rng(m)
    table = lut_table("drum", m, k=4)
    a = rng.standard_normal((9, 33)).astype(np.float32)
    b = rng.standard_normal((33, 11)).astype(np.float32)
    assert bits_equal(gemm.matmul(a, b, table), reference.approx_matmul(a, b, table, m))


@pytest.mark.parametrize("name", ["mitchell", "at_mitchell"])
def test_model_mode_equals_lut_path_where_both_exist(name):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((17, 40)).astype(np.float32)
    b = rng.standard_normal((40, 23)).astype(np.float32)
    a[0, :5] = SPECIALS[:5]
    mult = gemm.resolve(name, 7)
    assert bits_equal(gemm.matmul(a, b, mult, method="model"), gemm.matmul(a, b, mult, method="direct"))


def test_model_mode_simulates_full_width_mbm():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.5, 2, (8, 64)).astype(np.float32)
    b = rng.uniform(0.5, 2, (64, 8)).astype(np.float32)
    mult = gemm.resolve("mbm", 23)
    assert mult.table is None
    got = gemm.matmul(a, b, mult)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    rel = np.abs(got / exact - 1)
    assert 0 < rel.max() < 0.05  # MBM errs by a few percent per product, less in the sum


def test_exact_lut_equals_numpy_matmul_of_truncated_operands():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 96)).astype(np.float32)
    b = rng.standard_normal((96, 48)).astype(np.float32)

    def truncate(x):
        return (x.view(np.uint32) & np.uint32(~((1 << 16) - 1) & 0xFFFFFFFF)).view(np.float32)

    got = gemm.matmul(a, b, TABLES["exact"])
    # Products of 8-bit significands are exact in float32; only the order of the sums differs.
    expected = truncate(a).astype(np.float64) @ truncate(b).astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=96 * 2**-23 * np.abs(truncate(a)) .max() * np.abs(truncate(b)).max())
    in_order = np.zeros((64, 48), np.float32)
    for k in range(96):
        in_order += np.outer(truncate(a)[:, k], truncate(b)[k, :])
    assert bits_equal(got, in_order)


# parallel plans of every kind, so that the calls below use the C pool whatever the cost model says
PARALLEL_PLANS = [("expand", False, True), ("expand", True, True), ("lookup", False, True), ("lookup", True, True)]


def test_results_are_identical_for_any_thread_count(mitchell7):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((200, 300)).astype(np.float32)
    b = rng.standard_normal((300, 700)).astype(np.float32)
    one = gemm.matmul(a, b, mitchell7, threads=1)
    for threads in (2, 3, 8):
        assert bits_equal(gemm.matmul(a, b, mitchell7, threads=threads), one)
        for plan in PARALLEL_PLANS:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(planner, "plan", lambda *args, plan=plan: plan)
                assert bits_equal(gemm.matmul(a, b, mitchell7, threads=threads), one)


def test_concurrent_calls_from_several_threads_agree(mitchell7, monkeypatch):
    rng = np.random.default_rng(5)
    pairs = [(rng.standard_normal((150, 130)).astype(np.float32), rng.standard_normal((130, 170)).astype(np.float32))
             for _ in range(3)]
    big = pairs[0][0].copy()
    big[0, 0] = 3e38  # outside the fast kernels' window: the direct fallback, on the pool too
    pairs.append((big, pairs[0][1]))
    expected = [reference.approx_matmul(a, b, mitchell7.table, 7) for a, b in pairs]
    results = [None] * 8
    local = threading.local()
    monkeypatch.setattr(planner, "plan", lambda *args: PARALLEL_PLANS[local.plan])
    # a multiplier per plan: each keeps the GEMMs it made ready with its plan
    mults = [gemm.Multiplier(7, mitchell7.table) for _ in PARALLEL_PLANS]

    def work(t):
        local.plan = t // 2
        a, b = pairs[t % 4]
        results[t] = gemm.matmul(a, b, mults[local.plan], threads=3)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t, r in enumerate(results):
        assert bits_equal(r, expected[t % 4])


FORK_OPERANDS = (np.random.default_rng(7).standard_normal((64, 40)).astype(np.float32),
                 np.random.default_rng(8).standard_normal((40, 80)).astype(np.float32))


def _parallel_matmul_in_child(queue):
    queue.put(gemm.matmul(*FORK_OPERANDS, "mitchell", bits=7, threads=2))  # the parent's plan, forked


@pytest.mark.timing  # a sleep, and which threads the scheduler runs when
def test_gemms_back_to_back_count_on_an_awake_worker(mitchell7):
    """A run of small GEMMs pays one wake-up of the pool, not one each: after a GEMM returns, the
    planner may count on an awake worker, as it may while one polls; after a pause it may not."""
    lib = engine.load()[1]
    a, b = np.ones((8, 8), np.float32), np.ones((8, 8), np.float32)
    time.sleep(0.05)  # a worker polls for 0.2 ms after its last job, then sleeps
    assert not lib.amsim_pool_awake()
    awake = []
    for _ in range(5):  # any one of them: the test's own thread may be descheduled for 0.2 ms
        gemm.matmul(a, b, mitchell7, threads=1)
        awake.append(lib.amsim_pool_awake())
    assert any(awake)


@pytest.mark.timing  # counts of when the scheduler runs the worker
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a worker thread beside the caller")
def test_a_worker_that_shares_the_callers_cpu_is_not_counted_on():
    """A process held to one CPU: its worker takes a part only when the caller stops, late, so the
    planner stops counting on an awake worker (a small GEMM on two threads would run slower than
    on one)."""
    code = """if True:
        import os
        import numpy as np
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before the pool's worker starts
        from amsim import gemm
        from amsim.gemm import engine, planner
        lib = engine.load()[1]
        mult = gemm.resolve("mitchell", 7)
        a, b = np.ones((64, 400), np.float32), np.ones((400, 120), np.float32)
        planner.plan = lambda *args: ("lookup", False, "rows")
        awake = []
        for _ in range(400):  # the first few: the worker starts asleep, and Linux favours a new thread
            gemm.matmul(a, b, mult, threads=2)
            awake.append(lib.amsim_pool_awake())
        print("".join(map(str, awake)))
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # now and then Linux runs the worker at once, and the pool counts on it again until the next
    # late part: most of the last 100, not all, find it not counted on
    assert result.stdout.strip()[-100:].count("0") >= 90, result.stdout


def test_a_forked_child_can_run_parallel_gemms(mitchell7, monkeypatch):
    # the child has none of the parent's pool threads: its GEMMs must start their own
    import multiprocessing

    monkeypatch.setattr(planner, "plan", lambda *args: PARALLEL_PLANS[0])
    gemm.matmul(*FORK_OPERANDS, mitchell7, threads=2)  # the parent's pool is up
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_parallel_matmul_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert bits_equal(got, reference.approx_matmul(*FORK_OPERANDS, mitchell7.table, 7))


def test_batched_matmul_broadcasts_leading_dimensions(mitchell7):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((3, 1, 5, 7)).astype(np.float32)
    b = rng.standard_normal((4, 7, 6)).astype(np.float32)
    out = gemm.matmul(a, b, mitchell7)
    assert out.shape == (3, 4, 5, 6)
    for i in range(3):
        for j in range(4):
            assert bits_equal(out[i, j], reference.approx_matmul(a[i, 0], b[j], mitchell7.table, 7))


def test_transposes_and_non_contiguous_inputs_work(mitchell7):
    rng = np.random.default_rng(7)
    big = rng.standard_normal((40, 60)).astype(np.float32)
    a = big[::2, 1::3]          # (20, 20), non-contiguous
    b = big[:20, ::-3].T        # negative strides, transposed view
    expected = reference.approx_matmul(np.ascontiguousarray(a), np.ascontiguousarray(b), mitchell7.table, 7)
    assert bits_equal(gemm.matmul(a, b, mitchell7), expected)
    assert bits_equal(gemm.matmul(np.ascontiguousarray(a.T), b, mitchell7, transpose_a=True), expected)
    assert bits_equal(gemm.matmul(a, np.ascontiguousarray(b.T), mitchell7, transpose_b=True), expected)


def test_repeated_calls_follow_their_operands_layouts_and_options(mitchell7):
    """A GEMM made ready at its first call serves later calls with operands of the same shape and
    layout and the same options; others get their own."""
    rng = np.random.default_rng(11)
    big = rng.standard_normal((60, 70)).astype(np.float32)
    big.flat[rng.integers(0, big.size, 40)] = rng.choice(SPECIALS, 40)
    layouts = {"contiguous": lambda x: np.ascontiguousarray(x), "fortran": lambda x: np.asfortranarray(x),
               "strided": lambda x: np.pad(x, ((0, 0), (0, 3)))[:, :x.shape[1]],
               "negative strides": lambda x: np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]}
    a, b = big[:20, :30], big[20:50, 30:55]
    for rounding in ("truncate", "rne"):
        expected = reference.approx_matmul(a, b, mitchell7.table, 7, rounding=rounding)
        for name_a, layout_a in layouts.items():
            for name_b, layout_b in layouts.items():
                for _ in range(2):
                    got = gemm.matmul(layout_a(a), layout_b(b), mitchell7, rounding=rounding)
                    assert bits_equal(got, expected), (rounding, name_a, name_b)


@pytest.mark.parametrize("layout", ["rows", "transposed view", "every other column", "every other row, transposed"])
@pytest.mark.parametrize("plan", [p for p in PLANS if p[0] == "lookup"], ids=plan_id)
def test_lookups_read_y_raw_in_any_layout(mitchell7, plan, layout):
    """The lookups split Y as they read it: its rows in place, a transposed view gathered 16 x 16
    tiles at a time, other strides element by element (Y is B, or A^T in a swapped plan)."""
    rng = np.random.default_rng(13)
    a = rng.standard_normal((40, 50)).astype(np.float32)
    b = rng.standard_normal((50, 70)).astype(np.float32)
    lay = {"rows": lambda x: x, "transposed view": lambda x: np.ascontiguousarray(x.T).T,
           "every other column": lambda x: np.repeat(x, 2, axis=1)[:, ::2],
           "every other row, transposed": lambda x: np.repeat(x.T, 2, axis=0)[::2].T}[layout]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner, "plan", lambda *args: plan)
        got = gemm.matmul(lay(a), lay(b), mitchell7, threads=2)
    assert bits_equal(got, reference.approx_matmul(a, b, mitchell7.table, 7))


def test_a_repeated_call_still_refuses_operands_of_another_dtype(mitchell7):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    gemm.matmul(a, b, mitchell7)
    with pytest.raises(TypeError, match="float64"):
        gemm.matmul(a.astype(np.float64), b, mitchell7)
    with pytest.raises(TypeError, match="float16"):
        gemm.matmul(a, b.astype(np.float16), mitchell7)


def test_a_gemm_made_ready_holds_the_plans_for_a_sleeping_and_an_awake_pool(mitchell7, monkeypatch):
    """The planner is asked once per state of the pool, at the first call; amsim_gemm_ready picks
    the plan for the state the pool is in at each call."""
    asked = []

    def plan(ffi, lib, lut, args, awake):
        asked.append(awake)
        return ("lookup", False, bool(awake))

    monkeypatch.setattr(planner, "plan", plan)
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((40, 50)).astype(np.float32), rng.standard_normal((50, 60)).astype(np.float32)
    for _ in range(3):
        assert bits_equal(gemm.matmul(a, b, mitchell7, threads=2), reference.approx_matmul(a, b, mitchell7.table, 7))
    assert sorted(asked) == [False, True]


@pytest.mark.parametrize("shape_a,shape_b", [((0, 3), (3, 4)), ((2, 0), (0, 4)), ((2, 3), (3, 0)), ((1, 1), (1, 1))])
def test_empty_and_unit_shapes(mitchell7, shape_a, shape_b):
    a = np.ones(shape_a, np.float32)
    b = np.ones(shape_b, np.float32)
    got = gemm.matmul(a, b, mitchell7)
    assert got.shape == (shape_a[0], shape_b[1])
    assert bits_equal(got, reference.approx_matmul(a, b, mitchell7.table, 7))


def test_approxtrain_mode_equals_reference(mitchell7):
    table = lut_table("at_mbm", 7)
    rng = np.random.default_rng(8)
    a = np.ldexp(rng.uniform(1, 2, (30, 40)), rng.integers(-70, -50, (30, 40))).astype(np.float32)
    b = np.ldexp(rng.uniform(1, 2, (40, 20)), rng.integers(-70, -50, (40, 20))).astype(np.float32)
    a[0, :] = 1.5 * 2.0**-64  # row 0 x column 0: Ea + Eb = 127 biased and a carry: ApproxTrain's +0 zone
    b[:, 0] = 1.5 * 2.0**-63
    expected = reference.approx_matmul(a, b, table, 7, mode="approxtrain")
    assert bits_equal(gemm.matmul(a, b, table, mode="approxtrain"), expected)
    assert expected[0, 0] == 0 and gemm.matmul(a, b, table)[0, 0] > 0


def test_lut_accepts_objects_files_and_model_names(tmp_path):
    from amsim import lut as lutmod

    obj = generate.mantissa_lut(amsim.find_model("at_mbm"), 7, samples=1000)
    path = lutmod.save(obj, tmp_path / "at_mbm_m7.npz")
    bin_path = lutmod.save_approxtrain(obj, tmp_path / "MBM_7.bin")
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((5, 6)).astype(np.float32)
    results = [gemm.matmul(a, b, x, bits=7) for x in (obj, path, str(path), bin_path, "at_mbm", obj.table)]
    for r in results[1:]:
        assert bits_equal(r, results[0])


def test_lut_for_another_width_is_refused():
    with pytest.raises(LUTError, match="M=7, not M=5"):
        gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), TABLES["mitchell"], bits=5)


def test_model_name_without_bits_is_refused():
    with pytest.raises(RangeError, match="bits=M"):
        gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), "mitchell")


@pytest.mark.parametrize("a_shape,b_shape,message", [((2, 3), (4, 5), r"a \(2, 3\) and b \(4, 5\)"),
                                                     ((3,), (3, 2), r"shape \(3,\)"),
                                                     ((2, 2, 3), (3, 3, 4), "do not broadcast")])
def test_shape_mismatches_name_the_shapes(mitchell7, a_shape, b_shape, message):
    with pytest.raises(ValueError, match=message):
        gemm.matmul(np.ones(a_shape, np.float32), np.ones(b_shape, np.float32), mitchell7)


def test_wrong_dtype_is_refused_with_the_shape(mitchell7):
    with pytest.raises(TypeError, match=r"float64 \(shape \(2, 2\)\)"):
        gemm.matmul(np.ones((2, 2)), np.ones((2, 2), np.float32), mitchell7)


def test_lut_with_non_finite_entries_is_refused():
    table = TABLES["mitchell"].copy()
    table[3, 4] = np.inf
    with pytest.raises(LUTError, match="finite"):
        gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), table)


def test_approxtrain_mode_refuses_a_table_off_its_grid():
    with pytest.raises(LUTError, match="ApproxTrain"):
        gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), TABLES["exact"], mode="approxtrain")


def test_lut_with_zero_entries_uses_the_exact_direct_kernel():
    table = TABLES["mitchell"].copy()
    table[:, 0] = 0.0  # an inf operand times such an entry must still give inf, not NaN
    a = np.array([[np.inf, 1.0]], np.float32)
    b = np.array([[1.0], [1.0]], np.float32)
    assert bits_equal(gemm.matmul(a, b, table), reference.approx_matmul(a, b, table, 7))
    assert np.isinf(gemm.matmul(a, b, table)[0, 0])


@pytest.mark.parametrize("variant", ["portable", "avx2", "no-vbmi", "no-bf16"])
def test_kernels_built_for_other_cpus_equal_reference(monkeypatch, variant):
    """The builds for CPUs without intrinsics, with AVX2 but no AVX-512, without VBMI, or without
    bfloat16 dot products (forced here), give the same bits."""
    build = engine.load
    monkeypatch.setattr(engine, "load", lambda: build(variant))
    rng = np.random.default_rng(10)
    for shape in [(40, 33, 300), (300, 20, 17)]:
        a = rng.standard_normal(shape[:2]).astype(np.float32)
        b = rng.standard_normal(shape[1:]).astype(np.float32)
        for method in ("expand", "lookup"):
            assert bits_equal(gemm.matmul(a, b, TABLES["mitchell"], method=method),
                              reference.approx_matmul(a, b, TABLES["mitchell"], 7))


@pytest.mark.parametrize("table,message", [
    (np.zeros((0, 0), np.float32), r"\(2\^M, 2\^M\) with M = 1..12, not \(0, 0\)"),
    (np.ones((1, 1), np.float32), r"not \(1, 1\)"),
    (np.ones((4, 8), np.float32), r"not \(4, 8\)"),
    (np.ones((8192, 8192), np.uint8), r"not \(8192, 8192\)"),
    (np.ones(16, np.float32), r"not \(16,\)"),
    (-np.ones((4, 4), np.float32), r"entry \[0, 0\] is -1.0: significand products are never negative"),
    (np.array([["a", "b"], ["c", "d"]]), "not <U1 values"),
    (np.ones((4, 4), complex), "not complex128 values"),
])
def test_lut_arrays_that_cannot_be_significand_tables_are_refused(table, message):
    with pytest.raises(LUTError, match=message):
        gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), table)


@pytest.mark.parametrize("bits", [0, -1, 24, 7.0, 7.5, "7", True])
def test_bits_must_be_a_mantissa_width(bits):
    with pytest.raises(RangeError, match=r"bits \(mantissa fraction bits M\) must be an integer in 1..23"):
        gemm.resolve("mitchell", bits)


@pytest.mark.parametrize("threads", [0, -2, 1.5, "2", True])
def test_threads_must_be_a_positive_int(mitchell7, threads):
    with pytest.raises(RangeError, match=r"threads \(None: every available CPU\) must be an integer >= 1"):
        gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), mitchell7, threads=threads)


def test_concurrent_model_mode_calls_of_one_shape_keep_their_own_operands():
    """Model mode (M > 12): GEMMs of one shape share their made-ready arguments, not their operands."""
    mult = gemm.resolve("mitchell", 14)
    rng = np.random.default_rng(21)
    pairs = [(rng.standard_normal((40, 200)).astype(np.float32), rng.standard_normal((200, 30)).astype(np.float32))
             for _ in range(4)]
    expected = [gemm.matmul(a, b, mult, threads=1) for a, b in pairs]
    results = {i: [] for i in range(len(pairs))}

    def work(i):
        for _ in range(6):
            results[i].append(gemm.matmul(*pairs[i], mult, threads=1))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, expected[i]) for i, rs in results.items() for r in rs)
