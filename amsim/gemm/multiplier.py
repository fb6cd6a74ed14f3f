"""The multiplier as the GEMM engine uses it, and how what a user passes becomes one."""

from __future__ import annotations

import collections
import threading
from pathlib import Path

import numpy as np

from .. import generate, reference
from ..errors import LUTError, RangeError, check_integer
from ..lut import LUT, load_any, names_lut_file
from ..models import find_model
from . import engine

__all__ = ["Multiplier", "resolve", "EXPAND_MAX_BITS", "MAX_BITS"]

#: Widest LUT the expand and lookup kernels take.
EXPAND_MAX_BITS = 8
#: Widest mantissa: float32's fraction.
MAX_BITS = 23


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
        self.bits = check_integer(bits, "bits (mantissa fraction bits M)", 1, MAX_BITS)
        self.model = model
        self.name = name
        if table is not None:
            table = np.asarray(table)
            if table.dtype.kind not in "fiu":
                raise LUTError(f"a LUT holds real significand products, not {table.dtype} values")
            n = 1 << self.bits
            if table.shape != (n, n):
                raise LUTError(f"LUT shape {table.shape} does not match M={self.bits} (expected {n}x{n})")
            # float64 tables (products of more than 24 bits) are rounded once to nearest float32,
            # as amsim.reference does.
            table = np.ascontiguousarray(table, dtype=np.float32)
            if np.any(table < 0):
                i, j = np.argwhere(table < 0)[0]
                raise LUTError(f"LUT entry [{i}, {j}] is {table[i, j]}: significand products are never negative")
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

    def engine_lut(self, ffi=None, lib=None) -> engine.Lut:
        """This LUT made ready for the engine (amsim_lut_init), once per build of the engine."""
        if ffi is None:
            ffi, lib = engine.load()
        key = ("_engine_lut", ffi)
        lut = self.__dict__.get(key)
        if lut is None:
            lut = self.__dict__[key] = engine.Lut(ffi, lib, self.table, self.bits)
        return lut

    @property
    def expandable(self) -> bool:
        """True when the fast kernels take this LUT (M <= 8, every entry positive and finite:
        struct amsim_lut's ``fast``)."""
        return self.table is not None and self.bits <= EXPAND_MAX_BITS and self.engine_lut().fast

    @property
    def dot_products(self) -> bool:
        """True when the fast kernels of this build take bfloat16 dot products for this LUT
        (entries that are bfloat16 values, M < 8: struct amsim_lut's ``dot_products``)."""
        return self.expandable and self.engine_lut().dot_products

    @property
    def table_exponents(self) -> tuple[int, int]:
        """Smallest and largest biased float32 exponent of the LUT entries (struct amsim_lut)."""
        return self.engine_lut().exponents


#: Multipliers made from models in this process, by build (CompiledModel.key) and M, least recently used
#: first: naming a model again costs its lookup, not its table, and gives the same Multiplier, whose
#: prepared LUT and GEMM plans the engine keeps.
_FROM_MODELS: collections.OrderedDict = collections.OrderedDict()
_FROM_MODELS_MAX = 64
_FROM_MODELS_LOCK = threading.Lock()


def _model_multiplier(model, bits: int, params) -> Multiplier:
    """The M-bit multiplier of a C model: its LUT (M <= 12, from amsim's cache, swept on first use), and
    the compiled model itself, which model mode calls per product (the only way for M > 12)."""
    params = model.resolve_params(params)
    cm = generate.compile_for_mantissa(model, bits, params)
    key = (cm.key, bits)
    with _FROM_MODELS_LOCK:
        if key in _FROM_MODELS:
            _FROM_MODELS.move_to_end(key)
            return _FROM_MODELS[key]
    if bits > generate.MAX_LUT_BITS:
        mult = Multiplier(bits, model=cm, name=model.name)
    else:
        lut = generate.cached_mantissa_lut(model, bits, params)
        mult = Multiplier(bits, table=lut.table, model=cm, name=model.name)
    with _FROM_MODELS_LOCK:
        mult = _FROM_MODELS.setdefault(key, mult)  # a thread that got there first wins: one Multiplier per build
        while len(_FROM_MODELS) > _FROM_MODELS_MAX:
            _FROM_MODELS.popitem(last=False)
    return mult


def resolve(lut, bits: int | None = None, *, params=None, models_dirs=()) -> Multiplier:
    """Turn what the user passed as ``lut`` into a :class:`Multiplier`.

    Every place that takes a multiplier resolves it here (the GEMM functions, the TensorFlow ops,
    the Keras layers and ``approximate()``; ``amsim train`` through them), so each takes the same
    things.

    Parameters
    ----------
    lut : Multiplier, amsim.lut.LUT, str, Path or ndarray
        A LUT object; a LUT file (native ``.npz`` or ApproxTrain ``NAME_M.bin``:
        :func:`amsim.lut.names_lut_file` tells files from models); a C model, by
        name or by the path of its ``.c`` file (then ``bits`` is required: M <= 12
        uses its LUT, swept once and cached, see
        :func:`amsim.generate.cached_mantissa_lut`; M > 12 uses the model
        directly); or a (2^M, 2^M) table.
    bits : int, optional
        Expected M; a LUT for another M is refused.
    params : dict, optional
        Model parameters when ``lut`` is a model.
    models_dirs : iterable of path, optional
        Folders of C models searched by name after the built-ins.
    """
    if bits is not None:
        check_integer(bits, "bits (mantissa fraction bits M)", 1, MAX_BITS)
    if isinstance(lut, Multiplier):
        mult = lut
    elif isinstance(lut, LUT):
        if lut.kind != "mantissa":
            raise LUTError(f"the GEMM needs a mantissa LUT; this is an {lut.kind} table")
        mult = Multiplier(lut.bits, table=lut.table, name=lut.model)
    elif isinstance(lut, (str, Path)) and names_lut_file(lut):
        return resolve(load_any(lut, bits=bits))
    elif isinstance(lut, (str, Path)):
        if bits is None:
            raise RangeError(f"model {str(lut)!r} given as the LUT: say which mantissa width with bits=M")
        mult = _model_multiplier(find_model(str(lut), models_dirs), int(bits), params)
    elif isinstance(lut, np.ndarray):
        size = lut.shape[0] if lut.ndim == 2 else 0
        if lut.ndim != 2 or lut.shape[1] != size or size < 2 or size & (size - 1) or size > 1 << generate.MAX_LUT_BITS:
            raise LUTError(f"a LUT array must be (2^M, 2^M) with M = 1..{generate.MAX_LUT_BITS}, not {lut.shape}")
        mult = Multiplier(size.bit_length() - 1, table=lut)
    else:
        raise TypeError(f"lut must be a LUT, a LUT file, a model name or .c file, or an array, not "
                        f"{type(lut).__name__}")
    if bits is not None and mult.bits != int(bits):
        raise LUTError(f"LUT is for M={mult.bits}, not M={bits}")
    return mult

