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
"""

from __future__ import annotations

import numpy as np

from ..errors import AmsimError, RangeError, check_integer
from ..lut import LUT
from . import ShapeError

__all__ = ["int_matmul", "reference_int_matmul", "accumulator_dtype", "check_bits", "check_table", "check_values",
           "value_range", "IntegerOperandError", "MAX_BITS"]

#: Widest operands the integer GEMM takes: a pattern is one byte.
MAX_BITS = 8
#: Widest circuit output: 16 bits, unsigned or signed (an 8 x 8-bit product).
OUTPUT_BITS = 16
_INT32_MAX = np.iinfo(np.int32).max
_INT64_MAX = np.iinfo(np.int64).max
BACKENDS = ("auto", "reference", "cpu", "cuda")


class IntegerOperandError(AmsimError, ValueError):
    """An operand or table the integer GEMM cannot take: not integers, or values out of range."""


def largest_product(table) -> int:
    """The largest magnitude among the table's entries (0 for an empty table)."""
    table = np.asarray(table)
    return max(-int(table.min()), int(table.max()), 0) if table.size else 0


def accumulator_dtype(k: int, table) -> np.dtype:
    """int32 when ``k`` products of the table's largest magnitude fit int32, else int64.

    Raises:
        RangeError: when not even int64 can hold such a sum.
    """
    largest = largest_product(table)
    if k * largest <= _INT32_MAX:
        return np.dtype(np.int32)
    if k * largest <= _INT64_MAX:
        return np.dtype(np.int64)
    raise RangeError(f"int_matmul: K = {k} products of magnitude up to {largest} can overflow even int64")


def int_matmul(a, b, lut, *, signed=False, bits=8, backend="auto", threads=None) -> np.ndarray:
    """Integer matrix product ``a @ b`` with every product looked up in a circuit's table.

    Args:
        a: integer array (M, K) of n-bit operands, the table's row operand.
        b: integer array (K, N) of n-bit operands, the column operand.
        lut: the circuit's (2^bits, 2^bits) product table indexed by the operands' patterns: an
            integer array, or an integer :class:`amsim.lut.LUT` of the same width and signedness
            (:func:`amsim.generate.integer_lut` builds one from a circuit).
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
    if threads is not None:
        check_integer(threads, "threads (None: every available CPU)", 1)
    table = check_table(lut, bits, bool(signed))
    pa = _patterns("a", a, bits, signed)
    pb = _patterns("b", b, bits, signed)
    if pa.shape[1] != pb.shape[0]:
        raise ShapeError(f"int_matmul: inner dimensions differ: a {pa.shape} and b {pb.shape}")
    dtype = accumulator_dtype(pa.shape[1], table)
    if backend == "reference":
        return reference_int_matmul(pa, pb, table).astype(dtype)
    if backend == "cuda":
        from . import cuda

        return cuda.int_matmul_2d(pa, pb, table, bits=bits, signed=bool(signed), dtype=dtype)
    return _cpu_int_matmul(pa, pb, table, bits, dtype, threads)


def reference_int_matmul(pa: np.ndarray, pb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The oracle: int64 sums over k of ``table[pa[i, k], pb[k, j]]`` (patterns, not values)."""
    table = np.asarray(table, np.int64)
    out = np.zeros((pa.shape[0], pb.shape[1]), np.int64)
    for k in range(pa.shape[1]):
        out += table[pa[:, k][:, None], pb[k][None, :]]
    return out


def _cpu_int_matmul(pa, pb, table, bits, dtype, threads):
    from . import engine

    ffi, lib = engine.load()
    m_rows, k = pa.shape
    n = pb.shape[1]
    out = np.empty((m_rows, n), dtype)
    if out.size == 0:
        return out
    if k == 0:
        out[...] = 0
        return out
    table = np.ascontiguousarray(table, np.int32)
    rc = lib.amsim_int_gemm(ffi.from_buffer("int32_t[]", table), bits, m_rows, n, k,
                            ffi.from_buffer("uint8_t[]", pa), ffi.from_buffer("uint8_t[]", pb),
                            ffi.from_buffer(out), int(dtype == np.int64), 0 if threads is None else int(threads))
    if rc:  # pragma: no cover - the arguments were checked above
        raise MemoryError("amsim_int_gemm: out of memory") if rc == -1 else \
            RangeError(f"amsim_int_gemm refused its arguments (status {rc})")
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
    if bits == 8 and x.dtype == (np.int8 if signed else np.uint8):  # every value of the dtype is an operand
        return np.ascontiguousarray(x).view(np.uint8)
    if x.size:
        check_values(name, int(x.min()), int(x.max()), bits, signed)
    # x mod 2^n: the value itself when unsigned, the two's-complement pattern when signed
    return np.ascontiguousarray(np.bitwise_and(x.astype(np.int64, copy=False), (1 << bits) - 1), np.uint8)


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
    lo, hi = value_range(OUTPUT_BITS, signed)
    low, high = int(table.min()), int(table.max())
    if low < lo or high > hi:
        bad = low if low < lo else high
        kind = "signed" if signed else "unsigned"
        raise IntegerOperandError(f"the LUT holds {bad}, outside the {kind} {OUTPUT_BITS}-bit circuit outputs "
                                  f"{lo}..{hi}")
    return table.astype(np.int32, copy=False)
