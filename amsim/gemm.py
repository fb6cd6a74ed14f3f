"""The approximate GEMM engine: matmul and conv2d with every product replaced by a LUT multiplier.

Semantics are those of specs/numerics.md: each product a (x) b is
``sign * 2^(ea + eb) * LUT[i, j]`` with IEEE special values, and every output
is a float32 sum in increasing k. Backends:

``reference``
    :mod:`amsim.reference` (plain numpy): slow, obviously correct, the oracle.
``cpu``
    C kernels (``amsim/csrc/gemm_cpu.c``) sharing ``amsim_product.h`` with the
    CUDA kernels, compiled once per machine with ``-O3 -march=native`` and
    cached. Same accumulation order as the reference, so results are
    bit-identical to it, deterministic for any thread count, and safe to call
    from several threads at once. Each GEMM is one C call (``amsim_gemm``):
    split, window test and kernel run on a pool of C worker threads, the
    output split between them by columns, or by rows when it is narrow; a
    caller whose workers are busy with another caller's GEMM does its own parts.
``cuda``
    The bundled CUDA kernels (:mod:`amsim.cuda`), when a GPU is present.

Kernels of the CPU backend (``method``):

``expand`` (M <= 8)
    The LUT is expanded into one operand so the inner loop is a contiguous,
    vectorised multiply-add. Used when it is exact: LUT entries positive and
    finite, and the operands' exponents inside a window where every expanded
    entry and every product is a normal float32 (``amsim_window_exact`` in
    amsim_product.h).
``lookup`` (M <= 8)
    The same exact products without the expansion: each product looks its LUT
    entry up in a LUT row held in registers. For GEMMs with too few rows to
    share an expansion. Same exactness window.
``direct`` (any M <= 12)
    One ``amsim_mul_split`` per product, every rule of numerics.md applied.
``model`` (any M, no LUT)
    Each product calls the compiled C model (M > 12, where no LUT fits).

On CPUs with AVX512-BF16 both take LUTs of bfloat16 entries (M < 8) with
bfloat16 dot products, two products per instruction (vdpbf16ps), where no
partial sum can be subnormal (``amsim_window_dp`` in gemm_cpu.c); the
planner then uses its second cost table.

With ``method="auto"`` a cost model (:func:`_fast_plan`, fitted by
``scripts/bench_gemm.py --calibrate``) picks the fast kernel, its orientation
(along B's columns, or along A's rows by computing C^T = B^T A^T with the LUT
transposed) and whether to use several threads; operands outside the window
fall back to ``direct``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from . import cbuild, reference
from .errors import AmsimError, LUTError, RangeError
from .lut import LUT, load_any

__all__ = ["Multiplier", "resolve", "matmul", "conv2d", "conv2d_backprop_input", "conv2d_backprop_filter",
           "BACKENDS", "METHODS"]

BACKENDS = ("auto", "reference", "cpu", "cuda")
METHODS = ("auto", "expand", "lookup", "direct", "model")
_EXPAND_MAX_BITS = 8


class ShapeError(AmsimError, ValueError):
    """Operands whose shapes do not fit together."""


# ----------------------------------------------------------------------------------------------
# The multiplier: a LUT, or a compiled model for M > 12
# ----------------------------------------------------------------------------------------------


class Multiplier:
    """An M-bit approximate multiplier as the GEMM engine uses it.

    Attributes
    ----------
    bits : int
        Mantissa fraction bits M.
    table : ndarray or None
        (2^M, 2^M) float32 significand products (row = A's mantissa), or None
        in model mode.
    model : CompiledModel or None
        For M > 12: the model itself, called once per product.
    name : str
    """

    def __init__(self, bits, table=None, model=None, name=""):
        self.bits = int(bits)
        self.model = model
        self.name = name
        if table is not None:
            table = np.asarray(table)
            n = 1 << self.bits
            if table.shape != (n, n):
                raise LUTError(f"LUT shape {table.shape} does not match M={self.bits} (expected {n}x{n})")
            # float64 tables (products of more than 24 bits) are rounded once to nearest float32,
            # as amsim.reference does.
            table = np.ascontiguousarray(table, dtype=np.float32)
        elif model is None:
            raise ValueError("a Multiplier needs a table or a model")
        self.table = table
        self._checked: set[str] = set()
        self._calls: dict = {}  # GEMMs made ready for the CPU kernels (_ready_call), by _call_key

    def __repr__(self):
        return f"<Multiplier {self.name or 'lut'} M={self.bits}{' (model mode)' if self.table is None else ''}>"

    def check(self, mode: str) -> None:
        """Refuse a table the mode cannot use (non-finite entries; for approxtrain, off its grid)."""
        if self.table is not None and mode not in self._checked:
            try:
                reference.check_table(self.table, self.bits, mode)
            except ValueError as exc:
                raise LUTError(f"{self!r}: {exc}") from None
            self._checked.add(mode)

    @functools.cached_property
    def table_t(self):
        """The LUT transposed (row = B's mantissa), for kernels that swap the operands."""
        return np.ascontiguousarray(self.table.T)

    def prepared(self, transposed: bool = False) -> np.ndarray:
        """The LUT (or its transpose) as the fast kernels read it, built once per multiplier.

        ``amsim_prepare_lut``'s layout (padded float rows, and byte planes for
        AVX512-VBMI lookups with a flag saying whether two planes suffice),
        64-byte aligned.
        """
        ffi, lib = _cpu_lib()
        size = lib.amsim_prepared_bytes(self.bits)  # the layout depends on the build (byte planes or not)
        key = ("_prepared", transposed, size)
        out = self.__dict__.get(key)
        if out is None:
            raw = np.empty(size + 64, np.uint8)
            start = -raw.ctypes.data % 64
            out = raw[start:start + size]
            table = self.table_t if transposed else self.table
            lib.amsim_prepare_lut(ffi.from_buffer("float[]", table), self.bits, ffi.from_buffer(out))
            self.__dict__[key] = out
        return out

    def kernel_tables(self, transposed: bool = False) -> tuple:
        """(LUT, prepared LUT) in this orientation as pointers for amsim_gemm, made once.

        A call's own conversions would cost a microsecond, a tenth of a small GEMM's time.
        """
        ffi, _lib = _cpu_lib()
        key = ("_kernel_tables", transposed, ffi)  # ffi: one entry per build of the kernels
        tables = self.__dict__.get(key)
        if tables is None:
            table = self.table_t if transposed else self.table
            prepared = self.prepared(transposed) if self.expandable else None
            tables = (ffi.from_buffer("float[]", table),
                      ffi.from_buffer("float[]", prepared) if prepared is not None else ffi.NULL)
            self.__dict__[key] = tables
        return tables

    @functools.cached_property
    def dot_products(self) -> bool:
        """True when the fast kernels of this build take bfloat16 dot products for this LUT: the
        prepared LUT's HI16 flag (entries that are bfloat16 values, M < 8; amsim_prepare_lut)."""
        ffi, lib = _cpu_lib()
        return self.expandable and bool(lib.amsim_lut_dot_products(ffi.from_buffer(self.prepared()), self.bits))

    @functools.cached_property
    def expandable(self) -> bool:
        """True when every entry is positive and finite: the expand kernel is exact for it."""
        t = self.table
        return t is not None and self.bits <= _EXPAND_MAX_BITS and bool(np.all(np.isfinite(t)) and np.all(t > 0))

    @functools.cached_property
    def table_exponents(self) -> tuple[int, int]:
        """Smallest and largest biased float32 exponent of the LUT entries (entries are normal)."""
        e = (self.table.view(np.uint32) >> 23) & 0xFF
        return int(e.min()), int(e.max())


@functools.lru_cache(maxsize=64)
def _model_multiplier(name: str, bits: int, params: tuple, models_dirs: tuple):
    from .generate import MAX_LUT_BITS, compile_for_mantissa
    from .models import find_model
    from .sweep import significand_table

    model = find_model(name, models_dirs)
    cm = compile_for_mantissa(model, bits, dict(params))
    if bits > MAX_LUT_BITS:
        return Multiplier(bits, model=cm, name=name)
    return Multiplier(bits, table=significand_table(cm, bits), model=cm, name=name)


def resolve(lut, bits: int | None = None, *, params=None, models_dirs=()) -> Multiplier:
    """Turn what the user passed as ``lut`` into a :class:`Multiplier`.

    Parameters
    ----------
    lut : Multiplier, amsim.lut.LUT, str, Path or ndarray
        A LUT object; a LUT file (native ``.npz`` or ApproxTrain ``NAME_M.bin``);
        a model name (then ``bits`` is required: M <= 12 builds the LUT, M > 12
        uses the model directly); or a (2^M, 2^M) table.
    bits : int, optional
        Expected M; a LUT for another M is refused.
    params : dict, optional
        Model parameters when ``lut`` is a model name.
    """
    if isinstance(lut, Multiplier):
        mult = lut
    elif isinstance(lut, LUT):
        if lut.kind != "mantissa":
            raise LUTError(f"the GEMM needs a mantissa LUT; this is an {lut.kind} table")
        mult = Multiplier(lut.bits, table=lut.table, name=lut.model)
    elif isinstance(lut, (str, Path)) and (Path(lut).suffix in (".npz", ".bin") or Path(lut).is_file()):
        return resolve(load_any(lut, bits=bits))
    elif isinstance(lut, str):
        if bits is None:
            raise RangeError(f"model {lut!r} given as the LUT: say which mantissa width with bits=M")
        mult = _model_multiplier(lut, int(bits), tuple(sorted((params or {}).items())), tuple(map(str, models_dirs)))
    elif isinstance(lut, np.ndarray):
        if lut.ndim != 2 or lut.shape[0] != lut.shape[1] or lut.shape[0] & (lut.shape[0] - 1):
            raise LUTError(f"a LUT array must be (2^M, 2^M), not {lut.shape}")
        mult = Multiplier(int(lut.shape[0]).bit_length() - 1, table=lut)
    else:
        raise TypeError(f"lut must be a LUT, a LUT file, a model name or an array, not {type(lut).__name__}")
    if bits is not None and mult.bits != int(bits):
        raise LUTError(f"LUT is for M={mult.bits}, not M={bits}")
    return mult


# ----------------------------------------------------------------------------------------------
# The compiled CPU kernels
# ----------------------------------------------------------------------------------------------

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

_CSRC = Path(__file__).resolve().parent / "csrc"


def _cpu_flags() -> str:
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
_CPU_VARIANTS = {"native": [], "no-bf16": ["-mno-avx512bf16"], "no-vbmi": ["-mno-avx512vbmi"],
                 "portable": ["-DAMSIM_PORTABLE"]}


@functools.lru_cache(maxsize=3)
def _cpu_lib(variant: str | None = None):
    """The CPU kernels, built for ``variant`` (default: AMSIM_GEMM_VARIANT, else "native")."""
    variant = variant or os.environ.get("AMSIM_GEMM_VARIANT") or "native"
    if variant not in _CPU_VARIANTS:
        raise ValueError(f"AMSIM_GEMM_VARIANT must be one of {sorted(_CPU_VARIANTS)}, not {variant!r}")
    source = (_CSRC / "gemm_cpu.c").read_text()
    flags = ["-O3", "-march=native", "-std=gnu11"] + _CPU_VARIANTS[variant]
    try:
        module = cbuild.load_cached("_amsim_gemm_cpu", _CDEF, source, flags, key_parts=[_cpu_flags()])
    except cbuild.BuildFailed as exc:  # pragma: no cover - our own source; a toolchain problem
        raise AmsimError(f"building the CPU GEMM kernels failed:\n{exc.output}") from None
    return module.ffi, module.lib


def _threads(threads):
    return max(1, int(threads)) if threads else _default_threads()


@functools.lru_cache(maxsize=1)
def _default_threads() -> int:
    """``AMSIM_NUM_THREADS``, or every CPU this process may use: read at the first GEMM, since
    looking the environment up costs about a microsecond, a tenth of a small GEMM."""
    env = os.environ.get("AMSIM_NUM_THREADS")
    return max(1, int(env)) if env else max(1, len(os.sched_getaffinity(0)))


#: Below this much work (products) the direct and model kernels run in the calling thread; the
#: fast kernels decide by their cost model.
_PARALLEL_MIN_WORK = 1 << 20


class _Split:
    """An operand split for the kernels: scales, mantissa indices, and the normal exponent range."""

    __slots__ = ("scale", "idx", "exponents")

    def __init__(self, scale, idx, exponents):
        self.scale, self.idx, self.exponents = scale, idx, exponents


def _split(ffi, lib, x, m, rounding, kb=0) -> _Split:
    """Split a 2-D float32 operand (any strides) with amsim_split_f32, as amsim_gemm does.

    ``kb`` > 0 lays the result out in column blocks of that width, as the
    expand kernel reads it; 0 gives row-major arrays. For tests and tools:
    the GEMMs split inside their one C call.
    """
    rows, cols = x.shape
    x, ptr, rs, cs = _strided(ffi, x)
    scale, idx = np.empty(rows * cols, np.float32), np.empty(rows * cols, np.uint16)
    ranges = ffi.new("int32_t[2]", [255, 0])
    if x.size:
        lib.amsim_split_f32(ptr, rows, cols, rs, cs, m, 1 if rounding == "rne" else 0, kb,
                            ffi.from_buffer("float[]", scale), ffi.from_buffer("uint16_t[]", idx), 0, rows, ranges)
    if kb <= 0:
        scale, idx = scale.reshape(rows, cols), idx.reshape(rows, cols)
    lo, hi = ranges
    return _Split(scale, idx, None if lo > hi else (lo, hi))


def _expand_is_exact(mult, rx, ry, mode) -> bool:
    """True when the fast kernels give amsim_mul_split's products bit for bit (amsim_window_exact).

    ``rx``, ``ry``: (min, max) biased exponents of the normal scales of X and
    Y, the operand the LUT is expanded into (None when an operand has none).
    """
    none = (255, 0)
    return bool(_cpu_lib()[1].amsim_window_exact_c(rx or none, ry or none, *mult.table_exponents,
                                                   1 if mode == "approxtrain" else 0))


# Cost model of the fast kernels: nanoseconds per count of _plan_features on one core of a Zen 4
# with the VBMI build, fitted by `scripts/bench_gemm.py --calibrate` (only their ratios matter);
# _COST_DP for LUTs the kernels take with bfloat16 dot products (Multiplier.dot_products).
# "build_op", "lookup_op": per instruction of a vpermt2ps blend tree, _select_ops(2^M) of them,
# where blend trees run (one vector, or a build without VBMI). "split_t": an element of a
# transposed view, which is transposed as it is split. "threads", "threads_awake": handing work to
# the C pool and waiting for it, when its workers sleep (a wake-up, slow in a VM) and when one is
# still polling after a recent job. The means of three calibrations, except "prep_t": the means of
# three fits of it and "prep" with the others held (on a machine too noisy for a whole
# calibration); "prep", which now includes splitting Y, is kept: the fitted values (3.5, 2.3)
# chose by-tiles plans that ran 10-20 % slower than the by-rows ones (LeNet-5 conv2's filter
# gradient).
_COST = {"build": 1.313, "build_op": 0.11, "fma": 0.61, "row_k": 0.23,
         "row_vec": 0.309, "lookup": 0.745, "lookup_group": 0.961, "lookup_op": 0.165, "prep": 1.54, "prep_t": 2.3,
         "out": 2.554, "split": 0.128, "split_t": 0.581, "threads": 56_000.0, "threads_awake": 13_100.0}
_COST_DP = {"build": 0.398, "build_op": 0.217, "fma": 0.611, "row_k": 0.249,
            "row_vec": 0.107, "lookup": 0.514, "lookup_group": 0.385, "lookup_op": 0.441, "prep": 1.95, "prep_t": 2.7,
            "out": 2.38, "split": 0.128, "split_t": 0.581, "threads": 56_000.0, "threads_awake": 7_600.0}


def _select_ops(p: int) -> int:
    return max(1, p // 16 - 1)


def _plan_features(method: str, rows: int, k: int, cols: int, bits: int, threads: int = 1,
                   y_t: bool = False, by_rows: bool | None = None) -> dict:
    """What one plan does on its busiest thread, as counts of the _COST items.

    The output is split between ``threads`` as amsim_gemm's partition does:
    by rows (``by_rows``; each thread then builds all of T, or prepares all of
    Y's columns for its lookups) or by 16-column tiles, when there are enough
    of them; by default (None) tiles first for expand, rows first for lookup.
    Expanding builds T (2^M entries per element of Y, a whole group of
    _build_group_vectors() vectors at a time) and sweeps one multiply-add per
    product. Looking up prepares Y's indices (and scales) per k and column
    vector, loads a LUT row per row, k and column chunk (of
    _lookup_chunk_vectors() vectors) and looks up 16 products at a time, with
    byte planes 64 at a time ("lookup_group": a part-filled group costs as
    much). Both write the output ("out": vectors of 16, transposed for a
    swapped plan). Splitting Y costs more when it is a transposed view
    (``y_t``: contiguous columns), which is transposed as it is split; X
    never is (the expand kernel splits a transposed X block by block, the
    others split X^T in memory order and read X k-major). The byte-plane
    lookups do not split Y: they prepare it from its raw values, gathering a
    transposed view as they go ("prep_t", on top of "prep").
    ``scripts/bench_gemm.py --calibrate`` fits _COST to these counts.
    """
    p = 1 << bits
    tiles = -(-cols // 16)
    per_tile, per_row = -(-tiles // threads), -(-rows // threads)
    if by_rows is None:
        by_rows = method == "lookup"
    # amsim_gemm's partition: the preferred way when there are enough rows (tiles) for every thread
    if by_rows:
        by_tiles = threads > 1 and rows < threads and tiles >= threads
    else:
        by_tiles = threads > 1 and tiles >= threads
    vec, r = (per_tile, rows) if by_tiles else (tiles, per_row)
    # byte-plane lookups (VBMI) serve parts of two vectors or more; a single one takes a blend tree
    # of vpermt2ps, _select_ops(2^M) of them (the "_op" counts)
    blend = _build_group_vectors() == 1 or vec == 1
    raw = method == "lookup" and not blend  # lookup_vbmi: Y read raw
    x_elems, y_elems = -(-rows * k // threads), 0 if raw else -(-k * cols // threads)
    split = {"split": x_elems + (0 if y_t else y_elems), "split_t": y_elems if y_t else 0}
    if method == "expand":
        group = 1 if blend else _build_group_vectors()
        built = -(-vec // group) * group
        return {**split, "build": k * built * p, "build_op": k * built * p * _select_ops(p) if blend else 0,
                "fma": r * k * vec, "row_k": r * k, "out": r * vec}
    chunks = -(-vec // _lookup_chunk_vectors())
    # the kernel's even chunks, and in each the byte-plane lookups' groups of up to 4 vectors
    per = -(-vec // chunks)
    groups = 0 if blend else (vec // per) * -(-per // 4) + -(-(vec % per) // 4)
    return {**split, "prep": k * vec, "prep_t": k * vec if raw and y_t else 0,
            "row_vec": r * k * chunks * max(2, p // 16), "lookup": r * k * vec, "lookup_group": r * k * groups,
            "lookup_op": r * k * vec * _select_ops(p) if blend else 0, "out": r * vec}


@functools.lru_cache(maxsize=1)
def _build_group_vectors() -> int:
    """Vectors of 16 columns that one step of this build's expansion serves (the panel's 64)."""
    return int(_cpu_lib()[1].amsim_build_group_vectors())


@functools.lru_cache(maxsize=1)
def _lookup_chunk_vectors() -> int:
    """Vectors of 16 columns that share each load of a LUT row in this build's lookup kernel."""
    return int(_cpu_lib()[1].amsim_lookup_chunk_vectors())


@functools.lru_cache(maxsize=4096)
def _fast_plan(m_rows: int, k: int, n: int, bits: int, method: str, threads: int = 1,
               awake: bool = False, a_t: bool = False, b_t: bool = False,
               dp: bool = False) -> tuple[str, bool, bool | str]:
    """The fast kernel ("expand" or "lookup", or ``method`` when forced), orientation and threading.

    Returns (method, swap, parallel): swap computes C^T = B^T A^T, vectorising
    over A's rows instead of B's columns; parallel is False (one thread), or
    how ``threads`` threads split the output: "rows" or "tiles" (True: as
    amsim_gemm prefers).
    Each plan's time is estimated from what its busiest thread does
    (_plan_features), and for several threads the cost of handing work to the
    pool: less when a worker is ``awake`` (amsim_pool_awake: one is polling,
    or GEMMs come back to back, so that one woken now stays awake for the
    next; a run of small GEMMs pays one wake-up). ``a_t``, ``b_t``: A or B is a
    transposed view (contiguous columns); swapping the operands transposes
    them. ``dp``: the LUT takes bfloat16 dot products (_COST_DP). The plan with
    the least estimated time wins; the result is the same bits whichever it is.
    """
    c = _COST_DP if dp else _COST
    best = None
    for swap in (False, True):
        rows, cols = (n, m_rows) if swap else (m_rows, n)
        y_t = not a_t if swap else b_t
        for name in ("expand", "lookup"):
            if method not in ("auto", name):
                continue
            for t, split in [(1, False)] + ([(threads, "rows"), (threads, "tiles")] if threads > 1 else []):
                counts = _plan_features(name, rows, k, cols, bits, t, y_t, split == "rows")
                cost = sum(c[f] * count for f, count in counts.items())
                cost += 0.0 if t == 1 else c["threads_awake" if awake else "threads"]
                if best is None or cost < best[0]:
                    best = (cost, name, swap, split)
    return best[1:]


_METHOD_CODES = {"direct": 0, "expand": 1, "lookup": 2}
_SPLIT_CODES = {"rows": 1, "tiles": 0}  # amsim_gemm's by_rows; anything else: -1, its own preference


def _strided(ffi, x):
    """(x, pointer, row stride, column stride) of a 2-D float32 array, strides in elements
    (_pointer); a NULL pointer for an empty one."""
    get, rs, cs = _pointer(ffi, x)
    return x, get(x) if x.size else ffi.NULL, rs, cs


def _call_key(a, b, rounding, mode, method, threads):
    """What a made-ready GEMM (_ready_call) depends on besides the multiplier: the operands'
    shapes and layouts and the options. The planner and the kernels' build are part of it, so
    that ones put in their place (tests, ``bench_gemm.py --calibrate``) take effect."""
    return a.shape, a.strides, b.shape, b.strides, rounding, mode, method, threads, _fast_plan, _cpu_lib


def _cpu_matmul_2d(a, b, mult, rounding, mode, method, threads):
    calls = mult._calls
    key = _call_key(a, b, rounding, mode, method, threads)
    call = calls.get(key)
    if call is None:
        call = _ready_call(a, b, mult, rounding, mode, method, threads)
        if len(calls) >= _MAX_CALLS:
            calls.clear()
        calls[key] = call
    return call(a, b)


#: Made-ready GEMMs kept per multiplier (a network's layers need a few each).
_MAX_CALLS = 256


def _pointer(ffi, x):
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


def _ready_call(a, b, mult, rounding, mode, method, threads):
    """A function computing ``a (x) b`` for operands shaped and laid out like a and b.

    It holds the planner's choices in an ``amsim_call`` for amsim_gemm_call,
    which picks the plan for a sleeping or an awake pool at each call, so a
    call costs a few microseconds of Python: small GEMMs take little more.
    """
    ffi, lib = _cpu_lib()
    m_rows, k = a.shape
    n = b.shape[1]
    shape = (m_rows, n)
    if m_rows == 0 or n == 0 or k == 0:
        return lambda _a, _b: np.zeros(shape, np.float32)
    threads = _threads(threads)
    work = m_rows * n * k
    mode_i = 1 if mode == "approxtrain" else 0
    rne = 1 if rounding == "rne" else 0
    a_ptr, ars, acs = _pointer(ffi, a)
    b_ptr, brs, bcs = _pointer(ffi, b)

    if mult.table is None or method == "model":
        if mult.model is None:
            raise RangeError("method='model' needs a multiplier built from a model")
        cm = mult.model
        model_threads = threads if work * 64 >= _PARALLEL_MIN_WORK else 1

        def call_model(a, b):
            out = np.empty(shape, _FLOAT32)
            lib.amsim_gemm_model(m_rows, n, k, a_ptr(a), ars, acs, b_ptr(b), brs, bcs, mult.bits, rne, mode_i,
                                 cm.address, int(cm.kind == "float"), ffi.from_buffer("float[]", out), n,
                                 model_threads)
            return out

        return call_model

    if method in ("expand", "lookup") and not mult.expandable:
        raise RangeError(f"method={method!r} needs M <= 8 and a LUT of positive finite entries")
    struct = ffi.new("struct amsim_call *")
    struct.M, struct.N, struct.K = m_rows, n, k
    struct.ars, struct.acs, struct.brs, struct.bcs = ars, acs, brs, bcs
    struct.m, struct.rounding, struct.mode, struct.forced = mult.bits, rne, mode_i, method != "auto"
    fast = method != "direct" and mult.expandable
    struct.v_lo, struct.v_hi = mult.table_exponents if fast else (0, 0)
    # a transposed view has contiguous columns: a row stride of 1 element, a larger column one
    a_t, b_t = ars == 1 and acs != 1 and k > 1, brs == 1 and bcs != 1 and n > 1
    for awake, plan in enumerate(struct.plan):
        if fast:
            # The LUT is expanded into (or looked up along) Y, the operand whose columns the inner
            # loop runs over: B, or A when the plan swaps the operands to compute C^T = B^T A^T
            # with the LUT transposed (its rows stay X's mantissas).
            name, swap, parallel = _fast_plan(m_rows, k, n, mult.bits, method, threads, threads > 1 and bool(awake),
                                              a_t, b_t, mult.dot_products)
        else:
            # the direct kernel takes about 16 times as long per product as the fast ones
            name, swap, parallel = "direct", False, work * 16 >= _PARALLEL_MIN_WORK
        plan.swap, plan.method = swap, _METHOD_CODES[name]
        plan.threads, plan.by_rows = threads if parallel else 1, _SPLIT_CODES.get(parallel, -1)
        plan.lut, plan.plut = mult.kernel_tables(swap)
        if name == "direct":
            plan.plut = ffi.NULL
    run, buffer = lib.amsim_gemm_call, ffi.from_buffer

    def call(a, b):
        out = np.empty(shape, _FLOAT32)  # every kernel writes every output
        if run(struct, a_ptr(a), b_ptr(b), buffer("float[]", out)):
            raise MemoryError("approximate GEMM kernel: out of memory for its work buffers")
        return out

    return call


_FLOAT32 = np.dtype(np.float32)
_CPU_BACKENDS = ("auto", "cpu")  # "auto" computes host arrays on the CPU (matmul)


def _check_operand(name, x):
    if type(x) is not np.ndarray or x.dtype is not _FLOAT32:  # the usual case in two identity tests
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise TypeError(f"{name} must be float32, got {x.dtype} (shape {x.shape})")
    if x.ndim < 2:
        raise ShapeError(f"{name} must have at least 2 dimensions, got shape {x.shape}")
    return x


def matmul(a, b, lut, *, bits=None, params=None, transpose_a=False, transpose_b=False, rounding="truncate",
           mode="ieee", backend="auto", method="auto", threads=None) -> np.ndarray:
    """Approximate matrix product ``a @ b`` with every product replaced by the LUT multiplier.

    Parameters
    ----------
    a, b : ndarray of float32, shape (..., M, K) and (..., K, N)
        Leading dimensions broadcast as in :func:`numpy.matmul`. Any strides.
    lut : LUT, LUT file, model name, (2^M, 2^M) array or Multiplier
        See :func:`resolve`.
    bits : int, optional
        Expected mantissa width M (required with a model name).
    transpose_a, transpose_b : bool
        Use the transpose of the last two axes (no copy).
    rounding : {"truncate", "rne"}
        Operand conversion to M bits (numerics.md 2.1).
    mode : {"ieee", "approxtrain"}
        ``approxtrain`` reproduces ApproxTrain's simulator in the normal range.
    backend : {"auto", "reference", "cpu", "cuda"}
        ``auto`` is ``cpu`` for these host arrays.
    method : {"auto", "expand", "direct", "model"}
        CPU kernel (see the module docstring); ``auto`` picks the fastest exact one.
    threads : int, optional
        CPU threads (default: ``AMSIM_NUM_THREADS``, read at the first GEMM, or every
        available CPU).

    Returns
    -------
    ndarray of float32, shape (..., M, N)
    """
    if type(lut) is Multiplier and bits is None and backend in _CPU_BACKENDS and type(a) is np.ndarray \
            and type(b) is np.ndarray and a.dtype is _FLOAT32 and b.dtype is _FLOAT32:
        # A GEMM of 2-D operands shaped and laid out as those of an earlier call with the same
        # options: made ready then (_cpu_matmul_2d), with every check done. Only 2-D keys are kept.
        a_2d = a.T if transpose_a else a
        b_2d = b.T if transpose_b else b
        call = lut._calls.get(_call_key(a_2d, b_2d, rounding, mode, method, threads))
        if call is not None:
            return call(a_2d, b_2d)
    if rounding not in reference.ROUNDINGS:
        raise ValueError(f"rounding must be one of {reference.ROUNDINGS}, not {rounding!r}")
    if mode not in reference.MODES:
        raise ValueError(f"mode must be one of {reference.MODES}, not {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if mode == "approxtrain" and rounding != "truncate":
        raise ValueError("mode='approxtrain' truncates its operands; rounding='rne' does not apply")
    a = _check_operand("a", a)
    b = _check_operand("b", b)
    if transpose_a:
        a = a.swapaxes(-1, -2)  # the method: np.swapaxes costs 0.3 us more
    if transpose_b:
        b = b.swapaxes(-1, -2)
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: inner dimensions differ: a {a.shape} and b {b.shape} "
                         f"(K = {a.shape[-1]} vs {b.shape[-2]})")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) if a.ndim > 2 or b.ndim > 2 else ()
    except ValueError:
        raise ShapeError(f"matmul: batch dimensions do not broadcast: a {a.shape} and b {b.shape}") from None
    mult = resolve(lut, bits, params=params)
    mult.check(mode)
    if backend == "auto":
        # numpy arrays live in host memory: a GPU would first need them copied there and back, so
        # "auto" computes on the CPU; backend="cuda" (or the C ABI on device arrays) uses the GPU.
        backend = "cpu"
    if not batch:
        return _matmul_2d(a, b, mult, rounding, mode, backend, method, threads)
    out = np.empty(batch + (a.shape[-2], b.shape[-1]), np.float32)
    a_b = np.broadcast_to(a, batch + a.shape[-2:])
    b_b = np.broadcast_to(b, batch + b.shape[-2:])
    for index in np.ndindex(*batch):
        out[index] = _matmul_2d(a_b[index], b_b[index], mult, rounding, mode, backend, method, threads)
    return out


def _matmul_2d(a, b, mult, rounding, mode, backend, method, threads):
    if backend == "reference":
        if mult.table is None:
            raise RangeError("the reference backend needs a LUT (M <= 12)")
        return reference.approx_matmul(a, b, mult.table, mult.bits, rounding=rounding, mode=mode)
    if backend == "cuda":
        from . import cuda

        return cuda.matmul_2d(a, b, mult, rounding=rounding, mode=mode)
    return _cpu_matmul_2d(a, b, mult, rounding, mode, method, threads)


# ----------------------------------------------------------------------------------------------
# conv2d: im2col GEMMs with the same product
# ----------------------------------------------------------------------------------------------


def _pair(value, name):
    if np.ndim(value) == 0:
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) == 4:  # TensorFlow's [1, sh, sw, 1]
        value = value[1:3]
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be an int or a pair of positive ints, got {value}")
    return value


def _conv_geometry(in_hw, k_hw, strides, padding, dilations):
    """Output size and (top, bottom, left, right) padding, following TensorFlow's rules."""
    (h, w), (kh, kw), (sh, sw), (dh, dw) = in_hw, k_hw, strides, dilations
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if isinstance(padding, str):
        p = padding.upper()
        if p == "VALID":
            pads = (0, 0, 0, 0)
        elif p == "SAME":
            oh, ow = -(-h // sh), -(-w // sw)
            ph = max((oh - 1) * sh + ekh - h, 0)
            pw = max((ow - 1) * sw + ekw - w, 0)
            pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        else:
            raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
    else:
        pad = [tuple(int(x) for x in p) for p in padding]
        if len(pad) == 4:  # TensorFlow's explicit NHWC form [[0,0],[t,b],[l,r],[0,0]]
            pad = pad[1:3]
        if len(pad) != 2 or any(len(p) != 2 or min(p) < 0 for p in pad):
            raise ValueError(f"explicit padding must be ((top, bottom), (left, right)), got {padding!r}")
        pads = (*pad[0], *pad[1])
    oh = (h + pads[0] + pads[1] - ekh) // sh + 1
    ow = (w + pads[2] + pads[3] - ekw) // sw + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f"conv2d: a {kh}x{kw} filter (dilation {dh}x{dw}) does not fit a padded {h}x{w} input")
    return (oh, ow), pads


def _im2col(x, k_hw, strides, dilations, pads, out_hw):
    """Patches (N*OH*OW, KH*KW*C), rows in NHW order, columns in (kh, kw, c) order (HWIO)."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = k_hw, strides, dilations, out_hw
    xp = np.pad(x, ((0, 0), (pads[0], pads[1]), (pads[2], pads[3]), (0, 0)))
    s = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)
    return view.reshape(n * oh * ow, kh * kw * c)


def _col2im(cols, x_shape, k_hw, strides, dilations, pads, out_hw):
    """Adjoint of _im2col: add each patch column back to its input position (kh, kw ascending)."""
    n, h, w, c = x_shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = k_hw, strides, dilations, out_hw
    xp = np.zeros((n, h + pads[0] + pads[1], w + pads[2] + pads[3], c), np.float32)
    patches = cols.reshape(n, oh, ow, kh, kw, c)
    for i in range(kh):
        for j in range(kw):
            xp[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :] += patches[:, :, :, i, j, :]
    return xp[:, pads[0]: pads[0] + h, pads[2]: pads[2] + w, :]


def _conv_args(x_shape, w_shape, strides, padding, dilations):
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ShapeError(f"conv2d needs NHWC input and HWIO filter, got {tuple(x_shape)} and {tuple(w_shape)}")
    if x_shape[3] != w_shape[2]:
        raise ShapeError(f"conv2d: input has {x_shape[3]} channels, filter expects {w_shape[2]} "
                         f"(input {tuple(x_shape)}, filter {tuple(w_shape)})")
    strides, dilations = _pair(strides, "strides"), _pair(dilations, "dilations")
    out_hw, pads = _conv_geometry(x_shape[1:3], w_shape[:2], strides, padding, dilations)
    return strides, dilations, out_hw, pads


def conv2d(x, w, lut, strides=1, padding="VALID", dilations=1, **kwargs) -> np.ndarray:
    """Approximate 2-D convolution (cross-correlation, as TensorFlow's conv2d).

    Parameters
    ----------
    x : ndarray of float32, (N, H, W, C)
    w : ndarray of float32, (KH, KW, C, O)
    lut : see :func:`resolve`
    strides, dilations : int or (int, int)
    padding : "SAME", "VALID" or ((top, bottom), (left, right))
    **kwargs
        ``bits``, ``params``, ``rounding``, ``mode``, ``backend``, ``method``,
        ``threads`` as for :func:`matmul`.

    Returns
    -------
    ndarray of float32, (N, OH, OW, O): the GEMM of the patch matrix (left
    operand, LUT rows) with the reshaped filter (right operand, LUT columns).
    """
    x, w = _check_operand("x", x), _check_operand("w", w)
    strides, dilations, out_hw, pads = _conv_args(x.shape, w.shape, strides, padding, dilations)
    cols = _im2col(x, w.shape[:2], strides, dilations, pads, out_hw)
    y = matmul(cols, w.reshape(-1, w.shape[3]), lut, **kwargs)
    return y.reshape(x.shape[0], *out_hw, w.shape[3])


def conv2d_backprop_input(input_shape, w, dy, lut, strides=1, padding="VALID", dilations=1, **kwargs):
    """Gradient of :func:`conv2d` with respect to its input.

    The patch gradients are the GEMM ``dy (N*OH*OW, O) (x) w^T (O, KH*KW*C)``:
    the incoming gradient is the left operand (LUT rows) and the filter the
    right one, as in the forward pass. Each input position then sums its
    patch gradients in (kh, kw) order.
    """
    w, dy = _check_operand("w", w), _check_operand("dy", dy)
    input_shape = tuple(int(s) for s in input_shape)
    strides, dilations, out_hw, pads = _conv_args(input_shape, w.shape, strides, padding, dilations)
    expected = (input_shape[0], *out_hw, w.shape[3])
    if dy.shape != expected:
        raise ShapeError(f"conv2d_backprop_input: dy has shape {dy.shape}, expected {expected}")
    cols = matmul(dy.reshape(-1, w.shape[3]), w.reshape(-1, w.shape[3]), lut, transpose_b=True, **kwargs)
    return _col2im(cols, input_shape, w.shape[:2], strides, dilations, pads, out_hw)


def conv2d_backprop_filter(x, filter_shape, dy, lut, strides=1, padding="VALID", dilations=1, **kwargs):
    """Gradient of :func:`conv2d` with respect to its filter.

    The GEMM ``patches^T (KH*KW*C, N*OH*OW) (x) dy (N*OH*OW, O)``: the input
    patches are the left operand (LUT rows), the incoming gradient the right.
    """
    x, dy = _check_operand("x", x), _check_operand("dy", dy)
    filter_shape = tuple(int(s) for s in filter_shape)
    strides, dilations, out_hw, pads = _conv_args(x.shape, filter_shape, strides, padding, dilations)
    expected = (x.shape[0], *out_hw, filter_shape[3])
    if dy.shape != expected:
        raise ShapeError(f"conv2d_backprop_filter: dy has shape {dy.shape}, expected {expected}")
    cols = _im2col(x, filter_shape[:2], strides, dilations, pads, out_hw)
    dw = matmul(cols, dy.reshape(-1, filter_shape[3]), lut, transpose_a=True, **kwargs)
    return dw.reshape(filter_shape)
