"""The compiled CPU kernels: building, loading, and the helpers that hand them numpy arrays."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .. import cbuild
from ..errors import AmsimError

_CDEF = """
void amsim_split_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m,
                     int rounding, int64_t kb, float *scale, uint16_t *idx, int64_t r0, int64_t r1,
                     int32_t *range);
size_t amsim_prepared_bytes(int m);
void amsim_prepare_lut(const float *lut, int m, void *out);
void amsim_range_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m, int rounding,
                     int64_t r0, int64_t r1, int32_t *range);
int amsim_window_exact_c(const int32_t *x_range, const int32_t *y_range, int v_lo, int v_hi, int mode);
int amsim_gemm(int64_t rows, int64_t cols, int64_t K, const float *x, int64_t xrs, int64_t xcs,
               const float *y, int64_t yrs, int64_t ycs, const float *lut, const float *plut, int m,
               int v_lo, int v_hi, int rounding, int mode, int method, int forced, float *c, int64_t ldc,
               int transpose_c, int threads, int by_rows);
struct amsim_plan { int swap, method, threads, by_rows; const float *lut, *plut; };
struct amsim_call { int64_t M, N, K, ars, acs, brs, bcs; int m, v_lo, v_hi, rounding, mode, forced;
                    struct amsim_plan plan[2]; };
int amsim_gemm_call(const struct amsim_call *p, const float *a, const float *b, float *c);
double amsim_pool_overhead_ns(int threads, double work_ns);
int amsim_pool_awake(void);
int amsim_lookup_chunk_vectors(void);
int amsim_build_group_vectors(void);
int amsim_dot_products(void);
int amsim_lut_dot_products(const void *plut, int m);
int amsim_gemm_model(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars, int64_t acs,
                     const float *b, int64_t brs, int64_t bcs, int m, int rounding, int mode,
                     uintptr_t fn, int is_float, float *c, int64_t ldc, int threads);
"""

_CSRC = Path(__file__).resolve().parent.parent / "csrc"


def cpu_flags() -> str:
    """The CPU's feature flags: -march=native code is cached per instruction set."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    import platform

    return platform.processor()


#: Builds of the CPU kernels: "native" (-march=native: AVX-512 with VBMI byte-plane lookups and
#: AVX512-BF16 dot products where the CPU has them), "no-bf16" (without the dot products),
#: "no-vbmi" (the AVX-512 float lookups only) and "portable" (no intrinsics).
VARIANTS = {"native": [], "no-bf16": ["-mno-avx512bf16"], "no-vbmi": ["-mno-avx512vbmi"],
                 "portable": ["-DAMSIM_PORTABLE"]}


@functools.lru_cache(maxsize=3)
def load(variant: str | None = None):
    """The CPU kernels, built for ``variant`` (default: AMSIM_GEMM_VARIANT, else "native")."""
    variant = variant or os.environ.get("AMSIM_GEMM_VARIANT") or "native"
    if variant not in VARIANTS:
        raise ValueError(f"AMSIM_GEMM_VARIANT must be one of {sorted(VARIANTS)}, not {variant!r}")
    source = (_CSRC / "gemm_cpu.c").read_text()
    flags = ["-O3", "-march=native", "-std=gnu11"] + VARIANTS[variant]
    try:
        module = cbuild.load_cached("_amsim_gemm_cpu", _CDEF, source, flags, key_parts=[cpu_flags()])
    except cbuild.BuildFailed as exc:  # pragma: no cover - our own source; a toolchain problem
        raise AmsimError(f"building the CPU GEMM kernels failed:\n{exc.output}") from None
    return module.ffi, module.lib



class Split:
    """An operand split for the kernels: scales, mantissa indices, and the normal exponent range."""

    __slots__ = ("scale", "idx", "exponents")

    def __init__(self, scale, idx, exponents):
        self.scale, self.idx, self.exponents = scale, idx, exponents


def split(ffi, lib, x, m, rounding, kb=0) -> Split:
    """Split a 2-D float32 operand (any strides) with amsim_split_f32, as amsim_gemm does.

    ``kb`` > 0 lays the result out in column blocks of that width, as the
    expand kernel reads it; 0 gives row-major arrays. For tests and tools:
    the GEMMs split inside their one C call.
    """
    rows, cols = x.shape
    x, ptr, rs, cs = strided(ffi, x)
    scale, idx = np.empty(rows * cols, np.float32), np.empty(rows * cols, np.uint16)
    ranges = ffi.new("int32_t[2]", [255, 0])
    if x.size:
        lib.amsim_split_f32(ptr, rows, cols, rs, cs, m, 1 if rounding == "rne" else 0, kb,
                            ffi.from_buffer("float[]", scale), ffi.from_buffer("uint16_t[]", idx), 0, rows, ranges)
    if kb <= 0:
        scale, idx = scale.reshape(rows, cols), idx.reshape(rows, cols)
    lo, hi = ranges
    return Split(scale, idx, None if lo > hi else (lo, hi))


def expand_is_exact(mult, rx, ry, mode) -> bool:
    """True when the fast kernels give amsim_mul_split's products bit for bit (amsim_window_exact).

    ``rx``, ``ry``: (min, max) biased exponents of the normal scales of X and
    Y, the operand the LUT is expanded into (None when an operand has none).
    """
    none = (255, 0)
    return bool(load()[1].amsim_window_exact_c(rx or none, ry or none, *mult.table_exponents,
                                                   1 if mode == "approxtrain" else 0))


@functools.lru_cache(maxsize=1)
def build_group_vectors() -> int:
    """Vectors of 16 columns that one step of this build's expansion serves (the panel's 64)."""
    return int(load()[1].amsim_build_group_vectors())


@functools.lru_cache(maxsize=1)
def lookup_chunk_vectors() -> int:
    """Vectors of 16 columns that share each load of a LUT row in this build's lookup kernel."""
    return int(load()[1].amsim_lookup_chunk_vectors())



def strided(ffi, x):
    """(x, pointer, row stride, column stride) of a 2-D float32 array, strides in elements
    (pointer); a NULL pointer for an empty one."""
    get, rs, cs = pointer(ffi, x)
    return x, get(x) if x.size else ffi.NULL, rs, cs



def pointer(ffi, x):
    """(how to get a pointer to the first element of arrays laid out like x, their row stride,
    their column stride), strides in elements.

    From the buffer of the array (or of its transpose, which starts there too) when one is
    contiguous: ``__array_interface__`` builds a dict (a microsecond, a tenth of a small GEMM),
    ``.ctypes`` a ctypes object. Strides the kernels cannot take (negative, or not whole
    elements) get a contiguous copy, which the pointer keeps alive.
    """
    rs, cs = x.strides
    if not (rs | cs) & 3 and rs >= 0 and cs >= 0:
        if x.flags.c_contiguous:
            return functools.partial(ffi.from_buffer, "float[]"), rs >> 2, cs >> 2
        if x.flags.f_contiguous:
            return (lambda v: ffi.from_buffer("float[]", v.T)), rs >> 2, cs >> 2
        return (lambda v: ffi.cast("float *", v.__array_interface__["data"][0])), rs >> 2, cs >> 2
    return (lambda v: ffi.from_buffer("float[]", np.ascontiguousarray(v))), x.shape[1], 1

