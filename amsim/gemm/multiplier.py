"""The multiplier as the GEMM engine uses it, and how what a user passes becomes one."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .. import reference
from ..errors import LUTError, RangeError
from ..lut import LUT, load_any
from . import engine

__all__ = ["Multiplier", "resolve", "EXPAND_MAX_BITS"]

EXPAND_MAX_BITS = 8


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
        self._calls: dict = {}  # GEMMs made ready for the CPU kernels (cpu.ready_call), by cpu.call_key

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
        ffi, lib = engine.load()
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
        ffi, _lib = engine.load()
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
        ffi, lib = engine.load()
        return self.expandable and bool(lib.amsim_lut_dot_products(ffi.from_buffer(self.prepared()), self.bits))

    @functools.cached_property
    def expandable(self) -> bool:
        """True when every entry is positive and finite: the expand kernel is exact for it."""
        t = self.table
        return t is not None and self.bits <= EXPAND_MAX_BITS and bool(np.all(np.isfinite(t)) and np.all(t > 0))

    @functools.cached_property
    def table_exponents(self) -> tuple[int, int]:
        """Smallest and largest biased float32 exponent of the LUT entries (entries are normal)."""
        e = (self.table.view(np.uint32) >> 23) & 0xFF
        return int(e.min()), int(e.max())


@functools.lru_cache(maxsize=64)
def _model_multiplier(name: str, bits: int, params: tuple, models_dirs: tuple):
    from ..generate import MAX_LUT_BITS, compile_for_mantissa
    from ..models import find_model
    from ..sweep import significand_table

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

