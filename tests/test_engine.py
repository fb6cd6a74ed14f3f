"""The engine's C interface (amsim_gemm.h) as a caller that is not amsim.gemm uses it: the TensorFlow
ops link the same shared library and call these functions."""

import os

import numpy as np
import pytest

from amsim import cbuild, gemm, reference
from amsim.gemm import engine, planner


@pytest.fixture(scope="module")
def mitchell7():
    return gemm.resolve("mitchell", 7)


def _args(ffi, a, b, c, **options):
    """struct amsim_gemm_args for C = A (x) B with a, b as they lie in memory (views allowed)."""
    m, k = a.shape
    n = b.shape[1]
    _, pa, ars, acs = engine.strided(ffi, a)
    _, pb, brs, bcs = engine.strided(ffi, b)
    fields = dict(M=m, N=n, K=k, a=pa, ars=ars, acs=acs, b=pb, brs=brs, bcs=bcs, c=ffi.from_buffer("float[]", c),
                  ldc=c.shape[1], rounding=0, mode=0, kernel=-1, threads=0)
    return ffi.new("struct amsim_gemm_args *", {**fields, **options})


def test_the_shared_library_exports_the_public_interface():
    path = engine.library_path()
    assert path.parent == cbuild.cache_dir() and path.name.startswith("libamsim_gemm-")
    ffi, lib = engine.load()
    for name in ("amsim_lut_storage_bytes", "amsim_lut_init", "amsim_gemm", "amsim_gemm_model", "amsim_im2col",
                 "amsim_col2im", "amsim_set_costs"):
        assert hasattr(lib, name)


@pytest.mark.parametrize("kernel", ["auto", "expand", "lookup", "direct"])
def test_amsim_gemm_gives_the_reference_bits_for_views_and_a_wider_output(mitchell7, kernel):
    """A transposed view of A, every other column of B, and an output row longer than N."""
    ffi, lib = engine.load()
    rng = np.random.default_rng(1)
    a_t = rng.standard_normal((30, 45)).astype(np.float32)          # A = a_t.T
    b_wide = rng.standard_normal((30, 2 * 70)).astype(np.float32)    # B = every other column
    a, b = a_t.T, b_wide[:, ::2]
    c = np.full((45, 80), 7.0, np.float32)
    args = _args(ffi, a, b, c, kernel=engine.KERNELS[kernel], threads=2)
    assert lib.amsim_gemm(mitchell7.engine_lut().ptr, args) == 0
    expected = reference.approx_matmul(np.ascontiguousarray(a), np.ascontiguousarray(b), mitchell7.table, 7)
    assert np.array_equal(c[:, :70].view(np.uint32), expected.view(np.uint32))
    assert np.all(c[:, 70:] == 7.0)  # past N: untouched


def test_amsim_gemm_refuses_arguments_out_of_range(mitchell7):
    ffi, lib = engine.load()
    a, b, c = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.empty((2, 4), np.float32)
    lut = mitchell7.engine_lut().ptr
    for field, value in [("kernel", 3), ("rounding", 2), ("mode", -1), ("threads", -1), ("ldc", 3), ("ars", -3)]:
        args = _args(ffi, a, b, c, **{field: value})
        assert lib.amsim_gemm(lut, args) == lib.AMSIM_ERR_ARGS, field


def test_lut_init_says_what_the_fast_kernels_can_take(mitchell7):
    ffi, lib = engine.load()
    table = mitchell7.table.copy()
    assert engine.Lut(ffi, lib, table, 7).fast
    table[3, 5] = 0.0  # a zero entry: inf x 0 must give NaN per product, which only direct does
    assert not engine.Lut(ffi, lib, table, 7).fast
    lo, hi = engine.Lut(ffi, lib, mitchell7.table, 7).exponents
    e = (mitchell7.table.view(np.uint32) >> 23) & 0xFF
    assert (lo, hi) == (e.min(), e.max())
    assert engine.Lut(ffi, lib, mitchell7.table, 7).dot_products == bool(lib.amsim_dot_products())
    assert not engine.Lut(ffi, lib, gemm.resolve("exact", 7).table, 7).dot_products  # entries not bfloat16


def test_an_empty_sum_is_plus_zero(mitchell7):
    ffi, lib = engine.load()
    a, b, c = np.ones((3, 0), np.float32), np.ones((0, 4), np.float32), np.full((3, 4), np.nan, np.float32)
    assert lib.amsim_gemm(mitchell7.engine_lut().ptr, _args(ffi, a, b, c)) == 0
    assert np.array_equal(c.view(np.uint32), np.zeros((3, 4), np.uint32))


def test_costs_choose_plans_but_never_bits(mitchell7):
    """Costs that favour any plan give the same output: they only choose."""
    ffi, lib = engine.load()
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((50, 60)).astype(np.float32), rng.standard_normal((60, 70)).astype(np.float32)
    expected = reference.approx_matmul(a, b, mitchell7.table, 7)
    fitted = planner.costs(False), planner.costs(True)
    try:
        for item in ("fma", "lookup", "split", "out"):
            skewed = {name: (1e6 if name == item else 1.0) for name in planner.ITEMS}
            planner.set_costs(ffi, lib, skewed, skewed)
            c = np.empty((50, 70), np.float32)
            assert lib.amsim_gemm(mitchell7.engine_lut().ptr, _args(ffi, a, b, c, threads=2)) == 0
            assert np.array_equal(c.view(np.uint32), expected.view(np.uint32)), item
    finally:
        planner.set_costs(ffi, lib, *fitted)


def test_the_fitted_costs_are_cached_per_cpu_and_build():
    engine.load()  # fits the costs, or reads them from the cache
    path = planner.cache_path(engine.variant_of(None))
    assert path.parent == cbuild.cache_dir() and path.suffix == ".json"
    assert path.exists() or os.environ.get("AMSIM_GEMM_COSTS") == "start"
