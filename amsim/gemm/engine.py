"""The compiled CPU engine: building it, loading it through cffi, and handing it numpy arrays.

The engine (``amsim/csrc/cpu/``) is built as one plain shared library,
``libamsim_gemm-<key>.so`` in :func:`amsim.cbuild.cache_dir`, which the cffi
extension below links and the TensorFlow ops link too (:func:`library_path`),
so that a process holds one copy of it and one thread pool. cffi's
declarations are read from the headers (the blocks between their CDEF markers),
never restated here: ``amsim_gemm.h`` (the public interface) and
``engine_internal.h`` (what the binding, the tests and the cost fit use besides).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

from .. import cbuild
from ..errors import AmsimError, RangeError, check_integer

_CPU_DIR = Path(__file__).resolve().parent.parent / "csrc" / "cpu"

#: Builds of the engine: "native" (-march=native: AVX-512 with VBMI byte-plane lookups and
#: AVX512-BF16 dot products where the CPU has them), "no-bf16" (without the dot products),
#: "no-vbmi" (the AVX-512 float lookups only), "avx2" (no AVX-512: the integer GEMM's AVX2 table
#: kernel, the float kernels' portable C) and "portable" (no intrinsics).
VARIANTS = {"native": [], "no-bf16": ["-mno-avx512bf16"], "no-vbmi": ["-mno-avx512vbmi"],
            "avx2": ["-mno-avx512f"], "portable": ["-DAMSIM_PORTABLE"]}
_FLAGS = ["-O3", "-march=native", "-std=gnu11", "-fPIC"]

KERNELS = {"auto": -1, "direct": 0, "expand": 1, "lookup": 2}
KERNEL_NAMES = {code: name for name, code in KERNELS.items()}


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


def variant_of(variant: str | None) -> str:
    """``variant``, else AMSIM_GEMM_VARIANT, else "native"; checked."""
    variant = variant or os.environ.get("AMSIM_GEMM_VARIANT") or "native"
    if variant not in VARIANTS:
        raise ValueError(f"AMSIM_GEMM_VARIANT must be one of {sorted(VARIANTS)}, not {variant!r}")
    return variant


def _cdef_block(header: Path, marker: str) -> str:
    text = header.read_text()
    found = re.search(rf"/\* {marker}_BEGIN[^*]*\*/(.*)/\* {marker}_END \*/", text, re.S)
    if not found:  # pragma: no cover - our own headers
        raise AmsimError(f"{header} has no {marker}_BEGIN/END block")
    return found.group(1)


def _cdef() -> str:
    return (_cdef_block(cbuild.include_dir() / "amsim_gemm.h", "AMSIM_CDEF")
            + _cdef_block(_CPU_DIR / "engine_internal.h", "AMSIM_INTERNAL_CDEF"))


@functools.lru_cache(maxsize=None)
def library_path(variant: str | None = None) -> Path:
    """The engine's shared library for ``variant`` (built on first use), for callers that link it
    (the TensorFlow ops): ``#include <amsim_gemm.h>`` (:func:`amsim.cbuild.include_dir`) and link
    this path."""
    variant = variant_of(variant)
    try:
        return cbuild.build_library("amsim_gemm", _CPU_DIR / "engine.c", _FLAGS + VARIANTS[variant],
                                    depends=sorted(_CPU_DIR.glob("*.[ch]")), include_dirs=[_CPU_DIR],
                                    key_parts=[cpu_flags()])
    except cbuild.BuildFailed as exc:  # pragma: no cover - our own source; a toolchain problem
        raise AmsimError(f"building the CPU GEMM engine failed:\n{exc.output}") from None


@functools.lru_cache(maxsize=None)
def _module(variant: str):
    path = library_path(variant)
    source = '#include <amsim_gemm.h>\n#include "engine_internal.h"\n'
    link = [f"-L{path.parent}", f"-l:{path.name}", f"-Wl,-rpath,{path.parent}"]
    try:
        return cbuild.load_cached("_amsim_gemm_engine", _cdef(), source, ["-O2"], include_dirs=[_CPU_DIR],
                                  link_args=link, key_parts=[path.name])
    except cbuild.BuildFailed as exc:  # pragma: no cover - our own source; a toolchain problem
        raise AmsimError(f"building the CPU GEMM binding failed:\n{exc.output}") from None


@functools.lru_cache(maxsize=None)
def load(variant: str | None = None):
    """(ffi, lib) of the engine built for ``variant`` (default: AMSIM_GEMM_VARIANT, else
    "native"), with the planner's costs for this machine set (amsim.gemm.planner)."""
    variant = variant_of(variant)
    module = _module(variant)
    from . import planner

    planner.install_costs(module.ffi, module.lib, variant)
    return module.ffi, module.lib


def engine_threads(threads, name: str = "threads (None: the engine's default)") -> int:
    """The engine's thread argument for a caller's ``threads``: 0 (the engine's default) for None,
    else ``threads`` checked to be an integer >= 1 (:class:`RangeError` naming ``name``)."""
    return 0 if threads is None else check_integer(threads, name, 1)


def check_status(rc: int, call: str) -> None:
    """Raise for an engine call's amsim_status ``rc``: MemoryError for AMSIM_ERR_MEMORY (-1),
    RangeError for any other refusal (of arguments its caller checks beforehand)."""
    if rc == -1:
        raise MemoryError(f"{call}: out of memory")
    if rc:
        raise RangeError(f"{call} refused its arguments (status {rc})")


def _aligned_storage(size: int) -> np.ndarray:
    """``size`` bytes, 64-byte aligned, that the engine's prepared tables live in."""
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size]


class Lut:
    """A LUT made ready for the engine (``struct amsim_lut``, amsim_lut_init): the table in both
    orientations, the fast kernels' layouts, and what the planner knows of it. Holds the storage
    that ``ptr`` points into."""

    __slots__ = ("ptr", "_storage")

    def __init__(self, ffi, lib, table: np.ndarray, bits: int):
        self._storage = _aligned_storage(lib.amsim_lut_storage_bytes(bits))
        self.ptr = ffi.new("struct amsim_lut *")
        table = np.ascontiguousarray(table, dtype=np.float32)
        if lib.amsim_lut_init(self.ptr, ffi.from_buffer("float[]", table), bits, ffi.from_buffer(self._storage)):
            raise AmsimError(f"amsim_lut_init refused a {table.shape} table for M={bits}")

    @property
    def fast(self) -> bool:
        return bool(self.ptr.fast)

    @property
    def dot_products(self) -> bool:
        return bool(self.ptr.dot_products)

    @property
    def exponents(self) -> tuple[int, int]:
        return int(self.ptr.v_lo), int(self.ptr.v_hi)


class IntLut:
    """An integer circuit's product table made ready for the engine's integer GEMM (``struct
    amsim_int_lut``, amsim_int_lut_init): a copy of the table, the fast kernels' byte planes of it
    and of its transpose, and its largest magnitude. Holds the storage that ``ptr`` points into."""

    __slots__ = ("ptr", "_storage")

    def __init__(self, ffi, lib, table: np.ndarray, bits: int):
        self._storage = _aligned_storage(lib.amsim_int_lut_storage_bytes(bits))
        self.ptr = ffi.new("struct amsim_int_lut *")
        table = np.ascontiguousarray(table, dtype=np.int32)
        if lib.amsim_int_lut_init(self.ptr, ffi.from_buffer("int32_t[]", table), bits,
                                  ffi.from_buffer(self._storage)):
            raise AmsimError(f"amsim_int_lut_init refused a {table.shape} table for bits={bits}")


class Split:
    """An operand split for the kernels: scales, mantissa indices, and the normal exponent range."""

    __slots__ = ("scale", "idx", "exponents")

    def __init__(self, scale, idx, exponents):
        self.scale, self.idx, self.exponents = scale, idx, exponents


def split(ffi, lib, x, m, rounding, kb=0) -> Split:
    """Split a 2-D float32 operand (any strides) with amsim_split_f32, as the GEMMs do.

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


def build_group_vectors() -> int:
    """Vectors of 16 columns that one step of this build's expansion serves (the panel's 64)."""
    return int(load()[1].amsim_build_group_vectors())


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
    contiguous: ``__array_interface__`` builds a dict and ``.ctypes`` a ctypes object, each
    a noticeable part of a small GEMM. Strides the kernels cannot take (negative, or not whole
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


def _geometry(ffi, g):
    """A ``struct amsim_conv_geometry`` from a convolution's geometry (amsim.gemm.conv.ConvGeometry)."""
    (sh, sw), (dh, dw), pads = g.strides, g.dilations, g.pads
    return ffi.new("struct amsim_conv_geometry *", {
        "n": g.n, "h": g.h, "w": g.w, "c": g.c, "kh": g.kh, "kw": g.kw, "sh": sh, "sw": sw, "dh": dh, "dw": dw,
        "pad_top": pads[0], "pad_left": pads[2], "oh": g.oh, "ow": g.ow})


def im2col(x: np.ndarray, g) -> np.ndarray:
    """Patches (N*OH*OW, KH*KW*C) of an NHWC float32 input (amsim_im2col): rows in NHW order,
    columns in (kh, kw, c) order, zeros in the padding."""
    ffi, lib = load()
    x = np.ascontiguousarray(x, dtype=np.float32)
    cols = np.empty((g.n * g.oh * g.ow, g.kh * g.kw * g.c), np.float32)
    if cols.size and lib.amsim_im2col(_geometry(ffi, g), ffi.from_buffer("float[]", x),
                                      ffi.from_buffer("float[]", cols)):
        raise AmsimError(f"amsim_im2col refused the geometry {g}")
    return cols


def col2im(cols: np.ndarray, g) -> np.ndarray:
    """The adjoint of :func:`im2col` (amsim_col2im): each input position (N, H, W, C) sums the patch
    columns that cover it in increasing (kh, kw), in float32 from +0."""
    ffi, lib = load()
    cols = np.ascontiguousarray(cols, dtype=np.float32)
    dx = np.empty((g.n, g.h, g.w, g.c), np.float32)
    if dx.size and lib.amsim_col2im(_geometry(ffi, g), ffi.from_buffer("float[]", cols) if cols.size else ffi.NULL,
                                    ffi.from_buffer("float[]", dx)):
        raise AmsimError(f"amsim_col2im refused the geometry {g}")
    return dx
