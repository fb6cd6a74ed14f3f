"""The integer LUT GEMM's CUDA kernel (amsim_cuda_int_gemm, int_gemm_cuda.cu): the CPU backend's integers
exactly, on a GPU or on the CPU emulation of the same source (AMSIM_CUDA_EMULATION=1, which scripts/test sets
on a machine without a GPU)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import amsim
from amsim import generate
from amsim.gemm import cuda, int_matmul
from amsim.gemm.integer import value_range

needs_cuda = pytest.mark.skipif(not cuda.available(), reason=f"backend='cuda' cannot run: {cuda.unavailable_reason()}")
needs_emulation = pytest.mark.skipif(not (cuda.emulated() and cuda.available()),
                                     reason="the CPU emulation of the CUDA kernels is not in use "
                                            f"(AMSIM_CUDA_EMULATION=1; {cuda.unavailable_reason() or 'a GPU is used'})")

# The kernel's tiles are 64 x 64 outputs and 32 steps of k: sizes below, at and past each edge, and 0.
ROWS_AND_COLUMNS = [0, 1, 2, 5, 63, 64, 65, 127, 129]
DEPTHS = [0, 1, 7, 31, 32, 33, 64, 65, 100]


def random_table(rng, bits, signed):
    """A (2^n, 2^n) table of arbitrary 16-bit circuit outputs, the whole range of their signedness."""
    lo, hi = (-(1 << 15), 1 << 15) if signed else (0, 1 << 16)
    return rng.integers(lo, hi, (1 << bits, 1 << bits))


def operands(rng, shape, bits, signed):
    lo, hi = value_range(bits, signed)
    m, k, n = shape
    return rng.integers(lo, hi + 1, (m, k)), rng.integers(lo, hi + 1, (k, n))


def patterns(x, bits):
    """The n-bit patterns int_matmul passes on: x mod 2^n, one byte each."""
    return np.bitwise_and(x, (1 << bits) - 1).astype(np.uint8)


@st.composite
def problems(draw):
    """(a, b, table, bits, signed): shapes at the tile edges, values over the whole n-bit range, any table."""
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    shape = (draw(st.sampled_from(ROWS_AND_COLUMNS)), draw(st.sampled_from(DEPTHS)),
             draw(st.sampled_from(ROWS_AND_COLUMNS)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (*operands(rng, shape, bits, signed), random_table(rng, bits, signed), bits, signed)


# ---- through amsim.gemm.int_matmul: int32 sums, as the table and K choose -------------------------------

@needs_cuda
@settings(max_examples=60, deadline=None)
@given(p=problems())
def test_equals_the_cpu_backend_at_every_tile_edge_width_and_signedness(p):
    a, b, table, bits, signed = p
    got = int_matmul(a, b, table, signed=signed, bits=bits, backend="cuda")
    want = int_matmul(a, b, table, signed=signed, bits=bits, backend="cpu")
    assert got.dtype == want.dtype == np.int32 and got.shape == (a.shape[0], b.shape[1])
    np.testing.assert_array_equal(got, want)


@needs_cuda
@pytest.mark.parametrize("name, signed", [("exact_int", False), ("mul8s_exact", True)])
def test_an_exact_circuit_gives_the_integer_matrix_product(name, signed):
    lut = generate.integer_lut(amsim.find_model(name), 8)
    a, b = operands(np.random.default_rng(3), (70, 90, 66), 8, signed)
    np.testing.assert_array_equal(int_matmul(a, b, lut, signed=signed, backend="cuda"), a @ b)


@needs_cuda
@pytest.mark.parametrize("signed, entry", [(False, 2**16 - 1), (True, -(2**15))])
def test_sums_past_int32_are_accumulated_in_int64_without_wrapping(signed, entry):
    k = 2**31 // abs(entry) + 5  # K products of the largest entry leave int32
    table = np.full((4, 4), entry)
    a, b = operands(np.random.default_rng(k), (3, k, 2), 2, signed)
    got = int_matmul(a, b, table, signed=signed, bits=2, backend="cuda")
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.full((3, 2), k * entry, np.int64))


# ---- amsim.gemm.cuda.int_matmul_2d: the int64 kernels on every shape, and the C ABI's contract ---------

@needs_cuda
@settings(max_examples=30, deadline=None)
@given(p=problems())
def test_int64_accumulators_give_the_same_sums_at_every_tile_edge(p):
    a, b, table, bits, signed = p
    got = cuda.int_matmul_2d(patterns(a, bits), patterns(b, bits), table, bits=bits, signed=signed, dtype=np.int64)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, int_matmul(a, b, table, signed=signed, bits=bits, backend="reference"))


@needs_cuda
def test_pattern_bits_above_the_width_are_ignored_never_read_outside_the_table():
    rng = np.random.default_rng(5)
    a, b = operands(rng, (40, 50, 30), 3, False)
    table = random_table(rng, 3, False)
    noisy_a = (a + (rng.integers(0, 32, a.shape) << 3)).astype(np.uint8)  # the same patterns, high bits set
    noisy_b = (b + (rng.integers(0, 32, b.shape) << 3)).astype(np.uint8)
    got = cuda.int_matmul_2d(noisy_a, noisy_b, table, bits=3, signed=False, dtype=np.int32)
    np.testing.assert_array_equal(got, int_matmul(a, b, table, bits=3, backend="cpu"))


@needs_cuda
@pytest.mark.parametrize("bits, is_signed, m, wide", [(0, 0, 1, 0), (9, 0, 1, 0), (8, 2, 1, 0), (8, 0, -1, 0),
                                                      (8, 0, 1, 2)])
def test_the_entry_point_refuses_bad_arguments_before_touching_memory(bits, is_signed, m, wide):
    lib = cuda.library()
    with pytest.raises(cuda.CudaError, match=r"amsim_cuda_int_gemm: CUDA error 1 \(invalid argument\)"):
        cuda.check(lib, lib.amsim_cuda_int_gemm(None, bits, is_signed, m, 1, 1, None, None, None, wide, None),
                   "amsim_cuda_int_gemm")


@needs_cuda
def test_an_empty_output_queues_nothing():
    lib = cuda.library()
    assert lib.amsim_cuda_int_gemm(None, 8, 0, 0, 5, 3, None, None, None, 0, None) == 0
    assert lib.amsim_cuda_int_gemm(None, 8, 1, 5, 0, 3, None, None, None, 1, None) == 0


# ---- the emulator: grids and shared memory smaller than the shapes and tables need ---------------------

def _compare_on(library, monkeypatch, cases):
    monkeypatch.setattr(cuda, "library", lambda: library)
    rng = np.random.default_rng(11)
    for shape, bits, signed in cases:
        a, b = operands(rng, shape, bits, signed)
        table = random_table(rng, bits, signed)
        want = int_matmul(a, b, table, signed=signed, bits=bits, backend="cpu")
        np.testing.assert_array_equal(int_matmul(a, b, table, signed=signed, bits=bits, backend="cuda"), want)
        wide = cuda.int_matmul_2d(patterns(a, bits), patterns(b, bits), table, bits=bits, signed=signed,
                                  dtype=np.int64)
        np.testing.assert_array_equal(wide, want)


@needs_emulation
def test_more_row_tiles_than_the_grid_holds_are_looped_over(monkeypatch):
    # CUDA caps a grid's y at 65535 blocks; a build with a cap of 2 runs the same loop on small shapes.
    capped = cuda.load(cuda.build_emulated(grid_y_max=2))
    _compare_on(capped, monkeypatch, [((300, 40, 70), 8, True), ((129, 33, 5), 4, False), ((64, 1, 1), 1, True)])


@needs_emulation
def test_a_device_whose_shared_memory_cannot_hold_the_table_reads_it_from_global_memory(monkeypatch):
    # A 64 KiB cap (sm_75's opt-in limit) holds the 7-bit table's 16-bit copy but not the 8-bit one's.
    small = cuda.load(cuda.build_emulated(shared_max=64 * 1024))
    _compare_on(small, monkeypatch, [((70, 65, 66), 8, True), ((65, 33, 129), 8, False), ((70, 65, 66), 7, True)])


def test_emulated_build_refuses_a_bad_shared_memory_cap(tmp_path):
    with pytest.raises(cuda.CudaError, match=r"shared_max must be a number of bytes in \[0, 2\^30\), got -1"):
        cuda.build_emulated(cache=tmp_path, shared_max=-1)

