"""The integer LUT GEMM: C[i, j] = sum over k of LUT[a[i, k], b[k, j]], exact, on the engine and the oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amsim.errors import AmsimError, RangeError
from amsim.gemm import IntegerTable, ShapeError, int_conv2d, int_matmul
from amsim.gemm.integer import IntegerOperandError, accumulator_dtype, reference_int_matmul
from amsim.lut import LUT
from int_support import (EXACT_S8, EXACT_U8, FULL, INT32_MAX, K32, assert_refused_with_one_line, circuit, exact_table,
                         sums_beyond_int32, value_range)


def python_sums(a, b, table, bits):
    """C by Python ints, the table indexed by each operand's pattern (value mod 2^n)."""
    (m, k), n = a.shape, b.shape[1]
    mask = (1 << bits) - 1
    a, b, table = a.tolist(), b.tolist(), table.tolist()
    return [[sum(table[a[i][q] & mask][b[q][j] & mask] for q in range(k)) for j in range(n)] for i in range(m)]


@st.composite
def problems(draw, max_dim=12):
    """(a, b, table, bits, signed): shapes from 0 (K = 0 included), values over the whole range, and a
    table of arbitrary 16-bit circuit outputs."""
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    m, k, n = (draw(st.integers(0, max_dim)) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lo, hi = value_range(bits, signed)
    # every dtype drawn holds every n-bit value
    dtype = draw(st.sampled_from([np.int8, np.int16, np.int64] if signed else [np.uint8, np.int32, np.uint64]))
    a = rng.integers(lo, hi, (m, k)).astype(dtype)
    b = rng.integers(lo, hi, (k, n)).astype(dtype)
    out_lo, out_hi = (-(1 << 15), 1 << 15) if signed else (0, 1 << 16)
    table = rng.integers(out_lo, out_hi, (1 << bits, 1 << bits))
    return a, b, table, bits, signed


@settings(max_examples=200, deadline=None)
@given(p=problems())
def test_engine_equals_the_oracle(p):
    a, b, table, bits, signed = p
    got = int_matmul(a, b, table, signed=signed, bits=bits)
    want = int_matmul(a, b, table, signed=signed, bits=bits, backend="reference")
    assert got.shape == (a.shape[0], b.shape[1])
    assert got.dtype == want.dtype == accumulator_dtype(a.shape[1], table)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=40, deadline=None)
@given(p=problems(max_dim=6))
def test_oracle_equals_python_integers(p):
    a, b, table, bits, signed = p
    got = int_matmul(a, b, table, signed=signed, bits=bits, backend="reference")
    assert got.tolist() == python_sums(a, b, table, bits)


def test_k_zero_gives_zeros():
    for backend in ("cpu", "reference"):
        c = int_matmul(np.zeros((3, 0), np.uint8), np.zeros((0, 5), np.uint8), EXACT_U8, backend=backend)
        assert c.dtype == np.int32 and c.shape == (3, 5) and not c.any()


@pytest.mark.parametrize("bits", [1, 3, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_exact_table_is_integer_matmul(bits, signed):
    """Signed operands index by their two's-complement pattern: the exact table so indexed is a @ b."""
    rng = np.random.default_rng(bits)
    lo, hi = value_range(bits, signed)
    a, b = rng.integers(lo, hi, (33, 71)), rng.integers(lo, hi, (71, 17))
    np.testing.assert_array_equal(int_matmul(a, b, exact_table(bits, signed), signed=signed, bits=bits), a @ b)


@pytest.mark.parametrize("lut, signed", [(EXACT_U8, False), (EXACT_S8, True)], ids=["exact_int", "mul8s_exact"])
def test_exact_circuits_give_numpy_integer_matmul(lut, signed):
    rng = np.random.default_rng(1)
    lo, hi = value_range(8, signed)
    a, b = rng.integers(lo, hi, (70, 129)), rng.integers(lo, hi, (129, 45))
    # the corners of the range in both operands
    a[0, :4] = b[:4, 0] = [lo, lo + 1, hi - 2, hi - 1]
    c = int_matmul(a, b, lut, signed=signed)
    assert c.dtype == np.int32
    np.testing.assert_array_equal(c, a @ b)


@pytest.mark.parametrize("name, signed", [("mul8s_trunc", True), ("mitchell", False)])
def test_approximate_circuits_equal_the_oracle(name, signed):
    lut = circuit(name)
    rng = np.random.default_rng(2)
    lo, hi = value_range(8, signed)
    a, b = rng.integers(lo, hi, (41, 97)), rng.integers(lo, hi, (97, 38))
    got = int_matmul(a, b, lut, signed=signed)
    np.testing.assert_array_equal(got, int_matmul(a, b, lut, signed=signed, backend="reference"))
    assert (got != a @ b).any()  # the circuit is approximate: it is in the loop


def test_accumulator_widens_to_int64_exactly_where_int32_could_overflow():
    """K * max|LUT| <= 2^31 - 1 stays int32 (its largest sum fits); one more k switches to int64."""
    for k, dtype in ((K32, np.int32), (K32 + 1, np.int64)):
        c = int_matmul(np.ones((2, k), np.uint8), np.ones((k, 3), np.uint8), FULL, bits=1)
        assert c.dtype == dtype
        assert c.tolist() == [[k * (2**16 - 1)] * 3] * 2
    assert K32 * (2**16 - 1) <= INT32_MAX < (K32 + 1) * (2**16 - 1)


def test_int64_sums_equal_python_integers():
    a, b, table = sums_beyond_int32()
    c = int_matmul(a, b, table, signed=True, bits=2)
    assert c.dtype == np.int64
    assert c.tolist() == python_sums(a, b, table, 2)
    assert c.max() < -(2**31)


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(4)
    a, b = rng.integers(-128, 128, (150, 90)), rng.integers(-128, 128, (90, 70))
    lut = circuit("mul8s_trunc")
    results = [int_matmul(a, b, lut, signed=True, threads=t) for t in (1, 2, 3, 8)]
    for c in results[1:]:
        np.testing.assert_array_equal(c, results[0])
    np.testing.assert_array_equal(results[0], int_matmul(a, b, lut, signed=True, backend="reference"))


def test_operands_may_be_any_integer_dtype_and_layout():
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 256, (20, 30)), rng.integers(0, 256, (30, 25))
    want = a @ b
    np.testing.assert_array_equal(int_matmul(a.astype(np.uint8), np.asfortranarray(b.astype(np.int16)), EXACT_U8),
                                  want)
    strided_b = np.repeat(b, 2, axis=1)[:, ::2]
    assert not strided_b.flags.c_contiguous
    np.testing.assert_array_equal(int_matmul(np.asfortranarray(a), strided_b, EXACT_U8.table), want)


# ---- the kernels: every plan, block edges, orientations, widths ------------------------------------------

# Shapes, by what the engine's cost estimate makes of them (int_gemm.c; every plan must give the oracle's
# integers, so these hold whichever it picks): few outputs (the direct kernel); a few rows of many columns
# (byte-plane lookups), also with many rows but few columns (the lookups on C^T); many rows (tables built per
# k block and 64-column block, split by rows or by columns between threads). M, N and K are off the 64-column
# blocks, the row tiles and the k blocks.
KERNEL_SHAPES = [(64, 84, 10), (5, 30, 700), (64, 120, 84), (130, 33, 197), (700, 40, 6), (2100, 33, 130),
                 (3000, 20, 70), (1500, 45, 200), (300, 70, 1)]


def random_problem(rng, shape, bits, signed):
    (m, k, n), (lo, hi) = shape, value_range(bits, signed)
    table = rng.integers(-(2**15), 2**15, (1 << bits,) * 2) if signed else rng.integers(0, 2**16, (1 << bits,) * 2)
    return rng.integers(lo, hi, (m, k)), rng.integers(lo, hi, (k, n)), table


@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_every_kernel_equals_the_oracle(shape, signed):
    """Tables of the widest entries (the 16-bit range's ends included) at 8 bits."""
    rng = np.random.default_rng(sum(shape) + signed)
    a, b, table = random_problem(rng, shape, 8, signed)
    table[0, 0], table[-1, -1] = (-(2**15), 2**15 - 1) if signed else (0, 2**16 - 1)
    a[0, 0] = b[0, 0] = 0
    a[-1, -1] = b[-1, -1] = -1 if signed else 255
    got = int_matmul(a, b, table, signed=signed)
    np.testing.assert_array_equal(got, int_matmul(a, b, table, signed=signed, backend="reference"))


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape", [(700, 40, 6), (2100, 33, 130), (64, 120, 84)], ids=lambda s: "x".join(map(str, s)))
def test_every_width_on_the_fast_kernels(bits, shape):
    rng = np.random.default_rng(bits)
    for signed in (False, True):
        a, b, table = random_problem(rng, shape, bits, signed)
        got = int_matmul(a, b, table, signed=signed, bits=bits)
        np.testing.assert_array_equal(got, int_matmul(a, b, table, signed=signed, bits=bits, backend="reference"))


@pytest.mark.parametrize(("shape", "threads"), [((530, 900, 700), 1), ((64, 256, 4100), 1), ((64, 256, 4100), 2),
                                                ((1001, 37, 7), 2)],
                         ids=["rows-k-columns-blocks", "batch-by-large-b", "batch-by-large-b-two-parts", "tall-thin"])
def test_fast_kernels_over_several_blocks_of_rows_k_and_columns(shape, threads):
    """Lookups over several k blocks, row blocks and column chunks in one part; tables on C^T (a batch's
    few rows of A and a large B: each k step's table serves B's many columns); operands transposed
    whose sides are off the byte transposes' 8 x 8 blocks."""
    rng = np.random.default_rng(sum(shape) + threads)
    a, b, table = random_problem(rng, shape, 8, False)
    got = int_matmul(a, b, table, threads=threads)
    np.testing.assert_array_equal(got, int_matmul(a, b, table, backend="reference"))


# Thin outputs (at most 32 columns, after orientation) take the table kernel in 32-column blocks: one column; 32
# columns (a whole narrow block) over more rows than share one table; an odd K (its last pair of k steps half
# empty) over several k blocks, in three parts; C^T, where a few rows of A give the 32 columns; and 33 columns,
# the first width in 64-column blocks. Row counts are off the 12-row tiles.
NARROW_SHAPES = [((2000, 7, 1), 1), ((9001, 45, 32), 1), ((2500, 301, 17), 3), ((32, 41, 30_000), 2),
                 ((3001, 50, 33), 2)]


@pytest.mark.parametrize(("shape", "threads"), NARROW_SHAPES, ids=["one-column", "beyond-a-row-block",
                                                                   "odd-k-three-parts", "transposed", "wide-edge"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_thin_outputs_equal_the_oracle(shape, threads, signed):
    rng = np.random.default_rng(sum(shape) + threads + signed)
    a, b, table = random_problem(rng, shape, 8, signed)
    got = int_matmul(a, b, table, signed=signed, threads=threads)
    np.testing.assert_array_equal(got, int_matmul(a, b, table, signed=signed, backend="reference"))


@pytest.mark.parametrize(("shape", "threads"), NARROW_SHAPES[:4], ids=["one-column", "beyond-a-row-block",
                                                                       "odd-k-three-parts", "transposed"])
def test_thin_outputs_sum_into_int64_when_asked(shape, threads):
    rng = np.random.default_rng(11)
    a, b, table = random_problem(rng, shape, 8, True)
    pa, pb = a & 255, b & 255  # two's-complement patterns
    np.testing.assert_array_equal(engine_int_gemm(pa, pb, table, 8, 1, threads),
                                  reference_int_matmul(pa, pb, table))


@pytest.mark.parametrize("shape", [(3, 40_000, 130), (70, 40_000, 3), (100, 70_000, 64), (100, 70_000, 8)],
                         ids=["lookup", "lookup-transposed", "table", "narrow-table"])
def test_int64_sums_of_the_fast_kernels_are_exact(shape):
    """K * max|LUT| beyond int32: the kernels' 32-bit block sums widen into exact int64 sums (the tables'
    after each chunk of 2^15 k steps: K = 70000 takes three)."""
    rng = np.random.default_rng(6)
    m, k, n = shape
    table = rng.integers(2**16 - 64, 2**16, (4, 4))  # large entries: sums beyond int32
    a, b = rng.integers(0, 4, (m, k), dtype=np.uint8), rng.integers(0, 4, (k, n), dtype=np.uint8)
    got = int_matmul(a, b, table, bits=2)
    assert got.dtype == np.int64 and got.max() > 2**31
    want = np.zeros((m, n), np.int64)
    for x in range(4):  # each entry times how often its pair of patterns meets (counts exact in float64)
        for y in range(4):
            counts = (a == x).astype(np.float64) @ (b == y).astype(np.float64)
            want += table[x, y] * counts.astype(np.int64)
    np.testing.assert_array_equal(got, want)


def engine_int_gemm(a, b, table, bits, wide, threads=2, variant=None):
    """C by amsim_int_gemm as a C caller (the TensorFlow op) sees it: any int32 table, any width; the
    engine built for ``variant`` (default: this machine's)."""
    from amsim.gemm import engine

    ffi, lib = engine.load(variant)
    (m, k), n = a.shape, b.shape[1]
    lut = engine.IntLut(ffi, lib, table, bits)
    c = np.zeros((m, n), np.int64 if wide else np.int32)
    rc = lib.amsim_int_gemm(lut.ptr, m, n, k, ffi.from_buffer("uint8_t[]", np.ascontiguousarray(a, np.uint8)),
                            ffi.from_buffer("uint8_t[]", np.ascontiguousarray(b, np.uint8)), ffi.from_buffer(c),
                            wide, threads)
    assert rc == lib.AMSIM_OK
    return c


@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_kernel_sums_into_int64_when_asked(shape):
    """wide = 1 on every plan, over many k blocks of a table (K = 300 at 8 bits)."""
    rng = np.random.default_rng(9)
    m, _, n = shape
    a, b, table = random_problem(rng, (m, 300, n), 8, True)
    pa, pb = a & 255, b & 255  # two's-complement patterns
    np.testing.assert_array_equal(engine_int_gemm(pa, pb, table, 8, 1), reference_int_matmul(pa, pb, table))


# K within one k block, where the fast kernels write each row's sums straight into C (masked to the block's
# columns, C's rows N apart): tables over two row blocks and a partial third column block, a narrow table over
# two row blocks, lookups over a partial chunk of columns; int32 and int64 sums.
@pytest.mark.parametrize("shape", [(2100, 9, 150), (8200, 7, 30), (5, 9, 700)], ids=["table", "narrow", "lookup"])
@pytest.mark.parametrize("wide", [0, 1], ids=["int32", "int64"])
def test_sums_of_one_k_block_go_straight_into_c(shape, wide):
    rng = np.random.default_rng(sum(shape) + wide)
    a, b, table = random_problem(rng, shape, 8, True)
    pa, pb = a & 255, b & 255
    np.testing.assert_array_equal(engine_int_gemm(pa, pb, table, 8, wide, threads=1),
                                  reference_int_matmul(pa, pb, table))


@pytest.mark.parametrize("shape", [(2100, 33, 130), (700, 40, 6), (64, 120, 84)], ids=lambda s: "x".join(map(str, s)))
def test_fast_kernels_do_not_depend_on_the_thread_count(shape):
    rng = np.random.default_rng(7)
    a, b, table = random_problem(rng, shape, 8, True)
    results = [int_matmul(a, b, table, signed=True, threads=t) for t in (1, 2, 3, 5)]
    for c in results[1:]:
        np.testing.assert_array_equal(c, results[0])


# The builds for CPUs without AVX-512 ("avx2": the AVX2 table kernel where the plan takes it, on C or on C^T,
# in 32-column blocks or 16-column ones; "portable": the direct kernel): shapes of many rows (tables), few rows
# and many columns (tables on C^T), at most 16 columns (narrow blocks, also on C^T), few rows and columns
# (direct); off the column blocks and the 3- and 6-row tiles; both signednesses, one and two threads. With
# K = 300 on C, the tiles read A's bytes from a copy (made 64 k steps at a time, the last one partial), on 10
# columns also where two parts split k. 8193 rows are two blocks of rows sharing tables on one thread.
OTHER_BUILD_SHAPES = [(2100, 33, 130), (3001, 70, 31), (700, 300, 64), (64, 120, 84), (40, 300, 700), (3001, 70, 13),
                      (7, 500, 300), (5, 9, 3), (2000, 300, 10), (8193, 40, 40), (8193, 20, 12)]


@pytest.mark.parametrize("variant", ["avx2", "portable"])
@pytest.mark.parametrize("shape", OTHER_BUILD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_builds_for_cpus_without_avx512_equal_the_oracle(variant, shape):
    rng = np.random.default_rng(sum(shape))
    for signed in (False, True):
        a, b, table = random_problem(rng, shape, 8, signed)
        pa, pb = a & 255, b & 255
        for threads in (1, 2):
            np.testing.assert_array_equal(engine_int_gemm(pa, pb, table, 8, 0 if shape[1] < 32768 else 1, threads,
                                                          variant), reference_int_matmul(pa, pb, table))


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape", [(700, 40, 6), (40, 300, 700), (500, 300, 20)],
                         ids=["narrow", "transposed", "copied-a"])
def test_the_avx2_build_takes_every_width(bits, shape):
    """Tables of fewer patterns than one 8 x 8 transpose (1 and 2 bits) and of every other width; A's bytes
    copied for the tiles in k blocks as long as the width makes them (256 steps at 4 bits)."""
    rng = np.random.default_rng(bits)
    for signed in (False, True):
        a, b, table = random_problem(rng, shape, bits, signed)
        mask = (1 << bits) - 1
        np.testing.assert_array_equal(engine_int_gemm(a & mask, b & mask, table, bits, 0, 2, "avx2"),
                                      reference_int_matmul(a & mask, b & mask, table))


# Outputs of few rows and columns over a long K (filter gradients), where the AVX2 build's parts split k and
# add up their sums: a narrow block in two parts and in three (of unequal k ranges), three 32-column blocks
# (which two parts could not split evenly); int32 and int64 sums.
@pytest.mark.parametrize(("shape", "threads"), [((150, 2000, 16), 2), ((150, 2000, 16), 3), ((100, 1000, 70), 2)],
                         ids=["narrow", "narrow-three-parts", "three-blocks"])
@pytest.mark.parametrize("wide", [0, 1], ids=["int32", "int64"])
def test_the_avx2_build_splits_a_long_k_among_its_threads(shape, threads, wide):
    rng = np.random.default_rng(sum(shape) + threads)
    for signed in (False, True):
        a, b, table = random_problem(rng, shape, 8, signed)
        pa, pb = a & 255, b & 255
        np.testing.assert_array_equal(engine_int_gemm(pa, pb, table, 8, wide, threads, "avx2"),
                                      reference_int_matmul(pa, pb, table))


# K = 70000: three chunks of the AVX2 kernel's 32-bit raw sums, into int64: at 2 bits; with an 8-bit table
# (patterns 0..3 in use) on C^T, in 16-column and in 32-column blocks; K = 140000 split between two parts, three
# chunks each.
@pytest.mark.parametrize("variant", ["avx2", "portable"])
@pytest.mark.parametrize(("shape", "bits"), [((200, 70_000, 40), 2), ((8, 70_000, 1000), 8), ((40, 70_000, 100), 8),
                                             ((30, 140_000, 20), 2)],
                         ids=["two-bits", "narrow-transposed", "transposed", "split-k"])
def test_builds_for_cpus_without_avx512_sum_long_k_exactly(variant, shape, bits):
    rng = np.random.default_rng(11)
    m, k, n = shape
    table = rng.integers(2**16 - 64, 2**16, (1 << bits,) * 2)
    a, b = rng.integers(0, 4, (m, k), dtype=np.uint8), rng.integers(0, 4, (k, n), dtype=np.uint8)
    want = np.zeros((m, n), np.int64)
    for x in range(4):  # each entry times how often its pair of patterns meets (counts exact in float64)
        for y in range(4):
            want += table[x, y] * ((a == x).astype(np.float64) @ (b == y).astype(np.float64)).astype(np.int64)
    np.testing.assert_array_equal(engine_int_gemm(a, b, table, bits, 1, 2, variant), want)


@pytest.mark.parametrize("n", [130, 256], ids=["rows-split", "columns-split"])
def test_a_table_beyond_16_bits_takes_the_direct_kernel_exactly(n):
    """The C entry takes any int32 table (the 16-bit kernels only one of a 16-bit range): entries of both
    signs beyond 2^15 still give exact sums, on shapes that would otherwise take the table kernel with
    its parts split by rows, or by column blocks (the direct kernel's parts are rows)."""
    rng = np.random.default_rng(8)
    table = rng.integers(-(2**20), 2**20, (256, 256))
    a, b = rng.integers(0, 256, (2100, 33)), rng.integers(0, 256, (33, n))
    np.testing.assert_array_equal(engine_int_gemm(a, b, table, 8, 1), reference_int_matmul(a, b, table))


# ---- a table prepared once -------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_prepared_table_gives_what_the_table_gives(signed):
    """An IntegerTable, made once and passed to many calls, gives the sums of the table it was made
    from, on each kernel's shapes (both orientations of the fast kernels use its planes) and in
    int_conv2d."""
    rng = np.random.default_rng(12)
    _, _, table = random_problem(rng, (1, 1, 1), 8, signed)
    prepared = IntegerTable(table, signed=signed)
    assert prepared.largest == np.abs(table).max() and not prepared.table.flags.writeable
    for shape in KERNEL_SHAPES:
        a, b, _ = random_problem(rng, shape, 8, signed)
        np.testing.assert_array_equal(int_matmul(a, b, prepared, signed=signed),
                                      int_matmul(a, b, table, signed=signed, backend="reference"))
    x, w = rng.integers(-128 if signed else 0, 128 if signed else 256, (2, 9, 9, 6)), \
        rng.integers(-128 if signed else 0, 128 if signed else 256, (3, 3, 6, 20))
    for backend in ("cpu", "reference"):
        got = int_conv2d(x, w, prepared, signed=signed, backend=backend)
        want = int_conv2d(x, w, table, signed=signed, backend="reference")
        np.testing.assert_array_equal(got[0], want[0])


def test_a_prepared_table_is_a_copy():
    """Changing the array an IntegerTable was made from changes nothing it gives."""
    table = exact_table(8, False)
    prepared = IntegerTable(table)
    table[3, 5] = 0
    a, b = np.full((1, 1), 3), np.full((1, 1), 5)
    assert int_matmul(a, b, prepared)[0, 0] == 15 and int_matmul(a, b, table)[0, 0] == 0


def test_a_table_edited_between_calls_gives_its_new_sums():
    """Calls that pass the same array reuse its preparation only while its entries are unchanged."""
    rng = np.random.default_rng(13)
    table = rng.integers(0, 2**16, (256, 256))
    a, b = rng.integers(0, 256, (300, 40)), rng.integers(0, 256, (40, 70))
    first = int_matmul(a, b, table)
    table[a[0, 0], b[0, 0]] += 1
    second = int_matmul(a, b, table)
    np.testing.assert_array_equal(second, reference_int_matmul(a, b, table))
    assert second[0, 0] == first[0, 0] + 1


@pytest.mark.parametrize("kwargs, error, message", [
    ({"signed": True}, IntegerOperandError, "int_matmul: the table is unsigned; int_matmul was called with "
                                            "signed=True"),
    ({"bits": 4}, ShapeError, "int_matmul: the table is of 8-bit operands, not bits=4"),
])
def test_a_prepared_table_of_another_kind_is_refused(kwargs, error, message):
    assert_refused_with_one_line(error, message, int_matmul, A, B, IntegerTable(EXACT_U8), **kwargs)


def test_a_prepared_table_checks_its_table_once_made():
    assert_refused_with_one_line(IntegerOperandError, "the LUT holds 65536, outside the unsigned 16-bit circuit "
                                 "outputs 0..65535", IntegerTable, np.full((4, 4), 2**16), bits=2)
    assert_refused_with_one_line(IntegerOperandError, "IntegerTable needs an integer LUT, not a mantissa LUT",
                                 IntegerTable, LUT(table=np.ones((4, 4), np.float32), bits=2), bits=2)


# ---- bad input: one clear error each -------------------------------------------------------------------

A = np.zeros((2, 3), np.uint8)
B = np.zeros((3, 4), np.uint8)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"a": A.astype(np.float32)}, IntegerOperandError, "a must be an integer array, got float32"),
    ({"b": B.astype(bool)}, IntegerOperandError, "b must be an integer array, got bool"),
    ({"a": np.full((2, 3), 256)}, IntegerOperandError, "a holds 256, outside the unsigned 8-bit range 0..255"),
    ({"b": np.full((3, 4), -1)}, IntegerOperandError, "b holds -1, outside the unsigned 8-bit range 0..255"),
    ({"a": np.full((2, 3), 128), "lut": EXACT_S8, "signed": True}, IntegerOperandError,
     "a holds 128, outside the signed 8-bit range -128..127"),
    ({"b": np.full((3, 4), -129), "lut": EXACT_S8, "signed": True}, IntegerOperandError,
     "b holds -129, outside the signed 8-bit range -128..127"),
    ({"a": np.full((2, 3), 4), "lut": exact_table(2, False), "bits": 2}, IntegerOperandError,
     "a holds 4, outside the unsigned 2-bit range 0..3"),
    ({"a": np.zeros(3, np.uint8)}, ShapeError, "a must be 2-D, got shape (3,)"),
    ({"b": np.zeros((4, 4), np.uint8)}, ShapeError, "inner dimensions differ"),
    ({"lut": np.zeros((256, 255), np.int32)}, ShapeError, "must be (256, 256) for 8-bit operands"),
    ({"lut": exact_table(7, False)}, ShapeError, "must be (256, 256) for 8-bit operands, got shape (128, 128)"),
    ({"lut": EXACT_U8.table.astype(np.float32)}, IntegerOperandError, "lut must be an integer array"),
    ({"lut": np.full((256, 256), 2**16)}, IntegerOperandError,
     "the LUT holds 65536, outside the unsigned 16-bit circuit outputs 0..65535"),
    ({"lut": np.full((256, 256), -1)}, IntegerOperandError, "the LUT holds -1, outside the unsigned 16-bit"),
    ({"lut": np.full((256, 256), 2**15), "signed": True}, IntegerOperandError,
     "the LUT holds 32768, outside the signed 16-bit circuit outputs -32768..32767"),
    ({"lut": EXACT_S8}, IntegerOperandError, "the LUT's circuit is signed; int_matmul was called with signed=False"),
    ({"lut": EXACT_U8, "signed": True}, IntegerOperandError, "the LUT's circuit is unsigned"),
    ({"lut": circuit("exact_int", 4)}, ShapeError, "the LUT is of 4-bit operands, not bits=8"),
    ({"lut": LUT(table=np.ones((4, 4), np.float32), bits=2)}, IntegerOperandError, "not a mantissa LUT"),
    ({"bits": 0}, RangeError, "bits (the operand width n) must be an integer in 1..8, not 0"),
    ({"bits": 9}, RangeError, "bits (the operand width n) must be an integer in 1..8, not 9"),
    ({"threads": 0}, RangeError, "threads"),
    ({"backend": "tpu"}, RangeError, "backend must be one of"),
])
def test_bad_input_is_refused_with_one_line(kwargs, error, message):
    args = {"a": A, "b": B, "lut": EXACT_U8, **kwargs}
    assert_refused_with_one_line(error, message, int_matmul, args.pop("a"), args.pop("b"), args.pop("lut"), **args)


def test_a_sum_beyond_int64_is_refused():
    table = np.full((256, 256), 2**16 - 1)
    assert accumulator_dtype(2**63 // (2**16 - 1), table) == np.int64
    with pytest.raises(RangeError, match="can overflow even int64"):
        accumulator_dtype(2**63 // (2**16 - 1) + 1, table)


def test_the_c_entry_refuses_what_would_read_outside_the_table():
    """amsim_int_gemm, as a C caller (the TensorFlow ops) sees it: patterns of 2^bits or more and
    negative sizes are refused with AMSIM_ERR_ARGS, nothing read out of bounds; amsim_int_lut_init
    refuses a width beyond 8."""
    from amsim.gemm import engine

    ffi, lib = engine.load()
    table = np.ascontiguousarray(exact_table(2, False), np.int32)
    lut = engine.IntLut(ffi, lib, table, 2)
    a, b, c = np.array([[1, 4]], np.uint8), np.array([[1], [1]], np.uint8), np.zeros((1, 1), np.int32)

    def call(a, m=1):
        return lib.amsim_int_gemm(lut.ptr, m, 1, 2, ffi.from_buffer("uint8_t[]", a), ffi.from_buffer("uint8_t[]", b),
                                  ffi.from_buffer(c), 0, 1)

    assert call(a) == lib.AMSIM_ERR_ARGS
    assert call(np.array([[1, 3]], np.uint8)) == lib.AMSIM_OK and c[0, 0] == 1 + 3
    assert call(a, m=-1) == lib.AMSIM_ERR_ARGS
    for bits in (0, 9):
        with pytest.raises(AmsimError, match="amsim_int_lut_init refused"):
            engine.IntLut(ffi, lib, np.zeros((4, 4), np.int32), bits)


def test_the_c_entry_refuses_a_width_the_sums_could_overflow():
    """K products of the table's largest magnitude must fit the accumulator the caller asks for:
    int32 up to K * 65535 <= 2^31 - 1, beyond it only int64 (a C caller sees AMSIM_ERR_ARGS)."""
    from amsim.gemm import engine

    ffi, lib = engine.load()
    lut = engine.IntLut(ffi, lib, np.full((4, 4), 2**16 - 1, np.int32), 2)
    assert lut.ptr.largest == 2**16 - 1
    k_max = (2**31 - 1) // (2**16 - 1)
    for k, wide, status in [(k_max, 0, lib.AMSIM_OK), (k_max + 1, 0, lib.AMSIM_ERR_ARGS),
                            (k_max + 1, 1, lib.AMSIM_OK)]:
        a, b = np.ones((1, k), np.uint8), np.ones((k, 1), np.uint8)
        c = np.zeros((1, 1), np.int64 if wide else np.int32)
        assert lib.amsim_int_gemm(lut.ptr, 1, 1, k, ffi.from_buffer("uint8_t[]", a), ffi.from_buffer("uint8_t[]", b),
                                  ffi.from_buffer(c), wide, 1) == status
        if status == lib.AMSIM_OK:
            assert c[0, 0] == k * (2**16 - 1)
