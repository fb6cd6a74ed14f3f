"""The approximate GEMM engine: matmul and conv2d with every product replaced by a LUT multiplier.

Semantics are those of docs/numerics.md: each product a (x) b is
``sign * 2^(ea + eb) * LUT[i, j]`` with IEEE special values, and every output
is a float32 sum in increasing k. Backends:

``reference``
    :mod:`amsim.reference` (plain numpy): slow, obviously correct, the oracle.
``cpu``
    The C engine (``amsim/csrc/cpu/``, interface ``amsim_gemm.h``) sharing
    ``amsim_product.h`` with the CUDA kernels, compiled once per machine with
    ``-O3 -march=native`` into a shared library and cached (:mod:`.engine`). Same accumulation order as the reference, so results are
    bit-identical to it, deterministic for any thread count, and safe to call
    from several threads at once. Each GEMM is one C call (``amsim_gemm``):
    split, window test and kernel run on a pool of C worker threads, the
    output split between them by columns, or by rows when it is narrow; a
    caller whose workers are busy with another caller's GEMM does its own parts.
``cuda``
    The bundled CUDA kernels (:mod:`amsim.gemm.cuda`), when a GPU is present.

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
    One ``amsim_mul_split`` per product, every rule of docs/numerics.md applied.
``model`` (any M, no LUT)
    Each product calls the compiled C model (M > 12, where no LUT fits).

On CPUs with AVX512-BF16 both take LUTs of bfloat16 entries (M < 8) with
bfloat16 dot products, two products per instruction (vdpbf16ps), where no
partial sum can be subnormal (``amsim_window_dp`` in the engine's gemm.c);
the planner then uses its second cost table.

With ``method="auto"`` the engine's planner, a cost model fitted on this
machine (:mod:`.planner`), picks the fast kernel, its orientation
(along B's columns, or along A's rows by computing C^T = B^T A^T with the LUT
transposed) and whether to use several threads; operands outside the window
fall back to ``direct``.
"""


from __future__ import annotations

import numpy as np

from .. import reference
from ..errors import AmsimError, RangeError, check_integer
from . import cpu
from .multiplier import Multiplier, resolve

__all__ = ["Multiplier", "resolve", "matmul", "conv2d", "conv2d_backprop_input", "conv2d_backprop_filter",
           "conv3d", "conv3d_backprop_input", "conv3d_backprop_filter",
           "int_matmul", "int_conv2d", "minmax", "quantize", "dequantize", "clipped_gradient", "int_dequantize",
           "IntegerTable", "ShapeError", "BACKENDS", "METHODS"]

BACKENDS = ("auto", "reference", "cpu", "cuda")
METHODS = ("auto", "expand", "lookup", "direct", "model")


class ShapeError(AmsimError, ValueError):
    """Operands whose shapes do not fit together."""


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


def check_options(rounding, mode, backend, method, threads) -> None:
    """Checks the options that every GEMM of :func:`matmul` and the convolutions takes."""
    if rounding not in reference.ROUNDINGS:
        raise ValueError(f"rounding must be one of {reference.ROUNDINGS}, not {rounding!r}")
    if mode not in reference.MODES:
        raise ValueError(f"mode must be one of {reference.MODES}, not {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if threads is not None:
        check_integer(threads, "threads (None: every available CPU)", 1)
    if mode == "approxtrain" and rounding != "truncate":
        raise ValueError("mode='approxtrain' truncates its operands; rounding='rne' does not apply")


def matmul(a, b, lut, *, bits=None, params=None, transpose_a=False, transpose_b=False, rounding="truncate",
           mode="ieee", backend="auto", method="auto", threads=None) -> np.ndarray:
    """Approximate matrix product ``a @ b`` with every product replaced by the LUT multiplier.

    Parameters
    ----------
    a, b : ndarray of float32, shape (..., M, K) and (..., K, N)
        Leading dimensions broadcast as in :func:`numpy.matmul`. Any strides.
    lut : LUT, LUT file, C model (name or .c file), (2^M, 2^M) array or Multiplier
        See :func:`resolve`.
    bits : int, optional
        Expected mantissa width M (required with a model).
    transpose_a, transpose_b : bool
        Use the transpose of the last two axes (no copy).
    rounding : {"truncate", "rne"}
        Operand conversion to M bits (docs/numerics.md §2.1).
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
        call = lut._calls.get(cpu.call_key(a_2d, b_2d, rounding, mode, method, threads))
        if call is not None:
            return call(a_2d, b_2d)
    check_options(rounding, mode, backend, method, threads)
    a = _check_operand("a", a)
    b = _check_operand("b", b)
    if transpose_a:
        a = a.swapaxes(-1, -2)  # the array method: a call of np.swapaxes costs more
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
    return cpu.matmul_2d(a, b, mult, rounding, mode, method, threads)



from .conv import (conv2d, conv2d_backprop_filter, conv2d_backprop_input, conv3d,  # noqa: E402  (conv uses matmul)
                   conv3d_backprop_filter, conv3d_backprop_input)
from .integer import IntegerTable, int_matmul  # noqa: E402  (integer uses ShapeError)
from .int_conv import int_conv2d  # noqa: E402  (int_conv uses ShapeError)
# quantize uses ShapeError
from .quantize import clipped_gradient, dequantize, int_dequantize, minmax, quantize  # noqa: E402
