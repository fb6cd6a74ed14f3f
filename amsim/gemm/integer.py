"""The integer LUT GEMM: a matrix product of n-bit integers whose every product is a circuit's.

For n-bit operands (1 <= n <= 8) and the circuit's complete product table ``lut``
(docs/numerics.md section 4)::

    C[i, j] = sum over k of lut[p(a[i, k]), p(b[k, j])]

where p(x) is the operand's n-bit pattern: the value itself for unsigned operands
(``0 <= x < 2^n``), the two's-complement pattern ``x mod 2^n`` for signed ones
(``-2^(n-1) <= x < 2^(n-1)``; so row ``2^n - 1`` is the operand -1, as in
:func:`amsim.generate.integer_lut`'s tables). The row is the left operand.

The sum is exact. Entries must fit a 16-bit circuit output (``0 <= v < 2^16`` unsigned,
``-2^15 <= v < 2^15`` signed), and the result is int32 when no sum can leave int32,
``K * max|lut| <= 2^31 - 1``, else int64 (:func:`accumulator_dtype`): decided per call from the
table and K, never by wrapping.

Backends: ``reference`` (numpy, the oracle), ``cpu`` (the engine's ``amsim_int_gemm``,
``amsim/csrc/cpu/int_gemm.c``) and ``cuda`` (``amsim_cuda_int_gemm``,
``amsim/csrc/cuda/int_gemm_cuda.cu``); the same integers from each, for every thread count.

A table is checked, and made ready for the engine, on every call that passes it as an array or a
LUT; an :class:`IntegerTable` is checked and prepared once, for all the calls that pass it.
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import AmsimError, RangeError, check_integer
from ..lut import LUT
from . import ShapeError, engine

__all__ = ["int_matmul", "reference_int_matmul", "accumulator_dtype", "check_bits", "check_table", "check_values",
           "value_range", "IntegerTable", "IntegerOperandError", "MAX_BITS"]

#: Widest operands the integer GEMM takes: a pattern is one byte.
MAX_BITS = 8
#: Widest circuit output: 16 bits, unsigned or signed (an 8 x 8-bit product).
OUTPUT_BITS = 16
_INT32, _INT64 = np.dtype(np.int32), np.dtype(np.int64)
_INT32_MAX = np.iinfo(np.int32).max
_INT64_MAX = np.iinfo(np.int64).max
#: The dtype whose every value is an 8-bit operand, and whose bytes are its patterns, by signedness.
_BYTES = {False: np.dtype(np.uint8), True: np.dtype(np.int8)}
BACKENDS = ("auto", "reference", "cpu", "cuda")


class IntegerOperandError(AmsimError, ValueError):
    """An operand or table the integer GEMM cannot take: not integers, or values out of range."""


class IntegerTable:
    """A circuit's product table, checked once and made ready for the integer GEMM once.

    Pass one to :func:`int_matmul` or :func:`amsim.gemm.int_conv2d` wherever many calls multiply
    with the same circuit: each call then neither checks the table again nor has the engine
    prepare it (its byte planes, in both orientations: at M = 64, as much work as the GEMM).

    Args:
        lut: the (2^bits, 2^bits) product table, as :func:`int_matmul` takes it: an integer array
            or an integer :class:`amsim.lut.LUT`. It is copied: later changes to it are not seen.
        bits: the operand width n, 1..8.
        signed: two's-complement operands (and a signed circuit's outputs).

    Attributes:
        table: the read-only int32 copy.
        bits, signed: as given.
        largest: the largest magnitude among its entries (what :func:`accumulator_dtype` needs).

    Raises:
        as :func:`check_table`, and RangeError for a bad width.
    """

    __slots__ = ("table", "bits", "signed", "largest", "_engine_luts", "__weakref__")

    def __init__(self, lut, *, bits: int = 8, signed: bool = False):
        bits = check_bits(bits)
        self._hold(check_table(lut, bits, bool(signed), fn="IntegerTable"), bits, bool(signed))

    @classmethod
    def _of_checked(cls, table: np.ndarray, bits: int, signed: bool) -> IntegerTable:
        """One of a table that check_table has passed."""
        self = cls.__new__(cls)
        self._hold(table, bits, signed)
        return self

    def _hold(self, table: np.ndarray, bits: int, signed: bool) -> None:
        self.bits, self.signed = bits, signed
        self.table = np.array(table, np.int32, order="C")  # a copy
        self.table.flags.writeable = False
        self.largest = largest_product(self.table)
        self._engine_luts = {}  # engine.IntLut by engine build (its ffi)

    def __repr__(self) -> str:
        return f"IntegerTable({'signed' if self.signed else 'unsigned'} {self.bits}-bit)"

    def engine_lut(self, ffi, lib) -> engine.IntLut:
        """The table made ready for this build of the engine (amsim_int_lut_init), once per build."""
        prepared = self._engine_luts.get(ffi)
        if prepared is None:  # two threads may both prepare it: the same bytes, one kept
            prepared = self._engine_luts.setdefault(ffi, engine.IntLut(ffi, lib, self.table, self.bits))
        return prepared


def largest_product(table) -> int:
    """The largest magnitude among the table's entries (0 for an empty table); ``table`` an array
    or an :class:`IntegerTable`."""
    if isinstance(table, IntegerTable):
        return table.largest
    table = np.asarray(table)
    return max(-int(table.min()), int(table.max()), 0) if table.size else 0


def accumulator_dtype(k: int, table) -> np.dtype:
    """int32 when ``k`` products of the table's largest magnitude fit int32, else int64.

    Raises:
        RangeError: when not even int64 can hold such a sum.
    """
    largest = largest_product(table)
    if k * largest <= _INT32_MAX:
        return _INT32
    if k * largest <= _INT64_MAX:
        return _INT64
    raise RangeError(f"int_matmul: K = {k} products of magnitude up to {largest} can overflow even int64")


def int_matmul(a, b, lut, *, signed=False, bits=8, backend="auto", threads=None) -> np.ndarray:
    """Integer matrix product ``a @ b`` with every product looked up in a circuit's table.

    Args:
        a: integer array (M, K) of n-bit operands, the table's row operand.
        b: integer array (K, N) of n-bit operands, the column operand.
        lut: the circuit's (2^bits, 2^bits) product table indexed by the operands' patterns: an
            integer array, or an integer :class:`amsim.lut.LUT` of the same width and signedness
            (:func:`amsim.generate.integer_lut` builds one from a circuit), or an
            :class:`IntegerTable` of the same width and signedness (checked and prepared once).
        signed: operands in ``[-2^(bits-1), 2^(bits-1))``, two's complement; else ``[0, 2^bits)``.
        bits: the operand width n, 1..8.
        backend: ``"cpu"`` (the engine; also ``"auto"``), ``"cuda"`` (the GPU kernel, or its CPU
            emulation: docs/cuda.md) or ``"reference"`` (numpy).
        threads: CPU threads (None: the engine's default); the CPU backend's only.

    Returns:
        int32 array (M, N) of exact sums, or int64 where K products of the table's largest
        magnitude could overflow int32 (:func:`accumulator_dtype`).

    Raises:
        IntegerOperandError: non-integer operands or table, values outside their range.
        ShapeError: operands not 2-D or inner dimensions that differ, a table of the wrong shape.
        RangeError: a bad width, thread count or backend; a sum int64 cannot hold.
        amsim.gemm.cuda.CudaError: ``backend="cuda"`` where it cannot run (no GPU, no emulation).
    """
    check_bits(bits)
    if backend not in BACKENDS:
        raise RangeError(f"backend must be one of {BACKENDS}, not {backend!r}")
    threads = engine.engine_threads(threads, "threads (None: every available CPU)")
    table = prepared_table(lut, bits, signed)
    pa = _patterns("a", a, bits, signed)
    pb = _patterns("b", b, bits, signed)
    if pa.shape[1] != pb.shape[0]:
        raise ShapeError(f"int_matmul: inner dimensions differ: a {pa.shape} and b {pb.shape}")
    dtype = accumulator_dtype(pa.shape[1], table)
    if backend == "reference":
        return reference_int_matmul(pa, pb, table.table).astype(dtype)
    if backend == "cuda":
        from . import cuda

        return cuda.int_matmul_2d(pa, pb, table.table, bits=bits, signed=bool(signed), dtype=dtype)
    return _cpu_int_matmul(pa, pb, table, dtype, threads)


def reference_int_matmul(pa: np.ndarray, pb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The oracle: int64 sums over k of ``table[pa[i, k], pb[k, j]]`` (patterns, not values)."""
    table = np.asarray(table, np.int64)
    out = np.zeros((pa.shape[0], pb.shape[1]), np.int64)
    for k in range(pa.shape[1]):
        out += table[pa[:, k][:, None], pb[k][None, :]]
    return out


def _cpu_int_matmul(pa, pb, table: IntegerTable, dtype, threads):
    ffi, lib = engine.load()
    m_rows, k = pa.shape
    n = pb.shape[1]
    out = np.empty((m_rows, n), dtype)
    if out.size == 0:
        return out
    if k == 0:
        out[...] = 0
        return out
    rc = lib.amsim_int_gemm(table.engine_lut(ffi, lib).ptr, m_rows, n, k, ffi.from_buffer("uint8_t[]", pa),
                            ffi.from_buffer("uint8_t[]", pb), ffi.from_buffer(out), int(dtype.itemsize == 8),
                            threads)
    engine.check_status(rc, "amsim_int_gemm")
    return out


def check_bits(bits) -> int:
    """``bits`` as an int when it is an operand width the integer GEMM takes (1..8), else :class:`RangeError`."""
    return check_integer(bits, "bits (the operand width n)", 1, MAX_BITS)


def value_range(bits: int, signed: bool) -> tuple[int, int]:
    """The smallest and largest n-bit operand: ``-2^(n-1), 2^(n-1) - 1`` signed, ``0, 2^n - 1`` unsigned."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def check_values(name: str, low: int, high: int, bits: int, signed: bool) -> None:
    """Refuse an operand whose smallest and largest values ``low`` and ``high`` leave the n-bit range.

    Raises:
        IntegerOperandError: naming the operand, the offending value and the range.
    """
    lo, hi = value_range(bits, signed)
    if low < lo or high > hi:
        bad = low if low < lo else high
        kind = "signed" if signed else "unsigned"
        raise IntegerOperandError(f"{name} holds {bad}, outside the {kind} {bits}-bit range {lo}..{hi}")


def _integers(name, x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise IntegerOperandError(f"{name} must be an integer array, got {x.dtype} (shape {x.shape})")
    return x


def _patterns(name, x, bits, signed) -> np.ndarray:
    """The operand's n-bit patterns as a C-contiguous uint8 array, its values checked first."""
    x = _integers(name, x)
    if x.ndim != 2:
        raise ShapeError(f"int_matmul: {name} must be 2-D, got shape {x.shape}")
    if bits == 8 and x.dtype == _BYTES[signed]:  # every value of the dtype is an operand
        x = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        return x.view(np.uint8) if signed else x
    if x.size:
        check_values(name, int(x.min()), int(x.max()), bits, signed)
    # x mod 2^n: the value itself when unsigned, the two's-complement pattern when signed
    return np.ascontiguousarray(np.bitwise_and(x.astype(np.int64, copy=False), (1 << bits) - 1), np.uint8)


# Tables that calls passed as arrays or LUTs, prepared: most recent first. A call passing one of
# them again (equal entries, width and signedness) reuses it, as the TensorFlow ops' cache does:
# comparing the entries costs a fraction of preparing them.
_RECENT_TABLES: list[IntegerTable] = []
_RECENT_LIMIT = 8
_RECENT_LOCK = threading.Lock()


def prepared_table(lut, bits: int, signed: bool, fn: str = "int_matmul") -> IntegerTable:
    """``lut`` as an :class:`IntegerTable`: itself when it is one of this width and signedness,
    else checked (:func:`check_table`) and prepared, once per distinct table in the process.

    Raises:
        IntegerOperandError, ShapeError: as :func:`check_table`, also for an IntegerTable of another
            signedness or width.
    """
    signed = bool(signed)
    if isinstance(lut, IntegerTable):
        if lut.bits != bits:
            raise ShapeError(f"{fn}: the table is of {lut.bits}-bit operands, not bits={bits}")
        if lut.signed != signed:
            raise IntegerOperandError(f"{fn}: the table is {'signed' if lut.signed else 'unsigned'}; "
                                      f"{fn} was called with signed={signed}")
        return lut
    table = _table_array(lut, bits, signed, fn)
    with _RECENT_LOCK:
        for i, seen in enumerate(_RECENT_TABLES):
            if seen.bits == bits and seen.signed == signed and np.array_equal(seen.table, table):
                _RECENT_TABLES.insert(0, _RECENT_TABLES.pop(i))
                return seen
    _check_outputs(table, signed)
    prepared = IntegerTable._of_checked(table, bits, signed)
    with _RECENT_LOCK:
        _RECENT_TABLES.insert(0, prepared)
        del _RECENT_TABLES[_RECENT_LIMIT:]
    return prepared


def check_table(lut, bits: int, signed: bool, fn: str = "int_matmul") -> np.ndarray:
    """The product table as int32, its kind, shape and entries checked.

    Args:
        lut: an integer array, or an integer :class:`amsim.lut.LUT` (its width and signedness checked too).
        bits: the operand width n: the table must be (2^n, 2^n).
        signed: the operands' signedness, which sets the allowed circuit outputs.
        fn: the function named in the errors.

    Raises:
        IntegerOperandError: not integers, a LUT of another kind or signedness, entries out of range.
        ShapeError: a table of the wrong shape, a LUT of another width.
    """
    table = _table_array(lut, bits, signed, fn)
    _check_outputs(table, signed)
    return table.astype(np.int32, copy=False)


def _table_array(lut, bits: int, signed: bool, fn: str) -> np.ndarray:
    """The table's integer array, its kind and shape checked (check_table, but not its entries)."""
    if isinstance(lut, LUT):
        if lut.kind != "integer":
            raise IntegerOperandError(f"{fn} needs an integer LUT, not a {lut.kind} LUT")
        if lut.bits != bits:
            raise ShapeError(f"the LUT is of {lut.bits}-bit operands, not bits={bits}")
        lut_signed = bool(lut.meta.get("signed"))
        if lut_signed != signed:
            raise IntegerOperandError(f"the LUT's circuit is {'signed' if lut_signed else 'unsigned'}; "
                                      f"{fn} was called with signed={signed}")
        lut = lut.table
    table = _integers("lut", lut)
    size = 1 << bits
    if table.shape != (size, size):
        raise ShapeError(f"the LUT must be ({size}, {size}) for {bits}-bit operands, got shape {table.shape}")
    return table


def _check_outputs(table: np.ndarray, signed: bool) -> None:
    """Refuse entries that no 16-bit circuit output of this signedness holds."""
    lo, hi = value_range(OUTPUT_BITS, signed)
    low, high = int(table.min()), int(table.max())
    if low < lo or high > hi:
        bad = low if low < lo else high
        kind = "signed" if signed else "unsigned"
        raise IntegerOperandError(f"the LUT holds {bad}, outside the {kind} {OUTPUT_BITS}-bit circuit outputs "
                                  f"{lo}..{hi}")
